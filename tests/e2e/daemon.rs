//! `agent run`, the main job: it spawns each store's synchronizer and collector, runs the
//! partnership on its schedule, and on SIGTERM stops its children and exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use icsync_e2e::{bin, signal, wait_until, World, DEADLINE};

#[test]
fn agent_run_spawns_the_daemons_syncs_on_schedule_and_stops_cleanly() {
    let w = World::new();
    spawned_config(&w);
    let log = w.path("agent.log");
    let mut agent = Command::new(bin("agent"))
        .arg("--config")
        .arg(w.path("agent.toml"))
        .arg("run")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !check() {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; agent log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The agent created the stores and started their daemons.
    wait_for("the spawned sockets", &|| {
        ["a.sync", "a.coll", "b.sync", "b.coll"].iter().all(|s| {
            std::os::unix::net::UnixStream::connect(w.path(&format!("run/{s}.sock"))).is_ok()
        })
    });
    // A change made on a, as an application would, arrives on b by schedule.
    let a = rusqlite::Connection::open(w.store_path("a")).unwrap();
    a.busy_timeout(Duration::from_secs(10)).unwrap();
    a.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'F');
         INSERT INTO messages (id, folder_id, subject) VALUES ('m', 'f', 'scheduled');",
    )
    .unwrap();
    wait_for("the change to reach b", &|| {
        rusqlite::Connection::open(w.store_path("b"))
            .and_then(|b| {
                b.query_row(
                    "SELECT count(*) FROM messages WHERE subject = 'scheduled'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap_or(0)
            == 1
    });
    // SIGTERM: exit 0, children gone, sockets removed.
    Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < DEADLINE * 2, "agent did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit {status}; log:\n{text}");
    assert!(
        text.contains("session ended"),
        "one line per session: {text}"
    );
    for s in ["a.sync", "a.coll", "b.sync", "b.coll"] {
        assert!(
            !w.path(&format!("run/{s}.sock")).exists(),
            "{s} socket removed"
        );
    }
}

/// Two stores whose processes the agent spawns, synced both ways every second.
fn spawned_config(w: &World) {
    std::fs::write(
        w.path("agent.toml"),
        r#"state = "state/agent.db"
[stores.a]
synchronizer = "run/a.sync.sock"
collector = "run/a.coll.sock"
path = "data/a.db"
spawn = true
[stores.b]
synchronizer = "run/b.sync.sock"
collector = "run/b.coll.sock"
path = "data/b.db"
spawn = true
[[partnerships]]
name = "ab"
source = "a"
destination = "b"
every = "1s"
"#,
    )
    .unwrap();
}

/// The pids of the spawned collector of store `b`, in the order the agent logged starting them.
fn b_collector_pids(log: &str) -> Vec<u32> {
    let re = regex_lite::Regex::new(r"started process=b collector pid=(\d+)").unwrap();
    re.captures_iter(log)
        .map(|c| c[1].parse().unwrap())
        .collect()
}

fn count_in_b(w: &World, subject: &str) -> i64 {
    rusqlite::Connection::open(w.store_path("b"))
        .and_then(|b| {
            b.busy_timeout(Duration::from_secs(10))?;
            b.query_row(
                "SELECT count(*) FROM messages WHERE subject = ?1",
                [subject],
                |r| r.get::<_, i64>(0),
            )
        })
        .unwrap_or(0)
}

/// How many sessions the agent's state file records as completed.
fn completed(w: &World) -> usize {
    w.sessions("state/agent.db")
        .iter()
        .filter(|s| s.result == "completed")
        .count()
}

#[test]
fn a_killed_spawned_collector_is_restarted_and_the_next_session_completes() {
    let w = World::new();
    spawned_config(&w);
    let mut agent = w.agent_run("agent.toml", "agent.log", &[]);
    wait_until(
        "a first session",
        || completed(&w) >= 1,
        || agent.log_text(),
    );
    let pids = b_collector_pids(&agent.log_text());
    assert_eq!(pids.len(), 1, "{}", agent.log_text());
    signal(pids[0], "KILL");
    wait_until(
        "the collector's restart",
        || b_collector_pids(&agent.log_text()).len() == 2,
        || agent.log_text(),
    );
    let log = agent.log_text();
    assert!(
        log.contains("spawned process exited; restarting it process=b collector status=signal: 9"),
        "{log}"
    );

    // A change made after the restart arrives: the next session completes.
    let before = completed(&w);
    let a = rusqlite::Connection::open(w.store_path("a")).unwrap();
    a.busy_timeout(Duration::from_secs(10)).unwrap();
    a.execute_batch(
        "INSERT INTO folders (id, name) VALUES ('f', 'F');
         INSERT INTO messages (id, folder_id, subject) VALUES ('m', 'f', 'after the restart');",
    )
    .unwrap();
    wait_until(
        "the change to reach b",
        || count_in_b(&w, "after the restart") == 1,
        || agent.log_text(),
    );
    wait_until(
        "a later completed session",
        || completed(&w) > before,
        || agent.log_text(),
    );
    assert!(agent.terminate().success(), "{}", agent.log_text());
}

/// The pids `agent run` logged starting, by process (`a synchronizer`, `b collector`, ...).
fn spawned_pids(log: &str) -> Vec<(String, u32)> {
    let re = regex_lite::Regex::new(r"started process=(\w+ \w+) pid=(\d+)").unwrap();
    re.captures_iter(log)
        .map(|c| (c[1].to_string(), c[2].parse().unwrap()))
        .collect()
}

/// Whether a process has ended (gone, or a zombie not yet reaped by whoever adopted it).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// kill -9 of `agent run` takes its spawned daemons with it: each reads the end of its stdin
/// (`--supervised`) and stops cleanly, so none serves on unsupervised and the next `agent run`
/// starts its own on the same sockets at the first try.
#[test]
fn a_killed_agent_takes_its_spawned_daemons_with_it() {
    let w = World::new();
    spawned_config(&w);
    let mut first = w.agent_run("agent.toml", "agent.log", &[]);
    wait_until(
        "a first session",
        || completed(&w) >= 1,
        || first.log_text(),
    );
    let pids = spawned_pids(&first.log_text());
    assert_eq!(pids.len(), 4, "{}", first.log_text());
    // The daemons stayed up while the agent lived: none exited and was restarted.
    assert!(
        !first.log_text().contains("spawned process exited"),
        "{}",
        first.log_text()
    );

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let sockets =
        ["a.sync", "a.coll", "b.sync", "b.coll"].map(|s| w.path(&format!("run/{s}.sock")));
    wait_until(
        "the spawned daemons to stop and remove their sockets",
        || sockets.iter().all(|s| !s.exists()) && pids.iter().all(|(_, pid)| ended(*pid)),
        || {
            let logs: Vec<String> = pids
                .iter()
                .map(|(p, pid)| format!("{p} (pid {pid}) ended: {}", ended(*pid)))
                .collect();
            format!("{}\n{}", logs.join("\n"), first.log_text())
        },
    );
    let log = first.log_text();
    assert_eq!(
        log.matches(
            "shutting down: the agent that started this process is gone reason=stdin closed"
        )
        .count(),
        4,
        "{log}"
    );

    // The next agent's own daemons start at once and serve its sessions.
    let before = completed(&w);
    let mut second = w.agent_run("agent.toml", "agent2.log", &[]);
    wait_until(
        "a session of the second agent",
        || completed(&w) > before,
        || second.log_text(),
    );
    let log = second.log_text();
    assert_eq!(spawned_pids(&log).len(), 4, "{log}");
    assert!(!log.contains("spawned process exited"), "{log}");
    assert!(second.terminate().success(), "{}", second.log_text());
}

#[test]
fn sighup_reloads_the_config_and_a_bad_one_is_logged_and_the_old_kept() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    icsync_e2e::fill(&a.app(), "inbox", 2);
    icsync_e2e::fill(&b.app(), "outbox", 2);
    let one_way = "direction = \"one-way\"\nevery = \"1h\"";
    std::fs::write(
        w.path("agent.toml"),
        w.config_text("state/agent.db", &[("ab", "a", "b", one_way)]),
    )
    .unwrap();
    let mut agent = w.agent_run("agent.toml", "agent.log", &[]);
    let ran = |w: &World, name: &str| {
        w.sessions("state/agent.db")
            .iter()
            .any(|s| s.partnership == name && s.result == "completed")
    };
    wait_until("ab's first session", || ran(&w, "ab"), || agent.log_text());

    // A partnership added by the new config runs at once.
    std::fs::write(
        w.path("agent.toml"),
        w.config_text(
            "state/agent.db",
            &[("ab", "a", "b", one_way), ("ba", "b", "a", one_way)],
        ),
    )
    .unwrap();
    signal(agent.child.id(), "HUP");
    wait_until("ba's first session", || ran(&w, "ba"), || agent.log_text());
    assert!(agent.log_text().contains("config reloaded"));

    // A bad config: logged with its file and line; the daemon goes on with the old one.
    let bad = w
        .config_text("state/agent.db", &[("ab", "a", "b", one_way)])
        .replace("state/agent.db\"\n", "state/agent.db\"\nmax_sessions = 0\n");
    std::fs::write(w.path("agent.toml"), bad).unwrap();
    signal(agent.child.id(), "HUP");
    wait_until(
        "the refusal",
        || agent.log_text().contains("config not reloaded"),
        || agent.log_text(),
    );
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("config not reloaded"))
        .unwrap();
    assert!(
        line.contains("agent.toml:2:") && line.contains("max_sessions"),
        "{line}"
    );
    assert!(agent.is_running());
    let status = String::from_utf8(w.agent(&["status"]).stdout).unwrap_or_default();
    // status reads the (now bad) config file: it refuses it too, and exits 2.
    assert!(status.is_empty());
    assert!(agent.terminate().success());
    assert_eq!(
        icsync_e2e::public_rows(&a.app()),
        icsync_e2e::public_rows(&b.app())
    );
}
