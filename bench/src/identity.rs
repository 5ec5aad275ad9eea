//! Workload certificates the benchmark tools sign themselves with a control plane's CA files
//! (`skiff-control --ca-dir`): a benchmark tool may; a real proxy sends a CSR and never sees a
//! CA key. The fan-out simulator presents them to the control plane's API ([`crate::fanout`]),
//! `handshakes` to a sidecar's inbound port as a peer sidecar would ([`crate::handshakes`]).
//! Each certificate is shaped like the ones `skiff-control` issues: no subject, one URI SAN
//! (the SPIFFE ID), `CA:FALSE`, digitalSignature, clientAuth + serverAuth, ECDSA P-256.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How long the tools' certificates are valid: longer than any run.
const LIFETIME_SECONDS: i64 = 24 * 3600;

/// Signs workload certificates with a CA directory's root.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    /// The trust bundle (`ca-bundle.pem`) peers' certificates are verified against.
    roots: Arc<rustls::RootCertStore>,
    /// The same roots as certificates, for the proxy's own peer verifier.
    bundle: Vec<CertificateDer<'static>>,
    /// The trust domain of every SPIFFE ID signed (the control plane's `--trust-domain`).
    trust_domain: String,
}

/// A signed leaf and its key, as a rustls configuration takes them.
pub struct Certificate {
    /// The leaf alone: it is signed by the root, which the peer already holds.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Signer {
    /// Reads `root-cert.pem`, `root-key.pem` and `ca-bundle.pem` in `dir`.
    pub fn load(dir: &Path, trust_domain: &str) -> anyhow::Result<Signer> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let key = KeyPair::from_pem(&read("root-key.pem")?).context("root-key.pem")?;
        let issuer =
            Issuer::from_ca_cert_pem(&read("root-cert.pem")?, key).context("root-cert.pem")?;
        let bundle = CertificateDer::pem_slice_iter(read("ca-bundle.pem")?.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("ca-bundle.pem")?;
        let mut roots = rustls::RootCertStore::empty();
        for root in &bundle {
            roots.add(root.clone()).context("ca-bundle.pem")?;
        }
        Ok(Signer {
            issuer,
            roots: Arc::new(roots),
            bundle,
            trust_domain: trust_domain.to_string(),
        })
    }

    /// The trust bundle's certificates (`ca-bundle.pem`).
    pub fn bundle(&self) -> &[CertificateDer<'static>] {
        &self.bundle
    }

    /// The trust bundle, to verify a peer's certificate with.
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        self.roots.clone()
    }

    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> String {
        format!(
            "spiffe://{}/ns/{namespace}/sa/{service_account}",
            self.trust_domain
        )
    }

    /// A fresh key and a certificate of `namespace/service_account` for it.
    pub fn certificate(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<Certificate> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            self.spiffe_id(namespace, service_account).try_into()?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
        params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 60)?;
        params.not_after = time::OffsetDateTime::from_unix_timestamp(now + LIFETIME_SECONDS)?;
        let leaf = params.signed_by(&key, &self.issuer)?;
        Ok(Certificate {
            chain: vec![leaf.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}
