//! `skiff-control`: the control plane. Watches a policy directory, validates every change,
//! streams each proxy its configuration and signs its certificate (DESIGN.md §1, §2, §4: API
//! on 15010 over TLS, admin on 15014).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use skiff_control::ca::{self, CaSource, CertificateAuthority};
use skiff_control::shutdown::Shutdown;
use skiff_control::source::file::FileSource;
use skiff_control::{admin, api, error_chain, ControlPlane};

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
    /// The CA's issuer certificate, PEM: a root, or an intermediate (optionally followed by the
    /// certificates above it).
    #[arg(
        long,
        env = "SKIFF_CA_CERT",
        requires = "ca_key",
        help_heading = "Certificate authority"
    )]
    ca_cert: Option<PathBuf>,
    /// The issuer's private key, PKCS#8 PEM.
    #[arg(
        long,
        env = "SKIFF_CA_KEY",
        requires = "ca_cert",
        help_heading = "Certificate authority"
    )]
    ca_key: Option<PathBuf>,
    /// The certificates from the issuer's issuer up to the root, PEM (when --ca-cert is an
    /// intermediate).
    #[arg(
        long,
        env = "SKIFF_CA_CHAIN",
        requires = "ca_cert",
        help_heading = "Certificate authority"
    )]
    ca_chain: Option<PathBuf>,
    /// A Kubernetes Secret (YAML or JSON) with `tls.crt`, `tls.key` and optionally `ca.crt` (the
    /// root, when tls.crt is an intermediate) in `data` (base64) or `stringData`.
    #[arg(
        long,
        env = "SKIFF_CA_SECRET",
        conflicts_with_all = ["ca_cert", "ca_key", "ca_chain"],
        help_heading = "Certificate authority"
    )]
    ca_secret: Option<PathBuf>,
    /// Without --ca-cert or --ca-secret: the directory holding root-cert.pem and root-key.pem,
    /// generated on first start (for local use only); ca-bundle.pem, the trust bundle proxies
    /// get as --ca-bundle, is written there. Default: skiff-ca in the working directory.
    #[arg(
        long,
        env = "SKIFF_CA_DIR",
        conflicts_with_all = ["ca_cert", "ca_key", "ca_chain", "ca_secret"],
        help_heading = "Certificate authority"
    )]
    ca_dir: Option<PathBuf>,
    /// Another root to trust, PEM (repeatable): the next or the previous root during a
    /// rotation.
    #[arg(long, help_heading = "Certificate authority")]
    extra_trust_root: Vec<PathBuf>,
    /// The trust domain of every SPIFFE ID signed.
    #[arg(
        long,
        env = "SKIFF_TRUST_DOMAIN",
        default_value = skiff_api::identity::DEFAULT_TRUST_DOMAIN,
        value_parser = trust_domain,
        help_heading = "Certificate authority"
    )]
    trust_domain: String,
    /// How long a workload certificate is valid (at least 10s); proxies renew at about 70%.
    #[arg(
        long,
        env = "SKIFF_CERT_LIFETIME",
        default_value = "24h",
        value_parser = cert_lifetime,
        help_heading = "Certificate authority"
    )]
    cert_lifetime: Duration,
    /// The namespace the control plane runs in: its identity is
    /// spiffe://<trust-domain>/ns/<namespace>/sa/skiff-control.
    #[arg(long, env = "SKIFF_NAMESPACE", default_value = skiff_control::DEFAULT_NAMESPACE, value_parser = namespace)]
    namespace: String,
}

/// Where the CA comes from, by the flags given.
impl Cli {
    fn ca_source(&self) -> CaSource {
        if let (Some(cert), Some(key)) = (&self.ca_cert, &self.ca_key) {
            return CaSource::Files {
                cert: cert.clone(),
                key: key.clone(),
                chain: self.ca_chain.clone(),
            };
        }
        if let Some(secret) = &self.ca_secret {
            return CaSource::Secret(secret.clone());
        }
        CaSource::Dir(
            self.ca_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("skiff-ca")),
        )
    }
}

fn cert_lifetime(text: &str) -> Result<Duration, String> {
    match skiff_api::duration::parse_duration(text) {
        Ok(lifetime) if lifetime >= ca::MIN_LIFETIME => Ok(lifetime),
        Ok(_) => Err(format!("must be at least {:?}", ca::MIN_LIFETIME)),
        Err(error) => Err(error.to_string()),
    }
}

fn trust_domain(text: &str) -> Result<String, String> {
    skiff_api::identity::SpiffeId::parse(&format!("spiffe://{text}/ns/a/sa/b"))
        .map(|id| id.trust_domain)
        .map_err(|_| "lower-case letters, digits, `.`, `-` and `_` only".to_string())
}

fn namespace(text: &str) -> Result<String, String> {
    skiff_api::identity::SpiffeId::parse(&format!("spiffe://td/ns/{text}/sa/b"))
        .map(|id| id.namespace)
        .map_err(|_| "not a Kubernetes namespace name".to_string())
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
    let settings = ca::Settings {
        trust_domain: cli.trust_domain.clone(),
        lifetime: cli.cert_lifetime,
    };
    let ca = CertificateAuthority::load(&cli.ca_source(), &cli.extra_trust_root, settings)
        .map_err(|error| anyhow::anyhow!(error_chain(&error)))
        .context("cannot set up the certificate authority")?;
    tracing::info!(
        source = ca.origin(),
        trust_domain = %cli.trust_domain,
        lifetime = ?cli.cert_lifetime,
        roots = ca.roots().len(),
        bundle = ca.bundle_file().map(|p| tracing::field::display(p.display())),
        "certificate authority ready{}",
        match ca.bundle_file() {
            Some(path) => format!("; proxies get the trust bundle as --ca-bundle {}", path.display()),
            None => String::new(),
        }
    );
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
        let mut control = ControlPlane::new(ca);
        control.namespace = cli.namespace.clone();
        tracing::info!(identity = %control.identity(), "the API serves TLS as");
        let control = Arc::new(control);
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

    #[test]
    fn the_ca_comes_from_files_a_secret_or_a_directory() {
        use clap::Parser;
        use skiff_control::ca::CaSource;
        use std::path::PathBuf;
        let parse = |args: &[&str]| {
            let mut argv = vec!["skiff-control", "--policy", "p"];
            argv.extend_from_slice(args);
            super::Cli::try_parse_from(argv)
        };
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.ca_source(), CaSource::Dir(PathBuf::from("skiff-ca")));
        assert_eq!(cli.trust_domain, "cluster.local");
        assert_eq!(cli.cert_lifetime, std::time::Duration::from_secs(24 * 3600));
        let cli = parse(&["--ca-cert", "c", "--ca-key", "k", "--ca-chain", "ch"]).unwrap();
        assert_eq!(
            cli.ca_source(),
            CaSource::Files {
                cert: "c".into(),
                key: "k".into(),
                chain: Some("ch".into())
            }
        );
        let cli = parse(&[
            "--ca-secret",
            "s.yaml",
            "--extra-trust-root",
            "a",
            "--extra-trust-root",
            "b",
        ])
        .unwrap();
        assert_eq!(cli.ca_source(), CaSource::Secret("s.yaml".into()));
        assert_eq!(cli.extra_trust_root.len(), 2);
        assert!(parse(&["--ca-cert", "c"]).is_err(), "a key is needed");
        assert!(parse(&["--ca-secret", "s", "--ca-cert", "c", "--ca-key", "k"]).is_err());
        assert!(parse(&["--ca-dir", "d", "--ca-secret", "s"]).is_err());
        assert!(parse(&["--cert-lifetime", "5s"]).is_err());
        assert!(parse(&["--cert-lifetime", "10s"]).is_ok());
        assert!(parse(&["--trust-domain", "Example.com"]).is_err());
        assert!(parse(&["--namespace", "a/b"]).is_err());
    }
}
