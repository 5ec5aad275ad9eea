//! What can go wrong while proxying, classified once so every failure maps to one response
//! status, one `x-skiff-error` value and one metric label.

use std::io;

/// The closed set of reasons the proxy answers a request itself (DESIGN.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The service has HTTP routes and none accepts the request.
    NoRoute,
    /// The matching route's backends all have weight zero (the Gateway API answers 500).
    NoBackend,
    /// The request timeout (the whole call, retries included) passed before the response
    /// headers arrived.
    RequestTimeout,
    /// One attempt's timeout passed (and no retry was possible or left).
    PerTryTimeout,
    /// A connection (HTTP with no request in flight, or opaque TCP) had nothing moving for
    /// the idle timeout and was closed. Counted; there is no response to send.
    IdleTimeout,
    /// The destination's circuit breaker is open (or half-open with its trial calls out).
    CircuitOpen,
    /// A bulkhead of the destination is full: requests or retries in flight, or requests
    /// waiting for a connection.
    Overflow,
    /// This proxy has its maximum of requests in flight: new ones are shed, not queued.
    Overloaded,
    /// The route's (or the workload's inbound) token bucket is empty.
    RateLimited,
    /// Fault injection aborted the request with this status.
    FaultAbort(u16),
    /// The destination service has no ready endpoint.
    NoHealthyEndpoint,
    /// The upstream refused or reset the TCP connection attempt.
    ConnectFailed,
    /// The TCP connection attempt did not complete within the connect timeout.
    ConnectTimeout,
    /// The upstream connection broke after the request was (possibly) sent.
    UpstreamReset,
    /// The upstream answered with something that is not valid HTTP.
    UpstreamProtocol,
    /// The mTLS handshake with the peer sidecar failed, or the peer proved another identity
    /// than the endpoint's: nothing was sent.
    UpstreamTls,
    /// This workload's inbound policy denies the request (the reason is in `x-skiff-reason`).
    Denied,
    /// The request path cannot be normalised safely (an encoded slash, a `;`, a bad escape):
    /// refused rather than authorised one way and interpreted another by the app.
    InvalidPath,
}

impl Failure {
    /// Value of the `x-skiff-error` header, the access-log field and the metric label.
    pub fn flag(self) -> &'static str {
        match self {
            Failure::NoRoute => "no-route",
            Failure::NoBackend => "no-backend",
            Failure::RequestTimeout => "request-timeout",
            Failure::PerTryTimeout => "per-try-timeout",
            Failure::IdleTimeout => "idle-timeout",
            Failure::CircuitOpen => "circuit-open",
            Failure::Overflow => "overflow",
            Failure::Overloaded => "overloaded",
            Failure::RateLimited => "rate-limited",
            Failure::FaultAbort(_) => "fault-injected",
            Failure::NoHealthyEndpoint => "no-healthy-endpoint",
            Failure::ConnectFailed => "connect-failed",
            Failure::ConnectTimeout => "connect-timeout",
            Failure::UpstreamReset => "upstream-reset",
            Failure::UpstreamProtocol => "upstream-protocol-error",
            Failure::UpstreamTls => "upstream-tls-failed",
            Failure::Denied => "denied",
            Failure::InvalidPath => "invalid-path",
        }
    }

    /// The status of the response the proxy generates for this failure.
    pub fn status(self) -> http::StatusCode {
        match self {
            Failure::NoRoute => http::StatusCode::NOT_FOUND,
            Failure::NoBackend => http::StatusCode::INTERNAL_SERVER_ERROR,
            Failure::NoHealthyEndpoint
            | Failure::ConnectFailed
            | Failure::UpstreamTls
            | Failure::CircuitOpen
            | Failure::Overflow
            | Failure::Overloaded => http::StatusCode::SERVICE_UNAVAILABLE,
            Failure::RateLimited => http::StatusCode::TOO_MANY_REQUESTS,
            Failure::FaultAbort(status) => {
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE)
            }
            Failure::Denied => http::StatusCode::FORBIDDEN,
            Failure::InvalidPath => http::StatusCode::BAD_REQUEST,
            Failure::ConnectTimeout
            | Failure::RequestTimeout
            | Failure::PerTryTimeout
            | Failure::IdleTimeout => http::StatusCode::GATEWAY_TIMEOUT,
            Failure::UpstreamReset | Failure::UpstreamProtocol => http::StatusCode::BAD_GATEWAY,
        }
    }
}

/// Why the proxy did not forward a request or connection: something failed, or the inbound
/// policy denied it (answered 403 with the denial's reason, or the connection closed).
#[derive(Debug)]
pub enum NotForwarded {
    Failed(Failure),
    Denied(crate::authz::Denial),
}

impl From<Failure> for NotForwarded {
    fn from(failure: Failure) -> Self {
        NotForwarded::Failed(failure)
    }
}

/// An upstream connection attempt that failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} failed")]
    Refused {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("no connection to {addr}: the destination's connections are all in use and its pending requests at their limit")]
    Overflow { addr: std::net::SocketAddr },
    #[error("connect to {addr} timed out after {timeout:?}")]
    TimedOut {
        addr: std::net::SocketAddr,
        timeout: std::time::Duration,
    },
    #[error("mTLS with {addr} failed")]
    Tls {
        addr: std::net::SocketAddr,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("mTLS handshake with {addr} timed out after {timeout:?}")]
    TlsTimedOut {
        addr: std::net::SocketAddr,
        timeout: std::time::Duration,
    },
    #[error("http handshake with {addr} failed")]
    Handshake {
        addr: std::net::SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

impl ConnectError {
    pub fn failure(&self) -> Failure {
        match self {
            ConnectError::Refused { .. } | ConnectError::Handshake { .. } => Failure::ConnectFailed,
            ConnectError::TimedOut { .. } => Failure::ConnectTimeout,
            ConnectError::Tls { .. } | ConnectError::TlsTimedOut { .. } => Failure::UpstreamTls,
            ConnectError::Overflow { .. } => Failure::Overflow,
        }
    }
}

/// Whether an HTTP exchange that failed can have been seen by the upstream. `false` only when
/// the protocol proves it was not: an HTTP/2 stream refused with `REFUSED_STREAM` (RFC 9113
/// §8.7). A stream errored by a GOAWAY is not counted as unseen: h2 reports the same error
/// for streams the server did process when the connection then breaks.
pub fn upstream_may_have_seen(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return !(h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        source = error.source();
    }
    true
}

/// Classifies an error from an upstream HTTP exchange.
pub fn classify_hyper(error: &hyper::Error) -> Failure {
    if error.is_parse() || error.is_parse_status() {
        Failure::UpstreamProtocol
    } else {
        Failure::UpstreamReset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_a_status_and_a_distinct_flag() {
        let table = [
            (Failure::NoRoute, 404),
            (Failure::NoBackend, 500),
            (Failure::RequestTimeout, 504),
            (Failure::PerTryTimeout, 504),
            (Failure::IdleTimeout, 504),
            (Failure::CircuitOpen, 503),
            (Failure::Overflow, 503),
            (Failure::Overloaded, 503),
            (Failure::RateLimited, 429),
            (Failure::FaultAbort(418), 418),
            (Failure::NoHealthyEndpoint, 503),
            (Failure::ConnectFailed, 503),
            (Failure::ConnectTimeout, 504),
            (Failure::UpstreamReset, 502),
            (Failure::UpstreamProtocol, 502),
            (Failure::UpstreamTls, 503),
            (Failure::Denied, 403),
            (Failure::InvalidPath, 400),
        ];
        let flags: std::collections::HashSet<_> = table.iter().map(|(f, _)| f.flag()).collect();
        assert_eq!(flags.len(), table.len());
        for (failure, status) in table {
            assert_eq!(failure.status().as_u16(), status, "{failure:?}");
            assert!(!failure.flag().is_empty());
        }
    }
}
