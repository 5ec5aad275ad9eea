//! Opaque TCP through both sidecars: a server-speaks-first protocol on a well-known port (the
//! proxy must not wait for the client's first bytes) and a bidirectional copy with half-close.

use skiff_tests::counters::TCP_OPENED;
use skiff_tests::{json, python, Mesh, PathCounters};

#[test]
fn server_speaks_first_on_3306_reaches_the_client_before_it_sends() {
    let mesh = Mesh::new("tcp-banner");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let db = mesh.service("db").port(3306, 3306).backend(&server).apply();
    server.spawn_python(
        "tcp",
        "tcp_server.py",
        &["--port", "3306", "--banner", "220 skiff-db ready"],
    );
    server.wait_listening(3306);
    let server_sidecar = server.sidecar().install();
    let client_sidecar = client.sidecar().install();
    let counted = PathCounters::read(&client_sidecar, &server_sidecar, TCP_OPENED, &db.id());

    // The client reads the banner before sending anything (bounded by its 30 s socket timeout).
    let out = client.exec(&python::command(
        "tcp_client.py",
        &[&db.vip().to_string(), "3306", "--banner"],
    ));
    assert!(out.success(), "banner client failed: {out}");
    let result = json(&out.stdout);
    assert_eq!(result["banner"], "220 skiff-db ready", "{result}");
    assert_eq!(result["reply"], "250 ok HELO skiff", "{result}");
    assert_eq!(result["after_half_close"], "received 12", "{result}");
    counted.assert_grew_by(1.0);
    let metrics = client_sidecar.metrics();
    let outbound = [("direction", "outbound"), ("service", "default/db")];
    for name in [
        "skiff_tcp_sent_bytes_total",
        "skiff_tcp_received_bytes_total",
    ] {
        assert!(
            metrics.sum(name, &outbound) > 0.0,
            "{name} counted nothing for default/db:\n{}",
            metrics.describe(name)
        );
    }
}

/// Service `raw` on port 9000 (not a server-speaks-first port: the proxy detects), a TCP server
/// behind it, sidecars on both pods; the client sends `line`, 4 MiB of bulk, then half-closes.
fn opaque_exchange(label: &str, line: &str) {
    let mesh = Mesh::new(label);
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let svc = mesh
        .service("raw")
        .port(9000, 9000)
        .backend(&server)
        .apply();
    server.spawn_python("tcp", "tcp_server.py", &["--port", "9000"]);
    server.wait_listening(9000);
    let server_sidecar = server.sidecar().install();
    let client_sidecar = client.sidecar().install();
    let counted = PathCounters::read(&client_sidecar, &server_sidecar, TCP_OPENED, &svc.id());

    // The line is answered while the connection is open; the server only sends its byte count
    // after it sees EOF, so the reply proves the half-close was passed on and the other
    // direction kept flowing.
    let out = client.exec(&python::command(
        "tcp_client.py",
        &[
            &svc.vip().to_string(),
            "9000",
            "--line",
            line,
            "--bulk",
            "4194304",
        ],
    ));
    assert!(out.success(), "tcp client failed: {out}");
    let result = json(&out.stdout);
    assert_eq!(result["reply"], format!("250 ok {line}"), "{result}");
    let sent = 4194304 + line.len() + 2;
    assert_eq!(
        result["after_half_close"],
        format!("received {sent}"),
        "{result}"
    );
    counted.assert_grew_by(1.0);
}

#[test]
fn opaque_tcp_copies_both_ways_and_propagates_half_close() {
    opaque_exchange("tcp-halfclose", "hello skiff");
}

/// `HELO skiff` looks like `METHOD target` but has no HTTP version: it is not an HTTP/1 request
/// line, so detection must fall back to opaque TCP (SMTP on a non-standard port, say).
#[test]
fn a_first_line_without_an_http_version_is_opaque_tcp() {
    opaque_exchange("tcp-not-http", "HELO skiff");
}
