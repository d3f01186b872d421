//! The collector: imports the change batches a synchronizer sends into its store and answers
//! each with a success message only after the batch committed (seed 000: "The collector ...
//! sends a success message back to the synchronizer when a set of changes has been
//! successfully synchronized"; seed 003 for how a batch is applied).
//!
//! [`serve`] takes a bound listener and a shutdown future, so tests run it on a temporary socket
//! and stop it cleanly; `main` passes SIGTERM/SIGINT. A session is incremental, or a full
//! enumeration (seed 001) when its batches carry an id range (`full`).

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use shared::error::SessionError;
use shared::ipc::{LocalStream, SocketListener};
use shared::knowledge::{ReplicaId, Version};
use shared::model::LeftChange;
use shared::protocol::{
    accept_hello, BatchApplied, Connection, Message, ProtocolError, Role, SessionReady,
};
use shared::shutdown::Shutdown;
use shared::store::{FullPosition, ImportSession, ItemChange, LeftScope, Store};
use tracing::{info, instrument};

mod kept;
use kept::KeptStore;

/// The store's own limits on what it applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportLimits {
    /// A message whose body is larger is not applied (an item error; config `max_body_bytes`).
    pub max_body_bytes: Option<u64>,
}

/// Serves imports into the store at `store` until `stop` resolves.
pub async fn serve(
    listener: SocketListener,
    store: PathBuf,
    limits: ImportLimits,
    stop: impl Future<Output = ()>,
) {
    let store = Arc::new(KeptStore::new(store));
    shared::daemon::serve(listener, stop, move |stream, shutdown| {
        let store = store.clone();
        async move { handle(stream, &store, limits, shutdown).await }
    })
    .await
}

async fn handle(stream: LocalStream, kept: &KeptStore, limits: ImportLimits, shutdown: Shutdown) {
    let mut conn = Connection::new(stream);
    let result = match shared::daemon::store_work(|| kept.take()) {
        Ok(mut lease) => {
            let result = import(&mut conn, &mut lease.store, limits, shutdown).await;
            // A connection that met a store error is closed, not kept: the next session opens
            // the store afresh.
            if !matches!(result, Err(SessionError::Store(_))) {
                kept.give_back(lease);
            }
            result
        }
        Err(error) => Err(error.into()),
    };
    if let Err(error) = result {
        shared::daemon::report_failure(&mut conn, &error, "import").await;
    }
}

/// One synchronizer connection: the session's opening, then batch after batch.
#[instrument(skip_all, fields(store = %store.path().display()), err(level = "debug"))]
async fn import(
    conn: &mut Connection<LocalStream>,
    store: &mut Store,
    limits: ImportLimits,
    mut shutdown: Shutdown,
) -> Result<(), SessionError> {
    accept_hello(conn, Role::Collector, store.replica(), Role::Synchronizer).await?;
    let begin = match conn.recv_required("begin_session").await? {
        Message::BeginSession(begin) => begin,
        other => return Err(unexpected("begin_session", &other)),
    };
    let scope = begin.scope.filter(|s| !s.is_everything());
    if let Some(scope) = &scope {
        scope
            .patterns()
            .map_err(|e| ProtocolError::Malformed(format!("begin_session: {e}")))?;
    }
    let scope_key = scope.as_ref().map(|s| s.key());
    let mut session = ImportSession::new(begin.source.clone(), begin.made_with, begin.rule)
        .with_resolutions(begin.resolutions)
        .with_scope(scope_key.clone());
    let bodies = scope.as_ref().is_none_or(|s| s.bodies);
    let (knowledge, forgotten, resume, scoped, lacks_bodies) = shared::daemon::store_work(|| {
        Ok::<_, SessionError>((
            store.knowledge()?,
            store.forgotten_knowledge()?,
            store.full_position(&begin.source)?,
            match &scope_key {
                Some(key) => Some(store.scoped_knowledge(&begin.source, key)?),
                None => None,
            },
            match bodies {
                true => Some(store.headers_only_versions()?).filter(|k| !k.is_empty()),
                false => None,
            },
        ))
    })?;
    // Where the next full-enumeration batch must start.
    let mut full_at = resume.clone().unwrap_or_else(FullPosition::start);
    conn.send(&Message::SessionReady(SessionReady {
        replica: store.replica().clone(),
        knowledge,
        forgotten,
        resume,
        scoped,
        lacks_bodies,
    }))
    .await?;
    info!(source = %begin.source, rule = ?begin.rule, scope = scope_key.as_deref().unwrap_or("everything"), "session begins");

    let mut expected_seq = 1;
    // Whether any batch so far carried an item: only then is the last commit synced to disk.
    let mut carried_items = false;
    loop {
        let message = tokio::select! {
            m = conn.recv() => m?,
            _ = shutdown.recv() => {
                info!("shutting down between batches");
                return Err(SessionError::Stopped("the collector is shutting down".into()));
            }
        };
        let batch = match message {
            None => return Ok(()),
            Some(Message::ChangeBatch(batch)) => batch,
            Some(other) => return Err(unexpected("change_batch", &other)),
        };
        if batch.seq != expected_seq {
            return Err(ProtocolError::Malformed(format!(
                "change batch {} arrived where {expected_seq} was due",
                batch.seq
            ))
            .into());
        }
        // The whole batch is checked before anything is applied: bad input changes nothing.
        let changes = batch
            .changes
            .into_iter()
            .map(|c| ItemChange::from_wire(c, &batch.replicas))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ProtocolError::Malformed(format!("change batch {}: {e}", batch.seq)))?;
        let left = left_scope(&batch.left, &batch.replicas)
            .map_err(|e| ProtocolError::Malformed(format!("change batch {}: {e}", batch.seq)))?;
        if !left.is_empty() && session.scope().is_none() {
            return Err(ProtocolError::Malformed(format!(
                "change batch {}: items that left a scope, in a session without one",
                batch.seq
            ))
            .into());
        }
        if let Some(range) = &batch.full {
            range.check(&full_at, &changes, batch.last).map_err(|e| {
                ProtocolError::Malformed(format!("change batch {}: {e}", batch.seq))
            })?;
        }
        let count = changes.len();
        carried_items |= count > 0 || !left.is_empty();
        let carried: HashSet<String> = match &batch.full {
            Some(_) => changes.iter().map(|c| c.id.clone()).collect(),
            None => HashSet::new(),
        };
        let (outcome, applied_changes) = shared::daemon::store_work(|| {
            // The last commit of a session that carried items syncs the WAL, and with it every
            // commit before it: a completed session is on disk, not only safe from a process's
            // death. A session that carried none (a no-op) changed only the store's knowledge,
            // which the next session learns again if a power loss takes it.
            store.set_synced_commits(batch.last && carried_items)?;
            let (changes, refused) =
                store.refuse_large_bodies(&mut session, changes, limits.max_body_bytes)?;
            let mut outcome = match &batch.full {
                Some(range) => store.apply_full_batch(
                    &mut session,
                    &changes,
                    &carried,
                    &batch.learned,
                    batch.last,
                    range,
                )?,
                None if session.scope().is_some() => store.apply_scoped_batch(
                    &mut session,
                    &changes,
                    &left,
                    &batch.learned,
                    batch.last,
                )?,
                None => store.apply_batch(&mut session, &changes, &batch.learned, batch.last)?,
            };
            outcome.errors.extend(refused);
            store.after_commit()?;
            Ok::<_, SessionError>((outcome, changes))
        })?;
        if let Some(next) = batch.full.as_ref().and_then(|r| r.next()) {
            full_at = next;
        }

        info!(
            seq = batch.seq,
            phase = batch.phase.name(),
            items = count,
            applied = outcome.applied,
            conflicts = outcome.conflicts.len(),
            errors = outcome.errors.len(),
            full = batch.full.is_some(),
            "batch committed"
        );
        shared::failpoint::hit("collector-after-commit");
        conn.send(&Message::BatchApplied(BatchApplied {
            seq: batch.seq,
            applied: outcome.applied,
            skipped: outcome.skipped,
            pending: outcome.pending,
            conflicts: outcome.conflicts,
            errors: outcome.errors,
            knowledge: outcome.knowledge,
        }))
        .await?;
        // Freed only now, while the synchronizer takes the success message and sends the next
        // batch: a thousand decoded changes take ~1 ms to free, 6 % of the import's thread
        // (`bench/PROFILE.md`, round sixteen), which before stood between the commit and the
        // success message.
        drop((applied_changes, carried));
        expected_seq += 1;
    }
}

/// Reads the items that left the scope off the wire, checking their versions as a change's.
fn left_scope(left: &[LeftChange], replicas: &[ReplicaId]) -> Result<Vec<LeftScope>, String> {
    left.iter()
        .map(|l| {
            if l.id.is_empty() {
                return Err("an item that left the scope has an empty id".to_string());
            }
            let versions = l
                .versions
                .iter()
                .map(|v| match replicas.get(v.0 as usize) {
                    Some(replica) if v.1 > 0 => Ok(Version {
                        replica: replica.clone(),
                        tick: v.1,
                    }),
                    _ => Err(format!(
                        "item {} left the scope with version [{}, {}], which names no replica of \
                         the batch or tick 0",
                        l.id, v.0, v.1
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(LeftScope {
                id: l.id.clone(),
                versions,
            })
        })
        .collect()
}

fn unexpected(expected: &'static str, got: &Message) -> SessionError {
    ProtocolError::Unexpected {
        expected,
        got: got.name(),
    }
    .into()
}
