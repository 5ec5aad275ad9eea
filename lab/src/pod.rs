//! A [`Pod`] is a network namespace on the mesh's bridge. Commands run in it through
//! `ip netns exec`; a [`Sidecar`] is `skiff-proxy init` plus `skiff-proxy run` as UID 1337.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::control::ControlPlane;
use crate::mesh::MeshInner;
use crate::metrics::Metrics;
use crate::process::{self, Proc};
use crate::{eventually, policy, python, sh_quote};

pub use crate::process::Output;

/// The Kubernetes namespace test workloads and services live in (a sidecar may be given
/// another: [`SidecarBuilder::namespace`]).
pub const NAMESPACE: &str = "default";

/// How long one `exec` may run before `timeout` kills it (every client call is bounded too).
const EXEC_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a sidecar may take to become ready (a debug build on a busy 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// One pod: a namespace with `eth0` on the mesh bridge and a pod IP (two in a dual-stack mesh).
#[derive(Clone)]
pub struct Pod {
    mesh: Arc<MeshInner>,
    /// The test's name for it (also its workload name).
    name: String,
    /// Its network namespace.
    ns: String,
    /// Its address on the mesh bridge.
    ip: Ipv4Addr,
    /// Its IPv6 address on the mesh bridge, in a dual-stack mesh.
    ip6: Option<Ipv6Addr>,
}

impl Pod {
    pub(crate) fn new(
        mesh: Arc<MeshInner>,
        name: &str,
        ns: String,
        ip: Ipv4Addr,
        ip6: Option<Ipv6Addr>,
    ) -> Pod {
        Pod {
            mesh,
            name: name.to_string(),
            ns,
            ip,
            ip6,
        }
    }

    /// The test's name for the pod, also its workload name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its network namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Its pod IP.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Its IPv6 pod IP; `None` unless the mesh is dual-stack.
    pub fn ip6(&self) -> Option<Ipv6Addr> {
        self.ip6
    }

    /// Its pod IPs as `--pod-ip` takes them: `V4` or `V4,V6`.
    pub fn pod_ips(&self) -> String {
        match self.ip6 {
            Some(ip6) => format!("{},{ip6}", self.ip),
            None => self.ip.to_string(),
        }
    }

    /// Runs `sh -c script` inside the pod (bounded by a 180 s `timeout`).
    pub fn exec(&self, script: &str) -> Output {
        self.exec_timeout(script, EXEC_TIMEOUT)
    }

    /// Runs `sh -c script` inside the pod, killed after `limit`.
    pub fn exec_timeout(&self, script: &str, limit: Duration) -> Output {
        let secs = limit.as_secs().max(1).to_string();
        process::run(&[
            "ip", "netns", "exec", &self.ns, "timeout", "-k", "5", &secs, "sh", "-c", script,
        ])
    }

    /// Runs `sh -c script` inside the pod and returns its stdout; panics with the output and the
    /// mesh's logs unless it exits 0.
    pub fn exec_ok(&self, script: &str) -> String {
        let out = self.exec(script);
        assert!(
            out.success(),
            "in pod {}: `{script}` failed: {out}\n{}",
            self.name,
            self.mesh.logs(40)
        );
        out.stdout
    }

    /// Starts `argv` inside the pod in the background; its output goes to a log file in the
    /// mesh's temp dir. It is killed (with its process group) when the mesh drops.
    pub fn spawn(&self, what: &str, argv: &[&str]) -> Proc {
        let mut cmd = process::command("ip");
        cmd.args(["netns", "exec", &self.ns]).args(argv);
        self.start(what, cmd)
    }

    /// Starts `sh -c script` inside the pod in the background (for pipelines).
    pub fn spawn_sh(&self, what: &str, script: &str) -> Proc {
        self.spawn(what, &["sh", "-c", script])
    }

    /// Starts one of the Python programs of `tests/python/` with the venv's interpreter.
    pub fn spawn_python(&self, what: &str, script: &str, args: &[&str]) -> Proc {
        let interpreter = python::interpreter();
        let path = python::script(script);
        let mut argv = vec![interpreter.to_str().unwrap(), "-u", path.to_str().unwrap()];
        argv.extend_from_slice(args);
        self.spawn(what, &argv)
    }

    fn start(&self, what: &str, cmd: std::process::Command) -> Proc {
        self.mesh.start(&format!("{}/{what}", self.name), cmd)
    }

    /// Waits until something in the pod listens on TCP `port` (any address).
    pub fn wait_listening(&self, port: u16) {
        let script = format!("ss -Hltn 'sport = :{port}'");
        eventually(
            Duration::from_secs(60),
            &format!("a listener on port {port} in pod {}", self.name),
            || {
                let out = self.exec(&script);
                (out.success() && !out.stdout.trim().is_empty()).then_some(())
            },
            || self.mesh.logs(40),
        );
    }

    /// `iptables-save -t nat` inside the pod.
    pub fn iptables_nat(&self) -> String {
        self.exec_ok("iptables-save -t nat")
    }

    /// `ip6tables-save -t nat` inside the pod.
    pub fn ip6tables_nat(&self) -> String {
        self.exec_ok("ip6tables-save -t nat")
    }

    /// Starts configuring a sidecar for this pod (policy from the mesh's policy dir, unless
    /// [`SidecarBuilder::control_plane`] is given).
    pub fn sidecar(&self) -> SidecarBuilder {
        SidecarBuilder {
            pod: self.clone(),
            policy_dir: self.mesh.policy_dir.clone(),
            control_plane: None,
            bootstrap_token: None,
            service_account: None,
            namespace: NAMESPACE.to_string(),
            log_filter: None,
            init_args: Vec::new(),
            run_args: Vec::new(),
        }
    }

    /// `skiff-proxy init EXTRA_INIT_ARGS`, then `skiff-proxy run --policy POLICY_DIR ...` as UID
    /// 1337, then waits until `/healthz/ready` answers 200.
    pub fn install_sidecar(&self, policy_dir: &Path, extra_init_args: &[&str]) -> Sidecar {
        self.sidecar()
            .policy_dir(policy_dir)
            .init_args(extra_init_args)
            .install()
    }

    /// The last lines of every log of the mesh, for failure messages.
    pub fn mesh_logs(&self) -> String {
        self.mesh.logs(60)
    }
}

/// Options of a sidecar before it is installed.
pub struct SidecarBuilder {
    pod: Pod,
    policy_dir: PathBuf,
    /// A control plane: the proxy gets its certificate and streams its configuration from
    /// there instead of reading `policy_dir`.
    control_plane: Option<ControlPlaneFlags>,
    /// The `bootstrapToken` of the pod's Workload, which the caller declares in the policy;
    /// `None`: the lab declares the Workload itself (`workload-<namespace>-<pod>.yaml` in the
    /// mesh's policy dir: the service account, the pod's addresses, the token
    /// [`policy::bootstrap_token`]).
    bootstrap_token: Option<String>,
    /// The service account of a Workload the lab declares (default: the pod's name, so every
    /// workload has an identity of its own).
    service_account: Option<String>,
    /// The Kubernetes namespace of its workload (`--namespace`); the workload is the pod's name.
    namespace: String,
    /// `SKIFF_LOG`; `None`: `$SKIFF_TEST_LOG`, else `info,skiff_proxy=debug`.
    log_filter: Option<String>,
    init_args: Vec<String>,
    run_args: Vec<String>,
}

impl SidecarBuilder {
    /// The directory of policy YAML (default: the mesh's).
    pub fn policy_dir(mut self, dir: &Path) -> Self {
        self.policy_dir = dir.to_path_buf();
        self
    }

    /// Streams configuration from `control` (`--control-plane`) instead of reading files; the
    /// sidecar is ready once it has applied its first configuration. It bootstraps its
    /// certificate with a token (`--bootstrap-token-file`), trusts the control plane's bundle
    /// (`--ca-bundle`) and verifies its identity (`--control-plane-identity`); unless
    /// [`SidecarBuilder::bootstrap_token`] is given, the lab declares the pod's Workload.
    pub fn control_plane(mut self, control: &ControlPlane) -> Self {
        self.control_plane = Some(ControlPlaneFlags {
            address: control.address(),
            ca_bundle: control.ca_bundle(),
            identity: control.identity(),
        });
        self
    }

    /// The pod's Workload is in the policy already, declared by the caller with this
    /// `bootstrapToken`: the lab declares nothing and gives the proxy this token.
    pub fn bootstrap_token(mut self, token: &str) -> Self {
        self.bootstrap_token = Some(token.to_string());
        self
    }

    /// The service account of the pod's workload (default: the pod's name): its SPIFFE ID is
    /// `spiffe://cluster.local/ns/<namespace>/sa/<service account>`.
    pub fn service_account(mut self, service_account: &str) -> Self {
        self.service_account = Some(service_account.to_string());
        self
    }

    /// The Kubernetes namespace of the pod's workload (default [`NAMESPACE`]).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }

    /// The proxy's log filter (`SKIFF_LOG`), e.g. `info` for a long run whose per-request
    /// debug lines nobody reads.
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = Some(filter.to_string());
        self
    }

    /// Extra arguments for `skiff-proxy init` (e.g. `--exclude-outbound-ports 9090`).
    pub fn init_args(mut self, args: &[&str]) -> Self {
        self.init_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Extra arguments for `skiff-proxy run` (e.g. `--drain-period 5s`).
    pub fn run_args(mut self, args: &[&str]) -> Self {
        self.run_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Runs init, starts the proxy, and waits for readiness (panics with the log on timeout or if
    /// the proxy exits).
    pub fn install(self) -> Sidecar {
        let pod = self.pod;
        let bin = pod.mesh.proxy_bin();
        let bin = bin.to_str().unwrap();
        let mut init = vec!["ip", "netns", "exec", &pod.ns, bin, "init"];
        init.extend(self.init_args.iter().map(String::as_str));
        let out = process::run(&init);
        assert!(
            out.success(),
            "in pod {}: `{}` failed: {out}",
            pod.name,
            init.join(" ")
        );

        let ip = pod.pod_ips();
        let policy = self.policy_dir.to_str().unwrap().to_string();
        let source = match &self.control_plane {
            Some(control) => ["--control-plane", control.address.as_str()],
            None => ["--policy", policy.as_str()],
        };
        let service_account = self
            .service_account
            .clone()
            .unwrap_or_else(|| pod.name.clone());
        let credentials = self.control_plane.as_ref().map(|control| {
            credentials(
                &pod,
                &self.namespace,
                self.bootstrap_token.as_deref(),
                control,
                &service_account,
            )
        });
        let mut argv = vec![
            "setpriv",
            "--reuid=1337",
            "--regid=1337",
            "--clear-groups",
            "--",
            bin,
            "run",
            source[0],
            source[1],
            "--namespace",
            &self.namespace,
            "--workload",
            &pod.name,
            "--pod-ip",
            &ip,
        ];
        if let Some(credentials) = &credentials {
            argv.extend(credentials.iter().map(String::as_str));
        }
        argv.extend(self.run_args.iter().map(String::as_str));
        let mut cmd = process::command("ip");
        cmd.args(["netns", "exec", &pod.ns]).args(&argv);
        // The proxy reads SKIFF_LOG; RUST_LOG is set too for anything that reads the default.
        let log_filter = self.log_filter.clone().unwrap_or_else(|| {
            std::env::var("SKIFF_TEST_LOG").unwrap_or_else(|_| "info,skiff_proxy=debug".into())
        });
        cmd.env("SKIFF_LOG", &log_filter)
            .env("RUST_LOG", &log_filter)
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1");
        let proc = pod.start("sidecar", cmd);
        let identity = (self.control_plane.is_some()
            && (self.bootstrap_token.is_none() || self.service_account.is_some()))
        .then(|| {
            format!(
                "spiffe://cluster.local/ns/{}/sa/{service_account}",
                self.namespace
            )
        });
        let sidecar = Sidecar {
            pod,
            namespace: self.namespace,
            identity,
            proc,
            init_output: out,
        };
        sidecar.wait_ready();
        sidecar
    }
}

/// The proxy's arguments for `control`: the trust bundle, the control plane's identity and
/// a token file (written for UID 1337 only), declaring the pod's Workload first unless the
/// caller did.
fn credentials(
    pod: &Pod,
    namespace: &str,
    bootstrap_token: Option<&str>,
    control: &ControlPlaneFlags,
    service_account: &str,
) -> Vec<String> {
    let token = match bootstrap_token {
        Some(token) => token.to_string(),
        None => {
            let token = policy::bootstrap_token(namespace, &pod.name);
            let addresses: Vec<IpAddr> = std::iter::once(IpAddr::V4(pod.ip))
                .chain(pod.ip6.map(IpAddr::V6))
                .collect();
            let yaml =
                policy::render_workload(namespace, &pod.name, service_account, &addresses, &token);
            pod.mesh
                .write_policy(&format!("workload-{namespace}-{}.yaml", pod.name), &yaml);
            token
        }
    };
    let tokens = pod.mesh.dir.join("tokens");
    std::fs::create_dir_all(&tokens).expect("create the token dir");
    let token_file = tokens.join(format!("{namespace}-{}", pod.name));
    write_secret(&token_file, &token);
    vec![
        "--ca-bundle".to_string(),
        control.ca_bundle.to_str().unwrap().to_string(),
        "--control-plane-identity".to_string(),
        control.identity.clone(),
        "--bootstrap-token-file".to_string(),
        token_file.to_str().unwrap().to_string(),
    ]
}

/// What a sidecar needs to know of its control plane.
struct ControlPlaneFlags {
    /// `host:port` of its API.
    address: String,
    /// Its trust bundle (`--ca-bundle`).
    ca_bundle: PathBuf,
    /// Its SPIFFE ID (`--control-plane-identity`).
    identity: String,
}

/// Writes `text` to `path` readable by the proxy's UID (1337) only.
fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    std::io::Write::write_all(&mut file, text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    drop(file);
    std::os::unix::fs::chown(path, Some(1337), Some(1337))
        .unwrap_or_else(|e| panic!("cannot chown {} to 1337: {e}", path.display()));
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode.ok(), Some(0o600), "{}", path.display());
}

/// A running `skiff-proxy run` in a pod.
pub struct Sidecar {
    pod: Pod,
    /// The Kubernetes namespace of its workload.
    namespace: String,
    /// Its SPIFFE ID when it streams from a control plane and its service account is known.
    identity: Option<String>,
    proc: Proc,
    /// What `skiff-proxy init` printed.
    init_output: Output,
}

impl Sidecar {
    /// The proxy process (its pid is the proxy's own: `ip netns exec` and `setpriv` exec).
    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// The proxy's pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The pod it runs in.
    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    /// `namespace/name` of the workload it serves, as `skiff proxy-status` shows it.
    pub fn workload(&self) -> String {
        format!("{}/{}", self.namespace, self.pod.name)
    }

    /// Its SPIFFE ID (`spiffe://cluster.local/ns/<namespace>/sa/<service account>`), when it
    /// streams from a control plane and the lab knows its service account (it declared the
    /// Workload, or was told [`SidecarBuilder::service_account`]).
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// What `skiff-proxy init` printed.
    pub fn init_output(&self) -> &Output {
        &self.init_output
    }

    /// The proxy's log (stdout: access log; stderr: tracing).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The last `lines` lines of its log, labelled.
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }

    /// HTTP status of `/healthz/ready`, or `None` when nothing answers.
    pub fn ready_status(&self) -> Option<u16> {
        self.local_status("http://127.0.0.1:15021/healthz/ready")
    }

    /// HTTP status of any URL fetched from inside the pod, `None` when the connection fails.
    pub fn local_status(&self, url: &str) -> Option<u16> {
        let out = self.pod.exec(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {}",
            sh_quote(url)
        ));
        out.stdout.trim().parse().ok().filter(|code| *code != 0)
    }

    fn wait_ready(&self) {
        eventually(
            READY_TIMEOUT,
            &format!(
                "sidecar of pod {} to answer 200 on /healthz/ready",
                self.pod.name
            ),
            || {
                if let Some(status) = self.proc.try_status() {
                    panic!(
                        "sidecar of pod {} exited before becoming ready ({})\n{}",
                        self.pod.name,
                        process::describe(status),
                        self.log_tail(100)
                    );
                }
                (self.ready_status() == Some(200)).then_some(())
            },
            || self.log_tail(100),
        );
    }

    /// Fetches and parses `/metrics` (port 15020) from inside the pod; panics with the log if
    /// the proxy does not answer.
    pub fn metrics(&self) -> Metrics {
        let out = self
            .pod
            .exec("curl -sS --fail --max-time 10 http://127.0.0.1:15020/metrics");
        assert!(
            out.success(),
            "cannot read /metrics of the sidecar in pod {}: {out}\n{}",
            self.pod.name,
            self.log_tail(60)
        );
        Metrics::parse(&out.stdout)
    }

    /// Sum of the samples of `name` whose labels include `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics().sum(name, labels)
    }

    /// Waits (bounded) until the sum of `name{labels}` reaches `at_least`: metrics of a finished
    /// connection may be recorded just after the client sees its end. Panics with the matching
    /// series and the log otherwise.
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        let mut last = Metrics::default();
        let found = (0..150).find_map(|_| {
            last = self.metrics();
            let value = last.sum(name, labels);
            if value >= at_least {
                return Some(value);
            }
            std::thread::sleep(Duration::from_millis(200));
            None
        });
        found.unwrap_or_else(|| {
            panic!(
                "sidecar of pod {}: {name}{labels:?} never reached {at_least} (now {}).\n\
                 Series of {name}:\n{}\n{}",
                self.pod.name,
                last.sum(name, labels),
                last.describe(name),
                self.log_tail(60)
            )
        })
    }

    /// Fetches `/config_dump` from the admin port (127.0.0.1:15000) as JSON.
    pub fn config_dump(&self) -> serde_json::Value {
        let body = self
            .pod
            .exec_ok("curl -sS --fail --max-time 10 http://127.0.0.1:15000/config_dump");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/config_dump is not JSON ({e}): {body}"))
    }

    /// The version of the configuration in force (`config.version` of `/config_dump`): empty
    /// before a control plane's first configuration, `local` in standalone mode.
    pub fn config_version(&self) -> String {
        let dump = self.config_dump();
        dump["config"]["version"]
            .as_str()
            .unwrap_or_else(|| panic!("/config_dump has no config.version: {dump}"))
            .to_string()
    }

    /// Like [`Sidecar::config_version`], `None` instead of a panic when the proxy does not
    /// answer (for a live display that must keep going).
    pub fn try_config_version(&self) -> Option<String> {
        let out = self.pod.exec_timeout(
            "curl -sS --fail --max-time 2 http://127.0.0.1:15000/config_dump",
            Duration::from_secs(5),
        );
        let dump: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        dump["config"]["version"].as_str().map(str::to_string)
    }

    /// Waits (bounded) until the configuration in force is no longer `old`; returns the new
    /// version.
    pub fn wait_config_change(&self, old: &str) -> String {
        eventually(
            Duration::from_secs(60),
            &format!(
                "sidecar of pod {} to apply a configuration other than {old:?}",
                self.pod.name
            ),
            || Some(self.config_version()).filter(|version| version != old),
            || self.pod.mesh_logs(),
        )
    }

    /// Sends SIGTERM to the proxy.
    pub fn terminate(&self) {
        self.proc.terminate();
    }

    /// The proxy's resident memory in KiB, `None` once it has exited.
    pub fn rss_kib(&self) -> Option<u64> {
        self.proc.rss_kib()
    }
}
