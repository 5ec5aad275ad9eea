//! The sidecar's workload identity and its TLS (DESIGN.md §4): every mesh hop, outbound and
//! inbound, and every call to the control plane goes through here.
//!
//! - [`san`]: reads a leaf certificate's URI SANs, CA flag, key usage and validity (a small
//!   strict DER walker; no X.509 parser in the proxy).
//! - [`verify`]: the rustls verifiers for peers and the control plane: chain to the trust
//!   bundle with webpki, then exactly one SPIFFE ID in the trust domain; every refusal has a
//!   bounded reason ([`Refusal`]).
//! - [`identity`]: [`Identity`], this proxy's certificate, key and trust bundle with cached
//!   rustls configurations, swapped at renewal without touching open connections; [`connect`]
//!   and [`accept`] do mesh handshakes.
//! - [`control_plane`]: how the proxy authenticates the control plane and itself to it.
//! - [`renew`]: obtains the first certificate and keeps it renewed.
//!
//! TLS 1.3 only, with the ring provider; sidecars recognise each other by ALPN
//! ([`skiff_api::identity::ALPN_HTTP2`] and friends).

pub mod control_plane;
pub mod identity;
pub mod renew;
pub mod san;
pub mod verify;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use control_plane::ControlPlaneTls;
pub use identity::{
    accept, connect, inspect_client_hello, Credentials, HelloCheck, Identity, Peer,
};
pub use verify::{CertificateRefused, Refusal};

/// Why a handshake, or a certificate offered to us, was refused. [`TlsError::reason`] is the
/// bounded label for metrics and logs.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Our verifier refused the peer's certificate.
    #[error("peer certificate refused")]
    Certificate(#[source] CertificateRefused),
    /// The peer's certificate is valid, for another workload than the one expected.
    #[error("peer is {found}, expected {expected}")]
    IdentityMismatch {
        expected: Box<skiff_api::identity::SpiffeId>,
        found: Box<skiff_api::identity::SpiffeId>,
    },
    /// The peer ended the handshake with an alert: usually it refused our certificate.
    #[error("the peer refused the handshake ({0:?})")]
    PeerRefused(rustls::AlertDescription),
    /// The peer agreed on no application protocol of ours: not a Skiff sidecar, or one that
    /// does not speak this protocol.
    #[error("no common application protocol")]
    NoAlpn,
    /// Any other TLS failure (not TLS at all, a protocol violation, ...).
    #[error("tls handshake failed")]
    Protocol(#[source] rustls::Error),
    /// The connection failed under the handshake.
    #[error("connection failed during the handshake")]
    Io(#[source] std::io::Error),
    /// Our own certificate, key or trust bundle is unusable (never the peer's fault).
    #[error("invalid credentials: {0}")]
    Credentials(String),
}

impl TlsError {
    /// Label for metrics and logs: one of a small closed set.
    pub fn reason(&self) -> &'static str {
        match self {
            TlsError::Certificate(refused) => refused.reason.label(),
            TlsError::IdentityMismatch { .. } => Refusal::IdentityMismatch.label(),
            TlsError::PeerRefused(_) => "peer-refused",
            TlsError::NoAlpn => "no-alpn",
            TlsError::Protocol(_) => "protocol",
            TlsError::Io(_) => "io",
            TlsError::Credentials(_) => "invalid-credentials",
        }
    }

    /// Classifies the error a tokio-rustls handshake returned.
    pub fn from_handshake(error: std::io::Error) -> TlsError {
        let rustls_error = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned();
        match rustls_error {
            Some(rustls_error) => TlsError::from(rustls_error),
            None => TlsError::Io(error),
        }
    }
}

impl From<rustls::Error> for TlsError {
    fn from(error: rustls::Error) -> TlsError {
        match error {
            rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
            | rustls::Error::NoApplicationProtocol => TlsError::NoAlpn,
            rustls::Error::AlertReceived(alert) => TlsError::PeerRefused(alert),
            other => match verify::refusal_of(&other) {
                Some(refused) => TlsError::Certificate(refused),
                None => TlsError::Protocol(other),
            },
        }
    }
}

/// The one crypto provider: ring. Installed explicitly in every configuration rather than
/// through a process default, so nothing depends on which provider another crate picked.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Every TLS configuration here speaks TLS 1.3 and nothing else.
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Parses every `CERTIFICATE` block of a PEM text.
pub fn certificates_from_pem(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let certificates = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Credentials(format!("invalid PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(TlsError::Credentials("no certificate in the PEM".into()));
    }
    Ok(certificates)
}
