//! One request, start to finish: pick the upstream, clean the headers, send it on a pooled
//! connection, and stream the response back (or answer with the reason it failed).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, uri, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use skiff_api::identity::{SpiffeId, ORIGINAL_PROTOCOL_HEADER};
use tokio::time::Instant;

use super::client::Upstreams;
use super::headers::{is_upgrade, strip_hop_by_hop};
use super::{denied_response, failure_response, ResponseBody};
use crate::authz::Verdict;
use crate::detect::Protocol;
use crate::drain::DrainSignal;
use crate::error::{Failure, NotForwarded};
use crate::idle::Activity;
use crate::metrics::ServiceMetrics;
use crate::policy::{Destination, ServiceTarget, SnapshotHandle};
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
}

impl Forwarder {
    /// Answers one request. Never fails: a failure becomes a response with `x-skiff-error`.
    pub async fn forward(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let started = Instant::now();
        let _in_flight = self.activity.request();
        let response = match self.route_and_forward(request).await {
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
        self.metrics
            .record_response(response.status().as_u16(), started.elapsed());
        response
    }

    /// Decides where the request goes (route, backend, endpoint), applies the route's header
    /// changes and timeout, and forwards it.
    async fn route_and_forward(
        &self,
        mut request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, NotForwarded> {
        let target = match &self.upstream {
            Upstream::Local {
                addr,
                snapshot,
                client,
            } => {
                authorize(&mut request, addr.port(), snapshot, client.as_deref())?;
                let destination = Destination::plaintext(*addr);
                return Ok(self.send(destination, request).await?);
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
            let (parts, body) = request.into_parts();
            let route = target
                .routes
                .iter()
                .find(|r| r.accepts(&parts))
                .ok_or(Failure::NoRoute)?;
            request = Request::from_parts(parts, body);
            let Some(backend) = route.pick_backend() else {
                tracing::debug!(route = %route.id, "every backend of the route has weight zero");
                return Err(Failure::NoBackend.into());
            };
            (backend, Some(route))
        };
        let destination = endpoints.pick().ok_or(Failure::NoHealthyEndpoint)?;
        let Some(route) = route else {
            return Ok(self.send(destination, request).await?);
        };
        modify_headers(request.headers_mut(), &route.request_headers);
        let sent = self.send(destination, request);
        let mut response = match route.timeout {
            Some(limit) => tokio::time::timeout(limit, sent)
                .await
                .map_err(|_| Failure::RequestTimeout)??,
            None => sent.await?,
        };
        modify_headers(response.headers_mut(), &route.response_headers);
        Ok(response)
    }

    /// Sends the request to `destination` on a pooled connection and returns the response
    /// head.
    async fn send(
        &self,
        destination: Destination,
        mut request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Failure> {
        let addr = destination.addr;
        let downstream_version = request.version();
        let upgrade = downstream_version <= Version::HTTP_11 && is_upgrade(request.headers());
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        strip_hop_by_hop(request.headers_mut(), upgrade);
        match self.upstream_protocol(&mut request, &destination, upgrade) {
            Protocol::Http2 => {
                to_absolute_form(&mut request, addr);
                *request.version_mut() = Version::HTTP_2;
                let mut response = self
                    .upstreams
                    .send_http2(&destination, request)
                    .await
                    .map_err(|error| {
                        tracing::debug!(%addr, error = %error, "upstream http/2 request failed");
                        error.failure()
                    })?;
                *response.version_mut() = downstream_version;
                Ok(response.map(|body| ResponseBody::upstream(body, None)))
            }
            Protocol::Http1 | Protocol::Tcp => {
                to_origin_form(&mut request);
                *request.version_mut() = Version::HTTP_11;
                let (mut response, checkin) = self
                    .upstreams
                    .send_http1(&destination, request)
                    .await
                    .map_err(|error| {
                        tracing::debug!(%addr, error = %error, "upstream http/1 request failed");
                        error.failure()
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
        request: &mut Request<Incoming>,
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
    request: &mut Request<Incoming>,
    port: u16,
    snapshot: &SnapshotHandle,
    client: Option<&SpiffeId>,
) -> Result<(), NotForwarded> {
    normalize_path(request)?;
    let snapshot = snapshot.current();
    if !snapshot.authz.has_rules() {
        return Ok(());
    }
    match snapshot
        .authz
        .decide_request(client, port, request.method(), request.uri().path())
    {
        Verdict::Allow => Ok(()),
        Verdict::Deny(denial) => Err(NotForwarded::Denied(denial)),
    }
}

/// Replaces the request's path with its normal form, or refuses a path that has none.
fn normalize_path(request: &mut Request<Incoming>) -> Result<(), Failure> {
    // A CONNECT tunnel to the app would carry requests no rule sees; `*` only means
    // something to OPTIONS.
    if request.method() == Method::CONNECT {
        return Err(Failure::InvalidPath);
    }
    let uri = request.uri();
    let path = uri.path();
    if path == "*" && request.method() == Method::OPTIONS {
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
        *request.uri_mut() = Uri::from_parts(parts).map_err(|_| Failure::InvalidPath)?;
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
fn to_origin_form(request: &mut Request<Incoming>) {
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
fn to_absolute_form(request: &mut Request<Incoming>, addr: SocketAddr) {
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
