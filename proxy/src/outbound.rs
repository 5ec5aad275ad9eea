//! Outbound (port 15001): the app dialled some `ip:port`; iptables sent it here. Known service
//! addresses are balanced over the service's endpoints; anything else passes through as TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::app::Proxy;
use crate::detect::{self, Decision};
use crate::http::forward::Upstream;
use crate::idle::{Activity, Tracked};
use crate::listener;
use crate::metrics::{Direction, Tls, PASSTHROUGH};
use crate::policy::{Destination, ServiceTarget, Snapshot};

/// What to do with an outbound connection; a pure function of the snapshot.
#[derive(Debug)]
pub enum Plan {
    /// A mesh service: balance over its endpoints, speaking the decided protocol.
    Mesh {
        target: Arc<ServiceTarget>,
        decision: Decision,
    },
    /// Unknown to the mesh: connect to the original destination and copy bytes.
    Passthrough,
}

pub fn plan(snapshot: &Snapshot, original_dst: SocketAddr, server_first_ports: &[u16]) -> Plan {
    match snapshot.service_at(original_dst) {
        Some(target) => Plan::Mesh {
            target: target.clone(),
            decision: detect::decide(target.protocol, original_dst.port(), server_first_ports),
        },
        None => Plan::Passthrough,
    }
}

/// Handles one connection accepted on the outbound port.
pub async fn handle(proxy: Arc<Proxy>, stream: TcpStream) {
    let _in_flight = proxy.drain.track_connection();
    let original_dst = match listener::original_dst(&stream) {
        Ok(addr) => addr,
        Err(error) => {
            tracing::debug!(%error, "outbound connection without an original destination, closing");
            return;
        }
    };
    let snapshot = proxy.snapshot.current();
    match plan(&snapshot, original_dst, &proxy.settings.server_first_ports) {
        Plan::Mesh { target, decision } => {
            let tls = if proxy.identity.is_some() && target.endpoints.all_in_mesh() {
                Tls::Mutual
            } else {
                Tls::None
            };
            let metrics = proxy
                .metrics
                .connection(Direction::Outbound, &target.name, tls, None);
            drop(snapshot);
            let upstream = Upstream::Service {
                vip: original_dst,
                target,
                snapshot: proxy.snapshot.clone(),
            };
            let read = BytesMut::new();
            crate::connection::serve(&proxy, stream, read, decision, upstream, metrics).await;
        }
        Plan::Passthrough => {
            let metrics = proxy.metrics.service(Direction::Outbound, PASSTHROUGH);
            metrics.tcp_opened();
            let activity = Activity::new();
            let mut stream = Tracked::new(stream, activity.clone());
            let destination = Destination::plaintext(original_dst);
            crate::connection::copy_to(&proxy, &mut stream, &destination, &activity, &metrics)
                .await;
            let (sent, received) = activity.bytes();
            metrics.tcp_closed(sent, received);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Protocol, SERVER_FIRST_PORTS};

    const POLICY: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.1
  ports:
  - {name: http, port: 80, appProtocol: kubernetes.io/h2c}
  - {name: pg, port: 5432}
  - {name: other, port: 9000}
";

    #[test]
    fn plans_by_original_destination() {
        let workload = skiff_api::config::WorkloadRef::default();
        let files = [("p.yaml".to_string(), POLICY.to_string())];
        let config = crate::policy::config_from_files(&files, &workload, &[]).unwrap();
        let snapshot = Snapshot::from_config(
            "test".into(),
            config,
            &crate::policy::ConfigLimits::default(),
            &crate::resilience::destination::Destinations::default(),
        )
        .unwrap();
        let table = [
            ("10.96.0.1:80", Some(Decision::Declared(Protocol::Http2))),
            ("10.96.0.1:5432", Some(Decision::ServerFirst)),
            ("10.96.0.1:9000", Some(Decision::Detect)),
            ("10.96.0.1:81", None),
            ("10.0.0.7:80", None),
        ];
        for (dst, expected) in table {
            let planned = plan(&snapshot, dst.parse().unwrap(), &SERVER_FIRST_PORTS);
            match (planned, expected) {
                (Plan::Mesh { target, decision }, Some(expected)) => {
                    assert_eq!(&*target.name, "default/web", "{dst}");
                    assert_eq!(decision, expected, "{dst}");
                }
                (Plan::Passthrough, None) => {}
                (planned, expected) => panic!("{dst}: planned {planned:?}, expected {expected:?}"),
            }
        }
    }
}
