//! The daemon's reloads (SIGHUP), the plans it writes for `agent status`, and its one-daemon-
//! per-state-file rule, against sockets nobody serves. Waits watch logs and the state file.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::tests::{history, quick, unserved, within, Logs};
use super::*;
use crate::report;

fn stores(names: &[&str]) -> String {
    let mut text = String::from("state = \"state/agent.db\"\n");
    for s in names {
        text.push_str(&format!(
            "[stores.{s}]\nsynchronizer = \"run/{s}.sync.sock\"\ncollector = \"run/{s}.coll.sock\"\n"
        ));
    }
    text
}

fn partnership(name: &str, source: &str, destination: &str, schedule: &str) -> String {
    format!(
        "[[partnerships]]\nname = \"{name}\"\nsource = \"{source}\"\ndestination = \"{destination}\"\ndirection = \"one-way\"\n{schedule}\n"
    )
}

/// A config file and a reload that reads it, with the sender that asks for reloads.
fn reloading(path: &Path) -> (mpsc::UnboundedSender<()>, Reload) {
    let (tx, asked) = mpsc::unbounded_channel();
    let at: PathBuf = path.to_path_buf();
    let reload = Reload {
        asked,
        load: Box::new(move || Config::load(&at)),
    };
    (tx, reload)
}

fn sessions_of(config: &Config, name: &str) -> usize {
    history(config)
        .iter()
        .filter(|s| s.partnership == name)
        .count()
}

fn plan(config: &Config, name: &str) -> Option<crate::state::PlannedRun> {
    State::open(&config.state)
        .and_then(|s| s.plan(name))
        .ok()
        .flatten()
}

#[tokio::test]
async fn a_reload_adds_removes_and_changes_partnerships_and_keeps_the_old_config_when_the_new_is_bad(
) {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("test.toml");
    let first = stores(&["a", "b", "c"])
        + &partnership("a-b", "a", "b", "every = \"1h\"")
        + &partnership("b-c", "b", "c", "every = \"1h\"");
    std::fs::write(&file, &first).expect("config");
    let config = Config::load(&file).expect("config");
    let (ask, reload) = reloading(&file);
    let watched = config.clone();
    let stop = async {
        while sessions_of(&watched, "a-b") == 0 || sessions_of(&watched, "b-c") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // a-b removed, b-c rescheduled on a cron that never comes, a-c added.
        let second = stores(&["a", "b", "c"])
            + &partnership("b-c", "b", "c", "cron = \"0 0 31 2 *\"")
            + &partnership("a-c", "a", "c", "every = \"1h\"");
        std::fs::write(&file, second).expect("config");
        ask.send(()).expect("ask");
        logs.seen("config reloaded", 1).await;
        while sessions_of(&watched, "a-c") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            plan(&watched, "a-b"),
            None,
            "a removed partnership has no plan"
        );
        let b_c = plan(&watched, "b-c").expect("b-c planned");
        assert_eq!(b_c.next_run_at, None, "rescheduled on its new cron: never");
        assert!(plan(&watched, "a-c").is_some());

        // A bad config: logged with file and line, the running one kept.
        std::fs::write(
            &file,
            stores(&["a"]) + &partnership("x", "a", "nowhere", "every = \"1m\""),
        )
        .expect("config");
        ask.send(()).expect("ask");
        logs.seen("config not reloaded", 1).await;
        // A config that moves the state file needs a restart.
        std::fs::write(&file, first.replace("state/agent.db", "elsewhere.db")).expect("config");
        ask.send(()).expect("ask");
        logs.seen("config not reloaded", 2).await;
        assert!(plan(&watched, "a-c").is_some(), "still the second config");
    };
    within(
        "the reloads",
        run_with(config.clone(), stop, reload, quick()),
    )
    .await
    .expect("runs");
    let text = logs.text();
    let reloaded = text
        .lines()
        .find(|l| l.contains("config reloaded"))
        .unwrap_or_default();
    assert!(
        reloaded.contains("added=a-c removed=a-b changed=b-c"),
        "{reloaded}"
    );
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("config not reloaded"))
        .collect();
    assert!(
        refused[0].contains("ERROR")
            && refused[0].contains("test.toml:")
            && refused[0].contains("unknown store \"nowhere\""),
        "{refused:?}"
    );
    assert!(refused[1].contains("the state file changed"), "{refused:?}");
    // After a clean stop no plan is left.
    assert_eq!(plan(&config, "a-c"), None);
    assert_eq!(plan(&config, "b-c"), None);
}

#[tokio::test]
async fn a_retry_under_way_is_in_the_state_file_and_agent_status_shows_it() {
    let (_logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = unserved(dir.path(), "every = \"1h\"");
    let watched = config.clone();
    let stop = async {
        let retrying = loop {
            if let Some(p) = plan(&watched, "a-b").filter(|p| p.attempt >= 1) {
                break p;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let wait = retrying.retry_wait_ms.expect("wait");
        assert!((750..=1250).contains(&wait), "first retry after {wait} ms");
        let now = report::Now {
            ms: crate::state::now_ms(),
            daemon: crate::lock::DaemonLock::is_held(&watched),
        };
        assert!(now.daemon, "agent run holds the state file");
        let state = State::open(&watched.state).expect("state");
        let rows = report::status(&watched, &state, now, |_| false).expect("status");
        assert_eq!(rows[0].state, "retrying");
        let shown = report::render_status(&rows, now.ms);
        let line = shown
            .lines()
            .find(|l| l.starts_with("  state:"))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains("retrying in ")
                && line.contains("(attempt 1): a-b (a->b): cannot connect to"),
            "{shown}"
        );
        // A second agent run on the same state file is refused.
        let err = run_with(watched.clone(), async {}, Reload::never(), quick())
            .await
            .expect_err("refused")
            .to_string();
        assert!(err.contains("another agent run"), "{err}");
    };
    within(
        "a retry",
        run_with(config.clone(), stop, Reload::never(), quick()),
    )
    .await
    .expect("runs");
    // Without the daemon the retry is not shown: the last run failed.
    let state = State::open(&config.state).expect("state");
    let now = report::Now {
        ms: crate::state::now_ms(),
        daemon: crate::lock::DaemonLock::is_held(&config),
    };
    assert!(!now.daemon);
    let rows = report::status(&config, &state, now, |_| false).expect("status");
    assert_eq!(rows[0].state, "failed");
    assert!(report::render_status(&rows, now.ms)
        .contains("next run:  when agent run starts, then every 1h"));
}
