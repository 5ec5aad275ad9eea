//! A [`Mesh`] is one test's (or one demo's) private network: a "network" namespace holding a
//! Linux bridge, pods attached to it by veth pairs, a /24 for pod IPs and a /24 for service VIPs
//! that no interface owns (so a VIP is reachable only through capture), a temp dir for logs, and
//! a policy dir (the temp dir's `policy/` unless [`MeshBuilder::policy_dir`] names one).
//!
//! Addresses never collide with anything outside the mesh: every mesh has its own namespaces, so
//! two meshes may even use the same subnet ([`MeshBuilder::pod_subnet`]; `skiff demo` uses the
//! fixed addresses of its policy files). Tests let the subnet derive from the mesh id, so their
//! logs never mix up two meshes.
//!
//! A dual-stack mesh ([`Mesh::new_dual_stack`]) adds IPv6 inside its own namespaces only: a ULA
//! /64 for pods (`fd00:5c1f:K::/64`, the bridge is `::1`, a default route via it) and a ULA /64
//! for service VIPs that no interface owns (`fd00:5c1f:K:96::/64`). Addresses are added with
//! `nodad` and DAD is off in every namespace, so they are usable at once.
//!
//! Names are `skt{pid%10000}x{n}` (+ `-net`, `-p{i}`: at most 15 characters), claimed atomically
//! by a marker file under `/run/skiff-tests/` that records the owner's pid and start time, so two
//! test processes never collide and a later run can sweep what a killed run left behind.

use std::fs;
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime};

use crate::control::ControlPlane;
use crate::pod::Pod;
use crate::policy::ServiceBuilder;
use crate::process::{self, Output, Proc, ProcInner};

/// Prefix of every namespace and marker the harness creates.
pub const PREFIX: &str = "skt";

/// Where ownership markers live (tmpfs, like /run/netns).
const MARKER_DIR: &str = "/run/skiff-tests";

/// First two hextets of every IPv6 address the harness hands out (a ULA, inside fd00::/8).
const ULA: [u16; 2] = [0xfd00, 0x5c1f];

/// Fourth hextet of the IPv6 VIP /64 (the pod /64 has 0 there), after 10.96.
const VIP6_SUBNET: u16 = 0x96;

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// One test's network of pods. Dropping it kills every process it started and deletes its
/// namespaces, also when the test panics (then it prints the logs first).
pub struct Mesh {
    pub(crate) inner: Arc<MeshInner>,
}

/// How a [`Mesh`] is made, for callers that choose more than [`Mesh::new`] does.
///
/// ```no_run
/// # use std::net::Ipv4Addr;
/// # use std::path::Path;
/// let mesh = skiff_lab::Mesh::builder("demo")
///     .pod_subnet(Ipv4Addr::new(10, 0, 0, 0))
///     .policy_dir(Path::new("examples/demo"))
///     .build();
/// let client = mesh.pod_at("client", Ipv4Addr::new(10, 0, 0, 2));
/// ```
#[derive(Clone, Debug)]
pub struct MeshBuilder {
    /// The caller's name for the mesh, for messages.
    label: String,
    /// IPv6 too ([`Mesh::new_dual_stack`]).
    dual_stack: bool,
    /// First three octets of the pod /24; `None`: derived from the mesh id.
    pod_subnet: Option<[u8; 3]>,
    /// The directory the control plane and file-mode sidecars read; `None`: the temp dir's
    /// `policy/`.
    policy_dir: Option<PathBuf>,
    /// `skiff-proxy` to run; `None`: [`crate::proxy_bin`].
    proxy_bin: Option<PathBuf>,
    /// `skiff-control` to run; `None`: [`crate::control_bin`].
    control_bin: Option<PathBuf>,
}

impl MeshBuilder {
    /// IPv6 as well as IPv4 (see [`Mesh::new_dual_stack`]).
    pub fn dual_stack(mut self) -> Self {
        self.dual_stack = true;
        self
    }

    /// Pods get addresses in `network`/24 (`network` ends in `.0`); the bridge is `.1`.
    pub fn pod_subnet(mut self, network: Ipv4Addr) -> Self {
        let [a, b, c, d] = network.octets();
        assert!(
            d == 0,
            "pod subnet {network}: give the /24's network address (x.y.z.0)"
        );
        self.pod_subnet = Some([a, b, c]);
        self
    }

    /// The control plane (and file-mode sidecars) read this directory instead of the mesh's
    /// own: the caller's files, edited while the mesh runs. [`Mesh::write_policy`] writes there
    /// too; the mesh never deletes it.
    pub fn policy_dir(mut self, dir: &Path) -> Self {
        self.policy_dir = Some(dir.to_path_buf());
        self
    }

    /// Runs this `skiff-proxy` in every sidecar.
    pub fn proxy_bin(mut self, bin: &Path) -> Self {
        self.proxy_bin = Some(bin.to_path_buf());
        self
    }

    /// Runs this `skiff-control` as the control plane.
    pub fn control_bin(mut self, bin: &Path) -> Self {
        self.control_bin = Some(bin.to_path_buf());
        self
    }

    /// Creates the network namespace and its bridge. Panics (loudly, never skips) when not root
    /// or when namespaces cannot be created.
    pub fn build(self) -> Mesh {
        Mesh::create(self)
    }
}

pub(crate) struct MeshInner {
    /// Unique short id, the prefix of every namespace name.
    pub(crate) id: String,
    /// The test's own name for it, for messages.
    pub(crate) label: String,
    /// The namespace holding the bridge.
    pub(crate) net_ns: String,
    /// First three octets of the pod subnet (10.a.b.0/24); the bridge is .1.
    pub(crate) pod_net: [u8; 3],
    /// First three octets of the VIP subnet (10.96.c.0/24).
    pub(crate) vip_net: [u8; 3],
    /// Dual-stack meshes: the third hextet `K` of the pod /64 (`fd00:5c1f:K::/64`) and of the
    /// VIP /64 (`fd00:5c1f:K:96::/64`). `None`: IPv4 only.
    pub(crate) net6: Option<u16>,
    /// Temp dir for logs (`logs/`) and, unless the caller named one, policy (`policy/`).
    pub(crate) dir: PathBuf,
    /// Where the control plane and file-mode sidecars read policy.
    pub(crate) policy_dir: PathBuf,
    /// `skiff-proxy` and `skiff-control` chosen by the caller (else found when first needed).
    proxy_bin: Option<PathBuf>,
    control_bin: Option<PathBuf>,
    /// Our claim on `id`.
    marker: PathBuf,
    pub(crate) state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    /// Pod namespaces, for cleanup.
    pub(crate) pod_namespaces: Vec<String>,
    /// Every long-running process started, for cleanup and log dumps.
    pub(crate) procs: Vec<Arc<ProcInner>>,
    /// Pods created so far (the next pod's index).
    pub(crate) pods: u8,
    /// Pod IPs handed out, so a chosen one never collides.
    pub(crate) pod_ips: Vec<Ipv4Addr>,
    /// VIPs handed out so far.
    pub(crate) vips: u8,
}

impl Mesh {
    /// Creates the network namespace and its bridge (IPv4 only). Panics (loudly, never skips)
    /// when not root or when namespaces cannot be created.
    pub fn new(label: &str) -> Mesh {
        Mesh::builder(label).build()
    }

    /// Like [`Mesh::new`], plus IPv6: the bridge and every pod also get an address from the
    /// mesh's ULA /64 (pods a default IPv6 route via the bridge), services get an IPv6 VIP too
    /// (`clusterIPs` lists both, with a second EndpointSlice of `addressType: IPv6`), and
    /// sidecars are started with `--pod-ip V4,V6`.
    pub fn new_dual_stack(label: &str) -> Mesh {
        Mesh::builder(label).dual_stack().build()
    }

    /// A mesh with more choices than [`Mesh::new`]: its pod subnet, its policy dir, the
    /// binaries it runs.
    pub fn builder(label: &str) -> MeshBuilder {
        MeshBuilder {
            label: label.to_string(),
            dual_stack: false,
            pod_subnet: None,
            policy_dir: None,
            proxy_bin: None,
            control_bin: None,
        }
    }

    fn create(options: MeshBuilder) -> Mesh {
        crate::require_root();
        if let Some(dir) = &options.policy_dir {
            assert!(
                dir.is_dir(),
                "policy dir {} is not a directory",
                dir.display()
            );
        }
        SWEEP.call_once(sweep_stale);
        let pid = std::process::id();
        let (id, marker) = claim_id(pid);
        let n: u32 = id.rsplit('x').next().unwrap().parse().unwrap();
        let k = (pid % 10000) * 97 + n * 7919;
        let pod_net =
            options
                .pod_subnet
                .unwrap_or([10, 100 + ((k / 256) % 90) as u8, (k % 256) as u8]);
        let vip_net = [10, 96, (k % 256) as u8];
        let net6 = options.dual_stack.then_some((k % 0xffff) as u16 + 1);
        let dir = std::env::temp_dir().join("skiff-tests").join(&id);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("logs")).expect("create mesh log dir");
        let policy_dir = match options.policy_dir {
            Some(policy_dir) => policy_dir,
            None => {
                fs::create_dir_all(dir.join("policy")).expect("create mesh policy dir");
                dir.join("policy")
            }
        };
        let inner = MeshInner {
            net_ns: format!("{id}-net"),
            id,
            label: options.label,
            pod_net,
            vip_net,
            net6,
            dir,
            policy_dir,
            proxy_bin: options.proxy_bin,
            control_bin: options.control_bin,
            marker,
            state: Mutex::new(State::default()),
        };
        let mesh = Mesh {
            inner: Arc::new(inner),
        };
        mesh.create_network();
        mesh
    }

    fn create_network(&self) {
        let ns = &self.inner.net_ns;
        add_netns(ns);
        if self.is_dual_stack() {
            enable_ipv6(ns);
        }
        let bridge_cidr = format!("{}/24", self.bridge_ip());
        let mut steps = vec![
            vec!["ip", "-n", ns, "link", "set", "lo", "up"],
            vec!["ip", "-n", ns, "link", "add", "br0", "type", "bridge"],
            vec!["ip", "-n", ns, "addr", "add", &bridge_cidr, "dev", "br0"],
        ];
        let bridge_cidr6 = self.bridge_ip6().map(|ip| format!("{ip}/64"));
        if let Some(cidr6) = &bridge_cidr6 {
            // Without multicast snooping the bridge floods neighbour solicitations to every
            // port, whatever MLD reports it has (not) seen.
            steps.push(vec![
                "ip",
                "-n",
                ns,
                "link",
                "set",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]);
            steps.push(vec![
                "ip", "-n", ns, "-6", "addr", "add", cidr6, "dev", "br0", "nodad",
            ]);
        }
        steps.push(vec!["ip", "-n", ns, "link", "set", "br0", "up"]);
        for argv in steps {
            process::run_ok(&argv);
        }
    }

    /// Adds a pod: a namespace with `eth0` (veth to the bridge), the next pod IP (`.10` + its
    /// index), loopback up and a default route via the bridge, so traffic to a VIP leaves the
    /// pod unless captured.
    pub fn pod(&self, name: &str) -> Pod {
        let index = self.inner.next_pod_index();
        let [a, b, c] = self.inner.pod_net;
        self.add_pod(name, index, Ipv4Addr::new(a, b, c, 10 + index))
    }

    /// Like [`Mesh::pod`], at a chosen address of the pod subnet (not the bridge's `.1`, not one
    /// another pod has). In a dual-stack mesh its IPv6 address ends in the same number.
    pub fn pod_at(&self, name: &str, ip: Ipv4Addr) -> Pod {
        let [a, b, c, d] = ip.octets();
        assert!(
            [a, b, c] == self.inner.pod_net && (2..255).contains(&d),
            "pod {name}: {ip} is not a pod address of the mesh's subnet {}/24 (bridge {})",
            Ipv4Addr::new(a, b, c, 0),
            self.bridge_ip()
        );
        let index = self.inner.next_pod_index();
        self.add_pod(name, index, ip)
    }

    fn add_pod(&self, name: &str, index: u8, ip: Ipv4Addr) -> Pod {
        {
            let mut state = self.inner.state.lock().unwrap();
            assert!(
                !state.pod_ips.contains(&ip),
                "pod {name}: another pod of the mesh already has {ip}"
            );
            state.pod_ips.push(ip);
        }
        let ns = format!("{}-p{index}", self.inner.id);
        let ip6 = self
            .inner
            .net6
            .map(|k| ula(k, 0, u16::from(ip.octets()[3])));
        // Register before creating, so a half-built pod is still cleaned up.
        self.inner
            .state
            .lock()
            .unwrap()
            .pod_namespaces
            .push(ns.clone());
        add_netns(&ns);
        if ip6.is_some() {
            // Before eth0 exists, so it inherits the `default` settings (no DAD).
            enable_ipv6(&ns);
        }
        let peer = format!("v{index}");
        let cidr = format!("{ip}/24");
        let gateway = self.bridge_ip().to_string();
        let net = self.inner.net_ns.as_str();
        let mut steps = vec![
            vec!["ip", "-n", &ns, "link", "set", "lo", "up"],
            vec![
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &peer,
                "netns", net,
            ],
            vec!["ip", "-n", net, "link", "set", &peer, "master", "br0"],
            vec!["ip", "-n", net, "link", "set", &peer, "up"],
            vec!["ip", "-n", &ns, "addr", "add", &cidr, "dev", "eth0"],
            vec!["ip", "-n", &ns, "link", "set", "eth0", "up"],
            vec!["ip", "-n", &ns, "route", "add", "default", "via", &gateway],
        ];
        let cidr6 = ip6.map(|ip6| format!("{ip6}/64"));
        let gateway6 = self.bridge_ip6().map(|gw| gw.to_string());
        if let (Some(cidr6), Some(gateway6)) = (&cidr6, &gateway6) {
            steps.push(vec![
                "ip", "-n", &ns, "-6", "addr", "add", cidr6, "dev", "eth0", "nodad",
            ]);
            steps.push(vec![
                "ip", "-n", &ns, "-6", "route", "add", "default", "via", gateway6, "dev", "eth0",
            ]);
        }
        for argv in steps {
            process::run_ok(&argv);
        }
        Pod::new(self.inner.clone(), name, ns, ip, ip6)
    }

    /// Starts declaring a Service (and its EndpointSlice) in the mesh's policy dir.
    pub fn service(&self, name: &str) -> ServiceBuilder {
        ServiceBuilder::new(self.inner.clone(), name)
    }

    /// Starts `skiff-control` in the mesh's network namespace, on the bridge address (pods
    /// reach it at `bridge-ip:15010`; the CLI and tests at `bridge-ip:15014`), watching the
    /// mesh's policy dir, and waits until it answers. Sidecars use it through
    /// [`crate::SidecarBuilder::control_plane`].
    pub fn control_plane(&self) -> ControlPlane {
        ControlPlane::start(self.inner.clone(), &[])
    }

    /// Like [`Mesh::control_plane`], with extra `skiff-control` arguments for every start of
    /// it (e.g. `--cert-lifetime 2m`).
    pub fn control_plane_with(&self, args: &[&str]) -> ControlPlane {
        ControlPlane::start(self.inner.clone(), args)
    }

    /// Writes (or replaces) `policy/FILE` atomically: a temp file renamed over it, so the
    /// control plane, which polls the directory, never reads half a file. Returns its path.
    pub fn write_policy(&self, file: &str, yaml: &str) -> PathBuf {
        self.inner.write_policy(file, yaml)
    }

    /// Deletes `policy/FILE` (a single unlink, atomic for a reader of the directory).
    pub fn remove_policy(&self, file: &str) {
        let path = self.policy_dir().join(file);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
    }

    /// Runs `sh -c script` in the mesh's network namespace (the one holding the bridge and the
    /// control plane), bounded by a 60 s `timeout`.
    pub fn exec_in_network(&self, script: &str) -> Output {
        self.inner.exec_in_network(&["sh", "-c", script])
    }

    /// A fresh VIP from the mesh's service range (owned by no interface).
    pub fn vip(&self) -> Ipv4Addr {
        self.inner.vip4(self.inner.next_vip_index())
    }

    /// A fresh IPv6 VIP from the mesh's IPv6 service range (owned by no interface). Panics
    /// unless the mesh is dual-stack.
    pub fn vip6(&self) -> Ipv6Addr {
        let index = self.inner.next_vip_index();
        self.inner
            .vip6(index)
            .unwrap_or_else(|| panic!("mesh {} is IPv4 only: no IPv6 VIPs", self.inner.label))
    }

    /// Whether the mesh has IPv6 too ([`Mesh::new_dual_stack`]).
    pub fn is_dual_stack(&self) -> bool {
        self.inner.net6.is_some()
    }

    /// The directory holding the policy YAML the control plane (and every file-mode sidecar)
    /// of this mesh reads.
    pub fn policy_dir(&self) -> PathBuf {
        self.inner.policy_dir.clone()
    }

    /// The mesh's temp dir (`logs/`, and `policy/` unless the caller named a policy dir).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The unique id (prefix of its namespace names).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The bridge's address: every pod's default gateway.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        self.inner.bridge_ip()
    }

    /// The bridge's IPv6 address (every pod's default IPv6 gateway), `None` when IPv4 only.
    pub fn bridge_ip6(&self) -> Option<Ipv6Addr> {
        self.inner.net6.map(|k| ula(k, 0, 1))
    }

    /// Names of every namespace of this mesh (network first).
    pub fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.inner.net_ns.clone()];
        all.extend(
            self.inner
                .state
                .lock()
                .unwrap()
                .pod_namespaces
                .iter()
                .cloned(),
        );
        all
    }

    /// The last lines of every log of this mesh, for failure messages.
    pub fn logs(&self) -> String {
        self.inner.logs(60)
    }
}

impl MeshInner {
    /// Hands out the next pod index (names its namespace and veth).
    fn next_pod_index(&self) -> u8 {
        let mut state = self.state.lock().unwrap();
        state.pods += 1;
        assert!(state.pods < 200, "too many pods in one mesh");
        state.pods
    }

    /// The `skiff-proxy` its sidecars run.
    pub(crate) fn proxy_bin(&self) -> PathBuf {
        self.proxy_bin.clone().unwrap_or_else(crate::proxy_bin)
    }

    /// The `skiff-control` its control plane runs.
    pub(crate) fn control_bin(&self) -> PathBuf {
        self.control_bin.clone().unwrap_or_else(crate::control_bin)
    }

    /// Hands out the next VIP index; a dual-stack service uses it for both families.
    pub(crate) fn next_vip_index(&self) -> u8 {
        let mut state = self.state.lock().unwrap();
        state.vips += 1;
        assert!(state.vips < 240, "too many VIPs in one mesh");
        state.vips
    }

    /// The bridge's address (`.1` of the pod subnet).
    pub(crate) fn bridge_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.pod_net;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The IPv4 VIP with this index: `10.96.c.(10 + index)`.
    pub(crate) fn vip4(&self, index: u8) -> Ipv4Addr {
        let [a, b, c] = self.vip_net;
        Ipv4Addr::new(a, b, c, 10 + index)
    }

    /// The IPv6 VIP with this index, `fd00:5c1f:K:96::(10 + index)`; `None` when IPv4 only.
    pub(crate) fn vip6(&self, index: u8) -> Option<Ipv6Addr> {
        self.net6
            .map(|k| ula(k, VIP6_SUBNET, u16::from(10 + index)))
    }

    pub(crate) fn register(&self, proc: Arc<ProcInner>) {
        self.state.lock().unwrap().procs.push(proc);
    }

    /// Starts `cmd` with its output in `logs/NAME.log` (`NAME-2.log`… when taken); it is killed
    /// with its process group when the mesh drops.
    pub(crate) fn start(&self, name: &str, cmd: std::process::Command) -> Proc {
        let proc = Proc::start(name.to_string(), cmd, self.log_path(name));
        self.register(proc.inner.clone());
        proc
    }

    /// A fresh log file name for `name` (`pod/what` → `pod-what`; other characters outside
    /// `[A-Za-z0-9_-]` become `_`).
    fn log_path(&self, name: &str) -> PathBuf {
        let logs = self.dir.join("logs");
        let base: String = name
            .chars()
            .map(|c| match c {
                '/' => '-',
                c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => c,
                _ => '_',
            })
            .collect();
        let mut path = logs.join(format!("{base}.log"));
        let mut n = 1;
        while path.exists() {
            n += 1;
            path = logs.join(format!("{base}-{n}.log"));
        }
        path
    }

    /// See [`Mesh::write_policy`].
    pub(crate) fn write_policy(&self, file: &str, yaml: &str) -> PathBuf {
        assert!(
            !file.contains('/') && !file.starts_with('.'),
            "policy file name {file:?}: a plain name inside the policy dir"
        );
        let dir = &self.policy_dir;
        let path = dir.join(file);
        // Not .yaml, so a poll in between never reads it.
        let temp = dir.join(format!(".{file}.tmp"));
        fs::write(&temp, yaml).unwrap_or_else(|e| panic!("cannot write {}: {e}", temp.display()));
        fs::rename(&temp, &path).unwrap_or_else(|e| {
            panic!(
                "cannot rename {} to {}: {e}",
                temp.display(),
                path.display()
            )
        });
        path
    }

    /// Runs `argv` in the network namespace, bounded by a 60 s `timeout`.
    pub(crate) fn exec_in_network(&self, argv: &[&str]) -> Output {
        let mut full = vec![
            "ip",
            "netns",
            "exec",
            &self.net_ns,
            "timeout",
            "-k",
            "5",
            "60",
        ];
        full.extend_from_slice(argv);
        process::run(&full)
    }

    pub(crate) fn logs(&self, lines: usize) -> String {
        let procs = self.state.lock().unwrap().procs.clone();
        let mut out = String::new();
        for proc in procs {
            out.push_str(&format!(
                "===== log of {} (pid {}, {}) =====\n{}\n",
                proc.name,
                proc.pid,
                proc.log.display(),
                crate::tail(&proc.log, lines)
            ));
        }
        out
    }
}

impl Drop for MeshInner {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!(
                "\n##### mesh {} ({}) failed; logs kept in {} #####\n{}",
                self.id,
                self.label,
                self.dir.display(),
                self.logs(80)
            );
        }
        let (procs, pods) = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            (state.procs.clone(), state.pod_namespaces.clone())
        };
        for proc in &procs {
            proc.kill_group();
        }
        for ns in pods.iter().chain(std::iter::once(&self.net_ns)) {
            delete_netns(ns);
        }
        let _ = fs::remove_file(&self.marker);
        if !panicking {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `fd00:5c1f:K:SUBNET::HOST`.
fn ula(k: u16, subnet: u16, host: u16) -> Ipv6Addr {
    let [a, b] = ULA;
    Ipv6Addr::new(a, b, k, subnet, 0, 0, 0, host)
}

/// Makes sure IPv6 is on in `ns` and that addresses need no duplicate address detection (it
/// would leave them "tentative", unusable, for a second or more).
fn enable_ipv6(ns: &str) {
    process::run_ok(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=0",
        "net.ipv6.conf.default.disable_ipv6=0",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ]);
}

/// Creates a namespace, panicking with a clear message when the kernel or permissions refuse.
fn add_netns(ns: &str) {
    let out = process::run(&["ip", "netns", "add", ns]);
    assert!(
        out.success(),
        "`ip netns add {ns}` failed: the skiff end-to-end tests need root and network namespace \
         support (CAP_SYS_ADMIN, CAP_NET_ADMIN, a writable /run/netns).\n{out}"
    );
}

/// Kills whatever still runs in `ns` and deletes it.
fn delete_netns(ns: &str) {
    if !Path::new("/run/netns").join(ns).exists() {
        return;
    }
    let pids = process::run(&["ip", "netns", "pids", ns]).stdout;
    for pid in pids.split_whitespace() {
        let _ = process::run(&["kill", "-KILL", pid]);
    }
    for _ in 0..50 {
        if process::run(&["ip", "netns", "del", ns]).success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("warning: could not delete network namespace {ns}");
}

/// Claims the first free `skt{pid%10000}x{n}` by creating its marker file exclusively.
fn claim_id(pid: u32) -> (String, PathBuf) {
    fs::create_dir_all(MARKER_DIR).unwrap_or_else(|e| panic!("cannot create {MARKER_DIR}: {e}"));
    let start = start_time(pid).unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Keeps `skt9999x99-p199` within the 15-character limit of namespace names.
        assert!(n < 100, "ran out of mesh ids for this process");
        let id = format!("{PREFIX}{}x{n}", pid % 10000);
        let marker = Path::new(MARKER_DIR).join(&id);
        match fs::File::options()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            Ok(mut file) => {
                writeln!(file, "{pid} {start}").expect("write marker");
                if Path::new("/run/netns").join(format!("{id}-net")).exists() {
                    // Left by a dead run whose marker is gone: take it over.
                    delete_stale(&id);
                }
                return (id, marker);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create marker {}: {e}", marker.display()),
        }
    }
}

/// Field 22 of /proc/PID/stat: distinguishes a live owner from a reused pid.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the owner recorded in a marker is dead. Unreadable fresh markers count as alive (the
/// owner may be writing it right now).
fn owner_dead(marker: &Path) -> bool {
    let Ok(text) = fs::read_to_string(marker) else {
        return true;
    };
    let mut fields = text.split_whitespace();
    match (
        fields.next().and_then(|p| p.parse::<u32>().ok()),
        fields.next().and_then(|s| s.parse::<u64>().ok()),
    ) {
        (Some(pid), Some(start)) => start_time(pid) != Some(start),
        _ => {
            let age = fs::metadata(marker)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            age > Duration::from_secs(60)
        }
    }
}

/// Deletes namespaces (and markers) of meshes whose owning test process is gone.
pub fn sweep_stale() {
    let mut ids: Vec<String> = Vec::new();
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = mesh_id_of(&name) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
    }
    if let Ok(entries) = fs::read_dir(MARKER_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if mesh_id_of(&format!("{name}-net")).is_some() && !ids.contains(&name) {
                ids.push(name);
            }
        }
    }
    for id in ids {
        let marker = Path::new(MARKER_DIR).join(&id);
        if owner_dead(&marker) {
            delete_stale(&id);
            let _ = fs::remove_file(&marker);
        }
    }
    // Logs of failed runs are kept for inspection, but not forever.
    if let Ok(entries) = fs::read_dir(std::env::temp_dir().join("skiff-tests")) {
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > Duration::from_secs(24 * 3600));
            if old {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn delete_stale(id: &str) {
    let prefix = format!("{id}-");
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    // Pods first, the bridge's namespace last.
    names.sort_by_key(|n| n.ends_with("-net"));
    for ns in names {
        eprintln!("sweeping stale namespace {ns}");
        delete_netns(&ns);
    }
}

/// `skt1234x5-net` / `skt1234x5-p2` → `skt1234x5`.
fn mesh_id_of(ns: &str) -> Option<String> {
    let (id, suffix) = ns.split_once('-')?;
    let rest = id.strip_prefix(PREFIX)?;
    let (pid, n) = rest.split_once('x')?;
    let valid = !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && (suffix == "net"
            || suffix
                .strip_prefix('p')
                .is_some_and(|i| i.parse::<u8>().is_ok()));
    valid.then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::mesh_id_of;

    #[test]
    fn mesh_ids_are_recognised() {
        assert_eq!(mesh_id_of("skt1234x5-net").as_deref(), Some("skt1234x5"));
        assert_eq!(mesh_id_of("skt1x0-p12").as_deref(), Some("skt1x0"));
        assert_eq!(mesh_id_of("skiff-demo-net"), None);
        assert_eq!(mesh_id_of("skt1234-net"), None);
        assert_eq!(mesh_id_of("sktaxb-p1"), None);
    }
}
