//! The downstream side of an HTTP connection: hyper configured with the limits a sidecar
//! facing untrusted clients needs, and shut down gracefully on drain or when idle.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::forward::Forwarder;
use crate::detect::Protocol;
use crate::drain::DrainSignal;
use crate::idle::Activity;

/// Protective limits on downstream HTTP connections.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// A client must send a complete request head within this time (slowloris defence).
    pub header_read_timeout: Duration,
    /// Largest HTTP/1 request head (request line + headers) and HTTP/2 header list, in bytes.
    /// hyper's HTTP/1 default header count limit (100) applies as well.
    pub max_header_bytes: usize,
    /// HTTP/2 streams one client may have open at once.
    pub max_concurrent_streams: u32,
    /// HTTP/2 streams a client may open and reset before we accept them (CVE-2023-44487,
    /// "rapid reset").
    pub max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams we may reset because of client protocol errors before the connection is
    /// closed (the "MadeYouReset" attack, CVE-2025-8671).
    pub max_local_error_reset_streams: usize,
    /// A connection with no request in flight and no bytes moving is closed after this.
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_concurrent_streams: 1024,
            max_pending_accept_reset_streams: 50,
            max_local_error_reset_streams: 1024,
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Serves one downstream HTTP connection until it closes, the drain finishes it, or it idles.
/// `io` should be tracked by the forwarder's activity, which decides idleness.
pub async fn serve<I>(
    io: I,
    protocol: Protocol,
    forwarder: Arc<Forwarder>,
    limits: &HttpLimits,
    drain: DrainSignal,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = forwarder.activity.clone();
    let io = TokioIo::new(io);
    match protocol {
        Protocol::Http2 => {
            // Boxed: hyper spawns the service future as a task per HTTP/2 stream, moving it
            // into the task; the forwarding future is a few KiB, a box is one pointer. (HTTP/1
            // polls the future in place, where the box would only add an allocation.)
            let service = service_fn(move |request| {
                let forwarder = forwarder.clone();
                async move { Ok::<_, Infallible>(Box::pin(forwarder.forward(request)).await) }
            });
            let connection = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.max_concurrent_streams)
                .max_header_list_size(limits.max_header_bytes as u32)
                .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
                .max_local_error_reset_streams(limits.max_local_error_reset_streams)
                .keep_alive_interval(Duration::from_secs(60))
                .keep_alive_timeout(Duration::from_secs(20))
                .serve_connection(io, service);
            drive(connection, Some(drain), &activity, limits.idle_timeout).await;
        }
        Protocol::Http1 | Protocol::Tcp => {
            // A connection accepted while draining serves one request without keep-alive.
            // It must not also be shut down gracefully: hyper would close it before reading
            // the request the client has already sent.
            let late = drain.is_draining();
            let service = service_fn(move |request| {
                let forwarder = forwarder.clone();
                async move { Ok::<_, Infallible>(forwarder.forward(request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes)
                .keep_alive(!late)
                .serve_connection(io, service)
                .with_upgrades();
            drive(
                connection,
                (!late).then_some(drain),
                &activity,
                limits.idle_timeout,
            )
            .await;
        }
    }
}

/// Runs a connection to completion; on drain (when `drain` is given) or idleness asks it to
/// finish gracefully (HTTP/1: close after the response in flight; HTTP/2: GOAWAY) and waits.
async fn drive<C>(
    connection: C,
    drain: Option<DrainSignal>,
    activity: &Activity,
    idle_timeout: Duration,
) where
    C: Graceful,
{
    let mut connection = std::pin::pin!(connection);
    let drain_started = async move {
        match drain {
            Some(mut drain) => drain.started().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = drain_started => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = activity.idle_for(idle_timeout) => {
            tracing::debug!(?idle_timeout, "http connection idle, closing");
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "http connection ended with an error");
    }
}

/// A hyper server connection that can be asked to finish gracefully; implemented for the two
/// connection types [`serve`] drives.
trait Graceful: std::future::Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

impl<I, S, B, E> Graceful for http2::Connection<I, S, E>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self)
    }
}
