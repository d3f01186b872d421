//! One session of a partnership, run by the agent: for each direction, ask the source's
//! synchronizer to sync into the destination's collector, record the destination knowledge it
//! acknowledges after every batch, and record the session's result (seed 000: the agent
//! "schedules and configures synchronization" and keeps the synchronization state).
//!
//! Two sessions between the same stores never run at once: a session holds the stores'
//! [`PairLock`] for its whole length, where every agent sees it (see `lock.rs`).

use std::path::PathBuf;

use shared::error::SessionError;
use shared::ipc;
use shared::protocol::{
    say_hello, Completed, Connection, Message, Progress, ProtocolError, Role, SyncRequest,
};
use shared::shutdown::Shutdown;
use shared::store::ConflictRule;
use tracing::{info, instrument};

use crate::config::{Config, ConflictPolicy, Direction, Partnership};
use crate::lock::PairLock;
use crate::state::{State, StateError};
use shared::scope::Scope;

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
    #[error(
        "{partnership}: a session between its stores is already running{}",
        held_by(holder)
    )]
    Busy { partnership: String, holder: String },
    #[error("agent run cannot start: {0}")]
    Startup(String),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn held_by(holder: &str) -> String {
    if holder.is_empty() {
        String::new()
    } else {
        format!(" ({holder})")
    }
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
    /// What the destination receives, if not everything (`folders`, `bodies`): the source to
    /// destination leg only. The destination's own changes all travel back: it is the filtered
    /// store, and the source keeps everything.
    pub scope: Option<Scope>,
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
    let scope = Scope {
        folders: p.folders.clone(),
        bodies: p.bodies,
    };
    let mut legs = vec![Leg {
        source: p.source.clone(),
        destination: p.destination.clone(),
        rule: rule(true),
        scope: (!scope.is_everything()).then_some(scope),
    }];
    if p.direction == Direction::Both {
        legs.push(Leg {
            source: p.destination.clone(),
            destination: p.source.clone(),
            rule: rule(false),
            scope: None,
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

/// Runs one session of `name` now, taking the lock of its stores for its length (`Busy` if
/// another session holds it): every direction in order. Stops at the first direction that
/// fails, or at the next batch boundary once `stop` fires. Returns each direction's completion.
pub async fn sync_partnership(
    config: &Config,
    name: &str,
    stop: Option<&Shutdown>,
    listen: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<(Leg, Completed)>, AgentError> {
    let lock = PairLock::try_take(config, name)?;
    sync_locked(config, name, &lock, stop, listen).await
}

/// [`sync_partnership`] for a caller that already holds the stores' lock. Once `stop` fires the
/// session ends at the next batch boundary (an acknowledged batch), and no further direction
/// starts.
#[instrument(skip(config, _lock, stop, listen), err(level = "debug"))]
pub async fn sync_locked(
    config: &Config,
    name: &str,
    _lock: &PairLock,
    stop: Option<&Shutdown>,
    listen: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<(Leg, Completed)>, AgentError> {
    let partnership = config.partnership(name).map_err(Box::new)?.clone();
    let state = State::open(&config.state)?;
    let mut done = Vec::new();
    for leg in legs(&partnership) {
        if stop.is_some_and(Shutdown::is_shutdown) {
            return Err(AgentError::Session {
                partnership: partnership.name.clone(),
                direction: leg.name(),
                source: Box::new(SessionError::Stopped(STOPPED.into())),
            });
        }
        listen(Event::Started { leg: &leg });
        let completed = run_leg(config, &partnership, &leg, &state, stop, listen).await?;
        listen(Event::Completed {
            leg: &leg,
            completed: &completed,
        });
        done.push((leg, completed));
    }
    Ok(done)
}

/// Why a session the agent stopped itself ended.
const STOPPED: &str =
    "stopped at a batch boundary: the agent was told to stop (SIGTERM or Ctrl-C); the next session resumes from there";

/// One direction: recorded as one session, and logged in one line at its start and one at its
/// end (partnership, direction, counts, conflicts, duration).
async fn run_leg(
    config: &Config,
    partnership: &Partnership,
    leg: &Leg,
    state: &State,
    stop: Option<&Shutdown>,
    listen: &mut dyn FnMut(Event<'_>),
) -> Result<Completed, AgentError> {
    let direction = leg.name();
    let session = state.begin_session(&partnership.name, &direction)?;
    info!(partnership = %partnership.name, direction = %direction, session, "session started");
    let started = std::time::Instant::now();
    let result = drive(config, partnership, leg, state, session, stop, listen).await;
    match &result {
        Ok(c) => {
            state.end_session(session, "completed", None, Some(&c.stats))?;
            state.record_item_errors(&partnership.name, &direction, &c.errors)?;
            state.record_conflicts(
                &partnership.name,
                &leg.source,
                &leg.destination,
                &c.conflicts,
            )?;
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
    let duration_ms = started.elapsed().as_millis() as u64;
    let counts = state.session(session)?;
    let count = |f: fn(&crate::state::SessionRecord) -> i64| counts.as_ref().map_or(0, f);
    info!(
        partnership = %partnership.name,
        direction = %direction,
        session,
        result = if result.is_ok() { "completed" } else { "failed" },
        batches = count(|s| s.batches),
        sent = count(|s| s.sent),
        applied = count(|s| s.applied),
        conflicts = count(|s| s.conflicts),
        errors = count(|s| s.errors),
        duration_ms,
        error = result.as_ref().err().map(tracing::field::display),
        "session ended"
    );
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
    stop: Option<&Shutdown>,
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
        resolutions: state
            .resolutions(&partnership.name)
            .map_err(LegError::State)?,
        scope: leg.scope.clone(),
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
                if stop.is_some_and(Shutdown::is_shutdown) {
                    // Dropping the connection tells the synchronizer; what the destination
                    // committed is in its knowledge, so the next session resumes from there.
                    return Err(LegError::Session(SessionError::Stopped(STOPPED.into())));
                }
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
