//! One accepted connection once its destination is planned: settle the protocol (declared,
//! server-first, or detected), then serve it as HTTP or copy it as opaque TCP. A connection
//! from a peer sidecar arrives already decrypted, its protocol named by the mTLS ALPN.

use std::sync::Arc;

use bytes::BytesMut;
use skiff_api::identity::{ALPN_HTTP1, ALPN_HTTP2, ALPN_TCP};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::app::Proxy;
use crate::authz::Verdict;
use crate::detect::{self, Decision, Protocol, Rewind};
use crate::error::{Failure, NotForwarded};
use crate::http::client::UpstreamStream;
use crate::http::forward::{Forwarder, Upstream};
use crate::idle::{Activity, Tracked};
use crate::metrics::ServiceMetrics;
use crate::policy::Destination;

/// Serves a plaintext `stream` to `upstream` according to `decision`, recording the
/// connection in `metrics`. `prefix` holds bytes already read from the stream (inbound reads
/// a little to tell a sidecar's TLS from plaintext); detection continues from them.
pub async fn serve(
    proxy: &Proxy,
    stream: TcpStream,
    prefix: BytesMut,
    decision: Decision,
    upstream: Upstream,
    metrics: Arc<ServiceMetrics>,
) {
    metrics.tcp_opened();
    let activity = Activity::new();
    let mut stream = stream;
    let (protocol, prefix) = match decision {
        Decision::Declared(protocol) => (protocol, prefix.freeze()),
        Decision::ServerFirst => (Protocol::Tcp, prefix.freeze()),
        Decision::Detect => {
            match detect::detect(&mut stream, prefix, proxy.settings.detect_timeout).await {
                Ok(detected) => detected,
                Err(error) => {
                    tracing::debug!(%error, "connection failed during protocol detection");
                    metrics.tcp_closed(0, 0);
                    return;
                }
            }
        }
    };
    let stream = Tracked::new(Rewind::new(prefix, stream), activity.clone());
    serve_protocol(proxy, stream, protocol, upstream, &activity, &metrics).await;
    let (sent, received) = activity.bytes();
    metrics.tcp_closed(sent, received);
}

/// Serves a connection from a peer sidecar, decrypted: the ALPN it negotiated says what it
/// carries (pooled HTTP/2, HTTP/1 for upgrades, or opaque TCP).
pub async fn serve_mesh<S>(
    proxy: &Proxy,
    stream: S,
    alpn: &[u8],
    upstream: Upstream,
    metrics: Arc<ServiceMetrics>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let protocol = match alpn {
        ALPN_HTTP2 => Protocol::Http2,
        ALPN_HTTP1 => Protocol::Http1,
        ALPN_TCP => Protocol::Tcp,
        other => {
            // The TLS server only offers these three, so this is a bug, not a peer's doing.
            tracing::error!(alpn = ?String::from_utf8_lossy(other), "unexpected mesh ALPN");
            return;
        }
    };
    metrics.tcp_opened();
    let activity = Activity::new();
    let stream = Tracked::new(stream, activity.clone());
    serve_protocol(proxy, stream, protocol, upstream, &activity, &metrics).await;
    let (sent, received) = activity.bytes();
    metrics.tcp_closed(sent, received);
}

async fn serve_protocol<S>(
    proxy: &Proxy,
    mut stream: Tracked<S>,
    protocol: Protocol,
    upstream: Upstream,
    activity: &Arc<Activity>,
    metrics: &Arc<ServiceMetrics>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Tcp => match tcp_destination(&upstream) {
            Ok(destination) => copy_to(proxy, &mut stream, &destination, activity, metrics).await,
            Err(NotForwarded::Failed(failure)) => metrics.record_failure(failure),
            Err(NotForwarded::Denied(denial)) => metrics.record_denial(denial.label()),
        },
        Protocol::Http1 | Protocol::Http2 => {
            let forwarder = Arc::new(Forwarder {
                upstream,
                protocol,
                upstreams: proxy.upstreams.clone(),
                metrics: metrics.clone(),
                activity: activity.clone(),
                drain: proxy.drain.clone(),
            });
            crate::http::server::serve(
                stream,
                protocol,
                forwarder,
                &proxy.settings.http,
                proxy.drain.clone(),
            )
            .await;
        }
    }
}

/// The endpoint an opaque connection goes to: one pick per connection. Inbound, the
/// connection is authorised first (no HTTP request to look at: port and identity only).
fn tcp_destination(upstream: &Upstream) -> Result<Destination, NotForwarded> {
    match upstream {
        Upstream::Service { target, .. } => target.pick_endpoint().ok_or_else(|| {
            tracing::debug!(service = %target.name, "no ready endpoint for tcp connection");
            NotForwarded::Failed(Failure::NoHealthyEndpoint)
        }),
        Upstream::Local {
            addr,
            snapshot,
            client,
        } => match snapshot
            .current()
            .authz
            .decide_connection(client.as_deref(), addr.port())
        {
            Verdict::Allow => Ok(Destination::plaintext(*addr)),
            Verdict::Deny(denial) => {
                tracing::debug!(%addr, client = ?client, reason = denial.reason(), "tcp connection denied");
                Err(NotForwarded::Denied(denial))
            }
        },
    }
}

/// Connects to `destination` (mTLS when it is a sidecar) and copies bytes both ways; a failed
/// connect closes the downstream.
pub async fn copy_to<S>(
    proxy: &Proxy,
    downstream: &mut Tracked<S>,
    destination: &Destination,
    activity: &Activity,
    metrics: &ServiceMetrics,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let idle_timeout = proxy.settings.tcp_idle_timeout;
    match proxy.upstreams.connect(destination, ALPN_TCP).await {
        Ok(UpstreamStream::Plain(upstream)) => {
            crate::tcp::copy(downstream, upstream, idle_timeout, activity).await
        }
        Ok(UpstreamStream::Mesh(upstream)) => {
            crate::tcp::copy(downstream, upstream, idle_timeout, activity).await
        }
        Err(error) => {
            tracing::debug!(%error, "tcp upstream connect failed");
            metrics.record_failure(error.failure());
        }
    }
}
