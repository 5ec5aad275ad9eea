//! `skiff-bench handshakes`: new connections per second into a sidecar's inbound port, made the
//! way a peer sidecar makes them. Each connection goes to a port of a pod with a sidecar (the
//! pod's capture sends it to inbound 15006), completes a TLS 1.3 handshake offering ALPN
//! `skiff/tcp` with a client certificate signed by the control plane's root
//! ([`crate::identity`]), verifies the sidecar's certificate against `ca-bundle.pem` (and its
//! SPIFFE ID, when given), then sends `close\n` to the app behind the sidecar (the bulk server
//! of [`crate::bulk`], which closes at once), reads until the sidecar has forwarded that close
//! (collecting the session tickets it sent after the handshake), and closes its side. The
//! server side closes first, so the client's ports are not held in TIME-WAIT: at thousands
//! of connections a second they would run out within seconds.
//!
//! Three kinds of connection, one per run ([`Mode`]): full handshakes (no resumption), resumed
//! ones (TLS 1.3 PSK from the tickets of earlier connections; ECDHE still, but no certificate
//! and no signature on either side), and plaintext TCP through the same sidecar (accept,
//! forward to the app, close: the cost of a connection without TLS, to subtract).
//!
//! The harness (`bench/run.py`) reads the sidecar's CPU time around the run; this tool
//! reports what the client saw, as one JSON object.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
use serde_json::json;
use skiff_api::identity::SpiffeId;
use skiff_proxy::tls::verify::{Expect, PeerVerifier};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::identity::Signer;

/// Options of `skiff-bench handshakes`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A port of a pod whose sidecar captures inbound traffic (pod IP:app port; the inbound
    /// port 15006 itself refuses connections addressed to it).
    #[arg(long)]
    addr: SocketAddr,
    /// The control plane's CA directory (its `--ca-dir`): our certificate is signed with the
    /// root there, the sidecar's verified against `ca-bundle.pem`.
    #[arg(long)]
    ca_dir: PathBuf,
    /// The trust domain of the control plane (its `--trust-domain`).
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// The SPIFFE ID the sidecar's certificate must carry; unset: any of the trust domain's.
    #[arg(long)]
    server_identity: Option<String>,
    /// Our certificate's namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Our certificate's service account.
    #[arg(long, default_value = "skiff-bench")]
    service_account: String,
    #[arg(long, value_enum, default_value = "full")]
    mode: Mode,
    /// Connections in flight at any time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to open connections.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

/// Which kind of connection to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A full TLS 1.3 handshake each time: ECDHE, both certificates verified, both sides sign.
    Full,
    /// TLS 1.3 resumption with a ticket of an earlier connection (the first connections of a
    /// run, and any that find no ticket, are full: the report counts both kinds).
    Resumed,
    /// Plaintext TCP, no TLS: what a connection costs the sidecar without a handshake.
    Plaintext,
}

/// How long one connection may take, handshake and close, before it counts as failed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS 1.3 tickets rustls keeps per server name: each connection loop names the sidecar
/// differently (SNI is off, and its certificate is matched by SPIFFE ID, not by name), so each
/// has tickets of its own, like a peer sidecar of its own. Shared by all loops, 8 tickets
/// would not go round: beyond 8 loops most connections found none and were full handshakes.
const TICKETS_PER_SERVER_NAME: usize = 8;

/// What the connections of one run came to.
#[derive(Default)]
struct Tally {
    full: u64,
    resumed: u64,
    plaintext: u64,
    /// Failed connections by a short description of why.
    errors: BTreeMap<String, u64>,
    /// Time from the TCP connect until the handshake completed (or until the connection was
    /// established, in plaintext), for each successful connection.
    handshake_times: Vec<Duration>,
    /// TLS connections by cipher suite and key exchange group: what was measured.
    negotiated: BTreeMap<String, u64>,
}

/// What one successful connection was.
struct Made {
    /// `None`: plaintext.
    kind: Option<HandshakeKind>,
    /// When the handshake completed (plaintext: when the TCP connection was established).
    handshake_done: Instant,
    /// `cipher suite / key exchange group`, for TLS.
    negotiated: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be positive");
    }
    let duration = Duration::try_from_secs_f64(args.seconds).context("bad --seconds")?;
    let connector = match args.mode {
        Mode::Plaintext => None,
        Mode::Full | Mode::Resumed => Some(connector(&args)?),
    };
    // One thread: the harness pins the client to the load core, the sidecar has the other.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tally, elapsed) = runtime.block_on(open_connections(
        args.addr,
        connector,
        args.concurrency,
        duration,
    ));
    let connections = tally.full + tally.resumed + tally.plaintext;
    let failed: u64 = tally.errors.values().sum();
    if connections == 0 {
        anyhow::bail!(
            "no connection to {} succeeded: {:?}",
            args.addr,
            tally.errors
        );
    }
    let mut times = tally.handshake_times;
    times.sort_unstable();
    let report = json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "concurrency": args.concurrency,
        "seconds": elapsed.as_secs_f64(),
        "connections": connections,
        "per_second": connections as f64 / elapsed.as_secs_f64(),
        "full": tally.full,
        "resumed": tally.resumed,
        "plaintext": tally.plaintext,
        "errors": failed,
        "error_kinds": tally.errors,
        "negotiated": tally.negotiated,
        "handshake_p50_us": percentile(&times, 0.5).as_secs_f64() * 1e6,
        "handshake_p99_us": percentile(&times, 0.99).as_secs_f64() * 1e6,
    });
    println!("{report}");
    Ok(())
}

/// The client configuration: our certificate, the sidecar verified like a peer sidecar would,
/// ALPN `skiff/tcp`, resumption only in [`Mode::Resumed`].
fn connector(args: &Args) -> anyhow::Result<TlsConnector> {
    let signer = Signer::load(&args.ca_dir, &args.trust_domain)
        .with_context(|| format!("--ca-dir {}", args.ca_dir.display()))?;
    let certificate = signer.certificate(&args.namespace, &args.service_account)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The sidecar is verified exactly as a peer sidecar verifies it.
    let expect = match &args.server_identity {
        Some(id) => Expect::Identity(SpiffeId::parse(id).context("--server-identity")?),
        None => Expect::TrustDomain(args.trust_domain.clone()),
    };
    let verifier =
        Arc::new(PeerVerifier::try_new(signer.bundle(), expect).context("ca-bundle.pem")?);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certificate.chain, certificate.key)?;
    config.alpn_protocols = vec![skiff_api::identity::ALPN_TCP.to_vec()];
    config.enable_sni = false;
    config.resumption = match args.mode {
        Mode::Resumed => Resumption::in_memory_sessions(args.concurrency * TICKETS_PER_SERVER_NAME),
        Mode::Full | Mode::Plaintext => Resumption::disabled(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `concurrency` loops, each opening one connection after another until `duration` has passed.
async fn open_connections(
    addr: SocketAddr,
    connector: Option<TlsConnector>,
    concurrency: usize,
    duration: Duration,
) -> (Tally, Duration) {
    let start = Instant::now();
    let deadline = start + duration;
    let mut loops = tokio::task::JoinSet::new();
    for index in 0..concurrency {
        let connector = connector.clone();
        let name =
            ServerName::try_from(format!("sidecar-{index}.skiff-bench")).expect("a valid DNS name");
        loops.spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let began = Instant::now();
                let outcome = tokio::time::timeout(
                    CONNECTION_TIMEOUT,
                    connection(addr, connector.as_ref(), &name),
                )
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
                match outcome {
                    Ok(made) => {
                        match made.kind {
                            Some(HandshakeKind::Resumed) => tally.resumed += 1,
                            Some(_) => tally.full += 1,
                            None => tally.plaintext += 1,
                        }
                        if let Some(negotiated) = made.negotiated {
                            *tally.negotiated.entry(negotiated).or_default() += 1;
                        }
                        tally.handshake_times.push(made.handshake_done - began);
                    }
                    Err(error) => {
                        *tally.errors.entry(format!("{error:#}")).or_default() += 1;
                        // A refusing sidecar would otherwise be hammered in a tight loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = loops.join_next().await {
        let tally = joined.expect("a connection loop panicked");
        total.full += tally.full;
        total.resumed += tally.resumed;
        total.plaintext += tally.plaintext;
        for (error, n) in tally.errors {
            *total.errors.entry(error).or_default() += n;
        }
        total.handshake_times.extend(tally.handshake_times);
        for (negotiated, n) in tally.negotiated {
            *total.negotiated.entry(negotiated).or_default() += n;
        }
    }
    (total, start.elapsed())
}

/// One connection: TCP, the handshake (unless plaintext), then a clean close.
async fn connection(
    addr: SocketAddr,
    connector: Option<&TlsConnector>,
    name: &ServerName<'static>,
) -> anyhow::Result<Made> {
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    tcp.set_nodelay(true).context("nodelay")?;
    match connector {
        None => {
            let established = Instant::now();
            exchange(tcp).await?;
            Ok(Made {
                kind: None,
                handshake_done: established,
                negotiated: None,
            })
        }
        Some(connector) => {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .context("handshake")?;
            let done = Instant::now();
            let (_, session) = tls.get_ref();
            let kind = session.handshake_kind();
            if session.alpn_protocol() != Some(skiff_api::identity::ALPN_TCP) {
                anyhow::bail!("the sidecar did not agree on ALPN skiff/tcp");
            }
            let negotiated = match (
                session.negotiated_cipher_suite(),
                session.negotiated_key_exchange_group(),
            ) {
                (Some(suite), Some(group)) => format!("{:?} / {:?}", suite.suite(), group.name()),
                (suite, group) => format!("{suite:?} / {group:?}"),
            };
            exchange(tls).await?;
            Ok(Made {
                kind,
                handshake_done: done,
                negotiated: Some(negotiated),
            })
        }
    }
}

/// Asks the app to close (`close\n`), reads until the sidecar has forwarded its close (anything
/// arriving meanwhile, such as session tickets, is consumed), then closes our side: close_notify
/// (TLS) and FIN.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> anyhow::Result<()> {
    stream.write_all(b"close\n").await.context("write")?;
    stream.flush().await.context("write")?;
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => return Err(error).context("reading until the app closes"),
        }
    }
    // The sidecar may be gone already; the connection was made all the same.
    let _ = stream.shutdown().await;
    Ok(())
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
