//! Skiff's own kinds, group `skiff.dev/v1alpha1`: what the Gateway API lacks. Every spec refuses
//! unknown fields, and every field has a documented default.
//!
//! - [`Workload`]: a pod's identity in file mode (in a cluster the Pod itself plays this part).
//! - [`TrafficPolicy`]: how callers treat a Service (timeouts, retries and their budget, outlier
//!   detection, circuit breaking, bulkheads, load balancing, rate limit, hedging, faults), or
//!   the requests of one HTTPRoute (retries, rate limit, hedging, faults).
//! - [`InboundPolicy`]: how a workload (one by name, those a label selector picks, or every
//!   workload of a namespace) treats incoming connections: the mTLS mode, per port if need be,
//!   and authorization rules.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::k8s::ObjectMeta;

/// `apiVersion` of every kind in this module.
pub const API_VERSION: &str = "skiff.dev/v1alpha1";
/// The API group of Skiff's kinds, as written in a `targetRef`.
pub const GROUP: &str = "skiff.dev";

/// `Workload`: the file-mode stand-in for a Pod. An EndpointSlice endpoint belongs to the
/// Workload whose `addresses` contain the endpoint's address, or whose name is the endpoint's
/// `targetRef.name` (kind `Pod`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// `skiff.dev/v1alpha1`.
    pub api_version: String,
    /// `Workload`.
    pub kind: String,
    /// Name and namespace; a `targetRef` names the object in the policy's namespace. Its
    /// `labels` are what an InboundPolicy's `selector` matches.
    pub metadata: ObjectMeta,
    pub spec: WorkloadSpec,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// The identity the workload's certificate carries
    /// (`spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>`). Default `default`.
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// The pod's IP addresses (one per family). Default: none (then endpoints find the
    /// workload through their `targetRef`).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The secret a proxy of this workload presents to get its first certificate in file mode
    /// (in a cluster, the pod's service-account token does). Default: none, and such a proxy
    /// cannot get a certificate.
    #[serde(default)]
    pub bootstrap_token: Option<String>,
}

fn default_service_account() -> String {
    "default".to_string()
}

/// `TrafficPolicy`: how callers treat a Service (or one port of it), or the requests an
/// HTTPRoute (or one rule of it) routes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// `skiff.dev/v1alpha1`.
    pub api_version: String,
    /// `TrafficPolicy`.
    pub kind: String,
    /// Name and namespace; a `targetRef` names the object in the policy's namespace.
    pub metadata: ObjectMeta,
    pub spec: TrafficPolicySpec,
}

/// What a [`TrafficPolicy`] says. Every field but `targetRef` is optional; an unset field
/// takes its value from a less specific policy, else its default (docs/policy.md,
/// "TrafficPolicy"). Numbers are kept wide (`i64`) so that validation, not the YAML reader,
/// says what range is allowed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicySpec {
    /// The Service (or one port of it), or the HTTPRoute (or one rule of it), in the policy's
    /// namespace, this policy applies to.
    pub target_ref: TrafficTargetRef,
    /// How long a caller waits for a TCP connection (and mTLS handshake) to an endpoint (a
    /// Gateway API duration, like `500ms`). Default `1s`. Service targets only.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// A connection with nothing moving for this long is closed. Default `1h`. Service
    /// targets only.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Whole call, retries included, when the route sets no `timeouts.request`. Default:
    /// none. Service targets only (a route sets its own in `timeouts.request`).
    #[serde(default)]
    pub request_timeout: Option<String>,
    /// Which failed requests are sent again. Default: only those the upstream cannot have
    /// seen.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// How many retries the destination may take on top of its requests. Default 20 % plus
    /// 10 per second over 10 s. Service targets only.
    #[serde(default)]
    pub retry_budget: Option<RetryBudgetSpec>,
    /// Per-endpoint ejection. Default: on, with Envoy's numbers. Service targets only.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    /// The destination's three-state breaker. Default: on. Service targets only.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Bulkheads: connections, pending requests, requests and retries in flight. Default 1024
    /// each (64 retries). Service targets only.
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSpec>,
    /// Default `PeakEWMA`. Service targets only.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSpec>,
    /// A token bucket in each caller's proxy for the requests to the target; an empty one
    /// answers 429. Default: none.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// Hedged requests. Default: none.
    #[serde(default)]
    pub hedge: Option<HedgeSpec>,
    /// Fault injection. Default: none.
    #[serde(default)]
    pub fault: Option<FaultSpec>,
}

/// What a [`TrafficPolicy`] applies to: a Service (the default kind), or an HTTPRoute.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficTargetRef {
    /// `""` (the core group) for a Service, `gateway.networking.k8s.io` for an HTTPRoute.
    /// Default `""`.
    #[serde(default)]
    pub group: String,
    /// `Service` or `HTTPRoute`. Default `Service`.
    #[serde(default = "service_kind")]
    pub kind: String,
    /// The Service or HTTPRoute, in the policy's namespace.
    pub name: String,
    /// One port of the Service (1–65535). Default: every port. Not for an HTTPRoute.
    #[serde(default)]
    pub port: Option<i64>,
    /// A Service: the name of one of its ports (like `port`). An HTTPRoute: the name of one
    /// of its rules. Default: the whole target.
    #[serde(default)]
    pub section_name: Option<String>,
}

/// `spec.retry`: when a failed request is sent again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Retries after the first attempt, 0–10. Default 2 when `on` is set, else 0 (then only
    /// requests the upstream cannot have seen are retried, at most twice).
    #[serde(default)]
    pub attempts: Option<i64>,
    /// Outcomes that are retried: `5xx`, `gateway-error`, `reset`, a status 400–599, or a
    /// gRPC status name (`unavailable`, `resource-exhausted`, …). Default: none.
    #[serde(default)]
    pub on: Vec<RetryCondition>,
    /// Bound on each attempt; longer than `0s`. Default: the route's
    /// `timeouts.backendRequest`, else none.
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    /// Back-off between attempts. Default `{base: 25ms, max: 250ms}`.
    #[serde(default)]
    pub backoff: Option<BackoffSpec>,
    /// Retry POST, PATCH and other non-idempotent methods too. Default false.
    #[serde(default)]
    pub non_idempotent: bool,
    /// Largest request body kept for replay, 0–16777216 bytes. Default 65536.
    #[serde(default)]
    pub body_limit_bytes: Option<i64>,
}

/// One entry of `spec.retry.on`, as written: a string, or a bare status code (`503`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryCondition(pub String);

impl<'de> Deserialize<'de> for RetryCondition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RetryCondition;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a retry condition: 5xx, gateway-error, reset, a status code or a gRPC \
                     status name",
                )
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(RetryCondition(value.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
                Ok(RetryCondition(value.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
                Ok(RetryCondition(value.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `spec.retry.backoff`: the wait before retry `n` is uniformly random in
/// `[0, min(max, base × 2ⁿ)]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackoffSpec {
    /// Default `25ms`.
    #[serde(default)]
    pub base: Option<String>,
    /// At least `base`. Default `250ms`, or `base` when that is longer.
    #[serde(default)]
    pub max: Option<String>,
}

/// `spec.retryBudget`: retries may add at most `percent` % of the requests plus
/// `minPerSecond` per second.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudgetSpec {
    /// 0–100. Default 20.
    #[serde(default)]
    pub percent: Option<i64>,
    /// 0–1000000. Default 10.
    #[serde(default)]
    pub min_per_second: Option<i64>,
    /// How long a request counts towards the budget, 1s–1h. Default `10s`.
    #[serde(default)]
    pub window: Option<String>,
}

/// `spec.outlierDetection`: Envoy's outlier detection, with its defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetectionSpec {
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Consecutive 5xx (and gateway failures) that eject, 0–1000; 0 disables. Default 5.
    #[serde(default)]
    pub consecutive_5xx: Option<i64>,
    /// Consecutive gateway failures that eject, 0–1000; 0 disables. Default 5.
    #[serde(default)]
    pub consecutive_gateway_failure: Option<i64>,
    /// Longer than `0s`. Default `10s`.
    #[serde(default)]
    pub interval: Option<String>,
    /// Longer than `0s`. Default `30s`.
    #[serde(default)]
    pub base_ejection_time: Option<String>,
    /// At least `baseEjectionTime`. Default `300s`, or `baseEjectionTime` when longer.
    #[serde(default)]
    pub max_ejection_time: Option<String>,
    /// 0–100. Default 10.
    #[serde(default)]
    pub max_ejection_percent: Option<i64>,
    /// Success-rate ejection. Default `{minimumHosts: 5, requestVolume: 100, stdevFactor: 1.9}`.
    #[serde(default)]
    pub success_rate: Option<SuccessRateSpec>,
}

/// `spec.outlierDetection.successRate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuccessRateSpec {
    /// Endpoints with `requestVolume` requests in an interval needed for the check, 1–1000.
    /// Default 5.
    #[serde(default)]
    pub minimum_hosts: Option<i64>,
    /// Requests in an interval for an endpoint to count, 1–1000000. Default 100.
    #[serde(default)]
    pub request_volume: Option<i64>,
    /// Ejected below mean − stdev × this; 0.001–100, at most 3 decimals. Default 1.9.
    #[serde(default)]
    pub stdev_factor: Option<Decimal>,
}

/// `spec.circuitBreaker`: closed → open at `failurePercent` % failures among the last `window`
/// calls → half-open after `openFor`, with `halfOpenCalls` trial calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerSpec {
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// 1–100. Default 50.
    #[serde(default)]
    pub failure_percent: Option<i64>,
    /// Calls in the sliding window, 1–10000. Default 100.
    #[serde(default)]
    pub window: Option<i64>,
    /// Calls before the rate counts, 1–`window`. Default 20 (or `window`, when smaller).
    #[serde(default)]
    pub minimum_calls: Option<i64>,
    /// Longer than `0s`. Default `5s`.
    #[serde(default)]
    pub open_for: Option<String>,
    /// 1–1000. Default 3.
    #[serde(default)]
    pub half_open_calls: Option<i64>,
}

/// `spec.connectionPool`: bulkheads per destination; beyond them a call is refused with 503.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSpec {
    /// 1–4294967295. Default 1024.
    #[serde(default)]
    pub max_connections: Option<i64>,
    /// 0–4294967295. Default 1024.
    #[serde(default)]
    pub max_pending_requests: Option<i64>,
    /// 1–4294967295. Default 1024.
    #[serde(default)]
    pub max_requests: Option<i64>,
    /// 0–4294967295. Default 64.
    #[serde(default)]
    pub max_retries: Option<i64>,
}

/// `spec.loadBalancer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum LoadBalancerSpec {
    /// Power of two choices over peak-EWMA latency (the default).
    #[serde(rename = "PeakEWMA")]
    PeakEwma,
    RoundRobin,
}

/// `spec.rateLimit` (TrafficPolicy and InboundPolicy): a token bucket.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Refill rate, 1–1000000. Required.
    pub requests_per_second: i64,
    /// Capacity, 1–1000000. Default `requestsPerSecond`.
    #[serde(default)]
    pub burst: Option<i64>,
}

/// `spec.hedge`: after `delay` without a response, another attempt to another endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HedgeSpec {
    /// Longer than `0s`. Required.
    pub delay: String,
    /// 1–3. Default 1.
    #[serde(default)]
    pub max_hedges: Option<i64>,
}

/// `spec.fault`: delay and/or abort a share of the requests. At least one of the two.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    #[serde(default)]
    pub delay: Option<FaultDelaySpec>,
    #[serde(default)]
    pub abort: Option<FaultAbortSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelaySpec {
    /// Longer than `0s`. Required.
    pub fixed_delay: String,
    /// Share of requests delayed, 0–100 with at most 3 decimals. Default 100.
    #[serde(default)]
    pub percent: Option<Decimal>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbortSpec {
    /// Status answered, 200–599. Required.
    pub http_status: i64,
    /// Share of requests aborted, 0–100 with at most 3 decimals. Default 100.
    #[serde(default)]
    pub percent: Option<Decimal>,
}

/// A YAML number that may have a fraction (`0.5`, `1.9`, `10`). Kept as the bits of an
/// `f64` so that the spec types stay `Eq`; validation decides how many decimals it may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal(u64);

impl Decimal {
    pub fn new(value: f64) -> Decimal {
        Decimal(value.to_bits())
    }

    pub fn value(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        f64::deserialize(deserializer).map(Decimal::new)
    }
}

fn service_kind() -> String {
    "Service".to_string()
}

/// `InboundPolicy`: how a workload, the workloads a label selector picks, or every workload of
/// the policy's namespace, treats incoming connections. docs/policy.md says how several of them merge and how rules are evaluated.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundPolicy {
    /// `skiff.dev/v1alpha1`.
    pub api_version: String,
    /// `InboundPolicy`.
    pub kind: String,
    /// Name and namespace; a `targetRef` names the object in the policy's namespace.
    pub metadata: ObjectMeta,
    pub spec: InboundPolicySpec,
}

/// What an [`InboundPolicy`] says: which workloads, whether they accept plaintext, and who may
/// call them. Every field is optional; an empty spec applies to every workload of the
/// namespace and changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundPolicySpec {
    /// The Workload (in the policy's namespace) this policy applies to. Default: none; then
    /// `selector` decides, and without one the policy applies to every workload of its
    /// namespace. Not together with `selector`.
    #[serde(default)]
    pub target_ref: Option<WorkloadTargetRef>,
    /// The Workloads of the policy's namespace this policy applies to, by their labels.
    /// Default: none (see `target_ref`); an empty selector `{}` selects every workload of the
    /// namespace, exactly as no selector does. Not together with `target_ref`.
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// Whether plaintext is accepted. Default: the mode of the namespace-wide policies for a
    /// policy with a `targetRef` or a `selector`, else `PERMISSIVE`.
    #[serde(default)]
    pub mtls: Mtls,
    /// Who may call the workload. Default: none; then every caller the mTLS mode admits may.
    #[serde(default)]
    pub rules: Vec<AuthorizationRuleSpec>,
    /// Requests per second the workload accepts, over all its ports (HTTP only); more are
    /// answered 429. Several policies that apply: the strictest wins. Default: no limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
}

/// The Workload an [`InboundPolicy`] applies to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadTargetRef {
    /// Must be `skiff.dev`. Default `skiff.dev`.
    #[serde(default = "skiff_group")]
    pub group: String,
    /// Must be `Workload`. Default `Workload`.
    #[serde(default = "workload_kind")]
    pub kind: String,
    /// The Workload, in the policy's namespace. Required.
    pub name: String,
}

/// `spec.selector`: Kubernetes' `LabelSelector`. Every requirement must hold; an empty selector
/// matches every workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Label key → value the workload must carry (each the requirement `key In [value]`).
    /// Default: none.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, all of which must hold. Default: none.
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// `spec.selector.matchExpressions[]`: one requirement on one label.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key (an optional DNS-subdomain prefix and `/`, then a name). Required.
    pub key: String,
    /// How the label is compared with `values`. Required.
    pub operator: LabelSelectorOperator,
    /// At least one for `In` and `NotIn`; none for `Exists` and `DoesNotExist`. Default: none.
    #[serde(default)]
    pub values: Vec<String>,
}

/// `spec.selector.matchExpressions[].operator`, spelled as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum LabelSelectorOperator {
    /// The workload has the label, with one of the values.
    In,
    /// The workload lacks the label, or has it with none of the values.
    NotIn,
    /// The workload has the label, whatever its value.
    Exists,
    /// The workload lacks the label.
    DoesNotExist,
}

fn skiff_group() -> String {
    GROUP.to_string()
}

fn workload_kind() -> String {
    "Workload".to_string()
}

/// `spec.mtls`: whether a workload's ports accept plaintext.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    /// The mode of every port not in `ports`. Default: unset, which means the namespace-wide
    /// policies' mode for a policy with a `targetRef` or a `selector`, else `PERMISSIVE`. Unset
    /// also means it cannot conflict with another policy of the same workloads.
    #[serde(default)]
    pub mode: Option<MtlsMode>,
    /// Exceptions to `mode`, one per port. Default: none.
    #[serde(default)]
    pub ports: Vec<PortMtls>,
}

/// `spec.mtls.ports[]`: the mode of one port of the workload.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMtls {
    /// A port the workload listens on (the pod port, not a Service port), 1–65535. Required.
    pub port: i64,
    /// Required.
    pub mode: MtlsMode,
}

/// `spec.rules[]`: one authorization rule. Each non-empty list is a condition that holds when
/// any of its values matches; the rule matches when every condition holds, so a rule without
/// conditions matches every request and connection.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRuleSpec {
    /// `ALLOW` or `DENY`. Required.
    pub action: AuthorizationAction,
    /// Conditions on the caller. Default: any caller.
    #[serde(default)]
    pub from: RuleSource,
    /// Conditions on what is called. Default: anything.
    #[serde(default)]
    pub to: RuleDestination,
}

pub use crate::config::AuthorizationAction;

/// `spec.rules[].from`: who calls, as proven by the caller's certificate. A plaintext caller
/// has no identity and no namespace, so it matches no rule with either list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSource {
    /// Workload SPIFFE IDs (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`),
    /// compared exactly. Default: any.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Namespaces of the callers' SPIFFE IDs (DNS labels). Default: any.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// `spec.rules[].to`: what is called. `methods` and `paths` exist only in HTTP: an ALLOW rule
/// with them never matches a TCP connection, a DENY rule with them matches one when its other
/// conditions hold (fail closed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleDestination {
    /// Ports of the workload (pod ports, not Service ports), 1–65535. Default: any.
    #[serde(default)]
    pub ports: Vec<i64>,
    /// HTTP methods, upper-case letters (`GET`, `POST`, or an extension method). Default: any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Request paths, compared with the normalised path. Default: any.
    #[serde(default)]
    pub paths: Vec<RulePath>,
}

/// `spec.rules[].to.paths[]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RulePath {
    /// `Exact` or `PathPrefix` (whole segments). Required.
    #[serde(rename = "type")]
    pub match_type: RulePathType,
    /// A normalised path: starts with `/`; no `?`, `#`, `%`, `;`, `//`, `.` or `..` segments.
    /// Required.
    pub value: String,
}

/// How a rule path is compared with the request's normalised path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum RulePathType {
    /// The whole path.
    Exact,
    /// Whole segments: `/admin` matches `/admin` and `/admin/x`, not `/administrator`.
    PathPrefix,
}

/// Whether a workload accepts plaintext from clients outside the mesh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// Only mTLS from sidecars.
    Strict,
    /// mTLS from sidecars, plaintext from anyone else.
    #[default]
    Permissive,
}
