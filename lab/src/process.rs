//! Processes the harness starts: one-shot commands ([`run`]) and long-running ones ([`Proc`]),
//! each in its own process group so cleanup can kill everything it started.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Environment variables removed from every child: a proxy setting inherited from the caller
/// must never send test traffic anywhere but the namespaces.
const PROXY_ENV: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "grpc_proxy",
];

/// What a finished command printed and how it ended.
#[derive(Clone, Debug)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A command with the harness's environment hygiene applied.
pub(crate) fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    cmd.env("PYTHONUNBUFFERED", "1");
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Runs `argv` to completion (in its own process group) and returns what it printed.
pub fn run(argv: &[&str]) -> Output {
    let mut cmd = command(argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).process_group(0);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `argv` and panics with its output unless it succeeds.
pub fn run_ok(argv: &[&str]) -> String {
    let out = run(argv);
    assert!(out.success(), "command {argv:?} failed: {out}");
    out.stdout
}

/// A long-running process started by a pod; killed with its process group when the mesh drops.
#[derive(Clone)]
pub struct Proc {
    pub(crate) inner: Arc<ProcInner>,
}

pub(crate) struct ProcInner {
    /// Human name (`pod/what`), for messages.
    pub(crate) name: String,
    /// Its pid, which is also its process group id.
    pub(crate) pid: u32,
    /// Where its stdout and stderr go.
    pub(crate) log: PathBuf,
    /// Kept to reap it and to read its exit status.
    child: Mutex<Child>,
    /// Exit status once reaped.
    status: Mutex<Option<ExitStatus>>,
}

impl Proc {
    /// Starts `cmd` in a new process group with stdout and stderr appended to `log`.
    pub(crate) fn start(name: String, mut cmd: Command, log: PathBuf) -> Proc {
        let file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot open log {}: {e}", log.display()));
        let err = file.try_clone().expect("dup log fd");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name}: {e}"));
        Proc {
            inner: Arc::new(ProcInner {
                name,
                pid: child.id(),
                log,
                child: Mutex::new(child),
                status: Mutex::new(None),
            }),
        }
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The human name given at spawn.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The file holding its stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.inner.log
    }

    /// Everything it has printed so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.inner.log).unwrap_or_default()).into_owned()
    }

    /// The last `lines` lines it printed, labelled with its name, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "===== log of {} (pid {}, {}) =====\n{}",
            self.inner.name,
            self.inner.pid,
            self.inner.log.display(),
            crate::tail(&self.inner.log, lines)
        )
    }

    /// Its exit status if it has exited (reaps it), else `None`.
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.inner.try_status()
    }

    /// Still running.
    pub fn is_running(&self) -> bool {
        self.try_status().is_none()
    }

    /// Waits at most `timeout` for it to exit; `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits at most `timeout` for it to exit and panics (with its log) if it does not.
    pub fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        self.wait_timeout(timeout).unwrap_or_else(|| {
            panic!(
                "{} (pid {}) still running after {timeout:?}\n{}",
                self.inner.name,
                self.inner.pid,
                self.log_tail(80)
            )
        })
    }

    /// Sends `signal` (a name such as `TERM`) to the process itself, not its group.
    pub fn signal(&self, signal: &str) {
        let out = run(&["kill", &format!("-{signal}"), &self.inner.pid.to_string()]);
        assert!(
            out.success(),
            "kill -{signal} {} failed: {out}",
            self.inner.pid
        );
    }

    /// SIGTERM to the process.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Resident memory in KiB (`VmRSS` of /proc/PID/status); `None` once it has exited.
    pub fn rss_kib(&self) -> Option<u64> {
        if !self.is_running() {
            return None;
        }
        rss_kib(self.inner.pid)
    }
}

impl ProcInner {
    fn try_status(&self) -> Option<ExitStatus> {
        let mut status = self.status.lock().unwrap();
        if status.is_none() {
            *status = self.child.lock().unwrap().try_wait().ok().flatten();
        }
        *status
    }

    /// SIGKILLs the whole process group and reaps the leader (bounded).
    pub(crate) fn kill_group(&self) {
        if self.try_status().is_none() {
            let _ = run(&["kill", "-KILL", "--", &format!("-{}", self.pid)]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.try_status().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            // The leader is gone; children it left in the group may still run.
            let _ = run(&["kill", "-KILL", "--", &format!("-{}", self.pid)]);
        }
    }
}

/// Resident memory in KiB of any process (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A human description of how a process ended.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{status:?}"),
    }
}
