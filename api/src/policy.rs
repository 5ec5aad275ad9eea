//! The validated model: what a set of policy files means once every reference is resolved and
//! every value parsed. Built only by [`crate::load`], so holding a [`Policy`] means holding a
//! policy without errors. The per-proxy view ([`crate::proxy_config`]) is computed from it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{AppProtocol, Backend, HeaderModifier, RouteMatch};
pub use crate::config::{AuthorizationAction, AuthorizationPath, PortMode};
use crate::identity::SpiffeId;
pub use crate::skiff_kinds::MtlsMode;
pub use crate::timestamp::Timestamp;
use crate::traffic::{
    CircuitBreaker, ConnectionLimits, Fault, Hedge, LoadBalancer, OutlierDetection, RateLimit,
    RetryBudget, RetryPolicy, RoutePolicy, TrafficConfig, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
};

/// Everything the mesh knows, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Sorted by key.
    pub services: Vec<Service>,
    /// Sorted by key.
    pub routes: Vec<HttpRoute>,
    /// Sorted by key.
    pub workloads: Vec<Workload>,
    /// Sorted by key.
    pub traffic_policies: Vec<TrafficPolicy>,
    /// Sorted by key.
    pub inbound_policies: Vec<InboundPolicy>,
}

impl Policy {
    pub fn service(&self, key: &ObjectKey) -> Option<&Service> {
        self.services
            .binary_search_by(|s| s.key.cmp(key))
            .ok()
            .map(|at| &self.services[at])
    }

    pub fn workload(&self, key: &ObjectKey) -> Option<&Workload> {
        self.workloads
            .binary_search_by(|w| w.key.cmp(key))
            .ok()
            .map(|at| &self.workloads[at])
    }
}

/// `namespace/name` of an object; unique per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `metadata.namespace` (default `default`).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service with its endpoints resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Names the Service in routes, metrics and logs.
    pub key: ObjectKey,
    /// Cluster IPs (one per family), deduplicated; empty for a headless Service, whose clients
    /// dial pod IPs directly.
    pub vips: Vec<IpAddr>,
    /// In the order written; at most one per number and transport.
    pub ports: Vec<ServicePort>,
}

impl Service {
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

/// One port of a Service and the endpoints behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Ties the port to the EndpointSlice port of the same name; routes may name it
    /// (`sectionName`).
    pub name: Option<String>,
    /// The port clients dial on the VIP.
    pub port: u16,
    /// Only TCP ports are proxied; the others are kept so references to them are understood.
    pub transport: Transport,
    /// From `appProtocol`; `None` means the proxy detects the protocol.
    pub protocol: Option<AppProtocol>,
    /// Every endpoint of this port, ready or not, in slice order.
    pub endpoints: Vec<Endpoint>,
}

/// The transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
    Sctp,
}

/// One backend address of a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Pod IP and the resolved target port.
    pub addr: SocketAddr,
    /// Whether traffic may be sent there (`conditions.ready`, unset means ready).
    pub ready: bool,
    /// The Workload behind the address, when one claims it; its identity is checked with mTLS.
    pub workload: Option<ObjectKey>,
}

/// A Workload: a pod's identity in file mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Endpoints and InboundPolicies name the workload by it.
    pub key: ObjectKey,
    /// Names the workload's SPIFFE identity.
    pub service_account: String,
    /// Pod IPs; endpoints at these addresses belong to this workload.
    pub addresses: Vec<IpAddr>,
    /// What a proxy of this workload presents to get its first certificate in file mode.
    pub bootstrap_token: Option<String>,
    /// `metadata.labels`, keys and values checked: what InboundPolicy selectors match.
    pub labels: BTreeMap<String, String>,
}

/// An HTTPRoute attached to Services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    /// Names the route in the view (`Route::route`), and breaks precedence ties.
    pub key: ObjectKey,
    /// `metadata.creationTimestamp`: the older of two conflicting routes wins.
    pub created: Option<Timestamp>,
    /// The Service ports the route attaches to (parentRefs to Gateways and other kinds are
    /// dropped with a warning).
    pub parents: Vec<RouteParent>,
    /// In the route's order; unsupported parts already dropped with a warning.
    pub rules: Vec<RouteRule>,
}

impl HttpRoute {
    /// Whether the route attaches to `port` of `service`.
    pub fn attaches_to(&self, service: &ObjectKey, port: u16) -> bool {
        self.parents
            .iter()
            .any(|p| &p.service == service && p.port.is_none_or(|only| only == port))
    }
}

/// A Service (or one port of it) a route attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteParent {
    /// The Service whose traffic the route decides.
    pub service: ObjectKey,
    /// From `parentRef.port` or `sectionName`; `None` means every port.
    pub port: Option<u16>,
}

/// One rule of a route, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRule {
    /// Position in `spec.rules`: names the rule in metrics and breaks precedence ties.
    pub index: usize,
    /// `spec.rules[].name`, when set.
    pub name: Option<String>,
    /// ORed; never empty (a rule without matches matches `PathPrefix /`). Header names are
    /// lower-cased and headers and query parameters sorted by name, so equal conditions
    /// compare equal.
    pub matches: Vec<RouteMatch>,
    /// From the rule's `RequestHeaderModifier` filter.
    pub request_headers: HeaderModifier,
    /// From the rule's `ResponseHeaderModifier` filter.
    pub response_headers: HeaderModifier,
    /// `namespace/name` of Services present in the policy, with a port they have.
    pub backends: Vec<Backend>,
    /// `timeouts.request`; `None` when unset or `0s`.
    pub timeout: Option<Duration>,
    /// `timeouts.backendRequest`; `None` when unset or `0s`.
    pub backend_timeout: Option<Duration>,
    /// The experimental `retry` (GEP-1731): `codes` as statuses to retry on, `attempts`
    /// (default [`crate::traffic::DEFAULT_RETRY_ATTEMPTS`]), `backoff` as the back-off base.
    /// `None` when unset. A TrafficPolicy targeting the route replaces it.
    pub retry: Option<RetryPolicy>,
}

/// A TrafficPolicy, parsed and attached. The view layers the policies that apply to a Service
/// port or a route rule ([`crate::view`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficPolicy {
    /// Names the policy in messages.
    pub key: ObjectKey,
    /// What it applies to; one policy per target.
    pub target: TrafficTarget,
    /// What it sets.
    pub settings: TrafficSettings,
}

/// What a [`TrafficPolicy`] applies to (always in the policy's namespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TrafficTarget {
    /// A Service that exists: one port of it (from `port` or `sectionName`), or every port.
    Service {
        service: ObjectKey,
        port: Option<u16>,
    },
    /// An HTTPRoute that exists: one rule of it (`sectionName`, a rule name it has), or every
    /// rule.
    Route {
        route: ObjectKey,
        rule: Option<String>,
    },
}

/// What one TrafficPolicy sets: each field parsed, its sub-fields' defaults filled in, and
/// `None` where the policy does not write it (so a less specific policy, or the default,
/// decides). A policy targeting an HTTPRoute sets only `retry`, `rate_limit`, `hedge` and
/// `fault`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficSettings {
    pub connect_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub retry_budget: Option<RetryBudget>,
    pub outlier_detection: Option<OutlierDetection>,
    pub circuit_breaker: Option<CircuitBreaker>,
    /// `spec.connectionPool`.
    pub limits: Option<ConnectionLimits>,
    pub load_balancer: Option<LoadBalancer>,
    pub rate_limit: Option<RateLimit>,
    pub hedge: Option<Hedge>,
    pub fault: Option<Fault>,
}

impl TrafficSettings {
    /// Field by field: what `self` sets, else what `fallback` sets.
    pub fn or(&self, fallback: &TrafficSettings) -> TrafficSettings {
        TrafficSettings {
            connect_timeout: self.connect_timeout.or(fallback.connect_timeout),
            idle_timeout: self.idle_timeout.or(fallback.idle_timeout),
            request_timeout: self.request_timeout.or(fallback.request_timeout),
            retry: self.retry.clone().or_else(|| fallback.retry.clone()),
            retry_budget: self
                .retry_budget
                .clone()
                .or_else(|| fallback.retry_budget.clone()),
            outlier_detection: self
                .outlier_detection
                .clone()
                .or_else(|| fallback.outlier_detection.clone()),
            circuit_breaker: self
                .circuit_breaker
                .clone()
                .or_else(|| fallback.circuit_breaker.clone()),
            limits: self.limits.clone().or_else(|| fallback.limits.clone()),
            load_balancer: self.load_balancer.or(fallback.load_balancer),
            rate_limit: self.rate_limit.or(fallback.rate_limit),
            hedge: self.hedge.or(fallback.hedge),
            fault: self.fault.or(fallback.fault),
        }
    }

    /// The per-route part: what a route rule's policy (or a Service's route defaults) holds.
    pub fn route_policy(&self) -> RoutePolicy {
        RoutePolicy {
            retry: self.retry.clone(),
            rate_limit: self.rate_limit,
            hedge: self.hedge,
            fault: self.fault,
        }
    }

    /// How callers treat a Service port under these settings: every unset field at its
    /// default. `retry` is both the port's retry policy and its routes' default.
    pub fn traffic_config(&self) -> TrafficConfig {
        TrafficConfig {
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            request_timeout: self.request_timeout,
            retry: self.retry.clone().unwrap_or_default(),
            retry_budget: self.retry_budget.clone().unwrap_or_default(),
            outlier_detection: self.outlier_detection.clone().unwrap_or_default(),
            circuit_breaker: self.circuit_breaker.clone().unwrap_or_default(),
            limits: self.limits.clone().unwrap_or_default(),
            load_balancer: self.load_balancer.unwrap_or_default(),
            route_defaults: self.route_policy(),
        }
    }
}

/// An InboundPolicy, parsed and attached. The view merges every policy that applies to a
/// workload ([`crate::view::inbound_security`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundPolicy {
    /// Names the policy in messages, and in the reason a request is denied.
    pub key: ObjectKey,
    /// Which workloads of the policy's namespace it applies to, and so whether its modes win
    /// over the namespace-wide ones.
    pub target: InboundTarget,
    /// `spec.mtls.mode`; `None` when unset, so that a policy with a target inherits the
    /// namespace-wide mode (and PERMISSIVE when none sets one).
    pub mode: Option<MtlsMode>,
    /// `spec.mtls.ports`, sorted by port, one entry per port.
    pub port_modes: Vec<PortMode>,
    /// `spec.rules`, in the order written.
    pub rules: Vec<AuthorizationRule>,
    /// `spec.rateLimit`; the view keeps the strictest of the policies that apply.
    pub rate_limit: Option<RateLimit>,
}

/// Which workloads of its namespace an [`InboundPolicy`] applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundTarget {
    /// No `targetRef` and no selector, or an empty one: every workload of the namespace, even
    /// one not declared as a Workload. Such a policy is **namespace-wide**.
    Namespace,
    /// `spec.targetRef`: one Workload (which exists). Such a policy is **targeted**.
    Workload(ObjectKey),
    /// `spec.selector` with at least one requirement: the declared Workloads whose labels it
    /// matches. Such a policy is **targeted** for each of them.
    Selector(LabelSelector),
}

impl InboundTarget {
    /// Whether this is a targeted attachment of `workload` (by name, or by its labels), as
    /// opposed to a namespace-wide one or none. The namespace is the caller's to check.
    pub fn targets(&self, workload: &Workload) -> bool {
        match self {
            InboundTarget::Namespace => false,
            InboundTarget::Workload(key) => *key == workload.key,
            InboundTarget::Selector(selector) => selector.matches(&workload.labels),
        }
    }
}

/// A Kubernetes label selector, checked: every requirement must hold. `matchLabels` entries
/// come first (each as `key In [value]`, by key), then `matchExpressions` in the order written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Whether a workload with `labels` is selected; an empty selector selects every one.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// One requirement on one label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRequirement {
    /// A valid label key.
    pub key: String,
    pub operator: LabelOperator,
}

impl LabelRequirement {
    /// Kubernetes' semantics: `NotIn` and `DoesNotExist` hold for a workload without the label.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            LabelOperator::In(values) => value.is_some_and(|v| values.contains(v)),
            LabelOperator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// How a [`LabelRequirement`] compares its label; `In` and `NotIn` hold at least one valid
/// label value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelOperator {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// One authorization rule, every value checked so that the rule can match something. Each
/// non-empty list is a condition (any value matches); all conditions must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationRule {
    /// Position in `spec.rules`: names the rule in the reason a request is denied.
    pub index: usize,
    pub action: AuthorizationAction,
    /// Callers' SPIFFE IDs, parsed (so written in their one canonical form).
    pub identities: Vec<SpiffeId>,
    /// Callers' namespaces (DNS labels).
    pub namespaces: Vec<String>,
    /// Ports of the workload.
    pub ports: Vec<u16>,
    /// HTTP methods, upper-case letters.
    pub methods: Vec<String>,
    /// Normalised paths; a `Prefix` has no trailing `/` (unless it is `/`).
    pub paths: Vec<AuthorizationPath>,
}
