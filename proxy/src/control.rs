//! The proxy's side of the configuration stream (DESIGN.md §9; protocol in
//! [`skiff_api::stream`]): connect to the control plane over HTTP/2 and mutual TLS (the control
//! plane proves `--control-plane-identity` against `--ca-bundle` and the trust bundle of the
//! proxy's identity, the proxy shows its workload certificate, [`crate::tls::control_plane`]),
//! say Hello, apply every configuration received and answer ACK or NACK. When the stream
//! breaks the proxy keeps serving the configuration it has and reconnects with exponential
//! back-off and full jitter.
//!
//! Not on the request path: connections read whatever snapshot [`Apply`] installed.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{header, Request};
use http_body_util::{BodyExt, Channel};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use skiff_api::config::{ProxyConfig, WorkloadRef};
use skiff_api::stream::{
    encode, ControlMessage, FrameDecoder, FrameError, Hello, ProxyMessage, MAX_CONFIG_FRAME_BYTES,
    STREAM_PATH,
};

use crate::tls::control_plane::ConnectError;
use crate::tls::{ControlPlaneTls, Identity};

/// Installs a configuration; `Err` carries the reason the proxy refuses it (sent as the NACK)
/// and must leave the configuration in force untouched.
pub type Apply = Arc<dyn Fn(ProxyConfig) -> Result<(), String> + Send + Sync>;

/// The control plane's proxy API port (DESIGN.md §2).
pub const DEFAULT_PORT: u16 = 15010;

/// A control plane that does not accept the connection and complete the TLS handshake within
/// this is given up on.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A control plane that stops answering HTTP/2 pings is given up on (a silent partition
/// would otherwise leave the stream open and stale forever).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the stream goes and who is asking.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// `host:port` of the control plane's proxy API.
    pub control_plane: Authority,
    pub workload: WorkloadRef,
    pub pod_ips: Vec<IpAddr>,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
    /// Who the control plane must be, and the roots it may chain to besides `identity`'s
    /// trust bundle.
    pub tls: ControlPlaneTls,
    /// What the proxy shows the control plane: each connection presents the certificate
    /// current at the time, so reconnecting after a renewal shows the new one.
    pub identity: Arc<Identity>,
}

/// Parses `--control-plane`: `host:port`, or `host` for port 15010.
pub fn parse_address(text: &str) -> Result<Authority, String> {
    let authority: Authority = text
        .parse()
        .map_err(|_| format!("{text:?}: expected host:port"))?;
    if authority.port().is_some() {
        return Ok(authority);
    }
    format!("{text}:{DEFAULT_PORT}")
        .parse()
        .map_err(|_| format!("{text:?}: expected host:port"))
}

/// The stream's state: decides readiness and renders its metrics.
#[derive(Debug)]
pub struct ControlStatus {
    /// Configuration comes from a control plane. In standalone mode (local files) the proxy
    /// is ready from the start and none of this is rendered.
    streamed: bool,
    /// The stream is open (the control plane answered the Hello).
    connected: AtomicBool,
    /// The configuration in force; `None` until the first one is applied.
    applied: Mutex<Option<Applied>>,
    /// Configurations applied and refused since start.
    applied_total: AtomicU64,
    refused_total: AtomicU64,
}

#[derive(Debug, Clone)]
struct Applied {
    version: String,
    /// For `skiff_config_age_seconds`.
    at: Instant,
}

impl ControlStatus {
    /// `streamed`: whether the proxy runs with `--control-plane`.
    pub fn new(streamed: bool) -> Self {
        ControlStatus {
            streamed,
            connected: AtomicBool::new(false),
            applied: Mutex::new(None),
            applied_total: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
        }
    }

    /// Ready to serve: standalone, or a first configuration has been applied. Stays true when
    /// the control plane goes away: the last good configuration keeps serving.
    pub fn is_ready(&self) -> bool {
        !self.streamed || self.applied_version().is_some()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The version of the configuration in force.
    pub fn applied_version(&self) -> Option<String> {
        self.lock_applied().as_ref().map(|a| a.version.clone())
    }

    /// Lines to append to `/metrics` (empty in standalone mode).
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if !self.streamed {
            return out;
        }
        let _ = writeln!(out, "# HELP skiff_control_plane_connected Whether the configuration stream to the control plane is open (1) or not (0).");
        let _ = writeln!(out, "# TYPE skiff_control_plane_connected gauge");
        let _ = writeln!(
            out,
            "skiff_control_plane_connected {}",
            u8::from(self.is_connected())
        );
        let _ = writeln!(out, "# HELP skiff_config_updates_total Configurations received from the control plane, by outcome.");
        let _ = writeln!(out, "# TYPE skiff_config_updates_total counter");
        for (result, counter) in [
            ("applied", &self.applied_total),
            ("refused", &self.refused_total),
        ] {
            let _ = writeln!(
                out,
                "skiff_config_updates_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        if let Some(applied) = self.lock_applied().clone() {
            let _ = writeln!(
                out,
                "# HELP skiff_config_version_info The configuration version in force, as a label."
            );
            let _ = writeln!(out, "# TYPE skiff_config_version_info gauge");
            let _ = writeln!(
                out,
                "skiff_config_version_info{{version=\"{}\"}} 1",
                escape_label(&applied.version)
            );
            let _ = writeln!(out, "# HELP skiff_config_age_seconds Time since the configuration in force was applied.");
            let _ = writeln!(out, "# TYPE skiff_config_age_seconds gauge");
            let _ = writeln!(
                out,
                "skiff_config_age_seconds {:.3}",
                applied.at.elapsed().as_secs_f64()
            );
        }
        out
    }

    /// Applies one received configuration and says what to answer.
    fn receive(&self, config: ProxyConfig, workload: &WorkloadRef, apply: &Apply) -> ProxyMessage {
        let version = config.version.clone();
        if &config.workload != workload {
            let reason = format!(
                "configuration is for workload {}, this proxy serves {workload}",
                config.workload
            );
            return self.refused(version, reason);
        }
        if self.applied_version().as_ref() == Some(&version) {
            tracing::debug!(%version, "configuration already in force");
            return ProxyMessage::Ack { version };
        }
        match apply(config) {
            Ok(()) => {
                tracing::info!(%version, "configuration applied");
                *self.lock_applied() = Some(Applied {
                    version: version.clone(),
                    at: Instant::now(),
                });
                self.applied_total.fetch_add(1, Ordering::Relaxed);
                ProxyMessage::Ack { version }
            }
            Err(reason) => self.refused(version, reason),
        }
    }

    fn refused(&self, version: String, reason: String) -> ProxyMessage {
        tracing::warn!(%version, %reason, "configuration refused; the one in force stays");
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        ProxyMessage::Nack { version, reason }
    }

    fn lock_applied(&self) -> std::sync::MutexGuard<'_, Option<Applied>> {
        self.applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Prometheus label values escape `\`, `"` and newlines.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Exponential back-off with full jitter: attempt `n` waits a uniformly random time in
/// `[0, min(cap, base·2ⁿ)]`, so proxies that lost the same control plane do not return in
/// lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Failed attempts since the last healthy stream.
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The longest the next delay can be.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt; each call raises the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.ceiling().mul_f64(random_fraction());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// After a healthy stream the next reconnection is quick again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    /// 100 ms base, 5 s cap.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

/// A uniform value in `[0, 1)`. `RandomState` is seeded randomly per process and per
/// instance: enough for jitter, without a dependency.
pub(crate) fn random_fraction() -> f64 {
    let bits = RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Why a stream ended; the proxy keeps its configuration and reconnects.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("no connection to the control plane")]
    Connect(#[source] ConnectError),
    #[error("http/2 handshake failed")]
    Handshake(#[source] hyper::Error),
    #[error("the control plane refused the stream with status {0}")]
    Refused(http::StatusCode),
    #[error("stream broken")]
    Broken(#[source] hyper::Error),
    #[error("invalid frame from the control plane")]
    Frame(#[source] FrameError),
    #[error("stream cut in the middle of a frame")]
    Truncated,
    #[error("the control plane ended the stream")]
    Ended,
    #[error("the control plane stopped reading")]
    Gone,
}

/// How one stream ended.
#[derive(Debug)]
struct StreamEnd {
    /// A configuration arrived: the control plane was healthy, so the back-off starts over.
    configured: bool,
    error: StreamError,
}

/// Keeps a stream to the control plane open for as long as the proxy runs.
pub async fn run(settings: StreamSettings, status: Arc<ControlStatus>, apply: Apply) {
    keep_connected(settings.backoff.clone(), || {
        stream_once(&settings, &status, &apply)
    })
    .await
}

/// Runs `stream` again and again, waiting a back-off delay after each end.
async fn keep_connected<F, Fut>(mut backoff: Backoff, mut stream: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StreamEnd>,
{
    let mut last_error = String::new();
    loop {
        let end = stream().await;
        if end.configured {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        let error = error_chain(&end.error);
        // Say it once per kind of failure, not every few seconds while it lasts.
        if error != last_error {
            tracing::warn!(%error, "no configuration stream; serving the last good configuration and reconnecting");
        } else {
            tracing::debug!(%error, ?delay, "reconnecting");
        }
        last_error = error;
        tokio::time::sleep(delay).await;
    }
}

/// One stream from connect to its end.
async fn stream_once(
    settings: &StreamSettings,
    status: &ControlStatus,
    apply: &Apply,
) -> StreamEnd {
    let mut configured = false;
    // `stream` only returns on error.
    let Err(error) = stream(settings, status, apply, &mut configured).await;
    status.connected.store(false, Ordering::Relaxed);
    StreamEnd { configured, error }
}

async fn stream(
    settings: &StreamSettings,
    status: &ControlStatus,
    apply: &Apply,
    configured: &mut bool,
) -> Result<std::convert::Infallible, StreamError> {
    let address = settings.control_plane.as_str();
    let tls = settings
        .tls
        .connect(
            &settings.control_plane,
            Some(&settings.identity),
            CONNECT_TIMEOUT,
        )
        .await
        .map_err(StreamError::Connect)?;
    let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        // Configurations are hundreds of kB: with HTTP/2's default 16 KiB frames the control
        // plane pays a write per 16 KiB to every proxy (bench/RESULTS.md, control plane fan-out).
        .max_frame_size(1 << 20)
        .handshake(TokioIo::new(tls))
        .await
        .map_err(StreamError::Handshake)?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "control plane connection ended");
        }
    }));

    let (mut out, body) = Channel::<Bytes>::new(4);
    let hello = ProxyMessage::Hello(Hello {
        workload: settings.workload.clone(),
        pod_ips: settings.pod_ips.clone(),
        proxy_version: env!("CARGO_PKG_VERSION").to_string(),
        last_applied: status.applied_version(),
    });
    out.send_data(Bytes::from(encode(&hello)))
        .await
        .map_err(|_| StreamError::Gone)?;
    let request = Request::post(format!("https://{address}{STREAM_PATH}"))
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .expect("an authority and a fixed path make a valid request");
    let response = sender
        .send_request(request)
        .await
        .map_err(StreamError::Broken)?;
    if !response.status().is_success() {
        return Err(StreamError::Refused(response.status()));
    }
    status.connected.store(true, Ordering::Relaxed);
    tracing::info!(control_plane = address, "configuration stream open");

    let mut frames = Frames::new(response.into_body());
    loop {
        let reply = match frames.next().await? {
            Some(ControlMessage::Config(config)) => {
                *configured = true;
                status.receive(config, &settings.workload, apply)
            }
            None => return Err(StreamError::Ended),
        };
        out.send_data(Bytes::from(encode(&reply)))
            .await
            .map_err(|_| StreamError::Gone)?;
    }
}

/// Stops the HTTP/2 connection task when the stream ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Messages read from the control plane's response body.
struct Frames {
    body: Incoming,
    decoder: FrameDecoder,
}

impl Frames {
    fn new(body: Incoming) -> Self {
        Frames {
            body,
            decoder: FrameDecoder::new(MAX_CONFIG_FRAME_BYTES),
        }
    }

    /// The next message; `None` when the control plane ended the stream.
    async fn next(&mut self) -> Result<Option<ControlMessage>, StreamError> {
        loop {
            if let Some(message) = self.decoder.next_message().map_err(StreamError::Frame)? {
                return Ok(Some(message));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.decoder.push(data);
                    }
                }
                Some(Err(error)) => return Err(StreamError::Broken(error)),
                None if self.decoder.pending() > 0 => return Err(StreamError::Truncated),
                None => return Ok(None),
            }
        }
    }
}

/// An error and its causes on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
