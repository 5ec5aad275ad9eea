use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, UnixTime};
use skiff_api::identity::{CertificateResponse, SpiffeId};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "skiff-ca-test-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings() -> Settings {
    Settings {
        trust_domain: "cluster.local".into(),
        lifetime: Duration::from_secs(3600),
    }
}

fn web() -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", "web")
}

fn now() -> i64 {
    unix(SystemTime::now())
}

/// A CA certificate and its key, PEM, made with rcgen.
struct Made {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(name: &str, valid: std::ops::Range<i64>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = offset_time(valid.start);
    params.not_after = offset_time(valid.end);
    params
}

fn make_root(name: &str, valid: std::ops::Range<i64>) -> Made {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(name, valid);
    let cert = params.self_signed(&key).unwrap();
    let key_pem = key.serialize_pem();
    Made {
        cert_pem: cert.pem(),
        key_pem,
        issuer: Issuer::new(params, key),
    }
}

fn make_signed(params: CertificateParams, by: &Made) -> Made {
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &by.issuer).unwrap();
    let key_pem = key.serialize_pem();
    Made {
        cert_pem: cert.pem(),
        key_pem,
        issuer: Issuer::new(params, key),
    }
}

fn year() -> std::ops::Range<i64> {
    now() - 60..now() + 365 * 24 * 3600
}

/// A CSR for a fresh P-256 key, with these URI SANs.
fn csr(uris: &[&str]) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = uris
        .iter()
        .map(|uri| SanType::URI(uri.to_string().try_into().unwrap()))
        .collect();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn chain_ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Verifies a chain as a peer does, against `roots`.
fn verify(
    chain: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
) -> Result<(), String> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        crate::tls::provider(),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn invalid(result: Result<CertificateAuthority, CaError>) -> (String, Problem) {
    match result {
        Err(CaError::Invalid { what, problem }) => (what, problem),
        Err(other) => panic!("expected an invalid input, got {other:?}"),
        Ok(ca) => panic!("expected an error, got {ca:?}"),
    }
}

#[test]
fn a_signed_leaf_has_one_spiffe_id_no_ca_both_ekus_and_the_lifetime() {
    let ca = CertificateAuthority::generate(settings()).unwrap();
    let before = now();
    let answer = ca.sign_csr(&csr(&[]), &web()).unwrap();
    assert_eq!(answer.identity, "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(answer.trust_bundle_pem, ca.trust_bundle_pem());
    let chain = chain_ders(&answer.chain_pem);
    assert_eq!(chain.len(), 1, "a root issuer: the leaf alone");
    verify(&chain, ca.roots()).unwrap();

    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let uris: Vec<&str> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => *uri,
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect();
    assert_eq!(uris, ["spiffe://cluster.local/ns/shop/sa/web"]);
    let constraints = leaf
        .basic_constraints()
        .unwrap()
        .expect("explicit CA:FALSE");
    assert!(!constraints.value.ca);
    let usage = leaf.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature() && !usage.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    let validity = leaf.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    assert!(
        (before - 61..=now() - 59).contains(&not_before),
        "{not_before}"
    );
    assert!(
        (before + 3600..=now() + 3600).contains(&not_after),
        "{not_after}"
    );
    assert_eq!(answer.not_after_unix as i64, not_after);
    assert!(leaf.subject().iter().next().is_none(), "no subject");
    // Every extension is one a peer understands.
    for extension in leaf.extensions() {
        assert!(
            !matches!(
                extension.parsed_extension(),
                ParsedExtension::UnsupportedExtension { .. }
            ),
            "{extension:?}"
        );
    }

    // Serials are random.
    let again = ca.sign_csr(&csr(&[]), &web()).unwrap();
    let again = chain_ders(&again.chain_pem);
    let (_, other) = x509_parser::parse_x509_certificate(&again[0]).unwrap();
    assert_ne!(leaf.raw_serial(), other.raw_serial());
}

#[test]
fn a_csr_for_another_identity_or_with_a_bad_signature_is_refused() {
    let ca = CertificateAuthority::generate(settings()).unwrap();
    ca.sign_csr(&csr(&["spiffe://cluster.local/ns/shop/sa/web"]), &web())
        .expect("its own identity");
    for asked in [
        &["spiffe://cluster.local/ns/shop/sa/admin"][..],
        &["spiffe://other.domain/ns/shop/sa/web"],
        &[
            "spiffe://cluster.local/ns/shop/sa/web",
            "spiffe://cluster.local/ns/shop/sa/admin",
        ],
        &[
            "spiffe://cluster.local/ns/shop/sa/web",
            "spiffe://cluster.local/ns/shop/sa/web",
        ],
    ] {
        let refused = ca.sign_csr(&csr(asked), &web()).unwrap_err();
        assert!(
            matches!(refused, CsrError::Identity { .. }),
            "{asked:?}: {refused}"
        );
        assert!(!refused.is_malformed());
    }

    // Flip one bit of the signature: it no longer proves possession of the key.
    let good = csr(&[]);
    let mut der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    let forged = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    let refused = ca.sign_csr(&forged, &web()).unwrap_err();
    assert!(matches!(refused, CsrError::Signature), "{refused}");
    assert!(refused.is_malformed());

    assert!(matches!(ca.sign_csr("hello", &web()), Err(CsrError::Pem)));
    let garbage = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
    assert!(matches!(
        ca.sign_csr(garbage, &web()),
        Err(CsrError::Malformed)
    ));

    // Only P-256 keys.
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let request = CertificateParams::default()
        .serialize_request(&p384)
        .unwrap()
        .pem()
        .unwrap();
    assert!(matches!(
        ca.sign_csr(&request, &web()),
        Err(CsrError::KeyType)
    ));
}

#[test]
fn a_ca_dir_gets_a_root_on_first_start_and_keeps_it() {
    let dir = TempDir::new("dir");
    let ca_dir = dir.0.join("ca");
    let first =
        CertificateAuthority::load(&CaSource::Dir(ca_dir.clone()), &[], settings()).unwrap();
    let key = ca_dir.join("root-key.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is the owner's only");
    let bundle = ca_dir.join("ca-bundle.pem");
    assert_eq!(first.bundle_file(), Some(bundle.as_path()));
    assert_eq!(
        std::fs::read_to_string(&bundle).unwrap(),
        first.trust_bundle_pem()
    );
    let (_, root) = x509_parser::parse_x509_certificate(&first.roots()[0]).unwrap();
    assert!(root.is_ca());
    assert!(root.key_usage().unwrap().unwrap().value.key_cert_sign());
    let lifetime = root.validity().not_after.timestamp() - root.validity().not_before.timestamp();
    assert!(lifetime >= 10 * 365 * 24 * 3600, "{lifetime}");

    let second =
        CertificateAuthority::load(&CaSource::Dir(ca_dir.clone()), &[], settings()).unwrap();
    assert_eq!(
        second.trust_bundle_pem(),
        first.trust_bundle_pem(),
        "the same root"
    );
    let leaf = second.sign_csr(&csr(&[]), &web()).unwrap();
    verify(&chain_ders(&leaf.chain_pem), first.roots()).unwrap();

    std::fs::remove_file(ca_dir.join("root-cert.pem")).unwrap();
    let (what, problem) = invalid(CertificateAuthority::load(
        &CaSource::Dir(ca_dir),
        &[],
        settings(),
    ));
    assert!(what.contains("--ca-dir"), "{what}");
    assert_eq!(
        problem,
        Problem::HalfRoot {
            present: "root-key.pem",
            missing: "root-cert.pem"
        }
    );
}

#[test]
fn a_root_and_its_key_load_from_files() {
    let dir = TempDir::new("files");
    let root = make_root("files root", year());
    let source = CaSource::Files {
        cert: dir.write("ca.pem", &root.cert_pem),
        key: dir.write("ca-key.pem", &root.key_pem),
        chain: None,
    };
    let ca = CertificateAuthority::load(&source, &[], settings()).unwrap();
    assert_eq!(ca.roots().len(), 1);
    assert!(ca.intermediates().is_empty());
    assert_eq!(ca.bundle_file(), None, "nothing written");
    assert_eq!(ca.trust_bundle_pem(), root.cert_pem.replace("\r\n", "\n"));
    let leaf = ca.sign_csr(&csr(&[]), &web()).unwrap();
    verify(&chain_ders(&leaf.chain_pem), ca.roots()).unwrap();
}

#[test]
fn an_intermediate_issues_with_its_chain_up_to_the_root() {
    let dir = TempDir::new("intermediate");
    let root = make_root("the root", year());
    let intermediate = make_signed(ca_params("the intermediate", year()), &root);
    let cert = dir.write("intermediate.pem", &intermediate.cert_pem);
    let key = dir.write("intermediate-key.pem", &intermediate.key_pem);
    let root_file = dir.write("root.pem", &root.cert_pem);
    let source = CaSource::Files {
        cert: cert.clone(),
        key: key.clone(),
        chain: Some(root_file.clone()),
    };
    let ca = CertificateAuthority::load(&source, &[], settings()).unwrap();
    assert_eq!(ca.roots(), chain_ders(&root.cert_pem).as_slice());
    assert_eq!(
        ca.intermediates(),
        chain_ders(&intermediate.cert_pem).as_slice()
    );
    let leaf = ca.sign_csr(&csr(&[]), &web()).unwrap();
    let chain = chain_ders(&leaf.chain_pem);
    assert_eq!(chain.len(), 2, "leaf and intermediate, not the root");
    assert_eq!(chain[1], ca.intermediates()[0]);
    verify(&chain, ca.roots()).unwrap();
    assert_eq!(leaf.trust_bundle_pem, ca.trust_bundle_pem());

    // The root may come as an extra trust root instead, or after the issuer in --ca-cert.
    let source = CaSource::Files {
        cert: cert.clone(),
        key: key.clone(),
        chain: None,
    };
    CertificateAuthority::load(&source, std::slice::from_ref(&root_file), settings()).unwrap();
    let both = dir.write(
        "both.pem",
        &(intermediate.cert_pem.clone() + &root.cert_pem),
    );
    let source = CaSource::Files {
        cert: both,
        key: key.clone(),
        chain: None,
    };
    let ca = CertificateAuthority::load(&source, &[], settings()).unwrap();
    assert_eq!(ca.intermediates().len(), 1);

    // Without the root nothing leads to one.
    let source = CaSource::Files {
        cert,
        key,
        chain: None,
    };
    let (what, problem) = invalid(CertificateAuthority::load(&source, &[], settings()));
    assert!(what.starts_with("--ca-cert"), "{what}");
    assert!(matches!(problem, Problem::NoPathToRoot { .. }), "{problem}");
    assert!(problem.to_string().contains("CN=the root"), "{problem}");
}

#[test]
fn a_leaf_never_outlives_its_issuer() {
    let root = make_root("short-lived root", now() - 60..now() + 600);
    let ca = load::from_pem(
        load::Pem::new("root", &root.cert_pem),
        load::Pem::new("key", &root.key_pem),
        Vec::new(),
        settings(),
        "test".into(),
    )
    .unwrap();
    let leaf = ca.sign_csr(&csr(&[]), &web()).unwrap();
    assert_eq!(leaf.not_after_unix as i64, ca.issuer_expiration_unix());
    assert!(leaf.not_after_unix as i64 <= now() + 600);
}

#[test]
fn a_secret_file_with_data_or_string_data_loads() {
    let dir = TempDir::new("secret");
    let root = make_root("secret root", year());
    let intermediate = make_signed(ca_params("secret intermediate", year()), &root);
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: skiff-ca\n  namespace: skiff-system\n\
         type: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n  ca.crt: {}\n",
        b64(&intermediate.cert_pem),
        b64(&intermediate.key_pem),
        b64(&root.cert_pem)
    );
    let ca = CertificateAuthority::load(
        &CaSource::Secret(dir.write("secret.yaml", &yaml)),
        &[],
        settings(),
    )
    .unwrap();
    assert_eq!(ca.intermediates().len(), 1);
    assert_eq!(ca.roots(), chain_ders(&root.cert_pem).as_slice());
    verify(
        &chain_ders(&ca.sign_csr(&csr(&[]), &web()).unwrap().chain_pem),
        ca.roots(),
    )
    .unwrap();

    // stringData, as JSON; a root alone needs no ca.crt.
    let json = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "skiff-ca"},
        "stringData": {"tls.crt": root.cert_pem, "tls.key": root.key_pem},
    });
    let ca = CertificateAuthority::load(
        &CaSource::Secret(dir.write("secret.json", &json.to_string())),
        &[],
        settings(),
    )
    .unwrap();
    assert!(ca.intermediates().is_empty());

    let missing = "apiVersion: v1\nkind: Secret\nstringData:\n  tls.crt: x\n";
    let (what, problem) = invalid(CertificateAuthority::load(
        &CaSource::Secret(dir.write("missing.yaml", missing)),
        &[],
        settings(),
    ));
    assert!(what.contains("missing.yaml"), "{what}");
    assert_eq!(problem, Problem::MissingEntry("tls.key"));
    let config_map = "apiVersion: v1\nkind: ConfigMap\ndata: {}\n";
    let (_, problem) = invalid(CertificateAuthority::load(
        &CaSource::Secret(dir.write("cm.yaml", config_map)),
        &[],
        settings(),
    ));
    assert!(matches!(problem, Problem::NotSecret(_)), "{problem}");
    let not_base64 = "kind: Secret\ndata:\n  tls.crt: '%%%'\n  tls.key: '%%%'\n";
    let (_, problem) = invalid(CertificateAuthority::load(
        &CaSource::Secret(dir.write("b64.yaml", not_base64)),
        &[],
        settings(),
    ));
    assert_eq!(problem, Problem::NotBase64("tls.crt"));
}

#[test]
fn bad_issuers_are_refused_with_the_file_and_the_reason() {
    let dir = TempDir::new("bad");
    let root = make_root("good root", year());
    let other = make_root("other root", year());
    let load = |cert: &str, key: &str| {
        let source = CaSource::Files {
            cert: dir.write("cert.pem", cert),
            key: dir.write("key.pem", key),
            chain: None,
        };
        invalid(CertificateAuthority::load(&source, &[], settings()))
    };

    let (what, problem) = load(&root.cert_pem, &other.key_pem);
    assert!(
        what.starts_with("--ca-key") && what.ends_with("key.pem"),
        "{what}"
    );
    assert!(matches!(problem, Problem::KeyMismatch { .. }), "{problem}");

    let (what, problem) = load("not pem at all", &root.key_pem);
    assert!(what.starts_with("--ca-cert"), "{what}");
    assert_eq!(problem, Problem::NoCertificate);
    let (_, problem) = load(&root.cert_pem, "nothing");
    assert_eq!(problem, Problem::NoKey);
    let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let (_, problem) = load(broken, &root.key_pem);
    assert_eq!(problem, Problem::NotX509 { index: 1 });
    let sec1 = root
        .key_pem
        .replace("BEGIN PRIVATE KEY", "BEGIN EC PRIVATE KEY")
        .replace("END PRIVATE KEY", "END EC PRIVATE KEY");
    let (_, problem) = load(&root.cert_pem, &sec1);
    assert!(matches!(problem, Problem::NotPkcs8(_)), "{problem}");

    // A leaf is no CA.
    let mut leaf_params = ca_params("a leaf", year());
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    let leaf = make_signed(leaf_params, &root);
    let source = CaSource::Files {
        cert: dir.write("leaf.pem", &leaf.cert_pem),
        key: dir.write("leaf-key.pem", &leaf.key_pem),
        chain: Some(dir.write("root.pem", &root.cert_pem)),
    };
    let (what, problem) = invalid(CertificateAuthority::load(&source, &[], settings()));
    assert!(what.contains("leaf.pem"), "{what}");
    assert_eq!(
        problem,
        Problem::NotCa {
            subject: "CN=a leaf".into()
        }
    );

    // A CA without keyCertSign.
    let mut no_sign = ca_params("no sign", year());
    no_sign.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = no_sign.self_signed(&key).unwrap();
    let (_, problem) = load(&cert.pem(), &key.serialize_pem());
    assert!(matches!(problem, Problem::NoCertSign { .. }), "{problem}");

    // Expired, and not yet valid.
    let expired = make_root("expired root", now() - 7200..now() - 3600);
    let (_, problem) = load(&expired.cert_pem, &expired.key_pem);
    assert!(matches!(problem, Problem::Expired { .. }), "{problem}");
    let future = make_root("future root", now() + 3600..now() + 7200);
    let (_, problem) = load(&future.cert_pem, &future.key_pem);
    assert!(matches!(problem, Problem::NotYetValid { .. }), "{problem}");

    // An extra trust root that is not a root.
    let source = CaSource::Files {
        cert: dir.write("good.pem", &root.cert_pem),
        key: dir.write("good-key.pem", &root.key_pem),
        chain: None,
    };
    let not_root = dir.write("not-root.pem", &leaf.cert_pem);
    let (what, problem) = invalid(CertificateAuthority::load(&source, &[not_root], settings()));
    assert!(what.starts_with("--extra-trust-root"), "{what}");
    assert!(matches!(problem, Problem::NotRoot { .. }), "{problem}");
}

#[test]
fn two_roots_in_the_bundle_let_both_generations_of_leaves_verify() {
    let dir = TempDir::new("rotation");
    let old = make_root("old root", year());
    let new = make_root("new root", year());
    let old_file = dir.write("old.pem", &old.cert_pem);
    let new_file = dir.write("new.pem", &new.cert_pem);
    let issuing = |name: &str, cert: &Made, extra: &Path| {
        let source = CaSource::Files {
            cert: dir.write(&format!("{name}.pem"), &cert.cert_pem),
            key: dir.write(&format!("{name}-key.pem"), &cert.key_pem),
            chain: None,
        };
        CertificateAuthority::load(&source, &[extra.to_path_buf()], settings()).unwrap()
    };
    // Step 1: the old root signs, both are trusted. Step 2: the new root signs, both trusted.
    let step1 = issuing("step1", &old, &new_file);
    assert_eq!(step1.roots().len(), 2);
    assert_eq!(
        step1.roots()[0],
        chain_ders(&old.cert_pem)[0],
        "the issuer's root first"
    );
    let step2 = issuing("step2", &new, &old_file);
    let from_old: CertificateResponse = step1.sign_csr(&csr(&[]), &web()).unwrap();
    let from_new = step2.sign_csr(&csr(&[]), &web()).unwrap();
    for bundle in [step1.roots(), step2.roots()] {
        verify(&chain_ders(&from_old.chain_pem), bundle).unwrap();
        verify(&chain_ders(&from_new.chain_pem), bundle).unwrap();
    }
    assert_eq!(chain_ders(&from_new.trust_bundle_pem).len(), 2);
    // Without the other root, a leaf of the other generation does not verify.
    let alone = CertificateAuthority::load(
        &CaSource::Files {
            cert: dir.write("alone.pem", &new.cert_pem),
            key: dir.write("alone-key.pem", &new.key_pem),
            chain: None,
        },
        &[],
        settings(),
    )
    .unwrap();
    assert!(verify(&chain_ders(&from_old.chain_pem), alone.roots()).is_err());
}

#[test]
fn issued_keys_serve_the_control_plane() {
    let ca = CertificateAuthority::generate(settings()).unwrap();
    let identity = SpiffeId::new("cluster.local", "skiff-system", "skiff-control");
    let names = crate::tls::control_plane_dns_names("skiff-system");
    let issued = ca.issue(&identity, &names).unwrap();
    verify(&issued.chain, ca.roots()).unwrap();
    assert_eq!(crate::tls::peer_identity(&issued.chain[0]), Ok(identity));
    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.chain[0]).unwrap();
    let dns: Vec<&str> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        })
        .collect();
    assert_eq!(
        dns,
        [
            "skiff-control",
            "skiff-control.skiff-system",
            "skiff-control.skiff-system.svc",
            "localhost"
        ]
    );
    assert!(
        (3599..=3601).contains(&issued.valid_for.as_secs()),
        "{:?}",
        issued.valid_for
    );
}
