//! Writing the benchmark's mail as an application would: plain SQL on the store's public tables,
//! with the store's triggers doing the change tracking.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::{params, Connection};
use shared::store::{schema::PAGE_SIZE, Store};

use crate::mail::{Ids, Mail, MailStream, Rng, FOLDERS};

/// The seed of the benchmark's mail.
pub const SEED: u64 = 2004;
/// How many folders the source store holds.
pub const FOLDER_COUNT: usize = FOLDERS.len();
/// Rows per application transaction while filling the source store.
const APP_TRANSACTION: usize = 10_000;

/// What filling a store took.
#[derive(Clone, Debug, Default)]
pub struct Filled {
    pub messages: usize,
    /// Bytes of message data (ids, subjects, senders, headers, bodies).
    pub bytes: u64,
    /// From the first insert to the database file holding every row: the inserts, the commits
    /// and the last checkpoint.
    pub took: Duration,
    /// Of `took`, the last checkpoint: copying what the WAL still held into the database file.
    pub checkpoint: Duration,
}

/// A connection configured as the store configures its own: 8 KiB pages, WAL, `synchronous =
/// NORMAL`.
pub fn open_like_the_store(path: &Path) -> Result<Connection> {
    let conn = open(path)?;
    conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    Ok(conn)
}

/// Creates the source store (its schema comes from `Store::open`) and fills it with the ten
/// folders and `n` messages through the public tables, in application transactions of 10,000
/// rows; the store's triggers give every row its version. The messages' ids take the form `ids`.
pub fn source_store(path: &Path, n: usize, ids: Ids) -> Result<(Filled, Vec<String>)> {
    drop(Store::open(path).with_context(|| format!("cannot create {}", path.display()))?);
    let mut conn = open_like_the_store(path)?;
    let start = Instant::now();
    let folder_ids = create_folders(&mut conn)?;
    let mut filled = Filled::default();
    let mut mail = MailStream::new(SEED, ids).take(n).peekable();
    while mail.peek().is_some() {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT_MESSAGE)?;
            for m in mail.by_ref().take(APP_TRANSACTION) {
                insert_message(&mut insert, &m, &folder_ids[m.folder])?;
                filled.messages += 1;
                filled.bytes += m.data_len() as u64;
            }
        }
        tx.commit()?;
    }
    filled.checkpoint = checkpoint_all(&conn)?;
    filled.took = start.elapsed();
    Ok((filled, folder_ids))
}

/// Creates the ten folders through the public table, in one transaction; returns their ids in
/// the order of [`FOLDERS`].
pub fn create_folders(conn: &mut Connection) -> Result<Vec<String>> {
    let mut folder_ids: Vec<String> = Vec::new();
    let tx = conn.transaction()?;
    for (name, parent, _) in FOLDERS {
        let parent_id = parent.and_then(|p| {
            FOLDERS
                .iter()
                .position(|f| f.0 == p)
                .and_then(|i| folder_ids.get(i).cloned())
        });
        let id: String = tx.query_row(
            "INSERT INTO folders (parent_id, name) VALUES (?1, ?2) RETURNING id",
            params![parent_id, name],
            |r| r.get(0),
        )?;
        folder_ids.push(id);
    }
    tx.commit()?;
    Ok(folder_ids)
}

pub const INSERT_MESSAGE: &str = "INSERT INTO messages \
    (id, folder_id, subject, sender, received_at, headers, body, is_read) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

pub fn insert_message(
    insert: &mut rusqlite::CachedStatement<'_>,
    m: &Mail,
    folder_id: &str,
) -> Result<()> {
    insert.execute(params![
        m.id,
        folder_id,
        m.subject,
        m.sender,
        m.received_at,
        m.headers,
        m.body,
        m.is_read
    ])?;
    Ok(())
}

/// The 300 changes of one round, made by an application on the source store: 100 content
/// edits, 100 read-flag flips (each of distinct existing messages) and 100 new messages, whose
/// Exchange ids count on from the store's last message (every message so far took one rowid).
pub fn three_hundred_changes(
    path: &Path,
    folder_ids: &[String],
    round: u64,
    ids: Ids,
) -> Result<()> {
    let mut conn = open_like_the_store(path)?;
    let mut rng = Rng::new(SEED ^ (round + 1).wrapping_mul(0x5851_F42D_4C95_7F2D));
    let max_rowid: i64 = conn.query_row("SELECT max(rowid) FROM messages", [], |r| r.get(0))?;
    let mut stream = MailStream::new(SEED.wrapping_add(1000 + round), ids)
        .counting_from(max_rowid.max(0) as u64 + 1);
    let tx = conn.transaction()?;
    {
        let mut pick =
            tx.prepare_cached("SELECT id FROM messages WHERE rowid >= ?1 ORDER BY rowid LIMIT 1")?;
        let mut edit =
            tx.prepare_cached("UPDATE messages SET subject = ?2, body = ?3 WHERE id = ?1")?;
        let mut flip =
            tx.prepare_cached("UPDATE messages SET is_read = 1 - is_read WHERE id = ?1")?;
        let mut chosen = std::collections::HashSet::new();
        while chosen.len() < 200 {
            let rowid = 1 + rng.below(max_rowid.max(1) as usize) as i64;
            let id: String = pick.query_row([rowid], |r| r.get(0))?;
            if !chosen.insert(id.clone()) {
                continue;
            }
            if chosen.len() <= 100 {
                let subject = format!("{} (edited in round {round})", stream.subject());
                let body = stream.body("again", 1200);
                edit.execute(params![id, subject, body])?;
            } else {
                flip.execute([&id])?;
            }
        }
        let mut insert = tx.prepare_cached(INSERT_MESSAGE)?;
        for m in stream.by_ref().take(100) {
            insert_message(&mut insert, &m, &folder_ids[m.folder])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// How long a last checkpoint may wait for one that another connection is running.
const CHECKPOINT_DEADLINE: Duration = Duration::from_secs(600);

/// Copies everything the WAL of `conn`'s database holds into the database file and syncs it, and
/// returns how long that took. Every timed write of the benchmark ends with this, the initial
/// sync included (on the destination, after `agent sync` returned), so that each ends in the
/// same state: every row in the database file. Without it the limit, whose one commit runs
/// SQLite's checkpoint of the whole WAL, would be measured to that state, and the sync, whose
/// collector checkpoints in the background and leaves up to `WAL_AUTOCHECKPOINT_PAGES` behind,
/// to an earlier one.
///
/// A checkpoint that another connection is running (the collector's checkpointer) makes SQLite
/// answer busy without waiting; this tries again until the whole WAL is copied.
pub fn checkpoint_all(conn: &Connection) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let (busy, log, copied): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        if busy == 0 && copied >= log {
            return Ok(start.elapsed());
        }
        if start.elapsed() > CHECKPOINT_DEADLINE {
            anyhow::bail!(
                "the last checkpoint did not finish within {CHECKPOINT_DEADLINE:?} \
                 ({copied} of {log} WAL frames copied, busy {busy})"
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Checkpoints the store at `path` as [`checkpoint_all`] does, from a connection of its own.
pub fn checkpoint_store(path: &Path) -> Result<Duration> {
    let conn = open(path)?;
    checkpoint_all(&conn).with_context(|| format!("cannot checkpoint {}", path.display()))
}

/// Opens the database at `path`, naming it when that fails.
fn open(path: &Path) -> Result<Connection> {
    Connection::open(path).with_context(|| format!("cannot open {}", path.display()))
}

/// How many messages a store holds.
pub fn message_count(path: &Path) -> Result<usize> {
    let conn = open(path)?;
    let n: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
    Ok(n.max(0) as usize)
}
