//! The metrics as Prometheus sees them: a real Prometheus server (Debian's `prometheus`) in a
//! pod of the mesh scrapes two sidecars and the control plane, and its query API answers with
//! the requests the test sent, labelled with TLS state and peer identity; `promtool check
//! metrics` accepts every exposition.

use std::time::Duration;

use skiff_tests::{eventually, json, Mesh};

#[test]
fn prometheus_scrapes_the_sidecars_and_the_control_plane_and_sees_the_traffic() {
    let mesh = Mesh::new("prometheus");
    let server = mesh.pod("server");
    let client = mesh.pod("client");
    let monitor = mesh.pod("monitor");
    let echo = mesh.service("echo").port(80, 8080).backend(&server).apply();
    server.spawn_python(
        "http",
        "http_server.py",
        &["--port", "8080", "--name", "server"],
    );
    server.wait_listening(8080);
    let control = mesh.control_plane();
    let server_sidecar = server.sidecar().control_plane(&control).install();
    let client_sidecar = client.sidecar().control_plane(&control).install();
    for _ in 0..5 {
        client.exec_ok(&format!(
            "curl -sS -o /dev/null --max-time 10 http://{}/",
            echo.vip()
        ));
    }

    // Every exposition passes promtool's checks (names, types, units, help).
    let admin = control.admin_address();
    for url in [
        format!("http://{}:15020/metrics", server.ip()),
        format!("http://{}:15020/metrics", client.ip()),
        format!("http://{admin}/metrics"),
    ] {
        let out = monitor.exec(&format!(
            "curl -sS --max-time 10 {url} | promtool check metrics"
        ));
        assert!(out.success(), "promtool refuses {url}: {out}");
    }

    let dir = mesh.dir().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: sidecars\n  static_configs:\n  - targets: ['{}:15020', '{}:15020']\n\
             - job_name: control-plane\n  static_configs:\n  - targets: ['{admin}']\n",
            server.ip(),
            client.ip(),
        ),
    )
    .unwrap();
    let prometheus = monitor.spawn(
        "prometheus",
        &[
            "prometheus",
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            "--web.listen-address=127.0.0.1:9090",
        ],
    );
    let query = |promql: &str| -> Option<serde_json::Value> {
        let out = monitor.exec(&format!(
            "curl -sS --max-time 5 -G http://127.0.0.1:9090/api/v1/query --data-urlencode {}",
            skiff_tests::sh_quote(&format!("query={promql}"))
        ));
        // Nothing yet while Prometheus starts.
        let answer: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        (answer["status"] == "success").then(|| answer["data"]["result"].clone())
    };
    let value = |sample: &serde_json::Value| -> f64 {
        sample["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };

    // All three targets are up, with no scrape error.
    eventually(
        Duration::from_secs(60),
        "every target up",
        || {
            let up = query("up")?;
            let samples = up.as_array()?;
            (samples.len() == 3 && samples.iter().all(|s| value(s) == 1.0)).then_some(())
        },
        || prometheus.log_tail(30),
    );
    let targets = monitor.exec_ok("curl -sS --max-time 5 http://127.0.0.1:9090/api/v1/targets");
    for target in json(&targets)["data"]["activeTargets"].as_array().unwrap() {
        assert_eq!(target["lastError"], "", "{target}");
    }

    // The requests sent, as the server's sidecar counted them: over mTLS, from the client's
    // identity.
    let client_id = client_sidecar.identity().unwrap().to_string();
    let inbound = format!(
        "sum(skiff_requests_total{{direction=\"inbound\",tls=\"mtls\",peer_identity=\"{client_id}\",code=\"200\"}})"
    );
    let seen = eventually(
        Duration::from_secs(30),
        "the inbound requests in Prometheus",
        || {
            query(&inbound)?
                .as_array()?
                .first()
                .map(value)
                .filter(|v| *v >= 5.0)
        },
        || server_sidecar.log_tail(20),
    );
    assert_eq!(seen, 5.0);
    // The certificate's expiry is in the future, and the control plane counts what it issued.
    let expiry = query("skiff_certificate_expiration_timestamp_seconds - time()").unwrap();
    assert_eq!(expiry.as_array().unwrap().len(), 2, "{expiry}");
    for sample in expiry.as_array().unwrap() {
        assert!(value(sample) > 3600.0, "{sample}");
    }
    let issued = query("skiff_ca_certificates_issued_total").unwrap();
    assert!(value(&issued[0]) >= 2.0, "{issued}");
}
