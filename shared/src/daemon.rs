//! The accept loop both daemons share: one task per connection, a shutdown future that stops
//! accepting, and a [`Shutdown`] handle each connection checks at batch boundaries. Returns once
//! every connection has ended; the socket file is removed when the listener drops.

use std::future::Future;

use tokio::task::JoinSet;

use crate::ipc::{LocalStream, SocketListener};
use crate::shutdown::{self, Shutdown};

/// Runs a piece of store work in place, on the calling thread.
///
/// Both daemons run a current-thread runtime (`#[tokio::main(flavor = "current_thread")]`), so
/// store work blocks their one thread on purpose: a session's batches are decoded and applied on
/// the same thread, and glibc's malloc keeps one arena instead of one per thread that ever ran a
/// batch, each holding its own high-water mark (measured: 23–33 MiB peak RSS for the collector
/// on a multi-thread runtime, see `bench/PROFILE.md`). Sessions still overlap at their awaits;
/// the other process of a session works while this one blocks.
pub fn store_work<T>(work: impl FnOnce() -> T) -> T {
    work()
}

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

/// Opens (creating if need be) the store, then binds the socket, so a file that is not a store
/// never gets a daemon serving it.
pub async fn bind_for_store(
    role: &'static str,
    store: &std::path::Path,
    socket: &std::path::Path,
) -> Result<SocketListener, crate::error::SessionError> {
    // A socket path the system cannot take is refused before the store is opened (and made).
    crate::ipc::check_socket_path(socket)?;
    let opened = crate::store::Store::open(store)?;
    let listener = SocketListener::bind(socket).await?;
    tracing::info!(role, store = %store.display(), replica = %opened.replica(), socket = %socket.display(), "serving");
    Ok(listener)
}

/// Ends a connection whose work failed: a readiness probe quietly, anything else logged and told
/// to the peer with whether trying again may help.
pub async fn report_failure<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    conn: &mut crate::protocol::Connection<S>,
    error: &crate::error::SessionError,
    what: &'static str,
) {
    if error.is_probe() {
        tracing::debug!(
            what,
            "a connection closed before saying hello (a readiness check)"
        );
        return;
    }
    tracing::warn!(what, %error, "connection ended with an error");
    let message = error.to_string();
    crate::protocol::refuse_with(conn, &message, error.is_retryable()).await;
}

/// With a retention: runs the first tombstone cleanup now, before the daemon binds its socket
/// (a bad store is refused here), and schedules the rest. The caller aborts the task on exit.
pub async fn start_cleanup(
    role: &'static str,
    store: &std::path::Path,
    retention: Option<crate::store::Retention>,
) -> Result<Option<tokio::task::JoinHandle<()>>, crate::error::SessionError> {
    let Some(retention) = retention else {
        return Ok(None);
    };
    // A bad store is refused here; a failed cleanup of a good one is only logged.
    let mut opened = crate::store::Store::open(store)?;
    log_cleanup(
        role,
        retention,
        store_work(|| opened.cleanup_tombstones(retention)),
    );
    Ok(Some(tokio::spawn(cleanup_schedule(
        role,
        store.to_path_buf(),
        retention,
    ))))
}

/// Runs tombstone cleanup (seed 001, CleanupDeletedItems) on `store` every
/// `retention.interval()`, for ever: the daemon drops the task when it stops. A cleanup is one
/// index probe when nothing is old enough, so running it often costs nothing. Both daemons run
/// it; the cleanup transaction makes two runs at once harmless.
pub async fn cleanup_schedule(
    role: &'static str,
    store: std::path::PathBuf,
    retention: crate::store::Retention,
) {
    loop {
        tokio::time::sleep(retention.interval()).await;
        cleanup_once(role, &store, retention);
    }
}

/// One cleanup, logged; a failure is logged and left for the next run.
pub fn cleanup_once(
    role: &'static str,
    store: &std::path::Path,
    retention: crate::store::Retention,
) {
    let result = store_work(|| crate::store::Store::open(store)?.cleanup_tombstones(retention));
    log_cleanup(role, retention, result);
}

fn log_cleanup(
    role: &'static str,
    retention: crate::store::Retention,
    result: Result<crate::store::CleanupReport, crate::store::StoreError>,
) {
    match result {
        Ok(report) if report.removed > 0 => {
            tracing::info!(role, removed = report.removed, %retention, forgotten = %report.forgotten, "tombstone cleanup")
        }
        Ok(_) => tracing::debug!(role, %retention, "tombstone cleanup: nothing old enough"),
        Err(error) => tracing::warn!(role, %error, "tombstone cleanup failed"),
    }
}
