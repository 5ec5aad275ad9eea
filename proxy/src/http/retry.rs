//! Which attempts may be sent again, decided from how the last one ended (DESIGN.md §6):
//! a request the upstream cannot have seen is always retryable; a configured condition only
//! for idempotent methods (or a route that opted its non-idempotent ones in, or a gRPC call
//! whose status the route lists); nothing once the response has started, which the caller
//! guarantees by deciding on the response head only. Pure functions, tested with tables.

use http::{HeaderMap, Method, StatusCode};
use skiff_api::traffic::{RetryOn, RetryPolicy};

use crate::error::Failure;
use crate::resilience::destination::RetryReason;
use crate::resilience::outlier::Outcome;

/// The header a retried (or hedged) request carries: the attempt's number, 2 or more.
pub const ATTEMPT_HEADER: &str = "x-skiff-attempt";

/// How one attempt ended, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The upstream answered with this status (and, for a trailers-only gRPC answer, this
    /// `grpc-status`).
    Response {
        status: StatusCode,
        grpc_status: Option<u8>,
    },
    /// The exchange failed; `nothing_sent` when the upstream cannot have seen the request.
    Failed {
        failure: Failure,
        nothing_sent: bool,
    },
}

impl Ended {
    pub fn response(status: StatusCode, headers: &HeaderMap) -> Ended {
        let grpc_status = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ended::Response {
            status,
            grpc_status,
        }
    }

    /// What outlier detection, the balancer and the breaker learn about the endpoint;
    /// `None` when the attempt said nothing about it (refused by our own bulkhead). A gRPC
    /// status in a trailers-only answer counts as the HTTP status it stands for (Envoy's
    /// mapping): UNAVAILABLE and DEADLINE_EXCEEDED as gateway failures, UNKNOWN, INTERNAL and
    /// DATA_LOSS as server errors.
    pub fn outcome(self) -> Option<Outcome> {
        match self {
            Ended::Response {
                grpc_status: Some(4 | 14),
                ..
            } => Some(Outcome::GatewayFailure),
            Ended::Response {
                grpc_status: Some(2 | 13 | 15),
                ..
            } => Some(Outcome::ServerError),
            Ended::Response { status, .. } if is_gateway_status(status) => {
                Some(Outcome::GatewayFailure)
            }
            Ended::Response { status, .. } if status.is_server_error() => {
                Some(Outcome::ServerError)
            }
            Ended::Response { .. } => Some(Outcome::Success),
            Ended::Failed {
                failure: Failure::Overflow,
                ..
            } => None,
            Ended::Failed { .. } => Some(Outcome::GatewayFailure),
        }
    }
}

fn is_gateway_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// The methods RFC 9110 §9.2.2 calls idempotent.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether a request is a gRPC call (its `content-type` is `application/grpc…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Why the attempt that ended as `ended` may be sent again, or `None`. `policy` is the
/// configured retry policy (conditions, opt-in of non-idempotent methods); automatic retries
/// of requests nothing was sent for need none.
pub fn should_retry(
    ended: Ended,
    policy: &RetryPolicy,
    method: &Method,
    grpc: bool,
) -> Option<RetryReason> {
    if let Ended::Failed {
        failure,
        nothing_sent: true,
    } = ended
    {
        // Our own bulkhead refused: another attempt would only add load.
        return (failure != Failure::Overflow).then_some(RetryReason::NothingSent);
    }
    let may_repeat = is_idempotent(method) || policy.non_idempotent;
    let matched = policy.on.iter().any(|condition| match *condition {
        RetryOn::Grpc(code) => {
            // Listing a gRPC status opts gRPC calls in: every one of them is a POST.
            grpc && matches!(ended, Ended::Response { grpc_status: Some(s), .. } if s == code)
        }
        condition => may_repeat && matches_http(condition, ended),
    });
    matched.then_some(RetryReason::Configured)
}

fn matches_http(condition: RetryOn, ended: Ended) -> bool {
    match (condition, ended) {
        (RetryOn::ServerError, Ended::Response { status, .. }) => status.is_server_error(),
        (RetryOn::GatewayError, Ended::Response { status, .. }) => is_gateway_status(status),
        (RetryOn::Status(code), Ended::Response { status, .. }) => status.as_u16() == code,
        (RetryOn::ServerError | RetryOn::GatewayError, Ended::Failed { failure, .. }) => {
            is_gateway_failure(failure)
        }
        (RetryOn::Reset, Ended::Failed { failure, .. }) => failure == Failure::UpstreamReset,
        _ => false,
    }
}

/// Failures of the exchange itself that a gateway-error condition covers.
fn is_gateway_failure(failure: Failure) -> bool {
    matches!(
        failure,
        Failure::ConnectFailed
            | Failure::ConnectTimeout
            | Failure::UpstreamReset
            | Failure::UpstreamProtocol
            | Failure::UpstreamTls
            | Failure::PerTryTimeout
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[RetryOn], non_idempotent: bool) -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            on: on.to_vec(),
            non_idempotent,
            ..RetryPolicy::default()
        }
    }

    fn status(code: u16) -> Ended {
        Ended::Response {
            status: StatusCode::from_u16(code).unwrap(),
            grpc_status: None,
        }
    }

    fn failed(failure: Failure, nothing_sent: bool) -> Ended {
        Ended::Failed {
            failure,
            nothing_sent,
        }
    }

    #[test]
    fn what_is_retried() {
        use RetryOn::*;
        let none = policy(&[], false);
        let five = policy(&[ServerError], false);
        let gateway = policy(&[GatewayError], false);
        let reset = policy(&[Reset], false);
        let conflict = policy(&[Status(409)], false);
        let post_ok = policy(&[ServerError], true);
        let grpc = policy(&[Grpc(14)], false);
        let get = Method::GET;
        let post = Method::POST;
        let unavailable = Ended::Response {
            status: StatusCode::OK,
            grpc_status: Some(14),
        };
        let auto = Some(RetryReason::NothingSent);
        let configured = Some(RetryReason::Configured);
        type Case<'a> = (
            &'a str,
            Ended,
            &'a RetryPolicy,
            &'a Method,
            bool,
            Option<RetryReason>,
        );
        #[rustfmt::skip]
        let table: [Case; 22] = [
            // Nothing sent: always, any method, no policy needed.
            ("connect refused", failed(Failure::ConnectFailed, true), &none, &post, false, auto),
            ("connect timeout", failed(Failure::ConnectTimeout, true), &none, &post, false, auto),
            ("tls failed", failed(Failure::UpstreamTls, true), &none, &get, false, auto),
            ("refused stream", failed(Failure::UpstreamReset, true), &none, &post, false, auto),
            ("own bulkhead", failed(Failure::Overflow, true), &five, &get, false, None),
            // Sent: only configured conditions.
            ("reset, no policy", failed(Failure::UpstreamReset, false), &none, &get, false, None),
            ("503, no policy", status(503), &none, &get, false, None),
            ("503 on 5xx", status(503), &five, &get, false, configured),
            ("500 on 5xx", status(500), &five, &get, false, configured),
            ("500 on gateway", status(500), &gateway, &get, false, None),
            ("504 on gateway", status(504), &gateway, &get, false, configured),
            ("per-try timeout on gateway", failed(Failure::PerTryTimeout, false), &gateway, &get, false, configured),
            ("reset on reset", failed(Failure::UpstreamReset, false), &reset, &get, false, configured),
            ("503 on reset", status(503), &reset, &get, false, None),
            ("409 listed", status(409), &conflict, &get, false, configured),
            ("404 not listed", status(404), &conflict, &get, false, None),
            ("200", status(200), &five, &get, false, None),
            // Non-idempotent methods need the opt-in.
            ("POST 503", status(503), &five, &post, false, None),
            ("POST reset", failed(Failure::UpstreamReset, false), &five, &post, false, None),
            ("POST 503 opted in", status(503), &post_ok, &post, false, configured),
            // gRPC statuses opt gRPC calls in.
            ("grpc unavailable", unavailable, &grpc, &post, true, configured),
            ("grpc status on non-grpc", unavailable, &grpc, &post, false, None),
        ];
        for (name, ended, policy, method, grpc, expected) in table {
            assert_eq!(
                should_retry(ended, policy, method, grpc),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn outcomes_for_outlier_detection() {
        assert_eq!(status(200).outcome(), Some(Outcome::Success));
        assert_eq!(status(404).outcome(), Some(Outcome::Success));
        assert_eq!(status(500).outcome(), Some(Outcome::ServerError));
        assert_eq!(status(503).outcome(), Some(Outcome::GatewayFailure));
        assert_eq!(
            failed(Failure::ConnectFailed, true).outcome(),
            Some(Outcome::GatewayFailure)
        );
        assert_eq!(failed(Failure::Overflow, true).outcome(), None);
        assert_eq!(status(429).outcome(), Some(Outcome::Success));
        let grpc = |code| Ended::Response {
            status: StatusCode::OK,
            grpc_status: Some(code),
        };
        assert_eq!(grpc(0).outcome(), Some(Outcome::Success));
        assert_eq!(grpc(5).outcome(), Some(Outcome::Success), "NOT_FOUND");
        assert_eq!(grpc(14).outcome(), Some(Outcome::GatewayFailure));
        assert_eq!(grpc(13).outcome(), Some(Outcome::ServerError));
    }

    #[test]
    fn grpc_and_idempotency() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grpc+proto".parse().unwrap());
        assert!(is_grpc(&headers));
        headers.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(
            Ended::response(StatusCode::OK, &headers),
            Ended::Response {
                status: StatusCode::OK,
                grpc_status: Some(14)
            }
        );
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
