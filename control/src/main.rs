//! `skiff-control`: the control plane. Watches a policy directory, validates every change, and
//! streams each proxy its configuration (DESIGN.md §1, §2: API on 15010, admin on 15014).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use skiff_control::shutdown::Shutdown;
use skiff_control::source::file::FileSource;
use skiff_control::{admin, api, ControlPlane};

#[derive(Parser)]
#[command(name = "skiff-control", version, about = "The Skiff control plane")]
struct Cli {
    /// Directory of policy YAML files, watched for changes.
    #[arg(long, env = "SKIFF_POLICY")]
    policy: PathBuf,
    /// Proxy API: the configuration streams (HTTP/2).
    #[arg(long, env = "SKIFF_LISTEN", default_value = "0.0.0.0:15010")]
    listen: SocketAddr,
    /// Admin port: /metrics, /healthz/ready, and the status endpoints the CLI reads.
    #[arg(long, env = "SKIFF_ADMIN", default_value = "0.0.0.0:15014")]
    admin: SocketAddr,
    /// How often the policy directory is checked for changes (one stat per file): an edit is
    /// seen after half of it on average.
    #[arg(long, env = "SKIFF_POLL_INTERVAL", default_value = "50ms", value_parser = poll_interval)]
    poll_interval: Duration,
}

fn poll_interval(text: &str) -> Result<Duration, String> {
    match skiff_api::duration::parse_duration(text) {
        Ok(interval) if interval >= Duration::from_millis(10) => Ok(interval),
        Ok(_) => Err("must be at least 10ms".to_string()),
        Err(error) => Err(error.to_string()),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if !cli.policy.is_dir() {
        bail!("--policy {}: not a directory", cli.policy.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let api_listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?;
        let admin_listener = tokio::net::TcpListener::bind(cli.admin)
            .await
            .with_context(|| format!("cannot listen on {}", cli.admin))?;
        tracing::info!(api = %cli.listen, admin = %cli.admin, policy = %cli.policy.display(), "listening");
        let control = Arc::new(ControlPlane::new());
        let shutdown = Shutdown::new();
        let mut source = FileSource::new(cli.policy, control.clone());
        source.poll_interval = cli.poll_interval;
        let source = tokio::spawn(source.run(shutdown.signal()));
        let api = tokio::spawn(api::serve(api_listener, control.clone(), shutdown.signal()));
        let admin = tokio::spawn(admin::serve(admin_listener, control, shutdown.signal()));
        wait_for_termination().await;
        shutdown.request();
        let _ = tokio::join!(source, api, admin);
        anyhow::Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the control plane with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn the_poll_interval_is_a_duration_of_at_least_10ms() {
        use std::time::Duration;
        assert_eq!(super::poll_interval("50ms"), Ok(Duration::from_millis(50)));
        assert!(super::poll_interval("1ms").is_err());
        assert!(super::poll_interval("50").is_err());
    }
}
