//! One request, start to finish: route it, apply the route's rate limit, faults and header
//! changes, make the call (`call.rs`: attempts, retries, hedging) under the request timeout,
//! send each attempt on a pooled connection with clean headers, and stream the response back
//! (or answer with the reason it failed, after draining what the client still sends).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{header, uri, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use skiff_api::identity::{SpiffeId, ORIGINAL_PROTOCOL_HEADER};
use tokio::time::Instant;

use skiff_api::traffic::Fault;

use super::call::{AttemptError, Plan};
use super::client::{Dial, Upstreams};
use super::headers::{is_upgrade, strip_hop_by_hop};
use super::replay::{ReplayBody, Replayable};
use super::{denied_response, failure_response, ResponseBody};
use crate::authz::Verdict;
use crate::detect::Protocol;
use crate::drain::DrainSignal;
use crate::error::{Failure, NotForwarded};
use crate::idle::Activity;
use crate::metrics::ServiceMetrics;
use crate::policy::{Destination, ServiceTarget, Snapshot, SnapshotHandle};
use crate::resilience::bulkhead::Limit;
use crate::route::modify_headers;

/// Where a connection's requests go.
pub enum Upstream {
    /// Outbound to the mesh service at `vip`: every request is routed (route, backend,
    /// endpoint) with the service as the current snapshot has it, so a route or endpoint change
    /// applies to connections already open, as it does in Envoy; `target`, the service as the
    /// connection found it, serves if the service has since left the snapshot.
    Service {
        /// The VIP and port the app dialled: the service's key in every snapshot.
        vip: SocketAddr,
        target: Arc<ServiceTarget>,
        snapshot: Arc<SnapshotHandle>,
    },
    /// Inbound to the local app, on the pod address and the port the client dialled. Every
    /// request is authorised first with the current snapshot's inbound policy.
    Local {
        addr: SocketAddr,
        snapshot: Arc<SnapshotHandle>,
        /// The calling sidecar's identity from its certificate; `None` for plaintext.
        client: Option<Arc<SpiffeId>>,
    },
}

/// Forwards the requests of one downstream connection.
pub struct Forwarder {
    pub upstream: Upstream,
    /// The HTTP version spoken to the upstream; the same as the downstream's, so h2c and gRPC
    /// stay HTTP/2 end to end. Between sidecars HTTP/1 rides HTTP/2 (marked with
    /// `x-skiff-orig-proto`), and the inbound side turns it back into HTTP/1 for the app.
    pub protocol: Protocol,
    pub upstreams: Arc<Upstreams>,
    /// Resolved once per connection so a request only touches atomics.
    pub metrics: Arc<ServiceMetrics>,
    /// Marks requests in flight so the connection's idle timer waits for slow upstreams.
    pub activity: Arc<Activity>,
    /// An upgraded connection (WebSocket) outlives its HTTP exchange and must hold off the
    /// drain on its own.
    pub drain: DrainSignal,
    /// The proxy-wide cap on requests in flight (load shedding).
    pub in_flight: Arc<Limit>,
}

/// What a proxy-made answer reads of a request body no attempt read, so that the client's
/// HTTP/1 connection can carry its next request: a client that sends more, or more slowly,
/// gets `Connection: close` instead.
const DRAIN_LIMIT: usize = 256 * 1024;
const DRAIN_TIME: Duration = Duration::from_millis(500);

/// Reads and discards `body` within [`DRAIN_LIMIT`] and [`DRAIN_TIME`]; whether it ended.
async fn drain(mut body: Incoming) -> bool {
    use http_body_util::BodyExt;
    let read = async {
        let mut read = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > DRAIN_LIMIT {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read)
        .await
        .unwrap_or(false)
}

/// Fault injection: delays and/or aborts a share of requests before they are sent.
async fn inject(fault: &Fault, rng: &mut fastrand::Rng) -> Result<(), Failure> {
    if let Some(delay) = fault.delay {
        if rng.u32(0..100_000) < delay.per_100k {
            tokio::time::sleep(delay.delay).await;
        }
    }
    match fault.abort {
        Some(abort) if rng.u32(0..100_000) < abort.per_100k => {
            Err(Failure::FaultAbort(abort.status))
        }
        _ => Ok(()),
    }
}

impl Forwarder {
    /// Answers one request. Never fails: a failure becomes a response with `x-skiff-error`.
    pub async fn forward(&self, mut request: Request<Incoming>) -> Response<ResponseBody> {
        let started = Instant::now();
        let _in_flight = self.activity.request();
        let http1 = request.version() <= Version::HTTP_11;
        let upgrade =
            (http1 && is_upgrade(request.headers())).then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        // Held here, not by the attempts, so that what no attempt read can be drained below.
        let body = Replayable::new(body, 0);
        // Beyond the proxy's cap a request is refused at once rather than queued behind the
        // others: a fast 503 lets the caller go elsewhere.
        let result = match self.in_flight.try_acquire() {
            // Boxed: hyper keeps room for this future in every connection, idle or not, and
            // the call path (retries, hedging, pooled sends) is kilobytes large.
            Some(admitted) => Box::pin(self.route_and_forward(parts, &body, upgrade))
                .await
                .map(|mut response| {
                    response.body_mut().hold(admitted);
                    response
                }),
            None => Err(Failure::Overloaded.into()),
        };
        let mut response = match result {
            Ok(response) => response,
            Err(NotForwarded::Failed(failure)) => {
                self.metrics.record_failure(failure);
                failure_response(failure)
            }
            Err(NotForwarded::Denied(denial)) => {
                self.metrics.record_failure(Failure::Denied);
                self.metrics.record_denial(denial.label());
                denied_response(denial.reason())
            }
        };
        // HTTP/2 ends an unread stream on its own; HTTP/1 would read the rest as the next
        // request, so hyper closes the connection, abruptly, unless the body is drained.
        if let Some(unread) = body.take_unread().filter(|_| http1) {
            if !drain(unread).await {
                // The client is still sending: end the connection after this response
                // rather than leave it with bytes the next request would be read from.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        self.metrics
            .record_response(response.status().as_u16(), started.elapsed());
        response
    }

    /// Decides where the request goes (route, backend), applies the route's rate limit,
    /// faults, header changes and timeouts, and makes the call.
    async fn route_and_forward(
        &self,
        mut parts: Parts,
        body: &Replayable,
        upgrade: Option<OnUpgrade>,
    ) -> Result<Response<ResponseBody>, NotForwarded> {
        let target = match &self.upstream {
            Upstream::Local {
                addr,
                snapshot,
                client,
            } => {
                let snapshot = snapshot.current();
                authorize(&mut parts, addr.port(), &snapshot, client.as_deref())?;
                if let Some(bucket) = &snapshot.inbound_rate_limit {
                    if !bucket.try_take(Instant::now()) {
                        return Err(Failure::RateLimited.into());
                    }
                }
                let destination = Destination::plaintext(*addr);
                let dial = self.upstreams.local_dial();
                let body = body.attempt().ok_or(Failure::UpstreamReset)?;
                let request = Request::from_parts(parts, body);
                return self
                    .send_with_upgrade(destination, request, upgrade, dial)
                    .await
                    .map_err(|error| error.failure.into());
            }
            Upstream::Service {
                vip,
                target,
                snapshot,
            } => snapshot
                .current()
                .service_at(*vip)
                .cloned()
                .unwrap_or_else(|| target.clone()),
        };
        let (endpoints, route) = if target.routes.is_empty() {
            (&target.endpoints, None)
        } else {
            let route = target
                .routes
                .iter()
                .find(|r| r.accepts(&parts))
                .ok_or(Failure::NoRoute)?;
            let Some(backend) = route.pick_backend() else {
                tracing::debug!(route = %route.id, "every backend of the route has weight zero");
                return Err(Failure::NoBackend.into());
            };
            (backend, Some(route))
        };
        let policy = route.map_or(&target.policy, |r| &r.policy);
        let bucket = route.map_or(target.rate_limit.as_ref(), |r| r.rate_limit.as_ref());
        if bucket.is_some_and(|b| !b.try_take(Instant::now())) {
            return Err(Failure::RateLimited.into());
        }
        let mut rng = fastrand::Rng::new();
        if let Some(route) = route {
            modify_headers(&mut parts.headers, &route.request_headers);
        }
        let service = &target.endpoints.state.config;
        let retry = policy.retry.as_ref().unwrap_or(&service.retry);
        let timeout = route.and_then(|r| r.timeout).or(service.request_timeout);
        let deadline = timeout.map(|limit| Instant::now() + limit);
        let plan = Plan {
            endpoints,
            retry,
            per_try_timeout: route.map_or(retry.per_try_timeout, |r| r.per_try_timeout),
            deadline,
            hedge: policy.hedge,
        };
        // An injected delay stands for a slow upstream: the request timeout covers it.
        let call = async {
            if let Some(fault) = &policy.fault {
                inject(fault, &mut rng).await?;
            }
            self.call(plan, parts, body, upgrade, &mut rng).await
        };
        // Attempts end themselves at the deadline (so their endpoint learns of it); this
        // bounds the fault delay and back-off sleeps.
        let mut response = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, call)
                .await
                .map_err(|_| Failure::RequestTimeout)??,
            None => call.await?,
        };
        if let Some(route) = route {
            modify_headers(response.headers_mut(), &route.response_headers);
        }
        Ok(response)
    }

    /// Sends the request to `destination` on a pooled connection and returns the response
    /// head. `downstream_upgrade` is the client's side of an `Upgrade` request: on a 101 the
    /// two sides are joined.
    pub(super) async fn send_with_upgrade(
        &self,
        destination: Destination,
        mut request: Request<ReplayBody>,
        downstream_upgrade: Option<OnUpgrade>,
        dial: Dial<'_>,
    ) -> Result<Response<ResponseBody>, AttemptError> {
        let addr = destination.addr;
        let downstream_version = request.version();
        let upgrade = downstream_upgrade.is_some();
        strip_hop_by_hop(request.headers_mut(), upgrade);
        match self.upstream_protocol(&mut request, &destination, upgrade) {
            Protocol::Http2 => {
                to_absolute_form(&mut request, addr);
                *request.version_mut() = Version::HTTP_2;
                let mut response = self
                    .upstreams
                    .send_http2(&destination, request, dial)
                    .await
                    .map_err(|error| {
                        tracing::debug!(%addr, error = %error, "upstream http/2 request failed");
                        AttemptError::from(&error)
                    })?;
                *response.version_mut() = downstream_version;
                Ok(response.map(|body| ResponseBody::upstream(body, None)))
            }
            Protocol::Http1 | Protocol::Tcp => {
                to_origin_form(&mut request);
                *request.version_mut() = Version::HTTP_11;
                let (mut response, checkin) = self
                    .upstreams
                    .send_http1(&destination, request, dial)
                    .await
                    .map_err(|error| {
                        tracing::debug!(%addr, error = %error, "upstream http/1 request failed");
                        AttemptError::from(&error)
                    })?;
                let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
                strip_hop_by_hop(response.headers_mut(), switched);
                if switched {
                    if let Some(downstream) = downstream_upgrade {
                        let upstream = hyper::upgrade::on(&mut response);
                        tokio::spawn(tunnel(downstream, upstream, self.drain.clone()));
                    }
                    // The upstream connection now belongs to the tunnel: never pool it.
                    return Ok(response.map(|body| ResponseBody::upstream(body, None)));
                }
                // An HTTP/1.0 upstream must not turn the downstream connection into HTTP/1.0
                // (no keep-alive): the downstream gets the version it spoke.
                *response.version_mut() = downstream_version;
                Ok(response.map(|body| ResponseBody::upstream(body, Some(checkin))))
            }
        }
    }

    /// The HTTP version to speak upstream for this request. Between sidecars an HTTP/1
    /// request rides the pooled HTTP/2 connection, marked so the inbound sidecar speaks
    /// HTTP/1 to the app again; an `Upgrade` cannot ride HTTP/2 and keeps HTTP/1.
    fn upstream_protocol(
        &self,
        request: &mut Request<ReplayBody>,
        destination: &Destination,
        upgrade: bool,
    ) -> Protocol {
        match &self.upstream {
            Upstream::Service { .. } => {
                // Only this proxy may mark a request: an app's own mark is not passed on.
                request.headers_mut().remove(ORIGINAL_PROTOCOL_HEADER);
                let http1 = !matches!(self.protocol, Protocol::Http2);
                if http1 && !upgrade && self.upstreams.is_mesh(destination) {
                    request.headers_mut().insert(
                        ORIGINAL_PROTOCOL_HEADER,
                        HeaderValue::from_static("HTTP/1.1"),
                    );
                    return Protocol::Http2;
                }
                self.protocol
            }
            Upstream::Local { client, .. } => {
                // Only a sidecar's mark counts; anyone else's is removed all the same.
                let marked = request.headers_mut().remove(ORIGINAL_PROTOCOL_HEADER);
                if marked.is_some() && client.is_some() {
                    Protocol::Http1
                } else {
                    self.protocol
                }
            }
        }
    }
}

/// Normalises the request path (the app gets exactly the bytes that were authorised) and
/// applies the workload's inbound policy.
fn authorize(
    request: &mut Parts,
    port: u16,
    snapshot: &Snapshot,
    client: Option<&SpiffeId>,
) -> Result<(), NotForwarded> {
    normalize_path(request)?;
    if !snapshot.authz.has_rules() {
        return Ok(());
    }
    match snapshot
        .authz
        .decide_request(client, port, &request.method, request.uri.path())
    {
        Verdict::Allow => Ok(()),
        Verdict::Deny(denial) => Err(NotForwarded::Denied(denial)),
    }
}

/// Replaces the request's path with its normal form, or refuses a path that has none.
fn normalize_path(request: &mut Parts) -> Result<(), Failure> {
    // A CONNECT tunnel to the app would carry requests no rule sees; `*` only means
    // something to OPTIONS.
    if request.method == Method::CONNECT {
        return Err(Failure::InvalidPath);
    }
    let uri = &request.uri;
    let path = uri.path();
    if path == "*" && request.method == Method::OPTIONS {
        return Ok(());
    }
    let normal = super::path::normalize(path).map_err(|error| {
        tracing::debug!(path, reason = error.reason(), "request path refused");
        Failure::InvalidPath
    })?;
    if let std::borrow::Cow::Owned(normal) = normal {
        let path_and_query = match uri.query() {
            Some(query) => format!("{normal}?{query}"),
            None => normal,
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse().map_err(|_| Failure::InvalidPath)?);
        request.uri = Uri::from_parts(parts).map_err(|_| Failure::InvalidPath)?;
    }
    Ok(())
}

/// Copies bytes between both sides of an upgraded (e.g. WebSocket) connection.
async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade, drain: DrainSignal) {
    let _guard = drain.track_connection();
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "upgrade did not complete");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        tracing::debug!(%error, "upgraded connection ended");
    }
}

/// HTTP/1 upstreams get an origin-form target (`/path?query`) and a `Host` header.
fn to_origin_form<B>(request: &mut Request<B>) {
    let uri = request.uri().clone();
    if let Some(authority) = uri.authority() {
        if !request.headers().contains_key(header::HOST) {
            if let Ok(host) = header::HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
    }
    if uri.scheme().is_some() || uri.authority().is_some() {
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
    }
}

/// HTTP/2 upstreams need `:scheme` and `:authority`; an HTTP/2 request already has them, and
/// any gap is filled from `Host` or, failing that, the upstream address.
fn to_absolute_form<B>(request: &mut Request<B>, addr: SocketAddr) {
    let uri = request.uri();
    if uri.scheme().is_some() && uri.authority().is_some() {
        return;
    }
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<uri::Authority>().ok())
        .or_else(|| addr.to_string().parse().ok());
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(uri::Scheme::HTTP);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(uri::PathAndQuery::from_static("/"));
    }
    if let Ok(absolute) = Uri::from_parts(parts) {
        *request.uri_mut() = absolute;
    }
}
