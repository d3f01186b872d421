//! Conflicts an operator resolves, identical edits, and seed 003's constraint conflicts, between
//! two in-process stores written by a plain SQLite connection as an application would.
#![allow(clippy::unwrap_used)]

use rusqlite::Connection;

use super::tests::{new_store, public_rows, sync, sync_with};
use super::*;
use crate::model::Unit;

/// Syncs both ways until a round applies nothing; returns every conflict reported.
fn converge(a: &mut Store, b: &mut Store, rule: ConflictRule) -> Vec<ReportedConflict> {
    let mut conflicts = Vec::new();
    for _ in 0..8 {
        let mut busy = false;
        for out in sync(a, b, 3, rule).into_iter().chain(sync(b, a, 3, rule)) {
            busy |= out.applied > 0;
            conflicts.extend(out.conflicts);
        }
        if !busy {
            return conflicts;
        }
    }
    panic!("no quiet round after 8: {conflicts:?}");
}

fn one(app: &Connection, sql: &str) -> String {
    app.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Two stores that share folders F (empty), X and Y (siblings at the top).
fn shared_tree(dir: &tempfile::TempDir) -> (Store, Connection, Store, Connection) {
    let (mut a, app_a) = new_store(dir, "a.db");
    let (mut b, app_b) = new_store(dir, "b.db");
    app_a
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('F', 'Projects'), ('X', 'x'), ('Y', 'y');
             INSERT INTO messages (id, folder_id, subject) VALUES ('m0', 'X', 'hello');",
        )
        .unwrap();
    converge(&mut a, &mut b, ConflictRule::Defer);
    (a, app_a, b, app_b)
}

#[test]
fn a_deferred_conflict_resolved_for_either_side_reaches_both_stores() {
    for keep_a in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, app_a, mut b, app_b) = shared_tree(&dir);
        app_a
            .execute("UPDATE messages SET subject = 'by A' WHERE id = 'm0'", [])
            .unwrap();
        app_b
            .execute("UPDATE messages SET subject = 'by B' WHERE id = 'm0'", [])
            .unwrap();
        // Deferred both ways, again and again.
        for _ in 0..2 {
            let there: Vec<_> = sync(&mut a, &mut b, 5, ConflictRule::Defer)
                .into_iter()
                .chain(sync(&mut b, &mut a, 5, ConflictRule::Defer))
                .flat_map(|o| o.conflicts)
                .collect();
            assert_eq!(there.len(), 2, "{there:?}");
            assert!(there.iter().all(|c| c.outcome == Outcome::Deferred));
            assert_eq!(there[0].label, "by A");
            assert_eq!(there[0].local_value, "“by B”");
        }
        let conflict = sync(&mut a, &mut b, 5, ConflictRule::Defer)[0].conflicts[0].clone();
        let winner = if keep_a {
            conflict.remote.clone()
        } else {
            conflict.local.clone()
        };
        let resolution = Resolution {
            item: "m0".into(),
            unit: Unit::Content,
            winner,
        };
        let out = sync_with(
            &mut a,
            &mut b,
            5,
            ConflictRule::Defer,
            vec![resolution.clone()],
        );
        assert_eq!(out[0].conflicts[0].outcome, Outcome::Resolved);
        // The reverse direction meets no conflict any more: the choice went through.
        let rest = converge(&mut a, &mut b, ConflictRule::Defer);
        assert!(rest.is_empty(), "{rest:?}");
        let expected = if keep_a { "by A" } else { "by B" };
        assert_eq!(
            one(&app_a, "SELECT subject FROM messages WHERE id = 'm0'"),
            expected
        );
        assert_eq!(public_rows(&app_a), public_rows(&app_b));
        assert_eq!(a.knowledge().unwrap(), b.knowledge().unwrap());
    }
}

#[test]
fn the_same_edit_on_both_stores_is_no_conflict_and_ends_with_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a, mut b, app_b) = shared_tree(&dir);
    app_a
        .execute("UPDATE messages SET is_read = 1 WHERE id = 'm0'", [])
        .unwrap();
    app_b
        .execute("UPDATE messages SET is_read = 1 WHERE id = 'm0'", [])
        .unwrap();
    let conflicts = converge(&mut a, &mut b, ConflictRule::Defer);
    assert!(conflicts.is_empty(), "{conflicts:?}");
    // The read unit's version by global replica id (index 0, the store itself, has no row in
    // sync_replicas).
    let global = |store: &Store, app: &Connection| -> (String, i64) {
        let (replica, t): (Option<String>, i64) = app
            .query_row(
                "SELECT r.replica, u.t FROM sync_unit_versions u LEFT JOIN sync_replicas r ON r.idx = u.r \
                 JOIN sync_items i ON i.rid = u.item WHERE i.id = 'm0' AND u.unit = 4",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        (replica.unwrap_or_else(|| store.replica().to_string()), t)
    };
    assert_eq!(global(&a, &app_a), global(&b, &app_b));
}

#[test]
fn a_folder_deleted_on_one_store_while_the_other_adds_to_it_is_restored() {
    for deleting_side_hears_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, app_a, mut b, app_b) = shared_tree(&dir);
        app_a
            .execute("DELETE FROM folders WHERE id = 'F'", [])
            .unwrap();
        app_b
            .execute(
                "INSERT INTO messages (id, folder_id, subject) VALUES ('new', 'F', 'keep me')",
                [],
            )
            .unwrap();
        if deleting_side_hears_first {
            let out = sync(&mut b, &mut a, 5, ConflictRule::NewerWins);
            let errors: Vec<_> = out.iter().flat_map(|o| o.errors.clone()).collect();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].reason.contains("deleted here"),
                "{}",
                errors[0].reason
            );
        }
        let out = sync(&mut a, &mut b, 5, ConflictRule::NewerWins);
        let restored: Vec<_> = out
            .iter()
            .flat_map(|o| o.conflicts.clone())
            .filter(|c| c.outcome == Outcome::Restored)
            .collect();
        assert_eq!(restored.len(), 1, "{out:?}");
        assert_eq!(restored[0].label, "Projects");
        converge(&mut a, &mut b, ConflictRule::NewerWins);
        assert_eq!(
            one(&app_a, "SELECT folder_id FROM messages WHERE id = 'new'"),
            "F",
            "nothing silently lost"
        );
        assert_eq!(public_rows(&app_a), public_rows(&app_b));
    }
}

#[test]
fn a_folder_delete_that_knew_every_item_waits_for_their_deletes_and_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app_a, mut b, app_b) = shared_tree(&dir);
    app_a
        .execute_batch(
            "INSERT INTO folders (id, parent_id, name) VALUES ('C', 'F', 'child');
             INSERT INTO messages (id, folder_id) VALUES ('in-c', 'C');",
        )
        .unwrap();
    converge(&mut a, &mut b, ConflictRule::NewerWins);
    app_a
        .execute_batch(
            "DELETE FROM messages WHERE id = 'in-c'; DELETE FROM folders WHERE id = 'C';
             DELETE FROM folders WHERE id = 'F';",
        )
        .unwrap();
    let conflicts = converge(&mut a, &mut b, ConflictRule::NewerWins);
    assert!(conflicts.is_empty(), "{conflicts:?}");
    assert_eq!(
        one(
            &app_b,
            "SELECT count(*) || '' FROM folders WHERE id IN ('F', 'C')"
        ),
        "0"
    );
    assert_eq!(public_rows(&app_a), public_rows(&app_b));
}

#[test]
fn two_new_sibling_folders_with_one_name_end_as_two_names_on_both_stores() {
    for a_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, app_a, mut b, app_b) = shared_tree(&dir);
        app_a
            .execute(
                "INSERT INTO folders (id, parent_id, name) VALUES ('p-a', 'X', 'Inbox')",
                [],
            )
            .unwrap();
        app_b
            .execute(
                "INSERT INTO folders (id, parent_id, name) VALUES ('p-b', 'X', 'Inbox')",
                [],
            )
            .unwrap();
        if !a_first {
            sync(&mut b, &mut a, 5, ConflictRule::Defer);
        }
        let conflicts = converge(&mut a, &mut b, ConflictRule::Defer);
        assert!(
            conflicts.iter().any(|c| c.outcome == Outcome::Renamed),
            "{conflicts:?}"
        );
        assert!(conflicts.iter().all(|c| c.outcome != Outcome::Deferred));
        assert_eq!(public_rows(&app_a), public_rows(&app_b));
        assert_eq!(
            one(&app_a, "SELECT name FROM folders WHERE id = 'p-a'"),
            "Inbox"
        );
        assert_eq!(
            one(&app_a, "SELECT name FROM folders WHERE id = 'p-b'"),
            "Inbox (p-b)",
            "the greater id is renamed"
        );
    }
}

#[test]
fn concurrent_moves_that_would_make_a_cycle_end_the_same_without_one() {
    for a_syncs_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, app_a, mut b, app_b) = shared_tree(&dir);
        app_a
            .execute("UPDATE folders SET parent_id = 'Y' WHERE id = 'X'", [])
            .unwrap();
        app_b
            .execute("UPDATE folders SET parent_id = 'X' WHERE id = 'Y'", [])
            .unwrap();
        if a_syncs_first {
            sync(&mut a, &mut b, 5, ConflictRule::Defer);
        } else {
            sync(&mut b, &mut a, 5, ConflictRule::Defer);
        }
        let conflicts = converge(&mut a, &mut b, ConflictRule::Defer);
        assert!(conflicts.iter().all(|c| c.outcome != Outcome::Deferred));
        assert_eq!(public_rows(&app_a), public_rows(&app_b));
        let parent = |id: &str| {
            app_a
                .query_row("SELECT parent_id FROM folders WHERE id = ?1", [id], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .unwrap()
        };
        // One of the two moves holds; the other folder is at the top.
        let (x, y) = (parent("X"), parent("Y"));
        assert!(
            (x.as_deref() == Some("Y") && y.is_none())
                || (y.as_deref() == Some("X") && x.is_none()),
            "X under {x:?}, Y under {y:?}"
        );
    }
}
