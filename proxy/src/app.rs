//! Wires the proxy together from its configuration: binds every port, starts the accept
//! loops, and on drain waits for in-flight connections before returning.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use skiff_api::config::WorkloadRef;

use crate::admin::{self, Surface};
use crate::control::ControlStatus;
use crate::detect::SERVER_FIRST_PORTS;
use crate::drain::{Drain, DrainSignal};
use crate::http::client::{ClientSettings, Upstreams};
use crate::http::server::HttpLimits;
use crate::listener;
use crate::metrics::Metrics;
use crate::policy::{ConfigLimits, Snapshot, SnapshotHandle};
use crate::resilience::bulkhead::Limit;
use crate::resilience::destination::Destinations;
use crate::tls::Identity;

/// Behaviour of the data path.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Which workload this proxy serves; names it to the control plane and in `config_dump`.
    pub workload: WorkloadRef,
    /// The pod's own addresses: inbound traffic is forwarded here (one per IP family).
    pub pod_ips: Vec<IpAddr>,
    /// How long to wait for a client's first bytes before treating it as opaque TCP.
    pub detect_timeout: Duration,
    /// How long a peer sidecar has to complete the mTLS handshake on the inbound port.
    pub tls_handshake_timeout: Duration,
    /// Ports that are opaque TCP without detection (server speaks first).
    pub server_first_ports: Vec<u16>,
    /// An opaque TCP connection with no bytes moving for this long is closed.
    pub tcp_idle_timeout: Duration,
    pub http: HttpLimits,
    pub client: ClientSettings,
    /// What configurations this proxy accepts (larger ones are refused).
    pub config_limits: ConfigLimits,
    /// Requests in flight (both directions) beyond which new ones are shed with 503
    /// `overloaded` instead of queued.
    pub max_requests_in_flight: u32,
    /// After SIGTERM, the longest time in-flight connections get before the process exits.
    pub drain_period: Duration,
    /// Configuration is streamed from the control plane (`--control-plane`): the proxy is
    /// ready only once a first one is applied. Otherwise it comes from local files.
    pub from_control_plane: bool,
}

impl Settings {
    pub fn new(workload: WorkloadRef, pod_ips: Vec<IpAddr>) -> Self {
        Settings {
            workload,
            pod_ips,
            detect_timeout: Duration::from_secs(1),
            tls_handshake_timeout: Duration::from_secs(5),
            server_first_ports: SERVER_FIRST_PORTS.to_vec(),
            tcp_idle_timeout: Duration::from_secs(3600),
            http: HttpLimits::default(),
            client: ClientSettings::default(),
            config_limits: ConfigLimits::default(),
            max_requests_in_flight: 10_000,
            drain_period: Duration::from_secs(5),
            from_control_plane: false,
        }
    }
}

/// Where the proxy listens (DESIGN.md §2). IPv6 addresses are optional: a pod without IPv6
/// only logs that they could not be bound.
#[derive(Clone, Debug)]
pub struct Addresses {
    pub outbound: SocketAddr,
    pub outbound_v6: Option<SocketAddr>,
    pub inbound: SocketAddr,
    pub inbound_v6: Option<SocketAddr>,
    /// Bound to loopback only: it can start a drain and shows the configuration.
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub health: SocketAddr,
}

impl Default for Addresses {
    fn default() -> Self {
        Addresses {
            outbound: "127.0.0.1:15001".parse().unwrap(),
            outbound_v6: Some("[::1]:15001".parse().unwrap()),
            inbound: "0.0.0.0:15006".parse().unwrap(),
            inbound_v6: Some("[::]:15006".parse().unwrap()),
            admin: "127.0.0.1:15000".parse().unwrap(),
            metrics: "0.0.0.0:15020".parse().unwrap(),
            health: "0.0.0.0:15021".parse().unwrap(),
        }
    }
}

/// Everything a connection handler needs, shared by all of them.
pub struct Proxy {
    pub settings: Settings,
    /// Shared with every HTTP connection, which routes each request with the snapshot current
    /// at that moment.
    pub snapshot: Arc<SnapshotHandle>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<Metrics>,
    pub drain: DrainSignal,
    /// The configuration stream's state: readiness and its metrics.
    pub control: Arc<ControlStatus>,
    /// This workload's certificate, renewed in place; `None` in local mode without a control
    /// plane, where sidecars speak plaintext to each other.
    pub identity: Option<Arc<Identity>>,
    /// Resilience state of every destination, carried from snapshot to snapshot.
    pub destinations: Arc<Destinations>,
    /// Requests in flight through this proxy, capped (load shedding).
    pub in_flight: Arc<Limit>,
}

impl Proxy {
    /// Puts a new configuration in force and lets go of pooled connections to endpoints it
    /// no longer has, so that long-lived HTTP/2 connections drain and traffic rebalances.
    pub fn apply(&self, snapshot: Snapshot) {
        let endpoints: std::collections::HashSet<SocketAddr> = snapshot
            .outbound
            .values()
            .flat_map(|target| {
                let routed = target.routes.iter().flat_map(|r| r.backends());
                std::iter::once(&target.endpoints)
                    .chain(routed)
                    .flat_map(|set| set.endpoints.iter().map(|e| e.addr))
            })
            .collect();
        self.snapshot.replace(snapshot);
        let pod_ips = &self.settings.pod_ips;
        self.upstreams
            .retain(|addr| endpoints.contains(&addr) || pod_ips.contains(&addr.ip()));
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// A proxy whose ports are bound, ready to run.
pub struct App {
    proxy: Arc<Proxy>,
    drain: Drain,
    listeners: Vec<(Surface, tokio::net::TcpListener)>,
}

impl App {
    /// Binds every port. Nothing is served until [`App::run`].
    /// `destinations` must be the registry `snapshot` was built with.
    pub fn bind(
        settings: Settings,
        addresses: &Addresses,
        snapshot: Snapshot,
        destinations: Arc<Destinations>,
        identity: Option<Arc<Identity>>,
    ) -> Result<App, BindError> {
        let drain = Drain::new();
        let metrics = Arc::new(Metrics::default());
        let upstreams = Upstreams::new(settings.client.clone(), identity.clone(), metrics.clone());
        let control = Arc::new(ControlStatus::new(settings.from_control_plane));
        let in_flight = Limit::new(settings.max_requests_in_flight);
        let proxy = Arc::new(Proxy {
            settings,
            snapshot: Arc::new(SnapshotHandle::new(snapshot)),
            upstreams,
            metrics,
            drain: drain.signal(),
            control,
            identity,
            destinations,
            in_flight,
        });
        let mut listeners = Vec::new();
        let required = [
            (Surface::Outbound, addresses.outbound),
            (Surface::Inbound, addresses.inbound),
            (Surface::Admin, addresses.admin),
            (Surface::Metrics, addresses.metrics),
            (Surface::Health, addresses.health),
        ];
        for (surface, addr) in required {
            let listener = listener::bind(addr).map_err(|source| BindError { addr, source })?;
            listeners.push((surface, listener));
        }
        let optional = [
            (Surface::Outbound, addresses.outbound_v6),
            (Surface::Inbound, addresses.inbound_v6),
        ];
        for (surface, addr) in optional {
            let Some(addr) = addr else { continue };
            match listener::bind(addr) {
                Ok(listener) => listeners.push((surface, listener)),
                Err(error) => {
                    tracing::warn!(%addr, %error, "ipv6 listener not bound; ipv6 traffic will not be proxied")
                }
            }
        }
        Ok(App {
            proxy,
            drain,
            listeners,
        })
    }

    /// Starts the drain: used by the signal handler.
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }

    /// The proxy's shared state: used by the policy reloader.
    pub fn proxy(&self) -> Arc<Proxy> {
        self.proxy.clone()
    }

    /// Serves until a drain starts (SIGTERM or admin `/drain`), then until every connection
    /// in flight has finished or the drain period has passed.
    pub async fn run(self) {
        let App {
            proxy,
            drain,
            listeners,
        } = self;
        for (surface, listener) in listeners {
            let local = listener.local_addr().ok();
            tracing::info!(?surface, addr = ?local, "listening");
            match surface {
                Surface::Outbound => {
                    let proxy = proxy.clone();
                    tokio::spawn(listener::accept_loop(
                        listener,
                        "outbound",
                        move |stream, _peer| crate::outbound::handle(proxy.clone(), stream),
                    ));
                }
                Surface::Inbound => {
                    let proxy = proxy.clone();
                    tokio::spawn(listener::accept_loop(
                        listener,
                        "inbound",
                        move |stream, peer| crate::inbound::handle(proxy.clone(), stream, peer),
                    ));
                }
                Surface::Admin | Surface::Metrics | Surface::Health => {
                    let state = Arc::new(admin::AdminState {
                        proxy: proxy.clone(),
                        drain: drain.clone(),
                    });
                    tokio::spawn(listener::accept_loop(
                        listener,
                        "admin",
                        move |stream, _peer| {
                            admin::serve_connection(stream, surface, state.clone())
                        },
                    ));
                }
            }
        }
        let mut started = drain.signal();
        started.started().await;
        let period = proxy.settings.drain_period;
        tracing::info!(active = drain.active_connections(), ?period, "draining");
        tokio::select! {
            () = drain.all_connections_closed() => tracing::info!("drained: no connection in flight"),
            () = tokio::time::sleep(period) => {
                tracing::warn!(active = drain.active_connections(), "drain period over; closing remaining connections")
            }
        }
    }
}
