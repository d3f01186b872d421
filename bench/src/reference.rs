//! The reference inserts every sync is measured against: the same rows written straight into
//! SQLite, with no process, no wire and no sync logic.
//!
//! Three of them, each adding one thing the initial sync must do, so the table can tell the
//! price of each from the price of the sync's own work:
//! 1. [`Reference::Limit`]: one transaction into a plain table (its primary key only). The
//!    issue's limit.
//! 2. [`Reference::PerBatch`]: the same, with a commit every batch, as PRODUCT.md's per-batch
//!    atomicity demands.
//! 3. [`Reference::StoreTables`]: the store's own tables (schema from `Store::open`: the public
//!    `messages` with its folder index and checks, the item row with its id index, three unit
//!    versions per message with their version index), a commit every batch, the store's
//!    triggers off as an import has them. What the store's layout costs before the sync does
//!    anything.
//!
//! All three run on connections set up as the collector's import connection: the store's page
//! size, WAL and `synchronous`, and the import's page cache and checkpoint interval, so no
//! reference is slower than it need be.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, Transaction};
use shared::model::ItemKind;
use shared::store::{Store, IMPORT_PAGE_CACHE_MIB, WAL_AUTOCHECKPOINT_PAGES};

use crate::fill::{
    checkpoint_all, create_folders, insert_message, open_like_the_store, Filled, INSERT_MESSAGE,
    SEED,
};
use crate::mail::{Ids, Mail, MailStream};

/// Which reference insert to run.
#[derive(Clone, Copy, Debug)]
pub enum Reference {
    Limit,
    PerBatch { batch: usize },
    StoreTables { batch: usize },
}

/// The plain table of the limit: the message's columns and its primary key, nothing else.
const PLAIN_TABLE: &str = "CREATE TABLE messages (
    id TEXT PRIMARY KEY NOT NULL, folder_id TEXT NOT NULL, subject TEXT NOT NULL,
    sender TEXT NOT NULL, received_at INTEGER NOT NULL, headers TEXT NOT NULL,
    body BLOB, is_read INTEGER NOT NULL)";

/// The replica the store-tables reference pretends its versions come from.
const SOURCE_REPLICA: &str = "reference-source";

/// Writes the benchmark's `n` messages into a new database at `path` as `how` says. Only the
/// inserts, the commits and the last checkpoint ([`checkpoint_all`]) are timed, not making up the
/// mail nor creating the schema. The store-tables reference makes its own folders; the others
/// write `folder_ids` as given. The messages' ids take the form `ids`, as in the source store.
pub fn run(
    how: Reference,
    path: &Path,
    n: usize,
    ids: Ids,
    folder_ids: &[String],
) -> Result<Filled> {
    let plain_table = |per_transaction: usize| -> Result<Filled> {
        let mut conn = open_like_the_import(path)?;
        if matches!(how, Reference::Limit) {
            // One transaction cannot be checkpointed before its commit, so the limit's
            // checkpoint is all of it, at the end. SQLite would run it inside the commit; here
            // it runs right after, timed alike, so that the table can show its share.
            conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        }
        conn.execute_batch(PLAIN_TABLE)?;
        insert_in_transactions(&mut conn, n, ids, per_transaction, |tx, m| {
            insert_message(
                &mut tx.prepare_cached(INSERT_MESSAGE)?,
                m,
                &folder_ids[m.folder],
            )
        })
    };
    match how {
        Reference::Limit => plain_table(n),
        Reference::PerBatch { batch } => plain_table(batch),
        Reference::StoreTables { batch } => store_tables(path, n, ids, batch),
    }
}

/// A connection set up as the collector's import connection: the store's page size, WAL and
/// `synchronous`, the import's page cache and checkpoint interval.
fn open_like_the_import(path: &Path) -> Result<Connection> {
    let conn = open_like_the_store(path)?;
    conn.execute_batch(&format!(
        "PRAGMA cache_size = -{}; PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};",
        u64::from(IMPORT_PAGE_CACHE_MIB) * 1024
    ))?;
    Ok(conn)
}

/// Every message as the collector records a new one: its item row (kind, creation version and
/// time) and its row linked to it (`sync_rid`), with the triggers off (as `store::fresh` has them
/// for a never-seen message). Its three live units carry the creation version, so they have no
/// rows (migration 7). No knowledge, no conflict checks.
fn store_tables(path: &Path, n: usize, ids: Ids, batch: usize) -> Result<Filled> {
    drop(Store::open(path).with_context(|| format!("cannot create {}", path.display()))?);
    let mut conn = open_like_the_import(path)?;
    let folder_ids = create_folders(&mut conn)?;
    let source: i64 = conn.query_row(
        "INSERT INTO sync_replicas (replica) VALUES (?1) RETURNING idx",
        [SOURCE_REPLICA],
        |r| r.get(0),
    )?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
    let at = chrono::Utc::now().timestamp_millis();
    let mut tick: i64 = 0;
    insert_in_transactions(&mut conn, n, ids, batch, |tx, m| {
        tick += 1;
        tx.prepare_cached(
            "INSERT INTO sync_items (id, kind, created_r, created_t, deleted_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
        )?
        .execute(params![m.id, ItemKind::Message.code(), source, tick, at])?;
        let rid = tx.last_insert_rowid();
        tx.prepare_cached(
            "INSERT INTO messages \
             (id, folder_id, subject, sender, received_at, headers, body, is_read, sync_rid) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            m.id,
            folder_ids[m.folder],
            m.subject,
            m.sender,
            m.received_at,
            m.headers,
            m.body,
            m.is_read,
            rid
        ])?;
        Ok(())
    })
}

/// Inserts the benchmark's `n` messages (ids of form `ids`) with `insert`, committing after every
/// `per_transaction`, then checkpoints what the WAL still holds.
fn insert_in_transactions(
    conn: &mut Connection,
    n: usize,
    ids: Ids,
    per_transaction: usize,
    mut insert: impl FnMut(&Transaction<'_>, &Mail) -> Result<()>,
) -> Result<Filled> {
    let mut filled = Filled::default();
    let mut took = Duration::ZERO;
    let mut mail = MailStream::new(SEED, ids).take(n).peekable();
    while mail.peek().is_some() {
        let start = Instant::now();
        let tx = conn.transaction()?;
        took += start.elapsed();
        for m in mail.by_ref().take(per_transaction.max(1)) {
            let start = Instant::now();
            insert(&tx, &m)?;
            took += start.elapsed();
            filled.messages += 1;
            filled.bytes += m.data_len() as u64;
        }
        let start = Instant::now();
        tx.commit()?;
        took += start.elapsed();
    }
    filled.checkpoint = checkpoint_all(conn)?;
    filled.took = took + filled.checkpoint;
    Ok(filled)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const N: usize = 25;

    fn count(path: &Path) -> usize {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap()
    }

    /// Each reference writes the same messages, and its time includes its last checkpoint.
    #[test]
    fn every_reference_writes_the_same_messages_timed_with_its_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let folders: Vec<String> = (0..crate::fill::FOLDER_COUNT)
            .map(|i| format!("f{i}"))
            .collect();
        let mut bytes = Vec::new();
        for (name, how) in [
            ("limit", Reference::Limit),
            ("per-batch", Reference::PerBatch { batch: 10 }),
            ("store", Reference::StoreTables { batch: 10 }),
        ] {
            let path = dir.path().join(format!("{name}.db"));
            let filled = run(how, &path, N, Ids::Random, &folders).unwrap();
            assert_eq!((filled.messages, count(&path)), (N, N), "{name}");
            assert!(filled.checkpoint > Duration::ZERO, "{name}");
            assert!(filled.checkpoint <= filled.took, "{name}");
            bytes.push(filled.bytes);
        }
        assert!(bytes.iter().all(|&b| b == bytes[0] && b > 0), "{bytes:?}");
    }

    /// After `checkpoint_all` the database file alone, without its WAL, holds every row, while
    /// the connection that wrote them is still open (closing it would checkpoint, too).
    #[test]
    fn the_last_checkpoint_puts_every_row_in_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.db");
        let mut conn = open_like_the_import(&path).unwrap();
        conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = 0; {PLAIN_TABLE}"))
            .unwrap();
        insert_in_transactions(&mut conn, N, Ids::Exchange, N, |tx, m| {
            insert_message(&mut tx.prepare_cached(INSERT_MESSAGE)?, m, "f")
        })
        .unwrap();
        let alone = dir.path().join("file-alone.db");
        std::fs::copy(&path, &alone).unwrap();
        assert_eq!(count(&alone), N);
    }

    /// The store-tables reference writes what an import of a never-seen message writes, so the
    /// store reads each message back as an item with its creation version and three units.
    #[test]
    fn the_store_tables_hold_items_the_store_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        run(
            Reference::StoreTables { batch: 10 },
            &path,
            N,
            Ids::Exchange,
            &[],
        )
        .unwrap();
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.counts().unwrap().messages, N as u64);
        for (tick, mail) in MailStream::new(SEED, Ids::Exchange).take(N).enumerate() {
            let item = store.local_item(&mail.id).unwrap().unwrap();
            assert_eq!(item.kind, ItemKind::Message);
            assert_eq!(item.created.replica.as_str(), SOURCE_REPLICA);
            assert_eq!(item.created.tick, tick as u64 + 1);
            assert!(!item.deleted);
            let units: Vec<shared::model::Unit> = item.units.iter().map(|u| u.0).collect();
            assert_eq!(units, shared::model::Unit::live_units(ItemKind::Message));
            assert!(item.units.iter().all(|u| u.1 == item.created));
            let change = store.read_item_change(&mail.id).unwrap().unwrap();
            assert_eq!(change.id, mail.id);
        }
    }
}
