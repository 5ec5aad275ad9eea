//! The harness itself, without sidecars: pods reach each other on the bridge, a VIP is not
//! reachable without capture, every test program works directly (so a failure with sidecars is
//! the proxy's), and cleanup leaves nothing behind.

use std::path::Path;

use skiff_tests::{json, python, Mesh};

#[test]
fn pods_reach_each_other_and_vips_are_unreachable_without_capture() {
    let mesh = Mesh::new("harness-direct");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    assert_ne!(server.ip(), client.ip());
    let echo = mesh.service("echo").port(80, 8080).backend(&server).apply();
    server.spawn_python(
        "http",
        "http_server.py",
        &["--port", "8080", "--name", "direct"],
    );
    server.wait_listening(8080);

    let body = client.exec_ok(&format!(
        "curl -sS --max-time 20 -H 'Host: echo.example' http://{}:8080/hello?x=1",
        server.ip()
    ));
    let echoed = json(&body);
    assert_eq!(echoed["server"], "direct");
    assert_eq!(echoed["path"], "/hello?x=1");
    assert_eq!(echoed["host"], "echo.example");

    // Nothing owns the VIP: without capture the connection must fail (bounded by --max-time).
    let out = client.exec(&format!("curl -sS --max-time 5 http://{}/", echo.vip()));
    assert!(
        !out.success(),
        "VIP {} answered without any sidecar: {out}",
        echo.vip()
    );

    // The policy was written as Kubernetes documents.
    let yaml = std::fs::read_to_string(mesh.policy_dir().join("echo.yaml")).unwrap();
    assert!(yaml.contains("kind: Service") && yaml.contains("kind: EndpointSlice"));
    assert!(yaml.contains(&format!("clusterIP: {}", echo.vip())));
    assert!(yaml.contains(&server.ip().to_string()));
}

#[test]
fn every_test_program_works_directly() {
    let mesh = Mesh::new("harness-programs");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let ip = server.ip();
    server.spawn_python("h2", "h2_server.py", &["--port", "8081"]);
    server.spawn_python("grpc", "grpc_server.py", &["--port", "50051"]);
    server.spawn_python("ws", "ws_server.py", &["--port", "8765"]);
    server.spawn_python(
        "tcp",
        "tcp_server.py",
        &["--port", "3306", "--banner", "220 hi"],
    );
    server.spawn_python("http", "http_server.py", &["--port", "8080"]);
    for port in [8081, 50051, 8765, 3306, 8080] {
        server.wait_listening(port);
    }

    let out = client.exec_ok(&format!(
        "curl -sS --max-time 20 --http2-prior-knowledge -w '\\n%{{http_version}}' http://{ip}:8081/h2"
    ));
    let (body, version) = out.rsplit_once('\n').unwrap();
    assert_eq!(version, "2");
    assert_eq!(json(body)["proto"], "HTTP/2");

    let out = client.exec_ok(&format!("h2load -n 20 -c 2 -m 5 http://{ip}:8081/load"));
    assert!(out.contains("20 succeeded"), "h2load: {out}");

    let grpc = json(&client.exec_ok(&python::command(
        "grpc_client.py",
        &[&format!("{ip}:50051")],
    )));
    assert_eq!(grpc["unary"], "echo:hello");
    assert_eq!(grpc["unary_trailers"]["x-echo-trailer"], "unary-done");
    assert_eq!(grpc["stream_count"], 100);
    assert_eq!(grpc["stream_trailers"]["x-echo-count"], "100");
    assert_eq!(grpc["fail_code"], "NOT_FOUND");

    let ws = json(&client.exec_ok(&python::command(
        "ws_client.py",
        &[&format!("ws://{ip}:8765/chat")],
    )));
    assert_eq!(ws["status"], 101);
    assert_eq!(ws["echoed"], 20);
    assert_eq!(ws["mismatches"], 0);
    assert_eq!(ws["big_ok"], true);

    let tcp = json(&client.exec_ok(&python::command(
        "tcp_client.py",
        &[&ip.to_string(), "3306", "--banner", "--bulk", "100000"],
    )));
    assert_eq!(tcp["banner"], "220 hi");
    assert_eq!(tcp["reply"], "250 ok HELO skiff");
    assert_eq!(tcp["after_half_close"], "received 100012");

    let out = client.exec(&format!(
        "curl -sS -v --max-time 20 http://{ip}:8080/a http://{ip}:8080/b"
    ));
    assert!(
        out.success() && out.stderr.contains("Re-using existing connection"),
        "{out}"
    );

    let out = client.exec_ok(&format!(
        "head -c 5000000 /dev/zero | curl -sS --max-time 60 -T - http://{ip}:8080/upload"
    ));
    assert_eq!(json(&out)["received"], 5_000_000);
}

#[test]
fn dropping_the_mesh_kills_its_processes_and_deletes_its_namespaces() {
    let (namespaces, pid, dir) = {
        let mesh = Mesh::new("harness-cleanup");
        let pod = mesh.pod("sleeper");
        let proc = pod.spawn_sh("sleep", "sleep 600 & sleep 600");
        assert!(proc.is_running());
        assert!(proc.rss_kib().is_some());
        (mesh.namespaces(), proc.pid(), mesh.dir().to_path_buf())
    };
    for ns in &namespaces {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} left behind"
        );
        assert!(
            ns.len() <= 15,
            "namespace name {ns} longer than 15 characters"
        );
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} left running"
    );
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
}

#[test]
fn two_meshes_in_one_process_do_not_collide() {
    let a = Mesh::new("harness-a");
    let b = Mesh::new("harness-b");
    assert_ne!(a.id(), b.id());
    let pa = a.pod("p");
    let pb = b.pod("p");
    let pb2 = b.pod("q");
    assert_ne!(pa.ns(), pb.ns());
    pb.spawn_python("http", "http_server.py", &["--port", "8080"]);
    pb.wait_listening(8080);
    // Each mesh is its own network: b's pods reach each other, a's pod cannot reach them.
    pb2.exec_ok(&format!("curl -sS --max-time 10 http://{}:8080/", pb.ip()));
    let out = pa.exec(&format!("curl -sS --max-time 3 http://{}:8080/", pb.ip()));
    assert!(!out.success(), "mesh a reached a pod of mesh b: {out}");
}

#[test]
fn namespaces_of_a_dead_run_are_swept() {
    skiff_tests::require_root();
    // Ids of real meshes have at most 4 pid digits, so this one is never a live mesh's.
    let id = format!("skt{}x0", 10_000 + std::process::id() % 90_000);
    let marker = Path::new("/run/skiff-tests").join(&id);
    std::fs::create_dir_all("/run/skiff-tests").unwrap();
    // pid 0 is never a live test process.
    std::fs::write(&marker, "0 0\n").unwrap();
    for ns in [format!("{id}-p1"), format!("{id}-net")] {
        skiff_tests::process::run_ok(&["ip", "netns", "add", &ns]);
    }
    skiff_tests::mesh::sweep_stale();
    for ns in [format!("{id}-p1"), format!("{id}-net")] {
        assert!(
            !Path::new("/run/netns").join(&ns).exists(),
            "stale {ns} not swept"
        );
    }
    assert!(!marker.exists());
}
