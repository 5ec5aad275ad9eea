//! One call to a destination, attempt by attempt: the bulkhead and the breaker let it in, the
//! balancer picks each attempt's endpoint, and [`should_retry`], the budget and the retries
//! bulkhead decide whether another attempt follows (or, hedging, races). How an attempt ends
//! feeds the endpoint's health; how the call ends feeds the breaker (DESIGN.md §6).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderValue, Request, Response};
use hyper::upgrade::OnUpgrade;
use skiff_api::traffic::{Hedge, RetryPolicy, DEFAULT_RETRY_ATTEMPTS};
use tokio::time::Instant;

use super::client::{Dial, SendError};
use super::forward::Forwarder;
use super::replay::{ReplayBody, Replayable};
use super::retry::{is_grpc, is_idempotent, should_retry, Ended, ATTEMPT_HEADER};
use super::ResponseBody;
use crate::error::Failure;
use crate::policy::{Destination, EndpointSet};
use crate::resilience::backoff::full_jitter;
use crate::resilience::balancer::Pick;
use crate::resilience::bulkhead::LimitGuard;
use crate::resilience::destination::{DestinationState, RetryReason};
use crate::resilience::outlier::Outcome;

/// How one call to a destination is made: where, how often it may be tried, how long each
/// try may take, and whether slow tries are hedged.
pub(super) struct Plan<'a> {
    pub endpoints: &'a EndpointSet,
    pub retry: &'a RetryPolicy,
    pub per_try_timeout: Option<Duration>,
    /// When the request timeout ends the call: an attempt still running then ends as a
    /// `request-timeout` failure of its endpoint.
    pub deadline: Option<Instant>,
    pub hedge: Option<Hedge>,
}

/// One attempt, ready to go: the endpoint (in flight in the balancer) and the request.
struct Attempt {
    destination: Destination,
    pick: Pick,
    request: Request<ReplayBody>,
    started: Instant,
}

/// How an attempt failed, and whether the upstream can have seen it.
pub(super) struct AttemptError {
    pub failure: Failure,
    pub nothing_sent: bool,
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

impl Forwarder {
    /// Calls a destination: within its bulkhead and with its breaker's permission, attempts,
    /// each on an endpoint the balancer picks, retried when [`should_retry`] allows it and the
    /// budget and the retries bulkhead agree. The breaker learns how the call ended, not each
    /// attempt: a failure a retry made good is no failure of the service.
    pub(super) async fn call(
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
                // Boxed: rare, and it would make every call's future larger.
                return Box::pin(self.hedged(plan, hedge, parts, grpc, body, rng)).await;
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
}
