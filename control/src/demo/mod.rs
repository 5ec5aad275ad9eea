//! `skiff demo`: the whole mesh on one machine. Three pods (network namespaces on a bridge) —
//! a client and two versions of an `echo` server — each with `skiff-proxy` as its sidecar,
//! streaming its configuration from `skiff-control`, which watches the demo's policy directory
//! (`examples/demo/`). The client calls the `echo` VIP at a steady rate; the HTTPRoute in that
//! directory splits the calls between the versions; a live view shows, once a second, what the
//! client saw. Editing the route's weights while it runs shifts the split a second later.
//!
//! - [`mesh`]: the layout read from the policy, and the set-up (with the lab, `skiff-lab`).
//! - [`apps`]: the server and the client, run in the pods as hidden `skiff` subcommands.
//! - [`view`]: the live view's rows and the summary.
//!
//! Ctrl-C (SIGINT), SIGTERM or SIGHUP end it; everything it started is stopped and every
//! namespace removed, as when `--duration` runs out.

pub mod apps;
pub mod mesh;
pub mod view;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh::{Binaries, Demo, Layout};
use view::View;

/// `skiff demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The demo's policy directory. The control plane watches it while the demo runs: edit the
    /// HTTPRoute's weights there to shift traffic.
    #[arg(long, default_value = "examples/demo")]
    pub policy: PathBuf,
    /// How long traffic runs (`30s`, `2m`, `1h`), or `forever`, until Ctrl-C.
    #[arg(long, default_value = "forever", value_parser = parse_run_for)]
    pub duration: RunFor,
    /// Requests per second the client sends.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub rate: u32,
}

/// How long the demo's traffic runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunFor {
    Forever,
    /// This many seconds of reports (at least one).
    Seconds(u64),
}

fn parse_run_for(text: &str) -> Result<RunFor, String> {
    if text == "forever" {
        return Ok(RunFor::Forever);
    }
    let duration = skiff_api::duration::parse_duration(text)
        .map_err(|error| format!("{error} (e.g. 30s, 2m, 1h, or forever)"))?;
    Ok(RunFor::Seconds(
        duration.as_secs_f64().ceil().max(1.0) as u64
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "root is needed to create network namespaces, veth pairs and iptables rules (run it \
         with sudo, or `sudo make demo`)"
    )]
    NotRoot,
    #[error(
        "{} not found on PATH; `make demo` installs what the demo needs \
         (scripts/install-test-deps.sh)",
        .0.join(", ")
    )]
    MissingTools(Vec<String>),
    #[error("cannot find the running skiff binary")]
    CurrentExe(#[source] std::io::Error),
    #[error(
        "{name} not found beside skiff in {}: build it with \
         `cargo build -p skiff-proxy -p skiff-control`",
        dir.display()
    )]
    MissingBinary { name: String, dir: PathBuf },
    #[error("cannot read the demo's policy")]
    ReadPolicy {
        #[source]
        source: crate::source::file::ReloadError,
    },
    #[error("the policy in {} is invalid:\n  {}", dir.display(), problems.join("\n  "))]
    InvalidPolicy { dir: PathBuf, problems: Vec<String> },
    #[error("{}: {message}", dir.display())]
    Layout { dir: PathBuf, message: String },
    #[error("cannot install the signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("interrupted during set-up")]
    Interrupted,
    #[error("the demo client stopped ({0}); its log:\n{1}")]
    ClientExited(String, String),
}

/// What `skiff demo` needs on PATH: `ip` and `ss` (iproute2), `iptables`, `setpriv`
/// (util-linux) and `curl`, which the lab uses to check readiness inside the pods.
const TOOLS: [&str; 5] = ["ip", "ss", "iptables", "setpriv", "curl"];

/// Runs the demo; errors are printed, with every cause.
pub fn run(args: &DemoArgs) -> ExitCode {
    match demo(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(DemoError::Interrupted) => {
            say("Interrupted during set-up; everything started was stopped and removed.\n");
            ExitCode::SUCCESS
        }
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message += &format!(": {cause}");
                source = cause.source();
            }
            eprintln!("skiff demo: {message}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &DemoArgs) -> Result<(), DemoError> {
    if !skiff_lab::is_root() {
        return Err(DemoError::NotRoot);
    }
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|tool| !on_path(tool))
        .map(|tool| tool.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(DemoError::MissingTools(missing));
    }
    let bins = Binaries::beside_current_exe()?;
    let layout = Layout::load(&args.policy)?;
    let stop = Stop::install().map_err(DemoError::Signals)?;

    say("Setting up the demo mesh:\n");
    let demo = Demo::start(&layout, &bins, args.rate, &|| stop.requested())?;
    say(&format!("\n{}", header(&demo, &layout, &bins, args.rate)));
    let mut view = View::new(layout.versions.clone().map(|v| v.name));
    let outcome = live(&demo, &mut view, args.duration, &stop);
    say(&format!("\n{}", view.summary()));

    let namespaces = demo.mesh.namespaces().len();
    drop(demo);
    say(&format!(
        "Stopped every process and removed {namespaces} network namespaces.\n"
    ));
    outcome
}

/// What runs where, which file to edit, how to look inside and how to quit.
fn header(demo: &Demo, layout: &Layout, bins: &Binaries, rate: u32) -> String {
    let mesh = &demo.mesh;
    let control = &demo.control;
    let mut out = format!(
        "Skiff demo: a client calls the {service} service at {target}; an HTTPRoute splits the \
         calls between {v1} and {v2}.\n\n",
        service = mesh::SERVICE,
        target = layout.target,
        v1 = layout.versions[0].workload,
        v2 = layout.versions[1].workload,
    );
    out += &format!("  {:<9} {:<11} {:<50} {}\n", "POD", "IP", "RUNS", "SIDECAR");
    out += &format!(
        "  {:<9} {:<11} {:<50} skiff-proxy, pid {}\n",
        mesh::CLIENT,
        layout.client_ip,
        format!("skiff demo-client: {rate} req/s to {}", layout.target),
        demo.client_sidecar.pid()
    );
    for (version, sidecar) in layout.versions.iter().zip(&demo.server_sidecars) {
        out += &format!(
            "  {:<9} {:<11} {:<50} skiff-proxy, pid {}\n",
            version.workload,
            version.ip,
            format!(
                "skiff demo-server on :{}, answers \"{}\"",
                layout.server_port, version.name
            ),
            sidecar.pid()
        );
    }
    let pods: Vec<&str> = std::iter::once(&demo.client_pod)
        .chain(&demo.server_pods)
        .map(|pod| pod.ns())
        .collect();
    out += &format!(
        "\n  control plane  skiff-control on {} (pid {}), watching {}\n",
        control.address(),
        control.proc().pid(),
        std::path::absolute(&layout.policy_dir)
            .unwrap_or_else(|_| layout.policy_dir.clone())
            .display()
    );
    out += &format!(
        "  network        namespace {}-net (bridge {}/24) and pods {}\n",
        mesh.id(),
        mesh.bridge_ip(),
        pods.join(", ")
    );
    out += &format!("  logs           {}\n\n", mesh.dir().join("logs").display());
    let route = layout
        .route_file
        .as_ref()
        .map(|file| file.display().to_string())
        .unwrap_or_else(|| format!("the HTTPRoute in {}", layout.policy_dir.display()));
    out += &format!(
        "  Shift traffic: edit the weights in {route}\n                 (the control plane \
         reads it within 50 ms; the next rows show the new split)\n"
    );
    out += &format!(
        "  Look inside:   ip netns exec {}-net {} proxy-status --control-plane {}\n",
        mesh.id(),
        bins.skiff.display(),
        control.admin_address()
    );
    out += "  Quit:          Ctrl-C (stops every process, removes the namespaces)\n\n";
    out
}

/// Prints a row for every report of the client until `run_for` is over or a stop is
/// requested; also passes on what the control plane logs as a warning or an error (an invalid
/// edit, say).
fn live(demo: &Demo, view: &mut View, run_for: RunFor, stop: &Stop) -> Result<(), DemoError> {
    let wanted = match run_for {
        RunFor::Forever => u64::MAX,
        RunFor::Seconds(seconds) => seconds,
    };
    // Reports come once a second; a client that stalls this long past the end gives up.
    let deadline = match run_for {
        RunFor::Forever => None,
        RunFor::Seconds(seconds) => Some(Instant::now() + Duration::from_secs(seconds + 30)),
    };
    let mut reports = LogTail::new(demo.client.log_path());
    let mut control_log = LogTail::new(demo.control.proc().log_path());
    let mut rows = 0;
    say(&format!("{}\n", view.header()));
    while rows < wanted && !stop.requested() {
        if deadline.is_some_and(|deadline| Instant::now() > deadline) {
            say("(no report from the client for a while; stopping)\n");
            break;
        }
        if let Some(status) = demo.client.try_status() {
            return Err(DemoError::ClientExited(
                skiff_lab::process::describe(status),
                demo.client.log_tail(20),
            ));
        }
        for line in control_log.new_lines() {
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                say(&format!("  control plane: {}\n", strip_timestamp(&line)));
            }
        }
        for line in reports.new_lines() {
            let Ok(report) = serde_json::from_str::<apps::Report>(&line) else {
                continue;
            };
            let config = demo.client_sidecar.try_config_version();
            say(&format!("{}\n", view.row(&report, config.as_deref())));
            rows += 1;
            if rows >= wanted {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// `2025-01-01T00:00:00.000000Z ERROR skiff_control::source::file: x` → `ERROR x`.
fn strip_timestamp(line: &str) -> String {
    let mut words = line.split_whitespace();
    let _timestamp = words.next();
    let level = words.next().unwrap_or("");
    let rest: Vec<&str> = words.collect();
    let message = match rest.first() {
        Some(target) if target.ends_with(':') => rest[1..].join(" "),
        _ => rest.join(" "),
    };
    format!("{level} {message}")
}

/// Reads the lines appended to a log file since the last call.
struct LogTail {
    /// `None` until the file can be opened.
    reader: Option<BufReader<File>>,
    path: PathBuf,
    /// A line read up to the end of the file but not yet to its newline.
    partial: String,
}

impl LogTail {
    fn new(path: &Path) -> LogTail {
        LogTail {
            reader: None,
            path: path.to_path_buf(),
            partial: String::new(),
        }
    }

    /// Every complete line appended since the last call.
    fn new_lines(&mut self) -> Vec<String> {
        if self.reader.is_none() {
            self.reader = File::open(&self.path).ok().map(BufReader::new);
        }
        let Some(reader) = &mut self.reader else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        loop {
            match reader.read_line(&mut self.partial) {
                Ok(0) | Err(_) => return lines,
                Ok(_) if self.partial.ends_with('\n') => {
                    lines.push(self.partial.trim_end().to_string());
                    self.partial.clear();
                }
                Ok(_) => return lines,
            }
        }
    }
}

/// Set by SIGINT, SIGTERM or SIGHUP, which no longer end the process: the demo notices, stops
/// and cleans up.
struct Stop {
    requested: Arc<AtomicBool>,
}

impl Stop {
    /// Installs the handlers now (a signal from here on is caught) and waits for them on a
    /// thread of its own.
    fn install() -> std::io::Result<Stop> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (mut int, mut term, mut hup) = {
            let _context = runtime.enter();
            (
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            )
        };
        let requested = Arc::new(AtomicBool::new(false));
        let flag = requested.clone();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                    if !flag.swap(true, Ordering::SeqCst) {
                        say("\nStopping…\n");
                    }
                }
            })
        });
        Ok(Stop { requested })
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// Writes to stdout, ignoring errors: a closed terminal (SIGHUP) or pipe must not panic the demo
/// before it has cleaned up (`println!` would).
pub(crate) fn say(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Whether an executable named `tool` is in a directory of `$PATH`.
fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_forever_parse() {
        assert_eq!(parse_run_for("forever"), Ok(RunFor::Forever));
        assert_eq!(parse_run_for("6s"), Ok(RunFor::Seconds(6)));
        assert_eq!(parse_run_for("2m"), Ok(RunFor::Seconds(120)));
        assert_eq!(parse_run_for("500ms"), Ok(RunFor::Seconds(1)));
        assert!(parse_run_for("soon").is_err());
    }

    #[test]
    fn control_plane_lines_lose_their_timestamp_and_target() {
        assert_eq!(
            strip_timestamp(
                "2025-01-01T00:00:00.000001Z ERROR skiff_control::source::file: route.yaml:20 \
                 spec.rules[0].backendRefs[0].weight: must be ≥ 0"
            ),
            "ERROR route.yaml:20 spec.rules[0].backendRefs[0].weight: must be ≥ 0"
        );
    }

    #[test]
    fn the_example_policy_has_the_demo_layout() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
        let layout = Layout::load(&dir).unwrap();
        assert_eq!(layout.namespace, "demo");
        assert_eq!(layout.target.to_string(), "10.96.0.10:80");
        assert_eq!(layout.server_port, 8080);
        assert_eq!(layout.client_ip.to_string(), "10.0.0.2");
        assert_eq!(layout.versions.clone().map(|v| v.name), ["v1", "v2"]);
        assert_eq!(layout.client_credentials.service_account, "client");
        assert_eq!(layout.versions[1].credentials.service_account, "echo");
        assert!(!layout.versions[0].credentials.bootstrap_token.is_empty());
        assert!(layout
            .route_file
            .is_some_and(|file| file.ends_with("route.yaml")));
    }
}
