//! A mesh's control plane: `skiff-control` in the mesh's network namespace (the one holding the
//! bridge), listening on the bridge address, so every pod reaches it at `bridge-ip:15010` without
//! capture getting in the way (sidecars run as UID 1337, which is never captured). It watches the
//! mesh's policy dir (its own, or the one the mesh was built with). It can be killed (SIGKILL) and started again on the same addresses; its
//! metrics and the `skiff` CLI (`proxy-status`, `proxy-config`) are read from inside the network
//! namespace, through its admin port 15014.
//!
//! Its certificate authority is a root it generates on first start in the mesh's `ca/`
//! (`--ca-dir`), kept across restarts; sidecars get that directory's `ca-bundle.pem` as
//! `--ca-bundle` and verify the control plane as [`CONTROL_PLANE_IDENTITY`].

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::mesh::MeshInner;
use crate::metrics::Metrics;
use crate::pod::{Sidecar, NAMESPACE};
use crate::process::{self, Output, Proc};
use crate::{eventually, sh_quote};

/// The proxy API: configuration streams (HTTP/2).
pub const API_PORT: u16 = 15010;
/// Metrics, health and the status endpoints the CLI reads (HTTP/1).
pub const ADMIN_PORT: u16 = 15014;

/// The SPIFFE ID the control plane serves its API as (trust domain `cluster.local`, namespace
/// `skiff-system`, unless its arguments say otherwise).
pub const CONTROL_PLANE_IDENTITY: &str = "spiffe://cluster.local/ns/skiff-system/sa/skiff-control";

/// How long the control plane may take to answer after a start (a debug build, a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long proxies may take to converge on a configuration (reconnect back-off is at most 5 s).
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// A running (or killed, until started again) `skiff-control`.
pub struct ControlPlane {
    mesh: Arc<MeshInner>,
    /// The bridge address; both ports listen on it.
    ip: Ipv4Addr,
    /// The process in charge now; a restart replaces it.
    proc: Mutex<Proc>,
    /// Extra `skiff-control` arguments (e.g. `--cert-lifetime 2m`), for every start.
    args: Vec<String>,
}

/// One row of `skiff proxy-status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyStatusRow {
    /// `namespace/name`.
    pub workload: String,
    pub pod_ips: String,
    /// The version the proxy runs (`-` for none).
    pub version: String,
    pub last_seen: String,
    pub proxy: String,
    /// `ACK`, `NACK <version>: <reason>`, `PENDING <version>` or `WAITING …`.
    pub status: String,
}

impl ControlPlane {
    pub(crate) fn start(mesh: Arc<MeshInner>, args: &[&str]) -> ControlPlane {
        let ip = mesh.bridge_ip();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let proc = spawn(&mesh, ip, &args);
        let control = ControlPlane {
            mesh,
            ip,
            proc: Mutex::new(proc),
            args,
        };
        control.wait_live();
        control
    }

    /// Its certificate authority's directory (`--ca-dir`): `root-cert.pem`, `root-key.pem`
    /// and `ca-bundle.pem`. The root survives restarts.
    pub fn ca_dir(&self) -> PathBuf {
        ca_dir(&self.mesh)
    }

    /// The trust bundle, what sidecars get as `--ca-bundle`.
    pub fn ca_bundle(&self) -> PathBuf {
        self.ca_dir().join("ca-bundle.pem")
    }

    /// The SPIFFE ID it serves its API as, what sidecars get as `--control-plane-identity`.
    pub fn identity(&self) -> String {
        let arg = |flag: &str| {
            self.args
                .iter()
                .position(|a| a == flag)
                .and_then(|at| self.args.get(at + 1))
                .cloned()
        };
        match (arg("--trust-domain"), arg("--namespace")) {
            (None, None) => CONTROL_PLANE_IDENTITY.to_string(),
            (domain, namespace) => format!(
                "spiffe://{}/ns/{}/sa/skiff-control",
                domain.as_deref().unwrap_or("cluster.local"),
                namespace.as_deref().unwrap_or("skiff-system")
            ),
        }
    }

    /// `bridge-ip:15010`, what sidecars get as `--control-plane`.
    pub fn address(&self) -> String {
        format!("{}:{API_PORT}", self.ip)
    }

    /// `bridge-ip:15014`, what the CLI gets as `--control-plane`.
    pub fn admin_address(&self) -> String {
        format!("{}:{ADMIN_PORT}", self.ip)
    }

    /// The process in charge now.
    pub fn proc(&self) -> Proc {
        self.proc.lock().unwrap().clone()
    }

    /// Everything the current process has logged.
    pub fn log(&self) -> String {
        self.proc().log()
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc().log_tail(lines)
    }

    /// SIGKILL: no goodbye to the proxies, whose streams break. Waits until it is gone.
    pub fn kill(&self) {
        let proc = self.proc();
        proc.signal("KILL");
        proc.wait_exit(Duration::from_secs(30));
    }

    /// Starts a new process on the same addresses (after [`ControlPlane::kill`]) and waits until
    /// it answers.
    pub fn start_again(&self) {
        let mut proc = self.proc.lock().unwrap();
        assert!(
            !proc.is_running(),
            "the control plane (pid {}) still runs; kill it first",
            proc.pid()
        );
        *proc = spawn(&self.mesh, self.ip, &self.args);
        drop(proc);
        self.wait_live();
    }

    /// Kills it and starts it again.
    pub fn restart(&self) {
        self.kill();
        self.start_again();
    }

    fn wait_live(&self) {
        let proc = self.proc();
        let url = format!("http://{}/healthz/live", self.admin_address());
        eventually(
            START_TIMEOUT,
            &format!("skiff-control to answer on {url}"),
            || {
                if let Some(status) = proc.try_status() {
                    panic!(
                        "skiff-control exited before answering ({})\n{}",
                        process::describe(status),
                        proc.log_tail(60)
                    );
                }
                (self.admin_status(&url) == Some(200)).then_some(())
            },
            || proc.log_tail(60),
        );
    }

    /// HTTP status of a URL fetched from the network namespace; `None` when nothing answers.
    fn admin_status(&self, url: &str) -> Option<u16> {
        let out = self.mesh.exec_in_network(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            url,
        ]);
        out.stdout.trim().parse().ok().filter(|code| *code != 0)
    }

    /// `GET /metrics` of the admin port, parsed; panics with the log if it does not answer.
    pub fn metrics(&self) -> Metrics {
        let url = format!("http://{}/metrics", self.admin_address());
        let out = self
            .mesh
            .exec_in_network(&["curl", "-sS", "--fail", "--max-time", "10", &url]);
        assert!(
            out.success(),
            "cannot read {url}: {out}\n{}",
            self.log_tail(60)
        );
        Metrics::parse(&out.stdout)
    }

    /// The value of an (unlabelled) control plane metric.
    pub fn metric(&self, name: &str) -> f64 {
        let metrics = self.metrics();
        assert!(
            metrics.has(name),
            "skiff-control has no metric {name}:\n{}",
            metrics.describe(name)
        );
        metrics.sum(name, &[])
    }

    /// Runs `skiff ARGS --control-plane ADMIN` in the network namespace.
    pub fn skiff(&self, args: &[&str]) -> Output {
        let bin = crate::cli_bin();
        let admin = self.admin_address();
        let mut argv = vec![bin.to_str().unwrap()];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--control-plane", &admin]);
        self.mesh.exec_in_network(&argv)
    }

    /// Like [`ControlPlane::skiff`], panicking with the output unless it succeeds.
    pub fn skiff_ok(&self, args: &[&str]) -> String {
        let out = self.skiff(args);
        assert!(
            out.success(),
            "`skiff {}` failed: {out}\n{}",
            args.iter()
                .map(|a| sh_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
            self.log_tail(40)
        );
        out.stdout
    }

    /// `skiff proxy-status`, parsed.
    pub fn proxy_status(&self) -> Vec<ProxyStatusRow> {
        parse_status(&self.skiff_ok(&["proxy-status"]))
    }

    /// `skiff proxy-config default/NAME -o json`, parsed.
    pub fn proxy_config(&self, workload: &str) -> serde_json::Value {
        let text = self.skiff_ok(&[
            "proxy-config",
            &format!("{NAMESPACE}/{workload}"),
            "-o",
            "json",
        ]);
        crate::json(&text)
    }

    /// Waits until `skiff proxy-status` lists every sidecar (one row each) as `ACK` of the
    /// version its own `/config_dump` shows, and returns the rows.
    pub fn wait_synced(&self, sidecars: &[&Sidecar]) -> Vec<ProxyStatusRow> {
        let last = std::cell::RefCell::new(String::new());
        eventually(
            SYNC_TIMEOUT,
            "skiff proxy-status to list every proxy as ACK of the version it runs",
            || {
                let out = self.skiff(&["proxy-status"]);
                *last.borrow_mut() = out.to_string();
                if !out.success() {
                    return None;
                }
                let rows = parse_status(&out.stdout);
                let synced = sidecars.iter().all(|sidecar| {
                    let mine: Vec<&ProxyStatusRow> = rows
                        .iter()
                        .filter(|r| r.workload == sidecar.workload())
                        .collect();
                    mine.len() == 1
                        && mine[0].status == "ACK"
                        && mine[0].version == sidecar.config_version()
                });
                synced.then_some(rows)
            },
            || {
                format!(
                    "last `skiff proxy-status`: {}\n{}",
                    last.borrow(),
                    self.mesh.logs(40)
                )
            },
        )
    }
}

/// `ca/` in the mesh's temp dir.
fn ca_dir(mesh: &MeshInner) -> PathBuf {
    mesh.dir.join("ca")
}

fn spawn(mesh: &MeshInner, ip: Ipv4Addr, args: &[String]) -> Proc {
    let bin = mesh.control_bin();
    let policy = &mesh.policy_dir;
    let mut cmd = process::command("ip");
    cmd.args(["netns", "exec", &mesh.net_ns])
        .arg(bin)
        .arg("--policy")
        .arg(policy)
        .arg("--listen")
        .arg(format!("{ip}:{API_PORT}"))
        .arg("--admin")
        .arg(format!("{ip}:{ADMIN_PORT}"))
        .arg("--ca-dir")
        .arg(ca_dir(mesh))
        .args(args);
    let filter = std::env::var("SKIFF_CONTROL_TEST_LOG").unwrap_or_else(|_| "info".into());
    cmd.env("SKIFF_LOG", &filter)
        .env("RUST_BACKTRACE", "1")
        .env("NO_COLOR", "1");
    mesh.start("control-plane", cmd)
}

/// Parses the table of `skiff proxy-status`: columns are separated by at least three spaces;
/// the last (STATUS) keeps whatever follows.
pub fn parse_status(table: &str) -> Vec<ProxyStatusRow> {
    table
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let cells: Vec<&str> = line
                .split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            assert!(
                cells.len() >= 6,
                "unexpected proxy-status row {line:?} in:\n{table}"
            );
            ProxyStatusRow {
                workload: cells[0].to_string(),
                pod_ips: cells[1].to_string(),
                version: cells[2].to_string(),
                last_seen: cells[3].to_string(),
                proxy: cells[4].to_string(),
                status: cells[5..].join("   "),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_status_table() {
        let table = "\
WORKLOAD         POD IPS       VERSION            LAST SEEN   PROXY   STATUS
default/client   10.100.0.11   3dfd3be3319a896f   1s ago      0.1.0   ACK
default/v1       10.100.0.12   3dfd3be3319a896f   12s ago     0.1.0   NACK 91c0: route default/r#0: backend default/dns:53 is not in the configuration
";
        let rows = parse_status(table);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].workload, "default/client");
        assert_eq!(rows[0].last_seen, "1s ago");
        assert_eq!(rows[0].status, "ACK");
        assert_eq!(rows[1].version, "3dfd3be3319a896f");
        assert_eq!(
            rows[1].status,
            "NACK 91c0: route default/r#0: backend default/dns:53 is not in the configuration"
        );
    }
}
