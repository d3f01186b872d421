//! The scheduler of `agent run`: one slot per partnership, sessions started when due under
//! `max_sessions`, retries planned after failures, the config swapped on reload, and every plan
//! written to the state file for `agent status`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use shared::protocol::Completed;
use shared::shutdown::{self, Shutdown, Trigger};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::schedule::{plan_retry, show, until, Jitter, Outcome, Timer};
use super::{Reload, Timings};
use crate::config::{Config, Partnership, Schedule};
use crate::lock::PairLock;
use crate::session::{legs, sync_locked, AgentError, Event, Leg};
use crate::state::{now_ms, PlannedRun, State};

/// One partnership's place in the schedule.
pub(super) struct Slot {
    pub(super) partnership: Partnership,
    /// `laptop->server, server->laptop`
    pub(super) directions: String,
    pub(super) timer: Timer,
    /// The next scheduled run; `None` when a cron expression has no further occurrence.
    pub(super) scheduled: Option<Instant>,
    /// For cron: the occurrence `scheduled` stands for.
    pub(super) occurrence: Option<DateTime<Local>>,
    /// An earlier run to retry a failed session, the wait chosen for it and why.
    pub(super) retry_at: Option<Instant>,
    pub(super) retry_wait: Option<Duration>,
    pub(super) retry_reason: Option<String>,
    pub(super) attempt: u32,
    pub(super) running: bool,
    /// Whether the running session is the scheduled run (not an early retry).
    pub(super) ran_for_schedule: bool,
}

impl Slot {
    /// A slot as at start-up: an `every` partnership is due now, a cron one at its next
    /// occurrence.
    pub(super) fn new(p: &Partnership, now: Instant) -> Result<Slot, croner::errors::CronError> {
        let timer = Timer::new(&p.schedule)?;
        let wall = Local::now();
        let (scheduled, occurrence) = match &p.schedule {
            Schedule::Every(_) => (Some(now), None),
            Schedule::Cron(_) => {
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
        Ok(Slot {
            partnership: p.clone(),
            directions: directions.join(", "),
            timer,
            scheduled,
            occurrence,
            retry_at: None,
            retry_wait: None,
            retry_reason: None,
            attempt: 0,
            running: false,
            ran_for_schedule: false,
        })
    }

    pub(super) fn due(&self) -> Option<Instant> {
        match (self.scheduled, self.retry_at) {
            (Some(s), Some(r)) => Some(s.min(r)),
            (s, r) => s.or(r),
        }
    }

    /// After a session ended now: the next scheduled run. `every` counts from the end of the
    /// session; cron moves past the occurrence the session ran for (never back to it).
    pub(super) fn reschedule(&mut self, now: Instant) {
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

    /// The plan as the state file keeps it, in unix ms.
    fn plan(&self) -> PlannedRun {
        let (now, wall) = (Instant::now(), now_ms());
        let at = |i: Instant| {
            wall + i.saturating_duration_since(now).as_millis() as i64
                - now.saturating_duration_since(i).as_millis() as i64
        };
        PlannedRun {
            partnership: self.partnership.name.clone(),
            next_run_at: self.scheduled.map(at),
            attempt: self.attempt,
            retry_at: self.retry_at.map(at),
            retry_wait_ms: self.retry_wait.map(|w| w.as_millis() as i64),
            retry_reason: self.retry_reason.clone(),
            updated_at: wall,
        }
    }
}

/// What a session task hands back.
struct Ended {
    name: String,
    result: Result<Vec<(Leg, Completed)>, AgentError>,
    took: Duration,
}

pub(super) struct Scheduler {
    config: Arc<Config>,
    slots: Vec<Slot>,
    places: Arc<Semaphore>,
    jitter: Jitter,
    state: State,
    /// Tells running sessions to end at their next batch boundary.
    stopping: Trigger,
    stopped: Shutdown,
}

impl Scheduler {
    pub(super) fn new(config: Arc<Config>, state: State) -> Scheduler {
        let now = Instant::now();
        let slots = slots_for(&config, now, &mut |_| None);
        if slots.is_empty() {
            info!("no partnerships to schedule; only keeping the spawned processes running");
        }
        let (stopping, stopped) = shutdown::channel();
        let scheduler = Scheduler {
            places: Arc::new(Semaphore::new(config.max_sessions.max(1))),
            config,
            slots,
            jitter: Jitter::from_clock(),
            state,
            stopping,
            stopped,
        };
        scheduler.write_plans();
        scheduler
    }

    /// Runs sessions until `stop`; then calls `on_stop`, tells running sessions to end at their
    /// next batch boundary, waits for them (at most `timings.drain`), forgets the plans and
    /// returns.
    pub(super) async fn run(
        mut self,
        mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
        mut reload: Reload,
        on_stop: impl FnOnce(),
        timings: &Timings,
    ) {
        let mut tasks: JoinSet<Ended> = JoinSet::new();
        let mut ids = HashMap::new();
        loop {
            let now = Instant::now();
            for slot in self.slots.iter_mut() {
                if slot.running || slot.due().is_none_or(|d| d > now) {
                    continue;
                }
                slot.running = true;
                slot.ran_for_schedule = slot.scheduled.is_some_and(|s| s <= now);
                slot.retry_at = None;
                let task = session_task(
                    Arc::clone(&self.config),
                    Arc::clone(&self.places),
                    self.stopped.clone(),
                    slot.partnership.name.clone(),
                    slot.attempt,
                );
                let handle = tasks.spawn_local(task);
                ids.insert(handle.id(), slot.partnership.name.clone());
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
                Some(()) = reload.asked.recv() => self.reload((reload.load)()),
                _ = sleep_until(next_due), if next_due.is_some() => {}
            }
        }
        on_stop();
        self.stopping.fire();
        if !tasks.is_empty() {
            info!(
                running = tasks.len(),
                wait = %show(timings.drain),
                "stopping: no new sessions; running ones end at their next batch boundary"
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
        // The plans are a running daemon's; a stopped one plans nothing.
        if let Err(e) = self.state.forget_plans_except(&[]) {
            warn!(error = %e, "cannot clear the schedule in the state file");
        }
    }

    fn write_plans(&self) {
        let names: Vec<&str> = self
            .slots
            .iter()
            .map(|s| s.partnership.name.as_str())
            .collect();
        let written = self.state.forget_plans_except(&names).and_then(|()| {
            self.slots
                .iter()
                .try_for_each(|s| self.state.record_plan(&s.plan()))
        });
        if let Err(e) = written {
            warn!(error = %e, "cannot record the schedule in the state file; agent status will not show it");
        }
    }

    /// Takes a new config (SIGHUP): partnerships added, removed or changed, `max_sessions`.
    /// A config that does not load, or that changes what only a restart can change (the state
    /// file, the spawned processes), is logged and the running one kept.
    pub(super) fn reload(&mut self, loaded: Result<Config, crate::config::ConfigError>) {
        let new = match loaded
            .map_err(|e| e.to_string())
            .and_then(|new| restart_needed(&self.config, &new).map_or(Ok(new), Err))
        {
            Ok(new) => new,
            Err(error) => {
                error!(error = %error, "config not reloaded; keeping the running config");
                return;
            }
        };
        let now = Instant::now();
        let mut old: HashMap<String, Slot> = self
            .slots
            .drain(..)
            .map(|s| (s.partnership.name.clone(), s))
            .collect();
        let (mut added, mut changed) = (Vec::new(), Vec::new());
        self.slots = slots_for(&new, now, &mut |p| {
            let mut slot = old.remove(&p.name);
            match &mut slot {
                None => added.push(p.name.clone()),
                Some(s) if s.partnership.schedule != p.schedule => {
                    // Scheduled again as at start-up; a running session goes on.
                    changed.push(p.name.clone());
                    let running = s.running;
                    return Slot::new(p, now).ok().map(|mut fresh| {
                        fresh.running = running;
                        fresh
                    });
                }
                Some(s) => {
                    if s.partnership != *p {
                        changed.push(p.name.clone());
                    }
                    s.partnership = p.clone();
                    s.directions = legs(p).iter().map(Leg::name).collect::<Vec<_>>().join(", ");
                }
            }
            slot
        });
        let mut removed: Vec<String> = old.into_keys().collect();
        removed.sort();
        if new.max_sessions != self.config.max_sessions {
            // Sessions already running hold places of the old limit and end by themselves.
            self.places = Arc::new(Semaphore::new(new.max_sessions.max(1)));
        }
        info!(
            config = %new.origin,
            added = %added.join(", "),
            removed = %removed.join(", "),
            changed = %changed.join(", "),
            max_sessions = new.max_sessions,
            "config reloaded"
        );
        self.config = Arc::new(new);
        self.write_plans();
    }

    /// Logs a session's end and plans the partnership's next run.
    fn ended(
        &mut self,
        joined: Result<(tokio::task::Id, Ended), tokio::task::JoinError>,
        ids: &mut HashMap<tokio::task::Id, String>,
        stopping: bool,
    ) {
        let (name, result, took) = match joined {
            Ok((id, ended)) => {
                ids.remove(&id);
                (ended.name, ended.result, ended.took)
            }
            Err(e) => {
                let Some(name) = ids.remove(&e.id()) else {
                    error!(error = %e, "a session task failed");
                    return;
                };
                let failed = AgentError::Failed {
                    partnership: name.clone(),
                    direction: String::new(),
                    reason: format!("the session task failed: {e}"),
                    retryable: false,
                };
                (name, Err(failed), Duration::ZERO)
            }
        };
        let jitter = self.jitter.next_f64();
        let Some(slot) = self.slots.iter_mut().find(|s| s.partnership.name == name) else {
            info!(partnership = %name, "session of a partnership no longer in the config ended");
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
        slot.retry_wait = plan.retry_in;
        slot.retry_at = plan
            .retry_in
            .map(|wait| now + wait)
            .filter(|r| slot.scheduled.is_none_or(|s| *r < s));
        if slot.retry_at.is_none() {
            slot.retry_wait = None;
        }
        slot.retry_reason = match (&result, slot.attempt) {
            (Err(e), 1..) => Some(e.to_string()),
            _ => None,
        };
        let next_in = slot.due().map_or("never".to_string(), |d| show(d - now));
        let ms = took.as_millis() as u64;
        let partnership = tracing::field::display(&slot.partnership.name);
        let directions = tracing::field::display(&slot.directions);
        match &result {
            Ok(_) => debug!(partnership, directions, ms, next_in = %next_in, "next run planned"),
            Err(e) if stopping => {
                info!(partnership, directions, ms, error = %e, "session ended by the shutdown");
            }
            Err(AgentError::Busy { .. }) => {
                info!(
                    partnership,
                    next_in = %next_in,
                    "a session between these stores is already running elsewhere (agent sync, another agent?); skipping this run"
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
        if !stopping {
            write_plan(&self.state, slot);
        }
    }
}

fn write_plan(state: &State, slot: &Slot) {
    if let Err(e) = state.record_plan(&slot.plan()) {
        warn!(partnership = %slot.partnership.name, error = %e, "cannot record the schedule in the state file; agent status will not show it");
    }
}

/// The slots of `config`'s partnerships, in its order: `keep` may hand over an existing slot
/// for a partnership; the others are new.
fn slots_for(
    config: &Config,
    now: Instant,
    keep: &mut dyn FnMut(&Partnership) -> Option<Slot>,
) -> Vec<Slot> {
    let mut slots = Vec::new();
    for p in &config.partnerships {
        if let Some(slot) = keep(p) {
            slots.push(slot);
            continue;
        }
        match Slot::new(p, now) {
            Ok(slot) => slots.push(slot),
            // The config was validated, so this does not happen; still, never a panic.
            Err(e) => error!(partnership = %p.name, error = %e, "cannot schedule this partnership"),
        }
    }
    slots
}

/// Why `new` cannot replace `old` without restarting `agent run`, if it cannot.
fn restart_needed(old: &Config, new: &Config) -> Option<String> {
    if old.state != new.state {
        return Some(format!(
            "{}: the state file changed ({} to {}); restart agent run to use it",
            new.origin,
            old.state.display(),
            new.state.display()
        ));
    }
    let spawned = |c: &Config| super::spawn::specs(c).map_err(|e| e.to_string());
    match (spawned(old), spawned(new)) {
        (Ok(a), Ok(b)) if a == b => None,
        (_, Err(e)) => Some(format!("{}: {e}", new.origin)),
        _ => Some(format!(
            "{}: the spawned processes changed (a store's spawn, path, sockets or programs); restart agent run to apply it",
            new.origin
        )),
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// One session: waits for a free session place, skips a pair of stores locked elsewhere, runs
/// the session (which logs its start and end).
async fn session_task(
    config: Arc<Config>,
    places: Arc<Semaphore>,
    stop: Shutdown,
    name: String,
    attempt: u32,
) -> Ended {
    let _place = places.acquire_owned().await.ok();
    let started = Instant::now();
    // A lock held elsewhere (an `agent sync` in a shell, another agent) is a skipped run, which
    // the scheduler says once at info; the lock taken here is held for the whole session.
    let result = match PairLock::try_take(&config, &name) {
        Err(e) => Err(e),
        Ok(lock) => {
            debug!(partnership = %name, attempt, "session due");
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
            sync_locked(&config, &name, &lock, Some(&stop), &mut listen).await
        }
    };
    Ended {
        name,
        result,
        took: started.elapsed(),
    }
}
