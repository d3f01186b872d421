//! The accept loop both daemons share: one task per connection, a shutdown future that stops
//! accepting, and a [`Shutdown`] handle each connection checks at batch boundaries. Returns once
//! every connection has ended; the socket file is removed when the listener drops.

use std::future::Future;

use tokio::task::JoinSet;

use crate::ipc::{LocalStream, SocketListener};
use crate::shutdown::{self, Shutdown};

/// Serves `listener` until `stop` resolves, running `handler` for each connection.
pub async fn serve<F, Fut>(listener: SocketListener, stop: impl Future<Output = ()>, handler: F)
where
    F: Fn(LocalStream, Shutdown) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (trigger, shutdown) = shutdown::channel();
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    connections.spawn(handler(stream, shutdown.clone()));
                }
                Err(error) => tracing::warn!(%error, "refused a connection"),
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "a connection task failed");
                }
            }
        }
    }
    tracing::info!(
        socket = %listener.path().display(),
        open = connections.len(),
        "stopping: letting open sessions reach a batch boundary"
    );
    drop(listener);
    trigger.fire();
    while connections.join_next().await.is_some() {}
}
