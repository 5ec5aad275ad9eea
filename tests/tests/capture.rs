//! What capture sends where: unknown destinations pass through, excluded ports and CIDRs bypass
//! the proxy, and the inbound path never exposes a listener bound only to localhost.

use skiff_tests::counters::{REQUESTS, TCP_OPENED};
use skiff_tests::{json, Mesh, Pod, Sidecar};

/// Connections and requests a sidecar counted in `direction`, whatever the service.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counts {
    tcp: f64,
    requests: f64,
}

fn counts(sidecar: &Sidecar, direction: &str) -> Counts {
    let m = sidecar.metrics();
    Counts {
        tcp: m.sum(TCP_OPENED, &[("direction", direction)]),
        requests: m.sum(REQUESTS, &[("direction", direction)]),
    }
}

/// Waits until the control connection (sent after the bypassing one) is counted, then checks
/// that nothing else was: had the bypassing connection been captured, one of the counters would
/// have grown by 2. The connection may be counted as a TCP connection, a request, or both.
fn assert_only_the_control_was_counted(sidecar: &Sidecar, direction: &str, before: Counts) {
    let mut now = before;
    skiff_tests::eventually(
        std::time::Duration::from_secs(30),
        "the control connection to be counted",
        || {
            now = counts(sidecar, direction);
            (now.tcp + now.requests > before.tcp + before.requests).then_some(())
        },
        || sidecar.log_tail(60),
    );
    assert!(
        now.tcp - before.tcp <= 1.0 && now.requests - before.requests <= 1.0,
        "traffic that should bypass the proxy was counted ({direction}): before {before:?}, \
         after {now:?}\n{}",
        sidecar.metrics().describe(TCP_OPENED)
    );
}

fn http_server(pod: &Pod, port: u16, bind: &str, name: &str) {
    let port_arg = port.to_string();
    pod.spawn_python(
        &format!("http-{port}"),
        "http_server.py",
        &["--port", &port_arg, "--bind", bind, "--name", name],
    );
    pod.wait_listening(port);
}

fn get(pod: &Pod, url: &str) -> serde_json::Value {
    json(&pod.exec_ok(&format!("curl -sS --fail --max-time 30 {url}")))
}

#[test]
fn an_unknown_destination_passes_through_and_is_counted_as_passthrough() {
    let mesh = Mesh::new("passthrough");
    let other = mesh.pod("other");
    let client = mesh.pod("client");
    // A service exists, but `other` is in none.
    let known = mesh.pod("known");
    mesh.service("known").port(80, 8080).backend(&known).apply();
    http_server(&other, 8080, "0.0.0.0", "other");
    let client_sidecar = client.sidecar().install();
    let passthrough = [("direction", "outbound"), ("service", "passthrough")];
    let before = client_sidecar.metric(TCP_OPENED, &passthrough);

    let echoed = get(&client, &format!("http://{}:8080/direct", other.ip()));
    assert_eq!(echoed["server"], "other");
    assert_eq!(echoed["path"], "/direct");
    client_sidecar.wait_metric(TCP_OPENED, &passthrough, before + 1.0);
}

#[test]
fn an_excluded_outbound_port_bypasses_the_proxy() {
    let mesh = Mesh::new("exclude-port");
    let other = mesh.pod("other");
    let client = mesh.pod("client");
    http_server(&other, 9090, "0.0.0.0", "excluded");
    http_server(&other, 8080, "0.0.0.0", "captured");
    let client_sidecar = client
        .sidecar()
        .init_args(&["--exclude-outbound-ports", "9090"])
        .install();
    let before = counts(&client_sidecar, "outbound");

    let echoed = get(&client, &format!("http://{}:9090/excluded", other.ip()));
    assert_eq!(echoed["server"], "excluded");
    // Control: the same destination on a captured port.
    let echoed = get(&client, &format!("http://{}:8080/captured", other.ip()));
    assert_eq!(echoed["server"], "captured");
    assert_only_the_control_was_counted(&client_sidecar, "outbound", before);
}

#[test]
fn an_excluded_outbound_cidr_bypasses_the_proxy() {
    let mesh = Mesh::new("exclude-cidr");
    let excluded = mesh.pod("excluded");
    let captured = mesh.pod("captured");
    let client = mesh.pod("client");
    http_server(&excluded, 8080, "0.0.0.0", "excluded");
    http_server(&captured, 8080, "0.0.0.0", "captured");
    let cidr = format!("{}/32", excluded.ip());
    let client_sidecar = client
        .sidecar()
        .init_args(&["--exclude-outbound-cidrs", &cidr])
        .install();
    let before = counts(&client_sidecar, "outbound");
    assert_eq!(
        get(&client, &format!("http://{}:8080/", excluded.ip()))["server"],
        "excluded"
    );
    assert_eq!(
        get(&client, &format!("http://{}:8080/", captured.ip()))["server"],
        "captured"
    );
    assert_only_the_control_was_counted(&client_sidecar, "outbound", before);
}

#[test]
fn an_excluded_inbound_port_bypasses_the_server_sidecar() {
    let mesh = Mesh::new("exclude-inbound");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    http_server(&server, 8081, "0.0.0.0", "excluded");
    http_server(&server, 8080, "0.0.0.0", "captured");
    let server_sidecar = server
        .sidecar()
        .init_args(&["--exclude-inbound-ports", "8081"])
        .install();
    let before = counts(&server_sidecar, "inbound");
    // The client has no sidecar: plain traffic from outside the mesh.
    assert_eq!(
        get(&client, &format!("http://{}:8081/", server.ip()))["server"],
        "excluded"
    );
    assert_eq!(
        get(&client, &format!("http://{}:8080/", server.ip()))["server"],
        "captured"
    );
    assert_only_the_control_was_counted(&server_sidecar, "inbound", before);
}

#[test]
fn the_inbound_path_never_exposes_localhost_only_listeners() {
    let mesh = Mesh::new("localhost-only");
    let server = mesh.pod("server");
    let outsider = mesh.pod("outsider");
    let member = mesh.pod("member");
    http_server(&server, 8081, "127.0.0.1", "LOCALHOST-ONLY-SECRET");
    http_server(&server, 8082, "0.0.0.0", "public");
    let server_sidecar = server.sidecar().install();
    let _member_sidecar = member.sidecar().install();
    // Sanity: inside the pod, the localhost listener and the admin port answer.
    assert_eq!(
        get(&server, "http://127.0.0.1:8081/")["server"],
        "LOCALHOST-ONLY-SECRET"
    );
    server_sidecar.config_dump();

    // From a pod outside the mesh (no sidecar) and from a pod with a sidecar.
    for client in [&outsider, &member] {
        let echoed = get(client, &format!("http://{}:8082/", server.ip()));
        assert_eq!(echoed["server"], "public", "from {}", client.name());
        for port in [8081, 15000] {
            let out = client.exec(&format!(
                "curl -sS --max-time 15 -w '\\n%{{http_code}}' http://{}:{port}/config_dump",
                server.ip()
            ));
            let code = out.stdout.lines().last().unwrap_or_default();
            assert!(
                !out.stdout.contains("LOCALHOST-ONLY-SECRET") && code != "200",
                "from pod {}, {}:{port} (bound to 127.0.0.1 in the server pod) was reachable \
                 through the inbound path: {out}",
                client.name(),
                server.ip()
            );
        }
    }
}

#[test]
fn the_proxy_uid_is_never_captured() {
    let mesh = Mesh::new("uid-exempt");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let echo = mesh.service("echo").port(80, 8080).backend(&server).apply();
    http_server(&server, 8080, "0.0.0.0", "server");
    let _server_sidecar = server.sidecar().install();
    let _client_sidecar = client.sidecar().install();
    let url = format!("http://{}/", echo.vip());
    // The app (root) is captured and reaches the service.
    assert_eq!(get(&client, &url)["server"], "server");
    // UID 1337 (the proxy's own) is exempt: its connection to the VIP goes out uncaptured and
    // finds nothing, as the proxy's own upstream connections would.
    let out = client.exec(&format!(
        "setpriv --reuid=1337 --regid=1337 --clear-groups -- curl -sS --max-time 5 {url}"
    ));
    assert!(
        !out.success(),
        "a UID-1337 connection to the VIP was captured: {out}"
    );
}
