//! The daemon's signals: SIGTERM and SIGINT stop it, SIGHUP asks for a config reload. The
//! handlers are installed before `agent run` starts anything, so a signal that comes early is
//! never met by the default action (which would end the agent and orphan its children).

use std::future::Future;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tracing::info;

/// The installed handlers.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The stop (resolves at the first SIGTERM or SIGINT) and the reload requests (one
    /// message per SIGHUP, forwarded by a task that ends with the runtime).
    pub fn split(self) -> (impl Future<Output = ()>, mpsc::UnboundedReceiver<()>) {
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = self;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                info!(signal = "SIGHUP", "reloading the config");
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
        let stop = async move {
            tokio::select! {
                _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
                _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
            }
        };
        (stop, rx)
    }
}
