//! How a caller treats a destination (DESIGN.md §5, §6): the resilience part of the
//! configuration a proxy runs, with every default filled in. The control plane (and a proxy
//! in local mode) computes it from TrafficPolicies and HTTPRoutes; the proxy only reads it.
//!
//! - [`TrafficConfig`]: one port of one Service: timeouts, retries and their budget, outlier
//!   detection, the circuit breaker, the bulkheads, the balancer, and the defaults of the
//!   per-route settings.
//! - [`RoutePolicy`]: what one HTTPRoute rule overrides: retries, rate limit, hedging, faults.
//! - [`RateLimit`]: a token bucket, per route or per inbound workload.
//!
//! Every default is a named constant here, and `docs/policy.md` lists them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `connectTimeout` when unset.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// `idleTimeout` when unset: a connection (HTTP or TCP) with no bytes moving and no request
/// in flight for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// The request body a retry may replay, when unset: a larger body is streamed, not kept, and
/// its request is not retried once sent.
pub const DEFAULT_RETRY_BODY_LIMIT: u32 = 64 * 1024;
/// `retry.attempts` when a retry policy sets conditions but no count.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// Back-off before retry `n` is uniformly random in `[0, min(max, base × 2ⁿ)]` (full jitter).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// How callers treat one port of a Service. Every field has its default filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficConfig {
    /// TCP connect plus mTLS handshake with one endpoint. Default 1 s.
    #[serde(with = "millis")]
    pub connect_timeout: Duration,
    /// A connection to this service with nothing moving (and, for HTTP, no request in
    /// flight) for this long is closed. Default 1 h.
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    /// Whole call, retries included, when the route sets none. Default: none.
    #[serde(default, with = "optional_millis")]
    pub request_timeout: Option<Duration>,
    /// Retries of requests to this service; a route's own policy replaces it.
    pub retry: RetryPolicy,
    pub retry_budget: RetryBudget,
    pub outlier_detection: OutlierDetection,
    pub circuit_breaker: CircuitBreaker,
    pub limits: ConnectionLimits,
    pub load_balancer: LoadBalancer,
    /// Defaults of the per-route settings for requests to this service (a route's own
    /// [`RoutePolicy`] fields replace these one by one).
    pub route_defaults: RoutePolicy,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: None,
            retry: RetryPolicy::default(),
            retry_budget: RetryBudget::default(),
            outlier_detection: OutlierDetection::default(),
            circuit_breaker: CircuitBreaker::default(),
            limits: ConnectionLimits::default(),
            load_balancer: LoadBalancer::default(),
            route_defaults: RoutePolicy::default(),
        }
    }
}

/// When a request that failed is sent again. Whatever this says, a request the upstream
/// cannot have seen (connect failure, refused stream, GOAWAY before processing) is retried
/// automatically, and no request is retried once its response has started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt, for the conditions in `on` and for the automatic
    /// ones. Default 2 when `on` is set, else 0: then only requests the upstream cannot have
    /// seen are retried, at most [`DEFAULT_RETRY_ATTEMPTS`] times.
    pub attempts: u32,
    /// Outcomes that are retried, for idempotent methods (or any method with
    /// `non_idempotent`). Empty by default.
    pub on: Vec<RetryOn>,
    /// Bound on each attempt (Gateway API `timeouts.backendRequest`). Default: none.
    #[serde(default, with = "optional_millis")]
    pub per_try_timeout: Option<Duration>,
    #[serde(with = "millis")]
    pub backoff_base: Duration,
    #[serde(with = "millis")]
    pub backoff_max: Duration,
    /// Retry POST, PATCH and other non-idempotent methods too (a route opts in explicitly).
    /// Default false.
    pub non_idempotent: bool,
    /// Largest request body kept for replay, in bytes. Default 64 KiB.
    pub body_limit: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 0,
            on: Vec::new(),
            per_try_timeout: None,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            non_idempotent: false,
            body_limit: DEFAULT_RETRY_BODY_LIMIT,
        }
    }
}

/// One condition a [`RetryPolicy`] retries on. Written in policy YAML as `5xx`,
/// `gateway-error`, `reset`, a status code (`409`), or a gRPC status name (`unavailable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum RetryOn {
    /// Any 5xx response, and every gateway error.
    ServerError,
    /// 502, 503, 504, connect failures and timeouts, per-try timeouts, resets before the
    /// response started.
    GatewayError,
    /// The connection or stream broke before the response started.
    Reset,
    /// This response status.
    Status(u16),
    /// This `grpc-status` in a response's headers or trailers-only response (gRPC codes
    /// 1–16, e.g. 14 UNAVAILABLE, 8 RESOURCE_EXHAUSTED).
    Grpc(u8),
}

/// Retries to one destination may add at most `percent` % of its requests plus
/// `min_per_second` per second (counted over `window`), so an outage cannot multiply load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Default 20.
    pub percent: u32,
    /// Default 10.
    pub min_per_second: u32,
    /// How long a request counts towards the budget. Default 10 s.
    #[serde(with = "millis")]
    pub window: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            percent: 20,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Per-endpoint ejection (Envoy's outlier detection, with its defaults).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Default true.
    pub enabled: bool,
    /// Consecutive 5xx responses (and gateway failures) that eject. Default 5; 0 disables.
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures (connect errors, resets, 502, 503, 504) that eject.
    /// Default 5; 0 disables.
    pub consecutive_gateway_failure: u32,
    /// How often success rates are compared and ejection counts decay. Default 10 s.
    #[serde(with = "millis")]
    pub interval: Duration,
    /// An ejection lasts this times the endpoint's number of ejections. Default 30 s.
    #[serde(with = "millis")]
    pub base_ejection_time: Duration,
    /// Cap on one ejection. Default 300 s.
    #[serde(with = "millis")]
    pub max_ejection_time: Duration,
    /// At most this share of the endpoints is ejected at once; at least one may be, and the
    /// last available endpoint never is. Default 10.
    pub max_ejection_percent: u32,
    /// Success-rate ejection: an endpoint with at least `request_volume` requests in an
    /// interval whose success rate is below mean − stdev × `stdev_factor` / 1000 is ejected,
    /// when at least `minimum_hosts` endpoints have that volume. Defaults 5, 100, 1900.
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    pub success_rate_stdev_factor: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            enabled: true,
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
        }
    }
}

/// The three-state breaker of one destination service: closed → open when at least
/// `failure_percent` % of the last `window` calls failed (once `minimum_calls` were made) →
/// half-open after `open_for`, letting `half_open_calls` trial calls through → closed when
/// they succeed (below the threshold), open again otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Default true.
    pub enabled: bool,
    /// Default 50.
    pub failure_percent: u32,
    /// Calls in the sliding window. Default 100.
    pub window: u32,
    /// Calls before the rate counts. Default 20.
    pub minimum_calls: u32,
    /// Default 5 s.
    #[serde(with = "millis")]
    pub open_for: Duration,
    /// Default 3.
    pub half_open_calls: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            enabled: true,
            failure_percent: 50,
            window: 100,
            minimum_calls: 20,
            open_for: Duration::from_secs(5),
            half_open_calls: 3,
        }
    }
}

/// Bulkheads per destination service (Envoy's circuit-breaker thresholds): beyond them a call
/// is refused at once with 503 `overflow`, never queued without bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Upstream connections in use at once (opaque TCP, and HTTP/1 serving a request; an
    /// idle pooled connection holds no slot, HTTP/2 takes none). Default 1024.
    pub max_connections: u32,
    /// Requests waiting for a connection slot (each waits at most the connect timeout).
    /// Default 1024.
    pub max_pending_requests: u32,
    /// Requests in flight. Default 1024.
    pub max_requests: u32,
    /// Retries (and hedges) in flight. Default 64.
    pub max_retries: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 64,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadBalancer {
    /// Power of two choices over peak-EWMA latency times requests in flight (default).
    #[default]
    PeakEwma,
    RoundRobin,
}

/// Per-route settings; on a [`TrafficConfig`] they are the defaults of its routes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutePolicy {
    /// Replaces the service's retry policy for this route.
    pub retry: Option<RetryPolicy>,
    pub rate_limit: Option<RateLimit>,
    pub hedge: Option<Hedge>,
    pub fault: Option<Fault>,
}

/// A local token bucket: `requests_per_second` refill, `burst` capacity. A request that finds
/// it empty is answered 429 `rate-limited`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: u32,
    /// Default: `requests_per_second`.
    pub burst: u32,
}

/// Hedged requests (idempotent, bodiless requests only): when no response came after
/// `delay`, a second attempt goes to another endpoint and the first response the retry policy
/// would not retry wins. Hedges spend the retry budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hedge {
    #[serde(with = "millis")]
    pub delay: Duration,
    /// Extra attempts at most. Default 1.
    pub max_hedges: u32,
}

/// Chaos testing: delay and/or abort a share of requests before they are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    #[serde(with = "millis")]
    pub delay: Duration,
    /// Share of requests, in thousandths of a percent (100000 = every request), so that
    /// `0.5%` is exact.
    pub per_100k: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// Status answered (200–599).
    pub status: u16,
    /// Share of requests, in thousandths of a percent.
    pub per_100k: u32,
}

/// Durations travel as milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        (value.as_millis() as u64).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

pub(crate) mod optional_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.map(|d| d.as_millis() as u64).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
    }
}
