//! One session of a partnership, run by the agent: for each direction, ask the source's
//! synchronizer to sync into the destination's collector, record the destination knowledge it
//! acknowledges after every batch, and record the session's result (seed 000: the agent
//! "schedules and configures synchronization" and keeps the synchronization state).
//!
//! A partnership never runs two sessions at once: a session holds an exclusive lock on a file
//! beside the state file for its whole length. The lock is the kernel's (`flock`), so a killed
//! agent never leaves it behind.

use std::fs::File;
use std::path::PathBuf;

use shared::error::SessionError;
use shared::ipc;
use shared::protocol::{
    say_hello, Completed, Connection, Message, Progress, ProtocolError, Role, SyncRequest,
};
use shared::store::ConflictRule;
use tracing::{info, instrument};

use crate::config::{Config, ConflictPolicy, Direction, Partnership};
use crate::state::{State, StateError};

/// Why a session did not complete.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] Box<crate::config::ConfigError>),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{partnership} ({direction}): {source}")]
    Session {
        partnership: String,
        direction: String,
        #[source]
        source: Box<SessionError>,
    },
    #[error("{partnership} ({direction}): {reason}")]
    Failed {
        partnership: String,
        direction: String,
        reason: String,
        retryable: bool,
    },
    #[error("{partnership}: a session of this partnership is already running")]
    Busy { partnership: String },
    #[error("agent run cannot start: {0}")]
    Startup(String),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// Whether trying again later may succeed by itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            AgentError::Session { source, .. } => source.is_retryable(),
            AgentError::Failed { retryable, .. } => *retryable,
            AgentError::Busy { .. } => true,
            _ => false,
        }
    }
}

/// One direction of a partnership: which store exports, which imports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    pub source: String,
    pub destination: String,
    pub rule: ConflictRule,
}

impl Leg {
    /// The direction's name in records and output: `source->destination`.
    pub fn name(&self) -> String {
        format!("{}->{}", self.source, self.destination)
    }
}

/// The directions a session runs, in order: source to destination, then back for `both`. The
/// partnership's policy names its stores; each leg states it from the importing side.
pub fn legs(p: &Partnership) -> Vec<Leg> {
    let rule = |importer_is_destination: bool| match p.conflicts {
        ConflictPolicy::SourceWins if importer_is_destination => ConflictRule::IncomingWins,
        ConflictPolicy::SourceWins => ConflictRule::LocalWins,
        ConflictPolicy::DestinationWins if importer_is_destination => ConflictRule::LocalWins,
        ConflictPolicy::DestinationWins => ConflictRule::IncomingWins,
        ConflictPolicy::NewerWins => ConflictRule::NewerWins,
        ConflictPolicy::Merge => ConflictRule::Merge,
        ConflictPolicy::Defer => ConflictRule::Defer,
    };
    let mut legs = vec![Leg {
        source: p.source.clone(),
        destination: p.destination.clone(),
        rule: rule(true),
    }];
    if p.direction == Direction::Both {
        legs.push(Leg {
            source: p.destination.clone(),
            destination: p.source.clone(),
            rule: rule(false),
        });
    }
    legs
}

/// What a listener hears while a session runs.
pub enum Event<'a> {
    Started {
        leg: &'a Leg,
    },
    Progress {
        leg: &'a Leg,
        progress: &'a Progress,
    },
    Completed {
        leg: &'a Leg,
        completed: &'a Completed,
    },
}

/// The lock that keeps one partnership to one session at a time.
pub struct PartnershipLock {
    _file: File,
}

impl PartnershipLock {
    /// Takes the lock or says the partnership is busy.
    pub fn try_take(config: &Config, partnership: &str) -> Result<PartnershipLock, AgentError> {
        let dir = config
            .state
            .parent()
            .map(|d| d.join("locks"))
            .unwrap_or_else(|| PathBuf::from("locks"));
        let path = dir.join(format!("{partnership}.lock"));
        let lock_err = |source| AgentError::Lock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(lock_err)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        match file.try_lock() {
            Ok(()) => Ok(PartnershipLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(AgentError::Busy {
                partnership: partnership.to_string(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(lock_err(e)),
        }
    }
}

/// Runs one session of `name` now, taking the partnership's lock for its length (`Busy` if
/// another session holds it): every direction in order. Stops at the first direction that
/// fails. Returns each direction's completion.
pub async fn sync_partnership(
    config: &Config,
    name: &str,
    listen: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<(Leg, Completed)>, AgentError> {
    let lock = PartnershipLock::try_take(config, name)?;
    sync_locked(config, name, &lock, listen).await
}

/// [`sync_partnership`] for a caller that already holds the partnership's lock.
#[instrument(skip(config, _lock, listen), err(level = "debug"))]
pub async fn sync_locked(
    config: &Config,
    name: &str,
    _lock: &PartnershipLock,
    listen: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<(Leg, Completed)>, AgentError> {
    let partnership = config.partnership(name).map_err(Box::new)?.clone();
    let state = State::open(&config.state)?;
    let mut done = Vec::new();
    for leg in legs(&partnership) {
        listen(Event::Started { leg: &leg });
        let started = std::time::Instant::now();
        let completed = run_leg(config, &partnership, &leg, &state, listen).await?;
        info!(
            partnership = name,
            direction = %leg.name(),
            sent = completed.stats.sent,
            applied = completed.stats.applied,
            conflicts = completed.stats.conflicts,
            errors = completed.stats.errors,
            ms = started.elapsed().as_millis() as u64,
            "session completed"
        );
        listen(Event::Completed {
            leg: &leg,
            completed: &completed,
        });
        done.push((leg, completed));
    }
    Ok(done)
}

async fn run_leg(
    config: &Config,
    partnership: &Partnership,
    leg: &Leg,
    state: &State,
    listen: &mut dyn FnMut(Event<'_>),
) -> Result<Completed, AgentError> {
    let direction = leg.name();
    let session = state.begin_session(&partnership.name, &direction)?;
    let result = drive(config, partnership, leg, state, session, listen).await;
    match &result {
        Ok(c) => {
            state.end_session(session, "completed", None, Some(&c.stats))?;
            state.record_item_errors(&partnership.name, &direction, &c.errors)?;
        }
        Err(e) => {
            let reason = e.to_string();
            let stats = match e {
                LegError::Failed(f) => Some(&f.stats),
                _ => None,
            };
            state.end_session(session, "failed", Some(&reason), stats)?;
        }
    }
    result.map_err(|e| match e {
        LegError::Session(source) => AgentError::Session {
            partnership: partnership.name.clone(),
            direction,
            source: Box::new(source),
        },
        LegError::Failed(f) => AgentError::Failed {
            partnership: partnership.name.clone(),
            direction,
            reason: f.reason,
            retryable: f.retryable,
        },
        LegError::State(e) => AgentError::State(e),
    })
}

enum LegError {
    Session(SessionError),
    Failed(shared::protocol::Failed),
    State(StateError),
}

impl std::fmt::Display for LegError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LegError::Session(e) => write!(f, "{e}"),
            LegError::Failed(e) => write!(f, "{}", e.reason),
            LegError::State(e) => write!(f, "{e}"),
        }
    }
}

impl<E: Into<SessionError>> From<E> for LegError {
    fn from(e: E) -> Self {
        LegError::Session(e.into())
    }
}

async fn drive(
    config: &Config,
    partnership: &Partnership,
    leg: &Leg,
    state: &State,
    session: i64,
    listen: &mut dyn FnMut(Event<'_>),
) -> Result<Completed, LegError> {
    let (Some(source), Some(destination)) =
        (config.store(&leg.source), config.store(&leg.destination))
    else {
        return Err(LegError::Session(SessionError::Refused(format!(
            "partnership names a store the config does not have ({} or {})",
            leg.source, leg.destination
        ))));
    };
    let direction = leg.name();
    let mut conn = Connection::new(ipc::connect(&source.synchronizer).await?);
    let welcome = say_hello(&mut conn, Role::Agent, Role::Synchronizer).await?;
    state
        .record_replica(&leg.source, &welcome.replica)
        .map_err(LegError::State)?;
    let recorded = state
        .knowledge(&partnership.name, &direction)
        .map_err(LegError::State)?;
    conn.send(&Message::SyncRequest(SyncRequest {
        partnership: partnership.name.clone(),
        collector: destination.collector.clone(),
        state: recorded,
        batch: partnership.batch,
        rule: leg.rule,
        resolutions: Vec::new(),
    }))
    .await?;
    loop {
        match conn.recv().await? {
            Some(Message::Progress(progress)) => {
                state
                    .record_progress(session, &partnership.name, &direction, &progress)
                    .map_err(LegError::State)?;
                shared::failpoint::hit("agent-after-progress");
                listen(Event::Progress {
                    leg,
                    progress: &progress,
                });
            }
            Some(Message::Completed(completed)) => return Ok(completed),
            Some(Message::Failed(failed)) => return Err(LegError::Failed(failed)),
            Some(Message::Error(e)) => {
                return Err(ProtocolError::Remote {
                    message: e.message,
                    retryable: e.retryable,
                }
                .into())
            }
            Some(other) => {
                return Err(ProtocolError::Unexpected {
                    expected: "progress or completed",
                    got: other.name(),
                }
                .into())
            }
            None => {
                return Err(ProtocolError::Closed {
                    waiting_for: "the session's completion",
                }
                .into())
            }
        }
    }
}
