//! Resilience end to end (DESIGN.md §6, issue 6): three backends running `fault_server.py`
//! behind Service `echo`, each with its sidecar, and a client pod whose sidecar (local mode,
//! policy files) carries steady load from `ledger_client.py`. Real faults, injected while the
//! load runs: a backend pod killed, a backend failing half its requests, a total outage and its
//! recovery, a slow backend, and a battery of crashes, resets, slowness, an outage and endpoint
//! edits whose every request is checked against the backends' ledgers.
//!
//! Assertions are on what the client saw (every request is classified: answered, refused by the
//! proxy with `x-skiff-error`, failed by the backend, or of unknown fate), on the ledgers (what
//! the backends executed), and on the client sidecar's metrics. Bounds derive from the numbers
//! in the policy, with the slack said next to them; load runs a fixed number of requests and
//! faults are placed by progress, so no timing is asserted anywhere.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use skiff_tests::fault::{self, FaultServer, LoadClient, LoadSummary};
use skiff_tests::{eventually, Mesh, Metrics, Pod, Service, Sidecar};

// Metrics of the client sidecar (proxy/src/metrics.rs), each labelled with `destination`
// (`namespace/name:port`). Retries also carry a `reason`: `nothing-sent` (automatic: connect
// failure, refused stream), `configured`, `hedge`.
const RETRIES: &str = "skiff_retries_total";
/// Retries (and hedges) not sent because the budget (or the retries bulkhead) was spent.
const RETRIES_REFUSED: &str = "skiff_retries_refused_total";
const EJECTIONS: &str = "skiff_outlier_ejections_total";
const EJECTED: &str = "skiff_ejected_endpoints";
const BREAKER_STATE: &str = "skiff_circuit_breaker_state";
const BREAKER_TRANSITIONS: &str = "skiff_circuit_breaker_transitions_total";
/// Values of `skiff_circuit_breaker_state`.
const CLOSED: f64 = 0.0;
const OPEN: f64 = 1.0;

/// The port every backend listens on (the Service's target port) and the Service's port.
const APP_PORT: u16 = 8080;
const SERVICE_PORT: u16 = 80;

/// The retry budget every policy here states (DESIGN.md §6's defaults, written out so the
/// bounds below visibly derive from them).
const RETRY_BUDGET: &str = "  retryBudget: {percent: 20, minPerSecond: 10, window: 10s}\n";
const BUDGET_PERCENT: f64 = 20.0;
const BUDGET_MIN_PER_SECOND: f64 = 10.0;
const BUDGET_WINDOW_SECS: f64 = 10.0;

/// How long any one load run may take before the test gives up on it (it normally takes
/// `requests / rate` seconds).
const RUN_CAP_SECS: &str = "150";

/// The most retries the budget allows for `requests` requests (those of the run, and of any run
/// that ended less than a window before it) over `secs` seconds: the share of the requests, the
/// per-second floor over the run plus one whole window (a budget may hold a
/// window's worth of the floor in reserve from the start, as Finagle's and Linkerd's do), and
/// 5 for retries of requests that straddle the edges of the measurement.
fn retry_allowance(requests: u64, secs: f64) -> f64 {
    BUDGET_PERCENT / 100.0 * requests as f64
        + BUDGET_MIN_PER_SECOND * (secs + BUDGET_WINDOW_SECS)
        + 5.0
}

/// One backend pod: the fault server and the sidecar in front of it.
struct Backend {
    server: FaultServer,
    /// Replaced when the test kills the pod and starts it again.
    sidecar: Mutex<Sidecar>,
}

/// The mesh every scenario uses: `backends` behind Service `echo` (VIP:80 → 8080), a
/// TrafficPolicy for `echo`, and a client pod with a sidecar. Sidecars log at `info`: tens of
/// thousands of per-request debug lines would only slow a debug build down.
struct Fleet {
    mesh: Mesh,
    echo: Service,
    backends: Vec<Backend>,
    client: Pod,
    client_sidecar: Sidecar,
    /// Load runs so far, to name their files.
    runs: Mutex<u32>,
}

impl Fleet {
    /// Starts one backend per entry of `faults` (the fault server's flags for it), declares
    /// the Service over all of them and `TrafficPolicy` `echo` with `spec` (YAML lines below
    /// `spec:` besides `targetRef`, indented by two), then installs every sidecar.
    fn new(label: &str, faults: &[&[&str]], spec: &str) -> Fleet {
        let mesh = Mesh::new(label);
        let pods: Vec<Pod> = (0..faults.len())
            .map(|i| mesh.pod(&format!("backend-{i}")))
            .collect();
        let client = mesh.pod("client");
        let mut service = mesh.service("echo").port(SERVICE_PORT, APP_PORT);
        for pod in &pods {
            service = service.backend(pod);
        }
        let echo = service.apply();
        mesh.write_policy("traffic-echo.yaml", &traffic_policy(spec));
        let backends = pods
            .iter()
            .zip(faults)
            .map(|(pod, flags)| {
                let ledger = mesh.dir().join(format!("{}.ledger", pod.name()));
                let server = FaultServer::start(pod, APP_PORT, &ledger, flags);
                let sidecar = Mutex::new(pod.sidecar().log_filter("info").install());
                Backend { server, sidecar }
            })
            .collect();
        let client_sidecar = client.sidecar().log_filter("info").install();
        Fleet {
            mesh,
            echo,
            backends,
            client,
            client_sidecar,
            runs: Mutex::new(0),
        }
    }

    fn server(&self, i: usize) -> &FaultServer {
        &self.backends[i].server
    }

    /// Starts `ledger_client.py` in the client pod against the Service with `args`; its summary
    /// and per-request outcomes go to the mesh's temp dir.
    fn load(&self, phase: &str, args: &[&str]) -> Load {
        let run = {
            let mut runs = self.runs.lock().unwrap();
            *runs += 1;
            *runs
        };
        let summary = self.mesh.dir().join(format!("load-{run}-{phase}.json"));
        let outcomes = self.mesh.dir().join(format!("load-{run}-{phase}.outcomes"));
        let vip = self.echo.vip().to_string();
        let port = SERVICE_PORT.to_string();
        let prefix = format!("{phase}{run}");
        let mut argv = vec![
            "--host",
            vip.as_str(),
            "--port",
            port.as_str(),
            "--id-prefix",
            prefix.as_str(),
            "--outcomes",
            outcomes.to_str().unwrap(),
            "--duration",
            RUN_CAP_SECS,
        ];
        argv.extend_from_slice(args);
        let requests = flag(args, "--requests");
        Load {
            client: LoadClient::spawn(&self.client, &format!("load-{phase}"), &summary, &argv),
            requests,
            outcomes,
        }
    }

    /// The client sidecar's metrics.
    fn metrics(&self) -> Metrics {
        self.client_sidecar.metrics()
    }

    /// Sum of `name{destination="default/echo:80", labels…}` on the client sidecar.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        service_metric(&self.metrics(), &self.echo, name, labels)
    }

    /// For failure messages: the client sidecar's resilience metrics for `echo` and the
    /// endpoints it knows (admin `/endpoints`).
    fn diagnostics(&self) -> String {
        let metrics = self.metrics();
        let mut out = String::new();
        for name in [
            RETRIES,
            EJECTIONS,
            EJECTED,
            BREAKER_STATE,
            BREAKER_TRANSITIONS,
        ] {
            out.push_str(&metrics.describe(name));
            out.push('\n');
        }
        let endpoints = self
            .client
            .exec("curl -sS --max-time 10 http://127.0.0.1:15000/endpoints");
        out.push_str(&format!("/endpoints: {}", endpoints.stdout));
        out
    }

    /// Kills backend `i` as a crash of its pod would: its sidecar and its app, SIGKILL.
    fn kill_pod(&self, i: usize) {
        let sidecar = self.backends[i].sidecar.lock().unwrap();
        sidecar.proc().signal("KILL");
        sidecar.proc().wait_exit(Duration::from_secs(10));
        self.server(i).kill();
    }

    /// Starts backend `i`'s app and sidecar again (after [`Fleet::kill_pod`]).
    fn restart_pod(&self, i: usize) {
        let backend = &self.backends[i];
        backend.server.restart();
        let pod = backend.server.pod();
        *backend.sidecar.lock().unwrap() = pod.sidecar().log_filter("info").install();
    }

    /// Rewrites the Service's EndpointSlice to the backends `indices` and has the client
    /// sidecar re-read its policy (SIGHUP), waiting (bounded) until it says it did.
    fn set_endpoints(&self, indices: &[usize]) {
        let mut service = self
            .mesh
            .service("echo")
            .vip(self.echo.vip())
            .port(SERVICE_PORT, APP_PORT);
        for &i in indices {
            service = service.backend(self.server(i).pod());
        }
        service.apply();
        self.reload_client();
    }

    /// Replaces TrafficPolicy `echo` (see [`Fleet::new`]) and has the client sidecar re-read
    /// its policy.
    fn set_policy(&self, spec: &str) {
        self.mesh
            .write_policy("traffic-echo.yaml", &traffic_policy(spec));
        self.reload_client();
    }

    /// SIGHUP to the client sidecar, then waits (bounded) until it says it reloaded.
    fn reload_client(&self) {
        let reloads = || self.client_sidecar.log().matches("policy reloaded").count();
        let before = reloads();
        self.client_sidecar.proc().signal("HUP");
        eventually(
            Duration::from_secs(30),
            "the client sidecar to reload its policy after SIGHUP",
            || (reloads() > before).then_some(()),
            || self.client_sidecar.log_tail(40),
        );
    }
}

/// A load run in progress.
struct Load {
    client: LoadClient,
    /// `--requests` it was given.
    requests: u64,
    /// Its per-request outcomes file.
    outcomes: std::path::PathBuf,
}

impl Load {
    /// Waits until `fraction` of its requests have finished.
    fn wait_fraction(&self, fraction: f64) {
        let n = (self.requests as f64 * fraction) as u64;
        self.client.wait_progress(n, Duration::from_secs(120));
    }

    /// Waits for the end of the run; its summary and its per-request outcomes.
    fn finish(self) -> (LoadSummary, Vec<fault::Outcome>) {
        let summary = self.client.finish();
        assert_eq!(
            summary.requests, self.requests,
            "the client finished {} of its {} requests within {RUN_CAP_SECS} s: {summary}",
            summary.requests, self.requests
        );
        let outcomes = fault::read_outcomes(&self.outcomes);
        (summary, outcomes)
    }
}

fn flag(args: &[&str], name: &str) -> u64 {
    let i = args
        .iter()
        .position(|a| *a == name)
        .unwrap_or_else(|| panic!("load arguments {args:?} have no {name}"));
    args[i + 1].parse().expect("a number")
}

fn traffic_policy(spec: &str) -> String {
    format!(
        "apiVersion: skiff.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: echo, namespace: \
         default}}\nspec:\n  targetRef: {{kind: Service, name: echo}}\n{spec}"
    )
}

/// Sum of `name{destination="default/echo:80", labels…}`.
fn service_metric(metrics: &Metrics, echo: &Service, name: &str, labels: &[(&str, &str)]) -> f64 {
    let destination = format!("{}:{SERVICE_PORT}", echo.id());
    let mut all = vec![("destination", destination.as_str())];
    all.extend_from_slice(labels);
    metrics.sum(name, &all)
}

/// Panics unless every request of `summary` got a complete response: a 2xx, a refusal by the
/// proxy (`x-skiff-error`) or a backend's 5xx; none of unknown fate (a connection error, reset
/// or timeout without a response), none cut off mid-body, no other status.
fn assert_every_request_answered(what: &str, summary: &LoadSummary) {
    assert_answered_but_truncated(what, summary, 0);
}

/// Like [`assert_every_request_answered`], but up to `truncated` responses may break off
/// mid-body (when the backend reset that many connections mid-response: a response that has
/// started cannot be retried, and the client must see it break rather than end cleanly).
fn assert_answered_but_truncated(what: &str, summary: &LoadSummary, truncated: u64) {
    let answered = summary.class("ok") + summary.class("refused") + summary.class("backend_5xx");
    assert!(
        summary.class("unknown") == 0
            && summary.class("truncated") <= truncated
            && answered + summary.class("truncated") == summary.requests,
        "{what}: of {} requests, {} of unknown fate, {} truncated (at most {truncated} may be), \
         {} with an unexpected status; every request must get a 2xx, a refusal with \
         x-skiff-error or a backend's 5xx.\n{summary}",
        summary.requests,
        summary.class("unknown"),
        summary.class("truncated"),
        summary.class("other_status")
    );
}

/// For failure messages: what the request before each one of unknown fate got on the same
/// client worker (whose keep-alive connection it most likely shared), counted by
/// `method class status x-skiff-error`. A proxy that closes a connection after a response
/// without `Connection: close` shows up here as the response that preceded the breakage.
fn unknown_fate_context(outcomes: &[fault::Outcome]) -> String {
    let key = |id: &str| -> Option<(String, u64)> {
        let (rest, seq) = id.rsplit_once('-')?;
        let (_, worker) = rest.rsplit_once('-')?;
        Some((worker.to_string(), seq.parse().ok()?))
    };
    let by_key: BTreeMap<(String, u64), &fault::Outcome> = outcomes
        .iter()
        .filter_map(|o| key(&o.id).map(|k| (k, o)))
        .collect();
    let mut before: BTreeMap<String, u64> = BTreeMap::new();
    for ((worker, seq), outcome) in &by_key {
        if outcome.class != "unknown" {
            continue;
        }
        let previous = seq
            .checked_sub(1)
            .and_then(|s| by_key.get(&(worker.clone(), s)))
            .map(|p| {
                format!(
                    "{} {} {} {}",
                    p.method,
                    p.class,
                    p.status.map(|s| s.to_string()).unwrap_or_default(),
                    p.error.as_deref().unwrap_or("-")
                )
            })
            .unwrap_or_else(|| "(first request of its worker)".to_string());
        *before.entry(previous).or_default() += 1;
    }
    if before.is_empty() {
        return String::new();
    }
    format!("requests of unknown fate came after, on the same client connection: {before:?}")
}

#[test]
fn a_backend_killed_mid_run_costs_no_get_and_is_ejected() {
    // Retries on resets and gateway errors cover the GETs that were in flight at the killed
    // backend; every later attempt there fails to connect, which is retried whatever the
    // policy says, until the endpoint is ejected. Round robin keeps the doomed endpoint in
    // turn before and after its death (peak-EWMA may leave one of three equal endpoints idle
    // for seconds after one slow answer, and an endpoint nobody tries is never found dead).
    let fleet = Fleet::new(
        "res-kill",
        &[&[], &[], &[]],
        &format!(
            "  retry: {{attempts: 2, on: [\"gateway-error\", \"reset\"]}}\n{RETRY_BUDGET}  \
             outlierDetection: {{consecutiveGatewayFailure: 5, baseEjectionTime: 30s, \
             maxEjectionPercent: 50}}\n  loadBalancer: RoundRobin\n"
        ),
    );
    let load = fleet.load(
        "kill",
        &["--requests", "3000", "--rate", "300", "--concurrency", "8"],
    );
    load.wait_fraction(0.3);
    let served = fleet.server(0).faults()["requests"].as_u64().unwrap();
    fleet.kill_pod(0);
    let (summary, _) = load.finish();
    assert!(
        served > 0,
        "backend-0 served nothing before it was killed: {summary}\n{}",
        fleet.diagnostics()
    );
    assert_every_request_answered("GETs while backend-0 was killed", &summary);
    assert_eq!(
        summary.class("ok"),
        summary.requests,
        "GETs failed while backend-0 was killed: {summary}\n{}",
        fleet.diagnostics()
    );
    // The dead endpoint is ejected (5 consecutive connect failures), and only it: 50 % of 3
    // endpoints allows one.
    let metrics = eventually(
        Duration::from_secs(30),
        "the killed endpoint to be ejected",
        || {
            let m = fleet.metrics();
            let ejected = service_metric(&m, &fleet.echo, EJECTED, &[]);
            let ejections = service_metric(&m, &fleet.echo, EJECTIONS, &[]);
            (ejected == 1.0 && ejections >= 1.0).then_some(m)
        },
        || {
            format!(
                "{}\n{}",
                fleet.diagnostics(),
                fleet.client_sidecar.log_tail(40)
            )
        },
    );
    eprintln!(
        "kill: {summary}\nejections {}, retries {}",
        metrics.describe(EJECTIONS),
        metrics.describe(RETRIES)
    );
    // Connecting to the dead pod failed before it was ejected, and those attempts were
    // retried as automatic (nothing was sent), not by the configured conditions alone.
    let automatic = service_metric(
        &metrics,
        &fleet.echo,
        RETRIES,
        &[("reason", "nothing-sent")],
    );
    assert!(
        automatic >= 1.0,
        "no retry with reason nothing-sent was counted, yet connections to the killed pod \
         were refused:\n{}",
        metrics.describe(RETRIES)
    );
}

#[test]
fn retries_hide_a_backend_failing_half_its_requests_within_the_budget() {
    // Round robin, so the failing backend keeps its third of first attempts (a latency-aware
    // balancer could favour its fast 503s); its 503s alternate with 200s, so it never fails
    // 5 times in a row and is not ejected: what hides the failures is the retries.
    let fleet = Fleet::new(
        "res-retry",
        &[&["--fail-percent", "50"], &[], &[]],
        &format!(
            "  retry: {{attempts: 2, on: [\"5xx\"], backoff: {{base: 25ms, max: 250ms}}}}\n\
             {RETRY_BUDGET}  loadBalancer: RoundRobin\n"
        ),
    );
    let retries_before = fleet.metric(RETRIES, &[]);
    let started = Instant::now();
    let load = fleet.load(
        "half",
        &["--requests", "3000", "--rate", "300", "--concurrency", "8"],
    );
    let (summary, _) = load.finish();
    let retries = fleet.metric(RETRIES, &[]) - retries_before;
    let secs = started.elapsed().as_secs_f64();
    let failed = fleet.server(0).faults()["failed"].as_u64().unwrap();
    eprintln!("retry: {summary}\nretries {retries}, backend-0 answered 503 {failed} times");

    assert_every_request_answered("GETs with backend-0 failing half", &summary);
    assert!(
        summary.success_rate() >= 0.99,
        "success rate {:.4} < 0.99 with retries on 5xx ({retries} retries; backend-0 answered \
         503 {failed} times): {summary}",
        summary.success_rate()
    );
    // Every 503 the client did not see was retried (and counted).
    let shown = summary.class("backend_5xx") + summary.class("refused");
    assert!(
        retries >= failed.saturating_sub(shown) as f64,
        "backend-0 answered 503 {failed} times, the client saw {shown} failures, but only \
         {retries} retries were counted"
    );
    let allowance = retry_allowance(summary.requests, secs);
    assert!(
        retries <= allowance,
        "{retries} retries for {} requests over {secs:.1} s exceed the budget ({BUDGET_PERCENT} \
         % + {BUDGET_MIN_PER_SECOND}/s over the run and one {BUDGET_WINDOW_SECS} s window + 5 = \
         {allowance:.0})",
        summary.requests
    );
}

#[test]
fn a_total_outage_keeps_retries_in_budget_opens_the_breaker_and_recovers() {
    const RETRY: &str = "  retry: {attempts: 2, on: [\"5xx\"]}\n";
    const BREAKER: &str = "  circuitBreaker: {failurePercent: 50, window: 20, minimumCalls: 10, \
                           openFor: 2s, halfOpenCalls: 3}\n";
    // First without the breaker: only the budget stands between the outage and a retry storm.
    let fleet = Fleet::new(
        "res-outage",
        &[&[], &[], &[]],
        &format!("{RETRY}{RETRY_BUDGET}  circuitBreaker: {{enabled: false}}\n"),
    );
    let (warm, _) = fleet
        .load("warm", &["--requests", "300", "--rate", "200"])
        .finish();
    assert_eq!(warm.class("ok"), warm.requests, "before the outage: {warm}");

    // Outage: every backend answers 503, and each request would like 2 retries.
    for backend in &fleet.backends {
        backend.server.set_faults(r#"{"fail_percent": 100}"#);
    }
    let retries_before = fleet.metric(RETRIES, &[]);
    let refused_before = fleet.metric(RETRIES_REFUSED, &[]);
    let started = Instant::now();
    let (budget, _) = fleet
        .load(
            "budget",
            &["--requests", "1600", "--rate", "200", "--concurrency", "8"],
        )
        .finish();
    let retries = fleet.metric(RETRIES, &[]) - retries_before;
    let refused = fleet.metric(RETRIES_REFUSED, &[]) - refused_before;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "outage without breaker: {budget}\nretries {retries} ({:.1} % of requests), {refused} \
         refused by the budget",
        100.0 * retries / budget.requests as f64
    );
    assert_every_request_answered("GETs during the outage, no breaker", &budget);
    // The warm-up's requests are in the budget's window too.
    let allowance = retry_allowance(budget.requests + warm.requests, secs);
    assert!(
        retries <= allowance,
        "{retries} retries ({:.0} % of {} requests) over {secs:.1} s of outage exceed the budget \
         ({BUDGET_PERCENT} % + {BUDGET_MIN_PER_SECOND}/s over the run and one \
         {BUDGET_WINDOW_SECS} s window + 5 = {allowance:.0}); unbudgeted, 2 attempts would make \
         200 %\n{}",
        100.0 * retries / budget.requests as f64,
        budget.requests,
        fleet.diagnostics()
    );
    assert!(
        refused > 0.0,
        "every attempt failed and each request wanted 2 retries, yet no retry was refused by \
         the budget ({retries} retries for {} requests)\n{}",
        budget.requests,
        fleet.diagnostics()
    );

    // With the breaker: it opens, and refuses calls for itself.
    fleet.set_policy(&format!("{RETRY}{RETRY_BUDGET}{BREAKER}"));
    let retries_before = fleet.metric(RETRIES, &[]);
    let started = Instant::now();
    let load = fleet.load(
        "outage",
        &["--requests", "1600", "--rate", "200", "--concurrency", "8"],
    );
    eventually(
        Duration::from_secs(60),
        "the circuit breaker to open during the outage",
        || (fleet.metric(BREAKER_STATE, &[]) == OPEN).then_some(()),
        || {
            format!(
                "{}\n{}",
                fleet.diagnostics(),
                fleet.client_sidecar.log_tail(40)
            )
        },
    );
    let (outage, _) = load.finish();
    let retries = fleet.metric(RETRIES, &[]) - retries_before;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "outage: {outage}\nretries {retries} ({:.1} % of requests)",
        100.0 * retries / outage.requests as f64
    );
    assert_every_request_answered("GETs during the outage", &outage);
    assert!(
        outage.error("circuit-open") > 0,
        "no request was refused with x-skiff-error: circuit-open during the outage: {outage}"
    );
    // The run before may still be in the budget's window.
    let allowance = retry_allowance(outage.requests + budget.requests, secs);
    assert!(
        retries <= allowance,
        "{retries} retries ({:.0} % of {} requests) over {secs:.1} s during the outage exceed \
         the budget ({allowance:.0}); unbudgeted, 2 attempts would make 200 %",
        100.0 * retries / outage.requests as f64,
        outage.requests
    );
    assert!(
        fleet.metric(BREAKER_TRANSITIONS, &[("state", "open")]) >= 1.0,
        "the breaker was seen open but no transition to open was counted:\n{}",
        fleet.metrics().describe(BREAKER_TRANSITIONS)
    );

    // The backends come back: after `openFor` the breaker lets trial calls through
    // (half-open), they succeed, and it closes.
    for backend in &fleet.backends {
        backend.server.set_faults(r#"{"fail_percent": 0}"#);
    }
    let load = fleet.load(
        "recovery",
        &["--requests", "800", "--rate", "100", "--concurrency", "4"],
    );
    eventually(
        Duration::from_secs(60),
        "the circuit breaker to close again after the backends recovered",
        || (fleet.metric(BREAKER_STATE, &[]) == CLOSED).then_some(()),
        || {
            format!(
                "{}\n{}",
                fleet.metrics().describe(BREAKER_TRANSITIONS),
                fleet.client_sidecar.log_tail(40)
            )
        },
    );
    let (recovery, _) = load.finish();
    assert_every_request_answered("GETs during the recovery", &recovery);
    let metrics = fleet.metrics();
    for state in ["half-open", "closed"] {
        assert!(
            service_metric(
                &metrics,
                &fleet.echo,
                BREAKER_TRANSITIONS,
                &[("state", state)]
            ) >= 1.0,
            "the breaker closed again without a counted transition to {state}:\n{}",
            metrics.describe(BREAKER_TRANSITIONS)
        );
    }
    let (after, _) = fleet
        .load("after", &["--requests", "500", "--rate", "200"])
        .finish();
    assert_eq!(
        after.class("ok"),
        after.requests,
        "requests fail after the breaker closed again: {after}\nrecovery run: {recovery}"
    );
}

#[test]
fn peak_ewma_sends_a_slow_backend_a_small_share() {
    // backend-0 takes 100 ms more per request than the others; a balancer blind to latency
    // would give it a third of the requests.
    let fleet = Fleet::new(
        "res-ewma",
        &[&["--delay-ms", "100"], &[], &[]],
        "  loadBalancer: PeakEWMA\n",
    );
    let (summary, _) = fleet
        .load(
            "ewma",
            &["--requests", "1600", "--rate", "200", "--concurrency", "8"],
        )
        .finish();
    assert_every_request_answered("GETs with a slow backend", &summary);
    assert_eq!(summary.class("ok"), summary.requests, "{summary}");
    let slow = summary.backend(fleet.server(0).name());
    let share = slow as f64 / summary.requests as f64;
    eprintln!("ewma: {summary}\nslow share {share:.3}");
    assert!(
        share < 0.20,
        "the slow backend answered {slow} of {} requests ({:.1} %), not < 20 %: {:?}",
        summary.requests,
        100.0 * share,
        summary.backends()
    );
    for i in 1..3 {
        let name = fleet.server(i).name();
        assert!(summary.backend(name) > 0, "{name} got nothing: {summary}");
    }

    // The control: round robin over the same backends gives the slow one its third, so the
    // small share above is the balancer's doing, not an artefact of the load.
    fleet.set_policy("  loadBalancer: RoundRobin\n");
    let (control, _) = fleet
        .load(
            "round-robin",
            &["--requests", "600", "--rate", "200", "--concurrency", "8"],
        )
        .finish();
    assert_every_request_answered("GETs with a slow backend, round robin", &control);
    let control_share = control.backend(fleet.server(0).name()) as f64 / control.requests as f64;
    assert!(
        control_share >= 0.25,
        "round robin gave the slow backend {:.1} % of the requests, not its third (≥ 25 %), so \
         the share under PeakEWMA proves nothing: {control}",
        100.0 * control_share
    );
}

#[test]
fn ledger_battery_no_post_executes_twice_and_every_request_is_answered() {
    // Half POSTs, with bodies of 2 KiB, so a reset in the middle of one leaves half of it
    // unread.
    let phase = |requests: &'static str| {
        [
            "--requests",
            requests,
            "--rate",
            "400",
            "--concurrency",
            "12",
            "--post-percent",
            "50",
            "--body-bytes",
            "2048",
        ]
    };
    let args = phase("3000");
    // A process killed mid-response cuts the responses it was writing: they have started, so
    // they cannot be retried, and the client sees them break off (a known fate: the backend
    // executed them). At most one per request in flight, per kill.
    let cut_per_kill = flag(&args, "--concurrency");
    let fleet = Fleet::new(
        "res-ledger",
        &[&[], &[], &[]],
        &format!(
            "  retry: {{attempts: 2, on: [\"5xx\", \"gateway-error\", \"reset\"]}}\n\
             {RETRY_BUDGET}  outlierDetection: {{consecutiveGatewayFailure: 5, \
             baseEjectionTime: 5s, maxEjectionPercent: 50}}\n"
        ),
    );
    // (phase, what the client saw, per request, responses that may break off mid-body)
    let mut runs: Vec<(&str, LoadSummary, Vec<fault::Outcome>, u64)> = Vec::new();

    // 1. Crashes: backend-0's app dies (its sidecar answers for it) and comes back; then
    //    backend-1's whole pod dies and comes back.
    let load = fleet.load("crash", &args);
    load.wait_fraction(0.2);
    fleet.server(0).kill();
    load.wait_fraction(0.4);
    fleet.server(0).restart();
    fleet.kill_pod(1);
    load.wait_fraction(0.7);
    fleet.restart_pod(1);
    let (summary, outcomes) = load.finish();
    runs.push(("crash", summary, outcomes, 2 * cut_per_kill));

    // 2. Resets: mid-body on backend-0, after the request on backend-1, mid-response on
    //    backend-2.
    fleet
        .server(0)
        .set_faults(r#"{"reset_percent": 20, "reset_mode": "mid-body"}"#);
    fleet
        .server(1)
        .set_faults(r#"{"reset_percent": 10, "reset_mode": "after-request"}"#);
    fleet
        .server(2)
        .set_faults(r#"{"reset_percent": 10, "reset_mode": "mid-response"}"#);
    let cut_before = fleet.server(2).faults()["resets"].as_u64().unwrap();
    let (summary, outcomes) = fleet.load("resets", &args).finish();
    // Each reset mid-response may break one response off (and no more).
    let cut = fleet.server(2).faults()["resets"].as_u64().unwrap() - cut_before;
    runs.push(("resets", summary, outcomes, cut));

    // 3. Slow and failing: backend-0 +100 ms, backend-1 answers 503 to 30 %.
    fleet
        .server(0)
        .set_faults(r#"{"reset_percent": 0, "delay_ms": 100}"#);
    fleet
        .server(1)
        .set_faults(r#"{"reset_percent": 0, "fail_percent": 30}"#);
    fleet.server(2).set_faults(r#"{"reset_percent": 0}"#);
    let (summary, outcomes) = fleet.load("slow", &args).finish();
    runs.push(("slow", summary, outcomes, 0));

    // 4. Outage: every backend answers 503, so the breaker opens and the proxy refuses GETs
    //    and POSTs (bodies unread) for itself; the client's keep-alive connections must
    //    survive those refusals or be closed with notice.
    for i in 0..3 {
        fleet
            .server(i)
            .set_faults(r#"{"delay_ms": 0, "fail_percent": 100}"#);
    }
    let (summary, outcomes) = fleet.load("outage", &phase("1500")).finish();
    runs.push(("outage", summary, outcomes, 0));
    for i in 0..3 {
        fleet.server(i).set_faults(r#"{"fail_percent": 0}"#);
    }

    // 5. Endpoints edited under load: backend-0 is removed and then its pod dies (a rollout),
    //    comes back and is added again; backend-2 is removed and added back.
    let load = fleet.load("endpoints", &args);
    load.wait_fraction(0.2);
    fleet.set_endpoints(&[1, 2]);
    fleet.kill_pod(0);
    load.wait_fraction(0.45);
    fleet.restart_pod(0);
    fleet.set_endpoints(&[0, 1, 2]);
    load.wait_fraction(0.7);
    fleet.set_endpoints(&[0, 1]);
    load.wait_fraction(0.85);
    fleet.set_endpoints(&[0, 1, 2]);
    let (summary, outcomes) = load.finish();
    runs.push(("endpoints", summary, outcomes, cut_per_kill));

    // No POST was executed twice, and every POST answered 2xx was executed exactly once, by
    // the backend that answered it.
    let mut executed: BTreeMap<String, Vec<fault::LedgerEntry>> = BTreeMap::new();
    for backend in &fleet.backends {
        for entry in backend.server.ledger() {
            if entry.executed {
                executed.entry(entry.id.clone()).or_default().push(entry);
            }
        }
    }
    let twice: Vec<&Vec<fault::LedgerEntry>> = executed
        .values()
        .filter(|entries| entries.len() > 1 && entries[0].method == "POST")
        .collect();
    let posts: u64 = runs.iter().map(|(_, s, _, _)| s.method("POST")).sum();
    let total: u64 = runs.iter().map(|(_, s, _, _)| s.requests).sum();
    for (phase, summary, _, _) in &runs {
        eprintln!("ledger battery, {phase}: {summary}");
    }
    assert!(
        twice.is_empty(),
        "{} of {posts} POSTs were executed more than once (a non-idempotent request was \
         retried after the upstream had seen it); the first: {:#?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    let mut mismatched = Vec::new();
    for (_, _, outcomes, _) in &runs {
        for outcome in outcomes {
            if outcome.method != "POST" || outcome.class != "ok" {
                continue;
            }
            let entries = executed.get(&outcome.id).map(Vec::as_slice).unwrap_or(&[]);
            let consistent = entries.len() == 1
                && Some(&entries[0].backend) == outcome.backend.as_ref()
                && entries[0].outcome == "200";
            if !consistent {
                mismatched.push((outcome.clone(), entries.to_vec()));
            }
        }
    }
    assert!(
        mismatched.is_empty(),
        "{} POSTs answered 2xx do not match the ledgers (executed once, by the backend that \
         answered, with 200); the first: {:#?}",
        mismatched.len(),
        &mismatched[..mismatched.len().min(5)]
    );
    let ledger_lines: usize = fleet.backends.iter().map(|b| b.server.ledger().len()).sum();
    eprintln!(
        "ledger battery: {total} requests ({posts} POSTs), {ledger_lines} ledger lines, {} ids \
         executed\n{}",
        executed.len(),
        fleet.metrics().describe(RETRIES)
    );

    // Every request was answered (checked after the ledgers, which matter most).
    for (phase, summary, outcomes, truncated) in &runs {
        let unknown: Vec<&fault::Outcome> =
            outcomes.iter().filter(|o| o.class == "unknown").collect();
        let executed_anyway = unknown
            .iter()
            .filter(|o| executed.contains_key(&o.id))
            .count();
        assert_answered_but_truncated(
            &format!(
                "ledger battery, phase {phase} ({executed_anyway} of the {} requests of unknown \
                 fate were executed by a backend) {}",
                unknown.len(),
                unknown_fate_context(outcomes)
            ),
            summary,
            *truncated,
        );
    }
}
