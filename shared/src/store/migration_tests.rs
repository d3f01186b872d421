//! Migrations of stores written under an older schema: a store at schema 2 or 3 (sync metadata
//! keyed by global id) opened by this build is migrated with every item's versions, keeps
//! tracking one tick per row change, and syncs.
#![allow(clippy::unwrap_used)]

use rusqlite::Connection;

use super::tests::{old_store, public_rows, sync};
use super::*;
use crate::knowledge::TickSet;
use crate::model;

/// Every item's versions, one line per unit, in id and unit order. `join` is how a unit names
/// its item in the schema at hand; from migration 7 on the units are read through the view
/// `sync_unit_versions` (a unit without a row carries its item's creation version).
fn version_table(app: &Connection, join: &str) -> Vec<String> {
    let version: i64 = app
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let units = if version >= 7 {
        "sync_unit_versions"
    } else {
        "sync_units"
    };
    app.prepare(&format!(
        "SELECT i.id, i.kind, i.created_r, i.created_t, i.deleted_at IS NOT NULL, \
         u.unit, u.r, u.t, u.at, u.phase FROM sync_items i JOIN {units} u ON {join} \
         ORDER BY i.id, u.unit"
    ))
    .unwrap()
    .query_map([], |r| {
        let id: String = r.get(0)?;
        let rest: Vec<i64> = (1..10).map(|c| r.get(c)).collect::<Result<_, _>>()?;
        Ok(format!("{id} {rest:?}"))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn user_version(app: &Connection) -> i64 {
    app.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn rid(app: &Connection, id: &str) -> i64 {
    app.query_row("SELECT rid FROM sync_items WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .unwrap()
}

fn ticks(from: u64, to: u64) -> TickSet {
    let mut t = TickSet::new();
    t.insert_range(from, to);
    t
}

/// A store at schema `version` (2 or 3) holding live items, an update, two tombstones and an
/// item imported from replica `other` (its ticks 7 and 8), written as that schema's triggers and
/// applier wrote them.
fn store_at_schema(path: &std::path::Path, version: i64) -> Connection {
    let app = old_store(path, version);
    assert_eq!(user_version(&app), version);
    let mut other = Knowledge::new();
    other.insert_range(&ReplicaId::from("other"), 1, 8);
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'Inbox'), ('g', 'Old');
         INSERT INTO messages (id, folder_id, subject) VALUES
             ('m1', 'f', 'one'), ('m2', 'f', 'two'), ('m3', 'f', 'three');
         UPDATE messages SET is_read = 1 WHERE id = 'm2';
         DELETE FROM messages WHERE id = 'm3';
         DELETE FROM folders WHERE id = 'g';
         INSERT INTO sync_replicas (idx, replica) VALUES (1, 'other');
         UPDATE sync_state SET applying = 1;
         INSERT INTO messages (id, folder_id, subject) VALUES ('x1', 'f', 'from elsewhere');
         INSERT INTO sync_items (id, kind, created_r, created_t) VALUES ('x1', 1, 1, 7);
         INSERT INTO sync_units (item, unit, r, t, at, phase) VALUES
             ('x1', 3, 1, 7, 1000, 2), ('x1', 4, 1, 8, 1001, 3), ('x1', 5, 1, 7, 1000, 2);
         UPDATE sync_state SET applying = 0;",
    )
    .unwrap();
    app.execute(
        "UPDATE sync_state SET knowledge = ?1 WHERE id = 1",
        [serde_json::to_string(&other).unwrap()],
    )
    .unwrap();
    if version >= 3 {
        // Schema 3 knows header-only copies (by global id): x1 is one.
        app.execute("INSERT INTO sync_headers_only (item) VALUES ('x1')", [])
            .unwrap();
    }
    app
}

#[test]
fn a_store_of_schema_2_or_3_migrates_with_its_versions_keeps_tracking_and_syncs() {
    for version in [2, 3] {
        migrates_with_its_versions_keeps_tracking_and_syncs(version);
    }
}

fn migrates_with_its_versions_keeps_tracking_and_syncs(version: i64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let app = store_at_schema(&path, version);
    let before = version_table(&app, "u.item = i.id");
    // f: 2 units, m1 and m2: 3 each, x1: 3, the tombstones g and m3: 1 each.
    assert_eq!(before.len(), 13, "{before:#?}");

    let mut a = Store::open(&path).unwrap();
    assert_eq!(user_version(&app), schema::SCHEMA_VERSION);
    assert_eq!(version_table(&app, "u.item = i.rid"), before);
    assert_eq!(a.tick().unwrap(), 8, "migrating takes no tick");
    let known = a.knowledge().unwrap();
    assert_eq!(known.get(a.replica()), Some(&ticks(1, 8)));
    assert_eq!(known.get(&ReplicaId::from("other")), Some(&ticks(1, 8)));
    assert_eq!(a.counts().unwrap().tombstones, 2);
    if version >= 3 {
        // The header-only copy's content version is still found through the new layout.
        let lacks = a.headers_only_versions().unwrap();
        assert!(lacks.contains(&Version::new("other", 7)), "{lacks:?}");
    }

    // Everything reaches a new store, the imported item with its remote versions.
    let (mut b, app_b) = super::tests::new_store(&dir, "b.db");
    sync(&mut a, &mut b, 2, ConflictRule::Defer);
    assert_eq!(public_rows(&app_b), public_rows(&app));
    assert_eq!(b.counts().unwrap().tombstones, 2);
    let x1 = b.local_item("x1").unwrap().unwrap();
    assert_eq!(x1.created, Version::new("other", 7));
    assert_eq!(
        x1.unit(model::Unit::Read).unwrap().1,
        Version::new("other", 8)
    );

    // Tracking after the migration: one tick per row change, on exactly the units it touches.
    let m1_before = a.local_item("m1").unwrap().unwrap();
    app.execute(
        "UPDATE messages SET subject = 'changed' WHERE id = 'm1'",
        [],
    )
    .unwrap();
    let m1 = a.local_item("m1").unwrap().unwrap();
    assert_eq!(a.tick().unwrap(), 9);
    assert_eq!(m1.rid, m1_before.rid);
    assert_eq!(
        m1.unit(model::Unit::Content).unwrap().1,
        Version::new(a.replica().as_str(), 9)
    );
    assert_eq!(
        m1.unit(model::Unit::Read),
        m1_before.unit(model::Unit::Read)
    );
    assert_eq!(
        m1.unit(model::Unit::Location),
        m1_before.unit(model::Unit::Location)
    );

    // An id created again over its tombstone keeps its row and is a new item; a new id comes
    // after every migrated one.
    let m3_rid = rid(&app, "m3");
    app.execute_batch(
        "INSERT INTO messages (id, folder_id) VALUES ('m3', 'f');
         INSERT INTO messages (id, folder_id) VALUES ('m4', 'f');",
    )
    .unwrap();
    assert_eq!(a.tick().unwrap(), 11);
    let m3 = a.local_item("m3").unwrap().unwrap();
    assert_eq!((m3.rid, m3.deleted), (m3_rid, false));
    assert_eq!(m3.created, Version::new(a.replica().as_str(), 10));
    assert_eq!(m3.units.len(), 3, "{m3:?}");
    assert!(m3.units.iter().all(|u| u.1.tick == 10), "{m3:?}");
    let newest: i64 = app
        .query_row(
            "SELECT max(rid) FROM sync_items WHERE id <> 'm4'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(rid(&app, "m4") > newest);

    sync(&mut a, &mut b, 2, ConflictRule::Defer);
    assert_eq!(public_rows(&app_b), public_rows(&app));
    assert_eq!(b.counts().unwrap().tombstones, 1);

    // Opening the migrated store again migrates nothing.
    let after = version_table(&app, "u.item = i.rid");
    drop(a);
    let a = Store::open(&path).unwrap();
    assert_eq!(user_version(&app), schema::SCHEMA_VERSION);
    assert_eq!(version_table(&app, "u.item = i.rid"), after);
    assert_eq!(a.tick().unwrap(), 11);
}

/// The opcodes SQLite runs for an application's message INSERT on `app`.
fn insert_plan(app: &Connection) -> Vec<String> {
    app.prepare("EXPLAIN INSERT INTO messages (folder_id, body) VALUES ('f', ?1)")
        .unwrap()
        .query_map([0], |r| r.get::<_, String>(1))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_store_of_schema_4_gets_a_body_check_without_a_throwaway_index_and_the_same_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s4.db");
    let app = old_store(&path, 4);
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'Inbox');
         INSERT INTO messages (id, folder_id, body) VALUES
             ('t', 'f', 'text'), ('b', 'f', x'00ff'), ('n', 'f', NULL);",
    )
    .unwrap();
    // Throwaway indexes the INSERT builds: one for the IN list, and the tracking trigger's.
    let ephemerals = |app: &Connection| {
        insert_plan(app)
            .iter()
            .filter(|op| *op == "OpenEphemeral")
            .count()
    };
    let before = ephemerals(&app);

    drop(Store::open_at(&path, 5).unwrap());
    assert_eq!(user_version(&app), 5);
    let fresh = Connection::open(&path).unwrap();
    assert_eq!(ephemerals(&fresh), before - 1, "{:?}", insert_plan(&fresh));
    let integrity: String = app
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");

    // The same rule: text, blob and NULL bodies, nothing else, also on the application's
    // connection that was open across the migration.
    let insert = "INSERT INTO messages (folder_id, body) VALUES ('f', ?1)";
    for ok in [
        rusqlite::types::Value::Text("more".into()),
        rusqlite::types::Value::Blob(vec![1, 2]),
        rusqlite::types::Value::Null,
    ] {
        app.execute(insert, [ok]).unwrap();
    }
    for bad in [
        rusqlite::types::Value::Integer(7),
        rusqlite::types::Value::Real(1.5),
    ] {
        let err = app.execute(insert, [&bad]).unwrap_err().to_string();
        assert!(err.contains("body_must_be_text_or_blob"), "{bad:?}: {err}");
    }
    let n: i64 = app
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 6);
}
