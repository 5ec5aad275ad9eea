//! Opaque TCP: copy bytes both ways, pass half-closes on, and count what moved.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::{ConnectError, Failure};
use crate::idle::{Activity, Tracked};

/// Buffer per direction: large enough for bulk throughput, small enough for many idle
/// connections (buffers are only allocated while a copy is running).
const COPY_BUFFER_BYTES: usize = 64 * 1024;

/// Opens a TCP connection to `addr` within `timeout`, with Nagle off.
pub async fn connect(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(ConnectError::Refused { addr, source }),
        Err(_) => return Err(ConnectError::TimedOut { addr, timeout }),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Copies between the downstream and upstream until both sides have closed, a side fails,
/// or nothing moved for `idle_timeout`. EOF on one side is passed on as a half-close
/// (`shutdown(SHUT_WR)`) and the other direction keeps flowing.
/// `downstream` is expected to be [`Tracked`] by `activity`, which measures idleness and bytes.
/// Returns [`Failure::IdleTimeout`] when the connection was closed for idleness.
pub async fn copy<D, U>(
    downstream: &mut Tracked<D>,
    upstream: U,
    idle_timeout: Duration,
    activity: &Activity,
) -> Option<Failure>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream = upstream;
    tokio::select! {
        copied = tokio::io::copy_bidirectional_with_sizes(downstream, &mut upstream, COPY_BUFFER_BYTES, COPY_BUFFER_BYTES) => {
            if let Err(error) = copied {
                tracing::debug!(%error, "tcp copy ended with an error");
            }
            None
        }
        () = activity.idle_for(idle_timeout) => {
            tracing::debug!(?idle_timeout, "tcp connection idle, closing");
            Some(Failure::IdleTimeout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_close_is_passed_on_and_the_reply_still_flows() {
        let activity = Activity::new();
        let (mut client, proxy_down) = tokio::io::duplex(1024);
        let (proxy_up, mut server) = tokio::io::duplex(1024);
        let proxy = tokio::spawn({
            let activity = activity.clone();
            async move {
                let mut downstream = Tracked::new(proxy_down, activity.clone());
                copy(
                    &mut downstream,
                    proxy_up,
                    Duration::from_secs(60),
                    &activity,
                )
                .await
            }
        });

        client.write_all(b"question").await.unwrap();
        client.shutdown().await.unwrap();
        let mut asked = String::new();
        server.read_to_string(&mut asked).await.unwrap();
        assert_eq!(
            asked, "question",
            "server saw the client's EOF after the data"
        );
        server.write_all(b"answer").await.unwrap();
        server.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "answer");
        proxy.await.unwrap();
        assert_eq!(
            activity.bytes(),
            (6, 8),
            "sent the answer downstream, received the question"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed() {
        let activity = Activity::new();
        let (_client, proxy_down) = tokio::io::duplex(1024);
        let (proxy_up, _server) = tokio::io::duplex(1024);
        let mut downstream = Tracked::new(proxy_down, activity.clone());
        // Returns only because of the idle timeout: both peers stay open and silent.
        copy(&mut downstream, proxy_up, Duration::from_secs(5), &activity).await;
        assert_eq!(activity.bytes(), (0, 0));
    }
}
