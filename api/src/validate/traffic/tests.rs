//! TrafficPolicy fields, table-tested through [`crate::load`]: each field's parsing and
//! defaults, what a route-targeted policy may set, and every error at its field path. How the
//! view layers the policies is tested in `view/tests.rs`.

use std::time::Duration;

use super::*;
use crate::load;
use crate::policy::{TrafficSettings, TrafficTarget};
use crate::traffic::{RetryPolicy, DEFAULT_RETRY_ATTEMPTS};

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 80, appProtocol: http}
  - {name: admin, port: 9000, appProtocol: http}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules:
  - name: reads
    matches: [{method: GET}]
    backendRefs: [{name: web, port: 80}]
  - backendRefs: [{name: web, port: 80}]
";

/// A TrafficPolicy `name` of namespace `shop` with `target` and the `fields` of its spec
/// (YAML lines indented by two spaces).
fn policy_doc(name: &str, target: &str, fields: &str) -> String {
    let mut doc = format!(
        "---\napiVersion: skiff.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}, \
         namespace: shop}}\nspec:\n  targetRef: {target}\n"
    );
    for line in fields.lines().filter(|l| !l.trim().is_empty()) {
        doc.push_str("  ");
        doc.push_str(line);
        doc.push('\n');
    }
    doc
}

const SERVICE: &str = "{kind: Service, name: web}";
const ROUTE: &str = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}";

fn load_docs(docs: &str) -> Result<crate::Loaded, Vec<String>> {
    let text = format!("{SERVICES}{docs}");
    load(&[("policy.yaml".to_string(), text)])
        .map_err(|problems| problems.iter().map(ToString::to_string).collect())
}

/// What a Service-targeted policy with `fields` sets.
fn settings(fields: &str) -> TrafficSettings {
    match load_docs(&policy_doc("p", SERVICE, fields)) {
        Ok(loaded) => loaded.policy.traffic_policies[0].settings.clone(),
        Err(problems) => panic!("{fields}:\n{}", problems.join("\n")),
    }
}

/// The problems of a policy targeting `target` with `fields`.
fn problems(target: &str, fields: &str) -> Vec<String> {
    match load_docs(&policy_doc("p", target, fields)) {
        Ok(loaded) => panic!("{fields}: loaded; warnings {:?}", loaded.warnings),
        Err(problems) => problems,
    }
}

fn retry(edit: impl FnOnce(&mut RetryPolicy)) -> Option<RetryPolicy> {
    let mut retry = RetryPolicy::default();
    edit(&mut retry);
    Some(retry)
}

#[test]
fn every_field_parses_into_its_setting_with_defaults_filled() {
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let rows: Vec<(&str, TrafficSettings)> = vec![
        ("", TrafficSettings::default()),
        (
            "connectTimeout: 250ms\nidleTimeout: 1h\nrequestTimeout: 10s",
            TrafficSettings {
                connect_timeout: Some(ms(250)),
                idle_timeout: Some(s(3600)),
                request_timeout: Some(s(10)),
                ..TrafficSettings::default()
            },
        ),
        (
            "retry: {}",
            TrafficSettings {
                retry: retry(|_| {}),
                ..TrafficSettings::default()
            },
        ),
        (
            "retry: {on: [5xx, gateway-error, reset, \"409\", 503, unavailable, resource-exhausted, cancelled, unauthenticated]}",
            TrafficSettings {
                retry: retry(|r| {
                    r.attempts = DEFAULT_RETRY_ATTEMPTS;
                    r.on = vec![
                        RetryOn::ServerError,
                        RetryOn::GatewayError,
                        RetryOn::Reset,
                        RetryOn::Status(409),
                        RetryOn::Status(503),
                        RetryOn::Grpc(14),
                        RetryOn::Grpc(8),
                        RetryOn::Grpc(1),
                        RetryOn::Grpc(16),
                    ];
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "retry: {attempts: 3}",
            TrafficSettings {
                retry: retry(|r| r.attempts = 3),
                ..TrafficSettings::default()
            },
        ),
        (
            "retry: {attempts: 0, on: [5xx], perTryTimeout: 500ms, nonIdempotent: true, bodyLimitBytes: 0}",
            TrafficSettings {
                retry: retry(|r| {
                    r.on = vec![RetryOn::ServerError];
                    r.per_try_timeout = Some(ms(500));
                    r.non_idempotent = true;
                    r.body_limit = 0;
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "retry: {backoff: {base: 10ms, max: 1s}, bodyLimitBytes: 16777216}",
            TrafficSettings {
                retry: retry(|r| {
                    r.backoff_base = ms(10);
                    r.backoff_max = s(1);
                    r.body_limit = 16 * 1024 * 1024;
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "retry: {backoff: {base: 1s}}",
            TrafficSettings {
                retry: retry(|r| {
                    r.backoff_base = s(1);
                    r.backoff_max = s(1);
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "retryBudget: {percent: 50, minPerSecond: 0, window: 60s}",
            TrafficSettings {
                retry_budget: Some(RetryBudget {
                    percent: 50,
                    min_per_second: 0,
                    window: s(60),
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "retryBudget: {}",
            TrafficSettings {
                retry_budget: Some(RetryBudget::default()),
                ..TrafficSettings::default()
            },
        ),
        (
            "outlierDetection: {enabled: false, consecutive5xx: 0, consecutiveGatewayFailure: 3, interval: 1s, baseEjectionTime: 10s, maxEjectionTime: 10s, maxEjectionPercent: 100, successRate: {minimumHosts: 1, requestVolume: 10, stdevFactor: 2.125}}",
            TrafficSettings {
                outlier_detection: Some(OutlierDetection {
                    enabled: false,
                    consecutive_5xx: 0,
                    consecutive_gateway_failure: 3,
                    interval: s(1),
                    base_ejection_time: s(10),
                    max_ejection_time: s(10),
                    max_ejection_percent: 100,
                    success_rate_minimum_hosts: 1,
                    success_rate_request_volume: 10,
                    success_rate_stdev_factor: 2125,
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            // Envoy: an unset maximum is the default or the base, whichever is longer.
            "outlierDetection: {baseEjectionTime: 10m}",
            TrafficSettings {
                outlier_detection: Some(OutlierDetection {
                    base_ejection_time: s(600),
                    max_ejection_time: s(600),
                    ..OutlierDetection::default()
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "circuitBreaker: {enabled: false, failurePercent: 100, window: 10, minimumCalls: 10, openFor: 1s, halfOpenCalls: 1}",
            TrafficSettings {
                circuit_breaker: Some(CircuitBreaker {
                    enabled: false,
                    failure_percent: 100,
                    window: 10,
                    minimum_calls: 10,
                    open_for: s(1),
                    half_open_calls: 1,
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "circuitBreaker: {window: 5}",
            TrafficSettings {
                circuit_breaker: Some(CircuitBreaker {
                    window: 5,
                    minimum_calls: 5,
                    ..CircuitBreaker::default()
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "connectionPool: {maxConnections: 1, maxPendingRequests: 0, maxRequests: 4294967295, maxRetries: 0}",
            TrafficSettings {
                limits: Some(ConnectionLimits {
                    max_connections: 1,
                    max_pending_requests: 0,
                    max_requests: u32::MAX,
                    max_retries: 0,
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "loadBalancer: RoundRobin",
            TrafficSettings {
                load_balancer: Some(LoadBalancer::RoundRobin),
                ..TrafficSettings::default()
            },
        ),
        (
            "loadBalancer: PeakEWMA",
            TrafficSettings {
                load_balancer: Some(LoadBalancer::PeakEwma),
                ..TrafficSettings::default()
            },
        ),
        (
            "rateLimit: {requestsPerSecond: 100}",
            TrafficSettings {
                rate_limit: Some(RateLimit {
                    requests_per_second: 100,
                    burst: 100,
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "rateLimit: {requestsPerSecond: 100, burst: 1}",
            TrafficSettings {
                rate_limit: Some(RateLimit {
                    requests_per_second: 100,
                    burst: 1,
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "hedge: {delay: 50ms}",
            TrafficSettings {
                hedge: Some(Hedge {
                    delay: ms(50),
                    max_hedges: 1,
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "hedge: {delay: 50ms, maxHedges: 3}",
            TrafficSettings {
                hedge: Some(Hedge {
                    delay: ms(50),
                    max_hedges: 3,
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "fault: {delay: {fixedDelay: 100ms, percent: 10}, abort: {httpStatus: 503, percent: 0.5}}",
            TrafficSettings {
                fault: Some(Fault {
                    delay: Some(FaultDelay {
                        delay: ms(100),
                        per_100k: 10_000,
                    }),
                    abort: Some(FaultAbort {
                        status: 503,
                        per_100k: 500,
                    }),
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "fault: {abort: {httpStatus: 200}}",
            TrafficSettings {
                fault: Some(Fault {
                    delay: None,
                    abort: Some(FaultAbort {
                        status: 200,
                        per_100k: 100_000,
                    }),
                }),
                ..TrafficSettings::default()
            },
        ),
        (
            "fault: {delay: {fixedDelay: 1s, percent: 0.001}}",
            TrafficSettings {
                fault: Some(Fault {
                    delay: Some(FaultDelay {
                        delay: s(1),
                        per_100k: 1,
                    }),
                    abort: None,
                }),
                ..TrafficSettings::default()
            },
        ),
    ];
    for (fields, expected) in rows {
        assert_eq!(settings(fields), expected, "{fields}");
    }
}

#[test]
fn every_bad_value_is_reported_at_its_field_with_what_is_allowed() {
    // (fields, path, fragment of the message)
    let rows = [
        (
            "connectTimeout: 0s",
            "spec.connectTimeout",
            "longer than 0s",
        ),
        (
            "connectTimeout: 1.5s",
            "spec.connectTimeout",
            "is not a duration",
        ),
        ("idleTimeout: 0s", "spec.idleTimeout", "longer than 0s"),
        (
            "requestTimeout: 10",
            "spec.requestTimeout",
            "is not a duration",
        ),
        (
            "retry: {attempts: 11}",
            "spec.retry.attempts",
            "between 0 and 10, not 11",
        ),
        (
            "retry: {attempts: -1}",
            "spec.retry.attempts",
            "between 0 and 10",
        ),
        (
            "retry: {on: [5xx, reset, 5XX]}",
            "spec.retry.on[2]",
            "unknown retry condition \"5XX\"; allowed: 5xx, gateway-error, reset",
        ),
        (
            "retry: {on: [unavailable, UNAVAILABLE]}",
            "spec.retry.on[1]",
            "resource-exhausted",
        ),
        (
            "retry: {on: [\"200\"]}",
            "spec.retry.on[0]",
            "between 400 and 599",
        ),
        (
            "retry: {on: [600]}",
            "spec.retry.on[0]",
            "between 400 and 599",
        ),
        (
            "retry: {on: [503, \"503\"]}",
            "spec.retry.on[1]",
            "already listed at spec.retry.on[0]",
        ),
        (
            "retry: {perTryTimeout: 0s}",
            "spec.retry.perTryTimeout",
            "longer than 0s",
        ),
        (
            "retry: {backoff: {base: 0s}}",
            "spec.retry.backoff.base",
            "longer than 0s",
        ),
        (
            "retry: {backoff: {base: 100ms, max: 50ms}}",
            "spec.retry.backoff.max",
            "50ms is shorter than base (100ms)",
        ),
        (
            "retry: {bodyLimitBytes: 16777217}",
            "spec.retry.bodyLimitBytes",
            "between 0 and 16777216",
        ),
        (
            "retryBudget: {percent: 101}",
            "spec.retryBudget.percent",
            "between 0 and 100",
        ),
        (
            "retryBudget: {minPerSecond: -1}",
            "spec.retryBudget.minPerSecond",
            "between 0 and 1000000",
        ),
        (
            "retryBudget: {window: 500ms}",
            "spec.retryBudget.window",
            "between 1s and 60s, not 500ms",
        ),
        (
            "retryBudget: {window: 2m}",
            "spec.retryBudget.window",
            "between 1s and 60s",
        ),
        (
            "outlierDetection: {consecutive5xx: 1001}",
            "spec.outlierDetection.consecutive5xx",
            "between 0 and 1000",
        ),
        (
            "outlierDetection: {consecutiveGatewayFailure: -1}",
            "spec.outlierDetection.consecutiveGatewayFailure",
            "between 0 and 1000",
        ),
        (
            "outlierDetection: {interval: 0s}",
            "spec.outlierDetection.interval",
            "longer than 0s",
        ),
        (
            "outlierDetection: {baseEjectionTime: 0s}",
            "spec.outlierDetection.baseEjectionTime",
            "longer than 0s",
        ),
        (
            "outlierDetection: {baseEjectionTime: 1m, maxEjectionTime: 30s}",
            "spec.outlierDetection.maxEjectionTime",
            "30s is shorter than baseEjectionTime (60s)",
        ),
        (
            "outlierDetection: {maxEjectionPercent: 101}",
            "spec.outlierDetection.maxEjectionPercent",
            "between 0 and 100",
        ),
        (
            "outlierDetection: {successRate: {minimumHosts: 0}}",
            "spec.outlierDetection.successRate.minimumHosts",
            "between 1 and 10000",
        ),
        (
            "outlierDetection: {successRate: {requestVolume: 0}}",
            "spec.outlierDetection.successRate.requestVolume",
            "between 1 and 1000000",
        ),
        (
            "outlierDetection: {successRate: {stdevFactor: 0}}",
            "spec.outlierDetection.successRate.stdevFactor",
            "between 0.001 and 100",
        ),
        (
            "outlierDetection: {successRate: {stdevFactor: 1.9001}}",
            "spec.outlierDetection.successRate.stdevFactor",
            "more than 3 decimals",
        ),
        (
            "circuitBreaker: {failurePercent: 0}",
            "spec.circuitBreaker.failurePercent",
            "between 1 and 100",
        ),
        (
            "circuitBreaker: {window: 0}",
            "spec.circuitBreaker.window",
            "between 1 and 10000",
        ),
        (
            "circuitBreaker: {window: 10, minimumCalls: 11}",
            "spec.circuitBreaker.minimumCalls",
            "between 1 and 10, not 11",
        ),
        (
            "circuitBreaker: {minimumCalls: 0}",
            "spec.circuitBreaker.minimumCalls",
            "between 1 and 100",
        ),
        (
            "circuitBreaker: {openFor: 0s}",
            "spec.circuitBreaker.openFor",
            "longer than 0s",
        ),
        (
            "circuitBreaker: {halfOpenCalls: 0}",
            "spec.circuitBreaker.halfOpenCalls",
            "between 1 and 100",
        ),
        (
            "connectionPool: {maxConnections: 0}",
            "spec.connectionPool.maxConnections",
            "between 1 and 4294967295",
        ),
        (
            "connectionPool: {maxPendingRequests: -1}",
            "spec.connectionPool.maxPendingRequests",
            "between 0 and 4294967295",
        ),
        (
            "connectionPool: {maxRequests: 4294967296}",
            "spec.connectionPool.maxRequests",
            "between 1 and 4294967295",
        ),
        (
            "connectionPool: {maxRetries: -1}",
            "spec.connectionPool.maxRetries",
            "between 0",
        ),
        (
            "loadBalancer: LeastRequest",
            "spec.loadBalancer",
            "allowed: PeakEWMA, RoundRobin",
        ),
        (
            "rateLimit: {requestsPerSecond: 0}",
            "spec.rateLimit.requestsPerSecond",
            "between 1 and 1000000",
        ),
        (
            "rateLimit: {requestsPerSecond: 10, burst: 0}",
            "spec.rateLimit.burst",
            "between 1 and 1000000",
        ),
        (
            "rateLimit: {burst: 10}",
            "spec.rateLimit.requestsPerSecond",
            "required field is missing",
        ),
        ("hedge: {delay: 0s}", "spec.hedge.delay", "longer than 0s"),
        (
            "hedge: {delay: 10ms, maxHedges: 4}",
            "spec.hedge.maxHedges",
            "between 1 and 3",
        ),
        (
            "hedge: {delay: 10ms, maxHedges: 0}",
            "spec.hedge.maxHedges",
            "between 1 and 3",
        ),
        ("fault: {}", "spec.fault", "set delay, abort or both"),
        (
            "fault: {delay: {fixedDelay: 0s}}",
            "spec.fault.delay.fixedDelay",
            "longer than 0s",
        ),
        (
            "fault: {delay: {fixedDelay: 1s, percent: 100.5}}",
            "spec.fault.delay.percent",
            "between 0 and 100, not 100.5",
        ),
        (
            "fault: {abort: {httpStatus: 503, percent: 0.0005}}",
            "spec.fault.abort.percent",
            "0.0005 has more than 3 decimals",
        ),
        (
            "fault: {abort: {httpStatus: 199}}",
            "spec.fault.abort.httpStatus",
            "between 200 and 599",
        ),
        (
            "fault: {abort: {httpStatus: 600}}",
            "spec.fault.abort.httpStatus",
            "between 200 and 599",
        ),
        (
            "fault: {abort: {httpStatus: 503, percent: -1}}",
            "spec.fault.abort.percent",
            "between 0 and 100",
        ),
        ("retries: {}", "spec.retries", "unknown field \"retries\""),
    ];
    for (fields, path, fragment) in rows {
        let found = problems(SERVICE, fields);
        let wanted = format!(" {path}: ");
        assert!(
            found
                .iter()
                .any(|p| p.contains(&wanted) && p.contains(fragment)),
            "{fields}: expected {path}: …{fragment}…; got {found:#?}"
        );
    }
}

#[test]
fn every_problem_of_a_policy_is_reported_at_once() {
    let found = problems(
        SERVICE,
        "retry: {attempts: 99, on: [nope]}\nfault: {delay: {fixedDelay: 0s}, abort: {httpStatus: 1}}",
    );
    let paths: Vec<&str> = found
        .iter()
        .map(|p| p.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        [
            "spec.retry.on[0]:",
            "spec.retry.attempts:",
            "spec.fault.delay.fixedDelay:",
            "spec.fault.abort.httpStatus:"
        ],
        "{found:#?}"
    );
}

#[test]
fn a_route_target_sets_only_what_a_route_can_change() {
    let route_ok = "retry: {on: [5xx]}\nrateLimit: {requestsPerSecond: 5}\nhedge: {delay: 20ms}\nfault: {abort: {httpStatus: 503}}";
    let loaded = load_docs(&policy_doc("p", ROUTE, route_ok)).unwrap();
    let policy = &loaded.policy.traffic_policies[0];
    assert_eq!(
        policy.target,
        TrafficTarget::Route {
            route: crate::policy::ObjectKey::new("shop", "web"),
            rule: None
        }
    );
    assert!(policy.settings.retry.is_some() && policy.settings.fault.is_some());

    let rows = [
        (
            "connectTimeout: 1s",
            "spec.connectTimeout",
            "belongs on a TrafficPolicy that targets a Service",
        ),
        (
            "idleTimeout: 1s",
            "spec.idleTimeout",
            "belongs on a TrafficPolicy that targets a Service",
        ),
        (
            "requestTimeout: 1s",
            "spec.requestTimeout",
            "timeouts.request",
        ),
        ("retryBudget: {}", "spec.retryBudget", "targets a Service"),
        (
            "outlierDetection: {}",
            "spec.outlierDetection",
            "targets a Service",
        ),
        (
            "circuitBreaker: {}",
            "spec.circuitBreaker",
            "targets a Service",
        ),
        (
            "connectionPool: {}",
            "spec.connectionPool",
            "targets a Service",
        ),
        (
            "loadBalancer: RoundRobin",
            "spec.loadBalancer",
            "targets a Service",
        ),
    ];
    for (fields, path, fragment) in rows {
        let found = problems(ROUTE, fields);
        assert!(
            found
                .iter()
                .any(|p| p.contains(&format!(" {path}: ")) && p.contains(fragment)),
            "{fields}: {found:#?}"
        );
    }
}

#[test]
fn targets_must_exist_and_be_claimed_once() {
    let rule = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, sectionName: reads}";
    let loaded = load_docs(&format!(
        "{}{}{}{}",
        policy_doc("whole", ROUTE, "hedge: {delay: 1s}"),
        policy_doc("reads", rule, "hedge: {delay: 2s}"),
        policy_doc("svc", SERVICE, ""),
        policy_doc("admin", "{name: web, sectionName: admin}", ""),
    ))
    .unwrap();
    let targets: Vec<String> = loaded
        .policy
        .traffic_policies
        .iter()
        .map(|p| format!("{} {:?}", p.key.name, p.target))
        .collect();
    assert_eq!(
        targets,
        [
            "admin Service { service: ObjectKey { namespace: \"shop\", name: \"web\" }, port: Some(9000) }",
            "reads Route { route: ObjectKey { namespace: \"shop\", name: \"web\" }, rule: Some(\"reads\") }",
            "svc Service { service: ObjectKey { namespace: \"shop\", name: \"web\" }, port: None }",
            "whole Route { route: ObjectKey { namespace: \"shop\", name: \"web\" }, rule: None }",
        ],
        "sectionName names a Service port by its name"
    );

    let rows = [
        (
            "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}",
            "spec.targetRef.name",
            "HTTPRoute shop/api does not exist",
        ),
        (
            "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, sectionName: writes}",
            "spec.targetRef.sectionName",
            "HTTPRoute shop/web has no rule named \"writes\" (its rules: reads)",
        ),
        (
            "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, port: 80}",
            "spec.targetRef.port",
            "an HTTPRoute target has no port",
        ),
        (
            "{kind: HTTPRoute, name: web}",
            "spec.targetRef",
            "or an HTTPRoute (group \"gateway.networking.k8s.io\", kind HTTPRoute), not HTTPRoute in group \"\"",
        ),
        (
            "{name: web, sectionName: metrics}",
            "spec.targetRef.sectionName",
            "Service shop/web has no port named \"metrics\"",
        ),
        (
            "{name: web, port: 80, sectionName: admin}",
            "spec.targetRef.sectionName",
            "port \"admin\" of Service shop/web is 9000, but port says 80",
        ),
        (
            "{name: web, port: 81}",
            "spec.targetRef.port",
            "Service shop/web has no port 81",
        ),
    ];
    for (target, path, fragment) in rows {
        let found = problems(target, "");
        assert!(
            found
                .iter()
                .any(|p| p.contains(&format!(" {path}: ")) && p.contains(fragment)),
            "{target}: {found:#?}"
        );
    }

    let twice = [
        (
            ROUTE,
            ROUTE,
            "HTTPRoute shop/web is already targeted by TrafficPolicy shop/a",
        ),
        (
            rule,
            rule,
            "rule \"reads\" of HTTPRoute shop/web is already targeted",
        ),
        (
            "{name: web, port: 9000}",
            "{name: web, sectionName: admin}",
            "port 9000 of Service shop/web is already targeted",
        ),
        (
            SERVICE,
            "{name: web}",
            "Service shop/web is already targeted",
        ),
    ];
    for (first, second, fragment) in twice {
        let found = load_docs(&format!(
            "{}{}",
            policy_doc("a", first, ""),
            policy_doc("b", second, "")
        ))
        .unwrap_err();
        assert!(
            found
                .iter()
                .any(|p| p.contains(" spec.targetRef: ") && p.contains(fragment)),
            "{first} + {second}: {found:#?}"
        );
    }
}

#[test]
fn retry_conditions_and_shares_parse_exactly() {
    for (name, code) in GRPC_STATUSES {
        assert_eq!(retry_on(name), Ok(RetryOn::Grpc(code)));
    }
    assert_eq!(retry_on("400"), Ok(RetryOn::Status(400)));
    assert_eq!(retry_on("599"), Ok(RetryOn::Status(599)));
    for bad in [
        "399",
        "600",
        "0503x",
        "",
        "Unavailable",
        "server-error",
        "99999",
    ] {
        assert!(retry_on(bad).is_err(), "{bad:?}");
    }
    let exact = [
        (0.5, 500),
        (0.001, 1),
        (0.3, 300),
        (10.0, 10_000),
        (99.999, 99_999),
        (100.0, 100_000),
        (0.0, 0),
    ];
    for (percent, per_100k) in exact {
        assert_eq!(thousandths(percent, 0.0, 100.0), Ok(per_100k), "{percent}");
    }
    for bad in [0.0001, 100.0001, -0.5, f64::NAN, f64::INFINITY, 12.3456] {
        assert!(thousandths(bad, 0.0, 100.0).is_err(), "{bad}");
    }
}

#[test]
fn gateway_api_retry_is_carried() {
    let route = "\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retries, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 9000}]
  rules:
  - backendRefs: [{name: web, port: 9000}]
    retry: {codes: [503, 502, 503]}
  - matches: [{path: {value: /a}}]
    backendRefs: [{name: web, port: 9000}]
    retry: {codes: [500], attempts: 0, backoff: 1s}
  - matches: [{path: {value: /b}}]
    backendRefs: [{name: web, port: 9000}]
    retry: {backoff: 100ms}
";
    let loaded = load_docs(route).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let rules = &loaded
        .policy
        .routes
        .iter()
        .find(|r| r.key.name == "retries")
        .unwrap()
        .rules;
    let retries: Vec<Option<RetryPolicy>> = rules.iter().map(|r| r.retry.clone()).collect();
    assert_eq!(
        retries,
        [
            retry(|r| {
                r.attempts = DEFAULT_RETRY_ATTEMPTS;
                r.on = vec![RetryOn::Status(503), RetryOn::Status(502)];
            }),
            retry(|r| {
                r.on = vec![RetryOn::Status(500)];
                r.backoff_base = Duration::from_secs(1);
                r.backoff_max = Duration::from_secs(1);
            }),
            retry(|r| {
                r.attempts = DEFAULT_RETRY_ATTEMPTS;
                r.backoff_base = Duration::from_millis(100);
            }),
        ]
    );
    for (retry, path, fragment) in [
        (
            "{codes: [200]}",
            "codes[0]",
            "200 must be between 400 and 599",
        ),
        ("{attempts: 11}", "attempts", "between 0 and 10, not 11"),
        ("{attempts: -1}", "attempts", "between 0 and 10"),
        ("{backoff: 1.5s}", "backoff", "is not a duration"),
    ] {
        let route = format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: \
             bad, namespace: shop}}\nspec:\n  parentRefs: [{{name: web, kind: Service, group: \
             \"\"}}]\n  rules:\n  - backendRefs: [{{name: web, port: 80}}]\n    retry: {retry}\n"
        );
        let found = load_docs(&route).unwrap_err();
        let wanted = format!(" spec.rules[0].retry.{path}: ");
        assert!(
            found
                .iter()
                .any(|p| p.contains(&wanted) && p.contains(fragment)),
            "{retry}: {found:#?}"
        );
    }
}

#[test]
fn inbound_policies_carry_a_checked_rate_limit() {
    let inbound = |fields: &str| {
        format!(
            "---\napiVersion: skiff.dev/v1alpha1\nkind: InboundPolicy\nmetadata: {{name: in, \
             namespace: shop}}\nspec:\n  rateLimit: {fields}\n"
        )
    };
    let loaded = load_docs(&inbound("{requestsPerSecond: 50}")).unwrap();
    assert_eq!(
        loaded.policy.inbound_policies[0].rate_limit,
        Some(RateLimit {
            requests_per_second: 50,
            burst: 50
        })
    );
    for (fields, path, fragment) in [
        (
            "{requestsPerSecond: 0}",
            "spec.rateLimit.requestsPerSecond",
            "between 1 and 1000000",
        ),
        (
            "{requestsPerSecond: 5, burst: 1000001}",
            "spec.rateLimit.burst",
            "between 1 and 1000000",
        ),
    ] {
        let found = load_docs(&inbound(fields)).unwrap_err();
        assert!(
            found
                .iter()
                .any(|p| p.contains(&format!(" {path}: ")) && p.contains(fragment)),
            "{fields}: {found:#?}"
        );
    }
}
