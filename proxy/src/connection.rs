//! One accepted connection once its destination is planned: settle the protocol (declared,
//! server-first, or detected), then serve it as HTTP or copy it as opaque TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::app::Proxy;
use crate::detect::{self, Decision, Protocol, Rewind};
use crate::error::Failure;
use crate::http::forward::{Forwarder, Upstream};
use crate::idle::{Activity, Tracked};
use crate::metrics::ServiceMetrics;

/// Serves `stream` to `upstream` according to `decision`, recording the connection in `metrics`.
pub async fn serve(
    proxy: &Proxy,
    stream: TcpStream,
    decision: Decision,
    upstream: Upstream,
    metrics: Arc<ServiceMetrics>,
) {
    metrics.tcp_opened();
    let activity = Activity::new();
    let mut stream = stream;
    let (protocol, prefix) = match decision {
        Decision::Declared(protocol) => (protocol, Bytes::new()),
        Decision::ServerFirst => (Protocol::Tcp, Bytes::new()),
        Decision::Detect => {
            match detect::detect(&mut stream, proxy.settings.detect_timeout).await {
                Ok(detected) => detected,
                Err(error) => {
                    tracing::debug!(%error, "connection failed during protocol detection");
                    metrics.tcp_closed(0, 0);
                    return;
                }
            }
        }
    };
    let mut stream = Tracked::new(Rewind::new(prefix, stream), activity.clone());
    match protocol {
        Protocol::Tcp => match tcp_endpoint(&upstream) {
            Ok(addr) => copy_to(proxy, &mut stream, addr, &activity, &metrics).await,
            Err(failure) => metrics.record_failure(failure),
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
    let (sent, received) = activity.bytes();
    metrics.tcp_closed(sent, received);
}

/// The endpoint an opaque connection goes to: one pick per connection.
fn tcp_endpoint(upstream: &Upstream) -> Result<SocketAddr, Failure> {
    match upstream {
        Upstream::Service { target, .. } => target.pick_endpoint().ok_or_else(|| {
            tracing::debug!(service = %target.name, "no ready endpoint for tcp connection");
            Failure::NoHealthyEndpoint
        }),
        Upstream::Local(addr) => Ok(*addr),
    }
}

/// Connects to `addr` and copies bytes both ways; a failed connect closes the downstream.
pub async fn copy_to<S>(
    proxy: &Proxy,
    downstream: &mut Tracked<S>,
    addr: SocketAddr,
    activity: &Activity,
    metrics: &ServiceMetrics,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match crate::tcp::connect(addr, proxy.settings.client.connect_timeout).await {
        Ok(upstream) => {
            crate::tcp::copy(
                downstream,
                upstream,
                proxy.settings.tcp_idle_timeout,
                activity,
            )
            .await
        }
        Err(error) => {
            tracing::debug!(%error, "tcp upstream connect failed");
            metrics.record_failure(error.failure());
        }
    }
}
