//! The lab: pods as Linux network namespaces, with real `skiff-proxy` sidecars and a real
//! `skiff-control`, plus real clients and servers (curl, h2load, Python grpcio / websockets / h2).
//! The end-to-end tests (`tests/`) and `skiff demo` are built on it.
//!
//! Map of the crate:
//! - [`mesh`]: a [`Mesh`] — a unique id, a "network" namespace holding a bridge, a /24 for pods
//!   (derived from the id, or chosen: [`MeshBuilder::pod_subnet`]) and one for service VIPs, a
//!   temp dir for logs, the policy dir (the temp dir's `policy/`, or one the caller names:
//!   [`MeshBuilder::policy_dir`]), and the cleanup (in `Drop`, so it also runs when a test
//!   panics) plus a sweep of stale namespaces. [`Mesh::new_dual_stack`] adds a ULA /64 for pods
//!   and one for IPv6 VIPs.
//! - [`pod`]: a [`Pod`] is a namespace on that bridge, at the next free IP or a chosen one
//!   ([`Mesh::pod_at`]); run commands in it, spawn servers, install a sidecar ([`Sidecar`]):
//!   `skiff-proxy init`, then `skiff-proxy run` as UID 1337.
//! - [`process`]: a spawned process ([`Proc`]) with its log file, signals and memory (VmRSS).
//! - [`policy`]: renders a Kubernetes `Service` + `EndpointSlice` into the mesh's policy dir
//!   (dual-stack: both VIPs in `clusterIPs`, one EndpointSlice per address family).
//! - [`route`]: renders Gateway API `HTTPRoute`s attached to a Service (matches, weighted
//!   backends, header modifier, timeout); [`Mesh::write_policy`] writes files atomically.
//! - [`control`]: a [`ControlPlane`] (`skiff-control` on the bridge address, watching the
//!   policy dir) that can be killed and started again, its metrics, and the `skiff` CLI
//!   (`proxy-status`, `proxy-config`); sidecars stream from it with
//!   [`SidecarBuilder::control_plane`].
//! - [`counters`]: proof that traffic went through both sidecars (client outbound, server
//!   inbound counters grew).
//! - [`metrics`]: parses the Prometheus text a sidecar serves on 15020.
//! - [`python`]: the venv and the Python clients/servers under `tests/python/`.
//!
//! ```no_run
//! use skiff_lab::{Mesh, python};
//! let mesh = Mesh::new("example");
//! let server = mesh.pod("server");
//! let client = mesh.pod("client");
//! let echo = mesh.service("echo").port(80, 8080).backend(&server).apply();
//! server.spawn_python("http", "http_server.py", &["--port", "8080"]);
//! server.wait_listening(8080);
//! let _ = (server.sidecar().install(), client.sidecar().install());
//! let body = client.exec_ok(&format!("curl -sS --max-time 20 http://{}/", echo.vip()));
//! assert!(body.contains("\"path\": \"/\""));
//! ```
//!
//! Everything here needs root (namespaces, iptables): [`require_root`] panics with a clear
//! message otherwise, so a test can never pass by skipping. Failures panic with the logs of
//! every process involved: the lab is for tests and demos, not for production.

pub mod control;
pub mod counters;
pub mod fault;
pub mod mesh;
pub mod metrics;
pub mod pod;
pub mod policy;
pub mod process;
pub mod python;
pub mod route;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use control::{ControlPlane, ProxyStatusRow};
pub use counters::PathCounters;
pub use mesh::{Mesh, MeshBuilder};
pub use metrics::Metrics;
pub use pod::{Output, Pod, Sidecar, SidecarBuilder};
pub use policy::{Families, Service, ServiceBuilder};
pub use process::Proc;
pub use route::{line_of, HttpRoute, RouteMatch, RouteRule};

/// The directory cargo builds into: `$CARGO_TARGET_DIR`, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace_dir().join(dir)
        };
    }
    workspace_dir().join("target")
}

/// The workspace root (the parent of this crate).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ has a parent")
        .to_path_buf()
}

/// The `skiff-proxy` binary under test: `$SKIFF_PROXY_BIN`, else the one built beside the
/// running binary (same profile and target dir), else `<target dir>/debug/skiff-proxy`.
pub fn proxy_bin() -> PathBuf {
    workspace_bin("skiff-proxy", "SKIFF_PROXY_BIN", "skiff-proxy")
}

/// The control plane under test (`skiff-control`), found like [`proxy_bin`]
/// (`$SKIFF_CONTROL_BIN` overrides).
pub fn control_bin() -> PathBuf {
    workspace_bin("skiff-control", "SKIFF_CONTROL_BIN", "skiff-control")
}

/// The `skiff` CLI under test, found like [`proxy_bin`] (`$SKIFF_CLI_BIN` overrides).
pub fn cli_bin() -> PathBuf {
    workspace_bin("skiff", "SKIFF_CLI_BIN", "skiff-control")
}

/// A binary of the workspace: `$env_var`, else the one built beside the running binary (a test
/// binary lives in `<target>/<profile>/deps/`, `skiff` in `<target>/<profile>/`), else
/// `<target dir>/debug/NAME`. Panics with the build command (`cargo build -p PACKAGE`).
fn workspace_bin(name: &str, env_var: &str, package: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(env_var) {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "{env_var}={} does not exist", bin.display());
        return bin;
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            if let Some(profile_dir) = dir.parent() {
                candidates.push(profile_dir.join(name));
            }
        }
    }
    candidates.push(target_dir().join("debug").join(name));
    for candidate in &candidates {
        if candidate.is_file() {
            return candidate.clone();
        }
    }
    panic!(
        "{name} binary not found (looked at {}). Build it first: `cargo build -p {package}` \
         (or set {env_var})",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Panics unless running as root: namespaces and iptables need it, and the tests must fail
/// loudly rather than skip.
pub fn require_root() {
    let euid = euid();
    assert!(
        euid.as_deref() == Some("0"),
        "the skiff lab (end-to-end tests, `skiff demo`) needs root (network namespaces, veth, \
         iptables); running as euid {}. Run as root (e.g. `sudo -E cargo nextest run -p \
         skiff-tests`).",
        euid.as_deref().unwrap_or("?")
    );
}

/// Whether the process runs as root (effective UID 0).
pub fn is_root() -> bool {
    euid().as_deref() == Some("0")
}

/// The effective UID, from `/proc/self/status`.
fn euid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` with `what` and
/// the output of `context` (e.g. logs). Bounded waits only: never a timing assertion.
pub fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Quotes `s` for `sh -c` (single quotes, with embedded quotes escaped).
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The last `lines` lines of a file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!(
            "... ({start} earlier lines in {})\n",
            path.display()
        ));
    }
    for line in &all[start..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Parses JSON printed by a test program, panicking with the text when it is not JSON.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}
