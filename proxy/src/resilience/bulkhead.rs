//! Bulkheads (DESIGN.md §6): counting limits that keep one destination from tying up the
//! proxy — requests and retries in flight, open connections and requests waiting for one —
//! and the proxy-wide in-flight cap that sheds load. Beyond a limit a call is refused at once
//! (503 `overflow`), never queued without bound.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use skiff_api::traffic::ConnectionLimits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A counting limit (requests in flight, retries in flight, the proxy-wide in-flight cap for
/// load shedding): [`Limit::try_acquire`] never waits.
#[derive(Debug)]
pub struct Limit {
    current: AtomicU32,
    max: u32,
}

/// One unit of a [`Limit`], given back on drop.
#[derive(Debug)]
pub struct LimitGuard {
    limit: Arc<Limit>,
}

impl Limit {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Limit {
            current: AtomicU32::new(0),
            max,
        })
    }

    /// A unit when fewer than `max` are held; `None` otherwise.
    pub fn try_acquire(self: &Arc<Self>) -> Option<LimitGuard> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current < self.max).then_some(current + 1)
            })
            .ok()?;
        Some(LimitGuard {
            limit: self.clone(),
        })
    }

    /// Units held now.
    pub fn current(&self) -> u32 {
        self.current.load(Ordering::Acquire)
    }

    pub fn max(&self) -> u32 {
        self.max
    }
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        self.limit.current.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection bulkhead of one destination: at most `max_connections` open; a caller that
/// needs a new connection while all are in use waits (a pending request, served first come
/// first served) unless `max_pending` are already waiting, in which case it is refused at
/// once.
#[derive(Debug)]
pub struct ConnectionLimit {
    /// One permit per connection that may be open.
    connections: Arc<Semaphore>,
    max_connections: u32,
    /// Callers waiting for a permit.
    pending: AtomicU32,
    max_pending: u32,
}

/// Leave for one open connection, moved into the connection's task; released on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: OwnedSemaphorePermit,
}

/// `max_pending_requests` callers are already waiting for a connection.
#[derive(Debug, thiserror::Error)]
#[error("too many requests waiting for a connection")]
pub struct PendingOverflow;

/// Counts a waiting caller until the wait ends, however it ends (a cancelled waiter
/// included).
struct PendingGuard<'a>(&'a AtomicU32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionLimit {
    pub fn new(max_connections: u32, max_pending: u32) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            connections: Arc::new(Semaphore::new(max_connections as usize)),
            max_connections,
            pending: AtomicU32::new(0),
            max_pending,
        })
    }

    /// Leave to open a connection: at once when fewer than `max_connections` are open;
    /// otherwise after waiting for one to close, unless `max_pending` callers are already
    /// waiting ([`PendingOverflow`], at once). Dropping the future stops waiting.
    pub async fn acquire(self: &Arc<Self>) -> Result<ConnectionPermit, PendingOverflow> {
        if let Ok(permit) = self.connections.clone().try_acquire_owned() {
            return Ok(ConnectionPermit { _permit: permit });
        }
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                (pending < self.max_pending).then_some(pending + 1)
            })
            .map_err(|_| PendingOverflow)?;
        let _pending = PendingGuard(&self.pending);
        let permit = self
            .connections
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        Ok(ConnectionPermit { _permit: permit })
    }

    /// Connections open (permits held).
    pub fn open(&self) -> u32 {
        self.max_connections - self.connections.available_permits() as u32
    }

    /// Callers waiting for a connection.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Acquire)
    }
}

/// The bulkheads of one destination service, from its [`ConnectionLimits`].
#[derive(Debug)]
pub struct Bulkhead {
    /// Requests in flight (`max_requests`).
    pub requests: Arc<Limit>,
    /// Retries and hedges in flight (`max_retries`).
    pub retries: Arc<Limit>,
    /// Open connections and requests waiting for one (`max_connections`,
    /// `max_pending_requests`).
    pub connections: Arc<ConnectionLimit>,
    /// What they were built from, so a configuration change can tell whether to rebuild.
    limits: ConnectionLimits,
}

impl Bulkhead {
    pub fn new(limits: &ConnectionLimits) -> Self {
        Bulkhead {
            requests: Limit::new(limits.max_requests),
            retries: Limit::new(limits.max_retries),
            connections: ConnectionLimit::new(limits.max_connections, limits.max_pending_requests),
            limits: limits.clone(),
        }
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;

    use super::*;

    /// Lets spawned tasks run until they block.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn limit_refuses_beyond_max_and_releases_on_drop() {
        let limit = Limit::new(2);
        let a = limit.try_acquire().expect("first");
        let b = limit.try_acquire().expect("second");
        assert!(limit.try_acquire().is_none());
        assert_eq!((limit.current(), limit.max()), (2, 2));
        drop(a);
        assert_eq!(limit.current(), 1);
        let c = limit.try_acquire().expect("released unit");
        assert!(limit.try_acquire().is_none());
        drop((b, c));
        assert_eq!(limit.current(), 0);
        assert!(Limit::new(0).try_acquire().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn connections_up_to_max_are_immediate_and_counted() {
        let limit = ConnectionLimit::new(2, 0);
        let a = timeout(Duration::ZERO, limit.acquire())
            .await
            .unwrap()
            .unwrap();
        let _b = timeout(Duration::ZERO, limit.acquire())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(limit.open(), 2);
        // No room to wait: refused at once.
        let refused = timeout(Duration::ZERO, limit.acquire()).await;
        assert!(matches!(refused, Ok(Err(PendingOverflow))));
        drop(a);
        assert_eq!(limit.open(), 1);
        assert!(limit.acquire().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn pending_overflow_is_immediate() {
        let limit = ConnectionLimit::new(1, 1);
        let _open = limit.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await.map(drop) }
        });
        settle().await;
        assert_eq!(limit.pending(), 1);
        // The future is ready on its first poll, so a zero timeout does not fire.
        let refused = timeout(Duration::ZERO, limit.acquire()).await;
        assert!(matches!(refused, Ok(Err(PendingOverflow))));
        assert_eq!(limit.pending(), 1);
        assert!(!waiter.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_connection_lets_a_waiter_through() {
        let limit = ConnectionLimit::new(1, 4);
        let open = limit.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await }
        });
        settle().await;
        assert_eq!((limit.open(), limit.pending()), (1, 1));
        assert!(!waiter.is_finished());
        drop(open);
        let permit = waiter.await.unwrap().expect("waited for the connection");
        assert_eq!((limit.open(), limit.pending()), (1, 0));
        drop(permit);
        assert_eq!(limit.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_gives_back_its_pending_slot() {
        let limit = ConnectionLimit::new(1, 1);
        let open = limit.acquire().await.unwrap();
        let gave_up = timeout(Duration::from_secs(1), limit.acquire()).await;
        assert!(gave_up.is_err(), "should have waited");
        assert_eq!(limit.pending(), 0);
        // The slot is really free: another caller may wait, and gets the connection.
        let waiter = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await }
        });
        settle().await;
        assert_eq!(limit.pending(), 1);
        drop(open);
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(limit.open(), 0);
    }

    #[test]
    fn bulkhead_follows_its_limits() {
        let limits = ConnectionLimits {
            max_connections: 3,
            max_pending_requests: 4,
            max_requests: 5,
            max_retries: 6,
        };
        let bulkhead = Bulkhead::new(&limits);
        assert_eq!(bulkhead.requests.max(), 5);
        assert_eq!(bulkhead.retries.max(), 6);
        assert_eq!(bulkhead.connections.max_connections, 3);
        assert_eq!(bulkhead.connections.max_pending, 4);
        assert_eq!(bulkhead.limits(), &limits);
    }

    #[test]
    fn is_shareable() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Bulkhead>();
        assert_send_sync::<LimitGuard>();
        assert_send_sync::<ConnectionPermit>();
    }
}
