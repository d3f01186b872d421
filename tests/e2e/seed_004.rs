//! Seed 004's synchronization example, end to end: replica A with I1..I3, replica B with I104
//! and I105, made by plain SQL so the version tables come out as in the seed.

use icsync_e2e::{knowledge_of, public_rows, World};

pub fn seed_a(app: &rusqlite::Connection) {
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('I1', 'one');
         INSERT INTO folders (id, name) VALUES ('I2', 'two');
         UPDATE folders SET name = 'two, edited' WHERE id = 'I2';
         INSERT INTO folders (id, name) VALUES ('I3', 'three');
         UPDATE folders SET name = 'one, edited' WHERE id = 'I1';",
    )
    .unwrap();
}

pub fn seed_b(app: &rusqlite::Connection) {
    app.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('I104', 'a');
         UPDATE folders SET name = 'a, edited' WHERE id = 'I104';
         INSERT INTO folders (id, name) VALUES ('I105', 'b');
         UPDATE folders SET name = 'b, edited' WHERE id = 'I105';",
    )
    .unwrap();
}

#[test]
fn both_stores_hold_all_five_items_and_know_a5_b4() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    seed_a(&a.app());
    seed_b(&b.app());
    w.config(&[("ab", "a", "b", "batch = 2")]);
    let ra = w.info("a")["replica"].as_str().unwrap().to_string();
    let rb = w.info("b")["replica"].as_str().unwrap().to_string();
    let names = [("A", ra.as_str()), ("B", rb.as_str())];
    assert_eq!(knowledge_of(&w.info("a"), &names), "A5");
    assert_eq!(knowledge_of(&w.info("b"), &names), "B4");

    w.sync_ok("ab");

    assert_eq!(knowledge_of(&w.info("a"), &names), "A5, B4");
    assert_eq!(knowledge_of(&w.info("b"), &names), "A5, B4");
    let rows = public_rows(&a.app());
    assert_eq!(rows.len(), 5);
    assert_eq!(rows, public_rows(&b.app()));
    // B's version table holds A's items with A's versions (seed 004, "Replikat B – Aktualisierte
    // Elementtabellen"): I1 updated A5, created A1.
    let (r, t): (String, i64) = b
        .app()
        .query_row(
            "SELECT r.replica, u.t FROM sync_unit_versions u JOIN sync_replicas r ON r.idx = u.r \
             JOIN sync_items i ON i.rid = u.item WHERE i.id = 'I1' AND u.unit = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((r.as_str(), t), (ra.as_str(), 5));

    // A second session sends nothing.
    let second = w.sync_ok("ab");
    assert!(second.contains("a->b: completed: 0 sent"), "{second}");
    assert!(second.contains("b->a: completed: 0 sent"), "{second}");
}

#[test]
fn the_conflict_example_is_reported_and_deferred_until_resolved() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    seed_a(&a.app());
    seed_b(&b.app());
    w.config(&[("ab", "a", "b", "conflicts = \"defer\"")]);
    w.sync_ok("ab");
    // Both update I2: A6 on A, B5 on B.
    a.app()
        .execute("UPDATE folders SET name = 'by A' WHERE id = 'I2'", [])
        .unwrap();
    b.app()
        .execute("UPDATE folders SET name = 'by B' WHERE id = 'I2'", [])
        .unwrap();
    let out = w.sync_ok("ab");
    // A deferred conflict applies nothing: each side keeps its value.
    assert!(
        out.contains("a->b: completed: 1 sent, 0 applied, 1 conflicts"),
        "{out}"
    );
    assert!(
        out.contains("b->a: completed: 1 sent, 0 applied, 1 conflicts"),
        "{out}"
    );
    // Each side keeps its own value; neither learned the other's version.
    let name = |s: &icsync_e2e::StoreUnderTest| -> String {
        s.app()
            .query_row("SELECT name FROM folders WHERE id = 'I2'", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        (name(&a), name(&b)),
        ("by A".to_string(), "by B".to_string())
    );
    // It comes back next session.
    let again = w.sync_ok("ab");
    assert!(again.contains("1 conflicts"), "{again}");
}

#[test]
fn newer_wins_settles_the_conflict_the_same_way_on_both_stores() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    seed_a(&a.app());
    seed_b(&b.app());
    w.config(&[("ab", "a", "b", "conflicts = \"newer-wins\"")]);
    w.sync_ok("ab");
    a.app()
        .execute("UPDATE folders SET name = 'by A' WHERE id = 'I2'", [])
        .unwrap();
    // B's edit must be strictly later than A's recorded change time (milliseconds from
    // julianday, hence one to spare): equal times would be settled by the random replica ids.
    let a_at: i64 = a
        .app()
        .query_row(
            "SELECT u.at FROM sync_unit_versions u JOIN sync_items i ON i.rid = u.item \
             WHERE i.id = 'I2' AND u.unit = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    while now_ms() <= a_at + 1 {
        std::thread::yield_now();
    }
    b.app()
        .execute(
            "UPDATE folders SET name = 'by B, later' WHERE id = 'I2'",
            [],
        )
        .unwrap();
    w.sync_ok("ab");
    w.sync_ok("ab");
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    let name: String = a
        .app()
        .query_row("SELECT name FROM folders WHERE id = 'I2'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "by B, later");
    let quiet = w.sync_ok("ab");
    assert!(
        quiet.contains("a->b: completed: 0 sent") && quiet.contains("b->a: completed: 0 sent"),
        "{quiet}"
    );
}
