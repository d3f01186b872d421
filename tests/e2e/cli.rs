//! The operator output: snapshots of `agent state` and `agent status` (paths, ids and times
//! redacted), exit codes, and one-line failure reasons, of the agent and of the daemons' own
//! commands.

use icsync_e2e::{bin, count, fill_inbox, public_rows, redact, signal, wait_until, World};

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn world_after_one_session() -> (
    World,
    icsync_e2e::StoreUnderTest,
    icsync_e2e::StoreUnderTest,
) {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    super::seed_004::seed_a(&a.app());
    super::seed_004::seed_b(&b.app());
    w.config(&[("ab", "a", "b", "batch = 2")]);
    w.sync_ok("ab");
    (w, a, b)
}

#[test]
fn state_and_status_snapshots() {
    let (w, _a, _b) = world_after_one_session();
    insta::assert_snapshot!("state", redact(&stdout(&w.agent(&["state", "ab"])), &w));
    insta::assert_snapshot!(
        "state_json",
        redact(&stdout(&w.agent(&["state", "ab", "--json"])), &w)
    );
    insta::assert_snapshot!("status", redact(&stdout(&w.agent(&["status"])), &w));
    insta::assert_snapshot!("history", redact(&stdout(&w.agent(&["history"])), &w));
    insta::assert_snapshot!(
        "history_json",
        redact(
            &stdout(&w.agent(&["history", "ab", "--limit", "1", "--json"])),
            &w
        )
    );
    insta::assert_snapshot!(
        "status_json",
        redact(&stdout(&w.agent(&["status", "--json"])), &w)
    );
}

#[test]
fn a_failed_session_exits_non_zero_with_a_one_line_reason_and_is_recorded() {
    let (w, _a, mut b) = world_after_one_session();
    b.collector = None; // killed: the socket file stays, nobody answers
    let out = w.agent(&["sync", "ab"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with(
            "agent: ab (a->b): cannot connect to [dir]"
                .replace("[dir]", &w.dir.path().display().to_string())
                .as_str()
        ),
        "{err}"
    );
    assert!(
        last.ends_with("(a socket file is there but no daemon answers: the one that made it has stopped; start it again)"),
        "{err}"
    );
    let status = redact(&stdout(&w.agent(&["status"])), &w);
    assert!(
        status.contains("state:     failed")
            && status.contains("cannot connect to [dir]/run/b.coll.sock"),
        "{status}"
    );
}

#[test]
fn a_bad_config_names_file_and_line_and_runs_nothing() {
    let w = World::new();
    std::fs::write(
        w.path("agent.toml"),
        "state = \"s.db\"\n[stores.a]\nsynchronizer = \"a.s\"\ncollector = \"a.c\"\n[[partnerships]]\nname = \"x\"\nsource = \"a\"\ndestination = \"nowhere\"\nevery = \"5m\"\n",
    )
    .unwrap();
    let out = w.agent(&["sync", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent.toml:8:") && err.contains("unknown store \"nowhere\""),
        "{err}"
    );
    assert!(!w.path("s.db").exists(), "nothing ran");
}

#[test]
fn a_session_of_a_partnership_already_running_is_refused() {
    let (w, _a, _b) = world_after_one_session();
    let locks = w.pair_locks();
    assert_eq!(locks.len(), 1, "{locks:?}");
    let lock = std::fs::File::options()
        .write(true)
        .open(&locks[0])
        .unwrap();
    lock.lock().unwrap();
    let out = w.agent(&["sync", "ab"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    drop(lock);
    // A process another test forked while the lock was held keeps a copy of its descriptor
    // until it execs: wait until the lock is really free.
    icsync_e2e::wait_until(
        "the pair lock to be free",
        || {
            let f = std::fs::File::options()
                .write(true)
                .open(&locks[0])
                .unwrap();
            f.try_lock().is_ok()
        },
        String::new,
    );
    w.sync_ok("ab");
}

#[test]
fn agent_sync_shows_plain_progress_lines_off_a_terminal_and_a_spinner_on_one() {
    let mut w = World::new();
    let a = w.store("a");
    let _b = w.store("b");
    icsync_e2e::fill(&a.app(), "inbox", 12);
    w.config(&[("ab", "a", "b", "direction = \"one-way\"\nbatch = 5")]);

    // Off a terminal (here a pipe): one plain line per batch.
    let err = w.sync_ok("ab");
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.first(), Some(&"ab a->b: started"), "{err}");
    assert!(
        lines.contains(&"ab a->b: hierarchy batch 1: 1 sent, 1 applied, 0 conflicts, 0 errors"),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ab a->b: contents batch ")),
        "{err}"
    );
    assert_eq!(
        lines.last(),
        Some(&"ab a->b: completed: 13 sent, 13 applied, 0 conflicts, 0 errors"),
        "{err}"
    );

    // On a terminal (script(1) gives it one): a spinner redrawn in place, then the same result.
    icsync_e2e::fill(&a.app(), "more", 12);
    let command = format!(
        "{} --config {} sync ab",
        icsync_e2e::bin("agent").display(),
        w.path("agent.toml").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("\r\x1b[2K"), "redrawn in place: {shown:?}");
    assert!(shown.contains("ab a->b [0s]"), "{shown:?}");
    assert!(
        shown.contains("ab a->b: completed: 13 sent, 13 applied, 0 conflicts, 0 errors"),
        "{shown:?}"
    );
    assert!(
        !shown.contains("ab a->b: started"),
        "no plain lines: {shown:?}"
    );
}

/// `synchronizer info` and `synchronizer cleanup` look at a store the daemons serve: a path with
/// no store (a typo) is a one-line error, and no store is made there. An empty file is not a
/// store yet, and stays empty.
#[test]
fn info_and_cleanup_of_a_path_with_no_store_fail_and_create_nothing() {
    let w = World::new();
    let missing = w.path("typo.db");
    let empty = w.path("empty.db");
    std::fs::write(&empty, b"").unwrap();
    for args in [
        vec!["info", "--store"],
        vec!["info", "--json", "--store"],
        vec!["cleanup", "--retention", "1d", "--store"],
    ] {
        for (path, says) in [
            (&missing, "typo.db: no store here; nothing was created"),
            (
                &empty,
                "empty.db: not an icsync store (it is an empty file)",
            ),
        ] {
            let out = std::process::Command::new(bin("synchronizer"))
                .args(&args)
                .arg(path)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains(says), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
            assert!(out.stdout.is_empty(), "{args:?}");
        }
        assert!(!missing.exists(), "{args:?} created a store");
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "{args:?}");
    }
}

/// A daemon asked to create its store in a directory that does not exist says which directory,
/// once, instead of SQLite's "unable to open database file" repeated down the error's chain.
#[test]
fn a_daemon_whose_store_directory_is_missing_names_it_on_one_line() {
    let w = World::new();
    for which in ["synchronizer", "collector"] {
        let out = std::process::Command::new(bin(which))
            .arg("--store")
            .arg(w.path("nodir/a.db"))
            .arg("--socket")
            .arg(w.path(&format!("{which}.sock")))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{which}: {err}");
        let want = format!(
            "{which}: {}: cannot create the store: directory {} does not exist\n",
            w.path("nodir/a.db").display(),
            w.path("nodir").display()
        );
        assert_eq!(err, want);
        assert!(!w.path("nodir").exists());
        assert!(!w.path(&format!("{which}.sock")).exists());
    }
}

/// SIGTERM (or Ctrl-C) stops `agent sync` at the next batch boundary, as it stops `agent run`:
/// exit 1 with the reason, the session recorded as stopped, and the next one resumes.
#[test]
fn a_signalled_agent_sync_stops_at_a_batch_boundary_and_the_next_resumes() {
    let mut w = World::new();
    let a = w.store("a");
    let b = w.store("b");
    fill_inbox(&a.app(), 3000);
    w.config(&[("ab", "a", "b", "batch = 10\ndirection = \"one-way\"")]);
    let log = w.path("sync.log");
    let mut agent = std::process::Command::new(bin("agent"))
        .arg("--config")
        .arg(w.path("agent.toml"))
        .args(["sync", "ab"])
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until(
        "the first batches to arrive",
        || count(&b.app(), "SELECT count(*) FROM messages") >= 20,
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    signal(agent.id(), "TERM");
    let status = agent.wait().unwrap();
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.lines().last().unwrap().starts_with(
            "agent: ab (a->b): stopped at a batch boundary: the agent was told to stop"
        ),
        "{err}"
    );
    let arrived = count(&b.app(), "SELECT count(*) FROM messages");
    assert!(arrived < 3000, "stopped part-way: {arrived}");
    let sessions = w.sessions("state/agent.db");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].result, "failed");
    assert!(
        sessions[0].reason.contains("the next session resumes"),
        "{sessions:?}"
    );

    let out = w.sync_ok("ab");
    assert!(
        !out.contains("completed: 3001 sent"),
        "resumed, not started over: {out}"
    );
    assert_eq!(public_rows(&a.app()), public_rows(&b.app()));
}
