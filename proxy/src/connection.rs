//! One accepted connection once its destination is planned: settle the protocol (declared,
//! server-first, or detected), then serve it as HTTP or copy it as opaque TCP. A connection
//! from a peer sidecar arrives already decrypted, its protocol named by the mTLS ALPN.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use skiff_api::identity::{ALPN_HTTP1, ALPN_HTTP2, ALPN_TCP};
use skiff_api::traffic::DEFAULT_RETRY_ATTEMPTS;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::app::Proxy;
use crate::authz::Verdict;
use crate::detect::{self, Decision, Protocol, Rewind};
use crate::error::{Failure, NotForwarded};
use crate::http::client::{Dial, UpstreamStream};
use crate::http::forward::{Forwarder, Upstream};
use crate::idle::{Activity, Tracked};
use crate::metrics::ServiceMetrics;
use crate::policy::{Destination, EndpointSet};
use crate::resilience::destination::RetryReason;
use crate::resilience::outlier::Outcome;

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
        Protocol::Tcp => match tcp_route(&upstream) {
            Ok(TcpRoute::Service(endpoints)) => {
                copy_to_service(proxy, &mut stream, &endpoints, activity, metrics).await
            }
            Ok(TcpRoute::Local(destination)) => {
                copy_to(proxy, &mut stream, &destination, activity, metrics).await
            }
            Err(NotForwarded::Failed(failure)) => metrics.record_failure(failure),
            Err(NotForwarded::Denied(denial)) => metrics.record_denial(denial.label()),
        },
        Protocol::Http1 | Protocol::Http2 => {
            // Outbound, the service's TrafficPolicy decides how long an idle connection lives.
            let mut limits = proxy.settings.http.clone();
            if let Upstream::Service { target, .. } = &upstream {
                limits.idle_timeout = target.endpoints.state.config.idle_timeout;
            }
            let forwarder = Arc::new(Forwarder {
                upstream,
                protocol,
                upstreams: proxy.upstreams.clone(),
                metrics: metrics.clone(),
                activity: activity.clone(),
                drain: proxy.drain.clone(),
                in_flight: proxy.in_flight.clone(),
            });
            crate::http::server::serve(stream, protocol, forwarder, &limits, proxy.drain.clone())
                .await;
        }
    }
}

/// Where an opaque connection goes.
enum TcpRoute {
    /// A mesh service: the balancer picks the endpoint.
    Service(Arc<EndpointSet>),
    /// The local app, after the inbound policy allowed the connection (no HTTP request to
    /// look at: port and identity only).
    Local(Destination),
}

fn tcp_route(upstream: &Upstream) -> Result<TcpRoute, NotForwarded> {
    match upstream {
        Upstream::Service { target, .. } => Ok(TcpRoute::Service(target.endpoints.clone())),
        Upstream::Local {
            addr,
            snapshot,
            client,
        } => match snapshot
            .current()
            .authz
            .decide_connection(client.as_deref(), addr.port())
        {
            Verdict::Allow => Ok(TcpRoute::Local(Destination::plaintext(*addr))),
            Verdict::Deny(denial) => {
                tracing::debug!(%addr, client = ?client, reason = denial.reason(), "tcp connection denied");
                Err(NotForwarded::Denied(denial))
            }
        },
    }
}

/// Opaque TCP to a mesh service: an endpoint from the balancer, and another when the
/// connect fails (nothing was sent, so that is always safe) within the retry budget; then
/// bytes both ways until both sides close or the service's idle timeout passes.
async fn copy_to_service<S>(
    proxy: &Proxy,
    downstream: &mut Tracked<S>,
    endpoints: &EndpointSet,
    activity: &Activity,
    metrics: &ServiceMetrics,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let state = &endpoints.state;
    let mut rng = fastrand::Rng::new();
    let mut tried = Vec::new();
    let mut _retry_slot = None;
    state.budget.record_request(Instant::now());
    let attempts = 1 + state.config.retry.attempts.max(DEFAULT_RETRY_ATTEMPTS);
    let mut failure = Failure::NoHealthyEndpoint;
    for attempt in 1..=attempts {
        let started = Instant::now();
        if attempt > 1 {
            let slot = state.bulkhead.retries.try_acquire();
            if slot.is_none() || !state.budget.try_withdraw(started) {
                state.retries_refused.fetch_add(1, Ordering::Relaxed);
                break;
            }
            _retry_slot = slot;
            state.count_retry(RetryReason::NothingSent);
        }
        let Ok(permit) = state.breaker.try_acquire(started) else {
            failure = Failure::CircuitOpen;
            break;
        };
        let Some((destination, pick)) = endpoints.pick(&tried, started, &mut rng) else {
            break;
        };
        tried.push(destination.addr);
        let dial = Dial {
            connect_timeout: state.config.connect_timeout,
            connections: Some(&state.bulkhead.connections),
        };
        let connected = proxy.upstreams.connect(&destination, ALPN_TCP, dial).await;
        let now = Instant::now();
        match connected {
            Ok((upstream, _connection_slot)) => {
                pick.finish(Outcome::Success, now.duration_since(started), now);
                state.breaker.record(permit, true, now);
                let idle = state.config.idle_timeout;
                let ended = copy_both_ways(downstream, upstream, idle, activity).await;
                if let Some(failure) = ended {
                    metrics.record_failure(failure);
                }
                return;
            }
            Err(error) => {
                tracing::debug!(%error, attempt, "tcp upstream connect failed");
                failure = error.failure();
                if failure == Failure::Overflow {
                    break;
                }
                pick.finish(Outcome::GatewayFailure, now.duration_since(started), now);
                state.breaker.record(permit, false, now);
            }
        }
    }
    metrics.record_failure(failure);
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
    let dial = proxy.upstreams.local_dial();
    let ended = match proxy.upstreams.connect(destination, ALPN_TCP, dial).await {
        Ok((upstream, _)) => copy_both_ways(downstream, upstream, idle_timeout, activity).await,
        Err(error) => {
            tracing::debug!(%error, "tcp upstream connect failed");
            Some(error.failure())
        }
    };
    if let Some(failure) = ended {
        metrics.record_failure(failure);
    }
}

/// [`crate::tcp::copy`] to an upstream of either kind; [`Failure::IdleTimeout`] when the
/// connection was closed for idleness.
async fn copy_both_ways<S>(
    downstream: &mut Tracked<S>,
    upstream: UpstreamStream,
    idle_timeout: std::time::Duration,
    activity: &Activity,
) -> Option<Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match upstream {
        UpstreamStream::Plain(upstream) => {
            crate::tcp::copy(downstream, upstream, idle_timeout, activity).await
        }
        UpstreamStream::Mesh(upstream) => {
            crate::tcp::copy(downstream, upstream, idle_timeout, activity).await
        }
    }
}
