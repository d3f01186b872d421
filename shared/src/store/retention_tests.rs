//! Tombstone cleanup, forgotten knowledge and full enumeration (seed 001), in process. The
//! applications' writes go through a plain rusqlite connection.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use rusqlite::Connection;

use super::*;
use crate::knowledge::TickSet;
use crate::model::ItemKind;
use crate::store::items::ItemChange;
use crate::store::tests::new_store;

fn ids(app: &Connection, sql: &str) -> Vec<String> {
    app.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn ticks(from: u64, to: u64) -> TickSet {
    let mut t = TickSet::new();
    t.insert_range(from, to);
    t
}

/// An incremental in-process session (everything the destination lacks).
fn sync(src: &mut Store, dst: &mut Store) {
    super::tests::sync(src, dst, 100, ConflictRule::IncomingWins);
}

/// A full enumeration in batches of `batch` items, stopped after `stop_after` batches if given
/// (as a killed session would be). Returns the number of items sent.
fn full_sync(src: &mut Store, dst: &mut Store, batch: usize, stop_after: Option<usize>) -> usize {
    let made_with = src.knowledge().unwrap();
    let forgotten = src.forgotten_knowledge().unwrap();
    let mut session = ImportSession::new(
        src.replica().clone(),
        made_with.clone(),
        ConflictRule::IncomingWins,
    );
    let mut position = dst
        .full_position(src.replica())
        .unwrap()
        .unwrap_or_else(FullPosition::start);
    let mut sent = 0;
    for n in 1.. {
        if stop_after.is_some_and(|s| n > s) {
            break;
        }
        let expected = position.clone();
        let full = src.next_full_batch(&mut position, batch, 1 << 20).unwrap();
        let range = FullRange {
            kind: full.kind,
            after: full.after,
            upto: full.upto,
            forgotten: forgotten.clone(),
        };
        let b = full.batch;
        sent += b.changes.len();
        let learned = if b.done {
            made_with.clone()
        } else {
            made_with.project(b.versions.iter())
        };
        let changes: Vec<ItemChange> = b
            .changes
            .into_iter()
            .map(|c| ItemChange::from_wire(c, &b.replicas).unwrap())
            .collect();
        range.check(&expected, &changes, b.done).unwrap();
        let carried: HashSet<String> = changes.iter().map(|c| c.id.clone()).collect();
        dst.apply_full_batch(&mut session, &changes, &carried, &learned, b.done, &range)
            .unwrap();
        if b.done {
            break;
        }
    }
    sent
}

#[test]
fn cleanup_removes_only_tombstones_older_than_the_retention_and_forgets_their_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app) = new_store(&dir, "a.db");
    // Ticks: f 1, m1..m4 2..5, delete m1 6, delete m3 7.
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'F');
         INSERT INTO messages (id, folder_id) VALUES ('m1', 'f'), ('m2', 'f'), ('m3', 'f'), ('m4', 'f');
         DELETE FROM messages WHERE id = 'm1';
         DELETE FROM messages WHERE id = 'm3';
         UPDATE sync_items SET deleted_at = deleted_at - 40 * 86400 WHERE id = 'm1';",
    )
    .unwrap();
    let m1_rid: i64 = app
        .query_row("SELECT rid FROM sync_items WHERE id = 'm1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let report = a.cleanup_tombstones("30d".parse().unwrap()).unwrap();
    assert_eq!(report.removed, 1);
    assert_eq!(
        ids(
            &app,
            "SELECT id FROM sync_items WHERE deleted_at IS NOT NULL"
        ),
        vec!["m3"]
    );
    assert_eq!(
        app.query_row(
            "SELECT count(*) FROM sync_units WHERE item = ?1",
            [m1_rid],
            |r| r.get::<_, i64>(0)
        )
        .unwrap(),
        0,
        "m1's versions went with it"
    );
    // Only m1's delete: ticks 1..5 below it still carry live changes (f, m2, m4), so no gap is
    // filled — a destination lacking one of them is not pushed into a full enumeration.
    let forgotten = a.forgotten_knowledge().unwrap();
    assert_eq!(forgotten.get(a.replica()), Some(&ticks(6, 6)));
    assert_eq!(report.forgotten, forgotten);
    // The public tables are untouched; a second cleanup finds nothing.
    assert_eq!(
        ids(&app, "SELECT id FROM messages ORDER BY id"),
        vec!["m2", "m4"]
    );
    assert_eq!(
        a.cleanup_tombstones("30d".parse().unwrap())
            .unwrap()
            .removed,
        0
    );
}

#[test]
fn forgotten_knowledge_widens_over_ticks_no_item_carries_any_more() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app) = new_store(&dir, "a.db");
    // f 1, m 2, m edited 3, m deleted 4, g 5, f deleted 6.
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'F');
         INSERT INTO messages (id, folder_id) VALUES ('m', 'f');
         UPDATE messages SET subject = 'edited' WHERE id = 'm';
         DELETE FROM messages WHERE id = 'm';
         INSERT INTO folders (id, name) VALUES ('g', 'G');
         DELETE FROM folders WHERE id = 'f';",
    )
    .unwrap();
    let report = a.cleanup_tombstones("0s".parse().unwrap()).unwrap();
    assert_eq!(report.removed, 2);
    // Removed: 4 and 6. Ticks 1..3 are superseded (no item carries them): filled. Tick 5 is g's
    // live creation: never claimed.
    let mut expected = ticks(1, 4);
    expected.insert(6);
    assert_eq!(report.forgotten.get(a.replica()), Some(&expected));
}

#[test]
fn cleanup_with_nothing_old_enough_reads_one_index_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app) = new_store(&dir, "a.db");
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'F');
         INSERT INTO messages (id, folder_id) VALUES ('m', 'f');
         DELETE FROM messages WHERE id = 'm';",
    )
    .unwrap();
    let before = app
        .query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert_eq!(
        a.cleanup_tombstones("1d".parse().unwrap()).unwrap().removed,
        0
    );
    let after = app
        .query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert_eq!(
        before, after,
        "a cleanup with nothing to do commits nothing"
    );
    let plan = |sql: &str| super::tests::query_plan(&app, sql);
    let probe = plan(super::cleanup::ANY_OLD_TOMBSTONE);
    assert!(
        probe.iter().any(|p| p
            == "SEARCH sync_items USING COVERING INDEX sync_items_by_deletion (deleted_at>? AND deleted_at<?)"),
        "{probe:?}"
    );
    assert!(
        !probe.iter().any(|p| p.starts_with("SCAN sync_")),
        "{probe:?}"
    );
    // With old tombstones, each is read from the deletion index and its version by its rid:
    // the cost follows the tombstones removed, not the store.
    assert_eq!(
        plan(super::cleanup::OLD_TOMBSTONES),
        vec![
            "SEARCH i USING COVERING INDEX sync_items_by_deletion (deleted_at>? AND deleted_at<?)",
            "SEARCH u USING PRIMARY KEY (item=?) LEFT-JOIN"
        ]
    );
}

#[test]
fn retention_reads_as_written_and_refuses_nonsense() {
    assert_eq!(
        "30d".parse::<Retention>().unwrap().period().as_secs(),
        30 * 86_400
    );
    assert_eq!("0s".parse::<Retention>().unwrap().to_string(), "0s");
    assert_eq!("90m".parse::<Retention>().unwrap().to_string(), "90m");
    assert_eq!("48h".parse::<Retention>().unwrap().to_string(), "2d");
    for bad in ["", "30", "d", "3w", "-1d", "1.5h"] {
        let e = bad.parse::<Retention>().unwrap_err();
        assert!(e.contains("not a duration"), "{bad}: {e}");
    }
    let r: Retention = "30d".parse().unwrap();
    assert_eq!(r.interval().as_secs(), 3600);
    assert_eq!("0s".parse::<Retention>().unwrap().interval().as_secs(), 1);
}

/// A and B in sync, then B stays away: A deletes and forgets, both make new items.
fn out_of_date_pair(dir: &tempfile::TempDir) -> (Store, Connection, Store, Connection) {
    let (mut a, app_a) = new_store(dir, "a.db");
    let (mut b, app_b) = new_store(dir, "b.db");
    app_a
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('f', 'F'), ('old', 'Old');
             INSERT INTO messages (id, folder_id) VALUES ('m1', 'f'), ('m2', 'f'), ('m3', 'old');",
        )
        .unwrap();
    sync(&mut a, &mut b);
    sync(&mut b, &mut a);
    app_a
        .execute_batch(
            "DELETE FROM messages WHERE id IN ('m1', 'm3');
             DELETE FROM folders WHERE id = 'old';
             INSERT INTO messages (id, folder_id) VALUES ('a-new', 'f');",
        )
        .unwrap();
    app_b
        .execute_batch(
            "DELETE FROM messages WHERE id = 'm2';
             INSERT INTO messages (id, folder_id) VALUES ('b-new', 'f');",
        )
        .unwrap();
    a.cleanup_tombstones("0s".parse().unwrap()).unwrap();
    (a, app_a, b, app_b)
}

#[test]
fn a_full_enumeration_drops_what_the_source_forgot_and_keeps_what_it_never_saw() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a, mut b, app_b) = out_of_date_pair(&dir);
    let forgotten = a.forgotten_knowledge().unwrap();
    assert!(!b.knowledge().unwrap().is_superset_of(&forgotten));
    let tick = b.tick().unwrap();
    full_sync(&mut a, &mut b, 1, None);
    // m1, m3 and folder 'old' were deleted and forgotten at A: gone from B, without a tick.
    // b-new (A never saw it) stays; m2's tombstone here is not revived by A's live copy.
    assert_eq!(
        ids(&app_b, "SELECT id FROM messages ORDER BY id"),
        vec!["a-new", "b-new"]
    );
    assert_eq!(ids(&app_b, "SELECT id FROM folders"), vec!["f"]);
    assert_eq!(b.tick().unwrap(), tick, "drops take no tick");
    let known = b.knowledge().unwrap();
    assert!(known.is_superset_of(&a.knowledge().unwrap()));
    assert!(b.forgotten_knowledge().unwrap().is_superset_of(&forgotten));
    assert!(b.full_position(a.replica()).unwrap().is_none());
    // Back the other way, incrementally: b-new and m2's delete reach A; both hold the same.
    sync(&mut b, &mut a);
    assert_eq!(
        ids(&app_a, "SELECT id FROM messages ORDER BY id"),
        vec!["a-new", "b-new"]
    );
    // The next session from A is incremental again and sends nothing B lacks.
    assert!(b
        .knowledge()
        .unwrap()
        .is_superset_of(&a.forgotten_knowledge().unwrap()));
}

#[test]
fn an_interrupted_full_enumeration_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _app_a, mut b, app_b) = out_of_date_pair(&dir);
    // Folders pass: 'f' alone (then the pass's end); messages: a-new, m2, ...
    let first = full_sync(&mut a, &mut b, 1, Some(3));
    let at = b.full_position(a.replica()).unwrap().unwrap();
    assert_eq!(
        at,
        FullPosition {
            kind: ItemKind::Message,
            after: Some("a-new".into())
        }
    );
    // A killed session leaves what it did; the next one continues from there.
    let rest = full_sync(&mut a, &mut b, 1, None);
    assert_eq!(first, 2);
    assert_eq!(rest, 1, "only m2 is sent again: {rest}");
    assert_eq!(
        ids(&app_b, "SELECT id FROM messages ORDER BY id"),
        vec!["a-new", "b-new"]
    );
    assert!(b.full_position(a.replica()).unwrap().is_none());
}

#[test]
fn a_batch_out_of_its_range_or_order_is_refused() {
    let range = FullRange {
        kind: ItemKind::Message,
        after: Some("b".into()),
        upto: Some("d".into()),
        forgotten: Knowledge::new(),
    };
    let at = FullPosition {
        kind: ItemKind::Message,
        after: Some("b".into()),
    };
    assert!(range.check(&at, &[], false).is_ok());
    assert!(range.check(&FullPosition::start(), &[], false).is_err());
    assert!(range.check(&at, &[], true).unwrap_err().contains("ends"));
    let outside = ItemChange {
        id: "e".into(),
        kind: ItemKind::Message,
        created: crate::knowledge::Version::new("A", 1),
        units: vec![],
    };
    assert!(range
        .check(&at, &[outside], false)
        .unwrap_err()
        .contains("outside"));
}
