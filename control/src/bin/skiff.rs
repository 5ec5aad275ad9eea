//! `skiff`: the user's command-line tool. `demo` runs the whole mesh on this machine
//! (`skiff_control::demo`); `analyze -f DIR` checks policy files offline with the control
//! plane's own validation (`skiff_api::load`); `proxy-status` and `proxy-config` ask a running
//! control plane. `demo-server` and `demo-client` are the demo's apps, hidden.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skiff_control::{demo, inspect};

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "Skiff service mesh command-line tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The mesh on this machine (needs root): a client and two versions of a service in network
    /// namespaces, each with a sidecar, the control plane on the demo's policy, and a live view
    /// of the traffic. Edit the HTTPRoute's weights while it runs to shift traffic.
    Demo(demo::DemoArgs),
    /// Check policy files offline; exits non-zero and lists every problem when any is invalid.
    Analyze {
        /// A policy file or a directory of .yaml/.yml files.
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
    },
    /// Every proxy connected to the control plane: the configuration version it runs, ACK or
    /// NACK (with the reason), and when it was last seen.
    ProxyStatus(skiff_control::inspect::ProxyStatusArgs),
    /// The configuration the control plane last sent to a workload's proxy.
    ProxyConfig(skiff_control::inspect::ProxyConfigArgs),
    /// The demo's server: answers every request with its name.
    #[command(hide = true)]
    DemoServer(demo::apps::ServerArgs),
    /// The demo's client: requests at a steady rate, a JSON report per second on stdout.
    #[command(hide = true)]
    DemoClient(demo::apps::ClientArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo(args) => demo::run(&args),
        Command::DemoServer(args) => app_exit(demo::apps::serve(&args)),
        Command::DemoClient(args) => app_exit(demo::apps::run_client(&args)),
        Command::Analyze { paths } => analyze(&paths),
        Command::ProxyStatus(args) => inspect::print(inspect::proxy_status(&args)),
        Command::ProxyConfig(args) => inspect::print(inspect::proxy_config(&args)),
    }
}

/// How a demo app ended (they run until killed, so only an error gets here).
fn app_exit(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the same validation as the control plane over `paths` and prints every problem, one per
/// line (`file:line path: message`), then a summary. Exits 1 when any problem is an error.
fn analyze(paths: &[PathBuf]) -> ExitCode {
    let mut unreadable = Vec::new();
    let mut files = Vec::new();
    for file in policy_files(paths, &mut unreadable) {
        let name = file.display().to_string();
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        if size > skiff_api::MAX_FILE_BYTES as u64 {
            // Refused before reading, so a huge file costs nothing.
            unreadable.push(format!(
                "{name}: file is {size} bytes; the limit is {} (4 MiB)",
                skiff_api::MAX_FILE_BYTES
            ));
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(text) => files.push((name, text)),
            Err(error) => unreadable.push(format!("{name}: cannot read: {error}")),
        }
    }
    let problems = match skiff_api::load(&files) {
        Ok(loaded) => loaded.warnings,
        Err(problems) => problems,
    };
    for line in &unreadable {
        println!("{line}");
    }
    for problem in &problems {
        println!("{problem}");
    }
    let errors = unreadable.len() + problems.iter().filter(|p| p.is_error()).count();
    let warnings = problems.len() + unreadable.len() - errors;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    println!(
        "{}: {}, {}",
        plural(files.len(), "file"),
        plural(errors, "error"),
        plural(warnings, "warning")
    );
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The YAML files named by `paths` (directories are read one level deep, sorted).
fn policy_files(paths: &[PathBuf], problems: &mut Vec<String>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| is_yaml(p))
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(error) => problems.push(format!(
                    "{}: cannot read directory: {error}",
                    path.display()
                )),
            }
        } else {
            files.push(path.clone());
        }
    }
    files
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}
