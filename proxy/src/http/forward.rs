//! One request, start to finish: pick the upstream, clean the headers, send it on a pooled
//! connection, and stream the response back (or answer with the reason it failed).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::request::Parts;
use http::{header, uri, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use skiff_api::identity::{SpiffeId, ORIGINAL_PROTOCOL_HEADER};
use tokio::time::Instant;

use skiff_api::traffic::{Fault, Hedge, RetryPolicy, DEFAULT_RETRY_ATTEMPTS};

use super::client::{Dial, SendError, Upstreams};
use super::headers::{is_upgrade, strip_hop_by_hop};
use super::replay::{ReplayBody, Replayable};
use super::retry::{is_grpc, is_idempotent, should_retry, Ended, ATTEMPT_HEADER};
use super::{denied_response, failure_response, ResponseBody};
use crate::authz::Verdict;
use crate::detect::Protocol;
use crate::drain::DrainSignal;
use crate::error::{Failure, NotForwarded};
use crate::idle::Activity;
use crate::metrics::ServiceMetrics;
use crate::policy::{Destination, EndpointSet, ServiceTarget, Snapshot, SnapshotHandle};
use crate::resilience::backoff::full_jitter;
use crate::resilience::balancer::Pick;
use crate::resilience::bulkhead::{Limit, LimitGuard};
use crate::resilience::destination::{DestinationState, RetryReason};
use crate::resilience::outlier::Outcome;
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

/// How one call to a destination is made: where, how often it may be tried, how long each
/// try may take, and whether slow tries are hedged.
struct Plan<'a> {
    endpoints: &'a EndpointSet,
    retry: &'a RetryPolicy,
    per_try_timeout: Option<Duration>,
    /// When the request timeout ends the call: an attempt still running then ends as a
    /// `request-timeout` failure of its endpoint.
    deadline: Option<Instant>,
    hedge: Option<Hedge>,
}

/// One attempt, ready to go: the endpoint (in flight in the balancer) and the request.
struct Attempt {
    destination: Destination,
    pick: Pick,
    request: Request<ReplayBody>,
    started: Instant,
}

/// How an attempt failed, and whether the upstream can have seen it.
struct AttemptError {
    failure: Failure,
    nothing_sent: bool,
}

impl From<&SendError> for AttemptError {
    fn from(error: &SendError) -> Self {
        AttemptError {
            failure: error.failure(),
            nothing_sent: error.nothing_sent(),
        }
    }
}

/// What a hedged call does next.
enum Next {
    Answered(Box<(Result<Response<ResponseBody>, Failure>, Ended)>),
    Hedge,
    Exhausted,
}

/// Resolves with the first of `racing` to finish, removing it from the race.
async fn race<F: Future + Unpin>(racing: &mut Vec<F>) -> F::Output {
    std::future::poll_fn(|cx| {
        for index in 0..racing.len() {
            if let Poll::Ready(output) = Pin::new(&mut racing[index]).poll(cx) {
                racing.swap_remove(index);
                return Poll::Ready(output);
            }
        }
        Poll::Pending
    })
    .await
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

    /// Calls a destination: within its bulkhead and with its breaker's permission, attempts,
    /// each on an endpoint the balancer picks, retried when [`should_retry`] allows it and the
    /// budget and the retries bulkhead agree. The breaker learns how the call ended, not each
    /// attempt: a failure a retry made good is no failure of the service.
    async fn call(
        &self,
        plan: Plan<'_>,
        parts: Parts,
        body: &Replayable,
        upgrade: Option<OnUpgrade>,
        rng: &mut fastrand::Rng,
    ) -> Result<Response<ResponseBody>, Failure> {
        let state = &plan.endpoints.state;
        let request_slot = state
            .bulkhead
            .requests
            .try_acquire()
            .ok_or(Failure::Overflow)?;
        let permit = state
            .breaker
            .try_acquire(Instant::now())
            .map_err(|_| Failure::CircuitOpen)?;
        state.budget.record_request(Instant::now());
        body.set_limit(plan.retry.body_limit as usize);
        let (result, ended) = match upgrade {
            // An upgrade (WebSocket) is one exchange that becomes a tunnel: never repeated.
            Some(upgrade) => match self.begin(&plan, &parts, body, &[], 1, rng) {
                Ok(attempt) => {
                    let (result, ended) = self.finish(attempt, Some(upgrade), &plan).await;
                    (result, Some(ended))
                }
                Err(failure) => (Err(failure), None),
            },
            None => self.attempts(&plan, &parts, body, rng).await,
        };
        // Refused by our own bulkhead: nothing to learn about the service.
        if let Some(outcome) = ended.and_then(Ended::outcome) {
            state
                .breaker
                .record(permit, outcome == Outcome::Success, Instant::now());
        }
        // A streamed response is a request in flight until its body ends.
        let mut response = result?;
        response.body_mut().hold(request_slot);
        Ok(response)
    }

    /// The attempts of one call, and how the last one ended (`None`: none was sent).
    async fn attempts(
        &self,
        plan: &Plan<'_>,
        parts: &Parts,
        body: &Replayable,
        rng: &mut fastrand::Rng,
    ) -> (Result<Response<ResponseBody>, Failure>, Option<Ended>) {
        let state = &plan.endpoints.state;
        let grpc = is_grpc(&parts.headers);
        if let Some(hedge) = plan.hedge {
            if is_idempotent(&parts.method) && body.is_empty() {
                return self.hedged(plan, hedge, parts, grpc, body, rng).await;
            }
        }
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut _retry_slot = None;
        let mut number = 1;
        loop {
            let attempt = match self.begin(plan, parts, body, &tried, number, rng) {
                Ok(attempt) => attempt,
                Err(failure) => return (Err(failure), None),
            };
            tried.push(attempt.destination.addr);
            let (result, ended) = self.finish(attempt, None, plan).await;
            // Requests nothing was sent for get at least the default number of retries.
            let limit = match ended {
                Ended::Failed {
                    nothing_sent: true, ..
                } => plan.retry.attempts.max(DEFAULT_RETRY_ATTEMPTS),
                _ => plan.retry.attempts,
            };
            let reason = Some(ended)
                .filter(|_| number <= limit)
                .and_then(|ended| should_retry(ended, plan.retry, &parts.method, grpc));
            // The next attempt must be able to send the body again, within the budget.
            let retry = reason
                .filter(|_| body.can_replay())
                .and_then(|reason| Some((reason, self.retry_allowed(state)?)));
            let Some((reason, slot)) = retry else {
                return (result, Some(ended));
            };
            _retry_slot = Some(slot);
            state.count_retry(reason);
            drop(result);
            let pause = full_jitter(number, plan.retry.backoff_base, plan.retry.backoff_max, rng);
            tokio::time::sleep(pause).await;
            number += 1;
        }
    }

    /// Whether one more attempt may go to `state`: within the retry budget and the retries
    /// bulkhead. The slot is held while the attempt is in flight.
    fn retry_allowed(&self, state: &DestinationState) -> Option<LimitGuard> {
        let slot = state.bulkhead.retries.try_acquire();
        if slot.is_none() || !state.budget.try_withdraw(Instant::now()) {
            state.retries_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        slot
    }

    /// Hedged call (idempotent, bodiless): attempts race, a new one after every `delay`
    /// without an answer (within the budget), and the first response the retry policy would
    /// not retry wins; the others are cancelled. An attempt that fails, or answers what the
    /// policy retries, lets the next hedge go at once; the last answer stands when none is
    /// left. Returns how the answer's attempt ended, as [`Forwarder::attempts`] does.
    async fn hedged(
        &self,
        plan: &Plan<'_>,
        hedge: Hedge,
        parts: &Parts,
        grpc: bool,
        body: &Replayable,
        rng: &mut fastrand::Rng,
    ) -> (Result<Response<ResponseBody>, Failure>, Option<Ended>) {
        let state = &plan.endpoints.state;
        let mut tried = Vec::new();
        let mut racing = Vec::new();
        let mut slots = Vec::new();
        let first = match self.begin(plan, parts, body, &tried, 1, rng) {
            Ok(first) => first,
            Err(failure) => return (Err(failure), None),
        };
        tried.push(first.destination.addr);
        racing.push(Box::pin(self.finish(first, None, plan)));
        let mut hedges = 0;
        let mut last = None;
        loop {
            let can_hedge = hedges < hedge.max_hedges;
            let next = tokio::select! {
                answered = race(&mut racing), if !racing.is_empty() => Next::Answered(Box::new(answered)),
                () = tokio::time::sleep(hedge.delay), if can_hedge => Next::Hedge,
                else => Next::Exhausted,
            };
            match next {
                Next::Answered(answered) => {
                    let (result, ended) = *answered;
                    let final_answer = result.is_ok()
                        && should_retry(ended, plan.retry, &parts.method, grpc).is_none();
                    if final_answer || (racing.is_empty() && !can_hedge) {
                        return (result, Some(ended));
                    }
                    last = Some((result, Some(ended)));
                    // Another attempt is still running: wait for it (or the next hedge).
                    if !racing.is_empty() {
                        continue;
                    }
                    // Every attempt is over and a hedge is left: send it now.
                }
                Next::Hedge => {}
                Next::Exhausted => return last.unwrap_or((Err(Failure::NoHealthyEndpoint), None)),
            }
            hedges += 1;
            let attempt = self
                .retry_allowed(state)
                .ok_or(Failure::Overflow)
                .and_then(|slot| {
                    let attempt = self.begin(plan, parts, body, &tried, hedges + 1, rng)?;
                    Ok((slot, attempt))
                });
            match attempt {
                Ok((slot, attempt)) => {
                    slots.push(slot);
                    state.count_retry(RetryReason::Hedge);
                    tried.push(attempt.destination.addr);
                    racing.push(Box::pin(self.finish(attempt, None, plan)));
                }
                Err(failure) if racing.is_empty() => return last.unwrap_or((Err(failure), None)),
                Err(_) => {}
            }
        }
    }

    /// Prepares attempt `number`: an endpoint and the request.
    fn begin(
        &self,
        plan: &Plan<'_>,
        parts: &Parts,
        replay: &Replayable,
        avoid: &[SocketAddr],
        number: u32,
        rng: &mut fastrand::Rng,
    ) -> Result<Attempt, Failure> {
        let now = Instant::now();
        let (destination, pick) = plan
            .endpoints
            .pick(avoid, now, rng)
            .ok_or(Failure::NoHealthyEndpoint)?;
        let body = replay.attempt().ok_or(Failure::UpstreamReset)?;
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        // Only this proxy numbers attempts.
        request.headers_mut().remove(ATTEMPT_HEADER);
        if number > 1 {
            request
                .headers_mut()
                .insert(ATTEMPT_HEADER, HeaderValue::from(number));
        }
        Ok(Attempt {
            destination,
            pick,
            request,
            started: now,
        })
    }

    /// Sends one attempt within the per-try timeout (and the request's deadline) and tells
    /// the balancer and outlier detection how it ended. Dropped before it ends (a hedge lost
    /// the race), it tells them nothing.
    async fn finish(
        &self,
        attempt: Attempt,
        upgrade: Option<OnUpgrade>,
        plan: &Plan<'_>,
    ) -> (Result<Response<ResponseBody>, Failure>, Ended) {
        let Attempt {
            destination,
            pick,
            request,
            started,
        } = attempt;
        let state = &plan.endpoints.state;
        let dial = Dial {
            connect_timeout: state.config.connect_timeout,
            connections: Some(&state.bulkhead.connections),
        };
        let sent = self.send_with_upgrade(destination, request, upgrade, dial);
        // Whichever ends first: this attempt's own timeout, or the whole request's.
        let per_try = plan.per_try_timeout.map(|limit| started + limit);
        let end = match (per_try, plan.deadline) {
            (Some(per_try), Some(deadline)) if deadline <= per_try => {
                Some((deadline, Failure::RequestTimeout))
            }
            (Some(per_try), _) => Some((per_try, Failure::PerTryTimeout)),
            (None, Some(deadline)) => Some((deadline, Failure::RequestTimeout)),
            (None, None) => None,
        };
        let result = match end {
            Some((at, failure)) => {
                tokio::time::timeout_at(at, sent)
                    .await
                    .unwrap_or(Err(AttemptError {
                        failure,
                        nothing_sent: false,
                    }))
            }
            None => sent.await,
        };
        let ended = match &result {
            Ok(response) => Ended::response(response.status(), response.headers()),
            Err(error) => Ended::Failed {
                failure: error.failure,
                nothing_sent: error.nothing_sent,
            },
        };
        let now = Instant::now();
        // Refused by our own bulkhead: nothing to learn about the endpoint.
        if let Some(outcome) = ended.outcome() {
            pick.finish(outcome, now.duration_since(started), now);
        }
        (result.map_err(|e| e.failure), ended)
    }

    /// Sends the request to `destination` on a pooled connection and returns the response
    /// head. `downstream_upgrade` is the client's side of an `Upgrade` request: on a 101 the
    /// two sides are joined.
    async fn send_with_upgrade(
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
