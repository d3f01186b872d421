//! The link from a live message to its item row (`messages.sync_rid`, migration 6): filled by the
//! migration, kept by every application write (an INSERT OR REPLACE and an upsert too), and
//! refused to applications.
#![allow(clippy::unwrap_used)]

use rusqlite::Connection;

use super::tests::{new_store, old_store, public_rows, sync};
use super::*;

/// Checks the invariant of migration 6: every message row names a live message item with its
/// id, every live message item is named by one, and an id has one item row.
fn assert_links_hold(app: &Connection) {
    let count = |sql: &str| -> i64 { app.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count(
            "SELECT count(*) FROM messages m LEFT JOIN sync_items i ON i.rid = m.sync_rid \
             WHERE i.id IS NOT m.id OR i.kind IS NOT 1 OR i.deleted_at IS NOT NULL"
        ),
        0,
        "a message row names no item, or another's"
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM sync_items WHERE kind = 1 AND deleted_at IS NULL \
             AND rid NOT IN (SELECT sync_rid FROM messages)"
        ),
        0,
        "a live message item has no row"
    );
    assert_eq!(
        count("SELECT count(*) FROM (SELECT id FROM sync_items GROUP BY id HAVING count(*) > 1)"),
        0,
        "an id has two item rows"
    );
}

fn item_row(app: &Connection, id: &str) -> (i64, i64, Option<i64>) {
    app.query_row(
        "SELECT count(*), max(rid), max(deleted_at) FROM sync_items WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

fn tick(app: &Connection) -> i64 {
    app.query_row("SELECT tick FROM sync_state", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_store_of_schema_5_links_every_message_and_keeps_folders_and_tombstones_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s5.db");
    let app = old_store(&path, 5);
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'Inbox'), ('g', 'Old');
         INSERT INTO messages (id, folder_id, subject) VALUES
             ('m1', 'f', 'one'), ('m2', 'f', 'two'), ('m3', 'f', 'three');
         DELETE FROM messages WHERE id = 'm3';
         DELETE FROM folders WHERE id = 'g';",
    )
    .unwrap();
    let before: Vec<(String, i64)> = ["f", "g", "m1", "m2", "m3"]
        .iter()
        .map(|id| (id.to_string(), item_row(&app, id).1))
        .collect();

    let mut a = Store::open(&path).unwrap();
    let version: i64 = app
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION);
    assert_links_hold(&app);
    let integrity: String = app
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    // Every item is found by its id as before: live messages through their row, folders and
    // tombstones through the partial id index.
    for (id, rid) in &before {
        let local = a.local_item(id).unwrap().unwrap();
        assert_eq!(&local.rid, rid, "{id}");
        assert_eq!(local.deleted, id == "g" || id == "m3", "{id}");
    }
    assert_eq!(tick(&app), 7, "migrating takes no tick");

    let (mut b, app_b) = new_store(&dir, "b.db");
    sync(&mut a, &mut b, 2, ConflictRule::Defer);
    assert_eq!(public_rows(&app_b), public_rows(&app));
    assert_eq!(b.counts().unwrap().tombstones, 2);
    assert_links_hold(&app_b);
}

/// An application's INSERT OR REPLACE deletes the row it replaces without firing delete
/// triggers: the id must stay one item (a new creation, one tick), not become two.
#[test]
fn an_insert_or_replace_an_upsert_and_a_delete_keep_an_id_one_item() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app) = new_store(&dir, "a.db");
    let (mut b, app_b) = new_store(&dir, "b.db");
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'Inbox');
         INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'one'), ('m2', 'f', 'two');",
    )
    .unwrap();
    sync(&mut a, &mut b, 10, ConflictRule::Defer);
    let (_, rid, _) = item_row(&app, "m1");
    let t0 = tick(&app);

    app.execute(
        "INSERT OR REPLACE INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'replaced')",
        [],
    )
    .unwrap();
    assert_eq!(tick(&app), t0 + 1, "one row change, one tick");
    assert_eq!(item_row(&app, "m1"), (1, rid, None));
    let m1 = a.local_item("m1").unwrap().unwrap();
    assert_eq!(m1.created.tick, (t0 + 1) as u64, "a new creation");
    assert_eq!(m1.units.len(), 3, "{m1:?}");
    assert!(
        m1.units.iter().all(|u| u.1.tick == (t0 + 1) as u64),
        "{m1:?}"
    );
    assert_links_hold(&app);

    // An upsert that turns into an UPDATE: an edit of the same item.
    app.execute(
        "INSERT INTO messages (id, folder_id, subject) VALUES ('m2', 'f', 'upserted') \
         ON CONFLICT (id) DO UPDATE SET subject = excluded.subject",
        [],
    )
    .unwrap();
    let m2 = a.local_item("m2").unwrap().unwrap();
    assert_eq!(m2.created.tick, 3, "the same item: {m2:?}");
    assert_eq!(
        m2.unit(crate::model::Unit::Content).unwrap().1.tick,
        (t0 + 2) as u64
    );
    assert_links_hold(&app);

    // Deleted and made again: back in its tombstone's row.
    let (_, m2_rid, _) = item_row(&app, "m2");
    app.execute_batch(
        "DELETE FROM messages WHERE id = 'm2';
         INSERT INTO messages (id, folder_id, subject) VALUES ('m2', 'f', 'again');",
    )
    .unwrap();
    assert_eq!(item_row(&app, "m2"), (1, m2_rid, None));
    assert_links_hold(&app);

    sync(&mut a, &mut b, 10, ConflictRule::Defer);
    assert_eq!(public_rows(&app_b), public_rows(&app));
    assert_eq!(b.knowledge().unwrap(), a.knowledge().unwrap());
    assert_links_hold(&app_b);
}

#[test]
fn the_link_column_is_refused_to_applications_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, app) = new_store(&dir, "a.db");
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'Inbox');
         INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'one');",
    )
    .unwrap();
    let (t0, rows) = (tick(&app), public_rows(&app));
    let err = app
        .execute(
            "INSERT INTO messages (id, folder_id, sync_rid) VALUES ('m2', 'f', 1)",
            [],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("messages.sync_rid") && err.contains("leave it out"),
        "{err}"
    );
    let err = app
        .execute("UPDATE messages SET sync_rid = 99 WHERE id = 'm1'", [])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("messages.sync_rid") && err.contains("cannot change"),
        "{err}"
    );
    assert_eq!((tick(&app), public_rows(&app)), (t0, rows));
    assert_links_hold(&app);
}
