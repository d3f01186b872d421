//! Store tests. Applications' writes go through a *plain* rusqlite connection that does not use
//! the library, as any SQLite client would.
#![allow(clippy::unwrap_used)]

use rusqlite::Connection;

use super::*;
use crate::knowledge::Knowledge;
use crate::store::items::ItemChange;

pub(super) fn new_store(dir: &tempfile::TempDir, name: &str) -> (Store, Connection) {
    let path = dir.path().join(name);
    let store = Store::open(&path).unwrap();
    let app = Connection::open(&path).unwrap();
    (store, app)
}

/// Makes a store at `path` as the release of schema `version` made it, closes it, and opens an
/// application's connection to it: what a migration test starts from.
pub(super) fn old_store(path: &std::path::Path, version: i64) -> Connection {
    drop(Store::open_at(path, version).unwrap());
    Connection::open(path).unwrap()
}

/// (unit code, replica index, tick) of every unit of an item, sorted.
fn versions(app: &Connection, id: &str) -> Vec<(i64, i64, i64)> {
    let mut s = app
        .prepare(
            "SELECT u.unit, u.r, u.t FROM sync_unit_versions u JOIN sync_items i ON i.rid = u.item \
             WHERE i.id = ?1 ORDER BY u.unit",
        )
        .unwrap();
    s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The query plan of `sql` (each step's detail), its parameters bound to 0.
pub(super) fn query_plan(app: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = app.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let params = vec![0i64; stmt.parameter_count()];
    stmt.query_map(rusqlite::params_from_iter(params), |r| {
        r.get::<_, String>(3)
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn created(app: &Connection, id: &str) -> (i64, i64) {
    app.query_row(
        "SELECT created_r, created_t FROM sync_items WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// Seed 004's replica A: I1 created (1), I2 created (2), I2 updated (3), I3 created (4), I1
/// updated (5). The items are folders, which need no parent.
pub(crate) fn seed_replica_a(app: &Connection) {
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('I1', 'one');
         INSERT INTO folders (id, name) VALUES ('I2', 'two');
         UPDATE folders SET name = 'two, edited' WHERE id = 'I2';
         INSERT INTO folders (id, name) VALUES ('I3', 'three');
         UPDATE folders SET name = 'one, edited' WHERE id = 'I1';",
    )
    .unwrap();
}

/// Seed 004's replica B: I104 created (1), updated (2); I105 created (3), updated (4).
pub(crate) fn seed_replica_b(app: &Connection) {
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('I104', 'a');
         UPDATE folders SET name = 'a, edited' WHERE id = 'I104';
         INSERT INTO folders (id, name) VALUES ('I105', 'b');
         UPDATE folders SET name = 'b, edited' WHERE id = 'I105';",
    )
    .unwrap();
}

/// One in-process session: everything `src` has that `dst` lacks, batch by batch.
pub(super) fn sync(
    src: &mut Store,
    dst: &mut Store,
    batch: usize,
    rule: ConflictRule,
) -> Vec<ApplyOutcome> {
    sync_with(src, dst, batch, rule, Vec::new())
}

/// [`sync`] with operators' resolutions.
pub(super) fn sync_with(
    src: &mut Store,
    dst: &mut Store,
    batch: usize,
    rule: ConflictRule,
    resolutions: Vec<Resolution>,
) -> Vec<ApplyOutcome> {
    sync_observed(src, dst, batch, rule, resolutions, |_, _, _, _| true)
}

/// [`sync_with`], calling `each(n, phase, changes, done)` after the `n`th batch is applied; the
/// session stops after the last batch or when `each` returns false (a session cut short).
pub(super) fn sync_observed(
    src: &mut Store,
    dst: &mut Store,
    batch: usize,
    rule: ConflictRule,
    resolutions: Vec<Resolution>,
    mut each: impl FnMut(usize, crate::model::Phase, &[ItemChange], bool) -> bool,
) -> Vec<ApplyOutcome> {
    let made_with = src.knowledge().unwrap();
    let mut session = ImportSession::new(src.replica().clone(), made_with.clone(), rule)
        .with_resolutions(resolutions);
    let mut dest = dst.knowledge().unwrap();
    let mut cursor = EnumerationCursor::default();
    let mut outcomes = Vec::new();
    for n in 1.. {
        let b = src
            .next_batch(&mut cursor, &made_with, &dest, batch, 1 << 20)
            .unwrap();
        let learned = if b.done {
            made_with.clone()
        } else {
            made_with.project(b.versions.iter())
        };
        let changes = b
            .changes
            .into_iter()
            .map(|c| ItemChange::from_wire(c, &b.replicas).unwrap())
            .collect::<Vec<_>>();
        let outcome = dst
            .apply_batch(&mut session, &changes, &learned, b.done)
            .unwrap();
        // What the success message reports is what the store now holds, as read back.
        assert_eq!(outcome.knowledge, dst.knowledge().unwrap());
        dest = outcome.knowledge.clone();
        outcomes.push(outcome);
        if !each(n, b.phase, &changes, b.done) || b.done {
            break;
        }
    }
    outcomes
}

pub(super) fn public_rows(app: &Connection) -> Vec<String> {
    let mut rows = Vec::new();
    let mut s = app
        .prepare("SELECT id, coalesce(parent_id, '-'), name FROM folders ORDER BY id")
        .unwrap();
    rows.extend(
        s.query_map([], |r| {
            Ok(format!(
                "F {} {} {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?
            ))
        })
        .unwrap()
        .map(Result::unwrap),
    );
    let mut s = app
        .prepare("SELECT id, folder_id, subject, is_read, hex(body) FROM messages ORDER BY id")
        .unwrap();
    rows.extend(
        s.query_map([], |r| {
            Ok(format!(
                "M {} {} {} {} {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?
            ))
        })
        .unwrap()
        .map(Result::unwrap),
    );
    rows
}

#[test]
fn seed_004_version_tables_come_out_tick_for_tick() {
    let dir = tempfile::tempdir().unwrap();
    let (a, app) = new_store(&dir, "a.db");
    seed_replica_a(&app);
    // Element, update (replica, tick), creation (replica, tick) — replica 0 is A itself.
    assert_eq!(versions(&app, "I1"), vec![(1, 0, 5), (2, 0, 1)]);
    assert_eq!(created(&app, "I1"), (0, 1));
    assert_eq!(versions(&app, "I2"), vec![(1, 0, 3), (2, 0, 2)]);
    assert_eq!(created(&app, "I2"), (0, 2));
    assert_eq!(versions(&app, "I3"), vec![(1, 0, 4), (2, 0, 4)]);
    let k = a.knowledge().unwrap();
    assert_eq!(k.upto(a.replica()), 5);
    assert_eq!(k.range_count(), 1);
}

#[test]
fn one_tick_per_row_change_and_none_for_an_update_that_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, app) = new_store(&dir, "s.db");
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'Inbox');
         INSERT INTO messages (id, folder_id, subject) VALUES ('m', 'f', 'hi');",
    )
    .unwrap();
    assert_eq!(store.tick().unwrap(), 2);
    app.execute("UPDATE messages SET subject = 'hi' WHERE id = 'm'", [])
        .unwrap();
    assert_eq!(
        store.tick().unwrap(),
        2,
        "an update that changes no value takes no tick"
    );
    app.execute(
        "UPDATE messages SET subject = 'hello', is_read = 1 WHERE id = 'm'",
        [],
    )
    .unwrap();
    assert_eq!(store.tick().unwrap(), 3, "one row change, one tick");
    // content and read status share tick 3; location keeps the creation tick.
    assert_eq!(versions(&app, "m"), vec![(3, 0, 3), (4, 0, 3), (5, 0, 2)]);
    app.execute("UPDATE messages SET is_read = 0", []).unwrap();
    assert_eq!(versions(&app, "m"), vec![(3, 0, 3), (4, 0, 4), (5, 0, 2)]);
    // Several rows in one statement: one tick each.
    app.execute_batch("INSERT INTO messages (folder_id) VALUES ('f'), ('f'), ('f');")
        .unwrap();
    assert_eq!(store.tick().unwrap(), 7);
    let random_ids: i64 = app
        .query_row(
            "SELECT count(DISTINCT id) FROM messages WHERE length(id) = 32",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        random_ids, 3,
        "an app that gives no id gets a random global id"
    );
}

#[test]
fn a_move_is_one_update_of_the_location_unit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, app) = new_store(&dir, "s.db");
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('a', 'A'), ('b', 'B');
         INSERT INTO messages (id, folder_id) VALUES ('m', 'a');
         UPDATE messages SET folder_id = 'b' WHERE id = 'm';",
    )
    .unwrap();
    assert_eq!(store.tick().unwrap(), 4);
    assert_eq!(versions(&app, "m"), vec![(3, 0, 3), (4, 0, 3), (5, 0, 4)]);
    let items: i64 = app
        .query_row("SELECT count(*) FROM sync_items WHERE id = 'm'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(items, 1);
}

#[test]
fn a_delete_leaves_a_tombstone_and_a_folder_with_contents_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, app) = new_store(&dir, "s.db");
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'Inbox');
         INSERT INTO messages (id, folder_id) VALUES ('m', 'f');",
    )
    .unwrap();
    let err = app
        .execute("DELETE FROM folders WHERE id = 'f'", [])
        .unwrap_err()
        .to_string();
    assert!(err.contains("folder still holds messages"), "{err}");
    assert_eq!(store.tick().unwrap(), 2, "a refused delete takes no tick");
    app.execute("DELETE FROM messages WHERE id = 'm'", [])
        .unwrap();
    assert_eq!(versions(&app, "m"), vec![(8, 0, 3)]);
    assert_eq!(
        created(&app, "m"),
        (0, 2),
        "the tombstone keeps the creation version"
    );
    app.execute("DELETE FROM folders WHERE id = 'f'", [])
        .unwrap();
    assert_eq!(versions(&app, "f"), vec![(9, 0, 4)]);
    assert_eq!(store.counts().unwrap().tombstones, 2);
    let err = app
        .execute(
            "INSERT INTO messages (id, folder_id) VALUES ('x', 'nope')",
            [],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("folder_id names no folder"), "{err}");
}

#[test]
fn a_file_that_is_not_a_store_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, b"hello, this is not a database at all").unwrap();
    let err = Store::open(&text).unwrap_err().to_string();
    assert!(
        err.contains("not an icsync store") && err.contains("notes.txt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&text).unwrap(),
        b"hello, this is not a database at all"
    );

    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let before = std::fs::read(&other).unwrap();
    let err = Store::open(&other).unwrap_err().to_string();
    assert!(err.contains("another application"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), before);
}

#[test]
fn a_store_of_a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA journal_mode = DELETE; PRAGMA user_version = 99;")
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("schema version 99 is newer"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn reopening_keeps_the_replica_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let first = Store::open(&path).unwrap().replica().clone();
    assert_eq!(Store::open(&path).unwrap().replica(), &first);
}

#[test]
fn seed_004_synchronization_example() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a) = new_store(&dir, "a.db");
    let (mut b, app_b) = new_store(&dir, "b.db");
    seed_replica_a(&app_a);
    seed_replica_b(&app_b);
    let (ra, rb) = (a.replica().clone(), b.replica().clone());
    sync(&mut a, &mut b, 2, ConflictRule::Defer);
    sync(&mut b, &mut a, 2, ConflictRule::Defer);
    let mut expected = Knowledge::new();
    expected.insert_range(&ra, 1, 5);
    expected.insert_range(&rb, 1, 4);
    assert_eq!(a.knowledge().unwrap(), expected, "A5, B4 on A");
    assert_eq!(b.knowledge().unwrap(), expected, "A5, B4 on B");
    assert_eq!(public_rows(&app_a), public_rows(&app_b));
    assert_eq!(public_rows(&app_a).len(), 5);
    // B's version table: A's items keep A's versions (replica index 1 on B is A).
    assert_eq!(versions(&app_b, "I1"), vec![(1, 1, 5), (2, 1, 1)]);
    assert_eq!(versions(&app_b, "I104"), vec![(1, 0, 2), (2, 0, 1)]);
    // A second session sends nothing.
    let again = sync(&mut a, &mut b, 2, ConflictRule::Defer);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].applied + again[0].skipped, 0);
}

#[test]
fn a_store_restored_from_a_backup_reports_the_ticks_it_hears_of_as_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _app_a) = new_store(&dir, "a.db");
    let (mut b, app_b) = new_store(&dir, "b.db");
    app_b
        .execute_batch("INSERT INTO folders (id, name) VALUES ('F1', 'one');")
        .unwrap();
    let backup = dir.path().join("b.backup.db");
    app_b
        .execute("VACUUM INTO ?1", [backup.to_str().unwrap()])
        .unwrap();
    seed_replica_b(&app_b);
    let rb = b.replica().clone();
    sync(&mut b, &mut a, 2, ConflictRule::Defer);
    // Both connections closed first, so no WAL of the later B outlives the copy.
    drop((b, app_b));
    // B comes back from the backup: its counter is 1 again, and A knows B:1..=5.
    std::fs::copy(&backup, dir.path().join("b.db")).unwrap();
    let mut b = Store::open(&dir.path().join("b.db")).unwrap();
    assert_eq!(b.tick().unwrap(), 1);
    // `sync` checks each batch's reported knowledge against the store's, read back.
    let outcomes = sync(&mut a, &mut b, 2, ConflictRule::Defer);
    assert!(outcomes.last().unwrap().knowledge.contains(&Version {
        replica: rb,
        tick: 5
    }));
    assert_eq!(
        b.tick().unwrap(),
        5,
        "the counter moved past what B had given out"
    );
}

#[test]
fn seed_004_conflict_example_is_detected_and_deferred() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a) = new_store(&dir, "a.db");
    let (mut b, app_b) = new_store(&dir, "b.db");
    seed_replica_a(&app_a);
    seed_replica_b(&app_b);
    sync(&mut a, &mut b, 10, ConflictRule::Defer);
    sync(&mut b, &mut a, 10, ConflictRule::Defer);
    // Both update I2: A6 on A, B5 on B.
    app_a
        .execute("UPDATE folders SET name = 'by A' WHERE id = 'I2'", [])
        .unwrap();
    app_b
        .execute("UPDATE folders SET name = 'by B' WHERE id = 'I2'", [])
        .unwrap();
    let out = sync(&mut a, &mut b, 10, ConflictRule::Defer);
    let conflicts: Vec<_> = out.iter().flat_map(|o| o.conflicts.clone()).collect();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].item, "I2");
    assert_eq!((conflicts[0].local.tick, conflicts[0].remote.tick), (5, 6));
    assert_eq!(conflicts[0].outcome, crate::store::Outcome::Deferred);
    let name: String = app_b
        .query_row("SELECT name FROM folders WHERE id = 'I2'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        name, "by B",
        "a deferred conflict keeps the destination's value"
    );
    assert!(
        !b.knowledge()
            .unwrap()
            .contains(&crate::knowledge::Version::new(a.replica().clone(), 6)),
        "the deferred version stays out of the learned knowledge"
    );
    // It comes again next session.
    let out = sync(&mut a, &mut b, 10, ConflictRule::Defer);
    assert_eq!(out.iter().map(|o| o.conflicts.len()).sum::<usize>(), 1);
}

#[test]
fn unrelated_units_edited_on_both_sides_are_no_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a) = new_store(&dir, "a.db");
    let (mut b, app_b) = new_store(&dir, "b.db");
    app_a
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('f', 'Inbox');
             INSERT INTO messages (id, folder_id, subject, body) VALUES ('m', 'f', 's', x'00ff');",
        )
        .unwrap();
    sync(&mut a, &mut b, 10, ConflictRule::Defer);
    app_a
        .execute("UPDATE messages SET is_read = 1", [])
        .unwrap();
    app_b
        .execute("UPDATE messages SET subject = 'edited on B'", [])
        .unwrap();
    let out: Vec<_> = sync(&mut a, &mut b, 10, ConflictRule::Defer)
        .into_iter()
        .chain(sync(&mut b, &mut a, 10, ConflictRule::Defer))
        .collect();
    assert!(out.iter().all(|o| o.conflicts.is_empty()));
    assert_eq!(public_rows(&app_a), public_rows(&app_b));
    assert_eq!(public_rows(&app_a)[1], "M m f edited on B 1 00FF");
}

#[test]
fn hierarchy_moves_and_deletes_converge_in_small_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a) = new_store(&dir, "a.db");
    let (mut b, app_b) = new_store(&dir, "b.db");
    app_a
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('root', 'Root');
             INSERT INTO folders (id, parent_id, name) VALUES ('x', 'root', 'X');
             INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'x', 'one'), ('m2', 'x', 'two');",
        )
        .unwrap();
    sync(&mut a, &mut b, 1, ConflictRule::Defer);
    // B makes a new folder and moves m1 into it; A deletes m2 and the renames root.
    app_b
        .execute_batch(
            "INSERT INTO folders (id, parent_id, name) VALUES ('y', 'x', 'Y');
             UPDATE messages SET folder_id = 'y' WHERE id = 'm1';",
        )
        .unwrap();
    app_a
        .execute_batch("DELETE FROM messages WHERE id = 'm2'; UPDATE folders SET name = 'R' WHERE id = 'root';")
        .unwrap();
    sync(&mut b, &mut a, 1, ConflictRule::Defer);
    sync(&mut a, &mut b, 1, ConflictRule::Defer);
    assert_eq!(public_rows(&app_a), public_rows(&app_b));
    // Now delete the whole subtree on A, children first as the triggers demand.
    app_a
        .execute_batch(
            "DELETE FROM messages; DELETE FROM folders WHERE id = 'y'; DELETE FROM folders WHERE id = 'x';",
        )
        .unwrap();
    let out = sync(&mut a, &mut b, 1, ConflictRule::Defer);
    assert!(out.iter().all(|o| o.errors.is_empty()), "{out:?}");
    assert_eq!(public_rows(&app_a), public_rows(&app_b));
    assert_eq!(public_rows(&app_b), vec!["F root - R".to_string()]);
    assert_eq!(a.knowledge().unwrap(), b.knowledge().unwrap());
}

#[test]
fn a_batch_applied_twice_changes_nothing_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a) = new_store(&dir, "a.db");
    let (mut b, app_b) = new_store(&dir, "b.db");
    seed_replica_a(&app_a);
    let made_with = a.knowledge().unwrap();
    let mut cursor = EnumerationCursor::default();
    let batch = a
        .next_batch(&mut cursor, &made_with, &Knowledge::new(), 100, 1 << 20)
        .unwrap();
    let changes: Vec<ItemChange> = batch
        .changes
        .iter()
        .cloned()
        .map(|c| ItemChange::from_wire(c, &batch.replicas).unwrap())
        .collect();
    let mut session =
        ImportSession::new(a.replica().clone(), made_with.clone(), ConflictRule::Defer);
    let first = b
        .apply_batch(&mut session, &changes, &made_with, true)
        .unwrap();
    assert_eq!(first.applied, 3);
    let rows = public_rows(&app_b);
    let tick = b.tick().unwrap();
    let second = b
        .apply_batch(&mut session, &changes, &made_with, true)
        .unwrap();
    assert_eq!((second.applied, second.skipped), (0, 3));
    assert_eq!(public_rows(&app_b), rows);
    assert_eq!(b.tick().unwrap(), tick, "imports take no local tick");
}

#[test]
fn enumeration_reads_the_version_and_creation_indexes_not_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, app) = new_store(&dir, "s.db");
    // Live items are walked within their kind (migration 8): the hierarchy phase does not walk
    // the messages to find the folders.
    assert_eq!(
        query_plan(&app, super::enumerate::CHANGED_UNITS),
        vec![
            "MERGE (UNION ALL)",
            "LEFT",
            "SEARCH sync_units USING COVERING INDEX sync_units_by_version (phase=? AND r=? AND t>? AND t<?)",
            "RIGHT",
            "SEARCH i USING INDEX sync_items_by_creation (kind=? AND created_r=? AND created_t>? AND created_t<?)",
            "CORRELATED SCALAR SUBQUERY 3",
            "SEARCH k USING PRIMARY KEY (kind=?)",
            "CORRELATED SCALAR SUBQUERY 2",
            "SEARCH u USING PRIMARY KEY (item=? AND unit=?)"
        ]
    );
    assert_eq!(
        query_plan(&app, super::enumerate::CHANGED_UNIT_ROWS),
        vec!["SEARCH sync_units USING COVERING INDEX sync_units_by_version (phase=? AND r=? AND t>? AND t<?)"]
    );
    let carries = query_plan(&app, super::cleanup::CARRIES_VERSION_BETWEEN);
    assert!(
        carries.contains(&"SEARCH i USING INDEX sync_items_by_creation (kind=? AND created_r=? AND created_t>? AND created_t<?)".to_string()),
        "{carries:#?}"
    );
    let scans = |step: &String| step.starts_with("SCAN") && step != "SCAN CONSTANT ROW";
    assert!(!carries.iter().any(scans), "{carries:#?}");
}

#[test]
fn each_phase_enumerates_the_live_units_of_one_kind() {
    use crate::model::{ItemKind, Phase};
    assert_eq!(
        Phase::ALL.map(Phase::live_kind),
        [
            Some(ItemKind::Folder),
            Some(ItemKind::Message),
            Some(ItemKind::Message),
            None,
            None
        ]
    );
    // And the store's own table of live units agrees.
    let dir = tempfile::tempdir().unwrap();
    let (_store, app) = new_store(&dir, "s.db");
    for phase in Phase::ALL {
        let kinds: Vec<i64> = app
            .prepare("SELECT DISTINCT kind FROM sync_live_units WHERE phase = ?1")
            .unwrap()
            .query_map([phase.code()], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            kinds,
            phase
                .live_kind()
                .map(ItemKind::code)
                .into_iter()
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn an_item_is_read_for_export_in_one_statement_its_row_found_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, app) = new_store(&dir, "s.db");
    // By id, the item's rid first: a live message's through `messages`' id index, any other
    // item's through `sync_items_by_id` (folders and tombstones), never a scan.
    let by_id = [
        "SCALAR SUBQUERY 2",
        "COMPOUND QUERY",
        "LEFT-MOST SUBQUERY",
        "SEARCH messages USING INDEX sqlite_autoindex_messages_1 (id=?)",
        "UNION ALL",
        "SEARCH sync_items USING INDEX sync_items_by_id (id=?)",
    ];
    for (sql, after_item) in [
        (super::items::CHANGE_BY_RID, &[][..]),
        (super::items::CHANGE_BY_ID, &by_id[..]),
    ] {
        // The item's row by its rid, the message or folder row looked up once, then the item's
        // units walked. A message is found by its item's rid (migration 9), in the order the
        // messages lie, not at a random place of `messages`' id index.
        let mut expected = vec!["SEARCH i USING INTEGER PRIMARY KEY (rowid=?)"];
        expected.extend_from_slice(after_item);
        expected.extend([
            "SEARCH m USING INDEX messages_by_sync_rid (sync_rid=?) LEFT-JOIN",
            "SEARCH f USING INDEX sqlite_autoindex_folders_1 (id=?) LEFT-JOIN",
            "SEARCH u USING PRIMARY KEY (item=?) LEFT-JOIN",
        ]);
        assert_eq!(query_plan(&app, sql), expected);
    }
}

/// A batch's items are read in one run of one statement: the rids asked for are the outer
/// loop, in their order, and each item is found as by `CHANGE_BY_RID`; a window's ids are
/// read by their rids the same way. Neither walks a table, whatever the store's size.
#[test]
fn a_batch_of_items_is_read_in_one_statement_in_the_order_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _app) = new_store(&dir, "s.db");
    assert_eq!(
        query_plan(&store.conn, super::items::CHANGES_BY_RIDS),
        vec![
            "SCAN a VIRTUAL TABLE INDEX 1:",
            "SEARCH i USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN",
            "SEARCH m USING INDEX messages_by_sync_rid (sync_rid=?) LEFT-JOIN",
            "SEARCH f USING INDEX sqlite_autoindex_folders_1 (id=?) LEFT-JOIN",
            "SEARCH u USING PRIMARY KEY (item=?) LEFT-JOIN",
        ]
    );
    // The window's ids likewise: each item found by its rid, never a walk of `sync_items`.
    assert_eq!(
        query_plan(&store.conn, super::id_window::IDS_AT),
        vec![
            "SCAN a VIRTUAL TABLE INDEX 1:",
            "SEARCH i USING INTEGER PRIMARY KEY (rowid=?)",
        ]
    );
}

/// Read together, items come back as each read alone: in the order asked, a rid with no item
/// as `None`, a rid asked twice once, an item with unit rows whole; and the reading stops
/// once the changes read reach the budget, never before the first.
#[test]
fn items_read_together_are_the_items_read_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, app) = new_store(&dir, "s.db");
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'F');
         INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'one');
         INSERT INTO messages (id, folder_id, subject) VALUES ('m2', 'f', 'two');
         INSERT INTO messages (id, folder_id, subject) VALUES ('m3', 'f', 'three');
         UPDATE messages SET is_read = 1, subject = 'edited' WHERE id = 'm2';
         DELETE FROM messages WHERE id = 'm3';",
    )
    .unwrap();
    let rid = |id: &str| -> i64 {
        app.query_row("SELECT rid FROM sync_items WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let (f, m1, m2, m3) = (rid("f"), rid("m1"), rid("m2"), rid("m3"));
    let gone = m3 + 100;
    let asked = [m2, gone, f, m1, m2, m3];
    let together = store.read_item_changes_at(&asked, usize::MAX).unwrap();
    let rids: Vec<i64> = together.iter().map(|(rid, _)| *rid).collect();
    assert_eq!(rids, vec![m2, gone, f, m1, m3]);
    for (rid, change) in &together {
        assert_eq!(
            change,
            &store.read_item_change_at(*rid).unwrap(),
            "rid {rid}"
        );
    }
    assert!(together[1].1.is_none());
    let edited = together[0].1.as_ref().unwrap();
    assert_eq!(edited.units.len(), 3, "{edited:?}");
    assert!(together[4].1.as_ref().unwrap().is_tombstone());

    let first = store.read_item_changes_at(&asked, 1).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0], together[0]);
}

#[test]
fn header_only_versions_are_read_from_the_header_only_list_not_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, app) = new_store(&dir, "s.db");
    assert_eq!(
        query_plan(&app, super::scoped::HEADERS_ONLY_VERSIONS),
        vec![
            "SCAN h",
            "SEARCH m USING INDEX sqlite_autoindex_messages_1 (id=?)",
            "SEARCH i USING INTEGER PRIMARY KEY (rowid=?)",
            "SEARCH u USING PRIMARY KEY (item=? AND unit=?) LEFT-JOIN"
        ]
    );
}

#[test]
fn enumeration_follows_the_phases_and_skips_what_the_destination_knows() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app) = new_store(&dir, "a.db");
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'F');
         INSERT INTO messages (id, folder_id) VALUES ('m1', 'f'), ('m2', 'f'), ('m3', 'f');
         UPDATE messages SET is_read = 1 WHERE id = 'm1';
         INSERT INTO folders (id, name) VALUES ('g', 'G');
         DELETE FROM messages WHERE id = 'm3';",
    )
    .unwrap();
    let made_with = a.knowledge().unwrap();
    let mut dest = Knowledge::new();
    dest.insert_range(a.replica(), 1, 2); // knows f and m1's creation
    let mut cursor = EnumerationCursor::default();
    let mut seen = Vec::new();
    loop {
        let b = a
            .next_batch(&mut cursor, &made_with, &dest, 10, 1 << 20)
            .unwrap();
        seen.push((
            b.phase,
            b.changes.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        ));
        for v in &b.versions {
            dest.insert(v);
        }
        if b.done {
            break;
        }
    }
    use crate::model::Phase::*;
    assert_eq!(
        seen,
        vec![
            (Hierarchy, vec!["g".to_string()]),
            (Contents, vec!["m2".to_string()]),
            (ReadStatus, vec!["m1".to_string()]),
            (MessageDeletes, vec!["m3".to_string()]),
            (FolderDeletes, vec![]),
        ]
    );
}

#[test]
fn bodies_keep_their_storage_class_and_bad_types_are_refused_at_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a) = new_store(&dir, "a.db");
    let (mut b, app_b) = new_store(&dir, "b.db");
    app_a
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('f', 'F');
             INSERT INTO messages (id, folder_id, body) VALUES
               ('text', 'f', 'plain text'), ('utf8', 'f', CAST('bytes' AS BLOB)),
               ('binary', 'f', x'00ff10'), ('none', 'f', NULL);",
        )
        .unwrap();
    sync(&mut a, &mut b, 10, ConflictRule::Defer);
    let types = |app: &Connection| -> Vec<String> {
        app.prepare("SELECT id || ':' || typeof(body) || ':' || coalesce(hex(body), '') FROM messages ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(types(&app_a), types(&app_b));
    assert_eq!(types(&app_b)[0], "binary:blob:00FF10");
    for (sql, constraint) in [
        (
            "INSERT INTO messages (folder_id, received_at) VALUES ('f', 'yesterday')",
            "received_at_must_be_unix_seconds",
        ),
        ("UPDATE messages SET is_read = 2", "is_read_must_be_0_or_1"),
        (
            "INSERT INTO messages (folder_id, body) VALUES ('f', 1.5)",
            "body_must_be_text_or_blob",
        ),
    ] {
        let err = app_a.execute(sql, []).unwrap_err().to_string();
        assert!(err.contains(constraint), "{sql}: {err}");
    }
}

#[test]
fn a_live_item_carrying_a_tombstone_or_bad_base64_is_refused_off_the_wire() {
    use crate::model::{Body, Change, ItemKind, UnitChange, UnitValue, WireVersion};
    let replicas = vec![crate::knowledge::ReplicaId::from("A")];
    let unit = |value| UnitChange {
        version: WireVersion(0, 1),
        at: 0,
        value,
    };
    let folder = |extra: Vec<UnitChange>| Change {
        id: "f".into(),
        kind: ItemKind::Folder,
        created: WireVersion(0, 1),
        units: [
            vec![
                unit(UnitValue::Name { name: "F".into() }),
                unit(UnitValue::Parent { parent_id: None }),
            ],
            extra,
        ]
        .concat(),
    };
    assert!(ItemChange::from_wire(folder(vec![]), &replicas).is_ok());
    let err = ItemChange::from_wire(folder(vec![unit(UnitValue::FolderTombstone)]), &replicas)
        .unwrap_err();
    assert!(err.contains("exactly its units"), "{err}");
    let message = Change {
        id: "m".into(),
        kind: ItemKind::Message,
        created: WireVersion(0, 1),
        units: vec![
            unit(UnitValue::Content {
                subject: String::new(),
                sender: String::new(),
                received_at: 0,
                headers: String::new(),
                body: Some(Body::Base64("%%%".into())),
            }),
            unit(UnitValue::Read { is_read: false }),
            unit(UnitValue::Location {
                folder_id: "f".into(),
            }),
        ],
    };
    let err = ItemChange::from_wire(message, &replicas).unwrap_err();
    assert!(err.contains("item m: body is not valid base64"), "{err}");
}

#[test]
fn a_child_that_arrives_before_its_parent_waits_in_the_queue_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a) = new_store(&dir, "a.db");
    let (mut b, app_b) = new_store(&dir, "b.db");
    // x is older than y, and then moved under y: x's units come first in enumeration order.
    app_a
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('x', 'X');
             INSERT INTO folders (id, name) VALUES ('y', 'Y');
             UPDATE folders SET parent_id = 'y' WHERE id = 'x';",
        )
        .unwrap();
    let out = sync(&mut a, &mut b, 1, ConflictRule::Defer);
    assert_eq!(out[0].pending, 1, "x waits for y");
    assert!(out.iter().all(|o| o.errors.is_empty()));
    assert_eq!(public_rows(&app_a), public_rows(&app_b));
    assert_eq!(a.knowledge().unwrap(), b.knowledge().unwrap());
}

#[test]
fn a_child_whose_parent_never_arrives_is_left_out_of_the_knowledge_and_comes_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, app_b) = new_store(&dir, "b.db");
    let source = crate::knowledge::ReplicaId::from("A");
    let mut made_with = Knowledge::new();
    made_with.insert_range(&source, 1, 1);
    let v = crate::knowledge::Version::new(source.clone(), 1);
    let orphan = ItemChange {
        id: "m".into(),
        kind: crate::model::ItemKind::Message,
        created: v.clone(),
        units: vec![
            UnitState {
                version: v.clone(),
                at: 0,
                value: crate::model::UnitValue::Content {
                    subject: "s".into(),
                    sender: String::new(),
                    received_at: 0,
                    headers: String::new(),
                    body: None,
                },
            },
            UnitState {
                version: v.clone(),
                at: 0,
                value: crate::model::UnitValue::Read { is_read: false },
            },
            UnitState {
                version: v.clone(),
                at: 0,
                value: crate::model::UnitValue::Location {
                    folder_id: "missing".into(),
                },
            },
        ],
    };
    let mut session = ImportSession::new(source, made_with.clone(), ConflictRule::Defer);
    let out = b
        .apply_batch(&mut session, &[orphan], &made_with, true)
        .unwrap();
    assert_eq!(out.errors.len(), 1);
    assert!(
        out.errors[0].reason.contains("comes again next session"),
        "{:?}",
        out.errors
    );
    assert!(
        !b.knowledge().unwrap().contains(&v),
        "never stored as an orphan, never learned"
    );
    assert!(public_rows(&app_b).is_empty());
}

#[test]
fn opening_a_current_store_takes_no_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::open(&path).unwrap());
    // Another writer holds the write lock, as an import in progress would.
    let writer = Connection::open(&path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Waiting for the lock would end in a busy error after the 10 s busy timeout.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.tick().unwrap(), 0);
    writer.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn an_item_an_application_trigger_refuses_fails_alone_and_comes_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a) = new_store(&dir, "a.db");
    let (mut b, app_b) = new_store(&dir, "b.db");
    app_a
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('f', 'Inbox');
             INSERT INTO messages (id, folder_id, subject) VALUES
               ('m1', 'f', 'fine'), ('m2', 'f', 'forbidden'), ('m3', 'f', 'fine too');",
        )
        .unwrap();
    app_b
        .execute_batch(
            "CREATE TRIGGER no_forbidden BEFORE INSERT ON messages WHEN NEW.subject = 'forbidden'
             BEGIN SELECT RAISE(ABORT, 'no forbidden subjects'); END;",
        )
        .unwrap();
    let out = sync(&mut a, &mut b, 10, ConflictRule::Defer);
    let errors: Vec<_> = out.iter().flat_map(|o| o.errors.clone()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].item, "m2");
    assert!(
        errors[0].reason.contains("no forbidden subjects"),
        "{errors:?}"
    );
    let ids: Vec<String> = app_b
        .prepare("SELECT id FROM messages ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, ["m1", "m3"], "the rest of the batch applies");
    // The refused item stays out of the knowledge: once the cause is gone it arrives.
    assert!(!b
        .knowledge()
        .unwrap()
        .is_superset_of(&a.knowledge().unwrap()));
    app_b.execute_batch("DROP TRIGGER no_forbidden").unwrap();
    let out = sync(&mut a, &mut b, 10, ConflictRule::Defer);
    assert!(out.iter().all(|o| o.errors.is_empty()), "{out:?}");
    assert_eq!(public_rows(&app_a), public_rows(&app_b));
    assert_eq!(b.knowledge().unwrap(), a.knowledge().unwrap());
}

#[test]
fn commits_stay_in_the_wal_until_a_checkpoint_copies_them_into_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (store, app) = new_store(&dir, "s.db");
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'F');
         INSERT INTO messages (id, folder_id) VALUES ('m', 'f');",
    )
    .unwrap();
    // The messages the database file itself holds, without its WAL.
    let in_file = || -> i64 {
        let copy = dir.path().join("copy.db");
        std::fs::copy(dir.path().join("s.db"), &copy).unwrap();
        let n = Connection::open(&copy)
            .and_then(|c| c.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)))
            .unwrap_or(0);
        std::fs::remove_file(&copy).unwrap();
        n
    };
    assert_eq!(in_file(), 0, "a small commit is not checkpointed at once");
    store
        .conn
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .unwrap();
    assert_eq!(in_file(), 1);
}

#[test]
fn synced_commits_are_a_setting_of_the_connection_and_can_be_turned_off_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _app) = new_store(&dir, "s.db");
    let level = || -> i64 {
        store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        level(),
        1,
        "NORMAL by default: commits survive a process's death"
    );
    store.set_synced_commits(true).unwrap();
    assert_eq!(level(), 2, "FULL: each commit syncs the WAL");
    store.set_synced_commits(false).unwrap();
    assert_eq!(level(), 1);
}

/// A full enumeration's chunk of ids walks id indexes in order and stops at its limit: folders
/// by `sync_items_by_id`, messages by `messages`' id index merged with the tombstones (no sort
/// of the whole store per chunk).
#[test]
fn a_full_enumeration_chunk_merges_id_indexes_without_sorting() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, app) = new_store(&dir, "s.db");
    for after in [false, true] {
        assert_eq!(
            query_plan(
                &app,
                &super::full::item_ids_sql(crate::model::ItemKind::Folder, after)
            ),
            vec!["SEARCH sync_items USING INDEX sync_items_by_id (id>?)"]
        );
        let plan = query_plan(
            &app,
            &super::full::item_ids_sql(crate::model::ItemKind::Message, after),
        );
        assert_eq!(
            plan,
            vec![
                "MERGE (UNION ALL)",
                "LEFT",
                "SEARCH messages USING COVERING INDEX sqlite_autoindex_messages_1 (id>?)",
                "RIGHT",
                "SEARCH sync_items USING INDEX sync_items_by_id (id>?)"
            ]
        );
    }
}
