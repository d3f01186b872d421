//! The information store: a SQLite file with the public `folders` and `messages` tables, inline
//! change tracking by triggers, and the private sync metadata beside them (see `schema`).
//!
//! - `schema`: the migrations (tables, indexes, triggers).
//! - `enumerate`: seed 001's GetChangeBatch — the next batch of changes a knowledge lacks.
//! - `apply`: seed 003's change applier — import a batch in one transaction with the knowledge.
//! - `fresh`: the applier's hot path — a batch's new messages created with triggers off.
//! - `conflict`: seed 004's conflicts — policies, operators' resolutions, what is reported.
//! - `constraint`: seed 003's constraint conflicts — parent deleted, same name, cycles.
//! - `items`: reading and writing one item's versions and values (seed 001's GetLocalVersions).
//! - `cleanup`: seed 001's CleanupDeletedItems — old tombstones become forgotten knowledge.
//! - `full`: seed 001's full enumeration of an out-of-date destination, source and destination.
//! - `limits`: per-store caps on what is applied (the body size cap).
//! - `checkpoint`: an import connection's WAL checkpoints on a thread of their own.
//! - `wal_appends`: the VFS shim every store connection opens with, writing the WAL's appends
//!   128 KiB at a time instead of two system calls per frame.

mod apply;
mod checkpoint;
mod cleanup;
mod conflict;
mod constraint;
mod enumerate;
mod error;
mod fresh;
mod full;
mod id_window;
mod items;
mod limits;
pub mod schema;
mod scoped;
mod scoped_export;
mod wal_appends;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

pub use apply::{ApplyOutcome, ImportSession, ItemError};
pub use cleanup::{CleanupReport, Retention};
pub use conflict::{ConflictRule, Outcome, ReportedConflict, Resolution};
pub use enumerate::{EnumerationCursor, ExportBatch, ExportScope};
pub use error::StoreError;
pub use full::{FullBatch, FullPosition, FullRange};
pub use items::{ItemChange, LocalItem, UnitState};
pub use limits::{body_size, human_size, MAX_SENT_BODY};
pub use scoped::LeftScope;

use crate::knowledge::{Knowledge, ReplicaId, Version};
use error::SqlContext;

/// A set for the enumeration's per-batch bookkeeping (ids sent, rows looked at, replicas of a
/// batch): hashed with foldhash instead of the standard SipHash, which took 3.7 % of the
/// synchronizer's samples in an initial sync (`bench/PROFILE.md`, round sixteen). Seeded per
/// process, so ids a peer chooses still cannot be aimed at one bucket.
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
/// The map of [`FastSet`].
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Counts for `synchronizer info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    pub folders: u64,
    pub messages: u64,
    pub tombstones: u64,
}

/// How many pages the WAL may hold before a commit copies them into the database (SQLite's
/// default is 1000, 8 MB here). An import batch of 1000 messages writes more than that, so with the
/// default every batch commit was followed by a checkpoint: the batch's pages copied into the
/// database and both files synced, the same hot index pages again and again. 10,000 pages
/// (80 MB of WAL on disk) checkpoint once per ~10 batches, each page once. Durability does not
/// change: with WAL a commit is durable in the WAL; a checkpoint only moves pages.
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// The page cache of an import connection, in MiB. An import writes into a tree keyed by random
/// global ids (the messages' primary key; folders and tombstones also `sync_items_by_id`); a
/// larger cache keeps more of its leaves between the statements of a batch and from one session
/// to the next, instead of spilling them and reading them back. Affordable since a session's work
/// runs on one thread (see `shared::daemon::store_work`). The collector sets it; the benchmark's
/// reference inserts use it too.
pub const IMPORT_PAGE_CACHE_MIB: u32 = 8;

/// The page cache of an export connection, in MiB. An export read each message it sends through
/// a random-key tree (an item's row in `messages`, by its id), while the messages' own pages
/// streamed through the cache once each. With SQLite's default of 2 MiB the stream pushed the
/// tree's leaves out between two lookups: an initial sync of 100k messages with random ids read
/// 834 MB of its 275 MB store in 101,890 read calls; with 8 MiB, 322 MB in 39,354
/// (`bench/PROFILE.md`, round fourteen). Since migration 9 a message is found by its item's rid,
/// in the order the messages lie (267 MB in 32,608 calls, round seventeen); the cache still holds
/// an id window's messages (`id_window`), which a batch reads a third of. The synchronizer sets
/// it.
pub const EXPORT_PAGE_CACHE_MIB: u32 = 8;

/// An open information store: one SQLite connection and the store's identity.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    replica: ReplicaId,
    /// Replica index ↔ global id; `sync_replicas` is append-only, so entries never go stale.
    by_idx: HashMap<i64, ReplicaId>,
    by_id: HashMap<ReplicaId, i64>,
    /// The import connection's background checkpoints, once turned on.
    checkpointer: Option<checkpoint::Checkpointer>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("replica", &self.replica)
            .finish()
    }
}

impl Store {
    /// Opens the store at `path`, creating it (with a new replica id) when no file is there.
    /// A file that is not a store, or a store of a newer schema, is refused untouched.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_at(path, schema::SCHEMA_VERSION)
    }

    /// Opens the store at `path` only if there is one: for commands that look at or clean up a
    /// store the daemons serve (`synchronizer info`, `synchronizer cleanup`), where a mistyped
    /// path must be an error, not a new empty store. A file that is not a store is refused as
    /// by [`Store::open`]; an empty file is not a store yet.
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoStore {
                    path: path.to_path_buf(),
                })
            }
            Ok(meta) if meta.is_file() && meta.len() == 0 => {
                return Err(StoreError::NotAStore {
                    path: path.to_path_buf(),
                    what: "an empty file".into(),
                })
            }
            _ => {}
        }
        Self::open(path)
    }

    /// [`Store::open`], migrating no further than schema `version` (tests of the migrations use
    /// an older schema; everything else uses the current one).
    fn open_at(path: &Path, version: i64) -> Result<Store, StoreError> {
        Self::check_existing(path)?;
        let conn = wal_appends::open(path).ctx(path, "cannot open the store")?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            replica: ReplicaId::from(""),
            by_idx: HashMap::new(),
            by_id: HashMap::new(),
            checkpointer: None,
        };
        store.configure()?;
        store.migrate(version)?;
        store.load_identity()?;
        Ok(store)
    }

    /// Looks at an existing file read-only, before anything could write to it.
    fn check_existing(path: &Path) -> Result<(), StoreError> {
        let len = match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(StoreError::NotAStore {
                    path: path.to_path_buf(),
                    what: "a directory".into(),
                })
            }
            Ok(meta) => meta.len(),
            Err(_) => {
                // SQLite would say only "unable to open database file".
                return match path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    Some(dir) if !dir.is_dir() => Err(StoreError::NoDirectory {
                        path: path.to_path_buf(),
                        dir: dir.to_path_buf(),
                    }),
                    _ => Ok(()),
                };
            }
        };
        if len == 0 {
            return Ok(());
        }
        let not_sqlite = || StoreError::NotAStore {
            path: path.to_path_buf(),
            what: "not a SQLite database".into(),
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|_| not_sqlite())?;
        let app_id: i64 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|_| not_sqlite())?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|_| not_sqlite())?;
        if app_id != schema::APPLICATION_ID && !(app_id == 0 && tables == 0) {
            return Err(StoreError::NotAStore {
                path: path.to_path_buf(),
                what: format!("a SQLite database of another application (application_id {app_id}, {tables} schema objects)"),
            });
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|_| not_sqlite())?;
        if version > schema::SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                supported: schema::SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// WAL; `synchronous = NORMAL`: a commit survives the death of any process (the product's
    /// kill -9 promise). After a power loss the newest commits may be gone, which sessions
    /// repair, because each session starts from what the destination really knows.
    /// `temp_store = MEMORY`: the statement and savepoint journals of an import (one savepoint
    /// per item) stay in memory instead of costing a file write per page touched.
    /// `wal_autocheckpoint`: see [`WAL_AUTOCHECKPOINT_PAGES`].
    fn configure(&self) -> Result<(), StoreError> {
        let p = &self.path;
        self.conn
            .busy_timeout(std::time::Duration::from_secs(10))
            .ctx(p, "cannot set busy timeout")?;
        self.conn
            .execute_batch(&format!("PRAGMA page_size = {};", schema::PAGE_SIZE))
            .ctx(p, "cannot set page size")?;
        ensure_wal(&self.conn).ctx(p, "cannot switch to WAL")?;
        self.conn
            .execute_batch(
                "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
            )
            .ctx(p, "cannot set pragmas")?;
        self.conn
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};"
            ))
            .ctx(p, "cannot set pragmas")?;
        self.conn.set_prepared_statement_cache_capacity(64);
        // `rarray`: an export reads a batch's items by a list of rids in one statement.
        rusqlite::vtab::array::load_module(&self.conn)
            .ctx(p, "cannot register the rarray table function")?;
        Ok(())
    }

    /// Brings the schema up to date. A current store is only read (no write lock: every
    /// connection opens the store); the version is read again under the write lock, so two
    /// processes creating one store do not both migrate it.
    fn migrate(&mut self, target: i64) -> Result<(), StoreError> {
        let p = self.path.clone();
        let current: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .ctx(&p, "cannot read schema version")?;
        if current >= target {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(&p, "cannot begin migration")?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .ctx(&p, "cannot read schema version")?;
        if version > schema::SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: p,
                found: version,
                supported: schema::SCHEMA_VERSION,
            });
        }
        for index in (version.max(0) as usize)..(target as usize).min(schema::MIGRATIONS.len()) {
            let sql = schema::migration_sql(index).unwrap_or_default();
            tx.execute_batch(&sql).ctx(&p, "migration failed")?;
            if index == 0 {
                let replica = uuid::Uuid::new_v4().to_string();
                tx.execute(
                    "INSERT INTO sync_state (id, replica) VALUES (1, ?1)",
                    [&replica],
                )
                .ctx(&p, "cannot create the replica")?;
                tx.execute(
                    "INSERT INTO sync_replicas (idx, replica) VALUES (0, ?1)",
                    [&replica],
                )
                .ctx(&p, "cannot create the replica")?;
                tx.execute_batch(&format!(
                    "PRAGMA application_id = {};",
                    schema::APPLICATION_ID
                ))
                .ctx(&p, "cannot mark the file as a store")?;
            }
            if index == 4 {
                // The schema text was edited in place: make sure it was, and make every
                // connection read it again.
                let sql: String = tx
                    .query_row(
                        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'messages'",
                        [],
                        |r| r.get(0),
                    )
                    .ctx(&p, "cannot read the messages table's schema")?;
                if !sql.contains(schema::BODY_CHECK_5) {
                    return Err(StoreError::Corrupt {
                        path: p,
                        what: "migration 5: the messages table's body check is not the one \
                                 icsync created, so it was left as it is"
                            .into(),
                    });
                }
                let cookie: i64 = tx
                    .query_row("PRAGMA schema_version", [], |r| r.get(0))
                    .ctx(&p, "cannot read the schema cookie")?;
                tx.execute_batch(&format!("PRAGMA schema_version = {};", cookie + 1))
                    .ctx(&p, "cannot bump the schema cookie")?;
            }
            tx.execute_batch(&format!("PRAGMA user_version = {};", index + 1))
                .ctx(&p, "cannot record schema version")?;
        }
        tx.commit().ctx(&p, "cannot commit migration")
    }

    fn load_identity(&mut self) -> Result<(), StoreError> {
        let p = self.path.clone();
        let replica: String = self
            .conn
            .query_row("SELECT replica FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .ctx(&p, "cannot read the replica id")?;
        self.replica = ReplicaId::from(replica);
        self.reload_replicas()
    }

    fn reload_replicas(&mut self) -> Result<(), StoreError> {
        let p = self.path.clone();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT idx, replica FROM sync_replicas")
            .ctx(&p, "cannot read replicas")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .ctx(&p, "cannot read replicas")?;
        for row in rows {
            let (idx, id) = row.ctx(&p, "cannot read replicas")?;
            let id = ReplicaId::from(id);
            self.by_id.insert(id.clone(), idx);
            self.by_idx.insert(idx, id);
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This store's replica id.
    pub fn replica(&self) -> &ReplicaId {
        &self.replica
    }

    /// The plain connection, for tests and tools that change the store as an application would.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The last tick this replica gave a local change.
    pub fn tick(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT tick FROM sync_state WHERE id = 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|t| t.max(0) as u64)
            .ctx(&self.path, "cannot read the tick counter")
    }

    /// The store's knowledge: what it learned of other replicas plus every local tick.
    pub fn knowledge(&self) -> Result<Knowledge, StoreError> {
        let (json, tick): (String, i64) = self
            .conn
            .query_row(
                "SELECT knowledge, tick FROM sync_state WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx(&self.path, "cannot read knowledge")?;
        let knowledge = self.parse_knowledge(&json, "knowledge")?;
        Ok(self.add_own_ticks(knowledge, tick.max(0) as u64))
    }

    /// The whole knowledge from the stored row's `knowledge` as already parsed: the store's own
    /// ticks `1..=tick` added (the counter read now).
    pub(super) fn with_own_ticks(&self, stored: Knowledge) -> Result<Knowledge, StoreError> {
        Ok(self.add_own_ticks(stored, self.tick()?))
    }

    fn add_own_ticks(&self, mut knowledge: Knowledge, tick: u64) -> Knowledge {
        if tick > 0 {
            knowledge.insert_range(&self.replica, 1, tick);
        }
        knowledge
    }

    /// Forgotten knowledge (seed 001): versions whose tombstones were cleaned up.
    pub fn forgotten_knowledge(&self) -> Result<Knowledge, StoreError> {
        let json: String = self
            .conn
            .query_row("SELECT forgotten FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .ctx(&self.path, "cannot read forgotten knowledge")?;
        self.parse_knowledge(&json, "forgotten knowledge")
    }

    fn parse_knowledge(&self, json: &str, what: &str) -> Result<Knowledge, StoreError> {
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            what: format!("{what} is not valid: {e}"),
        })
    }

    /// Sets the connection's page cache to `mib` MiB (SQLite's default is 2 MiB); pages are
    /// allocated as they are first used, so the memory is spent only by a connection that
    /// touches that many pages.
    pub fn set_page_cache_mib(&self, mib: u32) -> Result<(), StoreError> {
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{};", u64::from(mib) * 1024))
            .ctx(&self.path, "cannot set the page cache size")
    }

    /// Takes this connection's checkpoints off its commits onto a thread of its own
    /// (`checkpoint`): for a connection that commits batch after batch, the collector's.
    /// [`Store::after_commit`] must then follow each commit.
    pub fn checkpoint_in_background(&mut self) -> Result<(), StoreError> {
        self.checkpoint_in_background_past(WAL_AUTOCHECKPOINT_PAGES as std::ffi::c_int)
    }

    /// [`Store::checkpoint_in_background`] with a pass asked for past `pages` pages of WAL.
    pub(crate) fn checkpoint_in_background_past(
        &mut self,
        pages: std::ffi::c_int,
    ) -> Result<(), StoreError> {
        if self.checkpointer.is_none() {
            self.checkpointer = Some(checkpoint::Checkpointer::start(
                &self.conn, &self.path, pages,
            )?);
        }
        Ok(())
    }

    /// After a commit: with checkpoints in the background, asks for one when the WAL has grown
    /// past the threshold, and keeps the WAL bounded (`checkpoint`). Nothing otherwise.
    pub fn after_commit(&self) -> Result<(), StoreError> {
        match &self.checkpointer {
            Some(checkpointer) => checkpointer.after_commit(&self.conn),
            None => Ok(()),
        }
    }

    /// Makes this connection's commits synced to disk (`synchronous = FULL`: SQLite syncs the WAL
    /// at each commit) or not (`NORMAL`, the default: a commit survives any process's death, not
    /// a power loss). The collector turns it on for a session's last batch, so a completed
    /// session is on disk whatever happens to the machine afterwards; the one sync also covers
    /// the session's earlier commits, which are in the same WAL file before it.
    pub fn set_synced_commits(&self, synced: bool) -> Result<(), StoreError> {
        let level = if synced { "FULL" } else { "NORMAL" };
        self.conn
            .execute_batch(&format!("PRAGMA synchronous = {level};"))
            .ctx(&self.path, "cannot set synchronous")
    }

    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .ctx(&self.path, "cannot count items")
        };
        Ok(StoreCounts {
            folders: count("SELECT count(*) FROM folders")?,
            messages: count("SELECT count(*) FROM messages")?,
            tombstones: count("SELECT count(*) FROM sync_items WHERE deleted_at IS NOT NULL")?,
        })
    }

    /// The global id of a replica index used in this store's versions.
    pub(crate) fn replica_of(&mut self, idx: i64) -> Result<ReplicaId, StoreError> {
        if let Some(id) = self.by_idx.get(&idx) {
            return Ok(id.clone());
        }
        self.reload_replicas()?;
        self.by_idx
            .get(&idx)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("replica index {idx} is not in sync_replicas"),
            })
    }

    /// The index of a replica in this store, if it has one.
    pub(crate) fn index_of(&mut self, id: &ReplicaId) -> Result<Option<i64>, StoreError> {
        if let Some(idx) = self.by_id.get(id) {
            return Ok(Some(*idx));
        }
        let p = self.path.clone();
        let idx: Option<i64> = self
            .conn
            .query_row(
                "SELECT idx FROM sync_replicas WHERE replica = ?1",
                [id.as_str()],
                |r| r.get(0),
            )
            .optional()
            .ctx(&p, "cannot read replicas")?;
        if let Some(idx) = idx {
            self.by_id.insert(id.clone(), idx);
            self.by_idx.insert(idx, id.clone());
        }
        Ok(idx)
    }

    /// A version as the store keeps it: (replica index, tick).
    pub(crate) fn version_of(&mut self, idx: i64, tick: i64) -> Result<Version, StoreError> {
        Ok(Version {
            replica: self.replica_of(idx)?,
            tick: tick.max(0) as u64,
        })
    }
}

#[cfg(test)]
mod id_window_tests;
#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod migration_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod unit_rows_tests;
#[cfg(test)]
mod wal_appends_tests;
/// Puts a SQLite file in WAL mode. Several processes open one file at once (the synchronizer,
/// the collector, applications, agents); the switch needs a lock for which SQLite does not
/// always call the busy handler, so it is retried here for up to 10 s. A file already in WAL is
/// only read.
pub fn ensure_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        let busy = match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        {
            Ok(now) => !now.eq_ignore_ascii_case("wal"),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => true,
            Err(e) => return Err(e),
        };
        if busy && std::time::Instant::now() >= deadline {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some("another process kept the file locked for 10 s".into()),
            ));
        }
        if busy {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_conflicts;
