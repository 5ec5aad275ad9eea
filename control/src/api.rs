//! The proxy API on :15010: HTTP/2, plaintext (h2c) until the mTLS issue wraps each accepted
//! stream in TLS before [`serve_connection`].
//!
//! - `POST /v1/stream`: the configuration stream (protocol in [`skiff_api::stream`]). Each
//!   stream is one session task: read the Hello, send the proxy's view, then send a new view
//!   whenever a published snapshot changes it, and record every ACK and NACK.
//! - `GET /v1/proxies` and `GET /v1/proxies/{namespace}/{name}/config[?pod_ip=IP]`: what
//!   `skiff proxy-status` and `skiff proxy-config` show ([`status_response`], also served on
//!   the admin port, which is where the CLI looks).

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Channel, Full};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use skiff_api::config::WorkloadRef;
use skiff_api::stream::{
    FrameDecoder, FrameError, ProxyMessage, MAX_PROXY_FRAME_BYTES, STREAM_PATH,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::listener::accept_loop;
use crate::shutdown::ShutdownSignal;
use crate::store::View;
use crate::ControlPlane;

/// A proxy that opens a stream has this long to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection whose peer stops answering pings is closed, ending its session.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

type Body = BoxBody<Bytes, Infallible>;

/// Why a stream session ended early; logged at debug (a proxy going away is routine).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("no hello within {HELLO_TIMEOUT:?}")]
    HelloTimeout,
    #[error("the stream must open with a hello")]
    NoHello,
    #[error("hello sent twice")]
    SecondHello,
    #[error("cannot read the stream")]
    Read(#[source] hyper::Error),
    #[error("invalid frame")]
    Frame(#[source] FrameError),
    #[error("stream cut in the middle of a frame")]
    Truncated,
    #[error("the proxy stopped reading")]
    Gone,
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, control: Arc<ControlPlane>, shutdown: ShutdownSignal) {
    let signal = shutdown.clone();
    accept_loop(listener, "api", shutdown, move |stream, peer| {
        let span = tracing::debug_span!("api", %peer);
        serve_connection(stream, control.clone(), signal.clone()).instrument(span)
    })
    .await;
}

/// Serves one connection; `io` is a TCP stream today and a TLS stream once mTLS arrives.
pub async fn serve_connection<I>(io: I, control: Arc<ControlPlane>, mut shutdown: ShutdownSignal)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let shutdown = shutdown.clone();
        service_fn(move |request| {
            let response = respond(request, &control, &shutdown);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .max_concurrent_streams(16)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = shutdown.requested() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%error, "api connection ended with an error");
    }
}

fn respond(
    request: Request<Incoming>,
    control: &Arc<ControlPlane>,
    shutdown: &ShutdownSignal,
) -> Response<Body> {
    if request.uri().path() == STREAM_PATH {
        if request.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n").map(BodyExt::boxed);
        }
        let (sender, body) = Channel::new(1);
        let session = session(
            request.into_body(),
            sender,
            control.clone(),
            shutdown.clone(),
        );
        tokio::spawn(session.in_current_span());
        let mut response = Response::new(body.boxed());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-ndjson"),
        );
        return response;
    }
    status_response(&control.proxies, &request)
        .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n"))
        .map(BodyExt::boxed)
}

/// One proxy's stream, from Hello to disconnect.
async fn session(
    body: Incoming,
    mut out: http_body_util::channel::Sender<Bytes>,
    control: Arc<ControlPlane>,
    mut shutdown: ShutdownSignal,
) {
    let mut incoming = Frames::new(body);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, incoming.next()).await {
        Ok(Ok(Some(ProxyMessage::Hello(hello)))) => hello,
        Ok(Ok(Some(_))) => return tracing::debug!(error = %SessionError::NoHello, "stream refused"),
        Ok(Ok(None)) => return,
        Ok(Err(error)) => return tracing::debug!(%error, "stream refused"),
        Err(_) => return tracing::debug!(error = %SessionError::HelloTimeout, "stream refused"),
    };
    let span = tracing::info_span!("proxy", workload = %hello.workload, pod_ips = ?hello.pod_ips);
    let registration = control.proxies.register(&hello);
    async move {
        tracing::info!(proxy_version = %hello.proxy_version, last_applied = ?hello.last_applied, "proxy connected");
        let mut snapshots = control.store.subscribe();
        let mut sent: Option<Arc<View>> = None;
        let ended: Result<(), SessionError> = loop {
            let latest = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = latest {
                let view = snapshot.view(&hello.workload, &hello.pod_ips);
                if sent.as_deref().map(View::version) != Some(view.version()) {
                    tokio::select! {
                        delivered = send_view(&mut out, &view) => {
                            if delivered.is_err() {
                                break Err(SessionError::Gone);
                            }
                        }
                        () = shutdown.requested() => break Ok(()),
                    }
                    control.metrics.pushed();
                    registration.sent(view.clone());
                    tracing::debug!(version = view.version(), snapshot = snapshot.version, "configuration sent");
                    sent = Some(view);
                }
            }
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { break Ok(()) },
                message = incoming.next() => match message {
                    Ok(Some(ProxyMessage::Ack { version })) => {
                        tracing::debug!(%version, "ack");
                        control.metrics.acked();
                        registration.acked(version);
                    }
                    Ok(Some(ProxyMessage::Nack { version, reason })) => {
                        tracing::warn!(%version, %reason, "the proxy refused its configuration");
                        control.metrics.nacked();
                        registration.nacked(version, reason);
                    }
                    Ok(Some(ProxyMessage::Hello(_))) => break Err(SessionError::SecondHello),
                    Ok(None) => break Ok(()),
                    Err(error) => break Err(error),
                },
                () = shutdown.requested() => break Ok(()),
            }
        };
        match ended {
            Ok(()) => tracing::info!("proxy disconnected"),
            Err(error) => tracing::info!(%error, "proxy disconnected"),
        }
        drop(registration);
    }
    .instrument(span)
    .await;
}

/// Sends the frame of `view`; its parts are shared with other sessions, never copied.
async fn send_view(
    out: &mut http_body_util::channel::Sender<Bytes>,
    view: &View,
) -> Result<(), SessionError> {
    for chunk in view.chunks() {
        out.send_data(chunk.clone())
            .await
            .map_err(|_| SessionError::Gone)?;
    }
    Ok(())
}

/// Messages read from a proxy's request body.
struct Frames {
    body: Incoming,
    decoder: FrameDecoder,
}

impl Frames {
    fn new(body: Incoming) -> Self {
        Frames {
            body,
            decoder: FrameDecoder::new(MAX_PROXY_FRAME_BYTES),
        }
    }

    /// The next message; `None` when the proxy ended the stream. Cancel-safe.
    async fn next(&mut self) -> Result<Option<ProxyMessage>, SessionError> {
        loop {
            if let Some(message) = self.decoder.next_message().map_err(SessionError::Frame)? {
                return Ok(Some(message));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.decoder.push(data);
                    }
                }
                Some(Err(error)) => return Err(SessionError::Read(error)),
                None if self.decoder.pending() > 0 => return Err(SessionError::Truncated),
                None => return Ok(None),
            }
        }
    }
}

/// Answers the status endpoints; `None` for any other request.
pub fn status_response<B>(
    proxies: &crate::proxies::Proxies,
    request: &Request<B>,
) -> Option<Response<Full<Bytes>>> {
    if request.method() != Method::GET {
        return None;
    }
    let path = request.uri().path();
    if path == "/v1/proxies" {
        return Some(json(&proxies.list()));
    }
    let rest = path.strip_prefix("/v1/proxies/")?.strip_suffix("/config")?;
    let (namespace, name) = rest.split_once('/')?;
    let workload = WorkloadRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let pod_ip = match query_value(request.uri().query(), "pod_ip") {
        None => None,
        Some(value) => match value
            .replace("%3A", ":")
            .replace("%3a", ":")
            .parse::<IpAddr>()
        {
            Ok(ip) => Some(ip),
            Err(_) => {
                return Some(text(
                    StatusCode::BAD_REQUEST,
                    format!("pod_ip: {value:?} is not an IP address\n"),
                ))
            }
        },
    };
    Some(match proxies.sent_view(&workload, pod_ip) {
        Some(view) => json(&view.config()),
        None => text(
            StatusCode::NOT_FOUND,
            format!("no connected proxy of {workload} has been sent a configuration\n"),
        ),
    })
}

fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == key).then_some(v))
}

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialise: {error}\n"),
        ),
    }
}
