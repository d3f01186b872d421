//! The synchronizer: on an agent's request, gathers the changes the destination lacks and sends
//! them to the destination's collector batch by batch, waiting for the success message after
//! each before sending the next, then reports completion to the agent (seed 000).
//!
//! - [`serve`]: the daemon (a bound listener and a shutdown future).
//! - `export`: one session, from the collector's knowledge to the completion message.
//! - [`info`]: `synchronizer info` — what a store is and knows.

mod export;
pub mod info;

use std::future::Future;
use std::path::PathBuf;

use shared::ipc::{LocalStream, SocketListener};
use shared::protocol::Connection;
use shared::shutdown::Shutdown;

/// Serves exports from the store at `store` until `stop` resolves.
pub async fn serve(listener: SocketListener, store: PathBuf, stop: impl Future<Output = ()>) {
    shared::daemon::serve(listener, stop, move |stream, shutdown| {
        let store = store.clone();
        async move { handle(stream, store, shutdown).await }
    })
    .await
}

async fn handle(stream: LocalStream, store: PathBuf, shutdown: Shutdown) {
    let mut conn = Connection::new(stream);
    if let Err(error) = export::serve_agent(&mut conn, &store, shutdown).await {
        shared::daemon::report_failure(&mut conn, &error, "export").await;
    }
}
