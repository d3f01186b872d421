//! Two-way sync of non-conflicting changes with a hierarchy: nested folders, messages, moves,
//! read flags, deletes on both sides.

use icsync_e2e::{public_rows, World};

#[test]
fn creates_edits_moves_read_flags_and_deletes_converge_both_ways() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    w.config(&[("ab", "a", "b", "batch = 3")]);
    a.app()
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('inbox', 'Inbox'), ('archive', 'Archive');
             INSERT INTO folders (id, parent_id, name) VALUES ('proj', 'inbox', 'Projects');
             INSERT INTO folders (id, parent_id, name) VALUES ('deep', 'proj', 'Deep');
             INSERT INTO messages (id, folder_id, subject, sender, received_at, headers, body)
               VALUES ('m1', 'inbox', 'hello', 'ann@example.org', 1700000000, 'X-A: 1', x'48656c6c6f'),
                      ('m2', 'proj', 'plan', 'bob@example.org', 1700000100, '', 'text body'),
                      ('m3', 'deep', 'deep one', 'cy@example.org', 1700000200, '', NULL);",
        )
        .unwrap();
    b.app()
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('bfolder', 'From B');
             INSERT INTO messages (id, folder_id, subject) VALUES ('b1', 'bfolder', 'made on B');",
        )
        .unwrap();
    w.sync_ok("ab");
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    assert_eq!(public_rows(&a.app()).len(), 9);

    // Non-conflicting changes on both sides.
    a.app()
        .execute_batch(
            "UPDATE messages SET is_read = 1 WHERE id = 'm1';
             UPDATE messages SET folder_id = 'archive' WHERE id = 'm2';
             UPDATE folders SET parent_id = 'archive' WHERE id = 'proj';
             DELETE FROM messages WHERE id = 'b1';
             DELETE FROM folders WHERE id = 'bfolder';",
        )
        .unwrap();
    b.app()
        .execute_batch(
            "UPDATE messages SET subject = 'hello, edited on B' WHERE id = 'm1';
             INSERT INTO folders (id, parent_id, name) VALUES ('new', 'deep', 'New under Deep');
             UPDATE messages SET folder_id = 'new' WHERE id = 'm3';",
        )
        .unwrap();
    w.sync_ok("ab");
    let rows = public_rows(&a.app());
    assert_eq!(rows, public_rows(&b.app()));
    let m1 = rows.iter().find(|r| r.starts_with("M m1 ")).unwrap();
    assert!(
        m1.contains("subject=hello, edited on B") && m1.ends_with("read=1"),
        "{m1}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("M m3 folder=new ")),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("F proj parent=archive ")),
        "{rows:?}"
    );
    assert!(
        !rows
            .iter()
            .any(|r| r.contains("b1") || r.contains("bfolder")),
        "{rows:?}"
    );

    // Delete a subtree on B: contents before folders.
    b.app()
        .execute_batch(
            "DELETE FROM messages WHERE folder_id IN ('new', 'deep');
             DELETE FROM folders WHERE id = 'new';
             DELETE FROM folders WHERE id = 'deep';",
        )
        .unwrap();
    let out = w.sync_ok("ab");
    assert!(!out.contains("warning"), "{out}");
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    let info_a = w.info("a");
    let info_b = w.info("b");
    assert_eq!(
        info_a["knowledge"], info_b["knowledge"],
        "both stores know the same"
    );
    assert_eq!(info_a["messages"], 2);
    assert_eq!(info_a["folders"], 3);
}
