//! The control plane end to end: `skiff-control` watching the mesh's policy dir, every sidecar
//! streaming its configuration from it. A route edit in a file changes traffic; an invalid edit
//! is refused (file, line, field path) while traffic carries on; killing and restarting the
//! control plane under load loses no request; a configuration a proxy refuses shows as NACK in
//! `skiff proxy-status`; `skiff proxy-config` shows what a proxy runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_tests::{
    eventually, json, line_of, ControlPlane, HttpRoute, Mesh, Pod, RouteMatch, RouteRule, Service,
    Sidecar,
};

/// Requests per traffic sample: enough to see a split, few enough to stay quick.
const SAMPLE: usize = 20;

/// Two versions of `echo` behind one Service, an HTTPRoute splitting `/app` between them, and
/// a client; the control plane and every sidecar (client, v1, v2) streaming from it.
struct Canary {
    mesh: Mesh,
    control: ControlPlane,
    client: Pod,
    /// The Service clients call; the route attaches to it. Its endpoints are both versions.
    echo: Service,
    /// One Service per version, the route's backends.
    v1: Service,
    v2: Service,
    client_sidecar: Sidecar,
    v1_sidecar: Sidecar,
    v2_sidecar: Sidecar,
}

impl Canary {
    fn new(label: &str, v1_weight: i64, v2_weight: i64) -> Canary {
        let mesh = Mesh::new(label);
        let v1_pod = mesh.pod("v1");
        let v2_pod = mesh.pod("v2");
        let client = mesh.pod("client");
        let echo = mesh
            .service("echo")
            .port(80, 8080)
            .backend(&v1_pod)
            .backend(&v2_pod)
            .apply();
        let v1 = mesh
            .service("echo-v1")
            .port(80, 8080)
            .backend(&v1_pod)
            .apply();
        let v2 = mesh
            .service("echo-v2")
            .port(80, 8080)
            .backend(&v2_pod)
            .apply();
        for (pod, name) in [(&v1_pod, "v1"), (&v2_pod, "v2")] {
            pod.spawn_python(
                "http",
                "http_server.py",
                &["--port", "8080", "--name", name],
            );
        }
        let route = canary_route(&echo, &v1, &v2, v1_weight, v2_weight);
        mesh.write_policy(&route.file_name(), &route.render());
        v1_pod.wait_listening(8080);
        v2_pod.wait_listening(8080);
        let control = mesh.control_plane();
        let v1_sidecar = v1_pod.sidecar().control_plane(&control).install();
        let v2_sidecar = v2_pod.sidecar().control_plane(&control).install();
        let client_sidecar = client.sidecar().control_plane(&control).install();
        Canary {
            mesh,
            control,
            client,
            echo,
            v1,
            v2,
            client_sidecar,
            v1_sidecar,
            v2_sidecar,
        }
    }

    fn sidecars(&self) -> [&Sidecar; 3] {
        [&self.client_sidecar, &self.v1_sidecar, &self.v2_sidecar]
    }

    /// The canary route with other weights.
    fn route(&self, v1_weight: i64, v2_weight: i64) -> HttpRoute {
        canary_route(&self.echo, &self.v1, &self.v2, v1_weight, v2_weight)
    }

    /// Writes `route` (replacing the route file) and returns its path.
    fn write_route(&self, route: &HttpRoute) -> PathBuf {
        self.mesh.write_policy(&route.file_name(), &route.render())
    }

    /// The configuration version of every sidecar.
    fn versions(&self) -> Vec<String> {
        self.sidecars().iter().map(|s| s.config_version()).collect()
    }

    /// Waits until every sidecar runs a configuration other than `old` (one version per
    /// sidecar, as [`Canary::versions`] returns), then until `skiff proxy-status` shows them
    /// all ACKed; returns the new versions.
    fn wait_all_changed(&self, old: &[String]) -> Vec<String> {
        let new: Vec<String> = self
            .sidecars()
            .iter()
            .zip(old)
            .map(|(sidecar, old)| sidecar.wait_config_change(old))
            .collect();
        self.control.wait_synced(&self.sidecars());
        new
    }

    /// `SAMPLE` requests to `echo` at `path` with `headers`, tallied.
    fn sample(&self, path: &str, headers: &[&str]) -> BTreeMap<String, usize> {
        let url = format!("http://{}{path}", self.echo.vip());
        tally(&requests(&self.client, &url, headers, SAMPLE))
    }
}

/// `/app` with `x-canary: true` goes to v2 (tagged `x-route: canary`); the rest of `/app` is
/// split by weight; anything else matches no rule.
fn canary_route(
    echo: &Service,
    v1: &Service,
    v2: &Service,
    v1_weight: i64,
    v2_weight: i64,
) -> HttpRoute {
    HttpRoute::new("echo")
        .parent(echo)
        .rule(
            RouteRule::new()
                .matching(RouteMatch::path_prefix("/app").header("x-canary", "true"))
                .set_request_header("x-route", "canary")
                .backend(v2, 1),
        )
        .rule(
            RouteRule::new()
                .matching(RouteMatch::path_prefix("/app"))
                .backend(v1, v1_weight)
                .backend(v2, v2_weight),
        )
}

/// What one request got: its status, the server that answered (`x-served-by`) and the proxy's
/// reason header (`x-skiff-error`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reply {
    status: String,
    served_by: String,
    error: String,
}

impl Reply {
    /// `200 v1`, `404 no-route`: the key of a tally.
    fn key(&self) -> String {
        match (self.served_by.is_empty(), self.error.is_empty()) {
            (false, _) => format!("{} {}", self.status, self.served_by),
            (true, false) => format!("{} {}", self.status, self.error),
            (true, true) => self.status.clone(),
        }
    }
}

const WRITE_OUT: &str = "%{http_code}|%header{x-served-by}|%header{x-skiff-error}\\n";

/// `n` requests from `client`, each on a new connection (so each sees the configuration in
/// force when it starts).
fn requests(client: &Pod, url: &str, headers: &[&str], n: usize) -> Vec<Reply> {
    let header_args: String = headers
        .iter()
        .map(|h| format!(" -H {}", skiff_tests::sh_quote(h)))
        .collect();
    let script = format!(
        "for i in $(seq {n}); do curl -s -o /dev/null --max-time 20 -w '{WRITE_OUT}'{header_args} \
         {url}; done"
    );
    let out = client.exec(&script);
    let replies: Vec<Reply> = out.stdout.lines().map(parse_reply).collect();
    assert_eq!(replies.len(), n, "expected {n} replies: {out}");
    replies
}

fn parse_reply(line: &str) -> Reply {
    let mut fields = line.split('|');
    let mut next = || fields.next().unwrap_or("").trim().to_string();
    Reply {
        status: next(),
        served_by: next(),
        error: next(),
    }
}

fn tally(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for reply in replies {
        *counts.entry(reply.key()).or_insert(0) += 1;
    }
    counts
}

/// `{key: SAMPLE}`: every request of a sample got the same answer.
fn all(key: &str) -> BTreeMap<String, usize> {
    BTreeMap::from([(key.to_string(), SAMPLE)])
}

#[test]
fn a_route_change_in_a_file_reaches_the_proxies_and_changes_traffic() {
    let s = Canary::new("cp-route-change", 100, 0);
    let first = s.control.wait_synced(&s.sidecars());
    assert_eq!(first.len(), 3, "three proxies connected: {first:?}");

    assert_eq!(s.sample("/app/x", &[]), all("200 v1"), "100/0 split");
    assert_eq!(
        s.sample("/app/x", &["x-canary: true"]),
        all("200 v2"),
        "header match"
    );
    // The canary rule's RequestHeaderModifier reaches the server.
    let body = s.client.exec_ok(&format!(
        "curl -sS --fail --max-time 20 -H 'x-canary: true' http://{}/app/headers",
        s.echo.vip()
    ));
    let echoed = json(&body);
    assert_eq!(echoed["server"], "v2", "{body}");
    assert_eq!(echoed["headers"]["x-route"], "canary", "{body}");
    assert_eq!(
        s.sample("/elsewhere", &[]),
        all("404 no-route"),
        "a request no rule matches"
    );

    // Flip the split in the file: the proxies get a new version and traffic follows.
    let before = s.versions();
    s.write_route(&s.route(0, 100));
    let after = s.wait_all_changed(&before);
    assert_eq!(s.sample("/app/x", &[]), all("200 v2"), "0/100 split");
    assert_eq!(s.sample("/app/x", &["x-canary: true"]), all("200 v2"));
    assert_eq!(s.sample("/elsewhere", &[]), all("404 no-route"));

    // A 3/1 split sends to both, more to v1.
    s.write_route(&s.route(3, 1));
    s.wait_all_changed(&after);
    let split = s.sample("/app/x", &[]);
    let (to_v1, to_v2) = (
        split.get("200 v1").copied().unwrap_or(0),
        split.get("200 v2").copied().unwrap_or(0),
    );
    assert_eq!(
        to_v1 + to_v2,
        SAMPLE,
        "every request answered 200: {split:?}"
    );
    assert!(to_v2 > 0 && to_v1 > to_v2, "3/1 split: {split:?}");
}

#[test]
fn an_invalid_edit_is_refused_with_file_line_and_path_and_traffic_is_unaffected() {
    let s = Canary::new("cp-invalid-edit", 100, 0);
    s.control.wait_synced(&s.sidecars());
    let versions = s.versions();
    assert_eq!(s.sample("/app/x", &[]), all("200 v1"));
    let errors = s.control.metric("skiff_control_config_errors_total");
    let snapshot = s.control.metric("skiff_control_snapshot_version");
    assert_eq!(s.control.metric("skiff_control_config_valid"), 1.0);

    // A negative weight: the second rule's second backendRef.
    let broken = s.route(100, -5);
    let path = s.write_route(&broken);
    let line = line_of(&broken.render(), "weight: -5");
    let expected = format!(
        "{}:{line} spec.rules[1].backendRefs[1].weight: must be ≥ 0",
        path.display()
    );
    eventually(
        Duration::from_secs(60),
        &format!("the control plane to log {expected:?}"),
        || s.control.log().contains(&expected).then_some(()),
        || s.control.log_tail(40),
    );
    assert!(
        s.control.metric("skiff_control_config_errors_total") > errors,
        "config errors counted:\n{}",
        s.control
            .metrics()
            .describe("skiff_control_config_errors_total")
    );
    assert_eq!(s.control.metric("skiff_control_config_valid"), 0.0);
    assert_eq!(
        s.control.metric("skiff_control_snapshot_version"),
        snapshot,
        "no snapshot published"
    );

    // The proxies keep the version they had, and say so; traffic is exactly as before.
    let rows = s.control.wait_synced(&s.sidecars());
    assert_eq!(s.versions(), versions, "no proxy changed its configuration");
    for (sidecar, version) in s.sidecars().iter().zip(&versions) {
        let row = rows
            .iter()
            .find(|r| r.workload == sidecar.workload())
            .unwrap();
        assert_eq!(&row.version, version, "{row:?}");
    }
    assert_eq!(s.sample("/app/x", &[]), all("200 v1"));
    assert_eq!(s.sample("/app/x", &["x-canary: true"]), all("200 v2"));
    assert_eq!(s.sample("/elsewhere", &[]), all("404 no-route"));

    // Fixing the file resumes updates.
    s.write_route(&s.route(0, 100));
    s.wait_all_changed(&versions);
    assert_eq!(s.sample("/app/x", &[]), all("200 v2"));
    assert_eq!(s.control.metric("skiff_control_config_valid"), 1.0);
}

/// A background client that sends requests one after another, each on a new connection, until
/// told to stop; one line per request in its output file.
struct Load {
    out: PathBuf,
    stop: PathBuf,
    proc: skiff_tests::Proc,
}

impl Load {
    fn start(client: &Pod, dir: &Path, name: &str, url: &str) -> Load {
        let out = dir.join(format!("{name}.out"));
        let stop = dir.join(format!("{name}.stop"));
        // Bounded even if nobody stops it.
        let script = format!(
            "i=0; while [ ! -e {stop} ] && [ $i -lt 50000 ]; do i=$((i+1)); \
             curl -s -o /dev/null --max-time 10 -w '{WRITE_OUT}' {url} || echo \"curl exit $?\"; \
             done >> {out} 2>&1",
            stop = stop.display(),
            out = out.display(),
        );
        let proc = client.spawn_sh(name, &script);
        Load { out, stop, proc }
    }

    /// Complete lines so far.
    fn lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete.lines().map(str::to_string).collect()
    }

    /// Waits (bounded) until at least `more` further requests are done.
    fn wait_progress(&self, more: usize, context: impl Fn() -> String) {
        let target = self.lines().len() + more;
        eventually(
            Duration::from_secs(120),
            &format!("{target} requests done by {}", self.proc.name()),
            || (self.lines().len() >= target).then_some(()),
            context,
        );
    }

    /// Stops it and returns every reply.
    fn finish(self) -> Vec<String> {
        std::fs::write(&self.stop, b"").expect("create stop file");
        self.proc.wait_exit(Duration::from_secs(60));
        self.lines()
    }
}

#[test]
fn the_control_plane_killed_and_restarted_under_load_loses_no_request() {
    let s = Canary::new("cp-restart", 1, 1);
    let before = s.control.wait_synced(&s.sidecars());
    let versions = s.versions();
    let applied =
        |sidecar: &Sidecar| sidecar.metric("skiff_config_updates_total", &[("result", "applied")]);
    let applied_before: Vec<f64> = s.sidecars().iter().map(|sc| applied(sc)).collect();

    let url = format!("http://{}/app/load", s.echo.vip());
    let loads = [
        Load::start(&s.client, s.mesh.dir(), "load-1", &url),
        Load::start(&s.client, s.mesh.dir(), "load-2", &url),
    ];
    let logs = || s.mesh.logs();
    for load in &loads {
        load.wait_progress(20, logs);
    }

    s.control.kill();
    for sidecar in s.sidecars() {
        eventually(
            Duration::from_secs(60),
            &format!("{} to notice the control plane is gone", sidecar.workload()),
            || (sidecar.metric("skiff_control_plane_connected", &[]) == 0.0).then_some(()),
            logs,
        );
    }
    // Requests keep flowing while no control plane runs.
    for load in &loads {
        load.wait_progress(20, logs);
    }

    s.control.start_again();
    let after = s.control.wait_synced(&s.sidecars());
    for load in &loads {
        load.wait_progress(20, logs);
    }
    let replies: Vec<String> = loads.into_iter().flat_map(Load::finish).collect();

    let failed: Vec<&String> = replies
        .iter()
        .filter(|line| !(line.starts_with("200|v1|") || line.starts_with("200|v2|")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the control plane restart: {:?}\n{}",
        failed.len(),
        replies.len(),
        &failed[..failed.len().min(20)],
        s.mesh.logs()
    );
    assert!(replies.len() >= 120, "{} requests", replies.len());

    // The restarted control plane resynchronised every proxy to the version it already ran,
    // which the proxies ACKed without applying anything again.
    assert_eq!(s.versions(), versions);
    let version_of = |rows: &[skiff_tests::ProxyStatusRow], workload: &str| {
        rows.iter()
            .find(|r| r.workload == workload)
            .map(|r| r.version.clone())
    };
    for sidecar in s.sidecars() {
        assert_eq!(
            version_of(&after, &sidecar.workload()),
            version_of(&before, &sidecar.workload()),
            "{sidecar:?}: before {before:?}, after {after:?}",
            sidecar = sidecar.workload()
        );
    }
    let applied_after: Vec<f64> = s.sidecars().iter().map(|sc| applied(sc)).collect();
    assert_eq!(applied_after, applied_before, "no configuration re-applied");
    assert_eq!(s.control.metric("skiff_control_connected_proxies"), 3.0);
    for sidecar in s.sidecars() {
        assert_eq!(sidecar.metric("skiff_control_plane_connected", &[]), 1.0);
    }
}

#[test]
fn proxy_config_shows_the_configuration_the_proxy_runs() {
    let s = Canary::new("cp-proxy-config", 100, 0);
    s.control.wait_synced(&s.sidecars());
    for sidecar in s.sidecars() {
        let name = sidecar.pod().name();
        let shown = s.control.proxy_config(name);
        let running = sidecar.config_dump()["config"].clone();
        assert_eq!(
            shown["version"], running["version"],
            "{name}: proxy-config and /config_dump versions"
        );
        assert_eq!(
            shown, running,
            "{name}: proxy-config is what the proxy runs"
        );
    }
    // The client's view carries the route, in precedence order, and every service.
    let client = s.control.proxy_config("client");
    let text = client.to_string();
    for needle in [
        "default/echo",
        "default/echo-v1",
        "default/echo-v2",
        "x-canary",
    ] {
        assert!(text.contains(needle), "{needle} not in {client:#}");
    }
    // YAML, the default output, names the same version.
    let yaml = s.control.skiff_ok(&["proxy-config", "default/client"]);
    let version = client["version"].as_str().unwrap();
    assert!(yaml.contains(version), "{yaml}");
}

/// A configuration valid for the control plane but beyond what one proxy accepts (its
/// `--max-routes` memory guard) is NACKed by that proxy: the NACK shows in `skiff
/// proxy-status`, and the proxy keeps serving its last good configuration.
#[test]
fn a_nacked_version_shows_in_proxy_status_and_the_last_good_one_keeps_serving() {
    let help =
        skiff_tests::process::run(&[skiff_tests::proxy_bin().to_str().unwrap(), "run", "--help"]);
    assert!(
        help.stdout.contains("--max-routes"),
        "skiff-proxy has no `run --max-routes N` flag yet (a sidecar memory guard: configurations \
         with more HTTP routes than N are NACKed); this test is written against it:\n{help}"
    );
    let mesh = Mesh::new("cp-max-routes");
    let v1_pod = mesh.pod("v1");
    let client = mesh.pod("client");
    let v1 = mesh
        .service("echo-v1")
        .port(80, 8080)
        .backend(&v1_pod)
        .apply();
    let echo = mesh.service("echo").port(80, 8080).backend(&v1_pod).apply();
    v1_pod.spawn_python(
        "http",
        "http_server.py",
        &["--port", "8080", "--name", "v1"],
    );
    let route = |rules: usize| {
        (0..rules).fold(HttpRoute::new("echo").parent(&echo), |route, i| {
            route.rule(
                RouteRule::new()
                    .matching(RouteMatch::path_prefix(&format!("/r{i}")))
                    .backend(&v1, 1),
            )
        })
    };
    mesh.write_policy("route-echo.yaml", &route(2).render());
    v1_pod.wait_listening(8080);
    let control = mesh.control_plane();
    let v1_sidecar = v1_pod.sidecar().control_plane(&control).install();
    let client_sidecar = client
        .sidecar()
        .control_plane(&control)
        .run_args(&["--max-routes", "2"])
        .install();
    control.wait_synced(&[&client_sidecar, &v1_sidecar]);
    let good = client_sidecar.config_version();

    let before = v1_sidecar.config_version();
    mesh.write_policy("route-echo.yaml", &route(3).render());
    v1_sidecar.wait_config_change(&before);
    let row = eventually(
        Duration::from_secs(60),
        "the client's NACK in skiff proxy-status",
        || {
            control
                .proxy_status()
                .into_iter()
                .find(|r| r.workload == "default/client" && r.status.starts_with("NACK "))
        },
        || control.log_tail(40),
    );
    assert_eq!(row.version, good, "{row:?}");
    assert!(row.status.contains("routes"), "{row:?}");
    assert_eq!(client_sidecar.config_version(), good);
    let replies = requests(&client, &format!("http://{}/r1/x", echo.vip()), &[], SAMPLE);
    assert_eq!(tally(&replies), all("200 v1"));
}
