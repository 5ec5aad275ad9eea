//! Lifecycle: health and admin endpoints, and SIGTERM mid-request — readiness fails, the
//! request in flight completes, then the proxy exits.

use std::time::Duration;

use skiff_tests::{counters::REQUESTS, eventually, Mesh, Pod, Proc, Sidecar};

/// The body `http_server.py` answers `/slow` with.
fn slow_body() -> String {
    "skiff-slow-response-line\n".repeat(4000)
}

#[test]
fn health_admin_and_metrics_endpoints_answer() {
    let mesh = Mesh::new("admin");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let echo = mesh.service("echo").port(80, 8080).backend(&server).apply();
    server.spawn_python("http", "http_server.py", &["--port", "8080"]);
    server.wait_listening(8080);
    let _server_sidecar = server.sidecar().install();
    let sidecar = client.sidecar().install();
    assert_eq!(
        sidecar.local_status("http://127.0.0.1:15021/healthz/live"),
        Some(200)
    );
    assert_eq!(sidecar.ready_status(), Some(200));
    let dump = sidecar.config_dump().to_string();
    assert!(
        dump.contains("echo"),
        "/config_dump does not mention service echo: {dump}"
    );
    assert!(
        dump.contains(&echo.vip().to_string()),
        "/config_dump lacks the VIP: {dump}"
    );
    client.exec_ok(&format!(
        "curl -sS --fail --max-time 30 http://{}/",
        echo.vip()
    ));
    sidecar.wait_metric(REQUESTS, &[("direction", "outbound")], 1.0);
    let metrics = sidecar.metrics();
    for name in [
        "skiff_requests_total",
        "skiff_request_duration_seconds_bucket",
        "skiff_request_duration_seconds_sum",
        "skiff_request_duration_seconds_count",
    ] {
        assert!(
            metrics.has(name),
            "/metrics lacks {name}:\n{}",
            metrics.describe(name)
        );
    }
    let text = client.exec_ok("curl -sS --max-time 10 http://127.0.0.1:15020/metrics");
    assert!(
        text.contains("# TYPE skiff_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE skiff_request_duration_seconds histogram"),
        "{text}"
    );
}

/// A slow request from `client` to service `slow`, SIGTERM to `victim` once the server has
/// started answering it; the request must complete whole and the victim must then exit.
fn sigterm_mid_request(label: &str, victim_is_client: bool) {
    let mesh = Mesh::new(label);
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let slow = mesh.service("slow").port(80, 8080).backend(&server).apply();
    let app = server.spawn_python("http", "http_server.py", &["--port", "8080"]);
    server.wait_listening(8080);
    let drain = ["--drain-period", "20s"];
    let server_sidecar = server.sidecar().run_args(&drain).install();
    let client_sidecar = client.sidecar().run_args(&drain).install();

    let body = mesh.dir().join("slow.body");
    let body = body.display();
    let request = client.spawn_sh(
        "slow-request",
        &format!(
            "curl -sS --max-time 120 -o {body} -w '%{{http_code}}\\n' \
             http://{}/slow?secs=8 && wc -c < {body} && md5sum < {body}",
            slow.vip()
        ),
    );
    wait_for_log(&app, "slow request started", &mesh);
    let victim: &Sidecar = if victim_is_client {
        &client_sidecar
    } else {
        &server_sidecar
    };
    victim.terminate();

    // Readiness fails while the request is still in flight.
    let still_in_flight = eventually(
        Duration::from_secs(30),
        "readiness to fail after SIGTERM",
        || (victim.ready_status() != Some(200)).then(|| request.is_running()),
        || victim.log_tail(60),
    );

    let status = request.wait_exit(Duration::from_secs(150));
    let out = request.log();
    assert!(
        status.success(),
        "the request in flight failed after SIGTERM to the {} sidecar ({status}):\n{out}",
        if victim_is_client { "client" } else { "server" }
    );
    let expected = slow_body();
    let expected_md5 = slow_body_md5(&client);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some("200"), "{out}");
    assert_eq!(
        lines.get(1).map(|l| l.trim()),
        Some(expected.len().to_string().as_str()),
        "{out}"
    );
    assert_eq!(
        lines.get(2).map(|l| l.trim()),
        Some(expected_md5.as_str()),
        "body differs: {out}"
    );

    let exit = victim.proc().wait_exit(Duration::from_secs(60));
    assert!(
        exit.success(),
        "the sidecar exited with {} after SIGTERM\n{}",
        skiff_tests::process::describe(exit),
        victim.log_tail(60)
    );
    assert!(
        still_in_flight,
        "readiness only failed after the request had completed"
    );
}

/// md5sum of the `/slow` body, computed in the pod with the same tool as the response's.
fn slow_body_md5(pod: &Pod) -> String {
    pod.exec_ok("yes skiff-slow-response-line | head -n 4000 | md5sum")
        .trim()
        .to_string()
}

fn wait_for_log(proc: &Proc, needle: &str, mesh: &Mesh) {
    eventually(
        Duration::from_secs(60),
        &format!("{needle:?} in the log of {}", proc.name()),
        || proc.log().contains(needle).then_some(()),
        || mesh.logs(),
    );
}

#[test]
fn sigterm_to_the_client_sidecar_mid_request_completes_the_request() {
    sigterm_mid_request("sigterm-client", true);
}

#[test]
fn sigterm_to_the_server_sidecar_mid_request_completes_the_request() {
    sigterm_mid_request("sigterm-server", false);
}
