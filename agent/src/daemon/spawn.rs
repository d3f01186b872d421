//! The synchronizer and collector processes the agent starts itself (`spawn = true`): started
//! once at start-up, waited for until their sockets answer, restarted with backoff when they
//! exit, and stopped with SIGTERM (then SIGKILL after a grace period) at shutdown. They also end
//! when the agent ends without stopping them (`kill -9`): each reads end-of-file on its stdin, a
//! pipe only the agent holds open (`--supervised`, see [`start`]).
//!
//! Each child runs in its own process group, so a Ctrl-C in the terminal reaches only the agent,
//! which then stops the children in order rather than having them vanish under running sessions.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use shared::shutdown::{self, Shutdown, Trigger};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::schedule::{restart_attempt, show};
use super::Timings;
use crate::config::Config;

/// One process to keep running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The store it serves.
    pub store: String,
    /// `synchronizer` or `collector`.
    pub role: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The socket it listens on, which tells when it is ready.
    pub socket: PathBuf,
    /// Directories to create before starting it.
    pub dirs: Vec<PathBuf>,
}

/// Why spawned processes could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot find the agent's own executable to look for {role} beside it: {source}")]
    CurrentExe {
        role: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create directory {path} for store {store}: {source}")]
    Dir {
        store: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the {role} of store {store} ({program}): {source}{hint}")]
    Start {
        store: String,
        role: &'static str,
        program: PathBuf,
        hint: String,
        #[source]
        source: std::io::Error,
    },
}

/// What to start for every store with `spawn = true`: its synchronizer and its collector, the
/// programs configured by `synchronizer_bin`/`collector_bin` or else the ones beside the agent's
/// own executable.
pub fn specs(config: &Config) -> Result<Vec<ProcessSpec>, SpawnError> {
    let mut out = Vec::new();
    for store in config.stores.values().filter(|s| s.spawn) {
        let Some(path) = &store.path else { continue };
        for (role, socket, bin) in [
            ("synchronizer", &store.synchronizer, &store.synchronizer_bin),
            ("collector", &store.collector, &store.collector_bin),
        ] {
            let program = match bin {
                Some(p) => p.clone(),
                None => beside_current_exe(role)?,
            };
            let dirs = [path.as_path(), socket.as_path()]
                .iter()
                .filter_map(|p| p.parent())
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .collect();
            let mut args: Vec<std::ffi::OsString> = vec![
                "--store".into(),
                path.clone().into_os_string(),
                "--socket".into(),
                socket.clone().into_os_string(),
            ];
            if let Some(retention) = store.retention {
                args.push("--retention".into());
                args.push(format!("{}s", retention.as_secs()).into());
            }
            if let (Some(cap), "collector") = (store.max_body_bytes, role) {
                args.push("--max-body-bytes".into());
                args.push(cap.to_string().into());
            }
            out.push(ProcessSpec {
                store: store.name.clone(),
                role,
                program,
                args,
                socket: socket.clone(),
                dirs,
            });
        }
    }
    Ok(out)
}

fn beside_current_exe(role: &'static str) -> Result<PathBuf, SpawnError> {
    let exe = std::env::current_exe().map_err(|source| SpawnError::CurrentExe { role, source })?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    Ok(dir.join(format!("{role}{}", std::env::consts::EXE_SUFFIX)))
}

/// The running children and their supervisors.
pub struct Children {
    trigger: Trigger,
    supervisors: JoinSet<()>,
    sockets: Vec<(String, PathBuf)>,
}

impl Children {
    /// Creates the directories and starts every process. A program that cannot be started at
    /// all (missing, not executable) is an error; the processes already started are stopped.
    pub async fn start(specs: Vec<ProcessSpec>, timings: &Timings) -> Result<Children, SpawnError> {
        let (trigger, shutdown) = shutdown::channel();
        let mut children = Children {
            trigger,
            supervisors: JoinSet::new(),
            sockets: Vec::new(),
        };
        for spec in specs {
            let started = spec
                .dirs
                .iter()
                .try_for_each(|dir| {
                    std::fs::create_dir_all(dir).map_err(|source| SpawnError::Dir {
                        store: spec.store.clone(),
                        path: dir.clone(),
                        source,
                    })
                })
                .and_then(|()| start(&spec));
            match started {
                Ok(child) => {
                    children.sockets.push((label(&spec), spec.socket.clone()));
                    children.supervisors.spawn(supervise(
                        spec,
                        child,
                        shutdown.clone(),
                        timings.clone(),
                    ));
                }
                Err(e) => {
                    children.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(children)
    }

    /// Waits until every child's socket accepts connections, or `timeout` has passed (then
    /// logs which are not ready and goes on: sessions needing them fail and are retried).
    pub async fn wait_ready(&self, timeout: Duration, poll: Duration) {
        if self.sockets.is_empty() {
            return;
        }
        let started = Instant::now();
        let deadline = started + timeout;
        let mut late = 0;
        for (process, socket) in &self.sockets {
            if let Err(reason) = wait_for_socket(socket, deadline, poll).await {
                late += 1;
                warn!(
                    process = %process,
                    socket = %socket.display(),
                    waited = %show(timeout),
                    error = %reason,
                    "spawned process not ready yet; sessions that need it will be retried"
                );
            }
        }
        if late == 0 {
            info!(
                processes = self.sockets.len(),
                ms = started.elapsed().as_millis() as u64,
                "spawned processes are ready"
            );
        }
    }

    /// Tells every supervisor to stop its child (SIGTERM, then SIGKILL after the grace period).
    pub fn begin_stop(&self) {
        if !self.sockets.is_empty() {
            info!(processes = self.sockets.len(), "stopping spawned processes");
        }
        self.trigger.fire();
    }

    /// Stops every child (if [`Children::begin_stop`] has not already) and waits until they are
    /// gone.
    pub async fn stop(mut self) {
        self.trigger.fire();
        while let Some(joined) = self.supervisors.join_next().await {
            if let Err(e) = joined {
                error!(error = %e, "a process supervisor failed");
            }
        }
    }
}

fn label(spec: &ProcessSpec) -> String {
    format!("{} {}", spec.store, spec.role)
}

/// Polls `socket` until it accepts a connection or `deadline` passes; the last error if not.
pub async fn wait_for_socket(
    socket: &Path,
    deadline: Instant,
    poll: Duration,
) -> Result<(), String> {
    loop {
        let last = match tokio::time::timeout_at(deadline, shared::ipc::connect(socket)).await {
            Ok(Ok(_stream)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out connecting".to_string(),
        };
        if Instant::now() + poll > deadline {
            return Err(last);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Checks that every program is there, before anything is created or started.
pub fn check_programs(specs: &[ProcessSpec]) -> Result<(), SpawnError> {
    for spec in specs {
        if let Err(e) = std::fs::metadata(&spec.program) {
            return Err(start_error(spec, e));
        }
    }
    Ok(())
}

fn start_error(spec: &ProcessSpec, source: std::io::Error) -> SpawnError {
    SpawnError::Start {
        store: spec.store.clone(),
        role: spec.role,
        program: spec.program.clone(),
        hint: if source.kind() == std::io::ErrorKind::NotFound {
            format!(
                " (build it with `cargo build -p {}`, or set {}_bin in the store's config)",
                spec.role, spec.role
            )
        } else {
            String::new()
        },
        source,
    }
}

/// Starts one child. Its stdin is a pipe whose write end the returned [`Child`] holds and nothing
/// writes to, and `--supervised` tells it to stop when that pipe reaches its end: when the agent
/// is gone, even by `kill -9`, the kernel closes the pipe and the child stops at a batch boundary
/// (`shared::shutdown::stop`), instead of serving on unsupervised and keeping the next agent's
/// children off its socket.
fn start(spec: &ProcessSpec) -> Result<Child, SpawnError> {
    let child = Command::new(&spec.program)
        .args(&spec.args)
        .arg("--supervised")
        .stdin(Stdio::piped())
        .process_group(0)
        // A safety net only (the future holding the child dropped without a stop): SIGKILL.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| start_error(spec, source))?;
    info!(
        process = %label(spec),
        pid = child.id().unwrap_or(0),
        program = %spec.program.display(),
        socket = %spec.socket.display(),
        "started"
    );
    Ok(child)
}

/// Keeps one child running until shutdown: restarts it with backoff when it exits (the backoff
/// starts over once it has run for a minute), stops it at shutdown.
async fn supervise(spec: ProcessSpec, child: Child, mut shutdown: Shutdown, timings: Timings) {
    let process = label(&spec);
    let mut child = Some(child);
    let mut started = Instant::now();
    let mut attempt = 0u32;
    loop {
        if let Some(mut running) = child.take() {
            // `Child::wait` closes the child's stdin first; held here, the pipe stays open
            // until the child has exited or been stopped (see [`start`]).
            let _stdin = running.stdin.take();
            let status = tokio::select! {
                status = running.wait() => status,
                _ = shutdown.recv() => {
                    terminate(&process, running, timings.stop_grace).await;
                    return;
                }
            };
            let ran = started.elapsed();
            attempt = restart_attempt(attempt, ran);
            let delay = timings.restart.delay(attempt);
            warn!(
                process = %process,
                status = %describe(&status),
                ran = %show(ran),
                restart_in = %show(delay),
                attempt,
                "spawned process exited; restarting it"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.recv() => return,
            }
        }
        match start(&spec) {
            Ok(c) => {
                child = Some(c);
                started = Instant::now();
            }
            Err(e) => {
                attempt = attempt.saturating_add(1);
                let delay = timings.restart.delay(attempt);
                error!(process = %process, error = %e, retry_in = %show(delay), attempt, "cannot restart spawned process");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.recv() => return,
                }
            }
        }
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("cannot wait for it: {e}"),
    }
}

/// SIGTERM (through `kill`, as the workspace allows no `unsafe`), up to `grace` for the child to
/// stop at a batch boundary and remove its socket, then SIGKILL.
async fn terminate(process: &str, mut child: Child, grace: Duration) {
    if let Ok(Some(status)) = child.try_wait() {
        info!(process, status = %status, "spawned process had already exited");
        return;
    }
    let Some(pid) = child.id() else { return };
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Out of the agent's process group, so a signal to that group (Ctrl-C, `timeout`)
        // cannot stop it half way.
        .process_group(0)
        .status()
        .await;
    match sent {
        Ok(s) if s.success() => {}
        Ok(s) => {
            warn!(process, pid, status = %s, "`kill -TERM` failed; the process is killed if it has not stopped after the grace period")
        }
        Err(e) => {
            warn!(process, pid, error = %e, "cannot run `kill -TERM`; the process is killed if it has not stopped after the grace period")
        }
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => info!(process, pid, status = %describe(&status), "stopped spawned process"),
        Err(_) => {
            warn!(process, pid, grace = %show(grace), "spawned process did not stop after SIGTERM; killing it");
            let _ = child.start_kill();
            let status = child.wait().await;
            info!(process, pid, status = %describe(&status), "killed spawned process");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EMBEDDED_ORIGIN;
    use crate::daemon::schedule::Backoff;

    fn timings() -> Timings {
        Timings {
            stop_grace: Duration::from_millis(500),
            restart: Backoff {
                base: Duration::from_millis(20),
                cap: Duration::from_millis(100),
            },
            ..Timings::default()
        }
    }

    fn sh(dir: &Path, script: &str) -> ProcessSpec {
        ProcessSpec {
            store: "s".into(),
            role: "synchronizer",
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            socket: dir.join("never.sock"),
            dirs: vec![dir.join("made/by/start")],
        }
    }

    async fn until_file_has_lines(path: &Path, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= n {
                return text;
            }
            assert!(Instant::now() < deadline, "{}: {text:?}", path.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn specs_name_programs_sockets_and_directories() {
        let text = r#"
            state = "state/agent.db"
            [stores.a]
            synchronizer = "run/a.sync.sock"
            collector = "sockets/a.coll.sock"
            path = "data/a.db"
            spawn = true
            synchronizer_bin = "bin/my-sync"
            [stores.b]
            synchronizer = "run/b.sync.sock"
            collector = "run/b.coll.sock"
            path = "data/b.db"
            [stores.c]
            synchronizer = "/abs/c.sync.sock"
            collector = "/abs/c.coll.sock"
            path = "data/c.db"
            spawn = true
        "#;
        let config = Config::parse(text, EMBEDDED_ORIGIN, Path::new("/base")).expect("config");
        let specs = specs(&config).expect("specs");
        let exe_dir = std::env::current_exe()
            .expect("exe")
            .parent()
            .expect("dir")
            .to_path_buf();
        let spec = |store: &str, role, program: PathBuf, socket: &str, dir: &str| ProcessSpec {
            store: store.into(),
            role,
            program,
            args: vec![
                "--store".into(),
                format!("/base/data/{store}.db").into(),
                "--socket".into(),
                socket.into(),
            ],
            socket: socket.into(),
            dirs: vec![PathBuf::from("/base/data"), PathBuf::from(dir)],
        };
        assert_eq!(
            specs,
            vec![
                spec(
                    "a",
                    "synchronizer",
                    PathBuf::from("/base/bin/my-sync"),
                    "/base/run/a.sync.sock",
                    "/base/run"
                ),
                spec(
                    "a",
                    "collector",
                    exe_dir.join("collector"),
                    "/base/sockets/a.coll.sock",
                    "/base/sockets"
                ),
                spec(
                    "c",
                    "synchronizer",
                    exe_dir.join("synchronizer"),
                    "/abs/c.sync.sock",
                    "/abs"
                ),
                spec(
                    "c",
                    "collector",
                    exe_dir.join("collector"),
                    "/abs/c.coll.sock",
                    "/abs"
                ),
            ]
        );
    }

    #[test]
    fn retention_goes_to_both_daemons_and_the_body_cap_to_the_collector() {
        let text = r#"
            state = "state/agent.db"
            [stores.a]
            synchronizer = "run/a.sync.sock"
            collector = "run/a.coll.sock"
            path = "data/a.db"
            spawn = true
            retention = "7d"
            max_body_bytes = 1048576
        "#;
        let config = Config::parse(text, EMBEDDED_ORIGIN, Path::new("/base")).expect("config");
        let args: Vec<Vec<String>> = specs(&config)
            .expect("specs")
            .iter()
            .map(|s| {
                s.args
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect()
            })
            .collect();
        let tail = |a: &Vec<String>| a[4..].join(" ");
        assert_eq!(tail(&args[0]), "--retention 604800s");
        assert_eq!(
            tail(&args[1]),
            "--retention 604800s --max-body-bytes 1048576"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = sh(dir.path(), "true");
        spec.program = dir.path().join("no-such-synchronizer");
        let err = Children::start(vec![spec], &timings())
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.starts_with("cannot start the synchronizer of store s ("),
            "{err}"
        );
        assert!(err.contains("cargo build -p synchronizer"), "{err}");
        assert!(err.contains("synchronizer_bin"), "{err}");
    }

    #[tokio::test]
    async fn an_exited_child_is_restarted_until_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = dir.path().join("runs");
        let spec = sh(
            dir.path(),
            &format!("echo run >> '{}'; exit 3", runs.display()),
        );
        let children = Children::start(vec![spec], &timings())
            .await
            .expect("start");
        assert!(dir.path().join("made/by/start").is_dir());
        until_file_has_lines(&runs, 4).await;
        tokio::time::timeout(Duration::from_secs(5), children.stop())
            .await
            .expect("stops promptly");
        let after_stop = std::fs::read_to_string(&runs)
            .expect("runs")
            .lines()
            .count();
        // Nothing restarts it after the stop.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            std::fs::read_to_string(&runs)
                .expect("runs")
                .lines()
                .count(),
            after_stop
        );
    }

    #[tokio::test]
    async fn stop_sends_sigterm_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready");
        let term = dir.path().join("term");
        let script = format!(
            "trap 'echo term > \"{}\"; exit 0' TERM; echo up > '{}'; while :; do sleep 0.02; done",
            term.display(),
            ready.display()
        );
        let t = Timings {
            stop_grace: Duration::from_secs(10),
            ..timings()
        };
        let children = Children::start(vec![sh(dir.path(), &script)], &t)
            .await
            .expect("start");
        until_file_has_lines(&ready, 1).await;
        let started = Instant::now();
        children.stop().await;
        // SIGKILL would not have run the trap.
        assert!(term.exists(), "the child's TERM trap ran");
        assert!(
            started.elapsed() < t.stop_grace,
            "it stopped without SIGKILL"
        );
    }

    #[tokio::test]
    async fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready");
        let script = format!(
            "trap '' TERM; echo up > '{}'; while :; do sleep 0.02; done",
            ready.display()
        );
        let t = timings();
        let children = Children::start(vec![sh(dir.path(), &script)], &t)
            .await
            .expect("start");
        until_file_has_lines(&ready, 1).await;
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), children.stop())
            .await
            .expect("killed");
        assert!(started.elapsed() >= t.stop_grace);
    }

    #[tokio::test]
    async fn waiting_for_a_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("d.sock");
        let poll = Duration::from_millis(10);
        let err = wait_for_socket(&socket, Instant::now() + Duration::from_millis(100), poll)
            .await
            .expect_err("nothing listens");
        assert!(err.contains("cannot connect to"), "{err}");

        // A listener bound while the wait is under way is found.
        let bind_at = socket.clone();
        let binder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let listener = shared::ipc::SocketListener::bind(&bind_at)
                .await
                .expect("bind");
            // Keep it open long enough to be found.
            let _ = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        });
        wait_for_socket(&socket, Instant::now() + Duration::from_secs(5), poll)
            .await
            .expect("ready");
        binder.await.expect("binder");
    }
}
