//! `agent run`, the main job: it spawns each store's synchronizer and collector, runs the
//! partnership on its schedule, and on SIGTERM stops its children and exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use icsync_e2e::{bin, World, DEADLINE};

#[test]
fn agent_run_spawns_the_daemons_syncs_on_schedule_and_stops_cleanly() {
    let w = World::new();
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
