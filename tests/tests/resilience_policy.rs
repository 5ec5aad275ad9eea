//! TrafficPolicy and InboundPolicy resilience fields end to end, one documented behaviour per
//! test (docs/policy.md, TrafficPolicy and InboundPolicy `rateLimit`): fault injection per
//! route, rate limits (caller and inbound), retries that are safe by default, per-try timeouts,
//! hedging, the circuit breaker's open answer and load shedding.
//!
//! Every test builds its own mesh with [`Lab`]: a client pod whose sidecar reads the policy
//! files (local mode), and backends running `fault_server.py`, each answering every request
//! with one status after one delay and recording (in a ledger file) what reached it, with its
//! `x-skiff-attempt` header and body size. The client is curl; every answer is read as
//! (status, `x-skiff-error`, `x-backend`). Assertions are on counts and headers, with bounds
//! derived from the policy's numbers; no timing is asserted.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use skiff_tests::policy::{bootstrap_token, render_workload};
use skiff_tests::{json, sh_quote, HttpRoute, Mesh, Pod, RouteMatch, RouteRule, Service, Sidecar};

/// The port every backend listens on; Services map port 80 to it.
const APP_PORT: u16 = 8080;
const SERVICE_PORT: u16 = 80;

/// Client sidecar metrics (proxy/src/metrics.rs).
const RETRIES: &str = "skiff_retries_total";
const BREAKER_STATE: &str = "skiff_circuit_breaker_state";
const PROXY_ERRORS: &str = "skiff_proxy_errors_total";

/// A mesh with a client pod, and what a test adds to it: backends, Services, routes and
/// policies (all written before the sidecars start: a local-mode sidecar reads its policy
/// once), then sidecars and traffic.
struct Lab {
    mesh: Mesh,
    client: Pod,
}

/// A pod running `fault_server.py` on [`APP_PORT`] (failing all of its requests or none),
/// without a sidecar (the caller's sidecar applies TrafficPolicies); its ledger lists every
/// request that reached it.
struct Backend {
    pod: Pod,
    name: String,
    ledger: PathBuf,
}

/// One request as a backend recorded it.
#[derive(Debug)]
struct Seen {
    method: String,
    /// `x-skiff-attempt`: `None` on a first attempt.
    attempt: Option<u64>,
    body_bytes: u64,
}

/// One answer as curl saw it.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// `x-skiff-error`, empty when the proxy did not make the answer.
    error: String,
    /// `x-backend`, empty when no backend made it.
    backend: String,
}

impl Lab {
    fn new(label: &str) -> Lab {
        let mesh = Mesh::new(label);
        let client = mesh.pod("client");
        Lab { mesh, client }
    }

    /// Starts a backend pod answering `status` after `delay_ms` to every request.
    fn backend(&self, name: &str, status: u16, delay_ms: u32) -> Backend {
        let pod = self.mesh.pod(name);
        let ledger = self.mesh.dir().join(format!("ledger-{name}.jsonl"));
        let (port, delay) = (APP_PORT.to_string(), delay_ms.to_string());
        // Every request fails with `status`, or none does.
        let (fail_percent, fail_status) = match status {
            200 => ("0".to_string(), "503".to_string()),
            status => ("100".to_string(), status.to_string()),
        };
        pod.spawn_python(
            "backend",
            "fault_server.py",
            &[
                "--port",
                &port,
                "--name",
                name,
                "--ledger",
                ledger.to_str().unwrap(),
                "--fail-percent",
                &fail_percent,
                "--fail-status",
                &fail_status,
                "--delay-ms",
                &delay,
            ],
        );
        pod.wait_listening(APP_PORT);
        Backend {
            pod,
            name: name.to_string(),
            ledger,
        }
    }

    /// Declares Service `name` (port 80 → 8080) with `backends` as its endpoints.
    fn service(&self, name: &str, backends: &[&Backend]) -> Service {
        backends
            .iter()
            .fold(
                self.mesh.service(name).port(SERVICE_PORT, APP_PORT),
                |service, backend| service.backend(&backend.pod),
            )
            .apply()
    }

    /// Writes a policy file (YAML as a user would write it).
    fn policy(&self, file: &str, yaml: &str) {
        self.mesh.write_policy(file, yaml);
    }

    fn route(&self, route: &HttpRoute) {
        self.mesh.write_policy(&route.file_name(), &route.render());
    }

    /// Installs the client's sidecar, with extra `skiff-proxy run` arguments.
    fn client_sidecar(&self, run_args: &[&str]) -> Sidecar {
        self.client.sidecar().run_args(run_args).install()
    }

    /// Runs curl in the client pod with `options` on `url` (which may be a curl glob such as
    /// `http://VIP/x?n=[1-200]`: one request each) and returns every answer.
    fn curl(&self, options: &str, url: &str) -> Vec<Reply> {
        let script = format!(
            "curl -sS --no-progress-meter --max-time 30 -o /dev/null -H 'Expect:' \
             -w '%{{http_code}}|%header{{x-skiff-error}}|%header{{x-backend}}\\n' {options} {}",
            sh_quote(url)
        );
        let out = self.client.exec(&script);
        let replies: Vec<Reply> = out
            .stdout
            .lines()
            .map(|line| {
                let mut fields = line.splitn(3, '|');
                let mut next = || fields.next().unwrap_or_default().trim().to_string();
                let status = next();
                Reply {
                    status: status
                        .parse()
                        .unwrap_or_else(|_| panic!("curl printed {line:?}: {out}")),
                    error: next(),
                    backend: next(),
                }
            })
            .collect();
        assert!(
            !replies.is_empty() && replies.iter().all(|r| r.status != 0),
            "curl got no HTTP answer for some request ({options} {url}): {out}"
        );
        replies
    }
}

impl Backend {
    /// Every request recorded with `x-request-id: id`, in arrival order.
    fn seen(&self, id: &str) -> Vec<Seen> {
        let text = std::fs::read_to_string(&self.ledger).unwrap_or_default();
        text.lines()
            .map(json)
            .filter(|entry| entry["id"] == id)
            .map(|entry| Seen {
                method: entry["method"].as_str().unwrap_or_default().to_string(),
                attempt: entry["attempt"].as_u64(),
                body_bytes: entry["body_bytes"].as_u64().unwrap_or_default(),
            })
            .collect()
    }
}

/// How many answers had each (status, `x-skiff-error`, `x-backend`), for messages and checks.
fn tally(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for reply in replies {
        let key = format!(
            "{} error={:?} backend={:?}",
            reply.status, reply.error, reply.backend
        );
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// How many answers had `status`, `x-skiff-error: error` (empty: none) and `x-backend:
/// backend` (empty: none).
fn count(replies: &[Reply], status: u16, error: &str, backend: &str) -> usize {
    replies
        .iter()
        .filter(|r| r.status == status && r.error == error && r.backend == backend)
        .count()
}

/// A TrafficPolicy in the test namespace: `target` is its `targetRef` (flow YAML), `fields`
/// the other fields of its spec, one per line.
fn traffic_policy(name: &str, target: &str, fields: &[&str]) -> String {
    let mut yaml = format!(
        "apiVersion: skiff.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}, \
         namespace: default}}\nspec:\n  targetRef: {target}\n"
    );
    for field in fields {
        yaml.push_str(&format!("  {field}\n"));
    }
    yaml
}

fn service_target(service: &Service) -> String {
    format!("{{kind: Service, name: {}}}", service.name())
}

fn route_target(route: &str) -> String {
    format!("{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {route}}}")
}

/// An HTTPRoute sending the paths under `prefix` to `service`, with an optional
/// `timeouts.request`.
fn prefix_route(name: &str, service: &Service, prefix: &str, timeout: Option<&str>) -> HttpRoute {
    let mut rule = RouteRule::new()
        .matching(RouteMatch::path_prefix(prefix))
        .backend(service, 1);
    if let Some(timeout) = timeout {
        rule = rule.timeout(timeout);
    }
    HttpRoute::new(name).parent(service).rule(rule)
}

/// `destination` label of the client's resilience metrics: `namespace/name:port`.
fn destination(service: &Service) -> String {
    format!("{}:{SERVICE_PORT}", service.id())
}

#[test]
fn fault_abort_answers_about_half_of_one_routes_requests_and_spares_another_route() {
    let lab = Lab::new("rp-fault-abort");
    let app = lab.backend("app", 200, 0);
    let shop = lab.service("shop", &[&app]);
    lab.route(&prefix_route("faulty", &shop, "/faulty", None));
    lab.route(&prefix_route("calm", &shop, "/calm", None));
    lab.policy(
        "traffic-faulty.yaml",
        &traffic_policy(
            "faulty",
            &route_target("faulty"),
            &["fault: {abort: {httpStatus: 418, percent: 50}}"],
        ),
    );
    let _sidecar = lab.client_sidecar(&[]);

    let total = 200;
    let replies = lab.curl(
        "-H 'x-request-id: faulty'",
        &format!("http://{}/faulty?n=[1-{total}]", shop.vip()),
    );
    assert_eq!(replies.len(), total, "{:?}", tally(&replies));
    let aborted = count(&replies, 418, "fault-injected", "");
    let passed = count(&replies, 200, "", "app");
    assert_eq!(
        aborted + passed,
        total,
        "every answer is the injected 418 or the backend's 200: {:?}",
        tally(&replies)
    );
    // Binomial(200, 0.5): standard deviation ~7; 60..=140 is more than 5 of them either way.
    assert!(
        (60..=140).contains(&aborted),
        "{aborted} of {total} aborted with 418, expected about half: {:?}",
        tally(&replies)
    );
    assert_eq!(
        app.seen("faulty").len(),
        passed,
        "the backend saw exactly the requests that were not aborted"
    );

    let replies = lab.curl(
        "-H 'x-request-id: calm'",
        &format!("http://{}/calm?n=[1-50]", shop.vip()),
    );
    assert_eq!(
        count(&replies, 200, "", "app"),
        50,
        "a route without the policy is not faulted: {:?}",
        tally(&replies)
    );
    assert_eq!(app.seen("calm").len(), 50);
}

#[test]
fn fault_delay_runs_into_the_route_request_timeout() {
    let lab = Lab::new("rp-fault-delay");
    let app = lab.backend("app", 200, 0);
    let shop = lab.service("shop", &[&app]);
    // Every request is held 300 ms before it is sent, and the route allows 100 ms in all.
    lab.route(&prefix_route("delayed", &shop, "/delayed", Some("100ms")));
    lab.route(&prefix_route("prompt", &shop, "/prompt", Some("100ms")));
    lab.policy(
        "traffic-delayed.yaml",
        &traffic_policy(
            "delayed",
            &route_target("delayed"),
            &["fault: {delay: {fixedDelay: 300ms, percent: 100}}"],
        ),
    );
    let _sidecar = lab.client_sidecar(&[]);

    let replies = lab.curl(
        "-H 'x-request-id: delayed'",
        &format!("http://{}/delayed?n=[1-3]", shop.vip()),
    );
    assert_eq!(
        count(&replies, 504, "request-timeout", ""),
        3,
        "a 300 ms fault delay under a 100 ms request timeout: {:?}",
        tally(&replies)
    );
    assert_eq!(
        app.seen("delayed").len(),
        0,
        "the timeout expired during the delay, before the requests were sent"
    );
    // The same timeout without the delay is no obstacle (the 504s above come from the delay).
    let replies = lab.curl(
        "-H 'x-request-id: prompt'",
        &format!("http://{}/prompt?n=[1-3]", shop.vip()),
    );
    assert_eq!(count(&replies, 200, "", "app"), 3, "{:?}", tally(&replies));
}

/// Checks a burst against a token bucket of `burst` tokens refilled at `per_second`: at least
/// the bucket's capacity passes (it starts full), at most that plus the refill over the
/// burst's duration (measured around the whole curl run, which only loosens the bound) plus
/// one for rounding; every other request got 429 `rate-limited` and never reached `backend`.
fn assert_rate_limited(
    replies: &[Reply],
    total: usize,
    elapsed_secs: f64,
    burst: usize,
    per_second: f64,
    backend: &Backend,
    id: &str,
) {
    assert_eq!(replies.len(), total, "{:?}", tally(replies));
    let passed = count(replies, 200, "", &backend.name);
    let limited = count(replies, 429, "rate-limited", "");
    let most = burst + (elapsed_secs * per_second).ceil() as usize + 1;
    assert_eq!(
        passed + limited,
        total,
        "every answer is the backend's 200 or 429 rate-limited: {:?}",
        tally(replies)
    );
    assert!(
        (burst..=most).contains(&passed),
        "{passed} of {total} passed in {elapsed_secs:.2} s; the bucket allows {burst}..={most}: \
         {:?}",
        tally(replies)
    );
    assert_eq!(
        backend.seen(id).len(),
        passed,
        "the limited requests never reached the backend"
    );
}

#[test]
fn service_rate_limit_answers_429_beyond_the_callers_bucket() {
    let lab = Lab::new("rp-rate-limit");
    let app = lab.backend("app", 200, 0);
    let limited = lab.service("limited", &[&app]);
    lab.policy(
        "traffic-limited.yaml",
        &traffic_policy(
            "limited",
            &service_target(&limited),
            &["rateLimit: {requestsPerSecond: 5, burst: 5}"],
        ),
    );
    let sidecar = lab.client_sidecar(&[]);

    let total = 40;
    let started = Instant::now();
    let replies = lab.curl(
        "-H 'x-request-id: burst'",
        &format!("http://{}/burst?n=[1-{total}]", limited.vip()),
    );
    let elapsed = started.elapsed().as_secs_f64();
    assert_rate_limited(&replies, total, elapsed, 5, 5.0, &app, "burst");
    let limited_count = count(&replies, 429, "rate-limited", "") as f64;
    assert_eq!(
        sidecar.metric(PROXY_ERRORS, &[("reason", "rate-limited")]),
        limited_count,
        "the caller's sidecar counted its 429s"
    );
}

#[test]
fn inbound_rate_limit_answers_429_from_the_servers_sidecar() {
    let lab = Lab::new("rp-inbound-limit");
    let guarded = lab.backend("guarded", 200, 0);
    let service = lab.service("guarded", &[&guarded]);
    // The InboundPolicy targets the server's Workload, which local mode needs declared.
    let addresses = [IpAddr::V4(guarded.pod.ip())];
    let token = bootstrap_token("default", "guarded");
    lab.policy(
        "workload-guarded.yaml",
        &render_workload("default", "guarded", "guarded", &addresses, &token),
    );
    lab.policy(
        "inbound-guarded.yaml",
        "apiVersion: skiff.dev/v1alpha1\nkind: InboundPolicy\nmetadata: {name: guarded, \
         namespace: default}\nspec:\n  targetRef: {group: skiff.dev, kind: Workload, name: \
         guarded}\n  rateLimit: {requestsPerSecond: 5, burst: 5}\n",
    );
    let server_sidecar = guarded.pod.sidecar().install();
    let client_sidecar = lab.client_sidecar(&[]);

    let total = 40;
    let started = Instant::now();
    let replies = lab.curl(
        "-H 'x-request-id: inbound'",
        &format!("http://{}/inbound?n=[1-{total}]", service.vip()),
    );
    let elapsed = started.elapsed().as_secs_f64();
    assert_rate_limited(&replies, total, elapsed, 5, 5.0, &guarded, "inbound");
    let limited_count = count(&replies, 429, "rate-limited", "") as f64;
    assert_eq!(
        server_sidecar.metric(
            PROXY_ERRORS,
            &[("direction", "inbound"), ("reason", "rate-limited")]
        ),
        limited_count,
        "the server's sidecar made the 429s"
    );
    assert_eq!(
        client_sidecar.metric(PROXY_ERRORS, &[("reason", "rate-limited")]),
        0.0,
        "the caller has no limit of its own"
    );
}

#[test]
fn without_a_retry_policy_a_failed_request_is_passed_on_and_sent_once() {
    let lab = Lab::new("rp-no-retry");
    let down = lab.backend("down", 503, 0);
    let service = lab.service("down", &[&down]);
    let _sidecar = lab.client_sidecar(&[]);

    // Below the default breaker's 20 minimum calls, so every request reaches the backend.
    let cases = [
        ("GET", "get", 5, ""),
        ("POST", "post", 2, "--data-binary post"),
        ("PUT", "put", 2, "--data-binary put"),
    ];
    for (method, id, n, body) in cases {
        let replies = lab.curl(
            &format!("-X {method} -H 'x-request-id: {id}' {body}"),
            &format!("http://{}/{id}?n=[1-{n}]", service.vip()),
        );
        assert_eq!(
            count(&replies, 503, "", "down"),
            n,
            "{method}: the backend's own 503, not a proxy answer: {:?}",
            tally(&replies)
        );
        let seen = down.seen(id);
        assert_eq!(
            seen.len(),
            n,
            "{method}: each request reached the backend exactly once: {seen:?}"
        );
        assert!(
            seen.iter()
                .all(|s| s.attempt.is_none() && s.method == method),
            "{method}: no retry marks: {seen:?}"
        );
    }
}

#[test]
fn retries_repeat_idempotent_or_opted_in_requests_with_their_whole_body() {
    let lab = Lab::new("rp-retry");
    let down = lab.backend("down", 503, 0);
    let retried = lab.service("retried", &[&down]);
    let opted_in = lab.service("opted-in", &[&down]);
    lab.policy(
        "traffic-retried.yaml",
        &traffic_policy(
            "retried",
            &service_target(&retried),
            &["retry: {on: [\"5xx\"], attempts: 2}"],
        ),
    );
    lab.policy(
        "traffic-opted-in.yaml",
        &traffic_policy(
            "opted-in",
            &service_target(&opted_in),
            &["retry: {on: [\"5xx\"], attempts: 2, nonIdempotent: true}"],
        ),
    );
    let small = lab.mesh.dir().join("body-10k");
    let large = lab.mesh.dir().join("body-100k");
    std::fs::write(&small, vec![b's'; 10 * 1024]).unwrap();
    std::fs::write(&large, vec![b'l'; 100 * 1024]).unwrap();
    let _sidecar = lab.client_sidecar(&[]);

    // (service, method, id, body file, attempts expected, why)
    let cases = [
        (
            &retried,
            "GET",
            "get",
            None,
            3,
            "an idempotent GET: first try + 2 retries",
        ),
        (
            &retried,
            "POST",
            "post",
            None,
            1,
            "a POST is not retried without the opt-in",
        ),
        (
            &opted_in,
            "POST",
            "post-opted-in",
            None,
            3,
            "nonIdempotent: true retries a POST",
        ),
        (
            &retried,
            "PUT",
            "put-10k",
            Some(&small),
            3,
            "a 10 KiB body is kept for replay",
        ),
        (
            &retried,
            "PUT",
            "put-100k",
            Some(&large),
            1,
            "a 100 KiB body is over bodyLimitBytes",
        ),
    ];
    for (service, method, id, body, attempts, why) in cases {
        let body_option = body.map_or(String::new(), |path| {
            format!("--data-binary @{}", path.display())
        });
        let replies = lab.curl(
            &format!("-X {method} -H 'x-request-id: {id}' {body_option}"),
            &format!("http://{}/{id}", service.vip()),
        );
        assert_eq!(
            count(&replies, 503, "", "down"),
            1,
            "{why}: the caller gets the last attempt's answer: {:?}",
            tally(&replies)
        );
        let seen = down.seen(id);
        let marks: Vec<Option<u64>> = seen.iter().map(|s| s.attempt).collect();
        let expected: Vec<Option<u64>> = (1..=attempts)
            .map(|n| (n > 1).then_some(n as u64))
            .collect();
        assert_eq!(
            marks, expected,
            "{why}: x-skiff-attempt of each attempt the backend saw: {seen:?}"
        );
        let length = body.map_or(0, |path| std::fs::metadata(path).unwrap().len());
        assert!(
            seen.iter()
                .all(|s| s.method == method && s.body_bytes == length),
            "{why}: every attempt carries the whole {length}-byte body: {seen:?}"
        );
    }
}

#[test]
fn per_try_timeout_moves_a_slow_attempt_to_another_endpoint_or_answers_504() {
    let lab = Lab::new("rp-per-try");
    let slow = lab.backend("slow", 200, 2000);
    let fast = lab.backend("fast", 200, 0);
    let both = lab.service("both", &[&slow, &fast]);
    let slow_only = lab.service("slow-only", &[&slow]);
    // Round-robin, so first attempts do land on the slow endpoint.
    lab.policy(
        "traffic-both.yaml",
        &traffic_policy(
            "both",
            &service_target(&both),
            &[
                "loadBalancer: RoundRobin",
                "retry: {on: [gateway-error], attempts: 1, perTryTimeout: 200ms}",
            ],
        ),
    );
    lab.policy(
        "traffic-slow-only.yaml",
        &traffic_policy(
            "slow-only",
            &service_target(&slow_only),
            &["retry: {attempts: 0, perTryTimeout: 200ms}"],
        ),
    );
    let sidecar = lab.client_sidecar(&[]);

    let replies = lab.curl(
        "-H 'x-request-id: both'",
        &format!("http://{}/both?n=[1-4]", both.vip()),
    );
    assert_eq!(
        count(&replies, 200, "", "fast"),
        4,
        "every request is answered by the fast endpoint: {:?}",
        tally(&replies)
    );
    let slow_seen = slow.seen("both");
    let retried_on_fast = fast
        .seen("both")
        .iter()
        .filter(|s| s.attempt == Some(2))
        .count();
    assert!(
        !slow_seen.is_empty() && slow_seen.iter().all(|s| s.attempt.is_none()),
        "round-robin sends some first attempts to the slow endpoint: {slow_seen:?}"
    );
    assert_eq!(
        retried_on_fast,
        slow_seen.len(),
        "each attempt cut short on the slow endpoint was retried (x-skiff-attempt: 2) on the \
         fast one: fast saw {:?}",
        fast.seen("both")
    );
    assert!(
        sidecar.metric(
            RETRIES,
            &[
                ("destination", &destination(&both)),
                ("reason", "configured")
            ]
        ) >= slow_seen.len() as f64,
        "{}",
        sidecar.metrics().describe(RETRIES)
    );

    let replies = lab.curl(
        "-H 'x-request-id: slow-only'",
        &format!("http://{}/slow-only?n=[1-2]", slow_only.vip()),
    );
    assert_eq!(
        count(&replies, 504, "per-try-timeout", ""),
        2,
        "no retries and only the slow endpoint: {:?}",
        tally(&replies)
    );
    assert_eq!(
        slow.seen("slow-only").len(),
        2,
        "each request was tried once"
    );
}

#[test]
fn hedging_answers_from_the_fast_endpoint_when_the_first_attempt_is_slow() {
    let lab = Lab::new("rp-hedge");
    let slow = lab.backend("slow", 200, 1000);
    let fast = lab.backend("fast", 200, 0);
    let hedged = lab.service("hedged", &[&slow, &fast]);
    // Round-robin, so first attempts do land on the slow endpoint.
    lab.policy(
        "traffic-hedged.yaml",
        &traffic_policy(
            "hedged",
            &service_target(&hedged),
            &["loadBalancer: RoundRobin", "hedge: {delay: 100ms}"],
        ),
    );
    let sidecar = lab.client_sidecar(&[]);

    let total = 10;
    let replies = lab.curl(
        "-H 'x-request-id: hedged'",
        &format!("http://{}/hedged?n=[1-{total}]", hedged.vip()),
    );
    let from_fast = count(&replies, 200, "", "fast");
    let from_slow = count(&replies, 200, "", "slow");
    assert_eq!(from_fast + from_slow, total, "{:?}", tally(&replies));
    // A first attempt on the slow endpoint is hedged to the fast one after 100 ms; the slow
    // one wins only if the fast one takes 900 ms more. Slack: 2 of 10.
    assert!(
        from_fast >= total - 2,
        "only {from_fast} of {total} answered by the fast endpoint: {:?}",
        tally(&replies)
    );
    let hedges = sidecar.metric(
        RETRIES,
        &[("destination", &destination(&hedged)), ("reason", "hedge")],
    );
    assert!(
        hedges > 0.0,
        "no hedge counted:\n{}",
        sidecar.metrics().describe(RETRIES)
    );
    let marks: Vec<Option<u64>> = fast.seen("hedged").iter().map(|s| s.attempt).collect();
    assert!(
        marks.contains(&Some(2)) && marks.iter().all(|m| m.is_none() || *m == Some(2)),
        "hedges to the fast endpoint carry x-skiff-attempt: 2 (maxHedges 1): {marks:?}"
    );
}

#[test]
fn an_open_circuit_breaker_answers_503_without_calling_the_backend() {
    let lab = Lab::new("rp-breaker");
    let broken = lab.backend("broken", 500, 0);
    let service = lab.service("broken", &[&broken]);
    lab.policy(
        "traffic-broken.yaml",
        &traffic_policy(
            "broken",
            &service_target(&service),
            &["circuitBreaker: {failurePercent: 50, window: 10, minimumCalls: 10, openFor: 30s}"],
        ),
    );
    let sidecar = lab.client_sidecar(&[]);

    let url = format!("http://{}/calls?n=[1-10]", service.vip());
    let replies = lab.curl("-H 'x-request-id: calls'", &url);
    assert_eq!(
        count(&replies, 500, "", "broken"),
        10,
        "the first 10 calls (minimumCalls) reach the backend: {:?}",
        tally(&replies)
    );
    assert_eq!(broken.seen("calls").len(), 10);

    // 10 of the last 10 calls failed: open for 30 s.
    let replies = lab.curl("-H 'x-request-id: calls'", &url);
    assert_eq!(
        count(&replies, 503, "circuit-open", ""),
        10,
        "the open breaker answers at once: {:?}",
        tally(&replies)
    );
    assert_eq!(
        broken.seen("calls").len(),
        10,
        "no call reached the backend while the breaker was open"
    );
    let metrics = sidecar.metrics();
    let label = destination(&service);
    let state: Vec<f64> = metrics
        .matching(BREAKER_STATE, &[("destination", &label)])
        .map(|s| s.value)
        .collect();
    assert_eq!(
        state,
        vec![1.0],
        "{BREAKER_STATE}{{destination={label:?}}} (1 = open):\n{}",
        metrics.describe(BREAKER_STATE)
    );
}

#[test]
fn a_sidecar_at_its_in_flight_cap_sheds_new_requests() {
    let lab = Lab::new("rp-shed");
    let slow = lab.backend("slow", 200, 1000);
    let service = lab.service("slow", &[&slow]);
    let _sidecar = lab.client_sidecar(&["--max-requests-in-flight", "2"]);

    // 10 at once; each admitted request holds its place for the backend's 1 s.
    let total = 10;
    let replies = lab.curl(
        "-H 'x-request-id: crowd' -Z --parallel-immediate --parallel-max 10",
        &format!("http://{}/crowd?n=[1-{total}]", service.vip()),
    );
    let served = count(&replies, 200, "", "slow");
    let shed = count(&replies, 503, "overloaded", "");
    assert_eq!(
        served + shed,
        total,
        "every answer is the backend's 200 or 503 overloaded: {:?}",
        tally(&replies)
    );
    assert!(
        served >= 1 && shed >= 1,
        "{served} served and {shed} shed of {total} concurrent requests with a cap of 2"
    );
    assert_eq!(
        slow.seen("crowd").len(),
        served,
        "shed requests never reached the backend"
    );
}
