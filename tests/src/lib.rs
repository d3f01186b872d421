//! The fixture of the end-to-end tests: each test gets its own temporary directory, spawns the
//! real `synchronizer`, `collector` and `agent` binaries in it, and holds handles to the daemons
//! (killed when dropped). Nothing waits by sleeping: daemons are ready when their socket answers,
//! polled against a deadline.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

pub mod model;

/// How long a daemon may take to start answering.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Where the binaries are: beside the test executable's `deps/` directory (cargo builds the
/// three binary packages' bins for `cargo test --workspace`), or `$ICSYNC_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ICSYNC_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (it builds the binaries) or set ICSYNC_BIN_DIR",
        path.display()
    );
    path
}

/// A spawned daemon; killed (SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit by itself (e.g. at a failpoint), within the deadline.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{} did not exit",
                self.socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.wait_exit()
    }

    /// The log so far, without terminal colour codes.
    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        regex_lite::Regex::new("\x1b\\[[0-9;]*m")
            .unwrap()
            .replace_all(&text, "")
            .into_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something answers on `socket`.
pub fn wait_for_socket(socket: &Path, child: &mut Child) {
    let start = Instant::now();
    while UnixStream::connect(socket).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("daemon for {} exited early: {status}", socket.display());
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} never answered",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A store under test with its two daemons.
pub struct StoreUnderTest {
    pub name: String,
    pub path: PathBuf,
    pub synchronizer: Option<Daemon>,
    pub collector: Option<Daemon>,
}

impl StoreUnderTest {
    /// A plain SQLite connection, as an application uses the store.
    pub fn app(&self) -> Connection {
        let c = Connection::open(&self.path).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }
}

/// One test's world: a temporary directory, its stores and a config.
pub struct World {
    pub dir: tempfile::TempDir,
    pub stores: Vec<String>,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> World {
        World {
            dir: tempfile::Builder::new()
                .prefix("icsync-e2e")
                .tempdir()
                .unwrap(),
            stores: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn sync_socket(&self, store: &str) -> PathBuf {
        self.path(&format!("run/{store}.sync.sock"))
    }

    pub fn coll_socket(&self, store: &str) -> PathBuf {
        self.path(&format!("run/{store}.coll.sock"))
    }

    pub fn store_path(&self, store: &str) -> PathBuf {
        self.path(&format!("data/{store}.db"))
    }

    /// Spawns a daemon (`synchronizer` or `collector`) for a store, with extra environment.
    pub fn spawn(&self, which: &str, store: &str, env: &[(&str, &str)]) -> Daemon {
        self.spawn_with(which, store, &[], env)
    }

    /// Spawns a daemon with extra arguments (e.g. `--retention 0s`) and environment.
    pub fn spawn_with(
        &self,
        which: &str,
        store: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        self.spawn_with_stdin(which, store, args, env, Stdio::inherit())
    }

    /// Spawns a daemon with extra arguments and environment, and `stdin` as its stdin (a pipe
    /// stays in the returned handle's `child.stdin`).
    pub fn spawn_with_stdin(
        &self,
        which: &str,
        store: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Stdio,
    ) -> Daemon {
        let socket = if which == "synchronizer" {
            self.sync_socket(store)
        } else {
            self.coll_socket(store)
        };
        std::fs::create_dir_all(self.path("data")).unwrap();
        let log = self.path(&format!("{store}.{which}.log"));
        let mut cmd = Command::new(bin(which));
        cmd.arg("--store")
            .arg(self.store_path(store))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        wait_for_socket(&socket, &mut child);
        Daemon { child, socket, log }
    }

    /// Creates a store (empty) and starts its two daemons.
    pub fn store(&mut self, name: &str) -> StoreUnderTest {
        self.stores.push(name.to_string());
        let synchronizer = self.spawn("synchronizer", name, &[]);
        let collector = self.spawn("collector", name, &[]);
        StoreUnderTest {
            name: name.to_string(),
            path: self.store_path(name),
            synchronizer: Some(synchronizer),
            collector: Some(collector),
        }
    }

    /// Writes the agent config: every store made so far, and the given partnerships as
    /// (name, source, destination, extra TOML lines), each every 5 minutes.
    pub fn config(&self, partnerships: &[(&str, &str, &str, &str)]) -> PathBuf {
        let with_schedule: Vec<(&str, &str, &str, String)> = partnerships
            .iter()
            .map(|(n, s, d, extra)| (*n, *s, *d, format!("every = \"5m\"\n{extra}")))
            .collect();
        let path = self.path("agent.toml");
        std::fs::write(&path, self.config_text("state/agent.db", &with_schedule)).unwrap();
        path
    }

    /// An agent config with its state file at `state`: every store made so far, and the given
    /// partnerships as (name, source, destination, TOML lines including the schedule).
    pub fn config_text<S: AsRef<str>>(
        &self,
        state: &str,
        partnerships: &[(&str, &str, &str, S)],
    ) -> String {
        let mut toml = format!("state = \"{state}\"\n");
        for s in &self.stores {
            toml.push_str(&format!(
                "\n[stores.{s}]\nsynchronizer = \"run/{s}.sync.sock\"\ncollector = \"run/{s}.coll.sock\"\n"
            ));
        }
        for (name, source, destination, lines) in partnerships {
            toml.push_str(&format!(
                "\n[[partnerships]]\nname = \"{name}\"\nsource = \"{source}\"\ndestination = \"{destination}\"\n{}\n",
                lines.as_ref()
            ));
        }
        toml
    }

    /// Starts `agent --config CONFIG run` (RUST_LOG=info, plus `args`), its log in `LOG`.
    /// The returned handle's `socket` is the config file.
    pub fn agent_run(&self, config: &str, log: &str, args: &[&str]) -> Daemon {
        let log = self.path(log);
        let child = Command::new(bin("agent"))
            .arg("--config")
            .arg(self.path(config))
            .args(args)
            .arg("run")
            .env_remove("ICSYNC_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child,
            socket: self.path(config),
            log,
        }
    }

    /// The sessions recorded in an agent state file, oldest first (none if it does not exist).
    pub fn sessions(&self, state: &str) -> Vec<Session> {
        let path = self.path(state);
        if !path.exists() {
            return Vec::new();
        }
        let c = Connection::open(path).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let sessions = c
            .prepare(
                "SELECT id, partnership, direction, started_at, ended_at, result, coalesce(reason, ''), \
                 batches, sent, applied FROM sessions ORDER BY id",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok(Session {
                        id: r.get(0)?,
                        partnership: r.get(1)?,
                        direction: r.get(2)?,
                        started_at: r.get(3)?,
                        ended_at: r.get(4)?,
                        result: r.get(5)?,
                        reason: r.get(6)?,
                        batches: r.get(7)?,
                        sent: r.get(8)?,
                        applied: r.get(9)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            });
        // A state file the agent is still creating has no table yet.
        sessions.unwrap_or_default()
    }

    /// Runs `agent --config agent.toml ARGS...` to completion.
    pub fn agent(&self, args: &[&str]) -> Output {
        self.agent_env(args, &[])
    }

    pub fn agent_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin("agent"));
        cmd.arg("--config").arg(self.path("agent.toml")).args(args);
        cmd.env_remove("ICSYNC_CONFIG").env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// `agent sync NAME`, which must succeed; returns its stderr.
    pub fn sync_ok(&self, name: &str) -> String {
        let out = self.agent(&["sync", name]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "agent sync {name} failed: {err}");
        err
    }

    /// The lock files of pairs of stores that sessions have taken so far (the agent keeps them
    /// beside the collector sockets, here `run/icsync-locks/`).
    pub fn pair_locks(&self) -> Vec<PathBuf> {
        let mut locks: Vec<PathBuf> = std::fs::read_dir(self.path("run/icsync-locks"))
            .map(|dir| dir.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        locks.sort();
        locks
    }

    /// `synchronizer info --store PATH --json`.
    pub fn info(&self, store: &str) -> serde_json::Value {
        let out = Command::new(bin("synchronizer"))
            .args(["info", "--json", "--store"])
            .arg(self.store_path(store))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A session as an agent's state file records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: i64,
    pub partnership: String,
    pub direction: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub result: String,
    pub reason: String,
    pub batches: i64,
    pub sent: i64,
    pub applied: i64,
}

/// Polls `check` until it holds, failing with `what` (and `context()`, e.g. a log) after
/// twice [`DEADLINE`].
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < DEADLINE * 2,
            "timed out waiting for {what}:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a signal (`STOP`, `CONT`, `TERM`, `HUP`, `KILL`) to one process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Inserts a folder `folder` and `n` messages in it, as an application would, in one
/// transaction.
pub fn fill(app: &Connection, folder: &str, n: usize) {
    app.execute_batch("BEGIN").unwrap();
    app.execute("INSERT INTO folders (id, name) VALUES (?1, ?1)", [folder])
        .unwrap();
    for i in 0..n {
        app.execute(
            "INSERT INTO messages (id, folder_id, subject, body) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                format!("{folder}-{i}"),
                folder,
                format!("message {i}"),
                "x".repeat(200)
            ],
        )
        .unwrap();
    }
    app.execute_batch("COMMIT").unwrap();
}

/// Every public row of a store, in a canonical text form, for comparing stores.
pub fn public_rows(app: &Connection) -> Vec<String> {
    let mut rows: Vec<String> = app
        .prepare("SELECT 'F', id, coalesce(parent_id, '-'), name FROM folders ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok(format!(
                "F {} parent={} name={}",
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.extend(
        app.prepare(
            "SELECT id, folder_id, subject, sender, received_at, headers, hex(body), is_read \
             FROM messages ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok(format!(
                "M {} folder={} subject={} sender={} at={} headers={} body={} read={}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?
            ))
        })
        .unwrap()
        .map(Result::unwrap),
    );
    rows
}

/// Sends raw bytes to a socket and reads back one frame's JSON (or None if it closed).
pub fn raw_exchange(socket: &Path, bytes: &[u8]) -> Option<serde_json::Value> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(bytes).unwrap();
    read_frame(&mut s)
}

/// Reads one frame's JSON from a stream (None on close).
pub fn read_frame(s: &mut UnixStream) -> Option<serde_json::Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).unwrap())
}

/// A frame around a JSON text.
pub fn frame(json: &str) -> Vec<u8> {
    let mut out = (json.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out
}

/// The knowledge entries of `info` as (replica, upto, exceptions) with the given replica names.
pub fn knowledge_of(info: &serde_json::Value, names: &[(&str, &str)]) -> String {
    let mut parts = Vec::new();
    for entry in info["knowledge"].as_array().unwrap() {
        let id = entry["replica"].as_str().unwrap();
        let name = names
            .iter()
            .find(|(_, rid)| *rid == id)
            .map(|(n, _)| *n)
            .unwrap_or(id);
        let mut part = format!("{name}{}", entry["upto"]);
        for ex in entry["exceptions"].as_array().unwrap() {
            part.push_str(&format!("+{}..{}", ex[0], ex[1]));
        }
        parts.push(part);
    }
    parts.sort();
    parts.join(", ")
}

/// Fills a store with folder `inbox` and `n` messages `m0000`, `m0001`, … with 500-byte bodies,
/// in one transaction.
pub fn fill_inbox(app: &Connection, n: usize) {
    app.execute_batch("INSERT INTO folders (id, name) VALUES ('inbox', 'Inbox');")
        .unwrap();
    let tx = app.unchecked_transaction().unwrap();
    for i in 0..n {
        tx.execute(
            "INSERT INTO messages (id, folder_id, subject, body) VALUES (?1, 'inbox', ?2, ?3)",
            rusqlite::params![format!("m{i:04}"), format!("message {i}"), "x".repeat(500)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// The one integer a query returns.
pub fn count(app: &Connection, sql: &str) -> i64 {
    app.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Operator output made stable for snapshots: the test's directory, times, replica ids, unix
/// milliseconds, ids and knowledge ticks redacted.
pub fn redact(text: &str, w: &World) -> String {
    let mut s = text.replace(&w.dir.path().display().to_string(), "[dir]");
    for (pattern, with) in [
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", "[time]"),
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[replica]",
        ),
        (
            r#""(updated_at|started_at|ended_at|last_started_at|last_ended_at|next_run_at)": \d+"#,
            "\"$1\": [ms]",
        ),
        (r"#\d+ +", "#[id] "),
        // Knowledge entries are ordered by (random) replica id; `knowledge_by_store` pins them.
        (r#""upto": \d+"#, "\"upto\": [n]"),
    ] {
        s = regex_lite::Regex::new(pattern)
            .unwrap()
            .replace_all(&s, with)
            .into_owned();
    }
    s
}

/// The `sent` count of every leg's completion line of `agent sync`, in order.
pub fn sent_per_leg(agent_output: &str) -> Vec<u64> {
    agent_output
        .lines()
        .filter_map(|l| l.split("completed: ").nth(1))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

/// The first column of every row `sql` returns, as text.
pub fn ids(app: &Connection, sql: &str) -> Vec<String> {
    app.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
