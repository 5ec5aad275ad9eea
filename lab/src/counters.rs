//! Proof that traffic went through both sidecars: a counter of the client's sidecar (outbound,
//! for the service) and of the server's sidecar (inbound) are read before the traffic and must
//! have grown after it.

use crate::pod::Sidecar;

/// The requests counter (HTTP, HTTP/2, gRPC, WebSocket upgrades).
pub const REQUESTS: &str = "skiff_requests_total";
/// The TCP connections counter (opaque TCP and passthrough).
pub const TCP_OPENED: &str = "skiff_tcp_connections_opened_total";

/// A counter read on the client's sidecar (outbound, `service`) and the server's (inbound).
pub struct PathCounters<'a> {
    client: &'a Sidecar,
    server: &'a Sidecar,
    metric: String,
    service: String,
    client_before: f64,
    server_before: f64,
}

impl<'a> PathCounters<'a> {
    /// Reads `metric` now: `{direction="outbound",service=SERVICE}` on `client`, and
    /// `{direction="inbound"}` on `server` (whatever the inbound side names the service).
    pub fn read(client: &'a Sidecar, server: &'a Sidecar, metric: &str, service: &str) -> Self {
        let mut counters = PathCounters {
            client,
            server,
            metric: metric.to_string(),
            service: service.to_string(),
            client_before: 0.0,
            server_before: 0.0,
        };
        counters.client_before = counters.client_now();
        counters.server_before = counters.server_now();
        counters
    }

    fn client_now(&self) -> f64 {
        self.client.metric(&self.metric, &self.outbound())
    }

    fn server_now(&self) -> f64 {
        self.server
            .metric(&self.metric, &[("direction", "inbound")])
    }

    fn outbound(&self) -> [(&str, &str); 2] {
        [
            ("direction", "outbound"),
            ("service", self.service.as_str()),
        ]
    }

    /// Waits (bounded) until both counters grew by at least `n`; panics with the series and the
    /// logs otherwise. Returns the growth (client, server).
    pub fn assert_grew_by(&self, n: f64) -> (f64, f64) {
        let client =
            self.client
                .wait_metric(&self.metric, &self.outbound(), self.client_before + n);
        let server = self.server.wait_metric(
            &self.metric,
            &[("direction", "inbound")],
            self.server_before + n,
        );
        (client - self.client_before, server - self.server_before)
    }
}
