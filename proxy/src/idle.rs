//! Connection activity: an I/O wrapper counts every byte read and written, so a watcher can
//! end a connection when nothing moved for the idle period and no request is in flight, and the
//! byte metrics come from one place for TCP and HTTP alike. Nothing reads the clock per I/O:
//! the watcher compares counters once per period.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much a connection has moved, and how many requests it is serving.
#[derive(Default)]
pub struct Activity {
    /// Requests in flight; an HTTP connection waiting on a slow upstream is not idle.
    requests: AtomicUsize,
    /// Requests finished; a request that ends counts as activity.
    finished: AtomicU64,
    /// Bytes read from the wrapped stream, for the connection's byte metrics.
    received: AtomicU64,
    /// Bytes written to the wrapped stream.
    sent: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::default()
    }

    /// Bytes (sent, received) through the wrapped stream so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    /// Marks a request in flight until the guard drops.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard {
            activity: self.clone(),
        }
    }

    /// Everything that counts as activity, summed: it changes whenever anything happens.
    fn progress(&self) -> u64 {
        let (sent, received) = self.bytes();
        sent.wrapping_add(received)
            .wrapping_add(self.finished.load(Ordering::Relaxed))
    }

    /// Resolves once a whole `period` passed with no byte moved, no request finished and none
    /// in flight. Detection lags by up to one more period; idle timeouts are coarse by nature.
    pub async fn idle_for(&self, period: Duration) {
        let mut seen = self.progress();
        loop {
            tokio::time::sleep(period).await;
            let now = self.progress();
            if now == seen && self.requests.load(Ordering::Relaxed) == 0 {
                return;
            }
            seen = now;
        }
    }
}

pub struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.activity.finished.fetch_add(1, Ordering::Relaxed);
        self.activity.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An I/O object that records activity on every successful read or write.
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.activity
                .received
                .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.activity.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.activity.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_after_a_quiet_period_without_requests() {
        let activity = Activity::new();
        let (a, mut b) = tokio::io::duplex(64);
        let mut tracked = Tracked::new(a, activity.clone());
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_for(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(8)).await;
        b.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        tracked.read_exact(&mut byte).await.unwrap();
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(
            !idle.is_finished(),
            "a read 8 s ago keeps the connection alive"
        );

        let request = activity.request();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            !idle.is_finished(),
            "a request in flight keeps the connection alive"
        );
        drop(request);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!idle.is_finished(), "a request that just ended is activity");
        tokio::time::sleep(Duration::from_secs(16)).await;
        assert!(
            idle.is_finished(),
            "quiet for a whole period with nothing in flight (detected within two)"
        );
    }
}
