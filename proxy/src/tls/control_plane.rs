//! How the proxy talks to the control plane (port 15010): it verifies that the control
//! plane's certificate chains to a trusted root and names exactly `--control-plane-identity`,
//! and presents its workload certificate once it has one. Used by the certificate requests
//! ([`super::renew`]) and the configuration stream ([`crate::control`]).
//!
//! The trusted roots are those of `--ca-bundle` plus the trust bundle of the proxy's current
//! [`Identity`], which the control plane sent with the certificate over a connection already
//! verified this way. During a root rotation (docs/control-plane.md, "Rotating the root") a
//! proxy therefore follows the control plane from root A to root B without a restart: the
//! bundle A + B it received before the switch lets it accept a serving certificate issued
//! by B. When the control plane's certificate chains to none of them (`unknown-issuer`, or
//! `bad-signature` for a new root with the old one's name), `--ca-bundle` is read again,
//! since a ConfigMap-mounted file is updated in place; if its roots changed, the connection
//! is tried once more at once.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::uri::Authority;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use skiff_api::identity::{SpiffeId, ALPN_CONTROL};
use tokio::net::TcpStream;

use super::identity::Identity;
use super::verify::{Expect, PeerVerifier, Refusal, Usage};
use super::{provider, TlsError, VERSIONS};

/// The default `--control-plane-identity`.
pub const DEFAULT_CONTROL_PLANE_IDENTITY: &str =
    "spiffe://cluster.local/ns/skiff-system/sa/skiff-control";

/// Whom the proxy trusts as its control plane. Clones share the `--ca-bundle` roots, so a
/// re-read by the certificate client also serves the configuration stream.
#[derive(Clone, Debug)]
pub struct ControlPlaneTls {
    /// `--control-plane-identity`: the one identity accepted, whichever root it chains to.
    expected: SpiffeId,
    /// `--ca-bundle`, to read again when the control plane chains to no trusted root (see
    /// [`untrusted_root`]); `None` when the roots were given in memory (nothing to re-read).
    path: Option<Arc<Path>>,
    /// The roots of `--ca-bundle` as last read, and the last re-read failure.
    bundle: Arc<Mutex<CaBundle>>,
}

/// `--ca-bundle` as the proxy last read it.
#[derive(Debug)]
struct CaBundle {
    /// Never empty: a read that finds no root leaves the previous ones in force.
    roots: Arc<[CertificateDer<'static>]>,
    /// Why the last re-read failed, so a broken file is reported once rather than at every
    /// reconnection.
    last_error: Option<String>,
}

/// Why no connection to the control plane was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect")]
    Tcp(#[source] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("tls handshake with the control plane failed")]
    Tls(#[source] TlsError),
}

/// How `--ca-bundle` changed between two reads: fingerprints of the roots added and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl BundleChange {
    /// What differs from `before` to `after`, each root named by its SHA-256 fingerprint.
    pub fn between(before: &[CertificateDer<'_>], after: &[CertificateDer<'_>]) -> BundleChange {
        let missing_from = |list: &[CertificateDer<'_>], root: &&CertificateDer<'_>| {
            !list.iter().any(|other| other.as_ref() == root.as_ref())
        };
        BundleChange {
            added: after
                .iter()
                .filter(|root| missing_from(before, root))
                .map(|root| fingerprint(root))
                .collect(),
            removed: before
                .iter()
                .filter(|root| missing_from(after, root))
                .map(|root| fingerprint(root))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// `sha256:<hex>` of a certificate's DER: what `openssl x509 -noout -fingerprint -sha256`
/// prints (there with colons, in upper case), so an operator can tell which root is which.
pub fn fingerprint(certificate: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, certificate.as_ref());
    let mut out = String::from("sha256:");
    for byte in digest.as_ref() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The roots the control plane's certificate may chain to: `--ca-bundle`, then the roots of
/// the identity's trust bundle it does not already hold. Pure, so it is tested with tables.
pub fn trusted_roots(
    ca_bundle: &[CertificateDer<'static>],
    identity_bundle: &[CertificateDer<'static>],
) -> Vec<CertificateDer<'static>> {
    let mut roots = ca_bundle.to_vec();
    for root in identity_bundle {
        if !roots.iter().any(|known| known.as_ref() == root.as_ref()) {
            roots.push(root.clone());
        }
    }
    roots
}

impl ControlPlaneTls {
    /// From roots in memory (nothing to re-read). Fails when they are empty or unusable.
    pub fn try_new(
        ca_bundle: &[CertificateDer<'_>],
        expected: SpiffeId,
    ) -> Result<ControlPlaneTls, TlsError> {
        let roots: Vec<CertificateDer<'static>> = ca_bundle
            .iter()
            .map(|root| root.clone().into_owned())
            .collect();
        // The same checks as at every handshake, made now so a bad bundle fails the start.
        PeerVerifier::try_new(&roots, Expect::Identity(expected.clone()))?;
        Ok(ControlPlaneTls {
            expected,
            path: None,
            bundle: Arc::new(Mutex::new(CaBundle {
                roots: roots.into(),
                last_error: None,
            })),
        })
    }

    /// Reads the PEM roots of `--ca-bundle`; the file is read again whenever the control
    /// plane's certificate chains to none of the roots trusted.
    pub fn load(ca_bundle: &Path, expected: SpiffeId) -> Result<ControlPlaneTls, TlsError> {
        let roots = read_bundle(ca_bundle, &expected)?;
        let mut tls = ControlPlaneTls::try_new(&roots, expected)?;
        tls.path = Some(Arc::from(ca_bundle));
        Ok(tls)
    }

    /// The identity the control plane must prove.
    pub fn expected(&self) -> &SpiffeId {
        &self.expected
    }

    /// The roots of `--ca-bundle` as last read.
    pub fn ca_bundle_roots(&self) -> Arc<[CertificateDer<'static>]> {
        self.lock_bundle().roots.clone()
    }

    /// Reads `--ca-bundle` again and puts its roots in force, logging what changed; returns
    /// what changed (empty when nothing did, or the file is given in memory). A file that
    /// cannot be read or holds no usable root leaves the roots in force, with a warning.
    pub fn reload(&self) -> BundleChange {
        let Some(path) = &self.path else {
            return BundleChange::default();
        };
        let read = read_bundle(path, &self.expected);
        let mut bundle = self.lock_bundle();
        let roots = match read {
            Ok(roots) => roots,
            Err(error) => {
                let error = error.to_string();
                if bundle.last_error.as_ref() != Some(&error) {
                    tracing::warn!(%error, "cannot re-read --ca-bundle; its previous roots stay in force");
                }
                bundle.last_error = Some(error);
                return BundleChange::default();
            }
        };
        bundle.last_error = None;
        let change = BundleChange::between(&bundle.roots, &roots);
        if change.is_empty() {
            tracing::debug!(path = %path.display(), "--ca-bundle re-read: unchanged");
            return change;
        }
        tracing::info!(
            path = %path.display(),
            added = ?change.added,
            removed = ?change.removed,
            roots = roots.len(),
            "--ca-bundle changed; the control plane is verified against its new roots"
        );
        bundle.roots = roots.into();
        change
    }

    /// A client configuration for the control plane's API (ALPN `h2`). Both halves are
    /// decided *at each handshake*, so a configuration kept across a renewal or a re-read
    /// uses what is current: the control plane is verified against `--ca-bundle` plus the
    /// identity's trust bundle, and the identity's certificate is presented while it is
    /// valid. Without an identity, or with an expired one, no client certificate is
    /// presented (the request is authenticated by a token).
    pub fn client_config(&self, identity: Option<&Arc<Identity>>) -> Arc<ClientConfig> {
        let verifier = Arc::new(ControlPlaneVerifier {
            expected: self.expected.clone(),
            bundle: self.bundle.clone(),
            identity: identity.cloned(),
            algorithms: provider().signature_verification_algorithms,
        });
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .expect("the ring provider supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match identity {
            Some(identity) => {
                builder.with_client_cert_resolver(Arc::new(CurrentCertificate(identity.clone())))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_CONTROL.to_vec()];
        // A resumed session would show the control plane the certificate of the first
        // handshake; connections are few, so always do a full one.
        config.resumption = Resumption::disabled();
        Arc::new(config)
    }

    /// Connects to `address` and completes the TLS handshake within `timeout`. When the
    /// control plane's certificate chains to no trusted root ([`untrusted_root`]),
    /// `--ca-bundle` is read again and, if it changed, the connection is tried once more.
    pub async fn connect(
        &self,
        address: &Authority,
        identity: Option<&Arc<Identity>>,
        timeout: Duration,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
        let tried = self.ca_bundle_roots();
        let mut connected = self.connect_once(address, identity, timeout).await;
        if connected.as_ref().is_err_and(untrusted_root) && self.bundle_changed_since(&tried) {
            tracing::debug!(control_plane = %address, "connecting again with the new --ca-bundle");
            connected = self.connect_once(address, identity, timeout).await;
        }
        connected.map_err(explain)
    }

    /// Re-reads `--ca-bundle`: are its roots in force now other than `tried`? (Another
    /// connection may have re-read it in the meantime.)
    fn bundle_changed_since(&self, tried: &[CertificateDer<'static>]) -> bool {
        self.reload();
        *self.ca_bundle_roots() != *tried
    }

    async fn connect_once(
        &self,
        address: &Authority,
        identity: Option<&Arc<Identity>>,
        timeout: Duration,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
        let connector = tokio_rustls::TlsConnector::from(self.client_config(identity));
        let name = server_name(address);
        let connecting = async {
            let tcp = TcpStream::connect(address.as_str())
                .await
                .map_err(ConnectError::Tcp)?;
            let _ = tcp.set_nodelay(true);
            connector
                .connect(name, tcp)
                .await
                .map_err(|error| ConnectError::Tls(TlsError::from_handshake(error)))
        };
        tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    fn lock_bundle(&self) -> std::sync::MutexGuard<'_, CaBundle> {
        self.bundle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether the control plane's certificate chains to no root trusted: `unknown-issuer`, or
/// `bad-signature` when a trusted root has its issuer's name but another key. The latter is
/// what a rotation looks like when the new root kept the old one's name, as every root
/// `skiff-control` generates for a trust domain does.
pub fn untrusted_root(error: &ConnectError) -> bool {
    matches!(
        error,
        ConnectError::Tls(TlsError::Certificate(refused))
            if matches!(refused.reason, Refusal::UnknownIssuer | Refusal::BadSignature)
    )
}

/// Says in the log which roots the control plane's certificate was checked against.
fn explain(error: ConnectError) -> ConnectError {
    let ConnectError::Tls(TlsError::Certificate(mut refused)) = error else {
        return error;
    };
    match refused.reason {
        Refusal::UnknownIssuer => {
            refused.detail = "issued by no root of --ca-bundle or of the trust bundle received with the workload certificate".into();
        }
        Refusal::BadSignature => {
            refused.detail = "a signature does not verify: a trusted root has the issuer's name but not its key (a new root missing from --ca-bundle?)".into();
        }
        _ => {}
    }
    ConnectError::Tls(TlsError::Certificate(refused))
}

/// The roots of a `--ca-bundle` file, checked as the verifier will use them.
fn read_bundle(path: &Path, expected: &SpiffeId) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read_to_string(path).map_err(|error| {
        TlsError::Credentials(format!("cannot read {}: {error}", path.display()))
    })?;
    let roots = super::certificates_from_pem(&pem)
        .map_err(|error| TlsError::Credentials(format!("{}: {error}", path.display())))?;
    PeerVerifier::try_new(&roots, Expect::Identity(expected.clone()))
        .map_err(|error| TlsError::Credentials(format!("{}: {error}", path.display())))?;
    Ok(roots)
}

/// The SNI name for the control plane: its host (the certificate is checked by SPIFFE ID,
/// not by this name).
fn server_name(address: &Authority) -> ServerName<'static> {
    let host = address.host().trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
        ServerName::try_from("control-plane.skiff.invalid").expect("a valid DNS name")
    })
}

/// Verifies the control plane's certificate against the roots trusted at the time of the
/// handshake, for exactly `--control-plane-identity`.
#[derive(Debug)]
struct ControlPlaneVerifier {
    expected: SpiffeId,
    /// `--ca-bundle`, shared with the [`ControlPlaneTls`] that re-reads it.
    bundle: Arc<Mutex<CaBundle>>,
    /// Whose trust bundle is trusted too: received from the control plane, over a
    /// connection verified like this one.
    identity: Option<Arc<Identity>>,
    /// The provider's signature algorithms, for handshake signatures.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ControlPlaneVerifier {
    fn verifier(&self) -> Result<PeerVerifier, TlsError> {
        let ca_bundle = self
            .bundle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .roots
            .clone();
        let identity_bundle = self
            .identity
            .as_ref()
            .map(|identity| identity.trust_bundle())
            .unwrap_or_default();
        PeerVerifier::try_new(
            &trusted_roots(&ca_bundle, &identity_bundle),
            Expect::Identity(self.expected.clone()),
        )
    }
}

impl ServerCertVerifier for ControlPlaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Both sources were checked when they were read, so this does not fail in practice.
        let verifier = self
            .verifier()
            .map_err(|error| rustls::Error::General(error.to_string()))?;
        verifier.verify(end_entity, intermediates, now, Usage::Server)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Presents the identity's certificate as it is at the time of the handshake, unless it has
/// expired: the control plane would refuse the handshake, where without a certificate a
/// request can still authenticate with the bootstrap token.
#[derive(Debug)]
struct CurrentCertificate(Arc<Identity>);

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        (self.0.not_after() > SystemTime::now()).then(|| self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
