//! What the control plane sends a proxy: the configuration one workload needs, already
//! validated and flattened so the proxy only has to look things up. The proxy in standalone
//! mode computes the same value from local files, so both paths share one shape.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::traffic::{RateLimit, RoutePolicy, TrafficConfig};

/// The configuration one proxy runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Opaque, unique per content; ACKs and NACKs name it.
    pub version: String,
    /// The workload this configuration was computed for.
    pub workload: WorkloadRef,
    /// Every service the workload may call, with its routes and endpoints.
    pub services: Vec<ServiceConfig>,
    /// Ports of this workload that some Service targets: names inbound traffic and carries its
    /// declared protocol.
    pub inbound: Vec<InboundPort>,
    /// Who may call this workload, and whether plaintext is accepted (its InboundPolicies).
    #[serde(default)]
    pub inbound_security: InboundSecurity,
    /// Requests per second this workload accepts, over all its ports (the strictest of its
    /// InboundPolicies' `rateLimit`); more are answered 429. `None`: no limit.
    #[serde(default)]
    pub inbound_rate_limit: Option<RateLimit>,
}

/// `namespace/name` of a workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One Service as a caller sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceConfig {
    /// `namespace/name`.
    pub name: String,
    /// Cluster IPs (one per family); empty for headless services.
    pub vips: Vec<IpAddr>,
    pub ports: Vec<PortConfig>,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortConfig {
    /// The port the app dials on the VIP.
    pub port: u16,
    /// Declared by `appProtocol`; `None` means detect.
    pub protocol: Option<AppProtocol>,
    /// Ready endpoints of this port (pod address and target port).
    pub endpoints: Vec<Endpoint>,
    /// HTTP routing rules attached to this Service (and port), in precedence order: the
    /// first whose match accepts a request routes it. Empty: every request goes to
    /// `endpoints`.
    pub routes: Vec<Route>,
    /// How callers treat this port: timeouts, retries, outlier detection, breaker, limits,
    /// balancer (its TrafficPolicy, or the defaults).
    #[serde(default)]
    pub traffic: TrafficConfig,
}

/// How the proxy treats a port's bytes when the Service declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    Http1,
    Http2,
    Tcp,
}

impl AppProtocol {
    /// The values of a Service port's `appProtocol` Skiff understands (case-insensitive), for
    /// messages about any other.
    pub const KNOWN: &'static str = "http, http1, kubernetes.io/ws (HTTP/1); http2, h2c, \
        kubernetes.io/h2c, grpc, grpc-web (HTTP/2); tcp, tls, https, kubernetes.io/wss, mongo, \
        mysql, redis, postgres, postgresql (opaque TCP)";

    /// Reads a Service port's `appProtocol`; `None` for a value Skiff does not know (a
    /// validation error). The same table as the proxy's protocol detection.
    pub fn from_declared(value: &str) -> Option<AppProtocol> {
        match value.to_ascii_lowercase().as_str() {
            "http" | "http1" | "kubernetes.io/ws" => Some(AppProtocol::Http1),
            "http2" | "h2c" | "kubernetes.io/h2c" | "grpc" | "grpc-web" => Some(AppProtocol::Http2),
            "tcp" | "tls" | "https" | "kubernetes.io/wss" | "mongo" | "mysql" | "redis"
            | "postgres" | "postgresql" => Some(AppProtocol::Tcp),
            _ => None,
        }
    }
}

/// A backend address and who is expected to answer there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The workload behind the address, when known (its identity is checked with mTLS).
    pub workload: Option<WorkloadRef>,
    /// The SPIFFE ID the workload's sidecar proves with its certificate: the caller's sidecar
    /// speaks mTLS to this endpoint and refuses a peer with any other identity. `None`: not a
    /// mesh workload, spoken to in plaintext.
    #[serde(default)]
    pub identity: Option<String>,
}

/// A port of this workload that a Service targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundPort {
    pub port: u16,
    /// `namespace/name` of the Service.
    pub service: String,
    pub protocol: Option<AppProtocol>,
}

/// The InboundPolicies that apply to this workload, merged: the mTLS mode of every port and
/// the authorization rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundSecurity {
    /// Mode of every port not in `port_modes`. Default PERMISSIVE.
    pub mode: MtlsMode,
    /// Per-port exceptions to `mode`.
    pub port_modes: Vec<PortMode>,
    /// Authorization rules, from every policy that applies. A request (or TCP connection) is
    /// denied if a DENY rule matches it; otherwise, if there is any ALLOW rule, it is allowed
    /// only when one matches; with no ALLOW rule it is allowed.
    pub rules: Vec<AuthorizationRule>,
}

pub use crate::skiff_kinds::MtlsMode;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMode {
    pub port: u16,
    pub mode: MtlsMode,
}

/// One authorization rule. Every non-empty list is a condition (any of its values matches);
/// all conditions must hold. A rule with no condition matches everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRule {
    /// `namespace/name` of the InboundPolicy and the rule's index: the reason a request is
    /// denied, in the response header and the metric label.
    pub policy: String,
    pub rule: usize,
    pub action: AuthorizationAction,
    /// Source SPIFFE IDs, exact. A plaintext client has none and matches no such rule.
    pub identities: Vec<String>,
    /// Source namespaces (from the client's SPIFFE ID).
    pub namespaces: Vec<String>,
    /// Destination ports of this workload.
    pub ports: Vec<u16>,
    /// HTTP methods, upper case (compared case-insensitively). HTTP only: an ALLOW rule with
    /// methods or paths never matches a TCP connection; a DENY rule with them matches one
    /// when its other conditions hold (fail closed).
    pub methods: Vec<String>,
    /// Normalised request paths. HTTP only, like `methods`.
    pub paths: Vec<AuthorizationPath>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthorizationAction {
    Allow,
    Deny,
}

/// A path condition, compared with the normalised path (percent-decoded where unreserved, dot
/// segments resolved, repeated slashes merged).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum AuthorizationPath {
    Exact(String),
    /// Whole segments, as HTTPRoute `PathPrefix`: `/admin` matches `/admin` and `/admin/x`,
    /// not `/administrator`. Validation drops a trailing `/` (except for the prefix `/`, which
    /// matches every path).
    Prefix(String),
}

/// One HTTPRoute rule, flattened: where it came from, when it applies, what it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// `namespace/name` of the HTTPRoute and the rule's index, for metrics and logs.
    pub route: String,
    pub rule: usize,
    /// The rule applies when any of these matches (Gateway API: matches are ORed).
    pub matches: Vec<RouteMatch>,
    pub request_headers: HeaderModifier,
    pub response_headers: HeaderModifier,
    /// Weighted backends; a request picks one in proportion to its weight. All weights zero
    /// (or no backends) means the rule answers 500, as the Gateway API requires.
    pub backends: Vec<Backend>,
    /// Whole-request timeout (Gateway API `timeouts.request`).
    #[serde(default, with = "crate::traffic::optional_millis")]
    pub timeout: Option<Duration>,
    /// Per-try timeout (Gateway API `timeouts.backendRequest`).
    #[serde(default, with = "crate::traffic::optional_millis")]
    pub backend_timeout: Option<Duration>,
    /// Retries, rate limit, hedging and faults of this rule; unset fields take the
    /// service's [`TrafficConfig::route_defaults`].
    #[serde(default)]
    pub policy: RoutePolicy,
}

/// Conditions that must all hold (Gateway API: fields of one match are ANDed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub headers: Vec<ValueMatch>,
    pub query_params: Vec<ValueMatch>,
    /// Upper-case method name.
    pub method: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum PathMatch {
    Exact(String),
    /// Matches whole path segments: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    PathPrefix(String),
    /// Anchored at both ends; RE2-like syntax (the `regex` crate).
    RegularExpression(String),
}

/// A header or query-parameter condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueMatch {
    /// Header names are compared case-insensitively (lower-cased here); query parameter names
    /// exactly.
    pub name: String,
    pub value: StringMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum StringMatch {
    Exact(String),
    RegularExpression(String),
}

/// Gateway API `RequestHeaderModifier` / `ResponseHeaderModifier`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderModifier {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A weighted route target: a port of a Service in this configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// `namespace/name` of a Service in [`ProxyConfig::services`].
    pub service: String,
    pub port: u16,
    pub weight: u32,
}
