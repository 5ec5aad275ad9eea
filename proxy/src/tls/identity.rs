//! This proxy's workload identity: its certificate chain, private key and trust bundle, and
//! the rustls configurations built from them, used by every mesh handshake ([`connect`] on
//! the outbound side, [`accept`] on inbound 15006).
//!
//! The configurations are built once per certificate and swapped whole at renewal
//! ([`Identity::install`]): a connection keeps the configuration it started with, so open
//! connections never notice, and the next handshake uses the new certificate.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::{ResolvesClientCert, Resumption};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};
use skiff_api::identity::{SpiffeId, ALPN_HTTP1, ALPN_HTTP2, ALPN_TCP};
use tokio::io::{AsyncRead, AsyncWrite};

use super::control_plane::BundleChange;
use super::san::{self, LeafFields};
use super::verify::{self, Expect, PeerVerifier, Usage};
use super::{provider, TlsError, VERSIONS};

/// The ALPN values the inbound port accepts, in order of preference.
const INBOUND_ALPN: [&[u8]; 3] = [ALPN_HTTP2, ALPN_HTTP1, ALPN_TCP];

/// TLS session tickets kept per client configuration, for resumption to recent peers.
const CLIENT_SESSIONS: usize = 256;

/// What the control plane issued: the material an [`Identity`] is built from.
pub struct Credentials {
    /// The leaf first, then any intermediates (not the root).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key; generated in this process and never sent anywhere.
    pub key: PrivateKeyDer<'static>,
    /// Every root a peer's chain may end at.
    pub trust_bundle: Vec<CertificateDer<'static>>,
}

impl Credentials {
    /// From the PEM texts of a [`skiff_api::identity::CertificateResponse`] and the key.
    pub fn from_pem(
        chain_pem: &str,
        key: PrivateKeyDer<'static>,
        trust_bundle_pem: &str,
    ) -> Result<Credentials, TlsError> {
        Ok(Credentials {
            chain: super::certificates_from_pem(chain_pem)?,
            key,
            trust_bundle: super::certificates_from_pem(trust_bundle_pem)?,
        })
    }
}

/// This proxy's current certificate and what is built from it; swapped at renewal.
pub struct Identity {
    installed: RwLock<Arc<Installed>>,
    /// `skiff_certificate_renewals_total{result="success"}` and `{result="failure"}`.
    renewals_succeeded: AtomicU64,
    renewals_failed: AtomicU64,
}

/// One certificate, checked, with its rustls configurations.
struct Installed {
    id: SpiffeId,
    leaf: LeafFields,
    /// When it was installed: certificates are backdated for clock skew, so the lifetime a
    /// renewal is scheduled from starts here rather than at `notBefore`.
    installed_at: SystemTime,
    /// Chain and signing key, for every handshake that presents this certificate.
    certified: Arc<CertifiedKey>,
    /// The trust bundle as the control plane sent it: the control plane's certificate may
    /// chain to these roots too ([`super::control_plane`]), so a root rotation reaches the
    /// proxy's connection to it.
    trust_bundle: Vec<CertificateDer<'static>>,
    /// The trust bundle as a verifier (mesh peers of our trust domain).
    verifier: Arc<PeerVerifier>,
    /// Inbound: client certificate required, the three mesh ALPN values.
    server: Arc<ServerConfig>,
    /// Outbound, one per ALPN value: a client offers exactly one.
    clients: Vec<(&'static [u8], Arc<ClientConfig>)>,
}

impl Identity {
    /// Checks the credentials (the leaf names one SPIFFE ID, the key matches it, the chain
    /// ends at the trust bundle, it has not expired) and builds the configurations.
    pub fn try_new(credentials: Credentials) -> Result<Identity, TlsError> {
        Ok(Identity {
            installed: RwLock::new(Arc::new(Installed::build(credentials)?)),
            renewals_succeeded: AtomicU64::new(0),
            renewals_failed: AtomicU64::new(0),
        })
    }

    /// Replaces the certificate (and the trust bundle): the next handshakes use it, open
    /// connections keep theirs. On error the current certificate stays.
    pub fn install(&self, credentials: Credentials) -> Result<(), TlsError> {
        let installed = Arc::new(Installed::build(credentials)?);
        let current = self.current();
        if installed.id != current.id {
            tracing::warn!(previous = %current.id, new = %installed.id, "the workload identity changed");
        }
        let change = BundleChange::between(&current.trust_bundle, &installed.trust_bundle);
        if !change.is_empty() {
            tracing::info!(added = ?change.added, removed = ?change.removed, roots = installed.trust_bundle.len(), "the trust bundle changed");
        }
        *self
            .installed
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = installed;
        Ok(())
    }

    fn current(&self) -> Arc<Installed> {
        self.installed
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The current identity.
    pub fn id(&self) -> SpiffeId {
        self.current().id.clone()
    }

    pub fn not_after(&self) -> SystemTime {
        self.current().leaf.not_after()
    }

    /// The start of the certificate's useful life: `notBefore`, or when it was installed if
    /// later (a control plane backdates `notBefore` for clock skew; counting from it would
    /// make a lifetime of minutes look mostly spent on arrival).
    pub fn in_force_since(&self) -> SystemTime {
        let installed = self.current();
        installed.leaf.not_before().max(installed.installed_at)
    }

    /// Roots in the trust bundle in force.
    pub fn trust_roots(&self) -> usize {
        self.current().verifier.roots()
    }

    /// The trust bundle in force, as the control plane sent it (two roots during a rotation).
    pub fn trust_bundle(&self) -> Vec<CertificateDer<'static>> {
        self.current().trust_bundle.clone()
    }

    /// Client config for sidecar-to-sidecar mTLS offering exactly `alpn` (one of the
    /// `ALPN_*` constants; another value gets a configuration built for the call).
    pub fn client_config(&self, alpn: &'static [u8]) -> Arc<ClientConfig> {
        let installed = self.current();
        match installed.clients.iter().find(|(value, _)| *value == alpn) {
            Some((_, config)) => config.clone(),
            None => client_config(&installed.verifier, &installed.certified, alpn),
        }
    }

    /// Server config of the inbound port: client certificate required, ALPN `skiff/h2`,
    /// `skiff/http1`, `skiff/tcp`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// The chain and key to present now (the control plane's client resolver reads it at
    /// each handshake, so a reconnection shows the renewed certificate).
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.current().certified.clone()
    }

    /// Counts a renewal attempt for `skiff_certificate_renewals_total`.
    pub fn record_renewal(&self, succeeded: bool) {
        let counter = match succeeded {
            true => &self.renewals_succeeded,
            false => &self.renewals_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the certificate's metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        let installed = self.current();
        let _ = writeln!(out, "# HELP skiff_certificate_expiration_timestamp_seconds When the workload certificate expires (its notAfter), in seconds since the Unix epoch.");
        let _ = writeln!(
            out,
            "# TYPE skiff_certificate_expiration_timestamp_seconds gauge"
        );
        let _ = writeln!(
            out,
            "skiff_certificate_expiration_timestamp_seconds {}",
            installed.leaf.not_after_unix
        );
        let _ = writeln!(out, "# HELP skiff_certificate_renewals_total Attempts to renew the workload certificate, by outcome.");
        let _ = writeln!(out, "# TYPE skiff_certificate_renewals_total counter");
        for (result, counter) in [
            ("success", &self.renewals_succeeded),
            ("failure", &self.renewals_failed),
        ] {
            let _ = writeln!(
                out,
                "skiff_certificate_renewals_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP skiff_certificate_trust_roots Roots in the trust bundle in force."
        );
        let _ = writeln!(out, "# TYPE skiff_certificate_trust_roots gauge");
        let _ = writeln!(
            out,
            "skiff_certificate_trust_roots {}",
            installed.verifier.roots()
        );
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let installed = self.current();
        f.debug_struct("Identity")
            .field("id", &installed.id.to_string())
            .field("not_after_unix", &installed.leaf.not_after_unix)
            .finish_non_exhaustive()
    }
}

impl Installed {
    fn build(credentials: Credentials) -> Result<Installed, TlsError> {
        let Credentials {
            chain,
            key,
            trust_bundle,
        } = credentials;
        let invalid = |what: String| TlsError::Credentials(what);
        let leaf_der = chain
            .first()
            .ok_or_else(|| invalid("empty certificate chain".into()))?;
        let leaf = san::parse_leaf(leaf_der)
            .map_err(|error| invalid(format!("our certificate: {error}")))?;
        let id = verify::identity_of(&leaf)
            .map_err(|refused| invalid(format!("our certificate: {refused}")))?;
        let verifier = Arc::new(PeerVerifier::try_new(
            &trust_bundle,
            Expect::TrustDomain(id.trust_domain.clone()),
        )?);
        // Our certificate must be one our peers accept, on both sides of a handshake. Checked
        // at its notBefore, so a control plane whose clock runs ahead is not refused; expiry
        // is checked against now.
        let at = UnixTime::since_unix_epoch(Duration::from_secs(
            leaf.not_before_unix.max(0).unsigned_abs(),
        ));
        for usage in [Usage::Server, Usage::Client] {
            verifier
                .verify(leaf_der, &chain[1..], at, usage)
                .map_err(|refused| invalid(format!("our certificate: {refused}")))?;
        }
        if leaf.not_after() <= SystemTime::now() {
            return Err(invalid(format!(
                "our certificate expired at {}",
                leaf.not_after_unix
            )));
        }
        let certified = Arc::new(
            CertifiedKey::from_der(chain, key, &provider())
                .map_err(|error| invalid(format!("our key: {error}")))?,
        );
        let server = server_config(&verifier, &certified);
        let clients = INBOUND_ALPN
            .iter()
            .map(|alpn| (*alpn, client_config(&verifier, &certified, alpn)))
            .collect();
        Ok(Installed {
            id,
            leaf,
            installed_at: SystemTime::now(),
            certified,
            trust_bundle,
            verifier,
            server,
            clients,
        })
    }
}

fn server_config(verifier: &Arc<PeerVerifier>, certified: &Arc<CertifiedKey>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .expect("the ring provider supports TLS 1.3")
        .with_client_cert_verifier(verifier.clone())
        .with_cert_resolver(Arc::new(Presented(certified.clone())));
    config.alpn_protocols = INBOUND_ALPN.iter().map(|alpn| alpn.to_vec()).collect();
    Arc::new(config)
}

fn client_config(
    verifier: &Arc<PeerVerifier>,
    certified: &Arc<CertifiedKey>,
    alpn: &[u8],
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_cert_resolver(Arc::new(Presented(certified.clone())));
    config.alpn_protocols = vec![alpn.to_vec()];
    config.resumption = Resumption::in_memory_sessions(CLIENT_SESSIONS);
    // Peers are named by SPIFFE ID, not DNS: no name in the clear.
    config.enable_sni = false;
    Arc::new(config)
}

/// Presents one certificate, on either side of a handshake.
#[derive(Debug)]
struct Presented(Arc<CertifiedKey>);

impl ResolvesServerCert for Presented {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for Presented {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The client side of an inbound mTLS connection, as the inbound port learned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The SPIFFE ID its certificate proved.
    pub id: SpiffeId,
    /// The ALPN value agreed: which of the mesh protocols follows.
    pub alpn: Vec<u8>,
}

/// Handshakes as a client on `stream` offering `alpn`, and checks the peer proved `expected`.
///
/// In TLS 1.3 the client finishes first: a peer that refuses *our* certificate is only seen
/// on the first read, as an error carrying its alert.
pub async fn connect<IO>(
    identity: &Identity,
    stream: IO,
    alpn: &'static [u8],
    expected: &SpiffeId,
) -> Result<tokio_rustls::client::TlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let connector = tokio_rustls::TlsConnector::from(identity.client_config(alpn));
    let tls = connector
        .connect(session_name(expected), stream)
        .await
        .map_err(TlsError::from_handshake)?;
    let (_, connection) = tls.get_ref();
    let found = peer_identity(connection.peer_certificates())?;
    if &found != expected {
        return Err(TlsError::IdentityMismatch {
            expected: Box::new(expected.clone()),
            found: Box::new(found),
        });
    }
    if connection.alpn_protocol() != Some(alpn) {
        return Err(TlsError::NoAlpn);
    }
    Ok(tls)
}

/// Handshakes as the inbound server: the stream, the client's SPIFFE ID and the ALPN agreed.
pub async fn accept<IO>(
    identity: &Identity,
    stream: IO,
) -> Result<(tokio_rustls::server::TlsStream<IO>, Peer), TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config());
    let tls = acceptor
        .accept(stream)
        .await
        .map_err(TlsError::from_handshake)?;
    let (_, connection) = tls.get_ref();
    let id = peer_identity(connection.peer_certificates())?;
    let alpn = connection
        .alpn_protocol()
        .map(<[u8]>::to_vec)
        .ok_or(TlsError::NoAlpn)?;
    Ok((tls, Peer { id, alpn }))
}

/// The SPIFFE ID of a verified peer chain (also after session resumption, where rustls
/// restores the chain of the original handshake).
fn peer_identity(chain: Option<&[CertificateDer<'static>]>) -> Result<SpiffeId, TlsError> {
    let leaf = chain.and_then(<[_]>::first).ok_or_else(|| {
        TlsError::Certificate(verify::CertificateRefused::new(
            verify::Refusal::NoClientCertificate,
            "the peer presented no certificate",
        ))
    })?;
    let fields = san::parse_leaf(leaf).map_err(|error| {
        TlsError::Certificate(verify::CertificateRefused::new(
            verify::Refusal::Malformed,
            error.to_string(),
        ))
    })?;
    verify::identity_of(&fields).map_err(TlsError::Certificate)
}

/// The name client sessions are cached under: one per peer identity, so a resumption is only
/// attempted with a ticket from a peer of the same identity. Never sent (SNI is off).
fn session_name(expected: &SpiffeId) -> ServerName<'static> {
    let mut hasher = DefaultHasher::new();
    expected.hash(&mut hasher);
    ServerName::try_from(format!("{:016x}.peer.skiff.invalid", hasher.finish()))
        .expect("hex labels make a valid DNS name")
}

/// What the first bytes of an inbound connection say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloCheck {
    /// A TLS record has started; the ClientHello is not complete yet.
    NeedMore,
    /// Not a TLS ClientHello.
    NotTls,
    /// A complete ClientHello, with the ALPN values it offers (empty if none).
    ClientHello { alpn: Vec<Vec<u8>> },
}

/// Looks at the first bytes of an inbound connection without consuming them.
pub fn inspect_client_hello(bytes: &[u8]) -> HelloCheck {
    // A handshake record (22) of TLS 1.x (major version 3).
    match bytes {
        [] | [0x16] => return HelloCheck::NeedMore,
        [0x16, 0x03, ..] => {}
        _ => return HelloCheck::NotTls,
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            // More than a ClientHello can be.
            Err(_) => return HelloCheck::NotTls,
        }
    }
    match acceptor.accept() {
        Ok(None) => HelloCheck::NeedMore,
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            let alpn = hello
                .alpn()
                .map(|values| values.map(<[u8]>::to_vec).collect())
                .unwrap_or_default();
            HelloCheck::ClientHello { alpn }
        }
        Err(_) => HelloCheck::NotTls,
    }
}

/// Seconds since the Unix epoch of a time (0 before it).
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
