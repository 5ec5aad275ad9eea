//! Inbound (port 15006): a connection addressed to this pod was redirected here. It is
//! forwarded to the app on the port it was addressed to, at the pod's own address, never at
//! 127.0.0.1: a listener the app bound to localhost only stays private (DESIGN.md §3).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::app::Proxy;
use crate::detect;
use crate::http::forward::Upstream;
use crate::listener;
use crate::metrics::{Direction, UNKNOWN_SERVICE};
use crate::policy::Snapshot;

/// Ports of the proxy itself. A connection addressed to one of them from outside would make
/// the proxy call itself (or reach the localhost-only admin port); it is refused.
pub const PROXY_PORTS: [u16; 5] = [15000, 15001, 15006, 15020, 15021];

/// What to do with an inbound connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Forward to the app at this address.
    Forward(SocketAddr),
    /// Close the connection, for the stated reason.
    Refuse(&'static str),
}

pub fn plan(pod_ips: &[IpAddr], original_dst: SocketAddr) -> Plan {
    if PROXY_PORTS.contains(&original_dst.port()) {
        return Plan::Refuse("addressed to a port of the proxy itself");
    }
    match pod_ips
        .iter()
        .find(|ip| ip.is_ipv4() == original_dst.is_ipv4())
    {
        Some(ip) => Plan::Forward(SocketAddr::new(*ip, original_dst.port())),
        None => Plan::Refuse("the pod has no address of the destination's family"),
    }
}

/// Handles one connection accepted on the inbound port.
pub async fn handle(proxy: Arc<Proxy>, stream: TcpStream, peer: SocketAddr) {
    let _in_flight = proxy.drain.track_connection();
    let original_dst = match listener::original_dst(&stream) {
        Ok(addr) => addr,
        Err(error) => {
            tracing::debug!(%peer, %error, "inbound connection without an original destination, closing");
            return;
        }
    };
    let app = match plan(&proxy.settings.pod_ips, original_dst) {
        Plan::Forward(app) => app,
        Plan::Refuse(reason) => {
            tracing::debug!(%peer, %original_dst, reason, "inbound connection refused");
            return;
        }
    };
    let (service, decision) = service_of(
        &proxy.snapshot.current(),
        app.port(),
        &proxy.settings.server_first_ports,
    );
    let metrics = proxy.metrics.service(Direction::Inbound, &service);
    crate::connection::serve(&proxy, stream, decision, Upstream::Local(app), metrics).await;
}

/// The Service this pod serves on `port` (for the metric label) and how to treat its bytes.
fn service_of(
    snapshot: &Snapshot,
    port: u16,
    server_first_ports: &[u16],
) -> (Arc<str>, detect::Decision) {
    match snapshot.inbound.get(&port) {
        Some(target) => (
            target.service.clone(),
            detect::decide(target.protocol, port, server_first_ports),
        ),
        None => (
            Arc::from(UNKNOWN_SERVICE),
            detect::decide(None, port, server_first_ports),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_to_the_pod_address_never_to_localhost_or_the_proxy() {
        let pod: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let table = [
            (
                "10.0.0.5:8080",
                Plan::Forward("10.0.0.5:8080".parse().unwrap()),
            ),
            // Even a destination that claims to be loopback goes to the pod address.
            (
                "127.0.0.1:8080",
                Plan::Forward("10.0.0.5:8080".parse().unwrap()),
            ),
            (
                "[fd00::5]:8080",
                Plan::Forward("[fd00::5]:8080".parse().unwrap()),
            ),
            (
                "10.0.0.5:15000",
                Plan::Refuse("addressed to a port of the proxy itself"),
            ),
            (
                "10.0.0.5:15001",
                Plan::Refuse("addressed to a port of the proxy itself"),
            ),
            (
                "10.0.0.5:15006",
                Plan::Refuse("addressed to a port of the proxy itself"),
            ),
        ];
        for (dst, expected) in table {
            assert_eq!(plan(&pod, dst.parse().unwrap()), expected, "{dst}");
        }
        assert!(matches!(
            plan(&pod[..1], "[fd00::5]:80".parse().unwrap()),
            Plan::Refuse(_)
        ));
    }
}
