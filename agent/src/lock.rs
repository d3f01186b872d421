//! The locks that keep sessions apart, held where every agent sees them.
//!
//! Seed 000 allows several agents per information store ("more than one agent may also exist for
//! the same information store"), each with its own config and state file. Two sessions between
//! the same two stores must still never run at once, whoever starts them: `agent run`, an
//! `agent sync` typed in a shell, or another agent with another state file. So the
//! [`PairLock`] is not kept beside an agent's state file but beside the stores: it is keyed by
//! the two stores' identities and lives next to one of their collector sockets, a place every
//! agent that talks to those stores already knows.
//!
//! A store's identity is the canonical path of its collector socket. Every agent that imports
//! into a store must name that socket; one collector serves one store; and two daemons never
//! serve one socket path. (The store file's `path` is no identity: an agent that does not spawn
//! the store's processes need not know it.)
//!
//! The [`DaemonLock`] says that an `agent run` is using a state file, so that two daemons never
//! schedule from one state file and `agent status` can tell whether the next run it shows is
//! planned by a running daemon.
//!
//! Both are the kernel's `flock`s on open files: a killed agent never leaves one behind.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::config::{Config, StoreConfig};
use crate::session::AgentError;

/// The directory, beside the collector socket of the pair's first store, that holds pair locks.
pub const LOCK_DIR: &str = "icsync-locks";

/// The lock that keeps one pair of stores to one session at a time.
#[derive(Debug)]
pub struct PairLock {
    _file: File,
    path: PathBuf,
}

impl PairLock {
    /// The lock file of the stores of `partnership`: `<dir of the first collector
    /// socket>/icsync-locks/pair-<hash>.lock`, where "first" and the hash come from the two
    /// stores' identities in sorted order, so every agent finds the same file whichever way its
    /// partnership points.
    pub fn path(config: &Config, partnership: &str) -> Result<PathBuf, AgentError> {
        let p = config.partnership(partnership).map_err(Box::new)?;
        let (Some(source), Some(destination)) =
            (config.store(&p.source), config.store(&p.destination))
        else {
            // The config is validated, so its partnerships name its stores.
            return Err(AgentError::Startup(format!(
                "partnership {partnership} names a store the config does not have"
            )));
        };
        let mut ids = [identity(source), identity(destination)];
        ids.sort();
        let dir = ids[0]
            .parent()
            .map(|d| d.join(LOCK_DIR))
            .unwrap_or_else(|| PathBuf::from(LOCK_DIR));
        let key = format!("{}\n{}", ids[0].display(), ids[1].display());
        Ok(dir.join(format!("pair-{:016x}.lock", fnv1a(key.as_bytes()))))
    }

    /// Takes the lock of `partnership`'s stores, or says the partnership is busy (naming who
    /// holds it when the holder wrote that down).
    pub fn try_take(config: &Config, partnership: &str) -> Result<PairLock, AgentError> {
        let path = PairLock::path(config, partnership)?;
        let note = format!(
            "partnership {partnership} of agent pid {} ({})",
            std::process::id(),
            config.origin
        );
        match try_flock(&path, &note)? {
            Ok(file) => Ok(PairLock { _file: file, path }),
            Err(holder) => Err(AgentError::Busy {
                partnership: partnership.to_string(),
                holder,
            }),
        }
    }

    pub fn file(&self) -> &Path {
        &self.path
    }

    /// Whether the agent that last took `partnership`'s pair lock is gone: the note it left in
    /// the lock file names its pid, and no process has that pid now. `None` when that cannot be
    /// told (no lock file or note, no `/proc`). Read without taking the lock, so asking never
    /// makes a session that starts at that moment find its stores busy.
    pub fn holder_gone(config: &Config, partnership: &str) -> Option<bool> {
        let note = std::fs::read_to_string(PairLock::path(config, partnership).ok()?).ok()?;
        let pid: u32 = note
            .split("agent pid ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        if !Path::new("/proc/self").exists() {
            return None;
        }
        Some(!Path::new(&format!("/proc/{pid}")).exists())
    }
}

/// The lock an `agent run` holds on its state file for as long as it runs.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    /// `<state file>.run.lock`.
    pub fn path(config: &Config) -> PathBuf {
        let mut name = config.state.file_name().unwrap_or_default().to_os_string();
        name.push(".run.lock");
        config.state.with_file_name(name)
    }

    /// Takes it, or says which daemon already runs from this state file.
    pub fn try_take(config: &Config) -> Result<DaemonLock, AgentError> {
        let note = format!("agent run pid {}", std::process::id());
        match try_flock(&DaemonLock::path(config), &note)? {
            Ok(file) => Ok(DaemonLock { _file: file }),
            Err(holder) => Err(AgentError::Startup(format!(
                "another agent run ({holder}) is already using the state file {}",
                config.state.display()
            ))),
        }
    }

    /// Whether an `agent run` holds the lock now. Probed with a shared lock released at once;
    /// a missing file means no daemon ever ran here.
    pub fn is_held(config: &Config) -> bool {
        let Ok(file) = File::open(DaemonLock::path(config)) else {
            return false;
        };
        matches!(
            file.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        )
    }
}

/// Takes an exclusive `flock` on `path` (created if need be) without waiting and writes `note`
/// into it for whoever finds it taken; or returns what its holder wrote.
fn try_flock(path: &Path, note: &str) -> Result<Result<File, String>, AgentError> {
    let mut file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => {
            // Advisory only: a lock whose note cannot be written still holds.
            let _ = file
                .set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| writeln!(file, "{note}"));
            Ok(Ok(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Ok(Err(holder.trim().to_string()))
        }
        Err(std::fs::TryLockError::Error(source)) => Err(AgentError::Lock {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn open_lock_file(path: &Path) -> Result<File, AgentError> {
    let lock_err = |source| AgentError::Lock {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(lock_err)?;
    }
    File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(lock_err)
}

/// A store's identity for locking: its collector socket's canonical path.
fn identity(store: &StoreConfig) -> PathBuf {
    canonical(&store.collector)
}

/// `path` with its nearest existing ancestor resolved (symlinks, `..`), the rest as written:
/// a socket need not exist yet to be named the same way by every agent.
fn canonical(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(mut resolved) = at.canonicalize() {
            resolved.extend(rest.iter().rev());
            return resolved;
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// FNV-1a, 64 bits: a stable name for a pair (std's hasher may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, state: &str, partnerships: &[(&str, &str, &str)]) -> Config {
        let mut text = format!(
            "state = \"{state}\"\n[stores.a]\nsynchronizer = \"run/a.sync.sock\"\ncollector = \"run/a.coll.sock\"\n\
             [stores.b]\nsynchronizer = \"run/b.sync.sock\"\ncollector = \"run/b.coll.sock\"\n\
             [stores.c]\nsynchronizer = \"run/c.sync.sock\"\ncollector = \"other/c.coll.sock\"\n"
        );
        for (name, source, destination) in partnerships {
            text.push_str(&format!(
                "[[partnerships]]\nname = \"{name}\"\nsource = \"{source}\"\ndestination = \"{destination}\"\nevery = \"5m\"\n"
            ));
        }
        Config::parse(&text, "test.toml", dir).expect("config")
    }

    #[test]
    fn two_agents_with_their_own_state_files_share_the_lock_of_a_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = config(dir.path(), "one/agent.db", &[("ab", "a", "b")]);
        // The same stores, reached through a symlinked directory, the other way round.
        std::fs::create_dir_all(dir.path().join("run")).expect("run");
        std::os::unix::fs::symlink(dir.path().join("run"), dir.path().join("alias"))
            .expect("symlink");
        let text = "state = \"two/agent.db\"\n[stores.x]\nsynchronizer = \"alias/b.sync.sock\"\ncollector = \"alias/b.coll.sock\"\n\
                    [stores.y]\nsynchronizer = \"alias/a.sync.sock\"\ncollector = \"./run/../alias/a.coll.sock\"\n\
                    [[partnerships]]\nname = \"back\"\nsource = \"x\"\ndestination = \"y\"\ndirection = \"one-way\"\nevery = \"1m\"\n";
        let second = Config::parse(text, "two.toml", dir.path()).expect("config");

        let path = PairLock::path(&first, "ab").expect("path");
        assert_eq!(PairLock::path(&second, "back").expect("path"), path);
        assert_eq!(
            path.parent().and_then(Path::file_name),
            Some(LOCK_DIR.as_ref())
        );

        let held = PairLock::try_take(&first, "ab").expect("free");
        assert_eq!(held.file(), path);
        match PairLock::try_take(&second, "back") {
            Err(AgentError::Busy {
                partnership,
                holder,
            }) => {
                assert_eq!(partnership, "back");
                assert_eq!(
                    holder,
                    format!(
                        "partnership ab of agent pid {} (test.toml)",
                        std::process::id()
                    )
                );
            }
            other => panic!("expected busy, got {other:?}"),
        }
        drop(held);
        PairLock::try_take(&second, "back").expect("free again");
    }

    #[test]
    fn other_pairs_are_not_held_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(
            dir.path(),
            "agent.db",
            &[("ab", "a", "b"), ("ac", "a", "c"), ("cb", "c", "b")],
        );
        let _ab = PairLock::try_take(&c, "ab").expect("ab");
        let ac = PairLock::try_take(&c, "ac").expect("ac");
        let _cb = PairLock::try_take(&c, "cb").expect("cb");
        // c's collector socket (other/...) sorts before a's (run/...): the lock of a and c is
        // beside c's.
        let base = dir.path().canonicalize().expect("dir");
        assert_eq!(
            ac.file().parent(),
            Some(base.join("other").join(LOCK_DIR).as_path())
        );
        assert_ne!(ac.file(), PairLock::path(&c, "ab").expect("ab"));
    }

    #[test]
    fn one_daemon_per_state_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "state/agent.db", &[]);
        assert!(!DaemonLock::is_held(&c));
        let held = DaemonLock::try_take(&c).expect("first");
        assert!(DaemonLock::is_held(&c));
        let err = DaemonLock::try_take(&c).expect_err("second").to_string();
        assert!(
            err.contains("another agent run (agent run pid") && err.contains("state/agent.db"),
            "{err}"
        );
        drop(held);
        assert!(!DaemonLock::is_held(&c));
        assert!(dir.path().join("state/agent.db.run.lock").exists());
    }
}
