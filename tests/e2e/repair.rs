//! The session starts from what the destination really knows, so a destination restored from an
//! old backup and an agent that lost its state file are repaired by the next session.

use icsync_e2e::{public_rows, World};

fn count(app: &rusqlite::Connection) -> i64 {
    app.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_destination_restored_from_an_old_backup_gets_back_what_it_lost() {
    let mut w = World::new();
    let a = w.store("a");
    let mut b = w.store("b");
    w.config(&[("ab", "a", "b", "")]);
    a.app()
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('f', 'F');
             INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'one');",
        )
        .unwrap();
    w.sync_ok("ab");
    // Back up b (a consistent copy through SQLite's own backup).
    let backup = w.path("b.backup.db");
    b.app()
        .execute("VACUUM INTO ?1", [backup.to_str().unwrap()])
        .unwrap();
    // Later changes on both sides reach both stores...
    a.app()
        .execute(
            "INSERT INTO messages (id, folder_id, subject) VALUES ('m2', 'f', 'two')",
            [],
        )
        .unwrap();
    b.app()
        .execute(
            "INSERT INTO messages (id, folder_id, subject) VALUES ('b1', 'f', 'made on b')",
            [],
        )
        .unwrap();
    w.sync_ok("ab");
    assert_eq!(count(&b.app()), 3);
    // ... then b is restored from the backup: it lost m2 and its own b1.
    b.collector = None;
    b.synchronizer = None;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", w.store_path("b").display()));
    }
    std::fs::copy(&backup, w.store_path("b")).unwrap();
    b.synchronizer = Some(w.spawn("synchronizer", "b", &[]));
    b.collector = Some(w.spawn("collector", "b", &[]));
    assert_eq!(count(&b.app()), 1);

    let out = w.sync_ok("ab");
    assert!(out.contains("the destination had lost changes"), "{out}");
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    assert_eq!(
        count(&b.app()),
        3,
        "m2 and b's own lost b1 came back from a"
    );
    // b's tick counter moved past the ticks it gave out before the restore, so its next change
    // is not mistaken for one a already knows.
    b.app()
        .execute(
            "UPDATE messages SET subject = 'after restore' WHERE id = 'm1'",
            [],
        )
        .unwrap();
    w.sync_ok("ab");
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
}

#[test]
fn an_agent_that_lost_its_state_file_repairs_without_duplicates() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    w.config(&[("ab", "a", "b", "")]);
    a.app()
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('f', 'F');
             INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'one'), ('m2', 'f', 'two');",
        )
        .unwrap();
    w.sync_ok("ab");
    std::fs::remove_dir_all(w.path("state")).unwrap();
    a.app()
        .execute("UPDATE messages SET is_read = 1 WHERE id = 'm1'", [])
        .unwrap();
    let out = w.sync_ok("ab");
    assert!(
        out.contains("a->b: completed: 1 sent"),
        "only the new change travels: {out}"
    );
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    assert_eq!(count(&b.app()), 2);
}
