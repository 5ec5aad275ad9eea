//! Client and server certificates for the mTLS tests, made with rcgen: good ones signed by the
//! control plane's own root (read from its `--ca-dir`), and a battery of bad ones, each of
//! which a sidecar must refuse for a stated reason.

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};

/// The control plane's root, able to sign test certificates.
pub struct LabCa {
    cert_pem: String,
    key: KeyPair,
}

/// A certificate and its key, written as PEM files for `openssl`.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What is wrong with a client certificate, and the reason label the sidecar must give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadCert {
    Expired,
    NotYetValid,
    ForeignTrustDomain,
    UntrustedRoot,
    CaAsLeaf,
    TwoUriSans,
    NoSan,
    DnsSanOnly,
    NotSpiffeUri,
    SpiffeIdWithoutWorkloadPath,
    ServerAuthOnly,
    /// Claims the real root as issuer but is signed by another key.
    ForgedIssuer,
    SelfSigned,
    /// Signed by a leaf of the real root, which is no CA.
    SignedByLeaf,
}

impl BadCert {
    pub const ALL: [BadCert; 14] = [
        BadCert::Expired,
        BadCert::NotYetValid,
        BadCert::ForeignTrustDomain,
        BadCert::UntrustedRoot,
        BadCert::CaAsLeaf,
        BadCert::TwoUriSans,
        BadCert::NoSan,
        BadCert::DnsSanOnly,
        BadCert::NotSpiffeUri,
        BadCert::SpiffeIdWithoutWorkloadPath,
        BadCert::ServerAuthOnly,
        BadCert::ForgedIssuer,
        BadCert::SelfSigned,
        BadCert::SignedByLeaf,
    ];

    /// The `reason` label of `skiff_tls_handshake_failures_total` the refusal must carry.
    pub fn reason(self) -> &'static str {
        match self {
            BadCert::Expired => "expired",
            BadCert::NotYetValid => "not-yet-valid",
            BadCert::ForeignTrustDomain => "foreign-trust-domain",
            BadCert::UntrustedRoot | BadCert::SelfSigned | BadCert::SignedByLeaf => {
                "unknown-issuer"
            }
            BadCert::ForgedIssuer => "bad-signature",
            BadCert::CaAsLeaf => "ca-as-leaf",
            BadCert::TwoUriSans => "multiple-uri-sans",
            BadCert::NoSan | BadCert::DnsSanOnly => "no-spiffe-id",
            BadCert::NotSpiffeUri | BadCert::SpiffeIdWithoutWorkloadPath => "invalid-spiffe-id",
            BadCert::ServerAuthOnly => "wrong-key-usage",
        }
    }
}

impl LabCa {
    /// The root a control plane generated in `ca_dir` (`root-cert.pem`, `root-key.pem`).
    pub fn load(ca_dir: &Path) -> LabCa {
        let read = |name: &str| {
            std::fs::read_to_string(ca_dir.join(name))
                .unwrap_or_else(|e| panic!("{}: {e}", ca_dir.join(name).display()))
        };
        LabCa {
            cert_pem: read("root-cert.pem"),
            key: KeyPair::from_pem(&read("root-key.pem")).expect("the root key parses"),
        }
    }

    /// A good workload certificate for `identity` (a SPIFFE ID), valid for a year around now.
    pub fn workload(&self, identity: &str, dir: &Path, name: &str) -> CertFiles {
        let params = leaf_params(&[SanType::URI(identity.try_into().unwrap())]);
        self.sign_and_write(&params, dir, name)
    }

    /// The bad client certificate `kind`, for the identity `spiffe://cluster.local/ns/<ns>/sa/<sa>`
    /// where it has one.
    pub fn bad(&self, kind: BadCert, namespace: &str, dir: &Path) -> CertFiles {
        let good_id = format!("spiffe://cluster.local/ns/{namespace}/sa/intruder");
        let uri = |text: &str| SanType::URI(text.try_into().unwrap());
        let name = format!("{kind:?}");
        let mut params = leaf_params(&[uri(&good_id)]);
        match kind {
            BadCert::Expired => {
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
            }
            BadCert::NotYetValid => {
                params.not_before = date_time_ymd(2040, 1, 1);
                params.not_after = date_time_ymd(2041, 1, 1);
            }
            BadCert::ForeignTrustDomain => {
                params.subject_alt_names = vec![uri(&format!(
                    "spiffe://other.example/ns/{namespace}/sa/intruder"
                ))];
            }
            BadCert::UntrustedRoot => {
                let other = other_root();
                return write(&signed(&params, &other), dir, &name);
            }
            BadCert::CaAsLeaf => params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
            BadCert::TwoUriSans => params.subject_alt_names.push(uri(&format!(
                "spiffe://cluster.local/ns/{namespace}/sa/second"
            ))),
            BadCert::NoSan => params.subject_alt_names.clear(),
            BadCert::DnsSanOnly => {
                params.subject_alt_names = vec![SanType::DnsName("intruder".try_into().unwrap())]
            }
            BadCert::NotSpiffeUri => {
                params.subject_alt_names = vec![uri("https://intruder.example/ns/x/sa/y")]
            }
            BadCert::SpiffeIdWithoutWorkloadPath => {
                params.subject_alt_names = vec![uri("spiffe://cluster.local/intruder")]
            }
            BadCert::ServerAuthOnly => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
            }
            BadCert::ForgedIssuer => {
                // Same issuer name as the real root, another key.
                let forged_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
                let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, forged_key).unwrap();
                return write(&signed(&params, &issuer), dir, &name);
            }
            BadCert::SelfSigned => {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
                let cert = params.self_signed(&key).unwrap().pem();
                return write(&(cert, key.serialize_pem()), dir, &name);
            }
            BadCert::SignedByLeaf => {
                let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
                let leaf_params = leaf_params(&[uri(&good_id)]);
                let leaf = leaf_params.signed_by(&leaf_key, &self.issuer()).unwrap();
                let leaf_issuer = Issuer::new(leaf_params, leaf_key);
                let (cert, key) = signed(&params, &leaf_issuer);
                // Present the whole chain: the leaf, then the "intermediate" leaf.
                return write(&(cert + &leaf.pem(), key), dir, &name);
            }
        }
        self.sign_and_write(&params, dir, &name)
    }

    fn issuer(&self) -> Issuer<'static, &KeyPair> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).expect("the root parses")
    }

    fn sign_and_write(&self, params: &CertificateParams, dir: &Path, name: &str) -> CertFiles {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &self.issuer()).unwrap().pem();
        write(&(cert, key.serialize_pem()), dir, name)
    }
}

/// What a workload leaf looks like: one SPIFFE URI SAN, CA:FALSE, both TLS usages.
fn leaf_params(sans: &[SanType]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans.to_vec();
    params.distinguished_name = DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = date_time_ymd(2025, 1, 1);
    params.not_after = date_time_ymd(2035, 1, 1);
    params
}

/// A root nobody trusts.
fn other_root() -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "untrusted root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    Issuer::new(params, key)
}

/// A fresh key and `params` signed by `issuer`: (certificate PEM, key PEM).
fn signed<K: rcgen::SigningKey>(
    params: &CertificateParams,
    issuer: &Issuer<'_, K>,
) -> (String, String) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.signed_by(&key, issuer).unwrap().pem();
    (cert, key.serialize_pem())
}

fn write((cert, key): &(String, String), dir: &Path, name: &str) -> CertFiles {
    std::fs::create_dir_all(dir).unwrap();
    let files = CertFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    files
}
