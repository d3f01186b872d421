//! Tombstone cleanup, out-of-date stores recovered by full enumeration (seed 001), and the
//! collector's body size cap and the largest body a batch carries (recoverable per-item errors,
//! seed 003), through the real binaries. Nothing waits for a retention to pass: `--retention 0s` forgets every tombstone.

use std::process::Command;

use icsync_e2e::{bin, count, fill_inbox, ids, public_rows, sent_per_leg, World};

/// `synchronizer cleanup --store PATH --retention 0s`, which must succeed; returns its stdout.
fn cleanup_now(w: &World, store: &str) -> String {
    let out = Command::new(bin("synchronizer"))
        .args(["cleanup", "--retention", "0s", "--store"])
        .arg(w.store_path(store))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn stores_away_longer_than_the_retention_converge_by_full_enumeration() {
    let mut w = World::new();
    let mut a = w.store("a");
    let mut b = w.store("b");
    w.config(&[("ab", "a", "b", "batch = 2")]);
    a.app()
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('f', 'F'), ('old', 'Old');
             INSERT INTO messages (id, folder_id, subject)
               VALUES ('m1', 'f', 'one'), ('m2', 'f', 'two'), ('m3', 'old', 'three'),
                      ('m4', 'f', 'four'), ('m5', 'f', 'five');",
        )
        .unwrap();
    w.sync_ok("ab");
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));

    // Apart: deletes and new items on both sides.
    a.app()
        .execute_batch(
            "DELETE FROM messages WHERE id IN ('m1', 'm3');
             DELETE FROM folders WHERE id = 'old';
             INSERT INTO messages (id, folder_id, subject) VALUES ('a-new', 'f', 'made on A');",
        )
        .unwrap();
    b.app()
        .execute_batch(
            "DELETE FROM messages WHERE id = 'm2';
             UPDATE messages SET is_read = 1 WHERE id = 'm4';
             INSERT INTO messages (id, folder_id, subject) VALUES ('b-new', 'f', 'made on B');",
        )
        .unwrap();
    // Both restart with a retention that has passed for every tombstone: the first cleanup runs
    // before their sockets answer.
    for (store, s) in [("a", &mut a), ("b", &mut b)] {
        s.synchronizer = None;
        s.synchronizer = Some(w.spawn_with("synchronizer", store, &["--retention", "0s"], &[]));
        s.collector = None;
        s.collector = Some(w.spawn_with("collector", store, &["--retention", "0s"], &[]));
    }
    assert_eq!(w.info("a")["tombstones"], 0);
    assert_eq!(w.info("b")["tombstones"], 0);
    assert_ne!(w.info("a")["forgotten_knowledge"], serde_json::json!([]));

    let out = w.sync_ok("ab");
    for store in ["a", "b"] {
        let log = s_log(&w, store);
        assert!(
            log.contains("destination is out of date: full enumeration"),
            "{store}: {log}"
        );
    }
    let expected = vec!["a-new", "b-new", "m4", "m5"];
    assert_eq!(
        ids(&a.app(), "SELECT id FROM messages ORDER BY id"),
        expected,
        "{out}"
    );
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    assert_eq!(ids(&b.app(), "SELECT id FROM folders"), vec!["f"]);
    assert_eq!(
        count(&a.app(), "SELECT is_read FROM messages WHERE id = 'm4'"),
        1
    );
    // Recovered: the next session is incremental both ways and has nothing to send.
    let again = w.sync_ok("ab");
    assert_eq!(sent_per_leg(&again), vec![0, 0], "{again}");
}

fn s_log(w: &World, store: &str) -> String {
    std::fs::read_to_string(w.path(&format!("{store}.synchronizer.log"))).unwrap_or_default()
}

#[test]
fn an_interrupted_full_enumeration_resumes_without_resending_its_first_batches() {
    let mut w = World::new();
    let a = w.store("a");
    let mut b = w.store("b");
    fill_inbox(&a.app(), 100);
    w.config(&[("ab", "a", "b", "batch = 10\ndirection = \"one-way\"")]);
    w.sync_ok("ab");
    // One delete early in id order, ten late; then A forgets them.
    a.app()
        .execute_batch("DELETE FROM messages WHERE id = 'm0005' OR id BETWEEN 'm0070' AND 'm0079';")
        .unwrap();
    let cleaned = cleanup_now(&w, "a");
    assert!(cleaned.starts_with("removed 11 tombstones"), "{cleaned}");

    // The collector dies right after committing the 4th batch: the folders pass (1 batch),
    // then three batches of ten messages.
    b.collector = None;
    let mut dying = w.spawn(
        "collector",
        "b",
        &[("ICSYNC_FAILPOINT", "collector-after-commit:4")],
    );
    assert!(!w.agent(&["sync", "ab"]).status.success());
    assert!(!dying.wait_exit().success());
    assert_eq!(
        count(&b.app(), "SELECT count(*) FROM sync_full_enumeration"),
        1,
        "the progress is recorded with the batch"
    );
    assert_eq!(
        count(&b.app(), "SELECT count(*) FROM messages WHERE id = 'm0005'"),
        0,
        "the first batches' drops are committed"
    );

    b.collector = Some(w.spawn("collector", "b", &[]));
    let out = w.sync_ok("ab");
    // 89 messages in all; the first 30 (by id) arrived before the kill and are not sent again.
    assert_eq!(sent_per_leg(&out), vec![59], "{out}");
    assert!(
        s_log(&w, "a").contains(r#"after: Some("m0030")"#),
        "{}",
        s_log(&w, "a")
    );
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    assert_eq!(count(&b.app(), "SELECT count(*) FROM messages"), 89);
    assert_eq!(
        count(&b.app(), "SELECT count(*) FROM sync_full_enumeration"),
        0
    );
    assert_eq!(sent_per_leg(&w.sync_ok("ab")), vec![0]);
}

#[test]
fn a_body_over_the_cap_is_an_item_error_until_the_cap_is_raised() {
    let mut w = World::new();
    let a = w.store("a");
    let mut b = w.store("b");
    b.collector = None;
    b.collector = Some(w.spawn_with("collector", "b", &["--max-body-bytes", "1024"], &[]));
    w.config(&[("ab", "a", "b", "direction = \"one-way\"")]);
    a.app()
        .execute_batch(
            "INSERT INTO folders (id, name) VALUES ('f', 'F');
             INSERT INTO messages (id, folder_id, body)
               VALUES ('small', 'f', 'short'), ('big', 'f', zeroblob(3072)), ('fine', 'f', NULL);",
        )
        .unwrap();
    let out = w.sync_ok("ab");
    assert!(
        out.contains("warning: item big: body of 3 KiB is over the cap of 1 KiB"),
        "{out}"
    );
    assert_eq!(out.matches("warning").count(), 1, "{out}");
    assert_eq!(
        ids(&b.app(), "SELECT id FROM messages ORDER BY id"),
        vec!["fine", "small"]
    );
    let state = String::from_utf8(w.agent(&["state", "ab", "--json"]).stdout).unwrap();
    assert!(state.contains("over the cap of 1 KiB"), "{state}");

    // Still over the cap: it comes again (reported once per session), and nothing else does.
    let out = w.sync_ok("ab");
    assert_eq!(out.matches("warning: item big").count(), 1, "{out}");
    assert!(!out.contains("warning: item small"), "{out}");
    assert_eq!(count(&b.app(), "SELECT count(*) FROM messages"), 2);

    // The cap raised: it arrives.
    b.collector = None;
    b.collector = Some(w.spawn_with("collector", "b", &["--max-body-bytes", "4096"], &[]));
    let out = w.sync_ok("ab");
    assert!(!out.contains("warning"), "{out}");
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    assert_eq!(sent_per_leg(&w.sync_ok("ab")), vec![0]);
}

/// A body larger than a batch can carry (`MAX_SENT_BODY`, 48 MiB) used to fail every session
/// of its partnership, and nothing after it arrived. Now it is an item error of that message
/// alone, found again each session until the application makes it smaller.
#[test]
fn a_body_too_large_to_send_is_an_item_error_and_the_rest_arrives() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    w.config(&[("ab", "a", "b", "direction = \"one-way\"")]);
    let over = shared::store::MAX_SENT_BODY + 2 * 1024 * 1024;
    a.app()
        .execute("INSERT INTO folders (id, name) VALUES ('f', 'F');", [])
        .unwrap();
    a.app()
        .execute(
            "INSERT INTO messages (id, folder_id, body)
               VALUES ('before', 'f', 'short'), ('huge', 'f', zeroblob(?1)), ('after', 'f', 'x');",
            [over],
        )
        .unwrap();
    let out = w.sync_ok("ab");
    let warning = "warning: item huge: body of 50 MiB is too large to send (a batch carries \
                   bodies of at most 48 MiB); it comes again next session";
    assert_eq!(out.matches(warning).count(), 1, "{out}");
    assert_eq!(
        ids(&b.app(), "SELECT id FROM messages ORDER BY id"),
        vec!["after", "before"]
    );
    let status = String::from_utf8(w.agent(&["status"]).stdout).unwrap();
    assert!(
        status.contains("open:      0 conflicts, 1 item errors"),
        "{status}"
    );

    // Still too large: it comes again, alone.
    let out = w.sync_ok("ab");
    assert_eq!(out.matches(warning).count(), 1, "{out}");
    assert_eq!(sent_per_leg(&out), vec![1]);

    // Made smaller by the application: it arrives, and the error is settled.
    a.app()
        .execute(
            "UPDATE messages SET body = 'now small' WHERE id = 'huge'",
            [],
        )
        .unwrap();
    let out = w.sync_ok("ab");
    assert!(!out.contains("warning"), "{out}");
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    let status = String::from_utf8(w.agent(&["status"]).stdout).unwrap();
    assert!(
        status.contains("open:      0 conflicts, 0 item errors"),
        "{status}"
    );
    assert_eq!(sent_per_leg(&w.sync_ok("ab")), vec![0]);
}

#[test]
fn bad_retention_and_cap_flags_are_refused_with_what_is_wrong() {
    let w = World::new();
    for (which, args, says) in [
        ("synchronizer", vec!["--retention", "30"], "not a duration"),
        ("collector", vec!["--retention", "3w"], "not a duration"),
        (
            "collector",
            vec!["--max-body-bytes", "ten"],
            "invalid digit",
        ),
    ] {
        let out = Command::new(bin(which))
            .args(["--store"])
            .arg(w.store_path("x"))
            .args(["--socket"])
            .arg(w.coll_socket("x"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{which} {args:?}: {err}");
        assert!(err.contains(says), "{which} {args:?}: {err}");
    }
    assert!(!w.store_path("x").exists(), "nothing was created");
}
