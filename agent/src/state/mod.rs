//! The agent's own SQLite file of synchronization-state records (seed 000: "The agent determines
//! where this state information is stored"): per partnership and direction the destination
//! knowledge last acknowledged, written after every acknowledged batch, and a history of
//! sessions with their results and counts.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use shared::knowledge::Knowledge;

/// Errors of the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("agent state {path}: {context}: {source}")]
    Sqlite {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("agent state {path}: {what}")]
    Corrupt { path: PathBuf, what: String },
}

mod conflicts;
mod plan;
mod schema;

pub use conflicts::{Keep, QueuedConflict, ResolveError};
pub use plan::PlannedRun;
use schema::MIGRATIONS;

/// The sessions of each partnership the state file keeps (`agent history`), newest first; older
/// ones are dropped as sessions end (about one end in 128 prunes, so a few hundred more may be
/// kept). A partnership synced both ways every ten seconds keeps about 14 hours, one every five
/// minutes about 17 days, in ~2 MB; without a bound the file grew by ~17,000 rows a day for the
/// former.
pub const KEEP_SESSIONS: u32 = 10_000;

/// One session as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionRecord {
    pub id: i64,
    pub partnership: String,
    pub direction: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub result: String,
    pub reason: Option<String>,
    pub phase: Option<String>,
    pub batches: i64,
    pub sent: i64,
    pub applied: i64,
    pub conflicts: i64,
    pub errors: i64,
}

/// A direction's sync-state record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirectionState {
    pub direction: String,
    pub knowledge: Knowledge,
    pub updated_at: i64,
}

/// An item error as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordedItemError {
    pub direction: String,
    pub item: String,
    pub reason: String,
    pub seen_at: i64,
}

/// The open state file.
pub struct State {
    conn: Connection,
    path: PathBuf,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl State {
    /// Opens (creating if needed) the state file.
    pub fn open(path: &Path) -> Result<State, StateError> {
        let err = |context| {
            let path = path.to_path_buf();
            move |source| StateError::Sqlite {
                path,
                context,
                source,
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut conn = Connection::open(path).map_err(err("cannot open"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err("cannot set busy timeout"))?;
        shared::store::ensure_wal(&conn).map_err(err("cannot switch to WAL"))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(err("cannot set pragmas"))?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err("cannot migrate"))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("cannot read schema version"))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StateError::Corrupt {
                path: path.to_path_buf(),
                what: format!(
                    "schema version {version} is newer than this agent understands ({})",
                    MIGRATIONS.len()
                ),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql).map_err(err("migration failed"))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(err("migration failed"))?;
        }
        tx.commit().map_err(err("cannot migrate"))?;
        Ok(State {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn sql<T>(&self, context: &'static str, r: rusqlite::Result<T>) -> Result<T, StateError> {
        r.map_err(|source| StateError::Sqlite {
            path: self.path.clone(),
            context,
            source,
        })
    }

    /// The recorded destination knowledge of one direction.
    pub fn knowledge(
        &self,
        partnership: &str,
        direction: &str,
    ) -> Result<Option<Knowledge>, StateError> {
        let json: Option<String> = self.sql(
            "cannot read a sync-state record",
            self.conn
                .query_row(
                    "SELECT knowledge FROM sync_state WHERE partnership = ?1 AND direction = ?2",
                    params![partnership, direction],
                    |r| r.get(0),
                )
                .optional(),
        )?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                what: format!("sync-state record of {partnership} ({direction}): {e}"),
            })
        })
        .transpose()
    }

    /// Every direction's record of a partnership.
    pub fn directions(&self, partnership: &str) -> Result<Vec<DirectionState>, StateError> {
        let rows: Vec<(String, String, i64)> = self.sql(
            "cannot read sync-state records",
            self.conn
                .prepare("SELECT direction, knowledge, updated_at FROM sync_state WHERE partnership = ?1 ORDER BY direction")
                .and_then(|mut s| {
                    s.query_map([partnership], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect()
                }),
        )?;
        rows.into_iter()
            .map(|(direction, json, updated_at)| {
                let knowledge = serde_json::from_str(&json).map_err(|e| StateError::Corrupt {
                    path: self.path.clone(),
                    what: format!("sync-state record of {partnership} ({direction}): {e}"),
                })?;
                Ok(DirectionState {
                    direction,
                    knowledge,
                    updated_at,
                })
            })
            .collect()
    }

    /// Records the destination knowledge acknowledged after a batch, and the session's progress.
    pub fn record_progress(
        &self,
        session: i64,
        partnership: &str,
        direction: &str,
        progress: &shared::protocol::Progress,
    ) -> Result<(), StateError> {
        let json = serde_json::to_string(&progress.knowledge).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            what: format!("cannot encode knowledge: {e}"),
        })?;
        let s = &progress.stats;
        self.sql(
            "cannot record progress",
            self.conn.execute_batch("BEGIN IMMEDIATE").and_then(|_| {
                self.conn.execute(
                    "INSERT INTO sync_state (partnership, direction, knowledge, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (partnership, direction) DO UPDATE SET knowledge = excluded.knowledge, updated_at = excluded.updated_at",
                    params![partnership, direction, json, now_ms()],
                )?;
                self.conn.execute(
                    "UPDATE sessions SET phase = ?2, batches = ?3, sent = ?4, applied = ?5, conflicts = ?6, errors = ?7 WHERE id = ?1",
                    params![session, progress.phase.name(), s.batches as i64, s.sent as i64, s.applied as i64, s.conflicts as i64, s.errors as i64],
                )?;
                self.conn.execute_batch("COMMIT")
            }),
        )
        .inspect_err(|_| {
            let _ = self.conn.execute_batch("ROLLBACK");
        })
    }

    /// Starts a session record; a session left `running` by a killed agent is closed as failed.
    pub fn begin_session(&self, partnership: &str, direction: &str) -> Result<i64, StateError> {
        self.sql(
            "cannot record a session",
            self.conn.execute(
                "UPDATE sessions SET result = 'failed', reason = 'the agent stopped during the session', ended_at = ?3
                 WHERE partnership = ?1 AND direction = ?2 AND result = 'running'",
                params![partnership, direction, now_ms()],
            ),
        )?;
        self.sql(
            "cannot record a session",
            self.conn.query_row(
                "INSERT INTO sessions (partnership, direction, started_at, result) VALUES (?1, ?2, ?3, 'running') RETURNING id",
                params![partnership, direction, now_ms()],
                |r| r.get(0),
            ),
        )
    }

    /// Ends a session record with its result, and its final counts when the synchronizer sent
    /// them; without them the counts recorded batch by batch stay. About one end in 128 also
    /// drops the partnership's sessions beyond its latest [`KEEP_SESSIONS`] ([`prune_due`]).
    pub fn end_session(
        &self,
        session: i64,
        result: &str,
        reason: Option<&str>,
        stats: Option<&shared::protocol::SessionStats>,
    ) -> Result<(), StateError> {
        let count = |f: fn(&shared::protocol::SessionStats) -> u64| stats.map(|s| f(s) as i64);
        self.sql(
            "cannot record a session",
            self.conn.execute(
                "UPDATE sessions SET result = ?2, reason = ?3, ended_at = ?4,
                   batches = coalesce(?5, batches), sent = coalesce(?6, sent), applied = coalesce(?7, applied),
                   conflicts = coalesce(?8, conflicts), errors = coalesce(?9, errors)
                 WHERE id = ?1",
                params![
                    session,
                    result,
                    reason,
                    now_ms(),
                    count(|s| s.batches),
                    count(|s| s.sent),
                    count(|s| s.applied),
                    count(|s| s.conflicts),
                    count(|s| s.errors)
                ],
            ),
        )?;
        if prune_due(session) {
            self.prune_sessions(session, KEEP_SESSIONS)?;
        }
        Ok(())
    }

    /// Deletes the sessions of `session`'s partnership older than its latest `keep`: one seek
    /// of `sessions_by_partnership` and, once the history is full, one row per session ended.
    pub fn prune_sessions(&self, session: i64, keep: u32) -> Result<(), StateError> {
        self.sql(
            "cannot prune the session history",
            self.conn.execute(
                "DELETE FROM sessions
                  WHERE partnership = (SELECT partnership FROM sessions WHERE id = ?1)
                    AND id <= (SELECT id FROM sessions
                                WHERE partnership = (SELECT partnership FROM sessions WHERE id = ?1)
                                ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![session, keep],
            ),
        )
        .map(|_| ())
    }

    /// Replaces the recorded item errors of one direction with the latest session's.
    pub fn record_item_errors(
        &self,
        partnership: &str,
        direction: &str,
        errors: &[shared::store::ItemError],
    ) -> Result<(), StateError> {
        self.sql(
            "cannot record item errors",
            self.conn.execute(
                "DELETE FROM item_errors WHERE partnership = ?1 AND direction = ?2",
                params![partnership, direction],
            ),
        )?;
        for e in errors {
            self.sql(
                "cannot record item errors",
                self.conn.execute(
                    "INSERT OR REPLACE INTO item_errors (partnership, direction, item, reason, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![partnership, direction, e.item, e.reason, now_ms()],
                ),
            )?;
        }
        Ok(())
    }

    pub fn item_errors(&self, partnership: &str) -> Result<Vec<RecordedItemError>, StateError> {
        self.sql(
            "cannot read item errors",
            self.conn
                .prepare("SELECT direction, item, reason, seen_at FROM item_errors WHERE partnership = ?1 ORDER BY direction, item")
                .and_then(|mut s| {
                    s.query_map([partnership], |r| {
                        Ok(RecordedItemError {
                            direction: r.get(0)?,
                            item: r.get(1)?,
                            reason: r.get(2)?,
                            seen_at: r.get(3)?,
                        })
                    })?
                    .collect()
                }),
        )
    }

    /// Notes the replica id a store's synchronizer gave.
    pub fn record_replica(
        &self,
        store: &str,
        replica: &shared::knowledge::ReplicaId,
    ) -> Result<(), StateError> {
        self.sql(
            "cannot record a replica",
            self.conn.execute(
                "INSERT INTO replicas (store, replica, seen_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (store) DO UPDATE SET replica = excluded.replica, seen_at = excluded.seen_at",
                params![store, replica.as_str(), now_ms()],
            ),
        )
        .map(|_| ())
    }

    /// Knowledge with the replica ids of known stores replaced by the stores' names, for people.
    pub fn named(&self, knowledge: &Knowledge) -> Result<Knowledge, StateError> {
        let names: Vec<(String, String)> = self.sql(
            "cannot read replicas",
            self.conn
                .prepare("SELECT replica, store FROM replicas")
                .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()),
        )?;
        let mut named = Knowledge::new();
        for (replica, ticks) in knowledge.iter() {
            let name = names
                .iter()
                .find(|(id, _)| id == replica.as_str())
                .map(|(_, store)| shared::knowledge::ReplicaId::from(store.as_str()))
                .unwrap_or_else(|| replica.clone());
            named.set(&name, ticks.clone());
        }
        Ok(named)
    }

    /// One session's record.
    pub fn session(&self, id: i64) -> Result<Option<SessionRecord>, StateError> {
        self.sql(
            "cannot read a session",
            self.conn
                .query_row(
                    &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                    [id],
                    session_record,
                )
                .optional(),
        )
    }

    /// Past sessions, newest first.
    pub fn history(
        &self,
        partnership: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StateError> {
        self.sql(
            "cannot read the history",
            self.conn
                .prepare(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions
                         WHERE ?1 IS NULL OR partnership = ?1 ORDER BY id DESC LIMIT ?2"
                ))
                .and_then(|mut s| {
                    s.query_map(params![partnership, limit as i64], session_record)?
                        .collect()
                }),
        )
    }
}

const SESSION_COLUMNS: &str = "id, partnership, direction, started_at, ended_at, result, reason, \
     phase, batches, sent, applied, conflicts, errors";

fn session_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get(0)?,
        partnership: r.get(1)?,
        direction: r.get(2)?,
        started_at: r.get(3)?,
        ended_at: r.get(4)?,
        result: r.get(5)?,
        reason: r.get(6)?,
        phase: r.get(7)?,
        batches: r.get(8)?,
        sent: r.get(9)?,
        applied: r.get(10)?,
        conflicts: r.get(11)?,
        errors: r.get(12)?,
    })
}

/// Whether the end of `session` prunes its partnership's history: about one in 128, picked by a
/// hash of the id. Finding the cut steps over the kept sessions' index entries (~0.5 ms at
/// 10,000), which a no-op session should not pay each time; and a plain `id % N` would miss a
/// partnership whose sessions interleave with others' in step (two two-way partnerships in turn
/// take ids 1, 2, 5, 6, … and 3, 4, 7, 8, …: every multiple of 4 falls to the second).
fn prune_due(session: i64) -> bool {
    (session as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57 == 0
}

#[cfg(test)]
mod history_tests {
    use super::*;

    /// Ending a session keeps only the partnership's latest sessions; other partnerships'
    /// histories are their own.
    #[test]
    fn the_history_keeps_each_partnerships_latest_sessions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(&dir.path().join("agent.db")).expect("state");
        let other = state.begin_session("other", "b->a").expect("begin");
        state
            .end_session(other, "completed", None, None)
            .expect("end");
        let mut last = 0;
        for _ in 0..12 {
            last = state.begin_session("ab", "a->b").expect("begin");
            state
                .end_session(last, "completed", None, None)
                .expect("end");
            state.prune_sessions(last, 5).expect("prune");
        }
        let kept: Vec<i64> = state
            .history(Some("ab"), 100)
            .expect("history")
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(kept, ((last - 4)..=last).rev().collect::<Vec<_>>());
        assert_eq!(state.history(Some("other"), 100).expect("history").len(), 1);
        // A history shorter than the bound loses nothing.
        state.prune_sessions(other, 5).expect("prune");
        assert_eq!(state.history(Some("other"), 100).expect("history").len(), 1);
    }

    /// Pruning falls to every partnership however their sessions interleave, about one end in
    /// 128.
    #[test]
    fn pruning_is_due_for_every_partnership_whatever_their_ids() {
        for (start, step) in [(1, 4), (2, 4), (3, 4), (4, 4), (1, 1), (7, 3), (100, 100)] {
            let due = (0..12_800i64)
                .filter(|i| prune_due(start + i * step))
                .count();
            assert!((50..=150).contains(&due), "ids {start} + {step}·i: {due}");
        }
    }
}
