//! Upstream HTTP connections, pooled per endpoint: HTTP/1 connections are checked out for one
//! request at a time and checked back in when the response body ends; one HTTP/2 connection
//! per endpoint carries every request concurrently. An endpoint with an identity is a sidecar,
//! reached with mTLS (when this proxy has an identity) that must prove that identity.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use skiff_api::identity::{SpiffeId, ALPN_HTTP1, ALPN_HTTP2};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::replay::ReplayBody;
use crate::error::{classify_hyper, upstream_may_have_seen, ConnectError, Failure};
use crate::metrics::{Direction, Metrics};
use crate::policy::Destination;
use crate::resilience::bulkhead::{ConnectionLimit, ConnectionPermit};
use crate::tls::Identity;

/// Request body type sent upstream: the downstream body, streamed, and kept for a retry when
/// it is small enough.
type RequestBody = ReplayBody;

/// How to open a new connection for one destination: its connect timeout (TrafficPolicy
/// `connectTimeout`) and its connection bulkhead, when it has one.
#[derive(Clone, Copy)]
pub struct Dial<'a> {
    pub connect_timeout: Duration,
    pub connections: Option<&'a Arc<ConnectionLimit>>,
}

/// How upstream connections are made and kept.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Bound on the TCP handshake with an upstream (DESIGN.md §5 default: 1 s).
    pub connect_timeout: Duration,
    /// A pooled HTTP/1 connection unused for this long is closed rather than reused, well
    /// before typical server keep-alive timeouts would race with our reuse.
    pub idle_timeout: Duration,
    /// Idle HTTP/1 connections kept per endpoint; more are closed when checked in.
    pub max_idle_per_endpoint: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_idle_per_endpoint: 64,
        }
    }
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("upstream {addr} failed the exchange")]
    Exchange {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

impl SendError {
    pub fn failure(&self) -> Failure {
        match self {
            SendError::Connect(e) => e.failure(),
            SendError::Exchange { source, .. } => classify_hyper(source),
        }
    }

    /// The upstream cannot have seen the request: the connection was never made, or the
    /// stream was refused. Such a request is safe to send again, whatever its method.
    pub fn nothing_sent(&self) -> bool {
        match self {
            SendError::Connect(_) => true,
            SendError::Exchange { source, .. } => !upstream_may_have_seen(source),
        }
    }
}

struct IdleSender {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// What a pooled connection is for: an endpoint, and the identity it proved (mTLS) or `None`
/// (plaintext). A connection is only reused for the same pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    addr: SocketAddr,
    peer: Option<Arc<SpiffeId>>,
}

/// Every upstream connection of one proxy.
pub struct Upstreams {
    settings: ClientSettings,
    /// This proxy's certificate; `None` (local mode without a control plane): every upstream
    /// is plaintext.
    identity: Option<Arc<Identity>>,
    /// Counts failed mTLS handshakes with their reason.
    metrics: Arc<Metrics>,
    idle_http1: Mutex<HashMap<PoolKey, Vec<IdleSender>>>,
    http2: Mutex<HashMap<PoolKey, http2::SendRequest<RequestBody>>>,
}

/// An HTTP/1 connection on loan to one response; dropping it without [`Checkin::release`]
/// closes the connection.
pub struct Checkin {
    pool: Arc<Upstreams>,
    key: PoolKey,
    sender: http1::SendRequest<RequestBody>,
    /// The destination's connection slot, held while the connection serves a request; an
    /// idle pooled connection holds none, so it never starves other endpoints.
    _permit: Option<ConnectionPermit>,
}

impl Checkin {
    /// The response body ended cleanly: the connection may serve another request.
    pub fn release(self) {
        let Checkin {
            pool, key, sender, ..
        } = self;
        if sender.is_closed() {
            return;
        }
        let mut idle = pool.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.entry(key).or_default();
        if senders.len() < pool.settings.max_idle_per_endpoint {
            senders.push(IdleSender {
                sender,
                since: Instant::now(),
            });
        }
    }
}

impl Upstreams {
    pub fn new(
        settings: ClientSettings,
        identity: Option<Arc<Identity>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Upstreams {
            settings,
            identity,
            metrics,
            idle_http1: Mutex::default(),
            http2: Mutex::default(),
        })
    }

    /// How to reach the local app (inbound): the proxy-wide connect timeout, no bulkhead.
    pub fn local_dial(&self) -> Dial<'static> {
        Dial {
            connect_timeout: self.settings.connect_timeout,
            connections: None,
        }
    }

    /// Forgets pooled connections to endpoints `keep` rejects (they left the configuration).
    /// A dropped HTTP/2 connection finishes its streams in flight and then closes (GOAWAY), so
    /// long-lived clients move to the endpoints that remain.
    pub fn retain(&self, keep: impl Fn(SocketAddr) -> bool) {
        self.http2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, sender| keep(key.addr) && !sender.is_closed());
        self.idle_http1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, _| keep(key.addr));
    }

    /// Whether requests to `destination` travel over mTLS between sidecars.
    pub fn is_mesh(&self, destination: &Destination) -> bool {
        self.identity.is_some() && destination.identity.is_some()
    }

    fn key(&self, destination: &Destination) -> PoolKey {
        PoolKey {
            addr: destination.addr,
            peer: self
                .identity
                .as_ref()
                .and(destination.identity.as_ref())
                .cloned(),
        }
    }

    /// Sends an HTTP/1 request to `destination` on a pooled connection. A pooled connection
    /// that turns out to be closed before the request was written is replaced transparently:
    /// the upstream cannot have seen the request, so this is always safe.
    pub async fn send_http1(
        self: &Arc<Self>,
        destination: &Destination,
        mut request: http::Request<RequestBody>,
        dial: Dial<'_>,
    ) -> Result<(http::Response<Incoming>, Checkin), SendError> {
        let key = self.key(destination);
        let addr = key.addr;
        let permit = connection_slot(dial, addr).await?;
        let fresh = Dial {
            connections: None,
            ..dial
        };
        loop {
            let (mut sender, reused) = match self.checkout_http1(&key) {
                Some(sender) => (sender, true),
                // Boxed, here and for HTTP/2: the (mTLS) connect future is kilobytes, and
                // every request's future would otherwise carry (and copy) it.
                None => (Box::pin(self.connect_http1(&key, fresh)).await?, false),
            };
            if sender.ready().await.is_err() && reused {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok((
                        response,
                        Checkin {
                            pool: self.clone(),
                            key,
                            sender,
                            _permit: permit,
                        },
                    ))
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => {
                        return Err(SendError::Exchange {
                            addr,
                            source: error.into_error(),
                        })
                    }
                },
            }
        }
    }

    /// Sends a request on the shared HTTP/2 connection to `destination`, opening it if
    /// needed. A pooled connection found unusable is replaced once; HTTP/2 takes no
    /// connection slot (one connection per endpoint; its bulkhead is requests in flight).
    pub async fn send_http2(
        self: &Arc<Self>,
        destination: &Destination,
        mut request: http::Request<RequestBody>,
        dial: Dial<'_>,
    ) -> Result<http::Response<Incoming>, SendError> {
        let key = self.key(destination);
        let addr = key.addr;
        let existing = {
            let connections = self.http2.lock().unwrap_or_else(|p| p.into_inner());
            connections.get(&key).filter(|s| !s.is_closed()).cloned()
        };
        let dial = Dial {
            connections: None,
            ..dial
        };
        let (mut sender, mut reused) = match existing {
            Some(sender) => (sender, true),
            None => (Box::pin(self.connect_http2(&key, dial)).await?, false),
        };
        loop {
            let sent = match sender.ready().await {
                Ok(()) => sender.try_send_request(request).await,
                Err(source) if reused => {
                    tracing::debug!(%addr, %source, "pooled http/2 connection unusable, reconnecting");
                    sender = Box::pin(self.connect_http2(&key, dial)).await?;
                    reused = false;
                    continue;
                }
                Err(source) => return Err(SendError::Exchange { addr, source }),
            };
            match sent {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => {
                        request = unsent;
                        sender = Box::pin(self.connect_http2(&key, dial)).await?;
                        reused = false;
                    }
                    _ => {
                        return Err(SendError::Exchange {
                            addr,
                            source: error.into_error(),
                        })
                    }
                },
            }
        }
    }

    fn checkout_http1(&self, key: &PoolKey) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.get_mut(key)?;
        while let Some(idle) = senders.pop() {
            if !idle.sender.is_closed() && idle.since.elapsed() < self.settings.idle_timeout {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Opens a TCP connection to `destination` and, when it is a sidecar and this proxy has
    /// an identity, the mTLS session offering `alpn`, checked against the endpoint's identity.
    pub async fn connect(
        &self,
        destination: &Destination,
        alpn: &'static [u8],
        dial: Dial<'_>,
    ) -> Result<(UpstreamStream, Option<ConnectionPermit>), ConnectError> {
        let addr = destination.addr;
        let permit = connection_slot(dial, addr).await?;
        let timeout = dial.connect_timeout;
        let stream = crate::tcp::connect(addr, timeout).await?;
        let (Some(identity), Some(expected)) = (&self.identity, &destination.identity) else {
            return Ok((UpstreamStream::Plain(stream), permit));
        };
        let handshake = crate::tls::connect(identity, stream, alpn, expected);
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(tls)) => Ok((UpstreamStream::Mesh(Box::new(tls)), permit)),
            Ok(Err(source)) => {
                self.metrics
                    .record_handshake_failure(Direction::Outbound, source.reason());
                Err(ConnectError::Tls { addr, source })
            }
            Err(_) => {
                self.metrics
                    .record_handshake_failure(Direction::Outbound, "timeout");
                Err(ConnectError::TlsTimedOut { addr, timeout })
            }
        }
    }

    async fn connect_http1(
        &self,
        key: &PoolKey,
        dial: Dial<'_>,
    ) -> Result<http1::SendRequest<RequestBody>, ConnectError> {
        let destination = Destination {
            addr: key.addr,
            identity: key.peer.clone(),
        };
        match self.connect(&destination, ALPN_HTTP1, dial).await? {
            (UpstreamStream::Plain(stream), _) => handshake_http1(stream, key.addr).await,
            (UpstreamStream::Mesh(tls), _) => handshake_http1(tls, key.addr).await,
        }
    }

    async fn connect_http2(
        &self,
        key: &PoolKey,
        dial: Dial<'_>,
    ) -> Result<http2::SendRequest<RequestBody>, ConnectError> {
        let destination = Destination {
            addr: key.addr,
            identity: key.peer.clone(),
        };
        let sender = match self.connect(&destination, ALPN_HTTP2, dial).await? {
            (UpstreamStream::Plain(stream), _) => handshake_http2(stream, key.addr).await?,
            (UpstreamStream::Mesh(tls), _) => handshake_http2(tls, key.addr).await?,
        };
        self.http2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), sender.clone());
        Ok(sender)
    }
}

/// A slot of the destination's connection bulkhead, waited for at most the connect timeout
/// (a request waiting longer is refused with `overflow`, as one over the pending limit is).
async fn connection_slot(
    dial: Dial<'_>,
    addr: SocketAddr,
) -> Result<Option<ConnectionPermit>, ConnectError> {
    let Some(limit) = dial.connections else {
        return Ok(None);
    };
    match tokio::time::timeout(dial.connect_timeout, limit.acquire()).await {
        Ok(Ok(permit)) => Ok(Some(permit)),
        Ok(Err(_)) | Err(_) => Err(ConnectError::Overflow { addr }),
    }
}

/// An upstream connection: plaintext, or mTLS to a peer sidecar.
pub enum UpstreamStream {
    Plain(TcpStream),
    Mesh(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn handshake_http1<IO>(
    io: IO,
    addr: SocketAddr,
) -> Result<http1::SendRequest<RequestBody>, ConnectError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%addr, %error, "upstream http/1 connection ended");
        }
    });
    Ok(sender)
}

async fn handshake_http2<IO>(
    io: IO,
    addr: SocketAddr,
) -> Result<http2::SendRequest<RequestBody>, ConnectError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%addr, %error, "upstream http/2 connection ended");
        }
    });
    Ok(sender)
}
