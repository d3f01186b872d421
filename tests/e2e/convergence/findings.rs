//! What the convergence property test found, each as the smallest scenario that shows it.

use icsync_e2e::{public_rows, StoreUnderTest, World};

use super::now_ms;

const ONE_WAY: &str = "direction = \"one-way\"\nconflicts = \"newer-wins\"";

/// Stores a, b and c with a one-way `newer-wins` partnership for each ordered pair ("ab", ...).
fn three_stores() -> (World, [StoreUnderTest; 3]) {
    let mut w = World::new();
    let stores = [w.store("a"), w.store("b"), w.store("c")];
    w.config(&[
        ("ab", "a", "b", ONE_WAY),
        ("ac", "a", "c", ONE_WAY),
        ("ba", "b", "a", ONE_WAY),
        ("bc", "b", "c", ONE_WAY),
        ("ca", "c", "a", ONE_WAY),
        ("cb", "c", "b", ONE_WAY),
    ]);
    (w, stores)
}

/// Waits until the wall clock (unix ms) is past the time a store recorded for a change, so a
/// later change is newer under `newer-wins` without depending on the replica ids' tie-break.
fn clock_past(app: &rusqlite::Connection, item: &str, unit: i64) {
    let at: i64 = app
        .query_row(
            "SELECT u.at FROM sync_unit_versions u JOIN sync_items i ON i.rid = u.item \
             WHERE i.id = ?1 AND u.unit = ?2",
            rusqlite::params![item, unit],
            |r| r.get(0),
        )
        .unwrap();
    while now_ms() <= at + 1 {
        std::thread::yield_now();
    }
}

/// Found as convergence seed 1: with small batches, a folder waiting for its new parent is sent
/// again by a later batch of the same session (its versions stay unlearned while it waits). It
/// must wait in the queue once and report its one conflict once, not once per time it came.
#[test]
fn a_folder_sent_twice_while_it_waits_for_its_parent_reports_one_conflict() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    w.config(&[("ab", "a", "b", &format!("{ONE_WAY}\nbatch = 1"))]);
    a.app()
        .execute("INSERT INTO folders (id, name) VALUES ('F', 'f')", [])
        .unwrap();
    w.sync_ok("ab");
    // Ticks 2..7 on A. Enumeration meets F at tick 3 (its name) and again at tick 5 (its
    // parent), and G, its new parent, only at tick 6.
    a.app()
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('G', 'g');
             UPDATE folders SET name = 'f, renamed on A' WHERE id = 'F';
             INSERT INTO folders (id, name) VALUES ('K', 'k');
             UPDATE folders SET parent_id = 'G' WHERE id = 'F';
             UPDATE folders SET name = 'g, renamed' WHERE id = 'G';
             UPDATE folders SET parent_id = 'K' WHERE id = 'G';",
        )
        .unwrap();
    // B renames F later, so B's name wins and stays.
    clock_past(&a.app(), "F", 1);
    b.app()
        .execute(
            "UPDATE folders SET name = 'f, renamed on B' WHERE id = 'F'",
            [],
        )
        .unwrap();
    let out = w.sync_ok("ab");
    let rows = public_rows(&b.app());
    assert!(
        rows.contains(&"F F parent=G name=f, renamed on B".to_string()),
        "{rows:?}"
    );
    assert!(out.contains(" 1 conflicts"), "{out}");
}

/// Found as convergence seed 31: an update that wins over a delete brings the item back at the
/// deleting store with the updating store's units, whose versions may be older than ones the
/// deleting store had already passed on. A third store that holds one of those newer versions
/// knows the old one and skips it, and the deleting store knows the newer one and skips it:
/// the two keep different values for good.
#[test]
fn an_item_brought_back_over_its_tombstone_converges() {
    let (w, [a, b, c]) = three_stores();
    a.app()
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('F', 'f');
             INSERT INTO messages (id, folder_id, subject) VALUES ('M', 'F', 'hello');",
        )
        .unwrap();
    w.sync_ok("ab");
    w.sync_ok("ac");
    // A marks M read and C hears of it; then A deletes M.
    a.app()
        .execute("UPDATE messages SET is_read = 1 WHERE id = 'M'", [])
        .unwrap();
    w.sync_ok("ac");
    a.app()
        .execute("DELETE FROM messages WHERE id = 'M'", [])
        .unwrap();
    // B, which never saw the read flag nor the delete, edits M later: the edit wins over the
    // delete, and M comes back on A as B holds it, unread.
    clock_past(&a.app(), "M", 8);
    b.app()
        .execute(
            "UPDATE messages SET subject = 'edited on B' WHERE id = 'M'",
            [],
        )
        .unwrap();
    w.sync_ok("ba");
    w.sync_ok("ac");
    for pair in ["ab", "ac", "ba", "ca", "cb", "bc", "ab", "ac"] {
        w.sync_ok(pair);
    }
    let rows = public_rows(&a.app());
    assert_eq!(rows, public_rows(&b.app()), "a and b");
    assert_eq!(rows, public_rows(&c.app()), "a and c");
}

/// Found as convergence seed 38: a store holding a tombstone that receives another deletion of
/// the same item keeps its own and learns the other. When its own deletion had lost to an update
/// that the other deletion then beat, the store vouches for the newer deletion without holding
/// it: a store that kept the item live (it won over the first delete) learns of the second
/// delete from it and never receives it.
#[test]
fn a_second_delete_after_a_comeback_reaches_every_store() {
    let (w, [a, b, c]) = three_stores();
    a.app()
        .execute("INSERT INTO folders (id, name) VALUES ('F', 'f')", [])
        .unwrap();
    w.sync_ok("ab");
    w.sync_ok("ac");
    a.app()
        .execute("DELETE FROM folders WHERE id = 'F'", [])
        .unwrap();
    // B renames F later: the rename wins over A's delete, F stays on B and B knows the delete.
    clock_past(&a.app(), "F", 9);
    b.app()
        .execute("UPDATE folders SET name = 'kept on B' WHERE id = 'F'", [])
        .unwrap();
    w.sync_ok("ab");
    w.sync_ok("bc");
    // C, holding B's F, deletes it: the newest change of all, so F is gone for good.
    c.app()
        .execute("DELETE FROM folders WHERE id = 'F'", [])
        .unwrap();
    w.sync_ok("ca");
    w.sync_ok("ab");
    for pair in ["ab", "ac", "bc", "ca", "cb", "ab", "ac", "bc", "ca", "cb"] {
        w.sync_ok(pair);
    }
    for (name, store) in [("a", &a), ("b", &b), ("c", &c)] {
        assert_eq!(public_rows(&store.app()), Vec::<String>::new(), "{name}");
    }
}
