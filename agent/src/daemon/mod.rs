//! `agent run`: the daemon. It starts the synchronizer and collector of every store with
//! `spawn = true` (and keeps them running), runs every partnership's sessions on its schedule,
//! retries failed sessions with backoff, and stops in order on SIGTERM/SIGINT.
//!
//! - `schedule`: the timing rules as pure functions (backoff, jitter, cron in local time).
//! - `scheduler`: the slots, sessions, retries and reloads; the plans it writes for `agent status`.
//! - `signals`: SIGTERM/SIGINT stop, SIGHUP reloads.
//! - `spawn`: the spawned processes and their supervision.
//! - `demo`: filling the embedded demo's laptop store on its first run.
//!
//! Scheduling rules:
//!
//! * An `every` partnership's first session runs right after start-up (once the spawned
//!   processes answer), then `every` after the previous session *ended*. A `cron` partnership
//!   runs at each occurrence of its expression, in local time.
//! * At most `max_sessions` sessions run at once; two sessions between the same stores never
//!   run at once (the pair lock, see `lock.rs`: a pair locked elsewhere, by `agent sync` or
//!   another agent, is skipped until its next run).
//! * A session that fails in a way that may pass by itself (a daemon unreachable, a session
//!   stopped) is retried after 1 s, 2 s, 4 s ... at most 5 minutes (±25% jitter), or at its next
//!   scheduled run if that comes first; a success resets the count. Any other failure waits for
//!   the next scheduled run.
//!
//! * SIGHUP reads the config again: partnerships added are scheduled as at start-up, removed
//!   ones are no longer run (a running session ends normally), one whose schedule changed is
//!   scheduled again as at start-up, other changes apply from its next session, and
//!   `max_sessions` applies to sessions started from then on. A config that does not load, or
//!   that changes the state file or the spawned processes (which need a restart), is logged with
//!   its error and the running config kept.
//! * SIGTERM/SIGINT: no new sessions; running ones end at their next batch boundary (at most
//!   30 s); the spawned processes are stopped; exit 0. Only one `agent run` uses a state file
//!   at a time (`DaemonLock`), and what it plans is written there for `agent status`.
//!
//! Sessions run on one thread (a `LocalSet`): a session's state file is a SQLite connection,
//! and all the heavy work happens in the synchronizer and collector processes.

pub mod demo;
pub mod schedule;
mod scheduler;
pub mod signals;
pub mod spawn;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::LocalSet;
use tracing::info;

use crate::config::{Config, ConfigError, EMBEDDED_ORIGIN};
use crate::lock::DaemonLock;
use crate::session::AgentError;
use crate::state::State;
use schedule::Backoff;
use scheduler::Scheduler;

/// The daemon's waits, in one place so tests can shorten them.
#[derive(Clone, Debug)]
pub struct Timings {
    /// How long start-up waits for the spawned processes' sockets to answer.
    pub ready_timeout: Duration,
    /// How often it tries them meanwhile.
    pub ready_poll: Duration,
    /// How long a spawned process has after SIGTERM before it is killed.
    pub stop_grace: Duration,
    /// How long shutdown waits for running sessions before dropping them.
    pub drain: Duration,
    /// Restarting a spawned process that exited.
    pub restart: Backoff,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            ready_timeout: Duration::from_secs(10),
            ready_poll: Duration::from_millis(25),
            stop_grace: Duration::from_secs(5),
            drain: Duration::from_secs(30),
            restart: Backoff::RESTART,
        }
    }
}

/// Where a new config comes from when a reload is asked for.
pub struct Reload {
    /// Receives one message per reload asked for (SIGHUP).
    pub asked: mpsc::UnboundedReceiver<()>,
    /// Reads the config again.
    pub load: Box<dyn Fn() -> Result<Config, ConfigError>>,
}

impl Reload {
    /// No reloads.
    pub fn never() -> Reload {
        let (_, asked) = mpsc::unbounded_channel();
        Reload {
            asked,
            // Never called: nothing can ask.
            load: Box::new(|| Config::load(std::path::Path::new(""))),
        }
    }
}

/// `agent run`: runs until SIGTERM or SIGINT; SIGHUP reads the config again with `load`.
pub async fn run(
    config: Config,
    load: impl Fn() -> Result<Config, ConfigError> + 'static,
) -> Result<(), AgentError> {
    // The handlers are installed before anything starts, so no signal finds the default action.
    let signals = signals::Signals::install().map_err(daemon_error)?;
    let (stop, asked) = signals.split();
    let reload = Reload {
        asked,
        load: Box::new(load),
    };
    run_with(config, stop, reload, Timings::default()).await
}

/// Runs the daemon until `stop` resolves, then stops scheduling, lets running sessions end at a
/// batch boundary (at most `timings.drain`), stops the spawned processes and returns.
pub async fn run_with(
    config: Config,
    stop: impl Future<Output = ()>,
    reload: Reload,
    timings: Timings,
) -> Result<(), AgentError> {
    LocalSet::new()
        .run_until(daemon(config, stop, reload, timings))
        .await
}

/// The daemon could not start.
fn daemon_error(reason: impl std::fmt::Display) -> AgentError {
    AgentError::Startup(reason.to_string())
}

async fn daemon(
    config: Config,
    stop: impl Future<Output = ()>,
    reload: Reload,
    timings: Timings,
) -> Result<(), AgentError> {
    tokio::pin!(stop);
    info!(
        config = %config.origin,
        stores = config.stores.len(),
        partnerships = config.partnerships.len(),
        max_sessions = config.max_sessions,
        "agent running"
    );
    let specs = spawn::specs(&config).map_err(daemon_error)?;
    spawn::check_programs(&specs).map_err(daemon_error)?;
    // One daemon per state file; held until the end of this function.
    let _running = DaemonLock::try_take(&config)?;
    // A state file that cannot be opened is reported now rather than by every session.
    let state = State::open(&config.state)?;
    if config.origin == EMBEDDED_ORIGIN {
        demo::prepare(&config).map_err(daemon_error)?;
    }
    let children = spawn::Children::start(specs, &timings)
        .await
        .map_err(daemon_error)?;
    let stopped_early = tokio::select! {
        _ = children.wait_ready(timings.ready_timeout, timings.ready_poll) => false,
        _ = &mut stop => true,
    };
    if stopped_early {
        children.begin_stop();
    } else {
        // The children are told to stop as soon as the stop comes, as are the running
        // sessions: both end at their next batch boundary rather than run to the end.
        Scheduler::new(Arc::new(config), state)
            .run(stop, reload, || children.begin_stop(), &timings)
            .await;
    }
    children.stop().await;
    info!("agent stopped");
    Ok(())
}

#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod tests;
