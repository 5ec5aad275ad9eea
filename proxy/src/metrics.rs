//! Prometheus metrics of the data path, served on :15020 `/metrics` in the text format.
//!
//! Labels are resolved once per connection: a connection asks for the [`ServiceMetrics`] of its
//! (direction, service, TLS, peer identity), and every request on it then only bumps atomics.
//! Label values come from the policy (service names), from certificates our own CA signed
//! (peer identities), or from closed enums, never from request data.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use skiff_api::identity::SpiffeId;

use crate::error::Failure;
use crate::resilience::breaker::BreakerState;
use crate::resilience::destination::{DestinationState, Destinations, RetryReason};
use crate::resilience::outlier::EjectionReason;

/// Which way the traffic flows relative to this pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Whether a connection is mutual TLS between sidecars (the `tls` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tls {
    /// Plaintext, or the app's own TLS passed through.
    None,
    /// mTLS between sidecars: the peer proved a SPIFFE identity.
    Mutual,
}

impl Tls {
    pub fn as_str(self) -> &'static str {
        match self {
            Tls::None => "none",
            Tls::Mutual => "mtls",
        }
    }
}

/// Service label for destinations unknown to the mesh.
pub const PASSTHROUGH: &str = "passthrough";
/// Service label for inbound traffic to a port no Service of this pod exposes.
pub const UNKNOWN_SERVICE: &str = "unknown";

/// Upper bounds of the request-duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status codes 100..=599 get a counter each; anything else is counted as 0.
const CODES: usize = 600;

/// Every metric of one (direction, service, TLS, peer) combination.
pub struct ServiceMetrics {
    /// Responses by status code, indexed by code.
    responses: Box<[AtomicU64]>,
    /// Responses the proxy generated itself, by failure.
    failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests and connections the inbound policy refused, by reason.
    denials: Mutex<BTreeMap<&'static str, u64>>,
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_us: AtomicU64,
    tcp_opened: AtomicU64,
    tcp_closed: AtomicU64,
    /// Bytes sent to the downstream peer (towards the connection's originator).
    tcp_sent: AtomicU64,
    /// Bytes received from the downstream peer.
    tcp_received: AtomicU64,
}

impl ServiceMetrics {
    fn new() -> Self {
        ServiceMetrics {
            responses: (0..CODES).map(|_| AtomicU64::new(0)).collect(),
            failures: Mutex::default(),
            denials: Mutex::default(),
            duration_buckets: Default::default(),
            duration_count: AtomicU64::new(0),
            duration_sum_us: AtomicU64::new(0),
            tcp_opened: AtomicU64::new(0),
            tcp_closed: AtomicU64::new(0),
            tcp_sent: AtomicU64::new(0),
            tcp_received: AtomicU64::new(0),
        }
    }

    /// Records one HTTP response: its status and the time until its headers.
    pub fn record_response(&self, status: u16, elapsed: Duration) {
        let index = if (100..CODES as u16).contains(&status) {
            status as usize
        } else {
            0
        };
        self.responses[index].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records a response the proxy made itself.
    pub fn record_failure(&self, failure: Failure) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *failures.entry(failure.flag()).or_default() += 1;
    }

    /// Records a request or connection the inbound policy refused (`reason`: a closed set,
    /// e.g. `plaintext`, `deny-rule`, `no-allow-rule`).
    pub fn record_denial(&self, reason: &'static str) {
        let mut denials = self
            .denials
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *denials.entry(reason).or_default() += 1;
    }

    pub fn tcp_opened(&self) {
        self.tcp_opened.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tcp_closed(&self, sent: u64, received: u64) {
        self.tcp_closed.fetch_add(1, Ordering::Relaxed);
        self.tcp_sent.fetch_add(sent, Ordering::Relaxed);
        self.tcp_received.fetch_add(received, Ordering::Relaxed);
    }
}

/// The labels that select a [`ServiceMetrics`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ServiceKey {
    direction: Direction,
    service: Arc<str>,
    tls: Tls,
    /// The peer's SPIFFE ID (inbound: the client proved it); empty when unknown.
    peer: Arc<str>,
}

impl ServiceKey {
    fn labels(&self) -> String {
        format!(
            "direction=\"{}\",service=\"{}\",tls=\"{}\",peer_identity=\"{}\"",
            self.direction.as_str(),
            escape(&self.service),
            self.tls.as_str(),
            escape(&self.peer)
        )
    }
}

/// A TCP counter: its name, help text and where it lives in [`ServiceMetrics`].
type TcpCounter = (
    &'static str,
    &'static str,
    fn(&ServiceMetrics) -> &AtomicU64,
);

/// All metrics of one proxy. Built once and passed to whoever records.
#[derive(Default)]
pub struct Metrics {
    services: Mutex<BTreeMap<ServiceKey, Arc<ServiceMetrics>>>,
    /// mTLS handshakes that failed, by direction and reason (a closed set from the verifier).
    handshake_failures: Mutex<BTreeMap<(Direction, &'static str), u64>>,
}

impl Metrics {
    /// The metrics of plaintext traffic of one (direction, service) pair; called once per
    /// connection.
    pub fn service(&self, direction: Direction, service: &str) -> Arc<ServiceMetrics> {
        self.connection(direction, service, Tls::None, None)
    }

    /// The metrics of one connection's labels; called once per connection.
    pub fn connection(
        &self,
        direction: Direction,
        service: &str,
        tls: Tls,
        peer: Option<&SpiffeId>,
    ) -> Arc<ServiceMetrics> {
        let key = ServiceKey {
            direction,
            service: Arc::from(service),
            tls,
            peer: peer.map_or_else(|| Arc::from(""), |id| Arc::from(id.to_string())),
        };
        let mut services = self
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        services
            .entry(key)
            .or_insert_with(|| Arc::new(ServiceMetrics::new()))
            .clone()
    }

    /// Counts an mTLS handshake that failed, with the verifier's reason.
    pub fn record_handshake_failure(&self, direction: Direction, reason: &'static str) {
        let mut failures = self
            .handshake_failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *failures.entry((direction, reason)).or_default() += 1;
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let services: Vec<_> = {
            let services = self
                .services
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            services
                .iter()
                .map(|(key, m)| (key.labels(), m.clone()))
                .collect()
        };
        let mut out = String::with_capacity(4096);

        header(
            &mut out,
            "skiff_requests_total",
            "counter",
            "HTTP responses sent downstream, by status code.",
        );
        for (labels, m) in &services {
            for (code, count) in m.responses.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "skiff_requests_total{{{},code=\"{code}\"}} {count}",
                        labels
                    );
                }
            }
        }
        header(
            &mut out,
            "skiff_proxy_errors_total",
            "counter",
            "Responses the proxy generated itself, by reason (the x-skiff-error value).",
        );
        for (labels, m) in &services {
            let failures = m
                .failures
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            for (reason, count) in failures {
                let _ = writeln!(
                    out,
                    "skiff_proxy_errors_total{{{},reason=\"{reason}\"}} {count}",
                    labels
                );
            }
        }
        header(
            &mut out,
            "skiff_request_duration_seconds",
            "histogram",
            "Time from receiving a request to sending its response headers.",
        );
        for (labels, m) in &services {
            let count = m.duration_count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (bound, bucket) in DURATION_BUCKETS.iter().zip(&m.duration_buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "skiff_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "skiff_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let sum = m.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "skiff_request_duration_seconds_sum{{{labels}}} {sum}");
            let _ = writeln!(
                out,
                "skiff_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
        header(
            &mut out,
            "skiff_denied_total",
            "counter",
            "Requests and connections refused by the inbound policy, by reason.",
        );
        for (labels, m) in &services {
            let denials = m
                .denials
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            for (reason, count) in denials {
                let _ = writeln!(
                    out,
                    "skiff_denied_total{{{labels},reason=\"{reason}\"}} {count}"
                );
            }
        }
        header(
            &mut out,
            "skiff_tls_handshake_failures_total",
            "counter",
            "mTLS handshakes between sidecars that failed, by reason.",
        );
        let failures = self
            .handshake_failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for ((direction, reason), count) in failures {
            let _ = writeln!(
                out,
                "skiff_tls_handshake_failures_total{{direction=\"{}\",reason=\"{reason}\"}} {count}",
                direction.as_str()
            );
        }
        let tcp: [TcpCounter; 4] = [
            (
                "skiff_tcp_connections_opened_total",
                "TCP connections accepted.",
                |m| &m.tcp_opened,
            ),
            (
                "skiff_tcp_connections_closed_total",
                "TCP connections closed.",
                |m| &m.tcp_closed,
            ),
            (
                "skiff_tcp_sent_bytes_total",
                "Bytes sent to the downstream peer, counted when a connection closes.",
                |m| &m.tcp_sent,
            ),
            (
                "skiff_tcp_received_bytes_total",
                "Bytes received from the downstream peer, counted when a connection closes.",
                |m| &m.tcp_received,
            ),
        ];
        for (name, help, field) in tcp {
            header(&mut out, name, "counter", help);
            for (labels, m) in &services {
                let value = field(m).load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{{}}} {value}", labels);
            }
        }
        out
    }
}

/// The resilience state of every destination in use: retries, the budget, ejections, the
/// breaker and the bulkheads. Read at scrape time from [`Destinations`]; the label
/// `destination` is `namespace/name:port`.
pub fn render_destinations(destinations: &Destinations, now: Instant) -> String {
    let live = destinations.live();
    let mut out = String::with_capacity(1024);
    let mut family =
        |name: &str, kind: &str, help: &str, samples: &dyn Fn(&DestinationState) -> Vec<Sample>| {
            header(&mut out, name, kind, help);
            for state in &live {
                let destination = escape(&state.label);
                for (label, value) in samples(state) {
                    let _ = match label {
                        Some((key, label)) => writeln!(
                            out,
                            "{name}{{destination=\"{destination}\",{key}=\"{label}\"}} {value}"
                        ),
                        None => writeln!(out, "{name}{{destination=\"{destination}\"}} {value}"),
                    };
                }
            }
        };
    family(
        "skiff_retries_total",
        "counter",
        "Attempts after the first, by reason: nothing-sent (connect failure, refused stream), configured (a retry condition matched), hedge.",
        &|state| {
            RetryReason::ALL
                .iter()
                .map(|r| (Some(("reason", r.as_str())), state.retries(*r)))
                .collect()
        },
    );
    family(
        "skiff_retries_refused_total",
        "counter",
        "Retries and hedges not sent because the retry budget or the retries bulkhead was spent.",
        &|state| vec![(None, state.retries_refused.load(Ordering::Relaxed))],
    );
    family(
        "skiff_outlier_ejections_total",
        "counter",
        "Endpoints ejected, by reason.",
        &|state| {
            EjectionReason::ALL
                .iter()
                .map(|r| (Some(("reason", r.as_str())), state.endpoints.ejections(*r)))
                .collect()
        },
    );
    family(
        "skiff_ejected_endpoints",
        "gauge",
        "Endpoints ejected now.",
        &|state| vec![(None, state.endpoints.ejected(now) as u64)],
    );
    family(
        "skiff_circuit_breaker_state",
        "gauge",
        "The destination's circuit breaker: 0 closed, 1 open, 2 half-open.",
        &|state| vec![(None, u64::from(state.breaker.state(now).gauge()))],
    );
    family(
        "skiff_circuit_breaker_transitions_total",
        "counter",
        "Times the breaker entered each state.",
        &|state| {
            [
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Closed,
            ]
            .iter()
            .map(|to| {
                (
                    Some(("state", to.as_str())),
                    state.breaker.transitions_into(*to),
                )
            })
            .collect()
        },
    );
    family(
        "skiff_destination_in_flight",
        "gauge",
        "Bulkhead use: requests and retries in flight, open connections, requests waiting for a connection.",
        &|state| {
            let bulkhead = &state.bulkhead;
            vec![
                (Some(("kind", "requests")), u64::from(bulkhead.requests.current())),
                (Some(("kind", "retries")), u64::from(bulkhead.retries.current())),
                (Some(("kind", "connections")), u64::from(bulkhead.connections.open())),
                (Some(("kind", "pending")), u64::from(bulkhead.connections.pending())),
            ]
        },
    );
    out
}

/// One sample of a destination metric: an optional extra label (name, value) and the value.
type Sample = (Option<(&'static str, &'static str)>, u64);

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_histogram_and_tcp_counters() {
        let metrics = Metrics::default();
        let echo = metrics.service(Direction::Outbound, "shop/echo");
        echo.record_response(200, Duration::from_millis(3));
        echo.record_response(200, Duration::from_millis(30));
        echo.record_response(503, Duration::from_millis(1));
        echo.record_failure(Failure::NoHealthyEndpoint);
        echo.tcp_opened();
        echo.tcp_closed(10, 20);
        assert!(Arc::ptr_eq(
            &echo,
            &metrics.service(Direction::Outbound, "shop/echo")
        ));

        let text = metrics.render();
        let expect = [
            "skiff_requests_total{direction=\"outbound\",service=\"shop/echo\",tls=\"none\",peer_identity=\"\",code=\"200\"} 2",
            "skiff_requests_total{direction=\"outbound\",service=\"shop/echo\",tls=\"none\",peer_identity=\"\",code=\"503\"} 1",
            "skiff_proxy_errors_total{direction=\"outbound\",service=\"shop/echo\",tls=\"none\",peer_identity=\"\",reason=\"no-healthy-endpoint\"} 1",
            "skiff_request_duration_seconds_bucket{direction=\"outbound\",service=\"shop/echo\",tls=\"none\",peer_identity=\"\",le=\"0.005\"} 2",
            "skiff_request_duration_seconds_bucket{direction=\"outbound\",service=\"shop/echo\",tls=\"none\",peer_identity=\"\",le=\"+Inf\"} 3",
            "skiff_request_duration_seconds_count{direction=\"outbound\",service=\"shop/echo\",tls=\"none\",peer_identity=\"\"} 3",
            "skiff_tcp_connections_opened_total{direction=\"outbound\",service=\"shop/echo\",tls=\"none\",peer_identity=\"\"} 1",
            "skiff_tcp_sent_bytes_total{direction=\"outbound\",service=\"shop/echo\",tls=\"none\",peer_identity=\"\"} 10",
            "skiff_tcp_received_bytes_total{direction=\"outbound\",service=\"shop/echo\",tls=\"none\",peer_identity=\"\"} 20",
        ];
        for line in expect {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }

    #[test]
    fn destinations_render_every_family_with_their_labels() {
        let destinations = Destinations::default();
        let now = Instant::now();
        let state = destinations.destination("shop/web", 80, &Default::default(), now);
        state.count_retry(RetryReason::Hedge);
        let text = render_destinations(&destinations, now);
        for line in [
            "skiff_retries_total{destination=\"shop/web:80\",reason=\"hedge\"} 1",
            "skiff_retries_total{destination=\"shop/web:80\",reason=\"nothing-sent\"} 0",
            "skiff_retries_refused_total{destination=\"shop/web:80\"} 0",
            "skiff_ejected_endpoints{destination=\"shop/web:80\"} 0",
            "skiff_circuit_breaker_state{destination=\"shop/web:80\"} 0",
            "skiff_circuit_breaker_transitions_total{destination=\"shop/web:80\",state=\"open\"} 0",
            "skiff_destination_in_flight{destination=\"shop/web:80\",kind=\"pending\"} 0",
            "# TYPE skiff_outlier_ejections_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
