//! The real binaries: the synchronizer and collector started as daemons on a store each, and
//! `agent sync` run and timed end to end. Memory and CPU come from /proc.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a daemon may take to answer on its socket, and to exit after SIGTERM.
const DEADLINE: Duration = Duration::from_secs(30);
/// The partnership the benchmark's agent config names.
pub const PARTNERSHIP: &str = "bench";
/// GNU time, used to read the agent's peak RSS when it is installed.
const GNU_TIME: &str = "/usr/bin/time";

/// Where the three programs are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if !path.is_file() {
            bail!(
                "{} is missing: build it with `cargo build --release` (bench/run does) or pass --bin-dir",
                path.display()
            );
        }
        Ok(path)
    }
}

/// A daemon the benchmark started; SIGTERM'd and waited for on `stop`, killed if dropped.
pub struct Daemon {
    name: &'static str,
    child: Child,
}

impl Daemon {
    /// Starts `program --store STORE --socket SOCKET`, logging to DIR/NAME.log, and waits until
    /// the socket answers.
    pub fn start(
        bins: &Binaries,
        name: &'static str,
        store: &Path,
        socket: &Path,
        dir: &Path,
    ) -> Result<Daemon> {
        let log = &dir.join(format!("{name}.log"));
        let log_file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(bins.path(name)?)
            .arg("--store")
            .arg(store)
            .arg("--socket")
            .arg(socket)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let mut daemon = Daemon { name, child };
        let start = Instant::now();
        // A connection closed before `hello` is a readiness probe the daemon ignores quietly.
        while UnixStream::connect(socket).is_err() {
            if let Some(status) = daemon.child.try_wait()? {
                bail!(
                    "{name} exited with {status} before serving; see {}",
                    log.display()
                );
            }
            if start.elapsed() > DEADLINE {
                bail!(
                    "{name} did not answer on {} within {DEADLINE:?}",
                    socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .with_context(|| format!("no VmHWM in /proc/{}/status", self.pid()))
    }

    /// User plus system CPU time used so far.
    pub fn cpu(&self) -> Result<Duration> {
        cpu_of(self.pid())
    }

    /// SIGTERM, then wait for the exit (a clean stop: the socket is removed, the WAL checkpointed).
    pub fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("cannot run kill")?;
        let start = Instant::now();
        while self.child.try_wait()?.is_none() {
            if start.elapsed() > DEADLINE {
                bail!("{} did not stop within {DEADLINE:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time (user + system) of a running process, from /proc/PID/stat (in USER_HZ = 1/100 s).
fn cpu_of(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `fields[0]` is field 3.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Duration::from_millis((ticks(11) + ticks(12)) * 10))
}

/// One `agent sync` as the operator runs it.
#[derive(Clone, Debug)]
pub struct AgentRun {
    /// From spawning the agent to its exit.
    pub wall: Duration,
    /// The session as the agent recorded it (started_at .. ended_at), if available.
    pub session: Option<Duration>,
    /// Items the synchronizer sent, as the agent recorded them.
    pub sent: i64,
    /// Peak RSS of the agent process, when GNU time is installed.
    pub peak_rss: Option<u64>,
}

/// The agent with the benchmark's config.
pub struct Agent {
    pub bins: Binaries,
    pub config: PathBuf,
    pub dir: PathBuf,
}

/// Changes per batch in the benchmark's partnership: the default of PRODUCT.md's config.
pub const BATCH: usize = 1000;

impl Agent {
    /// Writes the config: two stores whose daemons the benchmark started, one one-way
    /// partnership from `source` to `destination`.
    pub fn write_config(bins: Binaries, dir: &Path, sockets: &Sockets) -> Result<Agent> {
        let config = dir.join("agent.toml");
        let text = format!(
            "state = \"state/agent.db\"\n\n\
             [stores.source]\nsynchronizer = {:?}\ncollector = {:?}\n\n\
             [stores.destination]\nsynchronizer = {:?}\ncollector = {:?}\n\n\
             [[partnerships]]\nname = \"{PARTNERSHIP}\"\nsource = \"source\"\ndestination = \"destination\"\n\
             direction = \"one-way\"\nevery = \"1h\"\nconflicts = \"newer-wins\"\nbatch = {BATCH}\n",
            sockets.source_sync.display().to_string(),
            sockets.source_coll.display().to_string(),
            sockets.dest_sync.display().to_string(),
            sockets.dest_coll.display().to_string(),
        );
        std::fs::write(&config, text)
            .with_context(|| format!("cannot write {}", config.display()))?;
        Ok(Agent {
            bins,
            config,
            dir: dir.to_path_buf(),
        })
    }

    /// Runs `agent sync bench`, timed from spawn to exit; with `measure_rss`, under GNU time.
    pub fn sync(&self, measure_rss: bool) -> Result<AgentRun> {
        let agent = self.bins.path("agent")?;
        let log = self.dir.join("agent.log");
        let rss_file = self.dir.join("agent.rss");
        let log_file = File::options().create(true).append(true).open(&log)?;
        let under_time = measure_rss && Path::new(GNU_TIME).is_file();
        let mut cmd = if under_time {
            let mut c = Command::new(GNU_TIME);
            c.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(&agent);
            c
        } else {
            Command::new(&agent)
        };
        cmd.arg("--config")
            .arg(&self.config)
            .args(["sync", PARTNERSHIP])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let start = Instant::now();
        let status = cmd.status().context("cannot run the agent")?;
        let wall = start.elapsed();
        if !status.success() {
            bail!("agent sync failed ({status}); see {}", log.display());
        }
        let peak_rss = if under_time {
            std::fs::read_to_string(&rss_file)
                .ok()
                .and_then(|s| s.lines().last().and_then(|l| l.trim().parse::<u64>().ok()))
                .map(|kb| kb * 1024)
        } else {
            None
        };
        let (session, sent) = self.last_session()?;
        Ok(AgentRun {
            wall,
            session,
            sent,
            peak_rss,
        })
    }

    /// The newest session of the partnership, from `agent history --json`.
    fn last_session(&self) -> Result<(Option<Duration>, i64)> {
        let out = Command::new(self.bins.path("agent")?)
            .arg("--config")
            .arg(&self.config)
            .args(["history", PARTNERSHIP, "--limit", "1", "--json"])
            .output()
            .context("cannot run agent history")?;
        if !out.status.success() {
            bail!(
                "agent history failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let sessions: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("agent history --json")?;
        let newest = &sessions[0];
        let session = match (newest["started_at"].as_i64(), newest["ended_at"].as_i64()) {
            (Some(a), Some(b)) if b >= a => Some(Duration::from_millis((b - a) as u64)),
            _ => None,
        };
        Ok((session, newest["sent"].as_i64().unwrap_or(0)))
    }
}

/// The four socket paths of the benchmark's two stores.
pub struct Sockets {
    pub source_sync: PathBuf,
    pub source_coll: PathBuf,
    pub dest_sync: PathBuf,
    pub dest_coll: PathBuf,
}

impl Sockets {
    pub fn in_dir(dir: &Path) -> Sockets {
        Sockets {
            source_sync: dir.join("source.sync.sock"),
            source_coll: dir.join("source.coll.sock"),
            dest_sync: dir.join("destination.sync.sock"),
            dest_coll: dir.join("destination.coll.sock"),
        }
    }
}
