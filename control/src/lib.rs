//! `skiff-control`: the Skiff control plane, and the library the `skiff` CLI shares with it.
//!
//! Map of the crate, in the order policy flows through it:
//! - [`source`]: where policy comes from ([`source::file`]: a watched directory); validates
//!   and publishes.
//! - [`store`]: the versioned snapshots, each proxy's view computed once and cached, and the
//!   fan-out to every stream.
//! - [`api`]: the proxy API on :15010 (HTTP/2 over TLS, [`tls`]): `POST /v1/certificate`,
//!   `POST /v1/stream` (one session per proxy) and the status endpoints; [`proxies`]: who is
//!   connected and what each was sent, ACKed and NACKed.
//! - [`ca`]: the certificate authority that signs the proxies' CSRs and the API's own
//!   certificate; [`authenticator`]: which identity a certificate request may have.
//! - [`admin`] (:15014) and [`metrics`]: what operators see; [`shutdown`]: how it stops.
//! - [`inspect`]: the client side of the status endpoints, for `skiff proxy-status` and
//!   `skiff proxy-config`.
//! - [`demo`]: `skiff demo`, the whole mesh on one machine (pods as network namespaces, through
//!   `skiff-lab`), with a live view of a canary split.
//!
//! Stateless: everything here is rebuilt from the policy source, and a restarted control plane
//! resynchronises its proxies simply by their reconnecting.

pub mod admin;
pub mod api;
pub mod authenticator;
pub mod ca;
pub mod demo;
pub mod inspect;
mod listener;
pub mod metrics;
pub mod proxies;
pub mod shutdown;
pub mod source;
pub mod store;
pub mod tls;

use std::sync::Arc;

use authenticator::Authenticator;
use ca::CertificateAuthority;
use metrics::Metrics;
use proxies::Proxies;
use skiff_api::identity::SpiffeId;
use store::Store;

/// The namespace the control plane runs in unless told otherwise (`--namespace`).
pub const DEFAULT_NAMESPACE: &str = "skiff-system";

/// The state one control plane process shares between its source, API and admin port.
#[derive(Debug)]
pub struct ControlPlane {
    pub store: Arc<Store>,
    pub proxies: Arc<Proxies>,
    pub metrics: Arc<Metrics>,
    /// Signs the proxies' certificates and the API's own.
    pub ca: Arc<CertificateAuthority>,
    /// Decides which identity a certificate request may have.
    pub authenticator: Authenticator,
    /// The Kubernetes namespace the control plane runs in: its own identity is
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/skiff-control`, its DNS names
    /// `skiff-control.<namespace>[.svc]`.
    pub namespace: String,
}

impl ControlPlane {
    /// A control plane in [`DEFAULT_NAMESPACE`] whose certificates `ca` signs, authenticating
    /// proxies with bootstrap tokens.
    pub fn new(ca: CertificateAuthority) -> Self {
        let metrics = Arc::new(Metrics::default());
        metrics.ca_loaded(&ca);
        ControlPlane {
            store: Arc::new(Store::with_trust_domain(ca.trust_domain())),
            proxies: Arc::new(Proxies::new(metrics.clone())),
            metrics,
            ca: Arc::new(ca),
            authenticator: Authenticator::default(),
            namespace: DEFAULT_NAMESPACE.to_string(),
        }
    }

    /// The control plane's own SPIFFE ID, what proxies verify (`--control-plane-identity`).
    pub fn identity(&self) -> SpiffeId {
        tls::control_plane_identity(self.ca.trust_domain(), &self.namespace)
    }
}

/// An error and its causes on one line (`a: b: c`), for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}
