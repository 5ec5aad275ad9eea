//! gRPC (Python grpcio, h2c) through both sidecars: unary and server streaming, with trailing
//! metadata and a non-OK status carried in trailers.

use skiff_tests::counters::REQUESTS;
use skiff_tests::{json, python, Mesh, PathCounters};

fn grpc_through_sidecars(label: &str, app_protocol: Option<&str>) {
    let mesh = Mesh::new(label);
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let mut svc = mesh.service("echo-grpc").port(50051, 50051);
    if let Some(protocol) = app_protocol {
        svc = svc.app_protocol(protocol);
    }
    let svc = svc.backend(&server).apply();
    server.spawn_python("grpc", "grpc_server.py", &["--port", "50051"]);
    server.wait_listening(50051);
    let server_sidecar = server.sidecar().install();
    let client_sidecar = client.sidecar().install();
    let counted = PathCounters::read(&client_sidecar, &server_sidecar, REQUESTS, &svc.id());

    let out = client.exec(&python::command(
        "grpc_client.py",
        &[&svc.addr(), "--count", "250"],
    ));
    assert!(out.success(), "grpc client failed: {out}");
    let result = json(&out.stdout);
    assert_eq!(result["unary"], "echo:hello", "{result}");
    assert_eq!(result["unary_code"], "OK");
    assert_eq!(
        result["unary_trailers"]["x-echo-trailer"], "unary-done",
        "{result}"
    );
    assert_eq!(result["stream_count"], 250, "{result}");
    assert_eq!(result["stream_first"], "msg-0");
    assert_eq!(result["stream_last"], "msg-249");
    assert_eq!(result["stream_code"], "OK");
    assert_eq!(
        result["stream_trailers"]["x-echo-trailer"], "stream-done",
        "{result}"
    );
    assert_eq!(result["stream_trailers"]["x-echo-count"], "250", "{result}");
    assert_eq!(result["fail_code"], "NOT_FOUND", "{result}");
    assert_eq!(result["fail_details"], "no such thing", "{result}");
    counted.assert_grew_by(3.0);
}

#[test]
fn grpc_unary_and_server_streaming_with_trailers_detected() {
    grpc_through_sidecars("grpc-detected", None);
}

#[test]
fn grpc_unary_and_server_streaming_with_trailers_declared() {
    grpc_through_sidecars("grpc-declared", Some("grpc"));
}
