//! The certificate authority (DESIGN.md §4). Signs each proxy's CSR as a short-lived leaf for the
//! one SPIFFE ID its workload may have, and the API's own serving certificate; hands out the
//! trust bundle (every root, two during a rotation).
//!
//! Where the issuer comes from is [`CaSource`] (read and checked in `load.rs`): PEM files, a
//! Kubernetes Secret file, or a directory where a root is generated on first start. The issuer
//! may be a root or an intermediate whose chain leads to one; every leaf's chain is the leaf,
//! the issuer and the intermediates above it, never the root.
//!
//! The private key of a workload never comes here: the proxy sends a CSR, whose signature
//! proves it holds the key, and the control plane builds the certificate itself from the CSR's
//! public key alone. Only the identity the workload may have is ever signed.

mod load;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivatePkcs8KeyDer};
use skiff_api::identity::{CertificateResponse, SpiffeId, DEFAULT_TRUST_DOMAIN};

pub use load::{CaSource, Problem};

/// Certificates are valid from this long before they are issued, so a peer whose clock is a
/// little behind accepts them at once.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The shortest leaf lifetime `--cert-lifetime` accepts.
pub const MIN_LIFETIME: Duration = Duration::from_secs(10);

/// How long a root generated on first start is valid.
pub const GENERATED_ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What every certificate this CA signs has in common.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The trust domain of every SPIFFE ID signed (`--trust-domain`).
    pub trust_domain: String,
    /// How long a leaf is valid (`--cert-lifetime`, default 24 h), unless its issuer expires
    /// sooner.
    pub lifetime: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
            lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why the CA could not be set up. Each message names the file (or Secret key, or flag) and
/// what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A certificate, key or Secret that cannot be used; `what` names where it came from.
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: Problem },
    #[error("cannot sign a certificate")]
    Sign(#[source] rcgen::Error),
}

/// Why a CSR was not signed.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is not a PEM `CERTIFICATE REQUEST`")]
    Pem,
    #[error(
        "the CSR cannot be parsed, or has an extension other than subjectAltName, keyUsage, \
         extendedKeyUsage and basicConstraints"
    )]
    Malformed,
    #[error("the CSR's signature does not verify, so it does not prove possession of its key")]
    Signature,
    #[error("the CSR's key is not an ECDSA P-256 key")]
    KeyType,
    #[error("the CSR asks for {asked}, but the identity of this workload is {identity}")]
    Identity { asked: String, identity: SpiffeId },
    #[error("cannot sign the certificate")]
    Sign(#[source] rcgen::Error),
}

impl CsrError {
    /// The request itself is wrong (400), rather than asking for what it may not have (403).
    pub fn is_malformed(&self) -> bool {
        !matches!(self, CsrError::Identity { .. } | CsrError::Sign(_))
    }
}

/// The issuer, what to send with its leaves, and what peers trust.
pub struct CertificateAuthority {
    /// Signs every certificate; its key never leaves this process.
    issuer: Issuer<'static, KeyPair>,
    /// What follows a leaf in its chain: the issuer's certificate and the intermediates above
    /// it, up to (not including) the root; empty when the issuer is itself a root.
    intermediates: Vec<CertificateDer<'static>>,
    /// The same, PEM, appended to every leaf.
    intermediates_pem: String,
    /// Every root a peer's chain may end at: the issuer's own first, then the others (during a
    /// rotation, the next or the previous root).
    roots: Vec<CertificateDer<'static>>,
    /// The same, PEM: the `trustBundlePem` of every answer and the file proxies start with.
    bundle_pem: String,
    /// No leaf outlives its chain: the earliest `notAfter` of the issuer and every certificate
    /// above it (Unix seconds).
    chain_not_after: i64,
    /// The issuer's `notAfter` (Unix seconds), for its metric.
    issuer_not_after: i64,
    /// The earliest `notAfter` of the roots (Unix seconds), for its metric.
    roots_not_after: i64,
    settings: Settings,
    /// Where the issuer came from, for the log.
    origin: String,
    /// `ca-bundle.pem` in the CA directory, written at start when the CA came from one.
    bundle_file: Option<PathBuf>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("origin", &self.origin)
            .field("settings", &self.settings)
            .field("intermediates", &self.intermediates.len())
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

/// A certificate issued together with a key generated here (the control plane's own; tests').
#[derive(Debug)]
pub struct IssuedKey {
    /// The leaf, then the intermediates up to (not including) the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// The same, PEM.
    pub chain_pem: String,
    /// The leaf's private key, PKCS#8.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The same, PEM.
    pub key_pem: String,
    /// The leaf's `notAfter`, seconds since the Unix epoch.
    pub not_after_unix: u64,
    /// From issuance to `notAfter`: what a renewal schedule is a fraction of.
    pub valid_for: Duration,
}

impl CertificateAuthority {
    /// Sets up the CA from `source`; `extra_roots` (`--extra-trust-root`) join the trust bundle.
    /// Does I/O: reads the files, and for [`CaSource::Dir`] may generate and write a root and
    /// writes the bundle.
    pub fn load(
        source: &CaSource,
        extra_roots: &[PathBuf],
        settings: Settings,
    ) -> Result<CertificateAuthority, CaError> {
        load::load(source, extra_roots, settings)
    }

    /// A fresh root kept in memory only: for tests and throwaway control planes.
    pub fn generate(settings: Settings) -> Result<CertificateAuthority, CaError> {
        let (cert_pem, key_pem) = generate_root(&settings.trust_domain)?;
        load::from_pem(
            load::Pem::new("generated root", &cert_pem),
            load::Pem::new("generated root key", &key_pem),
            Vec::new(),
            settings,
            "a root generated in memory".to_string(),
        )
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn trust_domain(&self) -> &str {
        &self.settings.trust_domain
    }

    /// Every root, PEM.
    pub fn trust_bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// Every root, DER.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The issuer's certificate and the intermediates above it (empty for a root issuer).
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// `ca-bundle.pem` in the CA directory, when the CA came from one.
    pub fn bundle_file(&self) -> Option<&Path> {
        self.bundle_file.as_deref()
    }

    /// Where the issuer came from, for the log.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The earliest `notAfter` of the roots, seconds since the Unix epoch.
    pub fn root_expiration_unix(&self) -> i64 {
        self.roots_not_after
    }

    /// The issuer's `notAfter`, seconds since the Unix epoch.
    pub fn issuer_expiration_unix(&self) -> i64 {
        self.issuer_not_after
    }

    /// Signs the CSR of a proxy whose workload has `identity`. The CSR's signature must verify
    /// (proof that the proxy holds the key) and its URI SANs must be none or exactly
    /// `identity`; nothing else of it is used but its public key.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
    ) -> Result<CertificateResponse, CsrError> {
        self.sign_csr_at(csr_pem, identity, SystemTime::now())
    }

    fn sign_csr_at(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        now: SystemTime,
    ) -> Result<CertificateResponse, CsrError> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|_| CsrError::Pem)?;
        check_csr_key(&der)?;
        let csr = CertificateSigningRequestParams::from_der(&der).map_err(|error| match error {
            rcgen::Error::InvalidCertificationRequestSignature => CsrError::Signature,
            rcgen::Error::UnsupportedSignatureAlgorithm => CsrError::KeyType,
            _ => CsrError::Malformed,
        })?;
        let asked: Vec<&str> = csr
            .params
            .subject_alt_names
            .iter()
            .filter_map(|san| match san {
                SanType::URI(uri) => Some(uri.as_str()),
                _ => None,
            })
            .collect();
        let wanted = identity.to_string();
        if !(asked.is_empty() || asked == [wanted.as_str()]) {
            return Err(CsrError::Identity {
                asked: asked.join(", "),
                identity: identity.clone(),
            });
        }
        let (params, not_after) = self
            .leaf_params(identity, &[], now)
            .map_err(CsrError::Sign)?;
        let leaf = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(CsrError::Sign)?;
        Ok(CertificateResponse {
            identity: wanted,
            chain_pem: leaf.pem() + &self.intermediates_pem,
            trust_bundle_pem: self.bundle_pem.clone(),
            not_after_unix: not_after as u64,
        })
    }

    /// Generates a key and issues a leaf for `identity` (plus `dns_names`) with it: the control
    /// plane's own serving certificate, and certificates for tests.
    pub fn issue(&self, identity: &SpiffeId, dns_names: &[String]) -> Result<IssuedKey, CaError> {
        let now = SystemTime::now();
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let (params, not_after) = self
            .leaf_params(identity, dns_names, now)
            .map_err(CaError::Sign)?;
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Sign)?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.intermediates.iter().cloned());
        let valid_for =
            Duration::from_secs(u64::try_from(not_after - unix(now)).unwrap_or_default());
        Ok(IssuedKey {
            chain,
            chain_pem: leaf.pem() + &self.intermediates_pem,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            key_pem: key.serialize_pem(),
            not_after_unix: not_after as u64,
            valid_for,
        })
    }

    /// The fields of every leaf: no subject, exactly one URI SAN (the SPIFFE ID) then any DNS
    /// names, `CA:FALSE`, digitalSignature, serverAuth + clientAuth, a random serial, valid
    /// from [`CLOCK_SKEW`] ago for the lifetime (never past the chain's `notAfter`). Returns
    /// the `notAfter` too (Unix seconds).
    fn leaf_params(
        &self,
        identity: &SpiffeId,
        dns_names: &[String],
        now: SystemTime,
    ) -> Result<(CertificateParams, i64), rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
        for name in dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.clone().try_into()?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let now = unix(now);
        let not_after = (now + self.settings.lifetime.as_secs() as i64).min(self.chain_not_after);
        params.not_before = offset_time(now - CLOCK_SKEW.as_secs() as i64);
        params.not_after = offset_time(not_after);
        Ok((params, not_after))
    }
}

/// A CSR's key must be ECDSA P-256, what proxies generate (rcgen would otherwise take the
/// curve from the signature algorithm, which does not name it).
fn check_csr_key(der: &CertificateSigningRequestDer<'_>) -> Result<(), CsrError> {
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
    use x509_parser::prelude::FromDer as _;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|_| CsrError::Malformed)?;
    let key = &csr.certification_request_info.subject_pki.algorithm;
    let curve = key
        .parameters
        .as_ref()
        .and_then(|parameters| parameters.as_oid().ok());
    if key.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(CsrError::KeyType);
    }
    Ok(())
}

/// A self-signed root for `trust_domain`: ECDSA P-256, CA:TRUE, keyCertSign + cRLSign,
/// [`GENERATED_ROOT_LIFETIME`]. Returns the certificate and the PKCS#8 key, PEM.
pub(crate) fn generate_root(trust_domain: &str) -> Result<(String, String), CaError> {
    let key = KeyPair::generate().map_err(CaError::Sign)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "skiff");
    // The key's fingerprint in the name: two generated roots (before and after a rotation)
    // never share a name, so a certificate of the other one is an unknown issuer, not a
    // look-alike whose signature fails.
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
    let fingerprint: String = fingerprint.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("skiff root CA {trust_domain} {fingerprint}"),
    );
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let now = unix(SystemTime::now());
    params.not_before = offset_time(now - CLOCK_SKEW.as_secs() as i64);
    params.not_after = offset_time(now + GENERATED_ROOT_LIFETIME.as_secs() as i64);
    let cert = params.self_signed(&key).map_err(CaError::Sign)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// 16 random bytes, positive and without a leading zero byte (RFC 5280 §4.1.2.2).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // The system RNG failing is not something a control plane can work around.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random number generator works");
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Seconds since the Unix epoch.
fn unix(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    }
}

fn offset_time(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `-----BEGIN CERTIFICATE-----`, base64 in lines of 64, `-----END CERTIFICATE-----`.
fn pem_encode(der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
