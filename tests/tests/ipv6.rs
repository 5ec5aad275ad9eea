//! The IPv6 path end to end, in dual-stack meshes: capture with ip6tables, the original
//! destination of an IPv6 connection, IPv6 VIPs from `clusterIPs` with `addressType: IPv6`
//! EndpointSlices, passthrough of unknown IPv6 destinations, and an inbound path that forwards to
//! the pod's IPv6 address, never to `::1`.

use skiff_tests::counters::{PathCounters, REQUESTS, TCP_OPENED};
use skiff_tests::{json, Mesh, Pod};

fn http_server(pod: &Pod, port: u16, bind: &str, name: &str) {
    let port_arg = port.to_string();
    pod.spawn_python(
        &format!("http-{port}"),
        "http_server.py",
        &["--port", &port_arg, "--bind", bind, "--name", name],
    );
    pod.wait_listening(port);
}

/// `curl -g` (IPv6 literals in brackets are not globs), failing on HTTP errors.
fn get(pod: &Pod, url: &str) -> serde_json::Value {
    json(&pod.exec_ok(&format!("curl -g -sS --fail --max-time 30 '{url}'")))
}

/// Asserts the SKIFF jumps of `skiff-proxy init` are in the pod's ip6tables nat table, so a
/// failure below is not a capture that was silently skipped.
fn assert_ipv6_capture_installed(pod: &Pod) {
    let rules = pod.ip6tables_nat();
    assert!(
        rules.contains("-A OUTPUT -p tcp -j SKIFF_OUTPUT")
            && rules.contains("-A PREROUTING -p tcp -j SKIFF_INBOUND"),
        "no IPv6 capture in pod {}:\n{rules}",
        pod.name()
    );
}

#[test]
fn dual_stack_pods_reach_each_other_over_ipv6_and_ipv6_vips_need_capture() {
    let mesh = Mesh::new_dual_stack("ipv6-harness");
    assert!(mesh.is_dual_stack());
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let server6 = server.ip6().expect("a dual-stack pod has an IPv6 address");
    assert_ne!(Some(server6), client.ip6());
    let echo = mesh.service("echo").port(80, 8080).backend(&server).apply();
    http_server(&server, 8080, "::", "direct");

    // Both families work pod to pod, without sidecars.
    assert_eq!(
        get(&client, &format!("http://[{server6}]:8080/v6"))["server"],
        "direct"
    );
    assert_eq!(
        get(&client, &format!("http://{}:8080/v4", server.ip()))["server"],
        "direct"
    );
    // The default IPv6 route goes via the bridge.
    let route = client.exec_ok("ip -6 route show default");
    let bridge6 = mesh.bridge_ip6().unwrap().to_string();
    assert!(route.contains(&bridge6), "default IPv6 route: {route}");

    // Nothing owns the IPv6 VIP: without capture the connection must fail.
    let out = client.exec(&format!(
        "curl -g -sS --max-time 5 'http://{}/'",
        echo.addr6()
    ));
    assert!(
        !out.success(),
        "IPv6 VIP {} answered without any sidecar: {out}",
        echo.vip6()
    );

    // The policy is a dual-stack Service with one EndpointSlice per family.
    let yaml = std::fs::read_to_string(mesh.policy_dir().join("echo.yaml")).unwrap();
    let cluster_ips = format!("clusterIPs:\n  - {}\n  - {}\n", echo.vip(), echo.vip6());
    assert!(yaml.contains(&cluster_ips), "{yaml}");
    assert!(yaml.contains("ipFamilies:\n  - IPv4\n  - IPv6\n"), "{yaml}");
    assert!(yaml.contains("addressType: IPv4\n"), "{yaml}");
    assert!(yaml.contains("addressType: IPv6\n"), "{yaml}");
    assert!(yaml.contains(&format!("\"{server6}\"")), "{yaml}");
}

#[test]
fn http_to_an_ipv6_vip_goes_through_both_sidecars() {
    let mesh = Mesh::new_dual_stack("ipv6-vip");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let echo = mesh.service("echo").port(80, 8080).backend(&server).apply();
    http_server(&server, 8080, "::", "server");
    let server_sidecar = server.sidecar().install();
    let client_sidecar = client.sidecar().install();
    assert_ipv6_capture_installed(&client);
    assert_ipv6_capture_installed(&server);

    // Several requests: the client's sidecar balances over the service's endpoints.
    let counters = PathCounters::read(&client_sidecar, &server_sidecar, REQUESTS, &echo.id());
    for i in 0..4 {
        let echoed = get(&client, &format!("http://{}/v6/{i}", echo.addr6()));
        assert_eq!(echoed["server"], "server");
        assert_eq!(echoed["path"], format!("/v6/{i}"));
        // curl leaves the default port out of Host.
        assert_eq!(echoed["host"], format!("[{}]", echo.vip6()));
    }
    counters.assert_grew_by(4.0);

    // The IPv4 VIP of the same service still works with two pod IPs.
    let counters = PathCounters::read(&client_sidecar, &server_sidecar, REQUESTS, &echo.id());
    let echoed = get(&client, &format!("http://{}/v4", echo.addr()));
    assert_eq!(echoed["server"], "server");
    counters.assert_grew_by(1.0);
}

#[test]
fn an_ipv6_only_service_is_served_over_ipv6_end_to_end() {
    let mesh = Mesh::new_dual_stack("ipv6-only");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let server6 = server.ip6().unwrap();
    let echo = mesh
        .service("echo6")
        .ipv6_only()
        .port(80, 8080)
        .backend(&server)
        .apply();
    let yaml = std::fs::read_to_string(mesh.policy_dir().join("echo6.yaml")).unwrap();
    assert!(!yaml.contains("addressType: IPv4"), "{yaml}");
    let app = server.spawn_python(
        "http-8080",
        "http_server.py",
        &["--port", "8080", "--bind", "::", "--name", "v6-server"],
    );
    server.wait_listening(8080);
    let server_sidecar = server.sidecar().install();
    let client_sidecar = client.sidecar().install();

    let counters = PathCounters::read(&client_sidecar, &server_sidecar, REQUESTS, &echo.id());
    let echoed = get(&client, &format!("http://{}/only-v6", echo.addr6()));
    assert_eq!(echoed["server"], "v6-server");
    assert_eq!(echoed["path"], "/only-v6");
    counters.assert_grew_by(1.0);
    // The server's sidecar reached the app at the pod's IPv6 address (the app logs its peer,
    // which is that same local address), not over IPv4 and not at ::1.
    let log = app.log();
    let line = log
        .lines()
        .find(|l| l.contains("/only-v6"))
        .unwrap_or_else(|| panic!("the app did not log the request:\n{log}"));
    assert!(
        line.starts_with(&format!("{server6} ")),
        "the app was reached from {line:?}, not from {server6}"
    );
}

#[test]
fn an_unknown_ipv6_destination_passes_through() {
    let mesh = Mesh::new_dual_stack("ipv6-passthrough");
    let other = mesh.pod("other");
    let client = mesh.pod("client");
    // A service exists, but `other` is in none.
    let known = mesh.pod("known");
    mesh.service("known").port(80, 8080).backend(&known).apply();
    http_server(&other, 8080, "::", "other");
    let client_sidecar = client.sidecar().install();
    assert_ipv6_capture_installed(&client);
    let passthrough = [("direction", "outbound"), ("service", "passthrough")];
    let before = client_sidecar.metric(TCP_OPENED, &passthrough);

    let other6 = other.ip6().unwrap();
    let echoed = get(&client, &format!("http://[{other6}]:8080/direct6"));
    assert_eq!(echoed["server"], "other");
    assert_eq!(echoed["path"], "/direct6");
    client_sidecar.wait_metric(TCP_OPENED, &passthrough, before + 1.0);
}

#[test]
fn the_inbound_path_never_exposes_ipv6_localhost_only_listeners() {
    let mesh = Mesh::new_dual_stack("ipv6-localhost");
    let server = mesh.pod("server");
    let outsider = mesh.pod("outsider");
    let member = mesh.pod("member");
    let server6 = server.ip6().unwrap();
    http_server(&server, 8081, "::1", "LOCALHOST-ONLY-SECRET");
    http_server(&server, 8082, "::", "public");
    let server_sidecar = server.sidecar().install();
    let _member_sidecar = member.sidecar().install();
    assert_ipv6_capture_installed(&server);
    // Sanity: inside the pod, the [::1] listener answers.
    assert_eq!(
        get(&server, "http://[::1]:8081/")["server"],
        "LOCALHOST-ONLY-SECRET"
    );
    let inbound = [("direction", "inbound")];

    // From a pod outside the mesh (no sidecar) and from a pod with a sidecar.
    for client in [&outsider, &member] {
        let before = server_sidecar.metric(TCP_OPENED, &inbound);
        let echoed = get(client, &format!("http://[{server6}]:8082/"));
        assert_eq!(echoed["server"], "public", "from {}", client.name());
        // The control request went through the server's sidecar over IPv6.
        server_sidecar.wait_metric(TCP_OPENED, &inbound, before + 1.0);
        for port in [8081, 15000] {
            let out = client.exec(&format!(
                "curl -g -sS --max-time 15 -w '\\n%{{http_code}}' 'http://[{server6}]:{port}/config_dump'"
            ));
            let code = out.stdout.lines().last().unwrap_or_default();
            assert!(
                !out.stdout.contains("LOCALHOST-ONLY-SECRET") && code != "200",
                "from pod {}, [{server6}]:{port} (bound to ::1 / 127.0.0.1 in the server pod) \
                 was reachable through the inbound path: {out}",
                client.name(),
            );
        }
    }
}
