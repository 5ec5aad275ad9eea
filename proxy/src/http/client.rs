//! Upstream HTTP connections, pooled per endpoint: HTTP/1 connections are checked out for one
//! request at a time and checked back in when the response body ends; one HTTP/2 connection
//! per endpoint carries every request concurrently.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use crate::error::{classify_hyper, ConnectError, Failure};

/// Request body type sent upstream: the downstream body, streamed.
type RequestBody = Incoming;

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
}

struct IdleSender {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// Every upstream connection of one proxy.
pub struct Upstreams {
    settings: ClientSettings,
    idle_http1: Mutex<HashMap<SocketAddr, Vec<IdleSender>>>,
    http2: Mutex<HashMap<SocketAddr, http2::SendRequest<RequestBody>>>,
}

/// An HTTP/1 connection on loan to one response; dropping it without [`Checkin::release`]
/// closes the connection.
pub struct Checkin {
    pool: Arc<Upstreams>,
    addr: SocketAddr,
    sender: http1::SendRequest<RequestBody>,
}

impl Checkin {
    /// The response body ended cleanly: the connection may serve another request.
    pub fn release(self) {
        let Checkin { pool, addr, sender } = self;
        if sender.is_closed() {
            return;
        }
        let mut idle = pool.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.entry(addr).or_default();
        if senders.len() < pool.settings.max_idle_per_endpoint {
            senders.push(IdleSender {
                sender,
                since: Instant::now(),
            });
        }
    }
}

impl Upstreams {
    pub fn new(settings: ClientSettings) -> Arc<Self> {
        Arc::new(Upstreams {
            settings,
            idle_http1: Mutex::default(),
            http2: Mutex::default(),
        })
    }

    /// Sends an HTTP/1 request to `addr` on a pooled connection. A pooled connection that
    /// turns out to be closed before the request was written is replaced transparently: the
    /// upstream cannot have seen the request, so this is always safe.
    pub async fn send_http1(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut request: http::Request<RequestBody>,
    ) -> Result<(http::Response<Incoming>, Checkin), SendError> {
        loop {
            let (mut sender, reused) = match self.checkout_http1(addr) {
                Some(sender) => (sender, true),
                None => (self.connect_http1(addr).await?, false),
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
                            addr,
                            sender,
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

    /// Sends a request on the shared HTTP/2 connection to `addr`, opening it if needed.
    pub async fn send_http2(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut request: http::Request<RequestBody>,
    ) -> Result<http::Response<Incoming>, SendError> {
        let existing = {
            let connections = self.http2.lock().unwrap_or_else(|p| p.into_inner());
            connections.get(&addr).filter(|s| !s.is_closed()).cloned()
        };
        let (mut sender, reused) = match existing {
            Some(sender) => (sender, true),
            None => (self.connect_http2(addr).await?, false),
        };
        loop {
            let sent = match sender.ready().await {
                Ok(()) => sender.try_send_request(request).await,
                Err(source) if reused => {
                    tracing::debug!(%addr, %source, "pooled http/2 connection unusable, reconnecting");
                    sender = self.connect_http2(addr).await?;
                    continue;
                }
                Err(source) => return Err(SendError::Exchange { addr, source }),
            };
            match sent {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => {
                        request = unsent;
                        sender = self.connect_http2(addr).await?;
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

    fn checkout_http1(&self, addr: SocketAddr) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.get_mut(&addr)?;
        while let Some(idle) = senders.pop() {
            if !idle.sender.is_closed() && idle.since.elapsed() < self.settings.idle_timeout {
                return Some(idle.sender);
            }
        }
        None
    }

    async fn connect_http1(
        &self,
        addr: SocketAddr,
    ) -> Result<http1::SendRequest<RequestBody>, ConnectError> {
        let stream = crate::tcp::connect(addr, self.settings.connect_timeout).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%addr, %error, "upstream http/1 connection ended");
            }
        });
        Ok(sender)
    }

    async fn connect_http2(
        &self,
        addr: SocketAddr,
    ) -> Result<http2::SendRequest<RequestBody>, ConnectError> {
        let stream = crate::tcp::connect(addr, self.settings.connect_timeout).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%addr, %error, "upstream http/2 connection ended");
            }
        });
        self.http2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, sender.clone());
        Ok(sender)
    }
}
