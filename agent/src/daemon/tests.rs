//! The daemon as a whole, without the real synchronizer and collector (those are the e2e
//! tests' business): sessions against sockets nobody serves, a partnership locked elsewhere,
//! spawned programs that exit at once, and shutdown. Nothing waits by sleeping: each test's
//! stop future watches the logs or the state file and resolves once it has seen what it needs.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

use super::schedule::{until, Timer};
use super::scheduler::Slot;
use super::*;
use crate::config::Schedule;
use crate::lock::PairLock;
use chrono::Local;
use tokio::time::Instant;

/// Log lines written while a test runs (its runtime is single-threaded, so a thread-local
/// subscriber sees every task's events).
#[derive(Clone, Default)]
pub(super) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub(super) fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (logs.clone(), tracing::subscriber::set_default(subscriber))
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }

    pub(super) fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }

    /// Resolves once `needle` has been logged `n` times.
    pub(super) async fn seen(&self, needle: &str, n: usize) {
        while self.count(needle) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

pub(super) fn quick() -> Timings {
    Timings {
        ready_timeout: Duration::from_millis(300),
        ready_poll: Duration::from_millis(10),
        stop_grace: Duration::from_secs(2),
        drain: Duration::from_secs(5),
        restart: Backoff {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
        },
    }
}

/// Two stores whose daemons nobody runs, and one partnership between them.
pub(super) fn unserved(dir: &Path, schedule: &str) -> Config {
    let text = format!(
        r#"
state = "state/agent.db"
[stores.a]
synchronizer = "run/a.sync.sock"
collector = "run/a.coll.sock"
[stores.b]
synchronizer = "run/b.sync.sock"
collector = "run/b.coll.sock"
[[partnerships]]
name = "a-b"
source = "a"
destination = "b"
direction = "one-way"
{schedule}
"#
    );
    Config::parse(&text, "test.toml", dir).expect("config")
}

pub(super) fn history(config: &Config) -> Vec<crate::state::SessionRecord> {
    State::open(&config.state)
        .and_then(|s| s.history(None, 100))
        .unwrap_or_default()
}

pub(super) async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test]
async fn an_every_partnership_runs_at_once_and_a_retryable_failure_is_retried_before_its_next_run()
{
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = unserved(dir.path(), "every = \"1h\"");
    let watched = config.clone();
    let stop = async {
        while history(&watched).len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        logs.seen("session failed; retrying", 2).await;
    };
    within(
        "two failed sessions",
        run_with(config.clone(), stop, Reload::never(), quick()),
    )
    .await
    .expect("runs");

    // The first session ran right away, the retry about a second later (1 s ± 25%), not an
    // hour later.
    let sessions = history(&config);
    assert!(sessions.len() >= 2, "{sessions:?}");
    for s in &sessions {
        assert_eq!(s.result, "failed");
        assert_eq!(s.direction, "a->b");
        let reason = s.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("cannot connect to"), "{reason}");
    }
    let (first, second) = (&sessions[sessions.len() - 1], &sessions[sessions.len() - 2]);
    let gap = second.started_at - first.started_at;
    assert!((700..3000).contains(&gap), "retried after {gap} ms");

    let text = logs.text();
    assert!(
        text.contains("session started partnership=a-b direction=a->b"),
        "{text}"
    );
    assert!(text.contains("attempt=1 retry_in="), "{text}");
    assert!(text.contains("attempt=2 retry_in="), "{text}");
    assert!(
        text.contains("error=a-b (a->b): cannot connect to"),
        "{text}"
    );
    assert!(text.contains("agent stopped"), "{text}");
}

#[tokio::test]
async fn a_partnership_locked_elsewhere_is_skipped_until_its_next_run() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = unserved(dir.path(), "every = \"1s\"");
    let lock = PairLock::try_take(&config, "a-b").expect("lock");
    let watched = config.clone();
    let stop = async {
        logs.seen("already running elsewhere", 1).await;
        assert!(history(&watched).is_empty(), "no session while locked");
        assert_eq!(logs.count("session started"), 0);
        drop(lock);
        // The next tick (1 s after the skipped run) runs it.
        while history(&watched).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    within(
        "a session after the lock",
        run_with(config, stop, Reload::never(), quick()),
    )
    .await
    .expect("runs");
    let text = logs.text();
    assert!(
        text.contains("INFO") && text.contains("skipping this run"),
        "{text}"
    );
    // Busy is not an error, and is not retried on the backoff.
    assert!(
        !text
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("already running")),
        "{text}"
    );
    let skipped = text
        .lines()
        .find(|l| l.contains("skipping this run"))
        .unwrap_or_default();
    assert!(skipped.contains("next_in="), "{skipped}");
}

#[tokio::test]
async fn a_failure_retrying_cannot_fix_waits_for_the_next_scheduled_run() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = unserved(dir.path(), "every = \"1h\"");
    // A directory where the lock file should be: the lock cannot be taken, which is not Busy.
    let lock = PairLock::path(&config, "a-b").expect("lock path");
    std::fs::create_dir_all(&lock).expect("lock dir");
    let stop = logs.seen("waiting for the next scheduled run", 1);
    within(
        "the failure",
        run_with(config, stop, Reload::never(), quick()),
    )
    .await
    .expect("runs");
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("waiting for the next scheduled run"))
        .unwrap_or_default();
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("next_in=1h"), "{line}");
    assert!(line.contains("cannot lock"), "{line}");
    assert_eq!(logs.count("session failed; retrying"), 0, "{text}");
}

#[tokio::test]
async fn a_cron_partnership_waits_for_its_time() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    // Midnight on the 31st of February: a valid expression that never comes.
    let config = unserved(dir.path(), "cron = \"0 0 31 2 *\"");
    let stop = logs.seen("scheduled", 1);
    within(
        "scheduled",
        run_with(config.clone(), stop, Reload::never(), quick()),
    )
    .await
    .expect("runs");
    assert!(history(&config).is_empty());
    let text = logs.text();
    assert!(text.contains("schedule=cron 0 0 31 2 *"), "{text}");
}

#[test]
fn a_cron_slot_moves_past_its_occurrence_but_keeps_it_for_an_early_retry() {
    let timer = Timer::new(&Schedule::Cron("* * * * *".into())).expect("cron");
    let now = Instant::now();
    let wall = Local::now();
    let occurrence = timer.next_occurrence(&wall);
    let p = unserved(Path::new("/"), "cron = \"* * * * *\"")
        .partnerships
        .remove(0);
    let mut slot = Slot {
        timer,
        scheduled: occurrence.map(|o| now + until(&wall, &o)),
        occurrence,
        attempt: 1,
        ..Slot::new(&p, now).expect("slot")
    };
    // An early retry ended: the scheduled run stays where it was.
    let before = slot.scheduled;
    slot.reschedule(now);
    assert_eq!(slot.scheduled, before);
    assert_eq!(slot.occurrence, occurrence);
    // The scheduled run ended (even a little before its time, by the wall clock): the next
    // occurrence, a minute on.
    slot.ran_for_schedule = true;
    slot.reschedule(now);
    let next = slot.occurrence.expect("next");
    let first = occurrence.expect("first");
    assert_eq!((next - first).num_seconds(), 60);

    let mut every = Slot {
        timer: Timer::Every(Duration::from_secs(10)),
        scheduled: Some(now),
        occurrence: None,
        ..slot
    };
    let ended = now + Duration::from_secs(3);
    every.reschedule(ended);
    assert_eq!(every.scheduled, Some(ended + Duration::from_secs(10)));
    every.retry_at = Some(ended + Duration::from_secs(1));
    assert_eq!(every.due(), every.retry_at);
}

#[tokio::test]
async fn spawned_programs_are_started_with_their_store_and_socket_and_stopped_at_the_end() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    // /bin/sh refuses the --store option and exits: never ready, restarted with backoff.
    let text = r#"
state = "state/agent.db"
[stores.a]
synchronizer = "run/a.sync.sock"
collector = "sockets/a.coll.sock"
path = "data/a.db"
spawn = true
synchronizer_bin = "/bin/sh"
collector_bin = "/bin/sh"
"#;
    let config = Config::parse(text, "test.toml", dir.path()).expect("config");
    let stop = async {
        logs.seen("spawned process not ready yet", 2).await;
        logs.seen("spawned process exited; restarting it", 6).await;
    };
    within("restarts", run_with(config, stop, Reload::never(), quick()))
        .await
        .expect("runs");
    assert!(dir.path().join("data").is_dir());
    assert!(dir.path().join("run").is_dir());
    assert!(dir.path().join("sockets").is_dir());
    let text = logs.text();
    assert!(text.contains("process=a synchronizer"), "{text}");
    assert!(text.contains("process=a collector"), "{text}");
    assert!(text.contains("program=/bin/sh"), "{text}");
    assert!(text.contains("spawned process not ready yet"), "{text}");
    assert!(text.contains("no partnerships to schedule"), "{text}");
    assert!(text.contains("agent stopped"), "{text}");
}

#[tokio::test]
async fn a_missing_program_stops_the_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = r#"
state = "state/agent.db"
[stores.a]
synchronizer = "run/a.sync.sock"
collector = "run/a.coll.sock"
path = "data/a.db"
spawn = true
synchronizer_bin = "bin/nope"
"#;
    let config = Config::parse(text, "test.toml", dir.path()).expect("config");
    let err = within(
        "the error",
        run_with(config, std::future::pending(), Reload::never(), quick()),
    )
    .await
    .expect_err("refused");
    let shown = err.to_string();
    assert!(
        shown.starts_with("agent run cannot start: cannot start the synchronizer of store a ("),
        "{shown}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn stop_before_anything_is_ready_returns_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = unserved(dir.path(), "every = \"1h\"");
    let mut timings = quick();
    timings.ready_timeout = Duration::from_secs(3600);
    within("stop", run_with(config, async {}, Reload::never(), timings))
        .await
        .expect("stops");
}
