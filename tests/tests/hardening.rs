//! Malformed and oversized HTTP/1 requests through the client sidecar: each is refused by the
//! sidecar itself with the right status (none reaches the server), and the sidecar keeps
//! serving valid requests afterwards.

use skiff_tests::counters::REQUESTS;
use skiff_tests::Mesh;

#[test]
fn malformed_http1_requests_are_refused_by_the_sidecar_and_never_reach_the_server() {
    let mesh = Mesh::new("hardening");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let echo = mesh.service("echo").port(80, 8080).backend(&server).apply();
    server.spawn_python(
        "http",
        "http_server.py",
        &["--port", "8080", "--name", "server"],
    );
    server.wait_listening(8080);
    let server_sidecar = server.sidecar().install();
    let client_sidecar = client.sidecar().install();
    let script = skiff_tests::python::script("raw_http.py");
    let send = |case: &str| {
        client
            .exec_ok(&format!(
                "python3 {} {} 80 {case}",
                script.display(),
                echo.vip()
            ))
            .trim()
            .to_string()
    };
    let table = [
        (
            "huge-header",
            "STATUS HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            "too-many-headers",
            "STATUS HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            "conflicting-content-length",
            "STATUS HTTP/1.1 400 Bad Request",
        ),
        ("space-in-header-name", "STATUS HTTP/1.1 400 Bad Request"),
    ];
    for (case, expected) in table {
        assert_eq!(send(case), expected, "{case}");
    }
    let inbound = [("direction", "inbound")];
    assert_eq!(
        server_sidecar.metric(REQUESTS, &inbound),
        0.0,
        "a malformed request reached the server's sidecar"
    );

    assert_eq!(
        send("valid"),
        "STATUS HTTP/1.1 200 OK",
        "the sidecar still serves after the abuse"
    );
    client_sidecar.wait_metric(REQUESTS, &[("direction", "outbound"), ("code", "200")], 1.0);
    server_sidecar.wait_metric(REQUESTS, &inbound, 1.0);
}
