//! Where the CA's issuer comes from, and every check made before it signs anything: each PEM
//! parses, the key matches the issuer's certificate, every certificate from the issuer to its
//! root is a CA that may sign and is valid now, and a test leaf verifies against the bundle as
//! a peer will verify real ones.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use rcgen::{Issuer, KeyPair};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use skiff_api::identity::SpiffeId;
use x509_parser::certificate::X509Certificate;

use super::{generate_root, pem_encode, unix, CaError, CertificateAuthority, Settings};

/// Where the issuer comes from: the flags of `skiff-control`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// `--ca-cert FILE --ca-key FILE [--ca-chain FILE]`: the issuer's certificate (a root, or
    /// an intermediate, optionally followed by the certificates above it), its PKCS#8 key, and
    /// the certificates from its issuer up to the root.
    Files {
        cert: PathBuf,
        key: PathBuf,
        chain: Option<PathBuf>,
    },
    /// `--ca-secret FILE`: a Kubernetes Secret (YAML or JSON) whose `data` (base64) or
    /// `stringData` has `tls.crt` and `tls.key` as above, and optionally `ca.crt`: the root(s),
    /// and any intermediate between, when `tls.crt` is an intermediate.
    Secret(PathBuf),
    /// `--ca-dir DIR`: `root-cert.pem` and `root-key.pem` there, generated on first start (for
    /// local use); `ca-bundle.pem` is written there for proxies.
    Dir(PathBuf),
}

/// The certificate and key files in a CA directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
pub const ROOT_KEY_FILE: &str = "root-key.pem";
/// The trust bundle written in a CA directory: what proxies get as `--ca-bundle`.
pub const BUNDLE_FILE: &str = "ca-bundle.pem";

/// What is wrong with a certificate, key or Secret (the error names where it came from).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("no PEM `CERTIFICATE` block")]
    NoCertificate,
    #[error("unparseable PEM ({0})")]
    Pem(String),
    #[error("certificate {index} is not a valid X.509 certificate")]
    NotX509 { index: usize },
    #[error("no PEM private key")]
    NoKey,
    #[error(
        "the private key is {0}; convert it to PKCS#8 (`openssl pkcs8 -topk8 -nocrypt -in KEY`)"
    )]
    NotPkcs8(&'static str),
    #[error("the private key is not a usable ECDSA P-256/P-384, Ed25519 or RSA key")]
    UnsupportedKey,
    #[error("the private key does not match the certificate ({subject})")]
    KeyMismatch { subject: String },
    #[error("{subject} is not a CA certificate (no basicConstraints CA:TRUE)")]
    NotCa { subject: String },
    #[error("{subject} may not sign certificates (its keyUsage lacks keyCertSign)")]
    NoCertSign { subject: String },
    #[error("{subject} expired on {not_after}")]
    Expired { subject: String, not_after: String },
    #[error("{subject} is not valid before {not_before}")]
    NotYetValid { subject: String, not_before: String },
    #[error("{subject} is not self-signed, so it cannot be a trust root")]
    NotRoot { subject: String },
    #[error(
        "nothing given leads from {subject} to a root: add its issuer ({issuer}) with \
         --ca-chain, `ca.crt` in the Secret, or --extra-trust-root"
    )]
    NoPathToRoot { subject: String, issuer: String },
    #[error("a leaf it signs does not verify against the trust bundle ({0})")]
    Unverifiable(String),
    #[error("not a Kubernetes Secret ({0})")]
    NotSecret(String),
    #[error("has no `{0}` in `data` or `stringData`")]
    MissingEntry(&'static str),
    #[error("`data.{0}` is not base64")]
    NotBase64(&'static str),
    #[error("{present} is there but {missing} is not: restore it, or delete both to generate a new root")]
    HalfRoot {
        present: &'static str,
        missing: &'static str,
    },
}

/// PEM text and where it came from (`--ca-cert /etc/skiff/ca.pem`, `secret.yaml: tls.crt`).
pub(super) struct Pem {
    what: String,
    bytes: Vec<u8>,
}

impl Pem {
    pub(super) fn new(what: &str, text: &str) -> Pem {
        Pem {
            what: what.to_string(),
            bytes: text.as_bytes().to_vec(),
        }
    }

    fn read(flag: &str, path: &Path) -> Result<Pem, CaError> {
        let bytes = std::fs::read(path).map_err(|source| CaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Pem {
            what: format!("{flag} {}", path.display()),
            bytes,
        })
    }

    fn invalid(&self, problem: Problem) -> CaError {
        CaError::Invalid {
            what: self.what.clone(),
            problem,
        }
    }
}

pub(super) fn load(
    source: &CaSource,
    extra_roots: &[PathBuf],
    settings: Settings,
) -> Result<CertificateAuthority, CaError> {
    let extra: Vec<Pem> = extra_roots
        .iter()
        .map(|path| Pem::read("--extra-trust-root", path))
        .collect::<Result<_, _>>()?;
    match source {
        CaSource::Files { cert, key, chain } => {
            let cert_pem = Pem::read("--ca-cert", cert)?;
            let key_pem = Pem::read("--ca-key", key)?;
            let mut others = Vec::new();
            if let Some(chain) = chain {
                others.push(Pem::read("--ca-chain", chain)?);
            }
            let origin = format!("--ca-cert {}", cert.display());
            from_pem_with_roots(cert_pem, key_pem, others, extra, settings, origin)
        }
        CaSource::Secret(path) => {
            let secret = read_secret(path)?;
            let origin = format!("the Secret in {}", path.display());
            from_pem_with_roots(
                secret.cert,
                secret.key,
                secret.ca.into_iter().collect(),
                extra,
                settings,
                origin,
            )
        }
        CaSource::Dir(dir) => from_dir(dir, extra, settings),
    }
}

/// `root-cert.pem` and `root-key.pem` in `dir`, generated first if neither is there; writes
/// `ca-bundle.pem` beside them.
fn from_dir(
    dir: &Path,
    extra: Vec<Pem>,
    settings: Settings,
) -> Result<CertificateAuthority, CaError> {
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CaError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_error(dir))?;
    let cert_path = dir.join(ROOT_CERT_FILE);
    let key_path = dir.join(ROOT_KEY_FILE);
    let origin = match (cert_path.exists(), key_path.exists()) {
        (false, false) => {
            let (cert, key) = generate_root(&settings.trust_domain)?;
            // The key first: a crash in between leaves a key without a certificate, which the
            // next start reports rather than silently replacing.
            write_file(&key_path, key.as_bytes(), 0o600).map_err(write_error(&key_path))?;
            write_file(&cert_path, cert.as_bytes(), 0o644).map_err(write_error(&cert_path))?;
            tracing::warn!(
                dir = %dir.display(),
                "generated a new root CA: a self-generated root is for local use only; in \
                 production give --ca-cert/--ca-key or --ca-secret"
            );
            format!("a root generated in {}", dir.display())
        }
        (true, true) => format!("the root in {}", dir.display()),
        (present, _) => {
            let (present, missing) = if present {
                (ROOT_CERT_FILE, ROOT_KEY_FILE)
            } else {
                (ROOT_KEY_FILE, ROOT_CERT_FILE)
            };
            return Err(CaError::Invalid {
                what: format!("--ca-dir {}", dir.display()),
                problem: Problem::HalfRoot { present, missing },
            });
        }
    };
    if let Ok(meta) = std::fs::metadata(&key_path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(key = %key_path.display(), "the root key is readable by other users; chmod 600 it");
        }
    }
    let cert = Pem::read("--ca-dir", &cert_path)?;
    let key = Pem::read("--ca-dir", &key_path)?;
    let mut ca = from_pem_with_roots(cert, key, Vec::new(), extra, settings, origin)?;
    let bundle = dir.join(BUNDLE_FILE);
    write_file(&bundle, ca.bundle_pem.as_bytes(), 0o644).map_err(write_error(&bundle))?;
    ca.bundle_file = Some(bundle);
    Ok(ca)
}

/// Writes `bytes` to a temporary file created with `mode` beside `path`, then renames it over
/// `path`: a reader never sees half a file, and a key is never readable by others.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)
}

/// The PEM entries of a Kubernetes Secret file.
struct SecretPems {
    cert: Pem,
    key: Pem,
    ca: Option<Pem>,
}

/// The parts of a Secret that matter here; anything else (metadata, type) is ignored.
#[derive(serde::Deserialize)]
struct SecretFile {
    #[serde(default)]
    kind: Option<String>,
    /// Base64 values.
    #[serde(default)]
    data: BTreeMap<String, Option<String>>,
    /// Plain values; they win over `data`, as the API server merges them.
    #[serde(default, rename = "stringData")]
    string_data: BTreeMap<String, Option<String>>,
}

fn read_secret(path: &Path) -> Result<SecretPems, CaError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let what = format!("--ca-secret {}", path.display());
    let invalid = |problem| CaError::Invalid {
        what: what.clone(),
        problem,
    };
    let secret: SecretFile = serde_saphyr::from_str(&text)
        .map_err(|error| invalid(Problem::NotSecret(first_line(&error.to_string()))))?;
    if let Some(kind) = secret.kind.as_deref().filter(|kind| *kind != "Secret") {
        return Err(invalid(Problem::NotSecret(format!("its kind is {kind}"))));
    }
    let entry = |key: &'static str| -> Result<Option<Pem>, CaError> {
        let what = format!("{what}: {key}");
        if let Some(Some(text)) = secret.string_data.get(key) {
            return Ok(Some(Pem::new(&what, text)));
        }
        match secret.data.get(key) {
            Some(Some(encoded)) => {
                let compact: String = encoded.split_whitespace().collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|_| invalid(Problem::NotBase64(key)))?;
                Ok(Some(Pem { what, bytes }))
            }
            _ => Ok(None),
        }
    };
    Ok(SecretPems {
        cert: entry("tls.crt")?.ok_or_else(|| invalid(Problem::MissingEntry("tls.crt")))?,
        key: entry("tls.key")?.ok_or_else(|| invalid(Problem::MissingEntry("tls.key")))?,
        ca: entry("ca.crt")?,
    })
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// One certificate, with what the checks need from it.
struct Cert {
    der: CertificateDer<'static>,
    /// Where it came from: the source, and its place there when the source holds several.
    what: String,
    /// The subject, readable.
    subject: String,
    subject_raw: Vec<u8>,
    issuer: String,
    issuer_raw: Vec<u8>,
    not_before: i64,
    not_after: i64,
    not_before_text: String,
    not_after_text: String,
    /// basicConstraints CA:TRUE.
    ca: bool,
    /// No keyUsage, or one with keyCertSign.
    may_sign: bool,
    self_signed: bool,
    /// The subject public key (the BIT STRING's contents).
    public_key: Vec<u8>,
}

impl Cert {
    fn parse(der: CertificateDer<'static>, what: String, index: usize) -> Result<Cert, Problem> {
        let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|_| Problem::NotX509 { index })?;
        let subject = readable_name(x509.subject());
        let issuer = readable_name(x509.issuer());
        let validity = x509.validity();
        let ca = matches!(x509.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        let may_sign = match x509.key_usage() {
            Ok(Some(usage)) => usage.value.key_cert_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        let self_signed = x509.subject().as_raw() == x509.issuer().as_raw()
            && x509.verify_signature(None).is_ok();
        Ok(Cert {
            what,
            subject,
            subject_raw: x509.subject().as_raw().to_vec(),
            issuer,
            issuer_raw: x509.issuer().as_raw().to_vec(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            not_before_text: validity.not_before.to_string(),
            not_after_text: validity.not_after.to_string(),
            ca,
            may_sign,
            self_signed,
            public_key: x509.public_key().subject_public_key.data.to_vec(),
            der,
        })
    }

    fn x509(&self) -> X509Certificate<'_> {
        // Parsed once already in `Cert::parse`.
        x509_parser::parse_x509_certificate(self.der.as_ref())
            .expect("parsed before")
            .1
    }

    /// Whether `parent` issued this certificate (names match and the signature verifies).
    fn issued_by(&self, parent: &Cert) -> bool {
        self.issuer_raw == parent.subject_raw
            && self
                .x509()
                .verify_signature(Some(parent.x509().public_key()))
                .is_ok()
    }

    fn invalid(&self, problem: Problem) -> CaError {
        CaError::Invalid {
            what: self.what.clone(),
            problem,
        }
    }

    /// May sign certificates now: a CA, keyCertSign, within its validity.
    fn check_signer(&self, now: i64) -> Result<(), CaError> {
        if !self.ca {
            return Err(self.invalid(Problem::NotCa {
                subject: self.subject.clone(),
            }));
        }
        if !self.may_sign {
            return Err(self.invalid(Problem::NoCertSign {
                subject: self.subject.clone(),
            }));
        }
        self.check_validity(now)
    }

    fn check_validity(&self, now: i64) -> Result<(), CaError> {
        if now > self.not_after {
            return Err(self.invalid(Problem::Expired {
                subject: self.subject.clone(),
                not_after: self.not_after_text.clone(),
            }));
        }
        if now < self.not_before {
            return Err(self.invalid(Problem::NotYetValid {
                subject: self.subject.clone(),
                not_before: self.not_before_text.clone(),
            }));
        }
        Ok(())
    }
}

/// `CN=…, O=…`, or `(empty)`.
fn readable_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    let text = name.to_string();
    if text.is_empty() {
        "(empty subject)".to_string()
    } else {
        text
    }
}

/// Every certificate of `pem`, in order.
fn parse_certs(pem: &Pem) -> Result<Vec<Cert>, CaError> {
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.bytes)
        .collect::<Result<_, _>>()
        .map_err(|error| pem.invalid(Problem::Pem(error.to_string())))?;
    if ders.is_empty() {
        return Err(pem.invalid(Problem::NoCertificate));
    }
    let several = ders.len() > 1;
    ders.into_iter()
        .enumerate()
        .map(|(index, der)| {
            let what = if several {
                format!("{} (certificate {})", pem.what, index + 1)
            } else {
                pem.what.clone()
            };
            Cert::parse(der, what, index + 1).map_err(|problem| pem.invalid(problem))
        })
        .collect()
}

fn parse_key(pem: &Pem) -> Result<KeyPair, CaError> {
    let key = PrivateKeyDer::from_pem_slice(&pem.bytes).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => pem.invalid(Problem::NoKey),
        error => pem.invalid(Problem::Pem(error.to_string())),
    })?;
    let pkcs8 = match key {
        PrivateKeyDer::Pkcs8(pkcs8) => pkcs8,
        PrivateKeyDer::Sec1(_) => return Err(pem.invalid(Problem::NotPkcs8("a SEC1 EC key"))),
        PrivateKeyDer::Pkcs1(_) => return Err(pem.invalid(Problem::NotPkcs8("a PKCS#1 RSA key"))),
        _ => return Err(pem.invalid(Problem::UnsupportedKey)),
    };
    KeyPair::try_from(&pkcs8).map_err(|_| pem.invalid(Problem::UnsupportedKey))
}

/// [`from_pem`], with the extra roots (`--extra-trust-root`), which must be roots.
fn from_pem_with_roots(
    cert: Pem,
    key: Pem,
    chain: Vec<Pem>,
    extra_roots: Vec<Pem>,
    settings: Settings,
    origin: String,
) -> Result<CertificateAuthority, CaError> {
    let mut extra = Vec::new();
    for pem in &extra_roots {
        for root in parse_certs(pem)? {
            if !root.self_signed {
                let subject = root.subject.clone();
                return Err(root.invalid(Problem::NotRoot { subject }));
            }
            extra.push(root);
        }
    }
    build(cert, key, chain, extra, settings, origin)
}

/// The CA of an issuer certificate (`cert`: the issuer first, then optionally certificates
/// above it), its key, and `chain` (certificates above the issuer, roots included).
pub(super) fn from_pem(
    cert: Pem,
    key: Pem,
    chain: Vec<Pem>,
    settings: Settings,
    origin: String,
) -> Result<CertificateAuthority, CaError> {
    build(cert, key, chain, Vec::new(), settings, origin)
}

fn build(
    cert: Pem,
    key: Pem,
    chain: Vec<Pem>,
    extra_roots: Vec<Cert>,
    settings: Settings,
    origin: String,
) -> Result<CertificateAuthority, CaError> {
    let now = unix(SystemTime::now());
    let mut certs = parse_certs(&cert)?;
    let issuer = certs.remove(0);
    let key_pair = parse_key(&key)?;
    if key_pair.public_key_raw() != issuer.public_key.as_slice() {
        return Err(key.invalid(Problem::KeyMismatch {
            subject: issuer.subject.clone(),
        }));
    }
    issuer.check_signer(now)?;

    // Everything that may be above the issuer.
    let mut candidates = certs;
    for pem in &chain {
        candidates.extend(parse_certs(pem)?);
    }
    candidates.extend(extra_roots);

    // Walk from the issuer up to a root.
    let mut path: Vec<usize> = Vec::new();
    let mut current = &issuer;
    while !current.self_signed {
        let parent = (0..candidates.len())
            .find(|index| !path.contains(index) && current.issued_by(&candidates[*index]));
        let Some(parent) = parent else {
            return Err(current.invalid(Problem::NoPathToRoot {
                subject: current.subject.clone(),
                issuer: current.issuer.clone(),
            }));
        };
        candidates[parent].check_signer(now)?;
        path.push(parent);
        current = &candidates[parent];
    }
    let root_index = path.last().copied();

    // The bundle: the issuer's root first, then every other root given.
    let mut roots: Vec<&Cert> = vec![match root_index {
        Some(index) => &candidates[index],
        None => &issuer,
    }];
    for candidate in &candidates {
        if candidate.self_signed && !roots.iter().any(|r| r.der == candidate.der) {
            if !candidate.ca {
                return Err(candidate.invalid(Problem::NotCa {
                    subject: candidate.subject.clone(),
                }));
            }
            candidate.check_validity(now)?;
            roots.push(candidate);
        }
    }

    // What follows a leaf: the issuer (unless it is the root), then the intermediates.
    let mut above: Vec<&Cert> = Vec::new();
    if !issuer.self_signed {
        above.push(&issuer);
        above.extend(
            path.iter()
                .filter(|index| Some(**index) != root_index)
                .map(|index| &candidates[*index]),
        );
    }
    let chain_not_after = std::iter::once(&issuer)
        .chain(path.iter().map(|index| &candidates[*index]))
        .map(|c| c.not_after)
        .min()
        .unwrap_or(issuer.not_after);

    let rcgen_issuer: Issuer<'static, KeyPair> = Issuer::from_ca_cert_der(&issuer.der, key_pair)
        .map_err(|_| {
            issuer.invalid(Problem::Unverifiable(
                "rcgen cannot read its subject".to_string(),
            ))
        })?;
    let ca = CertificateAuthority {
        issuer: rcgen_issuer,
        intermediates: above.iter().map(|c| c.der.clone()).collect(),
        intermediates_pem: above.iter().map(|c| pem_encode(&c.der)).collect(),
        roots: roots.iter().map(|c| c.der.clone()).collect(),
        bundle_pem: roots.iter().map(|c| pem_encode(&c.der)).collect(),
        chain_not_after,
        issuer_not_after: issuer.not_after,
        roots_not_after: roots.iter().map(|c| c.not_after).min().unwrap_or_default(),
        settings,
        origin,
        bundle_file: None,
    };
    self_check(&ca).map_err(|problem| issuer.invalid(problem))?;
    Ok(ca)
}

/// Issues a throwaway leaf and verifies it as a peer will: through the chain to a root of the
/// bundle. Catches what the checks above cannot see (a name rcgen re-encodes differently, an
/// extension webpki refuses).
fn self_check(ca: &CertificateAuthority) -> Result<(), Problem> {
    let unverifiable = |error: &dyn std::fmt::Display| Problem::Unverifiable(error.to_string());
    let identity = SpiffeId::new(&ca.settings.trust_domain, "skiff-system", "skiff-ca-check");
    let issued = ca.issue(&identity, &[]).map_err(|e| unverifiable(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for root in &ca.roots {
        roots.add(root.clone()).map_err(|e| unverifiable(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        crate::tls::provider(),
    )
    .build()
    .map_err(|e| unverifiable(&e))?;
    verifier
        .verify_client_cert(&issued.chain[0], &issued.chain[1..], UnixTime::now())
        .map_err(|e| unverifiable(&e))?;
    Ok(())
}
