//! `skiff-bench`: the programs the benchmark harness (`bench/run.py`) runs inside its pods.
//!
//! Map of the crate:
//! - [`upstream`]: the one upstream every target talks to: HTTP/1.1 and h2c on one port, a small
//!   fixed body.
//! - [`bulk`]: opaque TCP bulk transfer: the source/sink server beside the upstream, and the
//!   client that measures GB/s through a target.
//! - [`idle`]: opens many keep-alive connections and holds them idle, for a proxy's memory per
//!   connection.
//! - [`fanout`]: N simulated proxies on one control plane: time from a policy edit until every
//!   proxy has ACKed it, and the control plane's memory per connected proxy.
//! - [`handshakes`]: new mTLS connections per second into a sidecar, as a peer sidecar makes
//!   them (full, resumed, and plaintext for comparison).
//! - [`identity`]: workload certificates signed with a control plane's CA files, for the two
//!   above.
//!
//! The orchestration (pods, proxies, load generators, tables, plots) is `bench/run.py`, and
//! `bench/fanout.py` for the control plane; see `bench/README.md`.

mod bulk;
mod fanout;
mod handshakes;
mod identity;
mod idle;
mod upstream;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skiff-bench",
    about = "Programs of the Skiff benchmark harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP/1.1 + h2c and TCP bulk transfers (single-threaded).
    Upstream {
        /// Address of the HTTP/1.1 + h2c listener.
        #[arg(long)]
        http: SocketAddr,
        /// Address of the TCP bulk source/sink listener.
        #[arg(long)]
        tcp: SocketAddr,
    },
    /// Measure TCP bulk throughput through ADDR on one connection; prints one JSON line.
    Tcp {
        /// Where the bulk server (or a proxy in front of it) listens.
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, value_enum, default_value = "download")]
        direction: bulk::Direction,
        /// How long to transfer.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Open N keep-alive connections with one request each, print `holding N`, and keep them
    /// idle until standard input closes.
    Hold {
        /// Where to connect (an HTTP/1.1 server or a proxy in front of one).
        #[arg(long)]
        addr: SocketAddr,
        /// The Host header of the requests.
        #[arg(long, default_value = "bench")]
        host: String,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
    },
    /// Connect N simulated proxies to a control plane, edit its policy, and measure how long
    /// until every proxy has ACKed each edit; prints one JSON object.
    Fanout(fanout::Args),
    /// Open new mTLS (or plaintext) connections to a sidecar's inbound port as fast as it
    /// accepts them, each closed after the handshake; prints one JSON object.
    Handshakes(handshakes::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Upstream { http, tcp } => run_upstream(http, tcp),
        Command::Fanout(args) => fanout::run(args),
        Command::Handshakes(args) => handshakes::run(args),
        Command::Tcp {
            addr,
            direction,
            seconds,
        } => {
            let duration = Duration::try_from_secs_f64(seconds).context("bad --seconds")?;
            let transfer = bulk::measure(addr, direction, duration)
                .with_context(|| format!("bulk transfer through {addr}"))?;
            println!(
                "{{\"bytes\": {}, \"seconds\": {:.6}, \"gigabytes_per_second\": {:.4}}}",
                transfer.bytes,
                transfer.elapsed.as_secs_f64(),
                transfer.gigabytes_per_second()
            );
            Ok(())
        }
        Command::Hold {
            addr,
            host,
            connections,
        } => {
            let held = idle::hold(addr, &host, connections)
                .with_context(|| format!("opening idle connections through {addr}"))?;
            println!("holding {}", held.len());
            std::io::stdout().flush()?;
            // Held until the harness has read the proxy's memory and closes our stdin.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            drop(held);
            Ok(())
        }
    }
}

/// Both servers on one thread: the upstream shares core 0 with the load generator.
fn run_upstream(http: SocketAddr, tcp: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let http = tokio::net::TcpListener::bind(http)
            .await
            .with_context(|| format!("cannot bind {http}"))?;
        let tcp = tokio::net::TcpListener::bind(tcp)
            .await
            .with_context(|| format!("cannot bind {tcp}"))?;
        eprintln!(
            "skiff-bench upstream: HTTP/1.1 + h2c on {}, TCP bulk on {}",
            http.local_addr()?,
            tcp.local_addr()?
        );
        tokio::try_join!(upstream::serve(http), bulk::serve(tcp))?;
        anyhow::Ok(())
    })
}
