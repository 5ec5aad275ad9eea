//! `skiff-control`: the Skiff control plane, and the library the `skiff` CLI shares with it.
//!
//! Map of the crate, in the order policy flows through it:
//! - [`source`]: where policy comes from ([`source::file`]: a watched directory); validates
//!   and publishes.
//! - [`store`]: the versioned snapshots, each proxy's view computed once and cached, and the
//!   fan-out to every stream.
//! - [`api`]: the proxy API on :15010, `POST /v1/stream` (one session per proxy) and the status
//!   endpoints; [`proxies`]: who is connected and what each was sent, ACKed and NACKed.
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
pub mod demo;
pub mod inspect;
mod listener;
pub mod metrics;
pub mod proxies;
pub mod shutdown;
pub mod source;
pub mod store;

use std::sync::Arc;

use metrics::Metrics;
use proxies::Proxies;
use store::Store;

/// The state one control plane process shares between its source, API and admin port.
#[derive(Debug)]
pub struct ControlPlane {
    pub store: Arc<Store>,
    pub proxies: Arc<Proxies>,
    pub metrics: Arc<Metrics>,
}

impl ControlPlane {
    pub fn new() -> Self {
        let metrics = Arc::new(Metrics::default());
        ControlPlane {
            store: Arc::new(Store::new()),
            proxies: Arc::new(Proxies::new(metrics.clone())),
            metrics,
        }
    }
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane::new()
    }
}
