//! The simulated proxies' mTLS to the control plane: each identity gets a client certificate,
//! signed here with the control plane's own CA files (a benchmark tool may; a real proxy sends
//! a CSR and never sees a CA key), and the control plane is verified against the CA's bundle,
//! as `localhost`, one of the names its certificate carries. One certificate per identity,
//! signed before the run: connecting costs the handshake only, as for a real proxy.

use std::collections::HashMap;
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
use tokio_rustls::TlsConnector;

/// How long the simulator's certificates are valid: longer than any run.
const LIFETIME_SECONDS: i64 = 24 * 3600;

/// Signs client certificates with a CA directory's root (`skiff-control --ca-dir`).
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    /// The trust bundle the control plane's certificate is verified against.
    roots: Arc<rustls::RootCertStore>,
    trust_domain: String,
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
        let mut roots = rustls::RootCertStore::empty();
        for root in CertificateDer::pem_slice_iter(read("ca-bundle.pem")?.as_bytes()) {
            roots
                .add(root.context("ca-bundle.pem")?)
                .context("ca-bundle.pem")?;
        }
        Ok(Signer {
            issuer,
            roots: Arc::new(roots),
            trust_domain: trust_domain.to_string(),
        })
    }

    /// A connector presenting a fresh certificate of `namespace/service_account`.
    pub fn connector(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<TlsConnector> {
        let identity = format!(
            "spiffe://{}/ns/{namespace}/sa/{service_account}",
            self.trust_domain
        );
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(identity.try_into()?)];
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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

/// One connector per distinct `(namespace, service account)` of `identities`.
pub fn connectors(
    signer: &Signer,
    identities: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<HashMap<(String, String), TlsConnector>> {
    let mut connectors = HashMap::new();
    for identity in identities {
        if let std::collections::hash_map::Entry::Vacant(entry) = connectors.entry(identity) {
            let (namespace, service_account) = entry.key();
            let connector = signer.connector(namespace, service_account)?;
            entry.insert(connector);
        }
    }
    Ok(connectors)
}
