//! One signal every server and session of the control plane watches to stop: SIGTERM in
//! `main`, the end of a test.

use tokio::sync::watch;

/// Owner side: requests the shutdown. Dropping it requests it too.
#[derive(Debug)]
pub struct Shutdown {
    requested: watch::Sender<bool>,
}

/// Watcher side, cloned into every server, connection and session.
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    requested: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            requested: watch::Sender::new(false),
        }
    }

    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            requested: self.requested.subscribe(),
        }
    }

    pub fn request(&self) {
        self.requested.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl ShutdownSignal {
    /// Resolves once shutdown is requested (immediately if it already was).
    pub async fn requested(&mut self) {
        // An error means the owner is gone, which is a request too.
        let _ = self.requested.wait_for(|requested| *requested).await;
    }
}
