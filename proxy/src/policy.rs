//! The configuration snapshot every connection decides from: which VIP:port is which service,
//! its endpoints, declared protocol and routes. Built from a [`ProxyConfig`] (streamed by the
//! control plane, or computed from local files in standalone mode); immutable once built.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use skiff_api::config::{AppProtocol, ProxyConfig, RoutePolicy, WorkloadRef};
use skiff_api::identity::{SpiffeError, SpiffeId};
use tokio::time::Instant;

use crate::authz::InboundAuthz;
use crate::detect::Protocol;
use crate::resilience::balancer::{EndpointHealth, Pick};
use crate::resilience::destination::{DestinationState, Destinations};
use crate::resilience::rate_limit::TokenBucket;
use crate::route::{CompileError, Route};

/// One endpoint: where to connect, and who must answer there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Destination {
    pub addr: SocketAddr,
    /// The SPIFFE ID the endpoint's sidecar must prove: the connection is mTLS and a peer
    /// with another identity is refused. `None`: not in the mesh, plaintext.
    #[serde(serialize_with = "display_identity")]
    pub identity: Option<Arc<SpiffeId>>,
}

fn display_identity<S: serde::Serializer>(
    identity: &Option<Arc<SpiffeId>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match identity {
        Some(id) => serializer.collect_str(id),
        None => serializer.serialize_none(),
    }
}

impl Destination {
    pub fn plaintext(addr: SocketAddr) -> Destination {
        Destination {
            addr,
            identity: None,
        }
    }
}

/// The ready endpoints of one port of one service (in one address family), with their
/// health, and the destination's resilience state.
pub struct EndpointSet {
    /// `namespace/name` of the service; the metric label and the name in logs.
    pub service: Arc<str>,
    pub endpoints: Vec<Destination>,
    /// The health of `endpoints[i]`, kept across snapshots.
    pub health: Vec<Arc<EndpointHealth>>,
    /// Budget, breaker, bulkheads and the balancer of this service port.
    pub state: Arc<DestinationState>,
}

impl std::fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSet")
            .field("service", &self.service)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EndpointSet {
    pub fn new(
        service: Arc<str>,
        endpoints: Vec<Destination>,
        state: Arc<DestinationState>,
    ) -> Self {
        let health = state.health(endpoints.iter().map(|e| e.addr));
        EndpointSet {
            service,
            endpoints,
            health,
            state,
        }
    }

    /// Picks an endpoint with the destination's balancer, skipping ejected ones and, when it
    /// can, those in `avoid`; `None` when none is ready. The [`Pick`] is in flight until it
    /// is finished with the attempt's outcome.
    pub fn pick(
        &self,
        avoid: &[SocketAddr],
        now: Instant,
        rng: &mut fastrand::Rng,
    ) -> Option<(Destination, Pick)> {
        let pick = self.state.endpoints.pick(&self.health, avoid, now, rng)?;
        Some((self.endpoints[pick.index].clone(), pick))
    }

    /// Every endpoint is a sidecar (spoken to with mTLS when this proxy has an identity).
    pub fn all_in_mesh(&self) -> bool {
        !self.endpoints.is_empty() && self.endpoints.iter().all(|e| e.identity.is_some())
    }
}

/// One port of one Service, as the outbound side sees it.
#[derive(Debug)]
pub struct ServiceTarget {
    /// `namespace/name`.
    pub name: Arc<str>,
    /// From the port's `appProtocol`; `None` means detect from the first bytes.
    pub protocol: Option<Protocol>,
    /// Where requests go when the service has no routes (and opaque TCP always).
    pub endpoints: Arc<EndpointSet>,
    /// HTTPRoute rules in precedence order; when non-empty, a request no rule accepts is
    /// answered 404.
    pub routes: Vec<Route>,
    /// Retries, rate limit, hedging and faults of requests no route decides (the service's
    /// TrafficPolicy), and the defaults of its routes.
    pub policy: RoutePolicy,
    /// The service's token bucket when its TrafficPolicy sets `rateLimit`.
    pub rate_limit: Option<Arc<TokenBucket>>,
}

/// A port of this workload that a Service targets.
#[derive(Debug, Clone)]
pub struct InboundTarget {
    pub service: Arc<str>,
    pub protocol: Option<Protocol>,
}

/// Everything a proxy knows about the mesh at one point in time.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Where the snapshot came from, for `/config_dump` and logs.
    pub source: String,
    /// Service ports by VIP:port (every cluster IP of the service).
    pub outbound: BTreeMap<SocketAddr, Arc<ServiceTarget>>,
    /// Ports of this pod that Services target, by port.
    pub inbound: BTreeMap<u16, InboundTarget>,
    /// Who may call this workload: mTLS mode per port and authorization rules.
    pub authz: InboundAuthz,
    /// The workload's inbound token bucket (InboundPolicy `rateLimit`), over all its ports.
    pub inbound_rate_limit: Option<Arc<TokenBucket>>,
    /// The configuration this snapshot was built from, shown by `/config_dump`.
    pub config: ProxyConfig,
}

/// Bounds on what a proxy accepts from its configuration source: a sidecar's memory is
/// shared with the app, so a configuration that would need more is refused (NACKed).
#[derive(Clone, Copy, Debug)]
pub struct ConfigLimits {
    /// HTTP routes across all services (every match of every HTTPRoute rule counts once).
    pub max_routes: usize,
}

impl Default for ConfigLimits {
    fn default() -> Self {
        ConfigLimits { max_routes: 10_000 }
    }
}

/// Why a configuration cannot be applied; the snapshot in force stays.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the configuration has {routes} HTTP routes; this proxy accepts at most {max} (--max-routes)")]
    TooManyRoutes { routes: usize, max: usize },
    #[error(transparent)]
    Route(#[from] CompileError),
    #[error("service {service}: endpoint {addr} has identity {identity:?}")]
    Identity {
        service: String,
        addr: SocketAddr,
        identity: String,
        #[source]
        source: SpiffeError,
    },
    #[error("service {service}: {vip}:{port} is also the address of service {other}")]
    DuplicateAddress {
        service: String,
        vip: IpAddr,
        port: u16,
        other: String,
    },
}

impl Snapshot {
    /// The service a connection to `original_dst` is for.
    pub fn service_at(&self, original_dst: SocketAddr) -> Option<&Arc<ServiceTarget>> {
        self.outbound.get(&original_dst)
    }

    /// Compiles a configuration into a snapshot (routes compiled, backends resolved).
    /// Resilience state comes from `destinations`, so it carries over from the previous
    /// snapshot.
    pub fn from_config(
        source: String,
        config: ProxyConfig,
        limits: &ConfigLimits,
        destinations: &Destinations,
    ) -> Result<Snapshot, SnapshotError> {
        let now = Instant::now();
        let routes: usize = config
            .services
            .iter()
            .flat_map(|s| &s.ports)
            .map(|p| p.routes.len())
            .sum();
        if routes > limits.max_routes {
            return Err(SnapshotError::TooManyRoutes {
                routes,
                max: limits.max_routes,
            });
        }
        // A VIP balances over endpoints of its own address family only, as kube-proxy does:
        // a dual-stack service gets one target per family, and its routes resolve backends
        // in that family too.
        let mut sets: BTreeMap<(&str, u16, Family), Arc<EndpointSet>> = BTreeMap::new();
        for service in &config.services {
            let name: Arc<str> = Arc::from(service.name.as_str());
            for port in &service.ports {
                let state = destinations.destination(&service.name, port.port, &port.traffic, now);
                let mut destinations = Vec::with_capacity(port.endpoints.len());
                for endpoint in &port.endpoints {
                    let identity = match &endpoint.identity {
                        None => None,
                        Some(text) => Some(Arc::new(SpiffeId::parse(text).map_err(|source| {
                            SnapshotError::Identity {
                                service: service.name.clone(),
                                addr: endpoint.addr,
                                identity: text.clone(),
                                source,
                            }
                        })?)),
                    };
                    destinations.push(Destination {
                        addr: endpoint.addr,
                        identity,
                    });
                }
                for family in [Family::V4, Family::V6] {
                    let endpoints = destinations
                        .iter()
                        .filter(|d| Family::of(d.addr.ip()) == family)
                        .cloned()
                        .collect();
                    sets.insert(
                        (&service.name, port.port, family),
                        Arc::new(EndpointSet::new(name.clone(), endpoints, state.clone())),
                    );
                }
            }
        }
        let mut outbound = BTreeMap::new();
        for service in &config.services {
            for port in &service.ports {
                let mut targets: BTreeMap<Family, Arc<ServiceTarget>> = BTreeMap::new();
                for vip in &service.vips {
                    let family = Family::of(*vip);
                    let target = match targets.get(&family) {
                        Some(target) => target.clone(),
                        None => {
                            let defaults = &port.traffic.route_defaults;
                            let routes = port
                                .routes
                                .iter()
                                .map(|route| {
                                    Route::compile(
                                        route,
                                        defaults,
                                        |name, port| sets.get(&(name, port, family)).cloned(),
                                        |key, limit| destinations.bucket(key, limit, now),
                                    )
                                })
                                .collect::<Result<Vec<_>, _>>()?;
                            let rate_limit = defaults.rate_limit.map(|limit| {
                                let key = format!("{}:{}", service.name, port.port);
                                destinations.bucket(&key, &limit, now)
                            });
                            let endpoints =
                                sets[&(service.name.as_str(), port.port, family)].clone();
                            let target = Arc::new(ServiceTarget {
                                name: endpoints.service.clone(),
                                protocol: port.protocol.map(protocol),
                                endpoints,
                                routes,
                                policy: defaults.clone(),
                                rate_limit,
                            });
                            targets.insert(family, target.clone());
                            target
                        }
                    };
                    let addr = SocketAddr::new(*vip, port.port);
                    if let Some(other) = outbound.insert(addr, target) {
                        return Err(SnapshotError::DuplicateAddress {
                            service: service.name.clone(),
                            vip: *vip,
                            port: port.port,
                            other: other.name.to_string(),
                        });
                    }
                }
            }
        }
        let inbound = config
            .inbound
            .iter()
            .map(|p| {
                (
                    p.port,
                    InboundTarget {
                        service: Arc::from(p.service.as_str()),
                        protocol: p.protocol.map(protocol),
                    },
                )
            })
            .collect();
        let inbound_rate_limit = config
            .inbound_rate_limit
            .map(|limit| destinations.bucket("inbound", &limit, now));
        Ok(Snapshot {
            source,
            outbound,
            inbound,
            authz: InboundAuthz::new(&config.inbound_security),
            inbound_rate_limit,
            config,
        })
    }
}

/// An IP address family; VIPs and endpoints are matched within one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

fn protocol(declared: AppProtocol) -> Protocol {
    match declared {
        AppProtocol::Http1 => Protocol::Http1,
        AppProtocol::Http2 => Protocol::Http2,
        AppProtocol::Tcp => Protocol::Tcp,
    }
}

/// The snapshot in force, swapped whole when policy changes. Readers clone the `Arc` and
/// never hold the lock across an `.await`. HTTP requests look the snapshot up per request;
/// opaque TCP connections keep the one they started with.
#[derive(Default)]
pub struct SnapshotHandle {
    current: RwLock<Arc<Snapshot>>,
}

impl SnapshotHandle {
    pub fn new(snapshot: Snapshot) -> Self {
        SnapshotHandle {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn replace(&self, snapshot: Snapshot) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(snapshot);
    }
}

/// Why local policy files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid policy:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Reads every `.yaml`/`.yml` file under the given files or directories (sorted, not
/// recursive) and builds the snapshot for `workload` with `pod_ips`. Every problem is reported.
pub fn load(
    paths: &[PathBuf],
    workload: &WorkloadRef,
    pod_ips: &[IpAddr],
    limits: &ConfigLimits,
    destinations: &Destinations,
) -> Result<Snapshot, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        let read_error = |source| LoadError::Read {
            path: path.clone(),
            source,
        };
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(read_error)?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    let mut texts = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|source| LoadError::Read {
            path: file.clone(),
            source,
        })?;
        texts.push((file.display().to_string(), text));
    }
    let config = config_from_files(&texts, workload, pod_ips)?;
    let source = format!(
        "files: {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Snapshot::from_config(source, config, limits, destinations)?)
}

/// Standalone mode: validates `(file name, text)` pairs and computes the configuration the
/// control plane would send `workload`, with the same code the control plane uses.
pub fn config_from_files(
    files: &[(String, String)],
    workload: &WorkloadRef,
    pod_ips: &[IpAddr],
) -> Result<ProxyConfig, LoadError> {
    let loaded = skiff_api::load(files).map_err(|problems| {
        LoadError::Invalid(problems.iter().map(ToString::to_string).collect())
    })?;
    for warning in &loaded.warnings {
        tracing::warn!("policy: {warning}");
    }
    let mut config = skiff_api::proxy_config(
        &loaded.policy,
        workload,
        pod_ips,
        skiff_api::identity::DEFAULT_TRUST_DOMAIN,
    );
    config.version = "local".into();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::config::{
        Backend, Endpoint, HeaderModifier, InboundPort, PortConfig, Route as RouteConfig,
        ServiceConfig,
    };

    fn service(name: &str, vip: &str, endpoint: &str, routes: Vec<RouteConfig>) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            vips: vec![vip.parse().unwrap()],
            ports: vec![PortConfig {
                port: 80,
                protocol: Some(AppProtocol::Http1),
                endpoints: vec![Endpoint {
                    addr: endpoint.parse().unwrap(),
                    workload: None,
                    identity: None,
                }],
                routes,
                traffic: Default::default(),
            }],
        }
    }

    fn split(backends: &[(&str, u32)]) -> RouteConfig {
        RouteConfig {
            route: "default/split".into(),
            rule: 0,
            matches: vec![],
            request_headers: HeaderModifier::default(),
            response_headers: HeaderModifier::default(),
            backends: backends
                .iter()
                .map(|(s, w)| Backend {
                    service: (*s).into(),
                    port: 80,
                    weight: *w,
                })
                .collect(),
            timeout: None,
            backend_timeout: None,
            policy: Default::default(),
        }
    }

    #[test]
    fn routes_resolve_their_backends_to_other_services_endpoints() {
        let config = ProxyConfig {
            services: vec![
                service(
                    "default/web",
                    "10.96.0.1",
                    "10.0.0.1:8080",
                    vec![split(&[("default/web-v2", 1)])],
                ),
                service("default/web-v2", "10.96.0.2", "10.0.0.2:8080", vec![]),
            ],
            inbound: vec![InboundPort {
                port: 8080,
                service: "default/web".into(),
                protocol: None,
            }],
            ..ProxyConfig::default()
        };
        let snapshot = Snapshot::from_config(
            "test".into(),
            config,
            &ConfigLimits::default(),
            &Destinations::default(),
        )
        .unwrap();
        let web = snapshot
            .service_at("10.96.0.1:80".parse().unwrap())
            .unwrap();
        assert_eq!(web.protocol, Some(Protocol::Http1));
        let backend = web.routes[0].pick_backend().unwrap();
        assert_eq!(&*backend.service, "default/web-v2");
        let mut rng = fastrand::Rng::with_seed(1);
        let (picked, _) = backend.pick(&[], Instant::now(), &mut rng).unwrap();
        assert_eq!(
            picked,
            Destination::plaintext("10.0.0.2:8080".parse().unwrap())
        );
        assert_eq!(&*snapshot.inbound[&8080].service, "default/web");
    }

    #[test]
    fn unknown_backends_and_shared_addresses_are_refused() {
        let dangling = ProxyConfig {
            services: vec![service(
                "default/web",
                "10.96.0.1",
                "10.0.0.1:8080",
                vec![split(&[("default/gone", 1)])],
            )],
            ..ProxyConfig::default()
        };
        let error = Snapshot::from_config(
            "test".into(),
            dangling,
            &ConfigLimits::default(),
            &Destinations::default(),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("default/gone:80 is not in the configuration"),
            "{error}"
        );

        let shared = ProxyConfig {
            services: vec![
                service("default/a", "10.96.0.1", "10.0.0.1:8080", vec![]),
                service("default/b", "10.96.0.1", "10.0.0.2:8080", vec![]),
            ],
            ..ProxyConfig::default()
        };
        let error = Snapshot::from_config(
            "test".into(),
            shared,
            &ConfigLimits::default(),
            &Destinations::default(),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("also the address of service default/a"),
            "{error}"
        );
    }
}
