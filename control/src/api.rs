//! The proxy API on :15010: HTTP/2 over TLS 1.3 ([`crate::tls`]). Every accepted connection is
//! wrapped in TLS before [`serve_connection`]; a client certificate is optional, verified
//! against the trust bundle when presented, and its SPIFFE ID is what the requests on that
//! connection are from.
//!
//! - `POST /v1/certificate` ([`CERTIFICATE_PATH`]): a proxy sends a JSON [`CertificateRequest`]
//!   (its workload and a CSR) with `Authorization: Bearer <bootstrap token>`, or over a
//!   connection made with its current certificate when renewing; it gets a
//!   [`CertificateResponse`], or 401 (not authenticated), 403 (not that identity), 400 (a bad
//!   request or CSR) or 503 (no policy yet) with a one-line reason.
//! - `POST /v1/stream`: the configuration stream (protocol in [`skiff_api::stream`]). The
//!   connection's client certificate must carry the identity of the workload named in the
//!   Hello; otherwise the answer is 401 or 403 with the reason, before any configuration. Then
//!   each stream is one session task: send the proxy's view, then a new view whenever a
//!   published snapshot changes it, and record every ACK and NACK.
//! - `GET /v1/proxies` and `GET /v1/proxies/{namespace}/{name}/config[?pod_ip=IP]`: what
//!   `skiff proxy-status` and `skiff proxy-config` show ([`status_response`], also served on
//!   the admin port, which is where the CLI looks).

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Channel, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use skiff_api::config::WorkloadRef;
use skiff_api::identity::{CertificateRequest, CertificateResponse, SpiffeId, CERTIFICATE_PATH};
use skiff_api::stream::{
    FrameDecoder, FrameError, Hello, ProxyMessage, MAX_PROXY_FRAME_BYTES, STREAM_PATH,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::authenticator::{workload_identity, Credentials, Refusal};
use crate::ca::CsrError;
use crate::listener::accept_loop;
use crate::shutdown::ShutdownSignal;
use crate::store::{Snapshot, View};
use crate::tls::{self, ServingCertificate};
use crate::ControlPlane;

/// A proxy that opens a stream has this long to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A client has this long to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate request (a small JSON object around a CSR of a few hundred bytes) may not be
/// larger, nor take longer to arrive.
const MAX_CERTIFICATE_REQUEST_BYTES: usize = 64 * 1024;
const CERTIFICATE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Why a configuration stream was refused before it started: the status, and the `reason`
/// label of `skiff_control_stream_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRefusal {
    /// The connection has no client certificate (401).
    NoClientCertificate,
    /// Its client certificate is not the identity of the workload in the Hello (403).
    WrongIdentity,
}

impl StreamRefusal {
    pub const ALL: [StreamRefusal; 2] = [
        StreamRefusal::NoClientCertificate,
        StreamRefusal::WrongIdentity,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            StreamRefusal::NoClientCertificate => StatusCode::UNAUTHORIZED,
            StreamRefusal::WrongIdentity => StatusCode::FORBIDDEN,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            StreamRefusal::NoClientCertificate => "no-client-certificate",
            StreamRefusal::WrongIdentity => "wrong-identity",
        }
    }
}

/// Why a certificate was not issued, as one closed kind: it decides the status and the
/// `reason` label of `skiff_ca_certificate_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateRefusal {
    /// Not a valid request: not JSON of the right shape, too large, a malformed
    /// `Authorization` header (400).
    BadRequest,
    /// No policy yet, so no workload is known (503: try again).
    NoPolicy,
    /// No token and no client certificate (401).
    NoCredentials,
    /// A token for a workload the policy does not declare (401).
    UnknownWorkload,
    /// A token for a workload that has none (401).
    NoBootstrapToken,
    /// A token that is not the workload's (401).
    WrongToken,
    /// A client certificate of another identity (403).
    OtherIdentity,
    /// A CSR that cannot be parsed, whose signature does not verify, or whose key is not
    /// ECDSA P-256 (400).
    BadCsr,
    /// A CSR naming another identity (403).
    CsrIdentity,
    /// The workload's identity is the control plane's own, which proxies trust to configure
    /// them: never issued to a workload (403).
    ReservedIdentity,
    /// Signing failed (500).
    Internal,
}

impl CertificateRefusal {
    pub const ALL: [CertificateRefusal; 11] = [
        CertificateRefusal::BadRequest,
        CertificateRefusal::NoPolicy,
        CertificateRefusal::NoCredentials,
        CertificateRefusal::UnknownWorkload,
        CertificateRefusal::NoBootstrapToken,
        CertificateRefusal::WrongToken,
        CertificateRefusal::OtherIdentity,
        CertificateRefusal::BadCsr,
        CertificateRefusal::CsrIdentity,
        CertificateRefusal::ReservedIdentity,
        CertificateRefusal::Internal,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            CertificateRefusal::BadRequest | CertificateRefusal::BadCsr => StatusCode::BAD_REQUEST,
            CertificateRefusal::NoPolicy => StatusCode::SERVICE_UNAVAILABLE,
            CertificateRefusal::NoCredentials
            | CertificateRefusal::UnknownWorkload
            | CertificateRefusal::NoBootstrapToken
            | CertificateRefusal::WrongToken => StatusCode::UNAUTHORIZED,
            CertificateRefusal::OtherIdentity
            | CertificateRefusal::CsrIdentity
            | CertificateRefusal::ReservedIdentity => StatusCode::FORBIDDEN,
            CertificateRefusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CertificateRefusal::BadRequest => "bad-request",
            CertificateRefusal::NoPolicy => "no-policy",
            CertificateRefusal::NoCredentials => "no-credentials",
            CertificateRefusal::UnknownWorkload => "unknown-workload",
            CertificateRefusal::NoBootstrapToken => "no-bootstrap-token",
            CertificateRefusal::WrongToken => "wrong-token",
            CertificateRefusal::OtherIdentity => "other-identity",
            CertificateRefusal::BadCsr => "bad-csr",
            CertificateRefusal::CsrIdentity => "csr-identity",
            CertificateRefusal::ReservedIdentity => "reserved-identity",
            CertificateRefusal::Internal => "internal",
        }
    }
}

/// Why `POST /v1/certificate` did not issue a certificate.
#[derive(Debug, thiserror::Error)]
enum CertificateError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Refused(Refusal),
    #[error(transparent)]
    Csr(CsrError),
    #[error("{0} is the control plane's own identity; no workload may have it")]
    Reserved(SpiffeId),
}

impl CertificateError {
    fn kind(&self) -> CertificateRefusal {
        match self {
            CertificateError::BadRequest(_) => CertificateRefusal::BadRequest,
            CertificateError::Refused(refusal) => match refusal {
                Refusal::NoPolicy => CertificateRefusal::NoPolicy,
                Refusal::NoCredentials => CertificateRefusal::NoCredentials,
                Refusal::UnknownWorkload(_) => CertificateRefusal::UnknownWorkload,
                Refusal::NoBootstrapToken(_) => CertificateRefusal::NoBootstrapToken,
                Refusal::WrongToken(_) => CertificateRefusal::WrongToken,
                Refusal::OtherIdentity { .. } => CertificateRefusal::OtherIdentity,
            },
            CertificateError::Reserved(_) => CertificateRefusal::ReservedIdentity,
            CertificateError::Csr(CsrError::Identity { .. }) => CertificateRefusal::CsrIdentity,
            CertificateError::Csr(CsrError::Sign(_)) => CertificateRefusal::Internal,
            CertificateError::Csr(_) => CertificateRefusal::BadCsr,
        }
    }
}

/// Serves the API on `listener` until `shutdown`: issues the control plane's own certificate
/// (and keeps renewing it), then terminates TLS on every connection.
pub async fn serve(listener: TcpListener, control: Arc<ControlPlane>, shutdown: ShutdownSignal) {
    let certificate = match ServingCertificate::issue(
        &control.ca,
        control.identity(),
        tls::control_plane_dns_names(&control.namespace),
    ) {
        Ok(certificate) => Arc::new(certificate),
        Err(error) => {
            return tracing::error!(
                error = %crate::error_chain(&error),
                "cannot issue the API's certificate; the API is not served"
            )
        }
    };
    let config = match tls::server_config(control.ca.roots(), certificate.clone()) {
        Ok(config) => Arc::new(config),
        Err(error) => {
            return tracing::error!(%error, "cannot configure TLS; the API is not served");
        }
    };
    tokio::spawn(certificate.keep_fresh(
        control.ca.clone(),
        control.metrics.clone(),
        shutdown.clone(),
    ));
    let acceptor = TlsAcceptor::from(config);
    let signal = shutdown.clone();
    accept_loop(listener, "api", shutdown, move |stream, peer| {
        let span = tracing::debug_span!("api", %peer);
        let acceptor = acceptor.clone();
        let control = control.clone();
        let signal = signal.clone();
        async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    control.metrics.tls_handshake_failed();
                    return tracing::debug!(%error, "TLS handshake failed");
                }
                Err(_) => {
                    control.metrics.tls_handshake_failed();
                    return tracing::debug!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                }
            };
            let client = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                None => None,
                Some(leaf) => match tls::peer_identity(leaf) {
                    Ok(identity) => Some(identity),
                    Err(error) => {
                        tracing::debug!(%error, "the client certificate names no workload");
                        None
                    }
                },
            };
            serve_connection(tls, client, control, signal).await;
        }
        .instrument(span)
    })
    .await;
}

/// Serves one connection, already past its TLS handshake; `client` is the SPIFFE ID of its
/// verified client certificate.
pub async fn serve_connection<I>(
    io: I,
    client: Option<SpiffeId>,
    control: Arc<ControlPlane>,
    mut shutdown: ShutdownSignal,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = Arc::new(client);
    let service = {
        let shutdown = shutdown.clone();
        service_fn(move |request| {
            let control = control.clone();
            let shutdown = shutdown.clone();
            let client = client.clone();
            async move {
                let response = respond(request, client.as_ref().as_ref(), &control, shutdown).await;
                Ok::<_, Infallible>(response)
            }
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

async fn respond(
    request: Request<Incoming>,
    client: Option<&SpiffeId>,
    control: &Arc<ControlPlane>,
    shutdown: ShutdownSignal,
) -> Response<Body> {
    let path = request.uri().path();
    if path == STREAM_PATH || path == CERTIFICATE_PATH {
        if request.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n").map(BodyExt::boxed);
        }
        if path == CERTIFICATE_PATH {
            return certificate(request, client, control)
                .await
                .map(BodyExt::boxed);
        }
        return open_stream(request, client, control, shutdown).await;
    }
    // What every proxy runs (its authorization rules included) is for workloads of the mesh;
    // the admin port serves the same to operators.
    if client.is_none() {
        return text(
            StatusCode::UNAUTHORIZED,
            "a client certificate is required\n",
        )
        .map(BodyExt::boxed);
    }
    status_response(&control.proxies, &request)
        .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n"))
        .map(BodyExt::boxed)
}

/// `POST /v1/certificate`.
async fn certificate(
    request: Request<Incoming>,
    client: Option<&SpiffeId>,
    control: &ControlPlane,
) -> Response<Full<Bytes>> {
    let (workload, issued) = match issue_certificate(request, client, control).await {
        (workload, Ok(issued)) => (workload, issued),
        (workload, Err(error)) => {
            let kind = error.kind();
            control.metrics.certificate_refused(kind);
            tracing::info!(
                workload = workload.as_ref().map(tracing::field::display),
                client = client.map(tracing::field::display),
                reason = kind.label(),
                %error,
                "certificate refused"
            );
            // Who is unknown, tokenless or mistaken stays in the log: an unauthenticated
            // caller learns nothing about the workloads.
            let body = if kind.status() == StatusCode::UNAUTHORIZED {
                "unauthorized\n".to_string()
            } else {
                format!("{error}\n")
            };
            return text(kind.status(), body);
        }
    };
    control.metrics.certificate_issued();
    tracing::info!(
        workload = workload.as_ref().map(tracing::field::display),
        identity = %issued.identity,
        not_after = issued.not_after_unix,
        renewal = client.is_some(),
        "certificate issued"
    );
    json(&issued)
}

/// Authenticates and signs; the workload asked for, when the request got that far.
async fn issue_certificate(
    request: Request<Incoming>,
    client: Option<&SpiffeId>,
    control: &ControlPlane,
) -> (
    Option<WorkloadRef>,
    Result<CertificateResponse, CertificateError>,
) {
    let bearer = match bearer_token(request.headers()) {
        Ok(bearer) => bearer,
        Err(error) => return (None, Err(error)),
    };
    let body = Limited::new(request.into_body(), MAX_CERTIFICATE_REQUEST_BYTES);
    let body = match tokio::time::timeout(CERTIFICATE_REQUEST_TIMEOUT, body.collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(error)) => {
            let message = format!("cannot read the request body: {error}");
            return (None, Err(CertificateError::BadRequest(message)));
        }
        Err(_) => {
            let message =
                format!("the request body did not arrive within {CERTIFICATE_REQUEST_TIMEOUT:?}");
            return (None, Err(CertificateError::BadRequest(message)));
        }
    };
    let asked: CertificateRequest = match serde_json::from_slice(&body) {
        Ok(asked) => asked,
        Err(error) => {
            let message = format!("the body is not a certificate request: {error}");
            return (None, Err(CertificateError::BadRequest(message)));
        }
    };
    let credentials = Credentials {
        bearer: bearer.as_deref(),
        client,
    };
    let identity = match control
        .authenticator
        .authenticate(
            &control.store,
            control.ca.trust_domain(),
            &asked.workload,
            credentials,
        )
        .await
    {
        Ok(identity) if identity == control.identity() => {
            return (
                Some(asked.workload),
                Err(CertificateError::Reserved(identity)),
            )
        }
        Ok(identity) => identity,
        Err(refusal) => {
            return (
                Some(asked.workload),
                Err(CertificateError::Refused(refusal)),
            )
        }
    };
    let signed = control
        .ca
        .sign_csr(&asked.csr_pem, &identity)
        .map_err(CertificateError::Csr);
    (Some(asked.workload), signed)
}

/// The token of `Authorization: Bearer <token>`, if the header is there.
fn bearer_token(headers: &HeaderMap) -> Result<Option<String>, CertificateError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed =
        || CertificateError::BadRequest("the Authorization header is not `Bearer <token>`".into());
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token.to_string()))
}

/// `POST /v1/stream`: reads the Hello, checks the client certificate against the identity of
/// the workload it names, and starts the session; or refuses with the reason.
async fn open_stream(
    request: Request<Incoming>,
    client: Option<&SpiffeId>,
    control: &Arc<ControlPlane>,
    mut shutdown: ShutdownSignal,
) -> Response<Body> {
    let mut incoming = Frames::new(request.into_body());
    let refuse = |status: StatusCode, reason: String| {
        text(status, format!("{reason}\n")).map(BodyExt::boxed)
    };
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, incoming.next()).await {
        Ok(Ok(Some(ProxyMessage::Hello(hello)))) => hello,
        Ok(Ok(Some(_))) => {
            tracing::debug!(error = %SessionError::NoHello, "stream refused");
            return refuse(StatusCode::BAD_REQUEST, SessionError::NoHello.to_string());
        }
        Ok(Ok(None)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "the stream ended before a hello".into(),
            )
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "stream refused");
            return refuse(StatusCode::BAD_REQUEST, error.to_string());
        }
        Err(_) => {
            tracing::debug!(error = %SessionError::HelloTimeout, "stream refused");
            return refuse(
                StatusCode::BAD_REQUEST,
                SessionError::HelloTimeout.to_string(),
            );
        }
    };
    // The workload's identity comes from the policy: wait for a first one.
    let Some(snapshot) = first_snapshot(control, &mut shutdown).await else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    };
    let identity = workload_identity(&snapshot.policy, control.ca.trust_domain(), &hello.workload);
    drop(snapshot);
    let refusal = match client {
        None => Some((
            StreamRefusal::NoClientCertificate,
            format!(
                "a client certificate with the identity of {} ({identity}) is required",
                hello.workload
            ),
        )),
        Some(client) if *client != identity => Some((
            StreamRefusal::WrongIdentity,
            format!(
                "the client certificate is {client}, not {identity}, the identity of {}",
                hello.workload
            ),
        )),
        Some(_) => None,
    };
    if let Some((kind, reason)) = refusal {
        control.metrics.stream_refused(kind);
        tracing::info!(workload = %hello.workload, reason = kind.label(), "stream refused: {reason}");
        return refuse(kind.status(), reason);
    }
    let (sender, body) = Channel::new(1);
    let session = session(incoming, hello, sender, control.clone(), shutdown);
    tokio::spawn(session.in_current_span());
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// The snapshot in force, waiting for a first one; `None` on shutdown.
async fn first_snapshot(
    control: &ControlPlane,
    shutdown: &mut ShutdownSignal,
) -> Option<Arc<Snapshot>> {
    let mut snapshots = control.store.subscribe();
    tokio::select! {
        found = snapshots.wait_for(Option::is_some) => found.ok().and_then(|s| s.clone()),
        () = shutdown.requested() => None,
    }
}

/// One proxy's stream, from its Hello (already read and checked) to disconnect.
async fn session(
    mut incoming: Frames,
    hello: Hello,
    mut out: http_body_util::channel::Sender<Bytes>,
    control: Arc<ControlPlane>,
    mut shutdown: ShutdownSignal,
) {
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

#[cfg(test)]
mod tests;
