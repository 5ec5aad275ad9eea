//! HTTP through both sidecars: HTTP/1.1 to a service VIP (keep-alive, chunked bodies, balancing),
//! h2c with prior knowledge, proxy-generated errors, and a 100 MiB streamed upload with the
//! sidecars' memory staying flat.

use std::collections::BTreeSet;
use std::time::Duration;

use skiff_tests::counters::REQUESTS;
use skiff_tests::{json, Mesh, PathCounters, Pod, Sidecar};

/// A server pod running `http_server.py` on 8080, a client pod, service `echo` (VIP:80 → 8080),
/// and a sidecar in each pod.
struct EchoSetup {
    /// Owns the namespaces (pods and sidecars hold it alive too).
    _mesh: Mesh,
    client: Pod,
    echo: skiff_tests::Service,
    client_sidecar: Sidecar,
    server_sidecar: Sidecar,
}

fn echo_setup(label: &str) -> EchoSetup {
    let mesh = Mesh::new(label);
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
    EchoSetup {
        _mesh: mesh,
        client,
        echo,
        client_sidecar,
        server_sidecar,
    }
}

#[test]
fn http1_to_a_service_vip_reaches_the_server_through_both_sidecars() {
    let s = echo_setup("http1-vip");
    let counted = PathCounters::read(&s.client_sidecar, &s.server_sidecar, REQUESTS, &s.echo.id());
    let out = s.client.exec_ok(&format!(
        "curl -sS --max-time 30 -H 'Host: echo.default.svc.cluster.local' \
         -w '\\n%{{http_code}} %{{http_version}}' http://{}/some/path?q=1",
        s.echo.vip()
    ));
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status, "200 1.1", "status line; body: {body}");
    let echoed = json(body);
    assert_eq!(echoed["server"], "server");
    assert_eq!(echoed["method"], "GET");
    assert_eq!(echoed["path"], "/some/path?q=1");
    assert_eq!(echoed["host"], "echo.default.svc.cluster.local");
    counted.assert_grew_by(1.0);
    // The request is counted with its code and timed in the histogram.
    let metrics = s.client_sidecar.metrics();
    let outbound = [("direction", "outbound"), ("service", "default/echo")];
    assert!(
        metrics.sum(REQUESTS, &[outbound[0], outbound[1], ("code", "200")]) >= 1.0,
        "no code=\"200\" outbound request counted:\n{}",
        metrics.describe(REQUESTS)
    );
    assert!(
        metrics.sum("skiff_request_duration_seconds_count", &outbound) >= 1.0,
        "request duration histogram has no outbound sample:\n{}",
        metrics.describe("skiff_request_duration_seconds_count")
    );
}

#[test]
fn http1_keep_alive_chunked_bodies_and_declared_protocol() {
    let mesh = Mesh::new("http1-keepalive");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let echo = mesh
        .service("echo")
        .port(80, 8080)
        .app_protocol("http")
        .backend(&server)
        .apply();
    server.spawn_python("http", "http_server.py", &["--port", "8080"]);
    server.wait_listening(8080);
    let server_sidecar = server.sidecar().install();
    let client_sidecar = client.sidecar().install();
    let counted = PathCounters::read(&client_sidecar, &server_sidecar, REQUESTS, &echo.id());

    // Two requests on one client connection: curl reuses it when the proxy keeps it alive.
    let vip = echo.vip();
    let out = client.exec(&format!(
        "curl -sS -v --max-time 30 http://{vip}/first http://{vip}/second"
    ));
    assert!(out.success(), "keep-alive requests failed: {out}");
    assert!(
        out.stdout.contains("\"/first\"") && out.stdout.contains("\"/second\""),
        "{out}"
    );
    assert!(
        out.stderr.contains("Re-using existing connection")
            || out.stderr.contains("Reusing existing connection"),
        "the client sidecar closed the keep-alive connection after the first request: {out}"
    );

    // A chunked request body of 300 000 bytes arrives whole.
    let out = client.exec_ok(&format!(
        "head -c 300000 /dev/zero | curl -sS --max-time 30 -H 'Transfer-Encoding: chunked' \
         --data-binary @- http://{vip}/post"
    ));
    let echoed = json(&out);
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["body_bytes"], 300000);

    // A Content-Length body sent only after `100 Continue` (curl waits up to 30 s for it). The
    // proxy may answer the `Expect` itself, as Envoy does, so the header is not checked upstream.
    let out = client.exec_ok(&format!(
        "head -c 2000000 /dev/zero | curl -sS --max-time 60 --expect100-timeout 30 \
         -H 'Expect: 100-continue' -H 'Content-Length: 2000000' --data-binary @- \
         -w '\\n%{{http_code}}' http://{vip}/expect"
    ));
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{out}");
    let echoed = json(body);
    assert_eq!(echoed["body_bytes"], 2000000);
    counted.assert_grew_by(4.0);
}

#[test]
fn http1_requests_are_balanced_over_every_ready_backend() {
    let mesh = Mesh::new("http1-balance");
    let a = mesh.pod("server-a");
    let b = mesh.pod("server-b");
    let client = mesh.pod("client");
    let echo = mesh
        .service("echo")
        .port(80, 8080)
        .backend(&a)
        .backend(&b)
        .apply();
    for pod in [&a, &b] {
        pod.spawn_python(
            "http",
            "http_server.py",
            &["--port", "8080", "--name", pod.name()],
        );
        pod.wait_listening(8080);
    }
    let _sidecar_a = a.sidecar().install();
    let _sidecar_b = b.sidecar().install();
    let _client_sidecar = client.sidecar().install();
    let mut seen = BTreeSet::new();
    for i in 0..10 {
        // A new connection each time, so connection reuse cannot pin one backend.
        let out = client.exec_ok(&format!(
            "curl -sS --max-time 30 http://{}/n/{i}",
            echo.vip()
        ));
        seen.insert(json(&out)["server"].as_str().unwrap().to_string());
    }
    let expected: BTreeSet<String> = ["server-a", "server-b"].map(String::from).into();
    assert_eq!(seen, expected, "10 requests did not reach both backends");
}

#[test]
fn http2_prior_knowledge_is_http2_end_to_end() {
    let mesh = Mesh::new("http2-h2c");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let svc = mesh.service("h2").port(80, 8081).backend(&server).apply();
    // The server speaks only HTTP/2: any answer proves HTTP/2 reached it.
    server.spawn_python(
        "h2",
        "h2_server.py",
        &["--port", "8081", "--name", "h2-server"],
    );
    server.wait_listening(8081);
    let server_sidecar = server.sidecar().install();
    let client_sidecar = client.sidecar().install();
    let counted = PathCounters::read(&client_sidecar, &server_sidecar, REQUESTS, &svc.id());

    let out = client.exec_ok(&format!(
        "curl -sS --max-time 30 --http2-prior-knowledge -w '\\n%{{http_code}} %{{http_version}}' \
         http://{}/h2/path",
        svc.vip()
    ));
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(
        status, "200 2",
        "client side was not answered over HTTP/2; body: {body}"
    );
    let echoed = json(body);
    assert_eq!(echoed["proto"], "HTTP/2");
    assert_eq!(echoed["path"], "/h2/path");
    assert_eq!(echoed["method"], "GET");
    counted.assert_grew_by(1.0);

    // Multiplexed streams: 200 requests, 10 at a time on each of 2 connections.
    let counted = PathCounters::read(&client_sidecar, &server_sidecar, REQUESTS, &svc.id());
    let out = client.exec(&format!(
        "h2load -n 200 -c 2 -m 10 http://{}/load",
        svc.vip()
    ));
    assert!(
        out.stdout.contains("200 succeeded, 0 failed, 0 errored"),
        "h2load through the sidecars: {out}"
    );
    counted.assert_grew_by(200.0);
}

#[test]
fn http2_declared_by_app_protocol_h2c() {
    let mesh = Mesh::new("http2-declared");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let svc = mesh
        .service("h2")
        .port(80, 8081)
        .app_protocol("kubernetes.io/h2c")
        .backend(&server)
        .apply();
    server.spawn_python("h2", "h2_server.py", &["--port", "8081"]);
    server.wait_listening(8081);
    let server_sidecar = server.sidecar().install();
    let client_sidecar = client.sidecar().install();
    let counted = PathCounters::read(&client_sidecar, &server_sidecar, REQUESTS, &svc.id());
    let out = client.exec_ok(&format!(
        "curl -sS --max-time 30 --http2-prior-knowledge -d hello http://{}/declared",
        svc.vip()
    ));
    let echoed = json(&out);
    assert_eq!(echoed["proto"], "HTTP/2");
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["body_bytes"], 5);
    counted.assert_grew_by(1.0);
}

#[test]
fn responses_generated_by_the_proxy_name_the_reason() {
    let mesh = Mesh::new("http-errors");
    let server = mesh.pod("server");
    let idle = mesh.pod("idle");
    let client = mesh.pod("client");
    // No ready endpoint at all.
    let unready = mesh
        .service("unready")
        .port(80, 8080)
        .unready_backend(&server)
        .apply();
    // A ready endpoint whose app does not listen (its sidecar does).
    let closed = mesh
        .service("closed")
        .port(80, 8080)
        .app_protocol("http")
        .backend(&idle)
        .apply();
    let _server_sidecar = server.sidecar().install();
    let _idle_sidecar = idle.sidecar().install();
    let _client_sidecar = client.sidecar().install();
    for svc in [&unready, &closed] {
        let out = client.exec(&format!(
            "curl -sS -D - -o /dev/null --max-time 30 http://{}/x",
            svc.vip()
        ));
        let status: u16 = out
            .stdout
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("service {}: no HTTP response: {out}", svc.name()));
        assert!(
            status >= 500,
            "service {}: expected a 5xx, got {status}: {out}",
            svc.name()
        );
        let reason = out.stdout.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-skiff-error:")
                .map(|v| v.trim().to_string())
        });
        assert!(
            reason.as_deref().is_some_and(|r| !r.is_empty()),
            "service {}: {status} without an x-skiff-error header:\n{}",
            svc.name(),
            out.stdout
        );
    }
}

/// Samples the sidecars' RSS (KiB) every 20 ms while `proc` runs; returns the maximum of each.
fn max_rss_while(proc: &skiff_tests::Proc, sidecars: &[&Sidecar]) -> Vec<u64> {
    let mut max: Vec<u64> = sidecars.iter().map(|s| s.rss_kib().unwrap_or(0)).collect();
    while proc.is_running() {
        for (m, sidecar) in max.iter_mut().zip(sidecars) {
            *m = (*m).max(sidecar.rss_kib().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    max
}

/// Panics unless `max` stays below `idle + 64 MiB`: bodies must stream, not buffer.
fn assert_flat(what: &str, idle: u64, max: u64, bytes: u64) {
    const BOUND_KIB: u64 = 64 * 1024;
    eprintln!("{what}: RSS {idle} KiB idle, {max} KiB max while moving {bytes} bytes");
    assert!(
        max < idle + BOUND_KIB,
        "{what} RSS grew from {idle} KiB to {max} KiB while moving {bytes} bytes: bodies are not \
         streamed"
    );
}

#[test]
fn a_100_mib_streamed_upload_arrives_whole_and_sidecar_memory_stays_flat() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let s = echo_setup("http-upload");
    // Warm up pools and buffers so the idle RSS is the steady state.
    s.client.exec_ok(&format!(
        "curl -sS --max-time 30 http://{}/warmup",
        s.echo.vip()
    ));
    s.client.exec_ok(&format!(
        "head -c 1000000 /dev/zero | curl -sS --max-time 30 -T - http://{}/upload",
        s.echo.vip()
    ));
    let counted = PathCounters::read(&s.client_sidecar, &s.server_sidecar, REQUESTS, &s.echo.id());
    let idle_client = s.client_sidecar.rss_kib().expect("client sidecar running");
    let idle_server = s.server_sidecar.rss_kib().expect("server sidecar running");

    // `-T -` streams stdin as a chunked PUT with `Expect: 100-continue`. The sink is slowed
    // (1 ms per 64 KiB read), so a proxy without back-pressure would have to buffer the body.
    let upload = s.client.spawn_sh(
        "upload",
        &format!(
            "head -c {SIZE} /dev/zero | curl -sS --max-time 600 -T - -w '\\n%{{http_code}}\\n' \
             http://{}/upload?throttle_ms=1",
            s.echo.vip()
        ),
    );
    let max = max_rss_while(&upload, &[&s.client_sidecar, &s.server_sidecar]);
    let status = upload.wait_exit(Duration::from_secs(1));
    let log = upload.log();
    assert!(status.success(), "upload failed ({status}): {log}");
    let mut lines = log.lines().filter(|l| !l.trim().is_empty());
    let body = lines.next().unwrap_or_default();
    let code = lines.next().unwrap_or_default();
    assert_eq!(code, "200", "upload answered {code}: {log}");
    assert_eq!(
        json(body)["received"],
        SIZE,
        "the sink did not receive every byte"
    );
    counted.assert_grew_by(1.0);
    assert_flat("client sidecar (upload)", idle_client, max[0], SIZE);
    assert_flat("server sidecar (upload)", idle_server, max[1], SIZE);
}

#[test]
fn a_100_mib_download_arrives_whole_and_sidecar_memory_stays_flat() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let s = echo_setup("http-download");
    s.client.exec_ok(&format!(
        "curl -sS --max-time 30 -o /dev/null http://{}/bytes?n=100000",
        s.echo.vip()
    ));
    let idle_client = s.client_sidecar.rss_kib().expect("client sidecar running");
    let idle_server = s.server_sidecar.rss_kib().expect("server sidecar running");
    // curl reads slowly (--limit-rate), so a proxy without back-pressure would buffer.
    let download = s.client.spawn_sh(
        "download",
        &format!(
            "curl -sS --max-time 600 --limit-rate 40M -o /dev/null \
             -w '%{{http_code}} %{{size_download}}\\n' http://{}/bytes?n={SIZE}",
            s.echo.vip()
        ),
    );
    let max = max_rss_while(&download, &[&s.client_sidecar, &s.server_sidecar]);
    let status = download.wait_exit(Duration::from_secs(1));
    let log = download.log();
    assert!(status.success(), "download failed ({status}): {log}");
    assert_eq!(log.trim(), format!("200 {SIZE}"), "download incomplete");
    assert_flat("client sidecar (download)", idle_client, max[0], SIZE);
    assert_flat("server sidecar (download)", idle_server, max[1], SIZE);
}
