//! `agent run`: the daemon. It starts the synchronizer and collector of every store with
//! `spawn = true` (and keeps them running), runs every partnership's sessions on its schedule,
//! retries failed sessions with backoff, and stops in order on SIGTERM/SIGINT.
//!
//! - `schedule`: the timing rules as pure functions (backoff, jitter, cron in local time).
//! - `spawn`: the spawned processes and their supervision.
//! - `demo`: filling the embedded demo's laptop store on its first run.
//!
//! Scheduling rules:
//!
//! * An `every` partnership's first session runs right after start-up (once the spawned
//!   processes answer), then `every` after the previous session *ended*. A `cron` partnership
//!   runs at each occurrence of its expression, in local time.
//! * At most `max_sessions` sessions run at once; one partnership never runs two (the session's
//!   lock; a partnership locked elsewhere, e.g. by `agent sync`, is skipped until its next run).
//! * A session that fails in a way that may pass by itself (a daemon unreachable, a session
//!   stopped) is retried after 1 s, 2 s, 4 s ... at most 5 minutes (±25% jitter), or at its next
//!   scheduled run if that comes first; a success resets the count. Any other failure waits for
//!   the next scheduled run.
//!
//! Sessions run on one thread (a `LocalSet`): a session's state file is a SQLite connection,
//! and all the heavy work happens in the synchronizer and collector processes.

pub mod demo;
pub mod schedule;
pub mod spawn;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::sync::Semaphore;
use tokio::task::{JoinSet, LocalSet};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::config::{Config, Schedule, EMBEDDED_ORIGIN};
use crate::session::{legs, sync_locked, AgentError, Event, Leg, PartnershipLock};
use crate::state::State;
use schedule::{plan_retry, show, until, Backoff, Jitter, Outcome, Timer};
use shared::protocol::Completed;

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

/// `agent run`: runs until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), AgentError> {
    run_until(config, shared::shutdown::signal()).await
}

/// Runs the daemon until `stop` resolves, then stops scheduling, lets running sessions end
/// (at most 30 s), stops the spawned processes and returns.
pub async fn run_until(config: Config, stop: impl Future<Output = ()>) -> Result<(), AgentError> {
    run_with(config, stop, Timings::default()).await
}

/// [`run_until`] with its waits given.
pub async fn run_with(
    config: Config,
    stop: impl Future<Output = ()>,
    timings: Timings,
) -> Result<(), AgentError> {
    LocalSet::new()
        .run_until(daemon(config, stop, timings))
        .await
}

/// The daemon could not start.
fn daemon_error(reason: impl std::fmt::Display) -> AgentError {
    AgentError::Startup(reason.to_string())
}

async fn daemon(
    config: Config,
    stop: impl Future<Output = ()>,
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
    // A state file that cannot be opened is reported now rather than by every session.
    drop(State::open(&config.state)?);
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
        // The children are told to stop as soon as the stop comes, so that running sessions
        // end at their next batch boundary rather than run to the end.
        Scheduler::new(Arc::new(config))
            .run(stop, || children.begin_stop(), &timings)
            .await;
    }
    children.stop().await;
    info!("agent stopped");
    Ok(())
}

/// One partnership's place in the schedule.
struct Slot {
    name: String,
    /// `laptop->server, server->laptop`
    directions: String,
    timer: Timer,
    /// The next scheduled run; `None` when a cron expression has no further occurrence.
    scheduled: Option<Instant>,
    /// For cron: the occurrence `scheduled` stands for.
    occurrence: Option<DateTime<Local>>,
    /// An earlier run to retry a failed session.
    retry_at: Option<Instant>,
    attempt: u32,
    running: bool,
    /// Whether the running session is the scheduled run (not an early retry).
    ran_for_schedule: bool,
}

impl Slot {
    fn due(&self) -> Option<Instant> {
        match (self.scheduled, self.retry_at) {
            (Some(s), Some(r)) => Some(s.min(r)),
            (s, r) => s.or(r),
        }
    }

    /// After a session ended now: the next scheduled run. `every` counts from the end of the
    /// session; cron moves past the occurrence the session ran for (never back to it).
    fn reschedule(&mut self, now: Instant) {
        match &self.timer {
            Timer::Every(every) => self.scheduled = Some(now + *every),
            Timer::Cron(_) if self.ran_for_schedule || self.scheduled.is_none() => {
                let wall = Local::now();
                let after = match self.occurrence {
                    Some(o) if o > wall => o,
                    _ => wall,
                };
                self.occurrence = self.timer.next_occurrence(&after);
                self.scheduled = self.occurrence.map(|o| now + until(&wall, &o));
            }
            Timer::Cron(_) => {}
        }
    }
}

/// What a session task hands back.
struct Ended {
    slot: usize,
    result: Result<Vec<(Leg, Completed)>, AgentError>,
    took: Duration,
}

struct Scheduler {
    config: Arc<Config>,
    slots: Vec<Slot>,
    sessions: Arc<Semaphore>,
    jitter: Jitter,
}

impl Scheduler {
    fn new(config: Arc<Config>) -> Scheduler {
        let now = Instant::now();
        let wall = Local::now();
        let mut slots = Vec::new();
        for p in &config.partnerships {
            let timer = match Timer::new(&p.schedule) {
                Ok(t) => t,
                Err(e) => {
                    // The config was validated, so this does not happen; still, never a panic.
                    error!(partnership = %p.name, error = %e, "cannot schedule this partnership");
                    continue;
                }
            };
            let (scheduled, occurrence) = match (&p.schedule, &timer) {
                (Schedule::Every(_), _) => (Some(now), None),
                (_, timer) => {
                    let o = timer.next_occurrence(&wall);
                    (o.map(|o| now + until(&wall, &o)), o)
                }
            };
            let directions: Vec<String> = legs(p).iter().map(Leg::name).collect();
            info!(
                partnership = %p.name,
                directions = %directions.join(", "),
                schedule = %p.schedule,
                first_in = %scheduled.map_or("never".into(), |s| show(s - now)),
                "scheduled"
            );
            slots.push(Slot {
                name: p.name.clone(),
                directions: directions.join(", "),
                timer,
                scheduled,
                occurrence,
                retry_at: None,
                attempt: 0,
                running: false,
                ran_for_schedule: false,
            });
        }
        if slots.is_empty() {
            info!("no partnerships to schedule; only keeping the spawned processes running");
        }
        Scheduler {
            sessions: Arc::new(Semaphore::new(config.max_sessions.max(1))),
            config,
            slots,
            jitter: Jitter::from_clock(),
        }
    }

    /// Runs sessions until `stop`; then calls `on_stop`, waits for the running sessions (at
    /// most `timings.drain`) and returns.
    async fn run(
        mut self,
        mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
        on_stop: impl FnOnce(),
        timings: &Timings,
    ) {
        let mut tasks: JoinSet<Ended> = JoinSet::new();
        let mut ids = HashMap::new();
        loop {
            let now = Instant::now();
            for (index, slot) in self.slots.iter_mut().enumerate() {
                if slot.running || slot.due().is_none_or(|d| d > now) {
                    continue;
                }
                slot.running = true;
                slot.ran_for_schedule = slot.scheduled.is_some_and(|s| s <= now);
                slot.retry_at = None;
                let task = session_task(
                    Arc::clone(&self.config),
                    Arc::clone(&self.sessions),
                    index,
                    slot.name.clone(),
                    slot.directions.clone(),
                    slot.attempt,
                );
                let handle = tasks.spawn_local(task);
                ids.insert(handle.id(), index);
            }
            let next_due = self
                .slots
                .iter()
                .filter(|s| !s.running)
                .filter_map(Slot::due)
                .min();
            tokio::select! {
                _ = stop.as_mut() => break,
                Some(joined) = tasks.join_next_with_id() => self.ended(joined, &mut ids, false),
                _ = sleep_until(next_due), if next_due.is_some() => {}
            }
        }
        on_stop();
        if tasks.is_empty() {
            return;
        }
        info!(
            running = tasks.len(),
            wait = %show(timings.drain),
            "stopping: no new sessions; waiting for the running ones to end"
        );
        let drained = tokio::time::timeout(timings.drain, async {
            while let Some(joined) = tasks.join_next_with_id().await {
                self.ended(joined, &mut ids, true);
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                running = tasks.len(),
                "sessions still running at the end of the shutdown wait; abandoning them (the next session resumes)"
            );
            tasks.shutdown().await;
        }
    }

    /// Logs a session's end and plans the partnership's next run.
    fn ended(
        &mut self,
        joined: Result<(tokio::task::Id, Ended), tokio::task::JoinError>,
        ids: &mut HashMap<tokio::task::Id, usize>,
        stopping: bool,
    ) {
        let (index, result, took) = match joined {
            Ok((id, ended)) => {
                ids.remove(&id);
                (ended.slot, ended.result, Some(ended.took))
            }
            Err(e) => {
                let Some(index) = ids.remove(&e.id()) else {
                    error!(error = %e, "a session task failed");
                    return;
                };
                let failed = self.slots.get(index).map(|s| AgentError::Failed {
                    partnership: s.name.clone(),
                    direction: s.directions.clone(),
                    reason: format!("the session task failed: {e}"),
                    retryable: false,
                });
                let Some(failed) = failed else { return };
                (index, Err(failed), None)
            }
        };
        let jitter = self.jitter.next_f64();
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let now = Instant::now();
        slot.running = false;
        slot.reschedule(now);
        let outcome = match &result {
            Ok(_) => Outcome::Completed,
            Err(AgentError::Busy { .. }) => Outcome::Busy,
            Err(e) => Outcome::Failed {
                retryable: e.is_retryable(),
            },
        };
        let plan = plan_retry(outcome, slot.attempt, jitter);
        slot.attempt = plan.attempt;
        slot.retry_at = plan
            .retry_in
            .map(|wait| now + wait)
            .filter(|r| slot.scheduled.is_none_or(|s| *r < s));
        let next_in = slot.due().map_or("never".to_string(), |d| show(d - now));
        let ms = took.map_or(0, |t| t.as_millis() as u64);
        let partnership = tracing::field::display(&slot.name);
        let directions = tracing::field::display(&slot.directions);
        match &result {
            Ok(done) => {
                let sum = |f: fn(&Completed) -> u64| done.iter().map(|(_, c)| f(c)).sum::<u64>();
                info!(
                    partnership,
                    directions,
                    sent = sum(|c| c.stats.sent),
                    applied = sum(|c| c.stats.applied),
                    conflicts = sum(|c| c.stats.conflicts),
                    errors = sum(|c| c.stats.errors),
                    ms,
                    next_in = %next_in,
                    "session ended"
                );
            }
            Err(e) if stopping => {
                info!(partnership, directions, ms, error = %e, "session ended by the shutdown");
            }
            Err(AgentError::Busy { .. }) => {
                info!(
                    partnership,
                    next_in = %next_in,
                    "a session of this partnership is already running elsewhere (agent sync?); skipping this run"
                );
            }
            Err(e) if outcome == (Outcome::Failed { retryable: true }) => {
                warn!(
                    partnership,
                    directions,
                    attempt = slot.attempt,
                    retry_in = %next_in,
                    ms,
                    error = %e,
                    "session failed; retrying"
                );
            }
            Err(e) => {
                error!(
                    partnership,
                    directions,
                    ms,
                    next_in = %next_in,
                    error = %e,
                    "session failed; waiting for the next scheduled run"
                );
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// One session: waits for a free session place, skips a partnership locked elsewhere, runs it.
async fn session_task(
    config: Arc<Config>,
    places: Arc<Semaphore>,
    slot: usize,
    name: String,
    directions: String,
    attempt: u32,
) -> Ended {
    let _place = places.acquire_owned().await.ok();
    let started = Instant::now();
    // A lock held elsewhere (an `agent sync` in a shell) is a skipped run, which the scheduler
    // says once at info; the lock taken here is held for the whole session.
    let result = match PartnershipLock::try_take(&config, &name) {
        Err(e) => Err(e),
        Ok(lock) => {
            info!(partnership = %name, directions = %directions, attempt, "session started");
            let mut listen = |event: Event<'_>| {
                if let Event::Progress { leg, progress } = event {
                    let s = &progress.stats;
                    debug!(
                        partnership = %name,
                        direction = %leg.name(),
                        phase = progress.phase.name(),
                        batches = s.batches,
                        sent = s.sent,
                        applied = s.applied,
                        conflicts = s.conflicts,
                        errors = s.errors,
                        "batch acknowledged"
                    );
                }
            };
            sync_locked(&config, &name, &lock, &mut listen).await
        }
    };
    Ended {
        slot,
        result,
        took: started.elapsed(),
    }
}

#[cfg(test)]
mod tests;
