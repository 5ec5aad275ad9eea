//! How the proxy talks to the control plane (port 15010): it verifies that the control
//! plane's certificate chains to `--ca-bundle` and names exactly `--control-plane-identity`,
//! and presents its workload certificate once it has one. Used by the certificate requests
//! ([`super::renew`]) and the configuration stream ([`crate::control`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, SignatureScheme};
use skiff_api::identity::{SpiffeId, ALPN_CONTROL};
use tokio::net::TcpStream;

use super::identity::Identity;
use super::verify::{Expect, PeerVerifier};
use super::{provider, TlsError, VERSIONS};

/// The default `--control-plane-identity`.
pub const DEFAULT_CONTROL_PLANE_IDENTITY: &str =
    "spiffe://cluster.local/ns/skiff-system/sa/skiff-control";

/// Whom the proxy trusts as its control plane.
#[derive(Clone, Debug)]
pub struct ControlPlaneTls {
    /// `--control-plane-identity`.
    expected: SpiffeId,
    /// Roots from `--ca-bundle`, expecting exactly that identity.
    verifier: Arc<PeerVerifier>,
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

impl ControlPlaneTls {
    pub fn try_new(
        ca_bundle: &[CertificateDer<'_>],
        expected: SpiffeId,
    ) -> Result<ControlPlaneTls, TlsError> {
        Ok(ControlPlaneTls {
            verifier: Arc::new(PeerVerifier::try_new(
                ca_bundle,
                Expect::Identity(expected.clone()),
            )?),
            expected,
        })
    }

    /// Reads the PEM roots of `--ca-bundle`.
    pub fn load(ca_bundle: &Path, expected: SpiffeId) -> Result<ControlPlaneTls, TlsError> {
        let pem = std::fs::read_to_string(ca_bundle).map_err(|error| {
            TlsError::Credentials(format!("cannot read {}: {error}", ca_bundle.display()))
        })?;
        let roots = super::certificates_from_pem(&pem)
            .map_err(|error| TlsError::Credentials(format!("{}: {error}", ca_bundle.display())))?;
        ControlPlaneTls::try_new(&roots, expected)
    }

    /// The identity the control plane must prove.
    pub fn expected(&self) -> &SpiffeId {
        &self.expected
    }

    /// A client configuration for the control plane's API (ALPN `h2`). With an identity it
    /// presents the identity's certificate *at each handshake*, so a configuration kept
    /// across a renewal shows the new one; without, no client certificate (the first
    /// request, authenticated by a token).
    pub fn client_config(&self, identity: Option<&Arc<Identity>>) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .expect("the ring provider supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(self.verifier.clone());
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

    /// Connects to `address` and completes the TLS handshake within `timeout`.
    pub async fn connect(
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
}

/// The SNI name for the control plane: its host (the certificate is checked by SPIFFE ID,
/// not by this name).
fn server_name(address: &Authority) -> ServerName<'static> {
    let host = address.host().trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
        ServerName::try_from("control-plane.skiff.invalid").expect("a valid DNS name")
    })
}

/// Presents the identity's certificate as it is at the time of the handshake.
#[derive(Debug)]
struct CurrentCertificate(Arc<Identity>);

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
