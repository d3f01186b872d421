//! Unit rows only for units changed since their item's creation (migration 7): a new item's
//! units carry its creation version without rows, a change writes the unit's row, and every
//! reader sees the same versions as when each unit had a row.
#![allow(clippy::unwrap_used)]

use rusqlite::Connection;

use super::tests::{new_store, old_store, public_rows, sync};
use super::*;
use crate::model::Unit;

/// (item id, unit code) of every `sync_units` row, in order.
fn unit_rows(app: &Connection) -> Vec<(String, i64)> {
    app.prepare(
        "SELECT i.id, u.unit FROM sync_units u JOIN sync_items i ON i.rid = u.item \
         ORDER BY i.id, u.unit",
    )
    .unwrap()
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Every unit's version (replica id, tick, made at, phase) read from `units`: the table, or the
/// view that shows them as the rows were before migration 7.
fn all_versions(app: &Connection, units: &str) -> Vec<(String, i64, String, i64, i64, i64)> {
    app.prepare(&format!(
        "SELECT i.id, u.unit, r.replica, u.t, u.at, u.phase FROM {units} u \
         JOIN sync_items i ON i.rid = u.item JOIN sync_replicas r ON r.idx = u.r \
         ORDER BY i.id, u.unit"
    ))
    .unwrap()
    .query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn s(id: &str, unit: Unit) -> (String, i64) {
    (id.to_string(), unit.code())
}

#[test]
fn new_items_have_no_unit_rows_until_a_unit_changes_here_or_there() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a) = new_store(&dir, "a.db");
    let (mut b, app_b) = new_store(&dir, "b.db");
    app_a
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('f', 'Inbox'), ('g', 'Work');
             INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'one'), ('m2', 'f', 'two');",
        )
        .unwrap();
    assert_eq!(unit_rows(&app_a), vec![]);
    let m1 = a.local_item("m1").unwrap().unwrap();
    assert_eq!(m1.units.len(), 3);
    assert!(m1.units.iter().all(|u| u.1 == m1.created), "{m1:?}");

    sync(&mut a, &mut b, 10, ConflictRule::Defer);
    assert_eq!(public_rows(&app_b), public_rows(&app_a));
    assert_eq!(
        unit_rows(&app_b),
        vec![],
        "an import of new items writes no unit row"
    );
    assert_eq!(b.local_item("m1").unwrap().unwrap().units, m1.units);

    // A change writes the changed unit's row only, here and where it is imported.
    app_a
        .execute_batch(
            "UPDATE messages SET is_read = 1 WHERE id = 'm1';
             UPDATE folders SET name = 'Work 2' WHERE id = 'g';",
        )
        .unwrap();
    let changed = vec![s("g", Unit::Name), s("m1", Unit::Read)];
    assert_eq!(unit_rows(&app_a), changed);
    let m1 = a.local_item("m1").unwrap().unwrap();
    assert_eq!(m1.unit(Unit::Read).unwrap().1.tick, 5);
    assert_eq!(m1.unit(Unit::Content).unwrap().1, m1.created);
    sync(&mut a, &mut b, 10, ConflictRule::Defer);
    assert_eq!(public_rows(&app_b), public_rows(&app_a));
    assert_eq!(unit_rows(&app_b), changed);
    assert_eq!(b.local_item("m1").unwrap().unwrap().units, m1.units);
    assert_eq!(b.knowledge().unwrap(), a.knowledge().unwrap());

    // A message made again over its tombstone starts without rows again.
    app_a
        .execute_batch(
            "DELETE FROM messages WHERE id = 'm1';
             INSERT INTO messages (id, folder_id) VALUES ('m1', 'f');",
        )
        .unwrap();
    assert_eq!(unit_rows(&app_a), vec![s("g", Unit::Name)]);
    sync(&mut a, &mut b, 10, ConflictRule::Defer);
    assert_eq!(public_rows(&app_b), public_rows(&app_a));
    // b held m1 live: the new units arrive as changes of it, and are rows there.
    let units = |store: &mut Store| store.local_item("m1").unwrap().unwrap().units;
    assert_eq!(units(&mut b), units(&mut a));
}

#[test]
fn a_store_of_schema_6_keeps_every_version_and_only_the_rows_of_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s6.db");
    let app = old_store(&path, 6);
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'Inbox');
         INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'one'), ('m2', 'f', 'two');
         UPDATE messages SET subject = 'two, edited' WHERE id = 'm2';
         INSERT INTO messages (id, folder_id) VALUES ('m3', 'f');
         DELETE FROM messages WHERE id = 'm3';",
    )
    .unwrap();
    let before = all_versions(&app, "sync_units");
    assert_eq!(before.len(), 2 + 3 + 3 + 1);

    let mut a = Store::open(&path).unwrap();
    assert_eq!(all_versions(&app, "sync_unit_versions"), before);
    assert_eq!(
        unit_rows(&app),
        vec![s("m2", Unit::Content), s("m3", Unit::MessageTombstone)]
    );
    assert_eq!(a.tick().unwrap(), 6, "migrating takes no tick");

    let (mut b, app_b) = new_store(&dir, "b.db");
    sync(&mut a, &mut b, 2, ConflictRule::Defer);
    assert_eq!(public_rows(&app_b), public_rows(&app));
    assert_eq!(b.knowledge().unwrap(), a.knowledge().unwrap());
    assert_eq!(
        all_versions(&app_b, "sync_unit_versions"),
        all_versions(&app, "sync_unit_versions")
    );
}
