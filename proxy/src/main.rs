//! `skiff-proxy`: the sidecar's command line (`init`, `run`, `await`). Everything it runs lives
//! in the library (`src/lib.rs`, whose crate docs map the request path).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use skiff_proxy::{app, capture, control, policy, tls};

#[derive(Parser)]
#[command(name = "skiff-proxy", version, about = "The Skiff sidecar proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the pod's traffic-capture rules (iptables) in the current network namespace.
    Init(InitArgs),
    /// Run the proxy.
    Run(Box<RunArgs>),
    /// Wait until the local proxy reports ready (for a postStart hook).
    Await {
        /// Give up after this long.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[derive(clap::Args)]
struct InitArgs {
    /// Print the rules instead of installing them.
    #[arg(long)]
    dry_run: bool,
    /// UID the proxy runs as; its own traffic is never captured.
    #[arg(long, env = "SKIFF_PROXY_UID", default_value_t = capture::PROXY_UID)]
    proxy_uid: u32,
    /// GID the proxy runs as; exempt as well when given.
    #[arg(long, env = "SKIFF_PROXY_GID")]
    proxy_gid: Option<u32>,
    /// Inbound ports that reach the app directly (comma-separated).
    #[arg(long, env = "SKIFF_EXCLUDE_INBOUND_PORTS", value_delimiter = ',')]
    exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports that bypass the proxy (comma-separated).
    #[arg(long, env = "SKIFF_EXCLUDE_OUTBOUND_PORTS", value_delimiter = ',')]
    exclude_outbound_ports: Vec<u16>,
    /// Outbound destination CIDRs that bypass the proxy (comma-separated).
    #[arg(long, env = "SKIFF_EXCLUDE_OUTBOUND_CIDRS", value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<capture::Cidr>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Policy files or directories of YAML (Service, EndpointSlice); repeatable.
    #[arg(
        long,
        env = "SKIFF_POLICY",
        value_delimiter = ',',
        required_unless_present = "control_plane"
    )]
    policy: Vec<PathBuf>,
    /// Stream configuration from the control plane at host:port (port 15010 if omitted)
    /// instead of reading --policy files. The proxy then gets its workload certificate there
    /// first, and speaks mTLS to other sidecars.
    #[arg(long, env = "SKIFF_CONTROL_PLANE", value_parser = control::parse_address, conflicts_with = "policy", requires = "ca_bundle")]
    control_plane: Option<::http::uri::Authority>,
    /// PEM roots the control plane's certificate must chain to (required with
    /// --control-plane).
    #[arg(long, env = "SKIFF_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// File holding the token that authenticates the first certificate request (file mode:
    /// the Workload's bootstrapToken; in a cluster, the projected service-account token).
    /// Re-read at every request.
    #[arg(long, env = "SKIFF_BOOTSTRAP_TOKEN_FILE")]
    bootstrap_token_file: Option<PathBuf>,
    /// The SPIFFE ID the control plane's certificate must carry.
    #[arg(long, env = "SKIFF_CONTROL_PLANE_IDENTITY", default_value = tls::control_plane::DEFAULT_CONTROL_PLANE_IDENTITY, value_parser = parse_spiffe_id)]
    control_plane_identity: skiff_api::identity::SpiffeId,
    /// Namespace of the workload this proxy serves.
    #[arg(long, env = "SKIFF_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Name of the workload this proxy serves.
    #[arg(long, env = "SKIFF_WORKLOAD")]
    workload: String,
    /// The pod's IP addresses (one per family; comma-separated). Inbound traffic goes here.
    #[arg(long, env = "SKIFF_POD_IP", value_delimiter = ',', required = true)]
    pod_ip: Vec<IpAddr>,
    /// Longest time in-flight connections get after SIGTERM.
    #[arg(long, env = "SKIFF_DRAIN_PERIOD", default_value = "5s", value_parser = parse_duration)]
    drain_period: Duration,
    /// How long to wait for a client's first bytes before treating the connection as TCP.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    detect_timeout: Duration,
    /// Refuse (NACK) configurations with more HTTP routes than this: a guard on the memory a
    /// control plane can make every sidecar spend.
    #[arg(long, env = "SKIFF_MAX_ROUTES", default_value_t = policy::ConfigLimits::default().max_routes)]
    max_routes: usize,
    /// Requests in flight through this proxy (both directions) beyond which new ones are
    /// answered 503 `overloaded` at once instead of queued.
    #[arg(long, env = "SKIFF_MAX_REQUESTS_IN_FLIGHT", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_requests_in_flight: u32,
    /// Runtime worker threads; 1 runs everything on the main thread.
    #[arg(long, env = "SKIFF_WORKERS", default_value_t = 1)]
    workers: usize,
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
    let result = match cli.command {
        Command::Init(args) => init(args),
        Command::Run(args) => run(*args),
        Command::Await { timeout } => await_ready(timeout),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let config = capture::CaptureConfig {
        proxy_uid: args.proxy_uid,
        proxy_gid: args.proxy_gid,
        exclude_inbound_ports: args.exclude_inbound_ports,
        exclude_outbound_ports: args.exclude_outbound_ports,
        exclude_outbound_cidrs: args.exclude_outbound_cidrs,
        ..capture::CaptureConfig::default()
    };
    if args.dry_run {
        print!("{}", capture::render(&config));
        return Ok(());
    }
    let report = capture::install(&config)?;
    tracing::info!(?report, "capture rules installed");
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let workload = skiff_api::config::WorkloadRef {
        namespace: args.namespace,
        name: args.workload,
    };
    let config_limits = policy::ConfigLimits {
        max_routes: args.max_routes,
    };
    // With a control plane: whom to trust, and how to ask for certificates.
    let certificates = match (&args.control_plane, &args.ca_bundle) {
        (Some(control_plane), Some(ca_bundle)) => Some(tls::renew::CertificateClient {
            control_plane: control_plane.clone(),
            tls: tls::ControlPlaneTls::load(ca_bundle, args.control_plane_identity.clone())
                .context("--ca-bundle")?,
            workload: workload.clone(),
            token_file: args.bootstrap_token_file.clone(),
        }),
        (Some(_), None) => bail!("--control-plane needs --ca-bundle"),
        // (clap's `requires` would not say so: --control-plane conflicts with --policy.)
        (None, _) if args.ca_bundle.is_some() || args.bootstrap_token_file.is_some() => {
            bail!("--ca-bundle and --bootstrap-token-file only apply with --control-plane")
        }
        (None, _) => None,
    };
    let destinations =
        std::sync::Arc::new(skiff_proxy::resilience::destination::Destinations::default());
    let snapshot = match args.control_plane {
        // Nothing to route by until the control plane answers; readiness waits for it.
        Some(_) => policy::Snapshot::default(),
        None => policy::load(
            &args.policy,
            &workload,
            &args.pod_ip,
            &config_limits,
            &destinations,
        )?,
    };
    let pod_ips = args.pod_ip.clone();
    let mut settings = app::Settings::new(workload, args.pod_ip);
    settings.config_limits = config_limits;
    settings.drain_period = args.drain_period;
    settings.max_requests_in_flight = args.max_requests_in_flight;
    settings.detect_timeout = args.detect_timeout;
    settings.from_control_plane = certificates.is_some();
    let runtime = if args.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // The workload certificate comes first: without it no sidecar would accept this one.
        let identity = match &certificates {
            Some(certificates) => tokio::select! {
                identity = certificates.first_identity() => Some(identity),
                () = wait_for_termination() => return Ok(()),
            },
            None => {
                tracing::info!("local policy mode: no workload identity, sidecars speak plaintext to each other");
                None
            }
        };
        let stream = certificates.zip(identity.clone()).map(|(certificates, identity)| {
            tokio::spawn(certificates.clone().keep_renewed(identity.clone()));
            control::StreamSettings {
                control_plane: certificates.control_plane,
                workload: certificates.workload,
                pod_ips,
                backoff: control::Backoff::default(),
                tls: certificates.tls,
                identity,
            }
        });
        let app = app::App::bind(
            settings,
            &app::Addresses::default(),
            snapshot,
            destinations,
            identity,
        )?;
        let drain = app.drain();
        tokio::spawn(async move {
            wait_for_termination().await;
            drain.start();
        });
        match stream {
            Some(stream) => {
                let proxy = app.proxy();
                let source = format!("control plane {}", stream.control_plane);
                let apply: control::Apply = std::sync::Arc::new(move |config| {
                    let source = format!("{source}, version {}", config.version);
                    let snapshot = policy::Snapshot::from_config(
                        source,
                        config,
                        &proxy.settings.config_limits,
                        &proxy.destinations,
                    )
                    .map_err(|error| error.to_string())?;
                    proxy.apply(snapshot);
                    Ok(())
                });
                tokio::spawn(control::run(stream, app.proxy().control.clone(), apply))
            }
            None => tokio::spawn(reload_on_hangup(app.proxy(), args.policy)),
        };
        app.run().await;
        anyhow::Ok(())
    })
}

/// Resolves on SIGTERM (the kubelet stopping the pod) or SIGINT.
async fn wait_for_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; the proxy will not drain on SIGTERM");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// Re-reads the policy files on SIGHUP. An invalid edit is logged and the snapshot in force
/// keeps serving; open HTTP connections route their next request with the new snapshot and
/// opaque TCP connections keep their endpoint.
async fn reload_on_hangup(proxy: std::sync::Arc<app::Proxy>, paths: Vec<PathBuf>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        match policy::load(
            &paths,
            &proxy.settings.workload,
            &proxy.settings.pod_ips,
            &proxy.settings.config_limits,
            &proxy.destinations,
        ) {
            Ok(snapshot) => {
                tracing::info!(services = snapshot.outbound.len(), "policy reloaded");
                proxy.apply(snapshot);
            }
            Err(error) => {
                tracing::error!("policy reload refused, keeping the last good policy: {error}")
            }
        }
    }
}

/// Polls the local readiness endpoint until it answers 200.
fn await_ready(timeout: Duration) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let ready = std::net::TcpStream::connect("127.0.0.1:15021").and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(
                b"GET /healthz/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )?;
            let mut head = [0u8; 12];
            stream.read_exact(&mut head)?;
            Ok(head.starts_with(b"HTTP/1.1 200"))
        });
        if ready.unwrap_or(false) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!("the proxy at 127.0.0.1:15021 was not ready within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn parse_spiffe_id(text: &str) -> Result<skiff_api::identity::SpiffeId, String> {
    skiff_api::identity::SpiffeId::parse(text).map_err(|error| format!("{text:?}: {error}"))
}

/// Parses durations like `500ms`, `5s`, `2m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with a unit, like 5s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        _ => Err(format!("{text:?}: unit must be ms, s or m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
