//! The accept loop both servers share: accept until shutdown, then give the connections still
//! open a moment to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::shutdown::ShutdownSignal;

/// How long connections get to close after shutdown before they are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Spawns `handle` for every accepted connection until `shutdown`, then waits (at most
/// [`SHUTDOWN_GRACE`]) for the connections to end; each handler watches `shutdown` itself.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    mut shutdown: ShutdownSignal,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(handle(stream, peer));
                }
                Err(error) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(listener = name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = shutdown.requested() => break,
        }
    }
    drop(listener);
    let closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, closed).await.is_err() {
        tracing::warn!(
            listener = name,
            open = connections.len(),
            "connections still open after shutdown; dropping them"
        );
        connections.shutdown().await;
    }
}
