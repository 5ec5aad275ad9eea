//! One simulated proxy: its own mTLS + HTTP/2 connection to the control plane, `POST /v1/stream`, a
//! Hello, then an ACK for every configuration received, each arrival reported (with its time)
//! to the coordinator. It applies nothing: what is measured is the control plane's delivery.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Channel};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use skiff_api::config::WorkloadRef;
use skiff_api::stream::{
    encode, ControlMessage, FrameDecoder, FrameError, Hello, ProxyMessage, MAX_CONFIG_FRAME_BYTES,
    STREAM_PATH,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;
use tokio_rustls::TlsConnector;

/// As the real proxy: pings every 10 s, so idle streams cost the control plane what they
/// would in production.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How much of each configuration the simulated proxy reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Decode {
    /// Finds where each frame ends and reads the version from its head (the control plane
    /// writes it first), without copying or parsing the rest: 10,000 proxies share one core
    /// here, where a real fleet parses on 10,000 machines, and the simulator must not be the
    /// bottleneck of what it measures.
    Head,
    /// Splits frames with `FrameDecoder` and parses each whole `ProxyConfig`, as a real proxy
    /// does before applying it; checks every configuration is for this proxy's workload.
    Full,
}

/// What the coordinator hears from the proxies.
#[derive(Debug)]
pub enum Event {
    /// Proxy `proxy` received (and is ACKing) configuration `version` at `at`.
    Arrival {
        proxy: usize,
        version: String,
        at: Instant,
    },
    /// Proxy `proxy` lost its stream; the run is invalid.
    Failed { proxy: usize, error: ProxyError },
}

/// Why a simulated proxy's stream ended.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake failed")]
    Tls(#[source] std::io::Error),
    #[error("no client certificate for {0:?}")]
    NoCertificate((String, String)),
    #[error("http/2 handshake failed")]
    Handshake(#[source] hyper::Error),
    #[error("the control plane answered {0}")]
    Refused(http::StatusCode),
    #[error("stream broken")]
    Broken(#[source] hyper::Error),
    #[error("invalid frame")]
    Frame(#[source] FrameError),
    #[error("configuration for {0}, not for this proxy")]
    WrongWorkload(WorkloadRef),
    #[error("not a config frame: {0:?}")]
    Unexpected(String),
    #[error("the control plane ended the stream")]
    Ended,
    #[error("the control plane stopped reading")]
    Gone,
}

/// How a `config` frame starts; the version follows.
const CONFIG_HEAD: &[u8] = b"{\"config\":{\"version\":\"";

/// Frame boundaries without parsing, for [`Decode::Head`].
#[derive(Default)]
struct FrameEnds {
    /// The first bytes of the frame being received (enough for its version).
    head: Vec<u8>,
}

impl FrameEnds {
    const HEAD_BYTES: usize = 64;

    /// Consumes `data`; the versions of the frames it completes go to `versions`.
    fn push(&mut self, mut data: &[u8], versions: &mut Vec<String>) -> Result<(), ProxyError> {
        loop {
            let end = memchr::memchr(b'\n', data);
            let part = &data[..end.unwrap_or(data.len())];
            let room = Self::HEAD_BYTES.saturating_sub(self.head.len());
            self.head.extend_from_slice(&part[..part.len().min(room)]);
            let Some(end) = end else { return Ok(()) };
            if !self.head.is_empty() {
                versions.push(version_in(&self.head)?);
                self.head.clear();
            }
            data = &data[end + 1..];
        }
    }
}

/// The version at the head of a `config` frame.
fn version_in(head: &[u8]) -> Result<String, ProxyError> {
    let unexpected = || ProxyError::Unexpected(String::from_utf8_lossy(head).into_owned());
    let rest = head.strip_prefix(CONFIG_HEAD).ok_or_else(unexpected)?;
    let end = memchr::memchr(b'"', rest).ok_or_else(unexpected)?;
    String::from_utf8(rest[..end].to_vec()).map_err(|_| unexpected())
}

/// What every simulated proxy shares: where to connect, how to behave, where to report.
pub struct Fleet {
    pub control_plane: SocketAddr,
    /// TLS with a client certificate, by `(namespace, service account)`.
    pub connectors: HashMap<(String, String), TlsConnector>,
    pub decode: Decode,
    /// The HTTP/2 SETTINGS_MAX_FRAME_SIZE to advertise; `None`: the default (16 KiB).
    pub max_frame_size: Option<u32>,
    pub events: UnboundedSender<Event>,
    /// Bytes of the response bodies, all proxies together.
    pub received_bytes: AtomicU64,
}

/// Who one simulated proxy is.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Its number in the events.
    pub index: usize,
    pub workload: WorkloadRef,
    /// `(namespace, service account)`: which client certificate it presents.
    pub identity: (String, String),
    pub pod_ip: IpAddr,
}

/// Runs one proxy until its stream fails, reporting every arrival to the fleet's `events`.
pub async fn run(fleet: Arc<Fleet>, me: Identity) {
    let error = match stream(&fleet, &me).await {
        Ok(never) => match never {},
        Err(error) => error,
    };
    let _ = fleet.events.send(Event::Failed {
        proxy: me.index,
        error,
    });
}

async fn stream(fleet: &Fleet, me: &Identity) -> Result<std::convert::Infallible, ProxyError> {
    let control_plane = fleet.control_plane;
    let tcp = TcpStream::connect(control_plane)
        .await
        .map_err(ProxyError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let connector = fleet
        .connectors
        .get(&me.identity)
        .ok_or_else(|| ProxyError::NoCertificate(me.identity.clone()))?;
    let server = ServerName::try_from("localhost").expect("a valid DNS name");
    let tls = connector
        .connect(server, tcp)
        .await
        .map_err(ProxyError::Tls)?;
    let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .max_frame_size(fleet.max_frame_size)
        .handshake(TokioIo::new(tls))
        .await
        .map_err(ProxyError::Handshake)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });

    let (mut out, body) = Channel::<Bytes>::new(4);
    let hello = ProxyMessage::Hello(Hello {
        workload: me.workload.clone(),
        pod_ips: vec![me.pod_ip],
        proxy_version: concat!("skiff-bench-", env!("CARGO_PKG_VERSION")).to_string(),
        last_applied: None,
    });
    out.send_data(Bytes::from(encode(&hello)))
        .await
        .map_err(|_| ProxyError::Gone)?;
    let request = Request::post(format!("https://{control_plane}{STREAM_PATH}"))
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .expect("a socket address and a fixed path make a valid request");
    let response = sender
        .send_request(request)
        .await
        .map_err(ProxyError::Broken)?;
    if !response.status().is_success() {
        return Err(ProxyError::Refused(response.status()));
    }
    let mut body = response.into_body();
    let mut decoder = FrameDecoder::new(MAX_CONFIG_FRAME_BYTES);
    let mut ends = FrameEnds::default();
    let mut versions = Vec::new();
    loop {
        // Every configuration in the frame just received, in order.
        let data = match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
            Some(Err(error)) => return Err(ProxyError::Broken(error)),
            None => return Err(ProxyError::Ended),
        };
        fleet
            .received_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        match fleet.decode {
            Decode::Head => ends.push(&data, &mut versions)?,
            Decode::Full => {
                decoder.push(&data);
                while let Some(message) = decoder.next_message().map_err(ProxyError::Frame)? {
                    let ControlMessage::Config(config) = message;
                    if config.workload != me.workload {
                        return Err(ProxyError::WrongWorkload(config.workload));
                    }
                    versions.push(config.version);
                }
            }
        }
        for version in versions.drain(..) {
            let at = Instant::now();
            let ack = ProxyMessage::Ack {
                version: version.clone(),
            };
            out.send_data(Bytes::from(encode(&ack)))
                .await
                .map_err(|_| ProxyError::Gone)?;
            let _ = fleet.events.send(Event::Arrival {
                proxy: me.index,
                version,
                at,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ends_survive_any_chunking() {
        let mut bytes = Vec::new();
        for version in ["0123456789abcdef", "fedcba9876543210"] {
            let config = skiff_api::ProxyConfig {
                version: version.into(),
                ..Default::default()
            };
            bytes.extend(encode(&ControlMessage::Config(config)));
        }
        for chunk in [1, 5, 64, bytes.len()] {
            let mut ends = FrameEnds::default();
            let mut versions = Vec::new();
            for piece in bytes.chunks(chunk) {
                ends.push(piece, &mut versions).unwrap();
            }
            assert_eq!(
                versions,
                ["0123456789abcdef", "fedcba9876543210"],
                "{chunk}"
            );
        }
        let mut ends = FrameEnds::default();
        assert!(ends.push(b"{\"nack\":{}}\n", &mut Vec::new()).is_err());
    }
}
