//! WebSocket (Python websockets): the HTTP/1.1 `Upgrade` is tunnelled through both sidecars and
//! messages flow both ways afterwards.

use skiff_tests::counters::REQUESTS;
use skiff_tests::{json, python, Mesh, PathCounters};

#[test]
fn websocket_echo_through_both_sidecars() {
    let mesh = Mesh::new("websocket");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let svc = mesh.service("ws").port(80, 8765).backend(&server).apply();
    server.spawn_python("ws", "ws_server.py", &["--port", "8765"]);
    server.wait_listening(8765);
    let server_sidecar = server.sidecar().install();
    let client_sidecar = client.sidecar().install();
    let counted = PathCounters::read(&client_sidecar, &server_sidecar, REQUESTS, &svc.id());

    let url = format!("ws://{}/chat", svc.vip());
    let out = client.exec(&python::command(
        "ws_client.py",
        &[&url, "--messages", "40"],
    ));
    assert!(out.success(), "websocket client failed: {out}");
    let result = json(&out.stdout);
    assert_eq!(result["status"], 101, "{result}");
    assert_eq!(result["echoed"], 40, "{result}");
    assert_eq!(result["mismatches"], 0, "{result}");
    assert_eq!(
        result["big_ok"], true,
        "the 1 MiB message did not come back intact"
    );
    counted.assert_grew_by(1.0);
}
