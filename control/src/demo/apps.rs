//! The demo's applications, run inside the pods by re-executing `skiff` (hidden subcommands):
//! `skiff demo-server` answers every request with its name; `skiff demo-client` sends an
//! open-loop stream of requests to the `echo` VIP and prints one [`Report`] per second, a JSON
//! line on stdout, which `skiff demo` reads from the client's log and renders.
//!
//! Neither knows about the mesh: the client's connections to the VIP are captured by its pod's
//! sidecar, which routes every request by the HTTPRoute it was last sent.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};
use tokio::time::{Instant, MissedTickBehavior};

/// The response header (also the body) naming the server that answered.
pub const SERVED_BY: &str = "x-served-by";

/// A request without a response after this long counts as failed (and its connection is
/// replaced).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `skiff demo-server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The name every response carries (`x-served-by` and the body).
    #[arg(long)]
    pub name: String,
    /// The port to listen on, on every address.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

/// `skiff demo-client`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// `VIP:PORT` to call.
    #[arg(long)]
    pub target: SocketAddr,
    /// Requests per second, sent on schedule whether or not earlier ones were answered (open
    /// loop), so a slow answer shows as latency instead of a lower rate.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Keep-alive connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
}

/// One second of the client's traffic: one JSON line of `skiff demo-client`'s stdout.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Seconds since the client started: 1 for the first report.
    pub second: u64,
    /// Requests scheduled during the second.
    pub sent: u64,
    /// Responses that arrived during the second, by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that ended without a response during the second (refused, reset, timed out).
    pub failed: u64,
    /// The reason of the last of those failures, to show why.
    pub error: Option<String>,
    /// Responses by `x-served-by`: which version answered.
    pub served_by: BTreeMap<String, u64>,
    /// Median latency in milliseconds, from a request's scheduled time to its last byte (so
    /// time waiting for a free connection counts), over the second's responses and failures.
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds, measured the same way.
    pub p99_ms: f64,
}

impl Report {
    /// Requests that ended during the second, answered or not.
    pub fn completed(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.failed
    }

    /// Responses with a 2xx status.
    pub fn succeeded(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Runs the server until killed.
pub fn serve(args: &ServerArgs) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(("0.0.0.0", args.port)).await?;
        let name: Arc<str> = Arc::from(args.name.as_str());
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, say: wait instead of spinning.
                    eprintln!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(answer(stream, name.clone()));
        }
    })
}

/// Serves one connection: every request gets `200`, `x-served-by: NAME` and `NAME\n`.
async fn answer(stream: TcpStream, name: Arc<str>) {
    let service = hyper::service::service_fn(move |_request: Request<hyper::body::Incoming>| {
        let response = Response::builder()
            .header(SERVED_BY, &*name)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(format!("{name}\n"))))
            .expect("a static response is valid");
        async { Ok::<_, Infallible>(response) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// How one request ended.
enum Outcome {
    Answered {
        status: u16,
        served_by: Option<String>,
    },
    Failed(String),
}

/// Runs the client until killed: schedules `rate` requests a second, spreads them over
/// `connections` workers (one keep-alive connection each), and prints a [`Report`] a second.
pub fn run_client(args: &ClientArgs) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let period = Duration::from_secs(1) / args.rate.max(1);
    runtime.block_on(async {
        let (queue, scheduled) = mpsc::unbounded_channel::<Instant>();
        let scheduled = Arc::new(Mutex::new(scheduled));
        let (done, mut outcomes) = mpsc::unbounded_channel::<(Outcome, Duration)>();
        for _ in 0..args.connections.max(1) {
            tokio::spawn(worker(args.target, scheduled.clone(), done.clone()));
        }
        let start = Instant::now();
        let mut ticks = tokio::time::interval(period);
        // Open loop: a late tick fires at once, as many times as it missed.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut seconds =
            tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        let mut window = Window::default();
        let mut second = 0;
        loop {
            tokio::select! {
                tick = ticks.tick() => {
                    window.sent += 1;
                    let _ = queue.send(tick);
                }
                Some((outcome, latency)) = outcomes.recv() => window.record(outcome, latency),
                _ = seconds.tick() => {
                    second += 1;
                    let report = std::mem::take(&mut window).report(second);
                    // Stdout is line-buffered: the parent sees each line as it is printed.
                    println!("{}", serde_json::to_string(&report).expect("a report serialises"));
                }
            }
        }
    })
}

/// One connection's worth of the client: takes the next scheduled request, sends it, reports
/// how it ended and how long it took since it was scheduled.
async fn worker(
    target: SocketAddr,
    scheduled: Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>,
    done: mpsc::UnboundedSender<(Outcome, Duration)>,
) {
    let mut connection = None;
    loop {
        let Some(at) = scheduled.lock().await.recv().await else {
            return;
        };
        let outcome =
            match tokio::time::timeout(REQUEST_TIMEOUT, call(&mut connection, target)).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(error)) => {
                    connection = None;
                    Outcome::Failed(error.to_string())
                }
                Err(_) => {
                    connection = None;
                    Outcome::Failed(format!("no response within {REQUEST_TIMEOUT:?}"))
                }
            };
        if done.send((outcome, at.elapsed())).is_err() {
            return;
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// `GET /` on the worker's connection (made first if there is none or it closed).
async fn call(
    connection: &mut Option<SendRequest<Empty<Bytes>>>,
    target: SocketAddr,
) -> Result<Outcome, CallError> {
    let sender = match connection {
        Some(sender) if !sender.is_closed() => sender,
        _ => connection.insert(connect(target).await?),
    };
    sender.ready().await?;
    let request = Request::get("/")
        .header(http::header::HOST, target.to_string())
        .body(Empty::new())
        .expect("a static request is valid");
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let served_by = response
        .headers()
        .get(SERVED_BY)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    response.into_body().collect().await?;
    Ok(Outcome::Answered { status, served_by })
}

async fn connect(target: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, CallError> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(CallError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// What the client saw during the current second.
#[derive(Default)]
struct Window {
    sent: u64,
    statuses: BTreeMap<u16, u64>,
    failed: u64,
    error: Option<String>,
    served_by: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

impl Window {
    fn record(&mut self, outcome: Outcome, latency: Duration) {
        self.latencies.push(latency);
        match outcome {
            Outcome::Answered { status, served_by } => {
                *self.statuses.entry(status).or_default() += 1;
                if let Some(name) = served_by {
                    *self.served_by.entry(name).or_default() += 1;
                }
            }
            Outcome::Failed(error) => {
                self.failed += 1;
                self.error = Some(error);
            }
        }
    }

    fn report(mut self, second: u64) -> Report {
        self.latencies.sort_unstable();
        Report {
            second,
            sent: self.sent,
            p50_ms: percentile_ms(&self.latencies, 0.50),
            p99_ms: percentile_ms(&self.latencies, 0.99),
            statuses: self.statuses,
            failed: self.failed,
            error: self.error,
            served_by: self.served_by,
        }
    }
}

/// The `q` quantile (nearest rank) of sorted latencies, in milliseconds; 0 when there are none.
fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&[ms(7)], 0.99), 7.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn a_window_becomes_a_report_that_reads_back() {
        let mut window = Window {
            sent: 3,
            ..Window::default()
        };
        let v1 = || Outcome::Answered {
            status: 200,
            served_by: Some("v1".into()),
        };
        window.record(v1(), Duration::from_millis(2));
        window.record(v1(), Duration::from_millis(4));
        window.record(Outcome::Failed("reset".into()), Duration::from_millis(9));
        let report = window.report(1);
        assert_eq!(report.completed(), 3);
        assert_eq!(report.succeeded(), 2);
        assert_eq!(report.served_by["v1"], 2);
        assert_eq!(report.error.as_deref(), Some("reset"));
        assert_eq!(report.p50_ms, 4.0);
        let line = serde_json::to_string(&report).unwrap();
        assert!(line.contains(r#""statuses":{"200":2}"#), "{line}");
        assert_eq!(serde_json::from_str::<Report>(&line).unwrap(), report);
    }
}
