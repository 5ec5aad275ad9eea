//! Misbehaving backends and a client that records the fate of every request, for the
//! resilience tests: a [`FaultServer`] runs `tests/python/fault_server.py` in a pod (failures,
//! delays and resets chosen at start and changed at runtime, and a ledger of every request it
//! executed), and a [`LoadClient`] runs `tests/python/ledger_client.py` (GETs and POSTs with
//! unique ids, each classified as answered, refused by the proxy, failed by the backend or of
//! unknown fate) and reads its [`LoadSummary`].
//!
//! ```no_run
//! # use skiff_lab::{Mesh, fault::{FaultServer, LoadClient}};
//! # let mesh = Mesh::new("doc");
//! # let (server, client) = (mesh.pod("server"), mesh.pod("client"));
//! let backend = FaultServer::start(&server, 8080, &mesh.dir().join("server.ledger"), &["--fail-percent", "50"]);
//! backend.set_faults(r#"{"fail_percent": 0, "delay_ms": 100}"#);
//! let load = LoadClient::spawn(&client, "load", &mesh.dir().join("load.json"), &["--host", "10.96.0.11", "--duration", "5"]);
//! let summary = load.finish();
//! assert_eq!(summary.class("unknown"), 0, "{summary}");
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::pod::Pod;
use crate::process::{self, Proc};
use crate::{eventually, sh_quote};

/// `tests/python/fault_server.py` on one port of a pod, which can be killed and started again
/// with the same arguments (and the same ledger, appended to).
pub struct FaultServer {
    pod: Pod,
    port: u16,
    /// Where it appends one JSON line per request that reached its handler.
    ledger: PathBuf,
    /// Its command line after the script, for restarts.
    args: Vec<String>,
    /// The running (or last) process.
    proc: Mutex<Proc>,
}

impl FaultServer {
    /// Starts the server on `port` of `pod`, named after the pod (its `x-backend` header),
    /// writing its ledger to `ledger`, with the fault flags `faults` (e.g. `["--delay-ms",
    /// "100"]`); waits until it listens.
    pub fn start(pod: &Pod, port: u16, ledger: &Path, faults: &[&str]) -> FaultServer {
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--name".into(),
            pod.name().to_string(),
            "--ledger".into(),
            ledger.to_str().expect("UTF-8 ledger path").to_string(),
        ];
        args.extend(faults.iter().map(|a| a.to_string()));
        let proc = spawn(pod, port, &args);
        FaultServer {
            pod: pod.clone(),
            port,
            ledger: ledger.to_path_buf(),
            args,
            proc: Mutex::new(proc),
        }
    }

    /// The pod it runs in.
    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    /// Its name, answered in `x-backend` (the pod's name).
    pub fn name(&self) -> &str {
        self.pod.name()
    }

    /// Its ledger file.
    pub fn ledger_path(&self) -> &Path {
        &self.ledger
    }

    /// Whether its process is running.
    pub fn is_running(&self) -> bool {
        self.proc.lock().unwrap().is_running()
    }

    /// SIGKILL, as a crash would: connections it held are reset, nothing is drained. Waits
    /// (bounded) until the process is gone.
    pub fn kill(&self) {
        let proc = self.proc.lock().unwrap().clone();
        if proc.is_running() {
            proc.signal("KILL");
        }
        proc.wait_exit(Duration::from_secs(10));
    }

    /// Starts it again with the same arguments (faults back to those of the command line) and
    /// waits until it listens. Kills it first if it still runs.
    pub fn restart(&self) {
        self.kill();
        let proc = spawn(&self.pod, self.port, &self.args);
        *self.proc.lock().unwrap() = proc;
    }

    /// Changes its faults at runtime (`POST /__fault` from inside its pod, on 127.0.0.1, so
    /// neither sidecar sees it): a JSON object of `fail_percent`, `fail_status`, `delay_ms`,
    /// `reset_percent`, `reset_mode`. Returns the settings and counters now in force.
    pub fn set_faults(&self, json: &str) -> serde_json::Value {
        self.control(&format!(
            "curl -sS --fail-with-body --max-time 10 -X POST -H 'Content-Type: application/json' \
             --data-binary {} http://127.0.0.1:{}/__fault",
            sh_quote(json),
            self.port
        ))
    }

    /// Its settings and counters (`requests`, `failed`, `resets` since it started).
    pub fn faults(&self) -> serde_json::Value {
        self.control(&format!(
            "curl -sS --fail-with-body --max-time 10 http://127.0.0.1:{}/__fault",
            self.port
        ))
    }

    fn control(&self, script: &str) -> serde_json::Value {
        let out = self.pod.exec(script);
        assert!(
            out.success(),
            "fault server in pod {}: `{script}` failed: {out}\n{}",
            self.pod.name(),
            self.proc.lock().unwrap().log_tail(30)
        );
        crate::json(&out.stdout)
    }

    /// Every entry of its ledger so far (across restarts).
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        read_ledger(&self.ledger)
    }
}

fn spawn(pod: &Pod, port: u16, args: &[String]) -> Proc {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = pod.spawn_python("fault-server", "fault_server.py", &argv);
    pod.wait_listening(port);
    proc
}

/// One line of a fault server's ledger: a request that reached its handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The request's `x-request-id` (else its path).
    pub id: String,
    pub method: String,
    /// The server that recorded it.
    pub backend: String,
    /// The status answered (`"200"`, `"503"`) or the reset (`"reset-after-request"`,
    /// `"reset-mid-response"`, `"reset-mid-body"`).
    pub outcome: String,
    /// False only for a reset in the middle of the request body: the server never had the whole
    /// request, so it did nothing.
    pub executed: bool,
}

/// Reads a ledger file (missing: empty). A torn last line (the server was killed while
/// writing it) is skipped; any other malformed line panics.
pub fn read_ledger(path: &Path) -> Vec<LedgerEntry> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("cannot read ledger {}: {e}", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut entries = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(value) => value,
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => panic!("{}:{}: not JSON ({e}): {line}", path.display(), i + 1),
        };
        let field = |name: &str| value[name].as_str().unwrap_or_default().to_string();
        entries.push(LedgerEntry {
            id: field("id"),
            method: field("method"),
            backend: field("backend"),
            outcome: field("outcome"),
            executed: value["executed"].as_bool().unwrap_or(true),
        });
    }
    entries
}

/// `tests/python/ledger_client.py` running in the background in a pod.
pub struct LoadClient {
    proc: Proc,
    /// Where it writes its summary.
    summary: PathBuf,
}

impl LoadClient {
    /// Starts the client in `pod` with `args` (at least `--host`); its summary goes to
    /// `summary`.
    pub fn spawn(pod: &Pod, what: &str, summary: &Path, args: &[&str]) -> LoadClient {
        let summary_arg = summary.to_str().expect("UTF-8 summary path");
        let mut argv = vec!["--summary", summary_arg];
        argv.extend_from_slice(args);
        let proc = pod.spawn_python(what, "ledger_client.py", &argv);
        LoadClient {
            proc,
            summary: summary.to_path_buf(),
        }
    }

    /// Requests finished so far (from its latest progress line).
    pub fn progress(&self) -> u64 {
        self.proc
            .log()
            .lines()
            .rev()
            .find_map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).ok()?;
                value["progress"].as_u64()
            })
            .unwrap_or(0)
    }

    /// Waits (bounded by `timeout`) until at least `n` requests have finished; panics with the
    /// client's log if it exits or the time runs out first.
    pub fn wait_progress(&self, n: u64, timeout: Duration) {
        eventually(
            timeout,
            &format!("{} to finish {n} requests", self.proc.name()),
            || {
                if let Some(status) = self.proc.try_status() {
                    panic!(
                        "{} exited ({}) before finishing {n} requests\n{}",
                        self.proc.name(),
                        process::describe(status),
                        self.proc.log_tail(40)
                    );
                }
                (self.progress() >= n).then_some(())
            },
            || self.proc.log_tail(20),
        );
    }

    /// Waits (bounded: its duration plus a minute for the slowest answers) until it exits and
    /// returns its summary; panics with its log if it failed.
    pub fn finish(self) -> LoadSummary {
        let status = self.proc.wait_exit(Duration::from_secs(180));
        assert!(
            status.success(),
            "{} failed ({})\n{}",
            self.proc.name(),
            process::describe(status),
            self.proc.log_tail(40)
        );
        let text = std::fs::read_to_string(&self.summary)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.summary.display()));
        LoadSummary::parse(&text)
    }
}

/// The classes of [`LoadSummary::class`]: a 2xx; any status with `x-skiff-error` (the proxy
/// answered for itself); a 5xx without it (the backend's own); any other status; a response
/// whose body broke off after its head (so the request was executed); no response at all (the
/// client cannot know whether the request was executed).
pub const CLASSES: [&str; 6] = [
    "ok",
    "refused",
    "backend_5xx",
    "other_status",
    "truncated",
    "unknown",
];

/// What a [`LoadClient`] saw: counts per class ([`CLASSES`]), per `method class`, per status,
/// per `x-skiff-error` reason and per `x-backend`.
#[derive(Clone, Debug)]
pub struct LoadSummary {
    /// Requests finished.
    pub requests: u64,
    /// Wall time of the run, in seconds.
    pub elapsed_secs: f64,
    /// The whole summary as printed, examples of failures included.
    pub raw: serde_json::Value,
}

impl LoadSummary {
    /// Parses the client's JSON summary.
    pub fn parse(text: &str) -> LoadSummary {
        let raw = crate::json(text);
        LoadSummary {
            requests: raw["requests"].as_u64().expect("summary has requests"),
            elapsed_secs: raw["elapsed_secs"]
                .as_f64()
                .expect("summary has elapsed_secs"),
            raw,
        }
    }

    fn count(&self, table: &str, key: &str) -> u64 {
        self.raw[table][key].as_u64().unwrap_or(0)
    }

    /// Requests of one class (one of [`CLASSES`]).
    pub fn class(&self, class: &str) -> u64 {
        self.count("classes", class)
    }

    /// Requests of one method and class (`"POST", "ok"`).
    pub fn method_class(&self, method: &str, class: &str) -> u64 {
        self.count("by_method", &format!("{method} {class}"))
    }

    /// Requests of one method, whatever became of them.
    pub fn method(&self, method: &str) -> u64 {
        CLASSES
            .iter()
            .map(|class| self.method_class(method, class))
            .sum()
    }

    /// Responses carrying `x-skiff-error: reason`.
    pub fn error(&self, reason: &str) -> u64 {
        self.count("errors", reason)
    }

    /// Responses carrying `x-backend: name`.
    pub fn backend(&self, name: &str) -> u64 {
        self.count("backends", name)
    }

    /// Responses per `x-backend`.
    pub fn backends(&self) -> BTreeMap<String, u64> {
        self.table("backends")
    }

    /// Responses per `x-skiff-error` reason.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.table("errors")
    }

    fn table(&self, table: &str) -> BTreeMap<String, u64> {
        self.raw[table]
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Share of requests answered 2xx (0 when there were none).
    pub fn success_rate(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.class("ok") as f64 / self.requests as f64
    }
}

impl std::fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests in {:.1} s: classes {} by method {} statuses {} x-skiff-error {} \
             x-backend {}\nexamples: {}",
            self.requests,
            self.elapsed_secs,
            self.raw["classes"],
            self.raw["by_method"],
            self.raw["statuses"],
            self.raw["errors"],
            self.raw["backends"],
            self.raw["examples"]
        )
    }
}

/// One line of a [`LoadClient`]'s `--outcomes` file: what became of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The id it carried (`x-request-id` and the path's last segment).
    pub id: String,
    pub method: String,
    /// One of [`CLASSES`].
    pub class: String,
    /// The status answered; `None` when no response came.
    pub status: Option<u16>,
    /// Its `x-skiff-error`, when the proxy answered for itself.
    pub error: Option<String>,
    /// Its `x-backend`, when a backend answered.
    pub backend: Option<String>,
}

/// Reads a `--outcomes` file of [`LoadClient`].
pub fn read_outcomes(path: &Path) -> Vec<Outcome> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read outcomes {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {line}", path.display(), i + 1));
            let text = |name: &str| value[name].as_str().map(str::to_string);
            Outcome {
                id: text("id").unwrap_or_default(),
                method: text("method").unwrap_or_default(),
                class: text("class").unwrap_or_default(),
                status: value["status"].as_u64().and_then(|s| u16::try_from(s).ok()),
                error: text("error"),
                backend: text("backend"),
            }
        })
        .collect()
}
