//! Zero-trust mTLS end to end: every sidecar gets its certificate from the control plane's CA
//! (bootstrap token, CSR), and sidecars speak TLS 1.3 with the `skiff/*` ALPN to each other.
//! Checked from outside the sidecars: a packet capture, `openssl s_client` against the inbound
//! port with our own and with bad certificates, plaintext against STRICT and PERMISSIVE ports,
//! authorization by identity (and ~30 spellings of a denied path), a fake peer with the wrong
//! identity, and certificates a few seconds long rotating under load.

use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_tests::certs::{BadCert, CertFiles, LabCa};
use skiff_tests::{json, ControlPlane, Mesh, Pod, Service, Sidecar};

const HANDSHAKE_FAILURES: &str = "skiff_tls_handshake_failures_total";
const REQUESTS: &str = "skiff_requests_total";
const DENIED: &str = "skiff_denied_total";

/// A server pod (HTTP on 8080 and 8081, a line-echo TCP server on 9000) behind service `echo`,
/// two clients with their own service accounts, an `outsider` pod without a sidecar, and the
/// control plane every sidecar gets its certificate and configuration from.
struct Secured {
    mesh: Mesh,
    control: ControlPlane,
    server: Pod,
    client_a: Pod,
    client_b: Pod,
    outsider: Pod,
    echo: Service,
    server_sidecar: Sidecar,
    client_a_sidecar: Sidecar,
    client_b_sidecar: Sidecar,
    /// Recording the server pod's port 8080, when asked for.
    capture: Option<skiff_tests::Proc>,
}

impl Secured {
    fn new(label: &str, control_args: &[&str]) -> Secured {
        Secured::with_capture(label, control_args, None)
    }

    /// As [`Secured::new`]; with `capture`, tcpdump records the server pod's port 8080 from
    /// before the first sidecar connection.
    fn with_capture(label: &str, control_args: &[&str], capture: Option<&Path>) -> Secured {
        let mesh = Mesh::new(label);
        let server = mesh.pod("server");
        let client_a = mesh.pod("client-a");
        let client_b = mesh.pod("client-b");
        let outsider = mesh.pod("outsider");
        let echo = mesh
            .service("echo")
            .port(80, 8080)
            .port(81, 8081)
            .port(9000, 9000)
            .app_protocol("tcp")
            .backend(&server)
            .apply();
        for port in ["8080", "8081"] {
            server.spawn_python(
                &format!("http-{port}"),
                "http_server.py",
                &["--port", port, "--name", "server"],
            );
        }
        server.spawn_python("tcp", "tcp_server.py", &["--port", "9000"]);
        for port in [8080, 8081, 9000] {
            server.wait_listening(port);
        }
        let capture = capture.map(|file| start_capture(&server, file));
        let control = mesh.control_plane_with(control_args);
        let server_sidecar = server.sidecar().control_plane(&control).install();
        let client_a_sidecar = client_a.sidecar().control_plane(&control).install();
        let client_b_sidecar = client_b.sidecar().control_plane(&control).install();
        Secured {
            mesh,
            control,
            server,
            client_a,
            client_b,
            outsider,
            echo,
            server_sidecar,
            client_a_sidecar,
            client_b_sidecar,
            capture,
        }
    }

    /// Writes an InboundPolicy for the server and waits until its sidecar runs it.
    fn inbound_policy(&self, spec: &str) {
        let before = self.server_sidecar.config_version();
        let yaml = format!(
            "apiVersion: skiff.dev/v1alpha1\nkind: InboundPolicy\nmetadata:\n  name: server\n  \
             namespace: default\nspec:\n  targetRef: {{kind: Workload, name: server}}\n{spec}"
        );
        self.mesh.write_policy("inbound-server.yaml", &yaml);
        self.server_sidecar.wait_config_change(&before);
    }

    fn identity(&self, sidecar: &Sidecar) -> String {
        sidecar
            .identity()
            .expect("a sidecar of the control plane has an identity")
            .to_string()
    }
}

/// The outcome of one curl.
#[derive(Debug)]
struct Reply {
    /// `0` when no HTTP response came back (connection refused, reset or closed).
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// `curl` from `pod`: the path is sent exactly as written (`--path-as-is`).
fn get(pod: &Pod, url: &str) -> Reply {
    let out = pod.exec(&format!(
        "curl -s --path-as-is --max-time 10 -D /dev/stderr -w '\\n%{{http_code}}' '{url}'"
    ));
    let stdout = out.stdout.trim_end();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", stdout));
    Reply {
        status: status.trim().parse().unwrap_or(0),
        headers: out.stderr.clone(),
        body: body.to_string(),
    }
}

fn start_capture(pod: &Pod, file: &Path) -> skiff_tests::Proc {
    let path = file.to_str().unwrap();
    let tcpdump = pod.spawn(
        "tcpdump",
        &[
            "tcpdump",
            "-i",
            "eth0",
            "--immediate-mode",
            "-U",
            "-w",
            path,
            "tcp port 8080",
        ],
    );
    skiff_tests::eventually(
        Duration::from_secs(10),
        "tcpdump listening",
        || tcpdump.log().contains("listening on").then_some(()),
        || tcpdump.log(),
    );
    tcpdump
}

/// `openssl s_client` from `pod` to `addr`, offering `alpn`, presenting `cert` if given.
/// Returns everything it printed.
fn s_client(pod: &Pod, addr: &str, alpn: &str, cert: Option<&CertFiles>, bundle: &Path) -> String {
    let cert = cert.map_or(String::new(), |c| {
        format!("-cert {} -key {}", c.cert.display(), c.key.display())
    });
    // Sleep keeps stdin open until the server has answered the handshake (TLS 1.3 reports a
    // refused client certificate only after the client's Finished).
    let out = pod.exec(&format!(
        "sleep 1 | timeout 10 openssl s_client -connect {addr} -alpn {alpn} {cert} \
         -CAfile {} -verify_return_error -showcerts 2>&1",
        bundle.display()
    ));
    out.stdout
}

#[test]
fn traffic_between_sidecars_is_tls13_with_the_skiff_alpn_and_carries_the_peer_identity() {
    let capture: PathBuf =
        std::env::temp_dir().join(format!("skiff-mtls-{}.pcap", std::process::id()));
    let s = Secured::with_capture("mtls-wire", &[], Some(&capture));
    let marker = "skiff-plaintext-marker-7d1f";
    let reply = get(
        &s.client_a,
        &format!("http://{}/{marker}?q={marker}", s.echo.vip()),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let echoed = json(&reply.body);
    assert_eq!(echoed["path"], format!("/{marker}?q={marker}"));
    assert!(
        !reply.body.contains("x-skiff-orig-proto"),
        "the HTTP/1-over-HTTP/2 mark must not reach the app: {}",
        reply.body
    );

    // The wire between the pods: a TLS ClientHello offering skiff/h2, and nothing in clear.
    let tcpdump = s.capture.as_ref().expect("capturing");
    tcpdump.terminate();
    tcpdump.wait_exit(Duration::from_secs(10));
    let wire = std::fs::read(&capture).expect("the capture file");
    let _ = std::fs::remove_file(&capture);
    assert!(
        wire.len() > 24,
        "tcpdump captured nothing:\n{}",
        tcpdump.log()
    );
    assert!(
        contains(&wire, b"skiff/h2"),
        "no ClientHello offering ALPN skiff/h2 on the wire"
    );
    assert!(
        !contains(&wire, marker.as_bytes()),
        "the request travelled in clear between the sidecars"
    );

    // Checked from outside with openssl: TLS 1.3, our ALPN, and the server's SPIFFE ID, with a
    // client certificate the control plane's root signed.
    let dir = s.mesh.dir().join("certs");
    let ca = LabCa::load(&s.control.ca_dir());
    let good = ca.workload(
        "spiffe://cluster.local/ns/default/sa/outsider",
        &dir,
        "outsider",
    );
    let server_addr = format!("{}:8080", s.server.ip());
    let out = s_client(
        &s.outsider,
        &server_addr,
        "skiff/h2",
        Some(&good),
        &s.control.ca_bundle(),
    );
    assert!(out.contains("New, TLSv1.3, Cipher is"), "{out}");
    assert!(out.contains("ALPN protocol: skiff/h2"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    let server_cert = first_pem(&out);
    let sans = s.outsider.exec_ok(&format!(
        "echo '{server_cert}' | openssl x509 -noout -ext subjectAltName"
    ));
    assert!(
        sans.contains(&format!("URI:{}", s.identity(&s.server_sidecar))),
        "the inbound port proves the server's identity: {sans}"
    );

    // Metrics carry the TLS state and the client's identity.
    let a = s.identity(&s.client_a_sidecar);
    let inbound = [
        ("direction", "inbound"),
        ("tls", "mtls"),
        ("peer_identity", a.as_str()),
        ("code", "200"),
    ];
    s.server_sidecar.wait_metric(REQUESTS, &inbound, 1.0);
    let outbound = [("direction", "outbound"), ("tls", "mtls"), ("code", "200")];
    s.client_a_sidecar.wait_metric(REQUESTS, &outbound, 1.0);
}

#[test]
fn strict_refuses_plaintext_permissive_accepts_it_and_health_and_metrics_stay_reachable() {
    let s = Secured::new("mtls-strict", &[]);
    let server = s.server.ip();
    assert_eq!(
        get(&s.outsider, &format!("http://{server}:8080/")).status,
        200
    );

    s.inbound_policy(
        "  mtls:\n    mode: STRICT\n    ports:\n    - {port: 8081, mode: PERMISSIVE}\n",
    );
    let refused = get(&s.outsider, &format!("http://{server}:8080/"));
    assert_eq!(refused.status, 0, "plaintext to a STRICT port: {refused:?}");
    assert_eq!(
        get(&s.outsider, &format!("http://{server}:8081/")).status,
        200,
        "port 8081 stays PERMISSIVE"
    );
    assert_eq!(
        get(&s.client_a, &format!("http://{}/", s.echo.vip())).status,
        200,
        "a sidecar's mTLS is accepted"
    );
    // The kubelet and Prometheus reach the proxy's own ports, which are never captured.
    assert_eq!(
        get(&s.outsider, &format!("http://{server}:15021/healthz/ready")).status,
        200
    );
    let metrics = get(&s.outsider, &format!("http://{server}:15020/metrics"));
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .body
        .contains("skiff_certificate_expiration_timestamp_seconds"));
    let plaintext = [
        ("direction", "inbound"),
        ("tls", "none"),
        ("reason", "plaintext"),
    ];
    s.server_sidecar.wait_metric(DENIED, &plaintext, 1.0);

    // Back to PERMISSIVE: plaintext is served again.
    s.inbound_policy("  mtls:\n    mode: PERMISSIVE\n");
    assert_eq!(
        get(&s.outsider, &format!("http://{server}:8080/")).status,
        200
    );
}

#[test]
fn authorization_denies_one_identity_and_allows_another_for_every_spelling_of_the_path() {
    let s = Secured::new("mtls-authz", &[]);
    let a = s.identity(&s.client_a_sidecar);
    s.inbound_policy(&format!(
        "  rules:\n  - action: DENY\n    from: {{identities: [\"{a}\"]}}\n    \
         to: {{paths: [{{type: PathPrefix, value: /admin}}]}}\n  \
         - action: DENY\n    from: {{identities: [\"{a}\"]}}\n    to: {{ports: [9000]}}\n  \
         - action: ALLOW\n    from: {{namespaces: [default]}}\n"
    ));
    let vip = s.echo.vip();

    let denied = get(&s.client_a, &format!("http://{vip}/admin"));
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.header("x-skiff-error"), Some("denied"));
    assert_eq!(
        denied.header("x-skiff-reason"),
        Some("default/server rule 0")
    );
    assert_eq!(get(&s.client_b, &format!("http://{vip}/admin")).status, 200);
    assert_eq!(
        get(&s.client_a, &format!("http://{vip}/public")).status,
        200
    );
    // The app gets exactly the normalised path that was authorised.
    let normalised = get(
        &s.client_b,
        &format!("http://{vip}//x/../admin/./users//%61ll"),
    );
    assert_eq!(normalised.status, 200, "{normalised:?}");
    assert_eq!(json(&normalised.body)["path"], "/admin/users/all");
    // A plaintext client has no namespace: no ALLOW rule matches it.
    let outsider = get(
        &s.outsider,
        &format!("http://{}:8080/public", s.server.ip()),
    );
    assert_eq!(outsider.status, 403, "{outsider:?}");
    assert_eq!(
        outsider.header("x-skiff-reason"),
        Some("no allow rule matched")
    );

    // Spellings of /admin that an app might resolve to it: each is denied (403) or refused as
    // a path that cannot be normalised safely (400); none reaches the app.
    let variants = [
        "/admin",
        "/admin/",
        "/admin/users",
        "//admin",
        "///admin//users",
        "/./admin",
        "/x/../admin",
        "/x/y/../../admin",
        "/../admin",
        "/%61dmin",
        "/%61%64%6d%69%6e",
        "/adm%69n/",
        "/%2e/admin",
        "/%2e%2e/admin",
        "/x/%2e%2e/admin",
        "/admin/.",
        "/admin/x/..",
        "/admin%2fusers",
        "/admin%2Fusers",
        "/x%2f..%2fadmin",
        "/admin%5cusers",
        "/admin;x",
        "/admin%3bx",
        "/admin%00",
        "/%2561dmin",
        "/admin/%2e%2e/admin",
        "/admin?x=1",
        "/admin#frag",
        "/admin/..;/admin",
        "/.%2e/admin",
    ];
    for path in variants {
        let reply = get(&s.client_a, &format!("http://{vip}{path}"));
        assert!(
            reply.status == 403 || reply.status == 400,
            "{path} was not refused: {reply:?}"
        );
    }
    // Absolute-form targets and an odd Host (the authority is no part of the rule), and HTTP/2
    // with prior knowledge: the same path, the same verdict.
    let odd = [
        "--request-target http://echo/admin",
        "--request-target http://echo//x/../admin -H 'Host: ADMIN'",
        "--request-target http://localhost:8080/%61dmin -H 'Host: echo.default.svc.cluster.local.'",
        "--http2-prior-knowledge",
    ];
    for flags in odd {
        let out = s.client_a.exec(&format!(
            "curl -s --path-as-is --max-time 10 -o /dev/null -w '%{{http_code}}' {flags} 'http://{vip}//admin/'"
        ));
        assert_eq!(out.stdout.trim(), "403", "curl {flags}: {out:?}");
    }
    let deny_rule = [("direction", "inbound"), ("reason", "deny-rule")];
    assert!(s.server_sidecar.metric(DENIED, &deny_rule) >= 20.0);

    // Opaque TCP: the denied identity's connection is closed, the other is served.
    let line = |pod: &Pod| {
        let script =
            format!("exec 3<>/dev/tcp/{vip}/9000 && echo hello >&3 && timeout 5 head -n1 <&3");
        pod.exec(&format!("bash -c {}", skiff_tests::sh_quote(&script)))
            .stdout
    };
    assert!(line(&s.client_b).contains("250 ok hello"));
    assert!(!line(&s.client_a).contains("250 ok"));
}

#[test]
fn every_bad_client_certificate_is_refused_with_its_reason() {
    let s = Secured::new("mtls-badcerts", &[]);
    let dir = s.mesh.dir().join("certs");
    let ca = LabCa::load(&s.control.ca_dir());
    let bundle = s.control.ca_bundle();
    let server_addr = format!("{}:8080", s.server.ip());
    let failures = |reason: &str| {
        s.server_sidecar.metric(
            HANDSHAKE_FAILURES,
            &[("direction", "inbound"), ("reason", reason)],
        )
    };

    let good = ca.workload(
        "spiffe://cluster.local/ns/default/sa/outsider",
        &dir,
        "good",
    );
    let out = s_client(&s.outsider, &server_addr, "skiff/h2", Some(&good), &bundle);
    assert!(out.contains("New, TLSv1.3, Cipher is"), "{out}");

    let mut cases: Vec<(String, Option<CertFiles>, &str)> = BadCert::ALL
        .iter()
        .map(|kind| {
            (
                format!("{kind:?}"),
                Some(ca.bad(*kind, "default", &dir)),
                kind.reason(),
            )
        })
        .collect();
    cases.push(("no certificate".into(), None, "no-client-certificate"));
    for (name, cert, reason) in cases {
        let before = failures(reason);
        let out = s_client(
            &s.outsider,
            &server_addr,
            "skiff/h2",
            cert.as_ref(),
            &bundle,
        );
        let after = s.server_sidecar.wait_metric(
            HANDSHAKE_FAILURES,
            &[("direction", "inbound"), ("reason", reason)],
            before + 1.0,
        );
        assert_eq!(after, before + 1.0, "{name}: refused once, as {reason}");
        assert!(
            out.contains("alert") || out.contains("error"),
            "{name}: openssl saw no refusal:\n{out}"
        );
    }
    let log = s.server_sidecar.log();
    assert!(
        log.contains("mTLS handshake refused"),
        "refusals are logged with their reason"
    );
}

#[test]
fn a_peer_that_proves_another_identity_is_refused_by_the_caller() {
    let mesh = Mesh::new("mtls-impostor");
    let impostor = mesh.pod("impostor");
    let client = mesh.pod("client");
    let echo = mesh
        .service("echo")
        .port(80, 8080)
        .backend(&impostor)
        .apply();
    // The policy says the endpoint is workload `impostor` with service account `server`...
    let token = skiff_tests::policy::bootstrap_token("default", "impostor");
    mesh.write_policy(
        "workload-impostor.yaml",
        &skiff_tests::policy::render_workload(
            "default",
            "impostor",
            "server",
            &[impostor.ip().into()],
            &token,
        ),
    );
    let control = mesh.control_plane();
    let client_sidecar = client.sidecar().control_plane(&control).install();
    // ...but what answers there holds a certificate (from the same CA) for another one.
    let dir = mesh.dir().join("certs");
    let ca = LabCa::load(&control.ca_dir());
    let wrong = ca.workload(
        "spiffe://cluster.local/ns/default/sa/someone-else",
        &dir,
        "wrong",
    );
    impostor.spawn_sh(
        "s_server",
        &format!(
            "openssl s_server -accept 8080 -cert {} -key {} -alpn skiff/h2,skiff/http1,skiff/tcp \
             -tls1_3 -www",
            wrong.cert.display(),
            wrong.key.display()
        ),
    );
    impostor.wait_listening(8080);

    let reply = get(&client, &format!("http://{}/", echo.vip()));
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.header("x-skiff-error"), Some("upstream-tls-failed"));
    let mismatch = [("direction", "outbound"), ("reason", "identity-mismatch")];
    client_sidecar.wait_metric(HANDSHAKE_FAILURES, &mismatch, 1.0);
}

#[test]
fn certificates_a_few_seconds_long_rotate_under_load_with_no_failed_request() {
    // 20 s leaves: each sidecar renews about every 14 s.
    let s = Secured::new("mtls-rotate", &["--cert-lifetime", "20s"]);
    let vip = s.echo.vip();
    let seconds = 48;
    // HTTP over the pooled connection, and a new TCP connection (a new mTLS handshake with the
    // certificates of the moment) every 100 ms.
    let http = s.client_a.spawn_sh(
        "h2load",
        &format!("h2load --h1 -c 2 -D {seconds} http://{vip}/ 2>&1"),
    );
    let tcp = s.client_b.spawn(
        "tcp-loop",
        &["bash", "-c", &format!(
            "ok=0; bad=0; end=$(( $(date +%s) + {seconds} )); \
             while [ $(date +%s) -lt $end ]; do \
               if exec 3<>/dev/tcp/{vip}/9000 && echo ping >&3 && timeout 5 head -n1 <&3 | grep -q '250 ok ping'; \
               then ok=$((ok+1)); else bad=$((bad+1)); fi; exec 3>&-; sleep 0.1; \
             done; echo \"tcp ok=$ok bad=$bad\""
        )],
    );
    let limit = Duration::from_secs(seconds + 30);
    assert!(http.wait_exit(limit).success(), "{}", http.log());
    assert!(tcp.wait_exit(limit).success(), "{}", tcp.log());

    let http_log = http.log();
    let summary = http_log
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no h2load summary:\n{http_log}"));
    assert!(summary.contains(" 0 failed, 0 errored"), "{summary}");
    let codes = http_log
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap();
    assert!(codes.contains(" 0 3xx, 0 4xx, 0 5xx"), "{codes}");
    let tcp_log = tcp.log();
    assert!(tcp_log.contains(" bad=0"), "{tcp_log}");
    let ok: u32 = tcp_log
        .split("ok=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        ok > 100,
        "too few TCP connections to mean anything: {tcp_log}"
    );

    for sidecar in [&s.server_sidecar, &s.client_a_sidecar, &s.client_b_sidecar] {
        let renewed = sidecar.metric("skiff_certificate_renewals_total", &[("result", "success")]);
        assert!(
            renewed >= 3.0,
            "{} renewed {renewed} times",
            sidecar.workload()
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first PEM certificate in openssl's output (`-showcerts`).
fn first_pem(text: &str) -> String {
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text[start..].find("-----END CERTIFICATE-----").unwrap() + start + 25;
    text[start..end].to_string()
}
