//! Shutdown: daemons take a future that resolves when they should stop (as mini-redis's server
//! does), so the binaries pass the SIGTERM/SIGINT future and tests pass one of their own.
//! Inside a daemon a [`Shutdown`] handle tells each connection to stop at a batch boundary.

use tokio::sync::watch;

/// Installs the SIGTERM/SIGINT handlers *now* and returns a future that resolves on either (or
/// at once if they cannot be installed). Call it before binding a socket: a signal sent as soon
/// as the socket answers must stop the daemon cleanly, not kill it by the default action.
pub fn signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stopping");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
    }
}

/// Sends the shutdown to every [`Shutdown`] handle.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A connection's view of the shutdown.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A trigger and its first handle.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Whether shutdown was asked for (checked at batch boundaries).
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is asked for.
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}
