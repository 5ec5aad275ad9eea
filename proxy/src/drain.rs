//! Graceful shutdown (DESIGN.md §9): one signal that every listener and connection watches,
//! and a count of connections still in flight so the process can exit as soon as they finish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

/// Owner side: starts the drain and waits for connections to finish.
#[derive(Clone)]
pub struct Drain {
    started: Arc<watch::Sender<bool>>,
    active: Arc<Active>,
}

/// Connections currently open, and a wake-up for whoever waits for zero.
#[derive(Default)]
struct Active {
    count: AtomicUsize,
    idle: Notify,
}

/// Watcher side, held by every server and connection.
#[derive(Clone)]
pub struct DrainSignal {
    started: watch::Receiver<bool>,
    active: Arc<Active>,
}

/// Held for the life of one proxied connection; dropping it may let a drain finish.
pub struct ConnectionGuard {
    active: Arc<Active>,
}

impl Drain {
    pub fn new() -> Self {
        let (started, _) = watch::channel(false);
        Drain {
            started: Arc::new(started),
            active: Arc::default(),
        }
    }

    pub fn signal(&self) -> DrainSignal {
        DrainSignal {
            started: self.started.subscribe(),
            active: self.active.clone(),
        }
    }

    /// Starts draining; calling it again does nothing.
    pub fn start(&self) {
        self.started.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.started.borrow()
    }

    /// Connections that are still open.
    pub fn active_connections(&self) -> usize {
        self.active.count.load(Ordering::Acquire)
    }

    /// Resolves once no proxied connection is open.
    pub async fn all_connections_closed(&self) {
        loop {
            let idle = self.active.idle.notified();
            if self.active_connections() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Drain::new()
    }
}

impl DrainSignal {
    /// Resolves when the drain starts (immediately if it already has).
    pub async fn started(&mut self) {
        // An error means the `Drain` is gone, which only happens at process exit.
        let _ = self.started.wait_for(|started| *started).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.started.borrow()
    }

    /// Counts a connection as in flight until the guard is dropped.
    pub fn track_connection(&self) -> ConnectionGuard {
        self.active.count.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard {
            active: self.active.clone(),
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.active.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.active.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_finishes_when_the_last_connection_closes() {
        let drain = Drain::new();
        let mut signal = drain.signal();
        let first = signal.track_connection();
        let second = signal.track_connection();
        drain.start();
        signal.started().await;
        assert!(signal.is_draining());
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.all_connections_closed().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still open");
        assert_eq!(drain.active_connections(), 1);
        drop(second);
        waiter.await.unwrap();
        assert_eq!(drain.active_connections(), 0);
    }
}
