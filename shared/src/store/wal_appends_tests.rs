//! The WAL-appends shim: what a commit through it leaves in the files, read the way recovery
//! after a `kill -9` reads them (a copy of the database and its WAL, opened with SQLite's default
//! VFS and no wal-index, so every frame's checksum is checked again).
#![allow(clippy::unwrap_used)]

use super::wal_appends;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

const PAGE: usize = 8192;

fn wal_store(dir: &Path, cache_pages: i64) -> (PathBuf, Connection) {
    let path = dir.join("s.db");
    let conn = wal_appends::open(&path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA page_size = {PAGE}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = {cache_pages};
         CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL);"
    ))
    .unwrap();
    (path, conn)
}

/// What a process killed now would leave: the two files as they are, opened elsewhere.
fn as_left_by_a_kill(path: &Path, round: usize) -> Connection {
    let dir = path.with_file_name(format!("copy{round}"));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("s.db");
    std::fs::copy(path, &copy).unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    std::fs::copy(wal, PathBuf::from(format!("{}-wal", copy.display()))).unwrap();
    Connection::open(copy).unwrap()
}

/// Rows `(id, the first byte of v, length of v)`, in id order.
fn rows(conn: &Connection) -> Vec<(i64, i64, i64)> {
    conn.prepare("SELECT id, unicode(CAST(substr(v, 1, 1) AS TEXT)), length(v) FROM t ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn insert(conn: &Connection, ids: std::ops::Range<i64>, mark: u8) {
    let tx = conn.unchecked_transaction().unwrap();
    for id in ids {
        let v = vec![mark; 3000];
        tx.execute("INSERT OR REPLACE INTO t (id, v) VALUES (?1, ?2)", (id, v))
            .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn every_commit_is_in_the_files_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = wal_store(dir.path(), 2000);
    // Commits of one frame, of a few, and of many buffers' worth, one after another.
    for (round, n) in [1i64, 3, 40, 700, 2].into_iter().enumerate() {
        let start = rows(&conn).len() as i64;
        insert(&conn, start..start + n, b'a');
        let left = as_left_by_a_kill(&path, round);
        assert_eq!(rows(&left), rows(&conn), "after a commit of {n} rows");
    }
}

#[test]
fn a_transaction_that_overwrites_its_own_frames_leaves_valid_checksums() {
    let dir = tempfile::tempdir().unwrap();
    // A page cache of 20 pages: the transaction spills frames to the WAL and writes the same
    // pages again, so SQLite overwrites them in place and rewrites the checksums at the commit.
    let (path, conn) = wal_store(dir.path(), 20);
    insert(&conn, 0..200, b'a');
    let tx = conn.unchecked_transaction().unwrap();
    for pass in [b'b', b'c', b'd'] {
        for id in 0..400 {
            tx.execute(
                "INSERT OR REPLACE INTO t (id, v) VALUES (?1, ?2)",
                (id, vec![pass; 3000]),
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
    let left = as_left_by_a_kill(&path, 0);
    let expected: Vec<(i64, i64, i64)> = (0..400).map(|id| (id, i64::from(b'd'), 3000)).collect();
    assert_eq!(rows(&left), expected);
}

#[test]
fn a_rolled_back_transaction_leaves_the_next_commit_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = wal_store(dir.path(), 20);
    insert(&conn, 0..10, b'a');
    {
        let tx = conn.unchecked_transaction().unwrap();
        for id in 0..300 {
            tx.execute(
                "INSERT OR REPLACE INTO t (id, v) VALUES (?1, ?2)",
                (id, vec![b'x'; 3000]),
            )
            .unwrap();
        }
        tx.rollback().unwrap();
    }
    insert(&conn, 10..60, b'b');
    let left = as_left_by_a_kill(&path, 0);
    assert_eq!(rows(&left), rows(&conn));
    assert_eq!(rows(&left).len(), 60);
}

#[test]
fn commits_after_a_checkpoint_start_the_wal_over_and_are_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = wal_store(dir.path(), 2000);
    for round in 0..4 {
        let start = rows(&conn).len() as i64;
        insert(&conn, start..start + 50, b'a' + round as u8);
        // A full checkpoint by another connection, as the checkpointer's thread does: the next
        // commit writes the WAL from its start again.
        let other = wal_appends::open(&path).unwrap();
        let (busy, _, _): (i64, i64, i64) = other
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(busy, 0);
        insert(&conn, start + 50..start + 60, b'z');
        let left = as_left_by_a_kill(&path, round);
        assert_eq!(rows(&left), rows(&conn), "round {round}");
    }
}

#[test]
fn a_second_connection_reads_what_the_first_committed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = wal_store(dir.path(), 2000);
    let plain = Connection::open(&path).unwrap();
    let through_the_shim = wal_appends::open(&path).unwrap();
    for n in [1i64, 17, 500] {
        let start = rows(&conn).len() as i64;
        insert(&conn, start..start + n, b'q');
        assert_eq!(rows(&plain), rows(&conn));
        assert_eq!(rows(&through_the_shim), rows(&conn));
    }
}
