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

/// [`signal`], or with `supervised` also the end of stdin, whichever comes first.
///
/// An agent that spawns a daemon (`spawn = true`) holds the write end of a pipe that is the
/// daemon's stdin, and never writes to it. When the agent is gone, even by `kill -9`, the kernel
/// closes that end and the daemon reads end-of-file: it stops as on SIGTERM, at a batch boundary,
/// removing its socket. Without this, a killed agent left its daemons serving on, unsupervised,
/// and the next `agent run` could not start its own beside them (PRODUCT.md's kill -9 promise
/// covers every process, the agent too).
///
/// Call it where [`signal`] would be called: it installs the handlers now.
pub fn stop(supervised: bool) -> impl std::future::Future<Output = ()> {
    let signalled = signal();
    let parent = supervised.then(stdin_closed);
    async move {
        match parent {
            Some(parent) => tokio::select! {
                _ = signalled => {}
                _ = parent => {}
            },
            None => signalled.await,
        }
    }
}

/// Resolves when stdin reaches its end (or cannot be read). Read on a thread of its own, as
/// tokio reads stdin with blocking reads anyway, and the thread must not hold up the runtime's
/// shutdown: it is left blocked when the daemon stops for another reason.
fn stdin_closed() -> impl std::future::Future<Output = ()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 256];
            let reason = loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break "stdin closed".to_string(),
                    // Nothing is ever written; whatever comes is ignored.
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break format!("cannot read stdin: {e}"),
                }
            };
            let _ = tx.send(reason);
        });
    async move {
        if let Err(error) = spawned {
            // Serve on as an unsupervised daemon would, rather than stop for this.
            tracing::error!(%error, "cannot watch stdin for the agent's end; serving on until a signal");
            return std::future::pending().await;
        }
        let reason = rx
            .await
            .unwrap_or_else(|_| "the stdin watch ended".to_string());
        tracing::info!(
            reason = %reason,
            "shutting down: the agent that started this process is gone"
        );
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
