//! Inbound (port 15006): a connection addressed to this pod was redirected here. A peer
//! sidecar's mTLS is terminated and its identity read from its certificate; plaintext is
//! accepted only on PERMISSIVE ports; the inbound policy authorises; then the connection is
//! forwarded to the app on the port it was addressed to, at the pod's own address, never at
//! 127.0.0.1: a listener the app bound to localhost only stays private (DESIGN.md §3).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use skiff_api::config::MtlsMode;
use skiff_api::identity::{ALPN_HTTP1, ALPN_HTTP2, ALPN_TCP};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::app::Proxy;
use crate::detect::{self, Decision, Rewind};
use crate::http::forward::Upstream;
use crate::listener;
use crate::metrics::{Direction, Tls, UNKNOWN_SERVICE};
use crate::policy::Snapshot;
use crate::tls::{self, HelloCheck};

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

/// Handles one connection accepted on the inbound port: a peer sidecar's mTLS is
/// terminated (its identity comes from its certificate); anything else is plaintext, refused
/// on a STRICT port. Then the inbound policy and the app.
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
    // Until the first configuration arrives the proxy cannot know the workload's policy:
    // refusing is the only answer that cannot be wrong (the pod is not ready yet anyway).
    if !proxy.control.is_ready() {
        tracing::debug!(%peer, %original_dst, "inbound connection refused: no configuration yet");
        return;
    }
    let (service, decision, mode) = {
        let snapshot = proxy.snapshot.current();
        let (service, decision) =
            service_of(&snapshot, app.port(), &proxy.settings.server_first_ports);
        (service, decision, snapshot.authz.mode(app.port()))
    };
    // A sidecar speaks first (its ClientHello), so waiting costs it nothing; a plaintext
    // client of a server-first protocol is waiting for the app, so it only gets a moment.
    let wait = match (decision, mode) {
        (Decision::ServerFirst, MtlsMode::Permissive) => SERVER_FIRST_HELLO_WAIT,
        _ => proxy.settings.detect_timeout,
    };
    let mut stream = stream;
    let (read, hello) = match sniff(&mut stream, wait).await {
        Ok(sniffed) => sniffed,
        Err(error) => {
            tracing::debug!(%peer, %error, "inbound connection failed before its first bytes");
            return;
        }
    };
    match hello {
        Hello::Sidecar => {
            let stream = Rewind::new(read.freeze(), stream);
            let Some((tls, client)) = accept_sidecar(&proxy, stream, peer).await else {
                return;
            };
            let client_id = Arc::new(client.id);
            tracing::debug!(%peer, client = %client_id, alpn = %String::from_utf8_lossy(&client.alpn), "mTLS connection from a sidecar");
            let metrics = proxy.metrics.connection(
                Direction::Inbound,
                &service,
                Tls::Mutual,
                Some(&client_id),
            );
            let upstream = Upstream::Local {
                addr: app,
                snapshot: proxy.snapshot.clone(),
                client: Some(client_id),
            };
            crate::connection::serve_mesh(&proxy, tls, &client.alpn, upstream, metrics).await;
        }
        Hello::Plaintext => {
            let metrics = proxy
                .metrics
                .connection(Direction::Inbound, &service, Tls::None, None);
            if mode == MtlsMode::Strict {
                tracing::debug!(%peer, port = app.port(), "plaintext refused: the port is STRICT");
                metrics.record_denial("plaintext");
                return;
            }
            let upstream = Upstream::Local {
                addr: app,
                snapshot: proxy.snapshot.clone(),
                client: None,
            };
            crate::connection::serve(&proxy, stream, read, decision, upstream, metrics).await;
        }
    }
}

/// How long a plaintext client of a server-first port on a PERMISSIVE workload may be kept
/// waiting while the proxy checks whether a sidecar's ClientHello is coming.
const SERVER_FIRST_HELLO_WAIT: Duration = Duration::from_millis(50);

/// A ClientHello larger than this is not a sidecar's.
const MAX_HELLO_BYTES: usize = 16 * 1024;

/// Who is on the other end, judged from the first bytes.
#[derive(Debug, PartialEq, Eq)]
enum Hello {
    /// A TLS ClientHello offering one of the sidecar ALPNs.
    Sidecar,
    /// Anything else: plaintext, or the app's own TLS from a client outside the mesh.
    Plaintext,
}

/// Reads until the first bytes say whether a sidecar is calling, EOF, or `wait` passes.
/// Returns what was read, to be replayed.
async fn sniff(stream: &mut TcpStream, wait: Duration) -> std::io::Result<(BytesMut, Hello)> {
    let mut read = BytesMut::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if !read.is_empty() {
            match tls::inspect_client_hello(&read) {
                HelloCheck::NotTls => return Ok((read, Hello::Plaintext)),
                HelloCheck::ClientHello { alpn } => {
                    let sidecar = alpn.iter().any(|p| MESH_ALPNS.contains(&p.as_slice()));
                    let hello = if sidecar {
                        Hello::Sidecar
                    } else {
                        Hello::Plaintext
                    };
                    return Ok((read, hello));
                }
                HelloCheck::NeedMore if read.len() >= MAX_HELLO_BYTES => {
                    return Ok((read, Hello::Plaintext))
                }
                HelloCheck::NeedMore => {}
            }
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut read)).await {
            Ok(Ok(0)) | Err(_) => return Ok((read, Hello::Plaintext)),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
        }
    }
}

/// The ALPN values a sidecar offers another.
const MESH_ALPNS: [&[u8]; 3] = [ALPN_HTTP2, ALPN_HTTP1, ALPN_TCP];

/// Terminates a peer sidecar's mTLS; a failure is logged and counted with its reason.
async fn accept_sidecar(
    proxy: &Proxy,
    stream: Rewind<TcpStream>,
    peer: SocketAddr,
) -> Option<(
    tokio_rustls::server::TlsStream<Rewind<TcpStream>>,
    tls::Peer,
)> {
    let Some(identity) = &proxy.identity else {
        // Local mode: no certificate to answer with.
        tracing::debug!(%peer, "a sidecar offered mTLS, but this proxy has no identity");
        proxy
            .metrics
            .record_handshake_failure(Direction::Inbound, "no-local-identity");
        return None;
    };
    let timeout = proxy.settings.tls_handshake_timeout;
    match tokio::time::timeout(timeout, tls::accept(identity, stream)).await {
        Ok(Ok(accepted)) => Some(accepted),
        Ok(Err(error)) => {
            tracing::info!(%peer, reason = error.reason(), %error, "mTLS handshake refused");
            proxy
                .metrics
                .record_handshake_failure(Direction::Inbound, error.reason());
            None
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "mTLS handshake timed out");
            proxy
                .metrics
                .record_handshake_failure(Direction::Inbound, "timeout");
            None
        }
    }
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
