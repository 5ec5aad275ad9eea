//! `make demo`: the local mesh in two network namespaces. A client pod calls the `echo`
//! service's virtual IP; both pods run a sidecar; the demo shows one call's headers, a short
//! load run through both sidecars, and what each sidecar measured.

use skiff_tests::Mesh;

fn main() {
    let mesh = Mesh::new("demo");
    let server = mesh.pod("echo");
    let client = mesh.pod("client");
    let echo = mesh
        .service("echo")
        .port(80, 8080)
        .app_protocol("http")
        .backend(&server)
        .apply();
    server.spawn_python(
        "echo-server",
        "http_server.py",
        &["--port", "8080", "--name", "echo"],
    );
    server.wait_listening(8080);
    let server_sidecar = server.sidecar().install();
    let client_sidecar = client.sidecar().install();

    println!("== pods (network namespaces, one bridge) ==");
    println!(
        "client  {}  sidecar pid {}",
        client.ip(),
        client_sidecar.pid()
    );
    println!(
        "echo    {}  sidecar pid {}  app on :8080",
        server.ip(),
        server_sidecar.pid()
    );
    println!(
        "service echo: VIP {} -> {}:8080 (only reachable through capture)\n",
        echo.addr(),
        server.ip()
    );

    println!(
        "== policy given to both sidecars ({}) ==",
        mesh.policy_dir().display()
    );
    for entry in std::fs::read_dir(mesh.policy_dir())
        .expect("policy dir")
        .flatten()
    {
        println!(
            "{}",
            std::fs::read_to_string(entry.path()).unwrap_or_default()
        );
    }

    println!(
        "== one call: curl http://{}/hello from the client pod ==",
        echo.addr()
    );
    println!(
        "{}",
        client.exec_ok(&format!(
            "curl -sS -i --max-time 10 http://{}/hello",
            echo.addr()
        ))
    );

    println!("== 2000 requests, 4 connections (h2load --h1) through both sidecars ==");
    let load = client.exec_ok(&format!("h2load --h1 -n 2000 -c 4 http://{}/", echo.addr()));
    for line in load.lines().filter(|l| {
        l.starts_with("finished in")
            || l.starts_with("requests:")
            || l.starts_with("status codes:")
            || l.contains("time for request")
    }) {
        println!("{line}");
    }

    for (name, sidecar) in [
        ("client sidecar (outbound)", &client_sidecar),
        ("echo sidecar (inbound)", &server_sidecar),
    ] {
        println!("\n== {name}: /metrics ==");
        let metrics = sidecar.metrics();
        for metric in [
            "skiff_requests_total",
            "skiff_request_duration_seconds_count",
            "skiff_tcp_connections_opened_total",
        ] {
            println!("{}", metrics.describe(metric));
        }
    }
    println!("\nThe demo tears the namespaces down on exit. `make test` runs the whole suite.");
}
