//! `agent run` against daemons the tests control: retries with backoff, sessions kept apart
//! from `agent sync` and from another agent with its own state file, and a SIGTERM in the middle
//! of a session. A stopped (SIGSTOP) collector holds a session open at a known point, so no
//! test depends on timing; every wait polls the state file or the logs against a deadline.

use icsync_e2e::{fill, public_rows, signal, wait_until, Session, World};

const STATE: &str = "state/agent.db";

fn status_json(w: &World) -> serde_json::Value {
    let out = w.agent(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Items (folders and messages) in a store.
fn items(app: &rusqlite::Connection) -> i64 {
    app.query_row(
        "SELECT (SELECT count(*) FROM folders) + (SELECT count(*) FROM messages)",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Writes `agent.toml`: partnership ab from a to b, one way, with `lines` (the schedule...).
fn one_way_ab(w: &World, lines: &str) {
    let lines = format!("direction = \"one-way\"\n{lines}");
    std::fs::write(
        w.path("agent.toml"),
        w.config_text(STATE, &[("ab", "a", "b", lines)]),
    )
    .unwrap();
}

/// No two sessions of the lists overlap in time.
fn assert_apart(sessions: &[Session]) {
    for (i, s) in sessions.iter().enumerate() {
        for t in &sessions[i + 1..] {
            let (s_end, t_end) = (s.ended_at.unwrap(), t.ended_at.unwrap());
            assert!(
                s_end <= t.started_at || t_end <= s.started_at,
                "sessions overlap: {s:?} and {t:?}"
            );
        }
    }
}

#[test]
fn backoff_grows_while_the_collector_is_unreachable_and_resets_once_it_is_back() {
    let mut w = World::new();
    let a = w.store("a");
    let mut b = w.store("b");
    fill(&a.app(), "inbox", 3);
    b.collector = None; // killed: its socket file stays and refuses connections
    one_way_ab(&w, "every = \"1h\"");
    let mut agent = w.agent_run("agent.toml", "agent.log", &[]);

    // Each planned retry as `agent status` shows it: attempt -> (wait, reason).
    let mut seen = std::collections::BTreeMap::new();
    wait_until(
        "the second retry",
        || {
            let row = &status_json(&w)[0];
            if row["state"] == "retrying" {
                let retry = &row["retry"];
                seen.insert(
                    retry["attempt"].as_u64().unwrap(),
                    (
                        retry["wait_ms"].as_i64().unwrap(),
                        retry["reason"].as_str().unwrap().to_string(),
                    ),
                );
            }
            seen.contains_key(&2)
        },
        || agent.log_text(),
    );
    let (first, reason) = &seen[&1];
    let (second, _) = &seen[&2];
    assert!((750..=1250).contains(first), "first retry after {first} ms");
    assert!(
        (1500..=2500).contains(second),
        "second retry after {second} ms"
    );
    assert!(reason.contains("cannot connect to"), "{reason}");
    let text = String::from_utf8(w.agent(&["status"]).stdout).unwrap();
    assert!(
        text.contains("state:     retrying in ") && text.contains("(attempt 2): ab (a->b): "),
        "{text}"
    );

    // The collector is back: the next retry completes and the backoff starts over.
    b.collector = Some(w.spawn("collector", "b", &[]));
    wait_until(
        "a completed session",
        || status_json(&w)[0]["last_result"] == "completed",
        || agent.log_text(),
    );
    let row = status_json(&w)[0].clone();
    assert_eq!(row["state"], "idle", "{row}");
    assert!(row["retry"].is_null(), "{row}");
    assert_eq!(row["daemon"], true);
    let next = row["next_run_at"].as_i64().unwrap() - now_ms();
    assert!(
        next > 3_500_000,
        "back on the hourly schedule, not retrying: {next} ms"
    );
    assert_eq!(items(&b.app()), 4);
    let results: Vec<String> = w.sessions(STATE).into_iter().map(|s| s.result).collect();
    assert!(results.len() >= 3, "{results:?}");
    assert!(results[..results.len() - 1].iter().all(|r| r == "failed"));
    assert_eq!(results.last().unwrap(), "completed");

    assert!(agent.terminate().success());
    // A stopped daemon plans nothing: status says when the next run will be instead.
    let row = status_json(&w)[0].clone();
    assert_eq!(row["daemon"], false);
    assert!(row["next_run_at"].is_null(), "{row}");
}

#[test]
fn the_daemon_and_agent_sync_never_run_the_same_stores_at_once() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    fill(&a.app(), "inbox", 20);
    one_way_ab(&w, "every = \"1s\"\nbatch = 5");
    let mut agent = w.agent_run("agent.toml", "agent.log", &[]);
    let completed = |w: &World| {
        w.sessions(STATE)
            .iter()
            .filter(|s| s.result == "completed")
            .count()
    };
    wait_until(
        "the first session",
        || completed(&w) >= 1,
        || agent.log_text(),
    );

    // The daemon's next session is held open by a stopped collector.
    let collector = b.collector.as_ref().unwrap().child.id();
    signal(collector, "STOP");
    wait_until(
        "the daemon's next session",
        || w.sessions(STATE).iter().any(|s| s.result == "running"),
        || agent.log_text(),
    );
    let out = w.agent(&["sync", "ab"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(
            "ab: a session between its stores is already running (partnership ab of agent pid"
        ),
        "{err}"
    );
    let text = String::from_utf8(w.agent(&["status"]).stdout).unwrap();
    assert!(text.contains("state:     running: a->b"), "{text}");
    signal(collector, "CONT");

    // agent sync in turn runs between the daemon's sessions (told "busy" while one runs).
    wait_until(
        "agent sync between the daemon's sessions",
        || {
            let out = w.agent(&["sync", "ab"]);
            assert!(matches!(out.status.code(), Some(0 | 3)), "{out:?}");
            out.status.success()
        },
        || agent.log_text(),
    );
    wait_until(
        "another daemon session",
        || completed(&w) >= 3,
        || agent.log_text(),
    );
    assert!(agent.terminate().success());
    let sessions = w.sessions(STATE);
    assert!(
        sessions.iter().all(|s| s.result == "completed"),
        "{sessions:?}"
    );
    assert_apart(&sessions);
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
}

#[test]
fn two_agents_with_their_own_state_files_never_run_the_same_stores_at_once() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    fill(&a.app(), "inbox", 5);
    fill(&b.app(), "outbox", 5);
    // Two agents, two state files, opposite directions between the same two stores; the
    // second names the sockets by another spelling.
    std::fs::write(
        w.path("one.toml"),
        w.config_text(
            "one/agent.db",
            &[("ab", "a", "b", "direction = \"one-way\"\nevery = \"1h\"")],
        ),
    )
    .unwrap();
    std::fs::write(
        w.path("two.toml"),
        w.config_text(
            "two/agent.db",
            &[("back", "b", "a", "direction = \"one-way\"\nevery = \"1h\"")],
        )
        .replace("\"run/", "\"./run/../run/"),
    )
    .unwrap();
    let agent = |config: &str, args: &[&str]| {
        std::process::Command::new(icsync_e2e::bin("agent"))
            .arg("--config")
            .arg(w.path(config))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };

    // The first agent's session is held open by b's stopped collector.
    let collector = b.collector.as_ref().unwrap().child.id();
    signal(collector, "STOP");
    let mut first = agent("one.toml", &["sync", "ab"]);
    wait_until(
        "the first agent's session",
        || {
            w.sessions("one/agent.db")
                .iter()
                .any(|s| s.result == "running")
        },
        String::new,
    );
    let refused = agent("two.toml", &["sync", "back"])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("(partnership ab of agent pid {}", first.id())),
        "{err}"
    );
    assert!(
        w.sessions("two/agent.db").is_empty(),
        "the second agent ran nothing"
    );

    // The second agent's daemon skips its run while the first holds the stores.
    let mut daemon = w.agent_run("two.toml", "two.log", &[]);
    wait_until(
        "the skipped run",
        || daemon.log_text().contains("skipping this run"),
        || daemon.log_text(),
    );
    signal(collector, "CONT");
    assert!(first.wait().unwrap().success());
    assert!(daemon.terminate().success());

    let out = agent("two.toml", &["sync", "back"])
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = w.sessions("one/agent.db");
    all.extend(w.sessions("two/agent.db"));
    assert_eq!(all.len(), 2, "{all:?}");
    assert_apart(&all);
    assert_eq!(items(&a.app()), 12);
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
}

#[test]
fn sigterm_in_the_middle_of_a_session_then_a_restart_loses_nothing_and_doubles_nothing() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    fill(&a.app(), "inbox", 300);
    let total = items(&a.app());
    one_way_ab(&w, "every = \"1h\"\nbatch = 10");
    // The session starts against a stopped collector: SIGTERM arrives before its first batch.
    let collector = b.collector.as_ref().unwrap().child.id();
    signal(collector, "STOP");
    let mut agent = w.agent_run("agent.toml", "first.log", &[]);
    wait_until(
        "the session",
        || w.sessions(STATE).iter().any(|s| s.result == "running"),
        || agent.log_text(),
    );
    signal(agent.child.id(), "TERM");
    wait_until(
        "the agent to stop scheduling",
        || agent.log_text().contains("stopping: no new sessions"),
        || agent.log_text(),
    );
    signal(collector, "CONT");
    let status = agent.wait_exit();
    let log = agent.log_text();
    assert!(status.success(), "exit {status}: {log}");

    let first = w.sessions(STATE).pop().unwrap();
    assert_eq!(first.result, "failed", "{first:?}");
    assert!(
        first.reason.contains("stopped at a batch boundary"),
        "{first:?}"
    );
    assert!(first.batches >= 1, "{first:?}");
    let kept = items(&b.app());
    assert!(kept >= 1 && kept < total, "{kept} of {total} items arrived");

    // A restart sends exactly what b lacks.
    let mut agent = w.agent_run("agent.toml", "second.log", &["--log-format", "json"]);
    wait_until(
        "the second session",
        || w.sessions(STATE).iter().any(|s| s.result == "completed"),
        || agent.log_text(),
    );
    assert!(agent.terminate().success());
    let second = w.sessions(STATE).pop().unwrap();
    assert_eq!((second.sent, second.applied), (total - kept, total - kept));
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));

    // One JSON line at the start and one at the end of the session.
    let lines: Vec<serde_json::Value> = agent
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let started: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "session started")
        .collect();
    let ended: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "session ended")
        .collect();
    assert_eq!((started.len(), ended.len()), (1, 1), "{lines:?}");
    let end = &ended[0]["fields"];
    assert_eq!(end["partnership"], "ab");
    assert_eq!(end["direction"], "a->b");
    assert_eq!(end["result"], "completed");
    assert_eq!(end["sent"], total - kept);
    assert_eq!(end["conflicts"], 0);
    assert!(end["duration_ms"].is_u64(), "{end}");
}
