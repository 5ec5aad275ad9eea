//! The resilience fields of a TrafficPolicy (and an InboundPolicy's `rateLimit`): every
//! duration, count, share and retry condition parsed into [`crate::traffic`]'s types, each
//! problem reported at its field path with what is allowed. What a policy attaches to, and
//! which fields its target allows, is [`super::targets`]'s business.

use std::time::Duration;

use crate::document::Located;
use crate::duration::parse_duration;
use crate::policy::TrafficSettings;
use crate::problem::Problem;
use crate::skiff_kinds::{
    BackoffSpec, CircuitBreakerSpec, ConnectionPoolSpec, Decimal, FaultSpec, HedgeSpec,
    LoadBalancerSpec, OutlierDetectionSpec, RateLimitSpec, RetryBudgetSpec, RetrySpec,
    TrafficPolicySpec,
};
use crate::traffic::{
    CircuitBreaker, ConnectionLimits, Fault, FaultAbort, FaultDelay, Hedge, LoadBalancer,
    OutlierDetection, RateLimit, RetryBudget, RetryOn, RetryPolicy, DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX, DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_BODY_LIMIT,
};

/// Most retries after the first attempt (TrafficPolicy `retry.attempts`, HTTPRoute
/// `retry.attempts`): more only multiplies load, which the budget would refuse anyway.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
/// Largest request body a retry may keep for replay (16 MiB).
pub const MAX_RETRY_BODY_LIMIT: u32 = 16 * 1024 * 1024;
/// Most hedges per request.
pub const MAX_HEDGES: u32 = 3;
/// Largest `requestsPerSecond` and `burst` of a rate limit.
pub const MAX_RATE: u32 = 1_000_000;
/// Bounds of the retry budget's window (as Linkerd's).
const MIN_BUDGET_WINDOW: Duration = Duration::from_secs(1);
const MAX_BUDGET_WINDOW: Duration = Duration::from_secs(60);

/// The gRPC status names `retry.on` accepts (lower-case kebab of the canonical names), and
/// their codes.
pub const GRPC_STATUSES: [(&str, u8); 16] = [
    ("cancelled", 1),
    ("unknown", 2),
    ("invalid-argument", 3),
    ("deadline-exceeded", 4),
    ("not-found", 5),
    ("already-exists", 6),
    ("permission-denied", 7),
    ("resource-exhausted", 8),
    ("failed-precondition", 9),
    ("aborted", 10),
    ("out-of-range", 11),
    ("unimplemented", 12),
    ("internal", 13),
    ("unavailable", 14),
    ("data-loss", 15),
    ("unauthenticated", 16),
];

/// Every field of `spec` but its target, parsed. A field with a problem is left unset (the
/// policy is refused anyway).
pub(super) fn settings<T>(
    item: &Located<T>,
    spec: &TrafficPolicySpec,
    found: &mut Vec<Problem>,
) -> TrafficSettings {
    let mut fields = Fields { item, found };
    TrafficSettings {
        connect_timeout: spec
            .connect_timeout
            .as_deref()
            .and_then(|text| fields.positive("spec.connectTimeout", text)),
        idle_timeout: spec
            .idle_timeout
            .as_deref()
            .and_then(|text| fields.positive("spec.idleTimeout", text)),
        request_timeout: spec
            .request_timeout
            .as_deref()
            .and_then(|text| fields.positive("spec.requestTimeout", text)),
        retry: spec.retry.as_ref().map(|retry| fields.retry(retry)),
        retry_budget: spec
            .retry_budget
            .as_ref()
            .map(|budget| fields.retry_budget(budget)),
        outlier_detection: spec
            .outlier_detection
            .as_ref()
            .map(|outlier| fields.outlier_detection(outlier)),
        circuit_breaker: spec
            .circuit_breaker
            .as_ref()
            .map(|breaker| fields.circuit_breaker(breaker)),
        limits: spec
            .connection_pool
            .as_ref()
            .map(|pool| fields.connection_pool(pool)),
        load_balancer: spec.load_balancer.map(|balancer| match balancer {
            LoadBalancerSpec::PeakEwma => LoadBalancer::PeakEwma,
            LoadBalancerSpec::RoundRobin => LoadBalancer::RoundRobin,
        }),
        rate_limit: spec
            .rate_limit
            .as_ref()
            .and_then(|limit| fields.rate_limit("spec.rateLimit", limit)),
        hedge: spec.hedge.as_ref().and_then(|hedge| fields.hedge(hedge)),
        fault: spec.fault.as_ref().and_then(|fault| fields.fault(fault)),
    }
}

/// A `rateLimit` at `path` (TrafficPolicy or InboundPolicy); `None` when it has a problem.
pub(super) fn rate_limit<T>(
    item: &Located<T>,
    path: &str,
    spec: &RateLimitSpec,
    found: &mut Vec<Problem>,
) -> Option<RateLimit> {
    Fields { item, found }.rate_limit(path, spec)
}

/// One entry of `retry.on`: `5xx`, `gateway-error`, `reset`, a status 400–599, or a gRPC
/// status name.
pub fn retry_on(text: &str) -> Result<RetryOn, String> {
    match text {
        "5xx" => return Ok(RetryOn::ServerError),
        "gateway-error" => return Ok(RetryOn::GatewayError),
        "reset" => return Ok(RetryOn::Reset),
        _ => {}
    }
    if let Some((_, code)) = GRPC_STATUSES.iter().find(|(name, _)| *name == text) {
        return Ok(RetryOn::Grpc(*code));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u16>() {
            Ok(status) if (400..=599).contains(&status) => Ok(RetryOn::Status(status)),
            _ => Err(format!(
                "status {text} cannot be retried on: use a status between 400 and 599"
            )),
        };
    }
    let names: Vec<&str> = GRPC_STATUSES.iter().map(|(name, _)| *name).collect();
    Err(format!(
        "unknown retry condition {text:?}; allowed: 5xx, gateway-error, reset, a status \
         between 400 and 599, or a gRPC status ({})",
        names.join(", ")
    ))
}

/// A share written as a percentage with at most 3 decimals (`0.5`), in thousandths of a
/// percent (`500`), between `min` and `max` percent.
pub fn thousandths(value: f64, min: f64, max: f64) -> Result<u32, String> {
    if !value.is_finite() || value < min || value > max {
        return Err(format!("must be between {min} and {max}, not {value}"));
    }
    let scaled = value * 1000.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return Err(format!(
            "{value} has more than 3 decimals; the finest step is 0.001"
        ));
    }
    Ok(rounded as u32)
}

/// A whole number between `min` and `max`.
pub fn count(value: i64, min: u32, max: u32) -> Result<u32, String> {
    match u32::try_from(value) {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        _ => Err(format!("must be between {min} and {max}, not {value}")),
    }
}

/// A duration the way users write them, for messages.
pub fn show(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 1000 != 0 {
        format!("{millis}ms")
    } else {
        format!("{}s", millis / 1000)
    }
}

/// Checks the fields of one resource, collecting its problems.
struct Fields<'a, T> {
    item: &'a Located<T>,
    found: &'a mut Vec<Problem>,
}

impl<T> Fields<'_, T> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        let problem = self.item.error(path, message);
        self.found.push(problem);
    }

    /// The checked value, or `None` with its problem at `path`.
    fn checked<V>(&mut self, path: &str, checked: Result<V, String>) -> Option<V> {
        checked.map_err(|message| self.error(path, message)).ok()
    }

    fn count(&mut self, path: &str, value: i64, min: u32, max: u32) -> Option<u32> {
        self.checked(path, count(value, min, max))
    }

    fn share(&mut self, path: &str, value: Decimal, min: f64, max: f64) -> Option<u32> {
        self.checked(path, thousandths(value.value(), min, max))
    }

    /// A duration longer than `0s`.
    fn positive(&mut self, path: &str, text: &str) -> Option<Duration> {
        match parse_duration(text) {
            Ok(duration) if duration.is_zero() => {
                self.error(path, "must be longer than 0s");
                None
            }
            Ok(duration) => Some(duration),
            Err(error) => {
                self.error(path, error.to_string());
                None
            }
        }
    }

    fn retry(&mut self, spec: &RetrySpec) -> RetryPolicy {
        let mut on: Vec<RetryOn> = Vec::new();
        for (at, condition) in spec.on.iter().enumerate() {
            let path = format!("spec.retry.on[{at}]");
            let Some(parsed) = self.checked(&path, retry_on(&condition.0)) else {
                continue;
            };
            if let Some(first) = on.iter().position(|c| *c == parsed) {
                self.error(
                    &path,
                    format!(
                        "{:?} is already listed at spec.retry.on[{first}]",
                        condition.0
                    ),
                );
                continue;
            }
            on.push(parsed);
        }
        let attempts = match spec.attempts {
            Some(attempts) => self
                .count("spec.retry.attempts", attempts, 0, MAX_RETRY_ATTEMPTS)
                .unwrap_or(0),
            None if spec.on.is_empty() => 0,
            None => DEFAULT_RETRY_ATTEMPTS,
        };
        let per_try_timeout = spec
            .per_try_timeout
            .as_deref()
            .and_then(|text| self.positive("spec.retry.perTryTimeout", text));
        let (backoff_base, backoff_max) = match &spec.backoff {
            Some(backoff) => self.backoff(backoff),
            None => (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX),
        };
        let body_limit = spec.body_limit_bytes.and_then(|bytes| {
            self.count("spec.retry.bodyLimitBytes", bytes, 0, MAX_RETRY_BODY_LIMIT)
        });
        RetryPolicy {
            attempts,
            on,
            per_try_timeout,
            backoff_base,
            backoff_max,
            non_idempotent: spec.non_idempotent,
            body_limit: body_limit.unwrap_or(DEFAULT_RETRY_BODY_LIMIT),
        }
    }

    /// `(base, max)`; an unset `max` is the default, or `base` when that is longer.
    fn backoff(&mut self, spec: &BackoffSpec) -> (Duration, Duration) {
        let base = spec
            .base
            .as_deref()
            .and_then(|text| self.positive("spec.retry.backoff.base", text))
            .unwrap_or(DEFAULT_BACKOFF_BASE);
        let max = spec
            .max
            .as_deref()
            .and_then(|text| self.positive("spec.retry.backoff.max", text));
        match max {
            Some(max) if max < base => {
                self.error(
                    "spec.retry.backoff.max",
                    format!(
                        "{} is shorter than base ({}); max must be at least base",
                        show(max),
                        show(base)
                    ),
                );
                (base, base)
            }
            Some(max) => (base, max),
            None => (base, DEFAULT_BACKOFF_MAX.max(base)),
        }
    }

    fn retry_budget(&mut self, spec: &RetryBudgetSpec) -> RetryBudget {
        let default = RetryBudget::default();
        let percent = spec
            .percent
            .and_then(|value| self.count("spec.retryBudget.percent", value, 0, 100));
        let min_per_second = spec
            .min_per_second
            .and_then(|value| self.count("spec.retryBudget.minPerSecond", value, 0, MAX_RATE));
        let window = spec.window.as_deref().and_then(|text| {
            let path = "spec.retryBudget.window";
            let window = self.positive(path, text)?;
            if !(MIN_BUDGET_WINDOW..=MAX_BUDGET_WINDOW).contains(&window) {
                self.error(
                    path,
                    format!(
                        "must be between {} and {}, not {}",
                        show(MIN_BUDGET_WINDOW),
                        show(MAX_BUDGET_WINDOW),
                        show(window)
                    ),
                );
                return None;
            }
            Some(window)
        });
        RetryBudget {
            percent: percent.unwrap_or(default.percent),
            min_per_second: min_per_second.unwrap_or(default.min_per_second),
            window: window.unwrap_or(default.window),
        }
    }

    fn outlier_detection(&mut self, spec: &OutlierDetectionSpec) -> OutlierDetection {
        let default = OutlierDetection::default();
        let at = |field: &str| format!("spec.outlierDetection.{field}");
        let consecutive_5xx = spec
            .consecutive_5xx
            .and_then(|value| self.count(&at("consecutive5xx"), value, 0, 1000));
        let consecutive_gateway_failure = spec
            .consecutive_gateway_failure
            .and_then(|value| self.count(&at("consecutiveGatewayFailure"), value, 0, 1000));
        let interval = spec
            .interval
            .as_deref()
            .and_then(|text| self.positive(&at("interval"), text));
        let base = spec
            .base_ejection_time
            .as_deref()
            .and_then(|text| self.positive(&at("baseEjectionTime"), text))
            .unwrap_or(default.base_ejection_time);
        let max = spec
            .max_ejection_time
            .as_deref()
            .and_then(|text| self.positive(&at("maxEjectionTime"), text));
        let max = match max {
            Some(max) if max < base => {
                self.error(
                    &at("maxEjectionTime"),
                    format!(
                        "{} is shorter than baseEjectionTime ({}); it must be at least that",
                        show(max),
                        show(base)
                    ),
                );
                base
            }
            Some(max) => max,
            // Envoy: the default or the base ejection time, whichever is larger.
            None => default.max_ejection_time.max(base),
        };
        let max_ejection_percent = spec
            .max_ejection_percent
            .and_then(|value| self.count(&at("maxEjectionPercent"), value, 0, 100));
        let rate = spec.success_rate.clone().unwrap_or_default();
        let minimum_hosts = rate
            .minimum_hosts
            .and_then(|value| self.count(&at("successRate.minimumHosts"), value, 1, 10_000));
        let request_volume = rate
            .request_volume
            .and_then(|value| self.count(&at("successRate.requestVolume"), value, 1, 1_000_000));
        let stdev_factor = rate
            .stdev_factor
            .and_then(|value| self.share(&at("successRate.stdevFactor"), value, 0.001, 100.0));
        OutlierDetection {
            enabled: spec.enabled.unwrap_or(default.enabled),
            consecutive_5xx: consecutive_5xx.unwrap_or(default.consecutive_5xx),
            consecutive_gateway_failure: consecutive_gateway_failure
                .unwrap_or(default.consecutive_gateway_failure),
            interval: interval.unwrap_or(default.interval),
            base_ejection_time: base,
            max_ejection_time: max,
            max_ejection_percent: max_ejection_percent.unwrap_or(default.max_ejection_percent),
            success_rate_minimum_hosts: minimum_hosts.unwrap_or(default.success_rate_minimum_hosts),
            success_rate_request_volume: request_volume
                .unwrap_or(default.success_rate_request_volume),
            success_rate_stdev_factor: stdev_factor.unwrap_or(default.success_rate_stdev_factor),
        }
    }

    fn circuit_breaker(&mut self, spec: &CircuitBreakerSpec) -> CircuitBreaker {
        let default = CircuitBreaker::default();
        let at = |field: &str| format!("spec.circuitBreaker.{field}");
        let failure_percent = spec
            .failure_percent
            .and_then(|value| self.count(&at("failurePercent"), value, 1, 100));
        let window = spec
            .window
            .and_then(|value| self.count(&at("window"), value, 1, 10_000))
            .unwrap_or(default.window);
        let minimum_calls = match spec.minimum_calls {
            Some(value) => self
                .count(&at("minimumCalls"), value, 1, window)
                .unwrap_or(1),
            None => default.minimum_calls.min(window),
        };
        let open_for = spec
            .open_for
            .as_deref()
            .and_then(|text| self.positive(&at("openFor"), text));
        let half_open_calls = spec
            .half_open_calls
            .and_then(|value| self.count(&at("halfOpenCalls"), value, 1, 100));
        CircuitBreaker {
            enabled: spec.enabled.unwrap_or(default.enabled),
            failure_percent: failure_percent.unwrap_or(default.failure_percent),
            window,
            minimum_calls,
            open_for: open_for.unwrap_or(default.open_for),
            half_open_calls: half_open_calls.unwrap_or(default.half_open_calls),
        }
    }

    fn connection_pool(&mut self, spec: &ConnectionPoolSpec) -> ConnectionLimits {
        let default = ConnectionLimits::default();
        let mut limit = |field: &str, value: Option<i64>, min: u32, fallback: u32| {
            value
                .and_then(|value| {
                    self.count(
                        &format!("spec.connectionPool.{field}"),
                        value,
                        min,
                        u32::MAX,
                    )
                })
                .unwrap_or(fallback)
        };
        ConnectionLimits {
            max_connections: limit(
                "maxConnections",
                spec.max_connections,
                1,
                default.max_connections,
            ),
            max_pending_requests: limit(
                "maxPendingRequests",
                spec.max_pending_requests,
                0,
                default.max_pending_requests,
            ),
            max_requests: limit("maxRequests", spec.max_requests, 1, default.max_requests),
            max_retries: limit("maxRetries", spec.max_retries, 0, default.max_retries),
        }
    }

    fn rate_limit(&mut self, path: &str, spec: &RateLimitSpec) -> Option<RateLimit> {
        let requests_per_second = self.count(
            &format!("{path}.requestsPerSecond"),
            spec.requests_per_second,
            1,
            MAX_RATE,
        );
        let burst = match spec.burst {
            Some(burst) => Some(self.count(&format!("{path}.burst"), burst, 1, MAX_RATE)?),
            None => None,
        };
        let requests_per_second = requests_per_second?;
        Some(RateLimit {
            requests_per_second,
            burst: burst.unwrap_or(requests_per_second),
        })
    }

    fn hedge(&mut self, spec: &HedgeSpec) -> Option<Hedge> {
        let delay = self.positive("spec.hedge.delay", &spec.delay);
        let max_hedges = match spec.max_hedges {
            Some(value) => Some(self.count("spec.hedge.maxHedges", value, 1, MAX_HEDGES)?),
            None => None,
        };
        Some(Hedge {
            delay: delay?,
            max_hedges: max_hedges.unwrap_or(1),
        })
    }

    fn fault(&mut self, spec: &FaultSpec) -> Option<Fault> {
        if spec.delay.is_none() && spec.abort.is_none() {
            self.error("spec.fault", "set delay, abort or both");
            return None;
        }
        // Every part is checked before any problem discards the fault.
        let delay = spec.delay.as_ref().map(|delay| {
            let fixed = self.positive("spec.fault.delay.fixedDelay", &delay.fixed_delay);
            let per_100k = self.percent("spec.fault.delay.percent", delay.percent);
            Some(FaultDelay {
                delay: fixed?,
                per_100k: per_100k?,
            })
        });
        let abort = spec.abort.as_ref().map(|abort| {
            let status = self.count("spec.fault.abort.httpStatus", abort.http_status, 200, 599);
            let per_100k = self.percent("spec.fault.abort.percent", abort.percent);
            Some(FaultAbort {
                status: u16::try_from(status?).ok()?,
                per_100k: per_100k?,
            })
        });
        if matches!(delay, Some(None)) || matches!(abort, Some(None)) {
            return None;
        }
        Some(Fault {
            delay: delay.flatten(),
            abort: abort.flatten(),
        })
    }

    /// A share of requests in percent (default: every request), in thousandths of a percent.
    fn percent(&mut self, path: &str, percent: Option<Decimal>) -> Option<u32> {
        match percent {
            Some(percent) => self.share(path, percent, 0.0, 100.0),
            None => Some(100_000),
        }
    }
}

#[cfg(test)]
mod tests;
