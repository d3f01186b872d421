//! kill -9 at the worst moments: nothing lost, nothing doubled. The processes abort at a
//! failpoint (`ICSYNC_FAILPOINT`, see shared/src/failpoint.rs), which is what kill -9 does to a
//! process: no clean-up, no flush.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use icsync_e2e::{bin, count, fill_inbox, public_rows, StoreUnderTest, World, DEADLINE};

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
    // The state file still records the session as running; status tells it apart from one
    // under way, as no process holds it any more.
    let status = String::from_utf8(w.agent(&["status"]).stdout).unwrap();
    assert!(
        status
            .contains("state:     interrupted: the agent running it stopped during a->b contents"),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&w.agent(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json[0]["state"], "interrupted");
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

/// kill -9 of any of the three processes at moments picked at random, not at chosen points:
/// twelve rounds in which both applications change their own messages (new, edited, read-flag
/// flips, deleted), a two-way session starts, and when the stores have imported a random share
/// of the round's items one process is killed outright: the agent, or a synchronizer or
/// collector of either store (taking turns), which is then started again. At the end one
/// session must bring both stores to exactly what the two applications wrote (nothing lost, no
/// deleted message back, no item twice) and report no conflict, as the two sides never changed
/// the same message. `ICSYNC_CRASH_SEED` replays a schedule; the moment a kill lands still
/// varies with the machine's timing, and no assertion depends on it.
#[test]
fn kill_9_at_random_moments_loses_nothing_and_doubles_nothing() {
    let seed = std::env::var("ICSYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1c5_c0de_u64);
    let mut rng = Rng(seed | 1);
    let mut w = World::new();
    let mut stores = [w.store("a"), w.store("b")];
    let mut sides = [Side::new("a"), Side::new("b")];
    for (side, store) in sides.iter_mut().zip(&stores) {
        side.begin(&store.app(), 40);
    }
    w.config(&[("ab", "a", "b", "batch = 7")]);
    let mut trace = vec![format!("seed {seed}")];
    let first_victim = rng.below(5) as usize;
    for round in 0..12 {
        let mut new_items = 0;
        for (side, store) in sides.iter_mut().zip(&stores) {
            new_items += side.change(&store.app(), &mut rng, round);
        }
        let base = imported(&stores);
        let target = base + rng.below(new_items + 1) as i64;
        let mut agent = spawn_sync(&w, round);
        let deadline = Instant::now() + DEADLINE;
        while imported(&stores) < target
            && agent.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let reached = imported(&stores) - base;
        let victim = VICTIMS[(first_victim + round) % VICTIMS.len()];
        match victim {
            ("agent", _) => {
                let _ = agent.kill();
            }
            (which, store) => {
                let s = &mut stores[usize::from(store == "b")];
                let slot = if which == "synchronizer" {
                    &mut s.synchronizer
                } else {
                    &mut s.collector
                };
                let mut d = slot.take().unwrap();
                d.child.kill().unwrap();
                d.child.wait().unwrap();
                *slot = Some(w.spawn(which, store, &[]));
            }
        }
        let status = wait_exit(&mut agent, &w, round);
        trace.push(format!(
            "round {round}: {new_items} new items, killed {victim:?} after {reached} of them \
             were imported (aimed at {}); the session {status}",
            target - base
        ));
    }

    // One session completes, the next has nothing to send, and both stores hold exactly what
    // the applications wrote.
    let trace = trace.join("\n");
    let out = w.agent(&["sync", "ab"]);
    assert!(
        out.status.success(),
        "the session after the kills failed: {}\n{trace}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = w.sessions("state/agent.db").len();
    w.sync_ok("ab");
    let again = w.sessions("state/agent.db");
    assert!(
        again[before..].iter().all(|s| s.sent == 0),
        "a second session sent again: {:?}\n{trace}",
        again[before..].iter().map(|s| s.sent).collect::<Vec<_>>()
    );
    let expected: Vec<String> = sides.iter().flat_map(Side::expected).collect();
    let mut expected = expected;
    expected.sort();
    for store in &stores {
        let app = store.app();
        let found = messages(&app);
        let missing: Vec<&String> = expected.iter().filter(|r| !found.contains(r)).collect();
        let unexpected: Vec<&String> = found.iter().filter(|r| !expected.contains(r)).collect();
        assert!(
            missing.is_empty() && unexpected.is_empty(),
            "store {}: lost or out of date {missing:#?}\nnot written so {unexpected:#?}\n{trace}",
            store.name
        );
        assert_eq!(
            count(
                &app,
                "SELECT count(*) - count(DISTINCT sync_rid) FROM messages"
            ),
            0,
            "one item per message in store {}",
            store.name
        );
    }
    assert_eq!(public_rows(&stores[0].app()), public_rows(&stores[1].app()));
    let state = rusqlite::Connection::open(w.path("state/agent.db")).unwrap();
    assert_eq!(
        count(
            &state,
            "SELECT coalesce(sum(conflicts), 0) + coalesce(sum(errors), 0) FROM sessions"
        ),
        0,
        "no conflict or item error between changes to different messages\n{trace}"
    );
}

/// Who may be killed: the agent, or a store's daemon.
const VICTIMS: [(&str, &str); 5] = [
    ("agent", ""),
    ("synchronizer", "a"),
    ("collector", "b"),
    ("synchronizer", "b"),
    ("collector", "a"),
];

/// xorshift64*: a few lines of deterministic choices, so a schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// One application's own messages, in its own folder, and what they should be everywhere.
struct Side {
    store: &'static str,
    /// id -> (subject, is_read)
    rows: std::collections::BTreeMap<String, (String, i64)>,
    made: usize,
}

impl Side {
    fn new(store: &'static str) -> Side {
        Side {
            store,
            rows: Default::default(),
            made: 0,
        }
    }

    fn folder(&self) -> String {
        format!("folder-{}", self.store)
    }

    fn begin(&mut self, app: &rusqlite::Connection, n: usize) {
        app.execute(
            "INSERT INTO folders (id, name) VALUES (?1, ?1)",
            [self.folder()],
        )
        .unwrap();
        let tx = app.unchecked_transaction().unwrap();
        for _ in 0..n {
            self.insert(&tx, "first");
        }
        tx.commit().unwrap();
    }

    fn insert(&mut self, app: &rusqlite::Connection, subject: &str) {
        let id = format!("{}-{:05}", self.store, self.made);
        self.made += 1;
        app.execute(
            "INSERT INTO messages (id, folder_id, subject, body) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                id,
                self.folder(),
                subject,
                format!("{id} {}", "x".repeat(300))
            ],
        )
        .unwrap();
        self.rows.insert(id, (subject.to_string(), 0));
    }

    /// New messages, edits, flips and deletes of this side's own messages, each in the
    /// application's own transaction; returns how many new items the other store will import.
    fn change(&mut self, app: &rusqlite::Connection, rng: &mut Rng, round: usize) -> u64 {
        let new = 3 + rng.below(12);
        for _ in 0..new {
            self.insert(app, &format!("new in round {round}"));
        }
        let ids: Vec<String> = self.rows.keys().cloned().collect();
        for id in ids {
            match rng.below(16) {
                0 => {
                    let subject = format!("edited in round {round}");
                    app.execute(
                        "UPDATE messages SET subject = ?2 WHERE id = ?1",
                        [&id, &subject],
                    )
                    .unwrap();
                    self.rows.get_mut(&id).unwrap().0 = subject;
                }
                1 => {
                    app.execute(
                        "UPDATE messages SET is_read = 1 - is_read WHERE id = ?1",
                        [&id],
                    )
                    .unwrap();
                    let row = self.rows.get_mut(&id).unwrap();
                    row.1 = 1 - row.1;
                }
                2 => {
                    app.execute("DELETE FROM messages WHERE id = ?1", [&id])
                        .unwrap();
                    self.rows.remove(&id);
                }
                _ => {}
            }
        }
        new
    }

    fn expected(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|(id, (subject, read))| row_text(id, &self.folder(), subject, *read))
            .collect()
    }
}

fn row_text(id: &str, folder: &str, subject: &str, read: i64) -> String {
    format!("{id} in {folder}: {subject:?} read={read}")
}

fn messages(app: &rusqlite::Connection) -> Vec<String> {
    app.prepare("SELECT id, folder_id, subject, is_read FROM messages ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok(row_text(
                &r.get::<_, String>(0)?,
                &r.get::<_, String>(1)?,
                &r.get::<_, String>(2)?,
                r.get(3)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Items both stores know, live or tombstone: grows as sessions import, never shrinks.
fn imported(stores: &[StoreUnderTest; 2]) -> i64 {
    stores
        .iter()
        .map(|s| count(&s.app(), "SELECT count(*) FROM sync_items"))
        .sum()
}

fn spawn_sync(w: &World, round: usize) -> std::process::Child {
    Command::new(bin("agent"))
        .arg("--config")
        .arg(w.path("agent.toml"))
        .args(["sync", "ab"])
        .env_remove("ICSYNC_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(w.path(&format!("sync.{round}.log"))).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for an `agent sync` to end, within the deadline; describes how it ended.
fn wait_exit(agent: &mut std::process::Child, w: &World, round: usize) -> String {
    let start = Instant::now();
    loop {
        if let Some(status) = agent.try_wait().unwrap() {
            let log =
                std::fs::read_to_string(w.path(&format!("sync.{round}.log"))).unwrap_or_default();
            let last = log.lines().last().unwrap_or("").to_string();
            return format!("ended with {status}: {last}");
        }
        assert!(
            start.elapsed() < DEADLINE,
            "agent sync of round {round} did not end"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
