//! kill -9 at the worst moments: nothing lost, nothing doubled. The processes abort at a
//! failpoint (`ICSYNC_FAILPOINT`, see shared/src/failpoint.rs), which is what kill -9 does to a
//! process: no clean-up, no flush.

use icsync_e2e::{count, fill_inbox, public_rows, World};

#[test]
fn collector_killed_after_a_commit_before_its_success_message() {
    let mut w = World::new();
    let a = w.store("a");
    let mut b = w.store("b");
    fill_inbox(&a.app(), 100);
    w.config(&[("ab", "a", "b", "batch = 10\ndirection = \"one-way\"")]);
    // The collector dies right after committing its 3rd batch.
    b.collector = None;
    let mut dying = w.spawn(
        "collector",
        "b",
        &[("ICSYNC_FAILPOINT", "collector-after-commit:3")],
    );
    let out = w.agent(&["sync", "ab"]);
    assert!(!out.status.success());
    let status = dying.wait_exit();
    assert!(!status.success(), "the collector aborted at the failpoint");
    // Batch 3 is in the store although its success message never went out.
    let applied = count(&b.app(), "SELECT count(*) FROM messages");
    // Batch 1 carried the folder (a batch stays within one phase), batches 2 and 3 ten messages each.
    assert_eq!(applied, 20);

    b.collector = Some(w.spawn("collector", "b", &[]));
    w.sync_ok("ab");
    assert_eq!(count(&b.app(), "SELECT count(*) FROM messages"), 100);
    assert_eq!(
        count(&b.app(), "SELECT count(DISTINCT id) FROM messages"),
        100
    );
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    let again = w.sync_ok("ab");
    assert!(again.contains("completed: 0 sent"), "{again}");
}

#[test]
fn synchronizer_killed_after_an_acknowledged_batch() {
    let mut w = World::new();
    let mut a = w.store("a");
    let b = w.store("b");
    fill_inbox(&a.app(), 60);
    w.config(&[("ab", "a", "b", "batch = 7\ndirection = \"one-way\"")]);
    a.synchronizer = None;
    let mut dying = w.spawn(
        "synchronizer",
        "a",
        &[("ICSYNC_FAILPOINT", "synchronizer-after-ack:4")],
    );
    assert!(!w.agent(&["sync", "ab"]).status.success());
    dying.wait_exit();
    // The failed session keeps the counts of the three batches whose progress was recorded:
    // the folder, then 7 + 7 messages.
    let history = String::from_utf8(w.agent(&["history", "--json"]).stdout).unwrap();
    let sessions: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(sessions[0]["result"], "failed");
    assert_eq!(
        (
            sessions[0]["batches"].as_i64(),
            sessions[0]["sent"].as_i64()
        ),
        (Some(3), Some(15))
    );
    a.synchronizer = Some(w.spawn("synchronizer", "a", &[]));
    w.sync_ok("ab");
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    assert_eq!(count(&b.app(), "SELECT count(*) FROM messages"), 60);
}

#[test]
fn agent_killed_mid_session_then_a_new_session_resumes() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    fill_inbox(&a.app(), 50);
    w.config(&[("ab", "a", "b", "batch = 5\ndirection = \"one-way\"")]);
    let out = w.agent_env(
        &["sync", "ab"],
        &[("ICSYNC_FAILPOINT", "agent-after-progress:3")],
    );
    assert!(!out.status.success());
    let partial = count(&b.app(), "SELECT count(*) FROM messages");
    assert!(
        partial < 50,
        "the session stopped part-way ({partial} messages)"
    );
    let out = w.sync_ok("ab");
    // Resumed, not restarted: the second session sends only what the first did not deliver.
    let sent: u64 = out
        .lines()
        .find_map(|l| l.split("completed: ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        sent <= (51 - partial) as u64,
        "sent {sent} after {partial} had arrived: {out}"
    );
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
    // The killed session is recorded as failed, the second as completed.
    let history = String::from_utf8(w.agent(&["history", "--json"]).stdout).unwrap();
    let sessions: serde_json::Value = serde_json::from_str(&history).unwrap();
    let results: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, vec!["completed", "failed"]);
}
