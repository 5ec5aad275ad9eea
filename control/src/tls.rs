//! TLS of the proxy API (:15010), the first thing every accepted connection goes through: TLS
//! 1.3 only, ALPN `h2`, the control plane's own certificate (issued by its CA for
//! `spiffe://<td>/ns/<namespace>/sa/skiff-control` and the Service's DNS names, renewed at 70%
//! of its lifetime without dropping a connection), and an optional client certificate, verified
//! against the trust bundle when presented, whose SPIFFE ID the request handlers receive.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use skiff_api::identity::{SpiffeError, SpiffeId, ALPN_CONTROL};

use crate::ca::{CaError, CertificateAuthority};
use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;

/// The service account in the control plane's SPIFFE ID.
pub const SERVICE_ACCOUNT: &str = "skiff-control";

/// The control plane's certificate is renewed when this fraction of its lifetime has passed.
const RENEW_AT: f64 = 0.7;

/// After a failed renewal, the next try is this much later.
const RENEW_RETRY: Duration = Duration::from_secs(10);

/// The crypto every TLS endpoint of the control plane uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `spiffe://<trust-domain>/ns/<namespace>/sa/skiff-control`: what proxies verify
/// (`--control-plane-identity`).
pub fn control_plane_identity(trust_domain: &str, namespace: &str) -> SpiffeId {
    SpiffeId::new(trust_domain, namespace, SERVICE_ACCOUNT)
}

/// The DNS names of the control plane's Service in `namespace`, and `localhost`.
pub fn control_plane_dns_names(namespace: &str) -> Vec<String> {
    vec![
        "skiff-control".to_string(),
        format!("skiff-control.{namespace}"),
        format!("skiff-control.{namespace}.svc"),
        "localhost".to_string(),
    ]
}

/// Why a verified client certificate does not name a workload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerIdentityError {
    #[error("the client certificate cannot be parsed")]
    Unparseable,
    #[error("the client certificate has {0} URI SANs, not exactly one")]
    UriCount(usize),
    #[error("the client certificate's URI SAN is not a workload SPIFFE ID")]
    NotSpiffe(#[source] SpiffeError),
}

/// The SPIFFE ID of a leaf certificate: its one URI SAN. The chain has been verified by then;
/// this only reads the name.
pub fn peer_identity(leaf: &CertificateDer<'_>) -> Result<SpiffeId, PeerIdentityError> {
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|_| PeerIdentityError::Unparseable)?;
    let uris: Vec<&str> = match certificate.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(_) => return Err(PeerIdentityError::Unparseable),
    };
    match uris.as_slice() {
        [uri] => SpiffeId::parse(uri).map_err(PeerIdentityError::NotSpiffe),
        _ => Err(PeerIdentityError::UriCount(uris.len())),
    }
}

/// The server side of the API's TLS: the certificate of `certificate`, client certificates
/// optional but verified against `roots` when presented.
pub fn server_config(
    roots: &[CertificateDer<'static>],
    certificate: Arc<ServingCertificate>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = provider();
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|error| rustls::Error::General(error.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![ALPN_CONTROL.to_vec()];
    Ok(config)
}

/// The control plane's own certificate; every handshake takes the current one, so a renewal
/// affects only connections made after it.
#[derive(Debug)]
pub struct ServingCertificate {
    /// The SPIFFE ID and DNS names every renewal is issued for.
    identity: SpiffeId,
    dns_names: Vec<String>,
    current: RwLock<Current>,
}

#[derive(Debug, Clone)]
struct Current {
    key: Arc<CertifiedKey>,
    not_after_unix: u64,
    /// How long it was valid for when issued: the renewal waits [`RENEW_AT`] of it.
    valid_for: Duration,
}

impl ServingCertificate {
    /// Issues the first certificate.
    pub fn issue(
        ca: &CertificateAuthority,
        identity: SpiffeId,
        dns_names: Vec<String>,
    ) -> Result<ServingCertificate, CaError> {
        let current = Self::issue_current(ca, &identity, &dns_names)?;
        Ok(ServingCertificate {
            identity,
            dns_names,
            current: RwLock::new(current),
        })
    }

    fn issue_current(
        ca: &CertificateAuthority,
        identity: &SpiffeId,
        dns_names: &[String],
    ) -> Result<Current, CaError> {
        let issued = ca.issue(identity, dns_names)?;
        let key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
            issued.key.clone_key(),
        ))
        .expect("rustls signs with the keys rcgen generates");
        Ok(Current {
            key: Arc::new(CertifiedKey::new(issued.chain, key)),
            not_after_unix: issued.not_after_unix,
            valid_for: issued.valid_for,
        })
    }

    /// Replaces the certificate with a fresh one.
    pub fn renew(&self, ca: &CertificateAuthority) -> Result<(), CaError> {
        let current = Self::issue_current(ca, &self.identity, &self.dns_names)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = current;
        Ok(())
    }

    fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The current certificate's `notAfter`, seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> u64 {
        self.current().not_after_unix
    }

    /// The current chain (leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current().key.cert.clone()
    }

    /// Renews the certificate when 70% of each one's lifetime has passed, until `shutdown`.
    pub async fn keep_fresh(
        self: Arc<Self>,
        ca: Arc<CertificateAuthority>,
        metrics: Arc<Metrics>,
        mut shutdown: ShutdownSignal,
    ) {
        metrics.serving_certificate_issued(self.not_after_unix());
        let mut wait = self.current().valid_for.mul_f64(RENEW_AT);
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.requested() => return,
            }
            wait = match self.renew(&ca) {
                Ok(()) => {
                    let current = self.current();
                    metrics.serving_certificate_issued(current.not_after_unix);
                    tracing::info!(
                        identity = %self.identity,
                        not_after = current.not_after_unix,
                        "renewed the API's certificate"
                    );
                    current.valid_for.mul_f64(RENEW_AT)
                }
                Err(error) => {
                    tracing::error!(
                        error = %crate::error_chain(&error),
                        "cannot renew the API's certificate; trying again in {RENEW_RETRY:?}"
                    );
                    RENEW_RETRY
                }
            };
        }
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::ca::Settings;

    fn ca(lifetime: Duration) -> Arc<CertificateAuthority> {
        Arc::new(
            CertificateAuthority::generate(Settings {
                lifetime,
                ..Settings::default()
            })
            .unwrap(),
        )
    }

    fn serving(ca: &CertificateAuthority) -> Arc<ServingCertificate> {
        let identity = control_plane_identity(ca.trust_domain(), "skiff-system");
        Arc::new(
            ServingCertificate::issue(ca, identity, control_plane_dns_names("skiff-system"))
                .unwrap(),
        )
    }

    /// A TLS connection over an in-memory pipe to an echo server using `config`; returns the
    /// client stream and the leaf the server showed.
    async fn connect(
        ca: &CertificateAuthority,
        config: Arc<ServerConfig>,
    ) -> (
        tokio_rustls::client::TlsStream<tokio::io::DuplexStream>,
        CertificateDer<'static>,
    ) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut tls = tokio_rustls::TlsAcceptor::from(config)
                .accept(server)
                .await
                .unwrap();
            let mut buffer = [0u8; 64];
            while let Ok(n) = tls.read(&mut buffer).await {
                if n == 0 || tls.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        for root in ca.roots() {
            roots.add(root.clone()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_CONTROL.to_vec()];
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("skiff-control.skiff-system.svc".try_into().unwrap(), client)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_CONTROL));
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        (tls, leaf)
    }

    async fn echo(tls: &mut tokio_rustls::client::TlsStream<tokio::io::DuplexStream>) {
        tls.write_all(b"ping").await.unwrap();
        let mut answer = [0u8; 4];
        tls.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ping");
    }

    #[tokio::test]
    async fn a_renewal_serves_new_handshakes_and_keeps_open_connections() {
        let ca = ca(Duration::from_secs(3600));
        let certificate = serving(&ca);
        let config = Arc::new(server_config(ca.roots(), certificate.clone()).unwrap());
        let (mut open, first) = connect(&ca, config.clone()).await;
        assert_eq!(
            peer_identity(&first).unwrap().to_string(),
            "spiffe://cluster.local/ns/skiff-system/sa/skiff-control"
        );
        certificate.renew(&ca).unwrap();
        echo(&mut open).await;
        let (mut fresh, second) = connect(&ca, config).await;
        assert_ne!(first, second, "the new handshake got the new certificate");
        assert_eq!(second, certificate.chain()[0]);
        echo(&mut fresh).await;
        echo(&mut open).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_certificate_is_renewed_at_seventy_percent_of_its_lifetime() {
        let ca = ca(Duration::from_secs(100));
        let certificate = serving(&ca);
        let metrics = Arc::new(Metrics::default());
        let shutdown = crate::shutdown::Shutdown::new();
        let task = tokio::spawn(certificate.clone().keep_fresh(
            ca.clone(),
            metrics.clone(),
            shutdown.signal(),
        ));
        let first = certificate.chain()[0].clone();
        tokio::time::sleep(Duration::from_secs(69)).await;
        assert_eq!(certificate.chain()[0], first, "not yet");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let second = certificate.chain()[0].clone();
        assert_ne!(second, first, "renewed at 70 s");
        tokio::time::sleep(Duration::from_secs(70)).await;
        assert_ne!(certificate.chain()[0], second, "and again 70 s later");
        assert!(metrics
            .render()
            .lines()
            .any(|l| l
                .starts_with("skiff_control_serving_certificate_expiration_timestamp_seconds 1")));
        shutdown.request();
        task.await.unwrap();
    }

    #[test]
    fn a_peer_identity_is_exactly_one_spiffe_uri() {
        let ca = ca(Duration::from_secs(3600));
        let one = ca
            .issue(&SpiffeId::new("cluster.local", "shop", "web"), &[])
            .unwrap();
        assert_eq!(
            peer_identity(&one.chain[0]),
            Ok(SpiffeId::new("cluster.local", "shop", "web"))
        );
        assert_eq!(
            peer_identity(&CertificateDer::from(vec![1, 2, 3])),
            Err(PeerIdentityError::Unparseable)
        );
        // A certificate without a URI SAN (the root).
        assert_eq!(
            peer_identity(&ca.roots()[0]),
            Err(PeerIdentityError::UriCount(0))
        );
    }
}
