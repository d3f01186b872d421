//! Conflicts through the real binaries: a deferred conflict waits in the operator's queue
//! (`agent conflicts`) session after session, `agent resolve` settles it, and the choice reaches
//! both stores; seed 003's constraint conflicts end the same on both stores.

use icsync_e2e::{public_rows, redact, World};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn subject(app: &rusqlite::Connection) -> String {
    app.query_row("SELECT subject FROM messages WHERE id = 'm1'", [], |r| {
        r.get(0)
    })
    .unwrap()
}

#[test]
fn a_deferred_conflict_waits_for_an_operator_and_the_choice_reaches_both_stores() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    w.config(&[("ab", "a", "b", "conflicts = \"defer\"")]);
    a.app()
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('f', 'Inbox');
             INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'Budget');",
        )
        .unwrap();
    w.sync_ok("ab");
    a.app()
        .execute(
            "UPDATE messages SET subject = 'Budget by a' WHERE id = 'm1'",
            [],
        )
        .unwrap();
    b.app()
        .execute(
            "UPDATE messages SET subject = 'Budget by b' WHERE id = 'm1'",
            [],
        )
        .unwrap();

    // Met in both directions, twice: one conflict in the queue, each store keeps its value.
    w.sync_ok("ab");
    w.sync_ok("ab");
    assert_eq!(subject(&a.app()), "Budget by a");
    assert_eq!(subject(&b.app()), "Budget by b");
    insta::assert_snapshot!("conflicts", redact(&stdout(&w.agent(&["conflicts"])), &w));
    let queue: serde_json::Value =
        serde_json::from_str(&stdout(&w.agent(&["conflicts", "--json"]))).unwrap();
    assert_eq!(queue.as_array().map(Vec::len), Some(1), "{queue}");
    assert_eq!(queue[0]["times_seen"], 4);
    assert_eq!(queue[0]["local_store"], "b");
    let status = stdout(&w.agent(&["status", "--json"]));
    assert!(status.contains("\"open_conflicts\": 1"), "{status}");

    // A bad id changes nothing and says what is wrong.
    let out = w.agent(&["resolve", "99", "--keep", "local"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no conflict 99"));

    let id = queue[0]["id"].to_string();
    let out = w.agent(&["resolve", &id, "--keep", "remote"]);
    assert!(out.status.success());
    insta::assert_snapshot!("resolve", redact(&stdout(&out), &w));

    w.sync_ok("ab");
    assert_eq!(subject(&a.app()), "Budget by a");
    assert_eq!(
        subject(&b.app()),
        "Budget by a",
        "the remote side (a) was kept"
    );
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    assert_eq!(
        stdout(&w.agent(&["conflicts"])),
        "no conflicts waiting for a decision\n"
    );
    let all = stdout(&w.agent(&["conflicts", "--all"]));
    assert!(all.contains("resolved: kept remote"), "{all}");
    // Quiet afterwards: nothing more to send either way, nothing deferred.
    let history: serde_json::Value =
        serde_json::from_str(&stdout(&w.agent(&["history", "--json", "--limit", "2"]))).unwrap();
    w.sync_ok("ab");
    let after: serde_json::Value =
        serde_json::from_str(&stdout(&w.agent(&["history", "--json", "--limit", "2"]))).unwrap();
    for s in after.as_array().unwrap() {
        assert_eq!(
            (s["sent"].as_i64(), s["conflicts"].as_i64()),
            (Some(0), Some(0)),
            "{after}"
        );
    }
    assert_ne!(history, after);
}

#[test]
fn same_name_folders_and_a_folder_deleted_while_the_other_store_filled_it_end_the_same() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    w.config(&[("ab", "a", "b", "conflicts = \"newer-wins\"")]);
    a.app()
        .execute("INSERT INTO folders (id, name) VALUES ('gone', 'Old')", [])
        .unwrap();
    w.sync_ok("ab");
    a.app()
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('p-a', 'Projects');
             DELETE FROM folders WHERE id = 'gone';",
        )
        .unwrap();
    b.app()
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('p-b', 'Projects');
             INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'gone', 'filed late');",
        )
        .unwrap();
    for _ in 0..3 {
        w.sync_ok("ab");
    }
    let rows = public_rows(&a.app());
    assert_eq!(rows, public_rows(&b.app()));
    let names: String = a
        .app()
        .query_row(
            "SELECT group_concat(name, ' | ') FROM (SELECT name FROM folders ORDER BY id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(names, "Old | Projects | Projects (p-b)", "{rows:?}");
    assert_eq!(subject(&a.app()), "filed late", "nothing silently lost");
}
