use std::path::{Path, PathBuf};

use skiff_api::identity::SpiffeId;
use skiff_api::stream::SyncState;
use skiff_control::ca::{self, CaSource, CertificateAuthority};
use skiff_control::shutdown::Shutdown;
use skiff_control::source::file::FileSource;
use skiff_control::{admin, api, inspect, ControlPlane};
use tokio::net::TcpListener;

use super::*;
use crate::tls::control_plane::{untrusted_root, ConnectError};
use crate::tls::renew::{CertificateClient, IssueError};
use crate::tls::{Refusal, TlsError};

fn web() -> WorkloadRef {
    WorkloadRef {
        namespace: "shop".into(),
        name: "web".into(),
    }
}

fn config(version: &str) -> ProxyConfig {
    ProxyConfig {
        version: version.into(),
        workload: web(),
        ..ProxyConfig::default()
    }
}

#[test]
fn backoff_doubles_up_to_its_cap_and_jitters_below_it() {
    let mut backoff = Backoff::default();
    let mut ceilings = Vec::new();
    for _ in 0..8 {
        let ceiling = backoff.ceiling();
        ceilings.push(ceiling.as_millis());
        assert!(backoff.next_delay() <= ceiling);
    }
    assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    for _ in 0..100 {
        backoff.next_delay(); // no overflow however long the outage
    }
    assert_eq!(backoff.ceiling(), Duration::from_secs(5));
    backoff.reset();
    assert_eq!(backoff.ceiling(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn reconnection_waits_grow_and_start_over_after_a_healthy_stream() {
    let (attempts, mut attempted) = tokio::sync::mpsc::unbounded_channel();
    let mut count = 0;
    let reconnecting = tokio::spawn(keep_connected(Backoff::default(), move || {
        count += 1;
        let _ = attempts.send(tokio::time::Instant::now());
        // The sixth stream delivers a configuration before it breaks.
        let configured = count == 6;
        async move {
            StreamEnd {
                configured,
                error: StreamError::Ended,
            }
        }
    }));
    let mut times = Vec::new();
    for _ in 0..8 {
        times.push(attempted.recv().await.unwrap());
    }
    reconnecting.abort();
    let waits: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let ceilings = [100, 200, 400, 800, 1600, 100, 200].map(Duration::from_millis);
    for (wait, ceiling) in waits.iter().zip(ceilings) {
        assert!(
            *wait <= ceiling,
            "waited {wait:?}, at most {ceiling:?}: {waits:?}"
        );
    }
}

#[test]
fn a_configuration_is_applied_once_and_a_refused_one_changes_nothing() {
    let status = ControlStatus::new(true);
    assert!(!status.is_ready(), "not ready before a first configuration");
    let applied = Arc::new(Mutex::new(Vec::new()));
    let apply: Apply = {
        let applied = applied.clone();
        Arc::new(move |config: ProxyConfig| {
            if config.version == "bad" {
                return Err("route shop/r: unknown backend".to_string());
            }
            applied.lock().unwrap().push(config.version);
            Ok(())
        })
    };
    let ack = |v: &str| ProxyMessage::Ack { version: v.into() };
    assert_eq!(status.receive(config("v1"), &web(), &apply), ack("v1"));
    assert!(status.is_ready());
    assert_eq!(status.receive(config("v1"), &web(), &apply), ack("v1"));
    assert_eq!(
        *applied.lock().unwrap(),
        ["v1"],
        "the version in force is not re-applied"
    );

    assert_eq!(
        status.receive(config("bad"), &web(), &apply),
        ProxyMessage::Nack {
            version: "bad".into(),
            reason: "route shop/r: unknown backend".into()
        }
    );
    let mut other = config("v2");
    other.workload.name = "api".into();
    assert!(matches!(
        status.receive(other, &web(), &apply),
        ProxyMessage::Nack { reason, .. } if reason.contains("workload shop/api")
    ));
    assert_eq!(
        status.applied_version().as_deref(),
        Some("v1"),
        "last good stays"
    );

    let metrics = status.render();
    for line in [
        "skiff_control_plane_connected 0",
        "skiff_config_version_info{version=\"v1\"} 1",
        "skiff_config_updates_total{result=\"applied\"} 1",
        "skiff_config_updates_total{result=\"refused\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing in\n{metrics}"
        );
    }
    assert!(metrics.contains("skiff_config_age_seconds "));
}

#[test]
fn standalone_proxies_are_ready_and_render_nothing() {
    let status = ControlStatus::new(false);
    assert!(status.is_ready());
    assert_eq!(status.render(), "");
}

#[test]
fn addresses_default_to_the_api_port() {
    assert_eq!(
        parse_address("skiff-control").unwrap().as_str(),
        "skiff-control:15010"
    );
    assert_eq!(
        parse_address("10.0.0.1:9000").unwrap().as_str(),
        "10.0.0.1:9000"
    );
    assert!(parse_address("not an address").is_err());
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: shop}\nspec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}\n";

/// The two workloads whose proxies connect, each with the token for its first certificate.
const WORKLOADS: &str = "apiVersion: skiff.dev/v1alpha1\nkind: Workload\nmetadata: {name: web, namespace: shop}\nspec: {serviceAccount: web, bootstrapToken: web-bootstrap-token}\n---\napiVersion: skiff.dev/v1alpha1\nkind: Workload\nmetadata: {name: api, namespace: shop}\nspec: {serviceAccount: api, bootstrapToken: api-bootstrap-token}\n";

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("skiff-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A control plane on loopback ports, its own task tree, stopped by `shutdown`.
struct RunningControlPlane {
    control: Arc<ControlPlane>,
    api: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningControlPlane {
    /// Policy from `dir`; the CA's root in `ca_dir` (generated on the first start, kept for
    /// the next), leaves valid for `lifetime`.
    async fn start(dir: &Path, ca_dir: &Path, lifetime: Duration, api: &str) -> Self {
        RunningControlPlane::start_with_roots(dir, ca_dir, &[], lifetime, api).await
    }

    /// As [`RunningControlPlane::start`], with `--extra-trust-root` for each of `extra_roots`.
    async fn start_with_roots(
        dir: &Path,
        ca_dir: &Path,
        extra_roots: &[PathBuf],
        lifetime: Duration,
        api: &str,
    ) -> Self {
        let settings = ca::Settings {
            lifetime,
            ..ca::Settings::default()
        };
        let source = CaSource::Dir(ca_dir.to_path_buf());
        let ca = CertificateAuthority::load(&source, extra_roots, settings).unwrap();
        let control = Arc::new(ControlPlane::new(ca));
        let shutdown = Shutdown::new();
        let api_listener = TcpListener::bind(api).await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (api, admin) = (
            api_listener.local_addr().unwrap(),
            admin_listener.local_addr().unwrap(),
        );
        let mut source = FileSource::new(dir.to_path_buf(), control.clone());
        source.poll_interval = Duration::from_millis(20);
        let tasks = vec![
            tokio::spawn(source.run(shutdown.signal())),
            tokio::spawn(api::serve(api_listener, control.clone(), shutdown.signal())),
            tokio::spawn(admin::serve(
                admin_listener,
                control.clone(),
                shutdown.signal(),
            )),
        ];
        RunningControlPlane {
            control,
            api,
            admin,
            shutdown,
            tasks,
        }
    }

    /// What a proxy is started with: `--ca-bundle` (the CA's bundle) and
    /// `--control-plane-identity`.
    fn proxy_tls(&self) -> ControlPlaneTls {
        let roots = crate::tls::certificates_from_pem(self.control.ca.trust_bundle_pem()).unwrap();
        ControlPlaneTls::try_new(&roots, self.control.identity()).unwrap()
    }

    /// How a proxy of `workload` asks this control plane for certificates, with `token`.
    fn certificates(
        &self,
        dir: &Path,
        workload: &WorkloadRef,
        token: Option<&str>,
    ) -> CertificateClient {
        let token_file = token.map(|token| {
            let path = dir.join(format!("token-{}-{}", workload.name, token));
            std::fs::write(&path, format!("{token}\n")).unwrap();
            path
        });
        CertificateClient {
            control_plane: self.api.to_string().parse().unwrap(),
            tls: self.proxy_tls(),
            workload: workload.clone(),
            token_file,
        }
    }

    async fn stop(self) {
        self.shutdown.request();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// Polls `condition` every 10 ms for up to 10 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Starts a proxy's stream client: obtains its certificate first, as `skiff-proxy run` does;
/// returns its status and the versions it applied.
async fn start_proxy(
    plane: &RunningControlPlane,
    dir: &Path,
    workload: WorkloadRef,
    token: &str,
    refuse: Option<&'static str>,
) -> (
    Arc<ControlStatus>,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let status = Arc::new(ControlStatus::new(true));
    let applied = Arc::new(Mutex::new(Vec::new()));
    let apply: Apply = {
        let applied = applied.clone();
        Arc::new(move |config: ProxyConfig| match refuse {
            Some(reason) => Err(reason.to_string()),
            None => {
                applied.lock().unwrap().push(config.version);
                Ok(())
            }
        })
    };
    let certificates = plane.certificates(dir, &workload, Some(token));
    let identity = tokio::time::timeout(Duration::from_secs(10), certificates.first_identity())
        .await
        .expect("a first certificate within 10 s");
    let settings = StreamSettings {
        control_plane: plane.api.to_string().parse().unwrap(),
        workload,
        pod_ips: vec!["10.0.0.5".parse().unwrap()],
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(100)),
        tls: plane.proxy_tls(),
        identity,
    };
    let task = tokio::spawn(run(settings, status.clone(), apply));
    (status, applied, task)
}

#[tokio::test]
async fn a_proxy_follows_the_policy_directory_through_the_control_plane() {
    let dir = TempDir::new("stream");
    let (ca_dir, secrets) = (TempDir::new("stream-ca"), TempDir::new("stream-secrets"));
    let policy = dir.0.join("echo.yaml");
    std::fs::write(&policy, SERVICE).unwrap();
    std::fs::write(dir.0.join("workloads.yaml"), WORKLOADS).unwrap();
    let hour = Duration::from_secs(3600);
    let plane = RunningControlPlane::start(&dir.0, &ca_dir.0, hour, "127.0.0.1:0").await;
    let control = plane.control.clone();

    // A proxy gets its certificate, connects, receives the view and ACKs it.
    let (status, applied, proxy) =
        start_proxy(&plane, &secrets.0, web(), "web-bootstrap-token", None).await;
    eventually("the first configuration is applied", || status.is_ready()).await;
    let first = status.applied_version().unwrap();
    eventually("the control plane records the ack", || {
        control
            .proxies
            .list()
            .first()
            .and_then(|p| p.acked_version.clone())
            == Some(first.clone())
    })
    .await;
    assert!(status.is_connected());

    // An edit reaches it as a new version.
    std::fs::write(&policy, SERVICE.replace("port: 80", "port: 8080")).unwrap();
    eventually("the edited policy is applied", || {
        status.applied_version().as_ref() != Some(&first)
    })
    .await;
    let second = status.applied_version().unwrap();
    let snapshot = control.store.current().unwrap().version;

    // An invalid edit is refused: counted, and nothing new is sent.
    std::fs::write(dir.0.join("broken.yaml"), "kind: [").unwrap();
    eventually("the invalid edit is counted", || {
        control.metrics.config_errors() == 1
    })
    .await;
    assert_eq!(control.store.current().unwrap().version, snapshot);
    assert_eq!(status.applied_version().as_ref(), Some(&second));
    assert_eq!(*applied.lock().unwrap(), [first.clone(), second.clone()]);

    // `skiff proxy-config` shows what it runs.
    let admin = plane.admin.to_string();
    let sent = tokio::task::spawn_blocking(move || inspect::fetch_config(&admin, &web(), None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sent.version, second);
    assert_eq!(sent.services[0].ports[0].port, 8080);

    // A proxy that cannot apply its configuration shows as NACK in `skiff proxy-status`.
    let api_workload = api();
    let (refusing, _, refusing_task) = start_proxy(
        &plane,
        &secrets.0,
        api_workload.clone(),
        "api-bootstrap-token",
        Some("route shop/r: unknown backend"),
    )
    .await;
    let admin = plane.admin.to_string();
    let mut refused = None;
    for _ in 0..1000 {
        let admin = admin.clone();
        let list = tokio::task::spawn_blocking(move || inspect::fetch_proxies(&admin))
            .await
            .unwrap()
            .unwrap();
        refused = list
            .into_iter()
            .find(|p| p.workload == api_workload && p.sync_state() == SyncState::Refused);
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = refused.expect("the NACK shows in /v1/proxies");
    assert_eq!(
        refused.last_nack.unwrap().reason,
        "route shop/r: unknown backend"
    );
    assert!(!refusing.is_ready(), "nothing applied, so not ready");
    refusing_task.abort();

    // The control plane restarts (same CA, a new serving certificate): the proxy keeps its
    // configuration, reconnects with its certificate, and is resynchronised without
    // re-applying what it already runs.
    std::fs::remove_file(dir.0.join("broken.yaml")).unwrap();
    let api = plane.api;
    plane.stop().await;
    eventually("the proxy notices", || !status.is_connected()).await;
    assert!(
        status.is_ready(),
        "the last good configuration keeps serving"
    );
    let plane = RunningControlPlane::start(&dir.0, &ca_dir.0, hour, &api.to_string()).await;
    let control = plane.control.clone();
    eventually("the proxy reconnects and acks", || {
        control
            .proxies
            .list()
            .first()
            .and_then(|p| p.acked_version.clone())
            == Some(second.clone())
    })
    .await;
    assert_eq!(
        applied.lock().unwrap().len(),
        2,
        "same content, same version, no re-apply"
    );

    proxy.abort();
    plane.stop().await;
}

/// The error of a certificate request, on one line.
fn refusal(result: Result<crate::tls::Credentials, IssueError>) -> IssueError {
    match result {
        Ok(_) => panic!("a certificate was issued"),
        Err(error) => error,
    }
}

#[tokio::test]
async fn certificates_are_issued_over_tls_to_the_right_workload_only() {
    let dir = TempDir::new("certificates");
    let (ca_dir, secrets) = (
        TempDir::new("certificates-ca"),
        TempDir::new("certificates-secrets"),
    );
    std::fs::write(dir.0.join("workloads.yaml"), WORKLOADS).unwrap();
    let hour = Duration::from_secs(3600);
    let plane = RunningControlPlane::start(&dir.0, &ca_dir.0, hour, "127.0.0.1:0").await;
    eventually("the policy is loaded", || {
        plane.control.store.current().is_some()
    })
    .await;

    // The first certificate: a token, a CSR without a name; the answer names the workload.
    let client = plane.certificates(&secrets.0, &web(), Some("web-bootstrap-token"));
    let identity = Arc::new(Identity::try_new(client.request(None).await.unwrap()).unwrap());
    let web_id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
    assert_eq!(identity.id(), web_id);
    assert_eq!(identity.trust_roots(), 1);

    // Renewal: the certificate alone authenticates (the token may be gone by then).
    let renewing = plane.certificates(&secrets.0, &web(), None);
    let first_leaf = identity.certified_key().cert[0].clone();
    identity
        .install(renewing.request(Some(&identity)).await.unwrap())
        .unwrap();
    assert_ne!(identity.certified_key().cert[0], first_leaf);
    assert_eq!(identity.id(), web_id);

    // Without a certificate, no token is no request; a wrong token is refused by the control
    // plane with its reason.
    assert!(matches!(
        refusal(renewing.request(None).await),
        IssueError::NoCredentials
    ));
    let wrong = plane.certificates(&secrets.0, &web(), Some("api-bootstrap-token"));
    match refusal(wrong.request(None).await) {
        IssueError::Refused { status, reason } => {
            // The control plane does not tell an unauthenticated caller why.
            assert_eq!(status, http::StatusCode::UNAUTHORIZED, "{reason}");
            assert_eq!(reason, "unauthorized");
        }
        other => panic!("{other:?}"),
    }
    // Another workload's certificate does not renew this one.
    let api_identity = {
        let api_client = plane.certificates(&secrets.0, &api(), Some("api-bootstrap-token"));
        Arc::new(Identity::try_new(api_client.request(None).await.unwrap()).unwrap())
    };
    match refusal(renewing.request(Some(&api_identity)).await) {
        IssueError::Refused { status, .. } => assert_eq!(status, http::StatusCode::FORBIDDEN),
        other => panic!("{other:?}"),
    }

    // A control plane that cannot prove the identity expected is not talked to.
    let impostor_id = SpiffeId::parse("spiffe://cluster.local/ns/skiff-system/sa/someone").unwrap();
    let roots = crate::tls::certificates_from_pem(plane.control.ca.trust_bundle_pem()).unwrap();
    let mut wary = plane.certificates(&secrets.0, &web(), Some("web-bootstrap-token"));
    wary.tls = ControlPlaneTls::try_new(&roots, impostor_id).unwrap();
    let error = refusal(wary.request(None).await);
    let IssueError::Connect(ConnectError::Tls(TlsError::Certificate(refused))) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(refused.reason, Refusal::IdentityMismatch);
    // Nor one whose certificate chains to another root.
    let stranger = crate::tls::testing::TestCa::new("another root");
    wary.tls = ControlPlaneTls::try_new(
        std::slice::from_ref(&stranger.cert),
        plane.control.identity(),
    )
    .unwrap();
    let error = refusal(wary.request(None).await);
    let IssueError::Connect(ConnectError::Tls(tls)) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(tls.reason(), "unknown-issuer");
    plane.stop().await;
}

#[tokio::test]
async fn a_short_lived_certificate_is_renewed_before_it_expires() {
    let dir = TempDir::new("renewal");
    let (ca_dir, secrets) = (TempDir::new("renewal-ca"), TempDir::new("renewal-secrets"));
    std::fs::write(dir.0.join("workloads.yaml"), WORKLOADS).unwrap();
    let lifetime = skiff_control::ca::MIN_LIFETIME;
    let plane = RunningControlPlane::start(&dir.0, &ca_dir.0, lifetime, "127.0.0.1:0").await;
    let client = plane.certificates(&secrets.0, &web(), Some("web-bootstrap-token"));
    let identity = client.first_identity().await;
    let first_not_after = identity.not_after();
    let renewing = tokio::spawn(client.keep_renewed(identity.clone()));
    // Due at 65-75% of the lifetime (which starts a minute early, for clock skew).
    for _ in 0..150 {
        if identity.not_after() > first_not_after {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        identity.not_after() > first_not_after,
        "renewed within 15 s"
    );
    let mut metrics = String::new();
    identity.render_metrics(&mut metrics);
    assert!(
        metrics.contains("skiff_certificate_renewals_total{result=\"success\"} 1"),
        "{metrics}"
    );
    renewing.abort();
    plane.stop().await;
}

#[tokio::test]
async fn an_expired_certificate_is_replaced_with_the_bootstrap_token() {
    let dir = TempDir::new("expired");
    let (ca_dir, secrets) = (TempDir::new("expired-ca"), TempDir::new("expired-secrets"));
    std::fs::write(dir.0.join("workloads.yaml"), WORKLOADS).unwrap();
    let lifetime = skiff_control::ca::MIN_LIFETIME;
    let plane = RunningControlPlane::start(&dir.0, &ca_dir.0, lifetime, "127.0.0.1:0").await;
    let client = plane.certificates(&secrets.0, &web(), Some("web-bootstrap-token"));
    let identity = client.first_identity().await;
    // The control plane was out of reach for a whole lifetime: the certificate expired, and
    // presenting it would fail the handshake.
    while identity.not_after() > std::time::SystemTime::now() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let renewed = client.request(Some(&identity)).await.unwrap();
    identity.install(renewed).unwrap();
    assert!(identity.not_after() > std::time::SystemTime::now());
    plane.stop().await;
}

/// The refusal label of a failed TLS handshake with the control plane.
fn tls_reason(error: &ConnectError) -> &'static str {
    match error {
        ConnectError::Tls(tls) => tls.reason(),
        other => panic!("{other:?}"),
    }
}

fn api() -> WorkloadRef {
    WorkloadRef {
        namespace: "shop".into(),
        name: "api".into(),
    }
}

/// A root rotation as docs/control-plane.md describes it, seen by a proxy started with
/// `--ca-bundle` holding the old root A only: the bundle A + B it receives while A still
/// signs lets it follow the control plane to B, without a restart.
#[tokio::test]
async fn a_proxy_follows_a_root_rotation_without_a_restart() {
    let dir = TempDir::new("rotation");
    let (ca_a, ca_b, ca_c, secrets) = (
        TempDir::new("rotation-ca-a"),
        TempDir::new("rotation-ca-b"),
        TempDir::new("rotation-ca-c"),
        TempDir::new("rotation-secrets"),
    );
    std::fs::write(dir.0.join("echo.yaml"), SERVICE).unwrap();
    std::fs::write(dir.0.join("workloads.yaml"), WORKLOADS).unwrap();
    let hour = Duration::from_secs(3600);
    // Root B is made ahead of the rotation, and root C belongs to nobody's mesh.
    for ca_dir in [&ca_b, &ca_c] {
        let source = CaSource::Dir(ca_dir.0.clone());
        CertificateAuthority::load(&source, &[], ca::Settings::default()).unwrap();
    }
    let root = |ca_dir: &TempDir| ca_dir.0.join("root-cert.pem");

    // Step 1: A signs, B is announced (--extra-trust-root B).
    let plane =
        RunningControlPlane::start_with_roots(&dir.0, &ca_a.0, &[root(&ca_b)], hour, "127.0.0.1:0")
            .await;
    let address = plane.api;
    // The proxy's --ca-bundle holds A alone, as it did before the rotation began.
    let ca_bundle = secrets.0.join("ca-bundle.pem");
    std::fs::copy(root(&ca_a), &ca_bundle).unwrap();
    let mut client = plane.certificates(&secrets.0, &web(), Some("web-bootstrap-token"));
    client.tls = ControlPlaneTls::load(&ca_bundle, plane.control.identity()).unwrap();
    let identity = client.first_identity().await;
    assert_eq!(identity.trust_roots(), 2, "the bundle A + B arrived");
    let status = Arc::new(ControlStatus::new(true));
    let settings = StreamSettings {
        control_plane: client.control_plane.clone(),
        workload: web(),
        pod_ips: vec!["10.0.0.5".parse().unwrap()],
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(100)),
        tls: client.tls.clone(),
        identity: identity.clone(),
    };
    let apply: Apply = Arc::new(|_| Ok(()));
    let proxy = tokio::spawn(run(settings, status.clone(), apply));
    eventually("the first configuration is applied", || status.is_ready()).await;

    // Step 2: B signs, A stays trusted; the control plane's serving certificate is B's.
    plane.stop().await;
    eventually("the proxy notices", || !status.is_connected()).await;
    let plane = RunningControlPlane::start_with_roots(
        &dir.0,
        &ca_b.0,
        &[root(&ca_a)],
        hour,
        &address.to_string(),
    )
    .await;
    let control = plane.control.clone();
    eventually("the stream is open again, verified by root B", || {
        control
            .proxies
            .list()
            .first()
            .is_some_and(|p| p.acked_version.is_some())
    })
    .await;
    assert!(status.is_connected());
    // The renewal reaches it too, and the new certificate is B's.
    let first_leaf = identity.certified_key().cert[0].clone();
    identity
        .install(client.request(Some(&identity)).await.unwrap())
        .unwrap();
    assert_ne!(identity.certified_key().cert[0], first_leaf);
    assert_eq!(identity.trust_roots(), 2);
    // --ca-bundle itself was neither needed nor changed.
    assert_eq!(client.tls.ca_bundle_roots().len(), 1);

    // A proxy starting now, with no certificate yet, has only --ca-bundle: refused until
    // the operator adds B to it (its ConfigMap, updated in place), then re-read at once.
    // Generated roots are named after their keys, so B's certificate has an unknown issuer.
    let mut newcomer = plane.certificates(&secrets.0, &web(), Some("web-bootstrap-token"));
    newcomer.tls = ControlPlaneTls::load(&ca_bundle, plane.control.identity()).unwrap();
    let error = refusal(newcomer.request(None).await);
    let IssueError::Connect(connect) = &error else {
        panic!("{error:?}");
    };
    assert!(untrusted_root(connect), "{error:?}");
    assert_eq!(tls_reason(connect), "unknown-issuer");
    let both = [root(&ca_a), root(&ca_b)].map(|path| std::fs::read_to_string(path).unwrap());
    std::fs::write(&ca_bundle, both.concat()).unwrap();
    newcomer.request(None).await.unwrap();
    assert_eq!(newcomer.tls.ca_bundle_roots().len(), 2);

    // A control plane issued by a root nobody announced is still refused.
    plane.stop().await;
    let plane = RunningControlPlane::start(&dir.0, &ca_c.0, hour, &address.to_string()).await;
    let error = refusal(client.request(Some(&identity)).await);
    let IssueError::Connect(connect) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(tls_reason(connect), "unknown-issuer");
    eventually("the stream is down", || !status.is_connected()).await;
    assert!(plane.control.proxies.list().is_empty(), "no stream to C");

    proxy.abort();
    plane.stop().await;
}
