//! Filtered sync (`folders`, seed 001's filter) and header-only sync (`bodies = false`, seed
//! 002's header download), through the real binaries.

use icsync_e2e::{count, ids, public_rows, sent_per_leg, World};
use rusqlite::Connection;

fn messages(app: &Connection) -> Vec<String> {
    ids(app, "SELECT id FROM messages ORDER BY id")
}

fn folders(app: &Connection) -> Vec<String> {
    ids(app, "SELECT id FROM folders ORDER BY id")
}

/// Inbox, Projects/Alpha, Archive and Work/Reports, with messages in each.
const MAILBOX: &str = "
    INSERT INTO folders (id, name) VALUES ('inbox', 'Inbox'), ('proj', 'Projects'),
        ('archive', 'Archive'), ('work', 'Work');
    INSERT INTO folders (id, parent_id, name) VALUES ('alpha', 'proj', 'Alpha'),
        ('reports', 'work', 'Reports');
    INSERT INTO messages (id, folder_id, subject, body) VALUES
        ('i1', 'inbox', 'in the inbox', 'body i1'), ('i2', 'inbox', 'also inbox', 'body i2'),
        ('p1', 'proj', 'a project', 'body p1'), ('a1', 'alpha', 'alpha work', 'body a1'),
        ('x1', 'archive', 'archived', 'body x1'), ('x2', 'archive', 'archived too', 'body x2'),
        ('w1', 'work', 'at work', 'body w1'), ('r1', 'reports', 'a report', 'body r1');";

const SCOPE: &str = "folders = [\"Inbox\", \"Projects/**\", \"Work/Reports\"]\nbatch = 2";

#[test]
fn a_filtered_destination_holds_its_folders_follows_moves_and_never_claims_the_rest() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    let c = w.store("c");
    let config = |ab: &str| {
        w.config(&[
            ("ab", "a", "b", ab),
            ("bc", "b", "c", "direction = \"one-way\""),
            ("ac", "a", "c", ""),
        ])
    };
    config(SCOPE);
    a.app().execute_batch(MAILBOX).unwrap();
    b.app()
        .execute_batch("INSERT INTO folders (id, name) VALUES ('mine', 'Made on B');")
        .unwrap();
    w.sync_ok("ab");
    // Work travels as the way down to Reports, without its message.
    assert_eq!(
        folders(&b.app()),
        ["alpha", "inbox", "mine", "proj", "reports", "work"]
    );
    assert_eq!(messages(&b.app()), ["a1", "i1", "i2", "p1", "r1"]);
    // What B made travels back whole: the source keeps everything.
    assert_eq!(
        count(&a.app(), "SELECT count(*) FROM folders WHERE id = 'mine'"),
        1
    );

    // A store fed by the filtered one learns only what B holds, so the source still sends it
    // the rest: nothing claimed that was never held.
    w.sync_ok("bc");
    assert_eq!(messages(&c.app()), ["a1", "i1", "i2", "p1", "r1"]);
    w.sync_ok("ac");
    assert_eq!(public_rows(&c.app()), public_rows(&a.app()));

    // Moves: one out of the scope, one in; a folder moved into the scope brings its contents,
    // one renamed out of it takes its subtree away.
    a.app()
        .execute_batch(
            "UPDATE messages SET folder_id = 'archive' WHERE id = 'i1';
             UPDATE messages SET folder_id = 'inbox' WHERE id = 'x1';",
        )
        .unwrap();
    w.sync_ok("ab");
    assert_eq!(messages(&b.app()), ["a1", "i2", "p1", "r1", "x1"]);
    a.app()
        .execute_batch("UPDATE folders SET parent_id = 'proj' WHERE id = 'archive';")
        .unwrap();
    w.sync_ok("ab");
    assert_eq!(
        messages(&b.app()),
        ["a1", "i1", "i2", "p1", "r1", "x1", "x2"]
    );
    assert!(folders(&b.app()).contains(&"archive".to_string()));
    a.app()
        .execute_batch("UPDATE folders SET name = 'Old projects' WHERE id = 'proj';")
        .unwrap();
    w.sync_ok("ab");
    assert_eq!(messages(&b.app()), ["i2", "r1", "x1"]);
    assert_eq!(folders(&b.app()), ["inbox", "mine", "reports", "work"]);
    // Leaving the scope deleted nothing: the source and the unfiltered store keep it all.
    assert_eq!(count(&a.app(), "SELECT count(*) FROM messages"), 8);
    w.sync_ok("ac");
    assert_eq!(public_rows(&c.app()), public_rows(&a.app()));

    // Widening the filter sends exactly what the destination lacks: the five messages and
    // three folders outside the old scope, nothing it holds.
    config("folders = [\"**\"]\nbatch = 2");
    let out = w.sync_ok("ab");
    assert_eq!(sent_per_leg(&out), vec![8, 0], "{out}");
    assert_eq!(public_rows(&b.app()), public_rows(&a.app()));
    let quiet = w.sync_ok("ab");
    assert_eq!(sent_per_leg(&quiet), vec![0, 0], "{quiet}");
}

#[test]
fn a_message_with_changes_the_source_has_not_seen_stays_until_they_travel() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    w.config(&[(
        "ab",
        "a",
        "b",
        "folders = [\"Inbox\"]\nconflicts = \"merge\"",
    )]);
    a.app().execute_batch(MAILBOX).unwrap();
    w.sync_ok("ab");
    assert_eq!(messages(&b.app()), ["i1", "i2"]);
    // A moves i1 out while B marks it read: B keeps it, its change travels, then it goes.
    a.app()
        .execute_batch("UPDATE messages SET folder_id = 'archive' WHERE id = 'i1';")
        .unwrap();
    b.app()
        .execute_batch("UPDATE messages SET is_read = 1 WHERE id = 'i1';")
        .unwrap();
    w.sync_ok("ab");
    assert_eq!(
        count(&a.app(), "SELECT is_read FROM messages WHERE id = 'i1'"),
        1
    );
    w.sync_ok("ab");
    assert_eq!(messages(&b.app()), ["i2"]);
    assert_eq!(
        count(&a.app(), "SELECT count(*) FROM messages WHERE id = 'i1'"),
        1
    );
}

#[test]
fn header_only_copies_travel_without_bodies_and_fill_in_when_bodies_are_asked_for() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    let c = w.store("c");
    let config = |ab: &str| {
        w.config(&[
            ("ab", "a", "b", ab),
            ("bc", "b", "c", "direction = \"one-way\""),
            ("ac", "a", "c", "direction = \"one-way\""),
        ])
    };
    config("bodies = false");
    a.app().execute_batch(MAILBOX).unwrap();
    w.sync_ok("ab");
    assert_eq!(count(&b.app(), "SELECT count(*) FROM messages"), 8);
    assert_eq!(
        count(
            &b.app(),
            "SELECT count(*) FROM messages WHERE body IS NOT NULL"
        ),
        0
    );
    assert_eq!(
        ids(&b.app(), "SELECT subject FROM messages WHERE id = 'r1'"),
        ["a report"]
    );

    // The copy's content changes only where the body is: an edit is refused by name. Its
    // read flag is its own and travels back, the source's body untouched.
    let err = b
        .app()
        .execute_batch("UPDATE messages SET subject = 'edited' WHERE id = 'i1';")
        .expect_err("refused");
    assert!(err.to_string().contains("header-only copy"), "{err}");
    b.app()
        .execute_batch("UPDATE messages SET is_read = 1 WHERE id = 'i1';")
        .unwrap();
    w.sync_ok("ab");
    assert_eq!(
        ids(
            &a.app(),
            "SELECT body || '/' || is_read FROM messages WHERE id = 'i1'"
        ),
        ["body i1/1"]
    );

    // A store fed by the copy gets copies too, and the bodies from the source that has them.
    w.sync_ok("bc");
    assert_eq!(
        count(&c.app(), "SELECT count(*) FROM messages WHERE body IS NULL"),
        8
    );
    w.sync_ok("ac");
    assert_eq!(public_rows(&c.app()), public_rows(&a.app()));

    // Asking for bodies fills them in, and sends nothing else.
    config("bodies = true");
    let out = w.sync_ok("ab");
    assert_eq!(sent_per_leg(&out), vec![8, 0], "{out}");
    assert_eq!(public_rows(&b.app()), public_rows(&a.app()));
    b.app()
        .execute_batch("UPDATE messages SET subject = 'edited on B' WHERE id = 'i1';")
        .unwrap();
    w.sync_ok("ab");
    assert_eq!(
        ids(&a.app(), "SELECT subject FROM messages WHERE id = 'i1'"),
        ["edited on B"]
    );
}
