//! One export session (seed 004's synchronization flow, source side): the collector states what
//! the destination knows, the source enumerates what it lacks (seed 001), sends it in batches in
//! seed 002's phase order, and moves on only after each batch's success message.
//!
//! A destination that lacks part of the source's forgotten knowledge is out of date (seed 001):
//! it may hold items whose deletes the source has forgotten. It gets a full enumeration
//! instead, continuing where an interrupted one stopped (`session_ready.resume`).

use std::path::Path;

use shared::error::SessionError;
use shared::ipc::{self, LocalStream};
use shared::knowledge::Knowledge;
use shared::model::Phase;
use shared::protocol::{
    accept_hello, say_hello, BeginSession, ChangeBatch, Completed, Connection, Encoded, Failed,
    Message, Progress, ProtocolError, Role, SessionStats, SyncRequest,
};
use shared::shutdown::Shutdown;
use shared::store::{
    EnumerationCursor, ExportBatch, ExportScope, FullPosition, FullRange, ItemError,
    ReportedConflict, Store, StoreError, EXPORT_PAGE_CACHE_MIB,
};
use tracing::{info, instrument, warn};

/// Most bytes of item values in one batch, well under the frame cap.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Most conflicts and item errors listed in a completion message (all are counted).
const MAX_LISTED: usize = 1000;

/// An agent connection: hello, one sync request, the session, then completion or failure.
pub async fn serve_agent(
    agent: &mut Connection<LocalStream>,
    store_path: &Path,
    shutdown: Shutdown,
) -> Result<(), SessionError> {
    let mut store = shared::daemon::store_work(|| {
        let store = Store::open(store_path)?;
        store.set_page_cache_mib(EXPORT_PAGE_CACHE_MIB)?;
        Ok::<_, StoreError>(store)
    })?;
    accept_hello(agent, Role::Synchronizer, store.replica(), Role::Agent).await?;
    let request = match agent.recv_required("sync_request").await? {
        Message::SyncRequest(r) => r,
        other => {
            return Err(ProtocolError::Unexpected {
                expected: "sync_request",
                got: other.name(),
            }
            .into())
        }
    };
    let mut stats = SessionStats::default();
    match export(&mut store, &request, agent, &shutdown, &mut stats).await {
        Ok(completed) => {
            agent.send(&Message::Completed(completed)).await?;
            Ok(())
        }
        Err(error) => {
            agent
                .send(&Message::Failed(Failed {
                    reason: error.to_string(),
                    retryable: error.is_retryable(),
                    stats,
                }))
                .await?;
            Ok(())
        }
    }
}

#[instrument(skip_all, fields(partnership = %request.partnership, collector = %request.collector.display()), err)]
async fn export(
    store: &mut Store,
    request: &SyncRequest,
    agent: &mut Connection<LocalStream>,
    shutdown: &Shutdown,
    stats: &mut SessionStats,
) -> Result<Completed, SessionError> {
    let mut collector = Connection::new(ipc::connect(&request.collector).await?);
    let welcome = say_hello(&mut collector, Role::Synchronizer, Role::Collector).await?;
    if &welcome.replica == store.replica() {
        return Err(ProtocolError::Malformed(format!(
            "{} is this store's own collector; a store does not sync with itself",
            request.collector.display()
        ))
        .into());
    }
    // A scope that holds everything is no scope: the session runs as an unfiltered one.
    let scope = request.scope.clone().filter(|s| !s.is_everything());
    let patterns = match &scope {
        Some(s) => s.patterns().map_err(|e| {
            ProtocolError::Malformed(format!("sync request for {}: {e}", request.partnership))
        })?,
        None => Vec::new(),
    };
    let (made_with, forgotten) = shared::daemon::store_work(|| {
        Ok::<_, SessionError>((store.knowledge()?, store.forgotten_knowledge()?))
    })?;
    collector
        .send(&Message::BeginSession(BeginSession {
            source: store.replica().clone(),
            made_with: made_with.clone(),
            rule: request.rule,
            resolutions: request.resolutions.clone(),
            scope: scope.clone(),
        }))
        .await?;
    let ready = match collector.recv_required("session_ready").await? {
        Message::SessionReady(ready) => ready,
        other => {
            return Err(ProtocolError::Unexpected {
                expected: "session_ready",
                got: other.name(),
            }
            .into())
        }
    };
    // The session starts from what the destination really knows. The agent's record only
    // tells whether the destination went back in time (a restored backup, a lost commit).
    let regressed = request
        .state
        .as_ref()
        .is_some_and(|recorded| !ready.knowledge.is_superset_of(recorded));
    if regressed {
        warn!(destination = %ready.replica, "destination knows less than the agent recorded; sending what it lost");
    }
    // A scoped session enumerates against what the destination holds and what it was told
    // through this scope; it tells apart what the destination holds to send a folder's
    // subtree when the folder enters the scope.
    let mut export_scope = scope.as_ref().map(|s| ExportScope {
        patterns,
        bodies: s.bodies,
        holds: ready.knowledge.clone(),
    });
    let mut promised = match &ready.lacks_bodies {
        Some(lacks) => ready.knowledge.difference(lacks),
        None => ready.knowledge.clone(),
    };
    if let (Some(_), Some(scoped)) = (&export_scope, &ready.scoped) {
        promised.union_with(scoped);
    }
    // A scoped destination's own knowledge lacks what lies outside its scope; what it was told
    // through the scope counts too.
    let mode = if promised.is_superset_of(&forgotten) {
        Mode::Incremental(EnumerationCursor::default())
    } else {
        info!(
            destination = %ready.replica,
            lacks = %forgotten.difference(&ready.knowledge),
            resume = ?ready.resume,
            "destination is out of date: full enumeration"
        );
        Mode::Full(ready.resume.clone().unwrap_or_else(FullPosition::start))
    };
    let full = matches!(mode, Mode::Full(_));
    info!(source = %store.replica(), destination = %ready.replica, made_with = %made_with, destination_knows = %ready.knowledge, full, "session begins");

    let mut dest: Knowledge = ready.knowledge;
    let mut conflicts: Vec<ReportedConflict> = Vec::new();
    let mut errors: Vec<ItemError> = Vec::new();
    let mut enumeration = Enumeration {
        mode,
        made_with: &made_with,
        forgotten: &forgotten,
        batch_size: request.batch.max(1) as usize,
    };
    // What the destination knows once every batch sent so far is acknowledged: the next batch
    // is read and encoded against it while the collector still applies the previous one
    // (pipelining). The agent still hears of a batch only after its success message.
    let mut next = Some(shared::daemon::store_work(|| {
        enumeration.prepare_next(store, 1, &mut promised, export_scope.as_mut())
    })?);
    while let Some(outgoing) = next.take() {
        if shutdown.is_shutdown() {
            return Err(SessionError::Stopped(
                "the synchronizer is shutting down; the next session resumes from the last acknowledged batch".into(),
            ));
        }
        let Outgoing {
            seq,
            phase,
            done,
            items,
            payload_bytes,
            frame,
        } = outgoing;
        stats.batches += 1;
        stats.sent += items;
        stats.bytes += payload_bytes;
        collector.send_encoded(&frame).await?;
        // Sent: only the next batch is held while this one is applied.
        drop(frame);
        if !done {
            next = Some(shared::daemon::store_work(|| {
                enumeration.prepare_next(store, seq + 1, &mut promised, export_scope.as_mut())
            })?);
        }
        // The agent sends nothing after its request: anything from it while a batch is out,
        // its connection closing included, means it went away, and the session stops here.
        let answer = tokio::select! {
            answer = collector.recv_required("batch_applied") => answer?,
            _ = agent.recv() => {
                return Err(SessionError::Stopped(
                    "the agent went away; the next session resumes from the last acknowledged batch".into(),
                ))
            }
        };
        let applied = match answer {
            Message::BatchApplied(a) if a.seq == seq => a,
            Message::BatchApplied(a) => {
                return Err(ProtocolError::Malformed(format!(
                    "success message for batch {} where {seq} was due",
                    a.seq
                ))
                .into())
            }
            other => {
                return Err(ProtocolError::Unexpected {
                    expected: "batch_applied",
                    got: other.name(),
                }
                .into())
            }
        };
        stats.applied += applied.applied;
        stats.skipped += applied.skipped;
        stats.conflicts += applied.conflicts.len() as u64;
        stats.errors += applied.errors.len() as u64;
        let room = MAX_LISTED.saturating_sub(conflicts.len());
        conflicts.extend(applied.conflicts.into_iter().take(room));
        let room = MAX_LISTED.saturating_sub(errors.len());
        errors.extend(applied.errors.into_iter().take(room));
        dest = applied.knowledge;
        shared::failpoint::hit("synchronizer-after-ack");
        agent
            .send(&Message::Progress(Progress {
                phase,
                stats: stats.clone(),
                knowledge: dest.clone(),
            }))
            .await?;
    }
    info!(
        sent = stats.sent,
        applied = stats.applied,
        conflicts = stats.conflicts,
        errors = stats.errors,
        batches = stats.batches,
        full,
        "session completed"
    );
    Ok(Completed {
        stats: stats.clone(),
        knowledge: dest,
        conflicts,
        errors,
        destination_regressed: regressed,
    })
}

/// A change batch ready to go: what the destination learns from it is folded into what the
/// session has promised, and the message is encoded, before the previous batch's success message
/// arrives.
struct Outgoing {
    seq: u64,
    phase: Phase,
    done: bool,
    items: u64,
    payload_bytes: u64,
    frame: Encoded,
}

impl Enumeration<'_> {
    /// Reads the next batch against what the session has `promised` the destination, folds
    /// what the destination learns from it into `promised` (and into what a scoped destination
    /// holds), and encodes it as batch `seq`.
    fn prepare_next(
        &mut self,
        store: &mut Store,
        seq: u64,
        promised: &mut Knowledge,
        scope: Option<&mut ExportScope>,
    ) -> Result<Outgoing, SessionError> {
        let (batch, range) = self.next(store, promised, scope.as_deref())?;
        let (made_with, forgotten) = (self.made_with, self.forgotten);
        let learned = if batch.done {
            // Tombstones cleaned up while the session ran may not have been sent: their
            // versions stay unlearned, so the destination recovers by full enumeration.
            let now_forgotten = store.forgotten_knowledge()?;
            made_with.difference(&now_forgotten.difference(forgotten))
        } else {
            made_with.project(batch.versions.iter().chain(&batch.left_versions))
        };
        if let Some(scope) = scope {
            scope
                .holds
                .union_with(&learned.project(batch.versions.iter()));
        }
        promised.union_with(&learned);
        let (phase, done) = (batch.phase, batch.done);
        let (items, payload_bytes) = (batch.changes.len() as u64, batch.payload_bytes as u64);
        let frame = Encoded::new(&Message::ChangeBatch(ChangeBatch {
            seq,
            phase,
            replicas: batch.replicas,
            changes: batch.changes,
            learned,
            last: done,
            full: range,
            left: batch.left,
        }))?;
        Ok(Outgoing {
            seq,
            phase,
            done,
            items,
            payload_bytes,
            frame,
        })
    }
}

/// How a session enumerates: what the destination lacks, or everything (seed 001).
enum Mode {
    Incremental(EnumerationCursor),
    Full(FullPosition),
}

/// What a session enumerates with, batch after batch.
struct Enumeration<'a> {
    mode: Mode,
    made_with: &'a Knowledge,
    forgotten: &'a Knowledge,
    batch_size: usize,
}

impl Enumeration<'_> {
    fn next(
        &mut self,
        store: &mut Store,
        dest: &Knowledge,
        scope: Option<&ExportScope>,
    ) -> Result<(ExportBatch, Option<FullRange>), SessionError> {
        next_batch(
            store,
            &mut self.mode,
            self.made_with,
            dest,
            self.forgotten,
            scope,
            self.batch_size,
        )
    }
}

/// The session's next batch, with its id range in a full enumeration.
fn next_batch(
    store: &mut Store,
    mode: &mut Mode,
    made_with: &Knowledge,
    dest: &Knowledge,
    forgotten: &Knowledge,
    scope: Option<&ExportScope>,
    batch_size: usize,
) -> Result<(ExportBatch, Option<FullRange>), SessionError> {
    match mode {
        Mode::Incremental(cursor) => Ok((
            match scope {
                Some(scope) => store.next_scoped_batch(
                    cursor,
                    made_with,
                    dest,
                    scope,
                    batch_size,
                    MAX_BATCH_BYTES,
                )?,
                None => store.next_batch(cursor, made_with, dest, batch_size, MAX_BATCH_BYTES)?,
            },
            None,
        )),
        Mode::Full(position) => {
            let full = store.next_full_batch(position, batch_size, MAX_BATCH_BYTES)?;
            let range = FullRange {
                kind: full.kind,
                after: full.after,
                upto: full.upto,
                forgotten: forgotten.clone(),
            };
            Ok((full.batch, Some(range)))
        }
    }
}
