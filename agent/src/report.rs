//! What the operator CLI prints: `agent status`, `agent state NAME`, `agent history`, as text for
//! people and as JSON for tools. Read straight from the state file, so it works with or without
//! a running `agent run`.

use std::time::Duration;

use serde::Serialize;
use shared::knowledge::Knowledge;

use crate::config::{Config, Partnership};
use crate::daemon::schedule::{show, Timer};
use crate::session::legs;
use crate::state::{DirectionState, RecordedItemError, SessionRecord, State, StateError};

/// One row of `agent status`.
#[derive(Debug, Serialize)]
pub struct StatusRow {
    pub partnership: String,
    pub source: String,
    pub destination: String,
    pub direction: String,
    pub schedule: String,
    /// never run | idle | running | interrupted | retrying | failed
    pub state: String,
    /// The session under way, when `state` is running; the one whose agent stopped during it,
    /// when `state` is interrupted (the next session resumes from its last acknowledged batch).
    pub running: Option<RunningSession>,
    /// The retry under way, when `state` is retrying.
    pub retry: Option<Retry>,
    pub last_result: Option<String>,
    pub last_reason: Option<String>,
    pub last_started_at: Option<i64>,
    pub last_ended_at: Option<i64>,
    /// Unix ms of the next run `agent run` plans (when it is running), or of the next cron
    /// occurrence.
    pub next_run_at: Option<i64>,
    /// Whether an `agent run` is using this state file now.
    pub daemon: bool,
    /// The last run's counts.
    pub sent: i64,
    pub applied: i64,
    pub conflicts: i64,
    pub errors: i64,
    /// Deferred conflicts waiting for an operator.
    pub open_conflicts: i64,
    /// Items that failed in the latest sessions and come again in the next (`agent state`).
    pub item_errors: i64,
}

/// A session under way, as its last acknowledged batch left it.
#[derive(Debug, Serialize)]
pub struct RunningSession {
    pub direction: String,
    pub phase: Option<String>,
    pub started_at: i64,
    pub batches: i64,
    pub sent: i64,
    pub applied: i64,
    pub conflicts: i64,
    pub errors: i64,
}

/// A retry under way.
#[derive(Debug, Serialize)]
pub struct Retry {
    pub attempt: u32,
    /// Unix ms.
    pub at: i64,
    /// The backoff chosen for it.
    pub wait_ms: Option<i64>,
    pub reason: Option<String>,
}

/// What `agent status` needs beside the config and the state file.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Unix ms.
    pub ms: i64,
    /// Whether an `agent run` is using the state file (its plans are current).
    pub daemon: bool,
}

/// `agent state NAME`: one partnership's sync-state records in full.
#[derive(Debug, Serialize)]
pub struct StateReport {
    pub partnership: String,
    pub directions: Vec<DirectionReport>,
    pub item_errors: Vec<RecordedItemError>,
}

#[derive(Debug, Serialize)]
pub struct DirectionReport {
    pub direction: String,
    /// The same knowledge with known stores' replica ids replaced by their names, e.g. "a:5, b:4".
    pub knowledge_by_store: String,
    /// The destination knowledge last acknowledged, in PRODUCT.md's JSON form.
    pub knowledge: Knowledge,
    pub updated_at: Option<i64>,
    pub last_session: Option<SessionRecord>,
}

/// `holder_gone(partnership)` tells whether the agent recorded as running a session of the
/// partnership is gone (`lock::PairLock::holder_gone`): its session then shows as interrupted,
/// not as running, until the next session closes it.
pub fn status(
    config: &Config,
    state: &State,
    now: Now,
    holder_gone: impl Fn(&str) -> bool,
) -> Result<Vec<StatusRow>, StateError> {
    config
        .partnerships
        .iter()
        .map(|p| status_row(p, state, now, &holder_gone))
        .collect()
}

fn status_row(
    p: &Partnership,
    state: &State,
    now: Now,
    holder_gone: &impl Fn(&str) -> bool,
) -> Result<StatusRow, StateError> {
    // The latest session of each direction makes up the partnership's last run.
    let recent = state.history(Some(&p.name), legs(p).len())?;
    let running = recent
        .iter()
        .find(|s| s.result == "running")
        .map(|s| RunningSession {
            direction: s.direction.clone(),
            phase: s.phase.clone(),
            started_at: s.started_at,
            batches: s.batches,
            sent: s.sent,
            applied: s.applied,
            conflicts: s.conflicts,
            errors: s.errors,
        });
    let ended: Vec<&SessionRecord> = recent.iter().filter(|s| s.result != "running").collect();
    let failed = ended.iter().find(|s| s.result == "failed");
    let last = ended.first();
    let plan = if now.daemon {
        state.plan(&p.name)?
    } else {
        None
    };
    let retry = plan.as_ref().and_then(|plan| {
        plan.retry_at.filter(|_| plan.attempt > 0).map(|at| Retry {
            attempt: plan.attempt,
            at,
            wait_ms: plan.retry_wait_ms,
            reason: plan.retry_reason.clone(),
        })
    });
    let next_run_at = match &plan {
        Some(plan) => plan.due_at(),
        // Without a daemon only a cron expression says when; `every` starts with agent run.
        None => Timer::new(&p.schedule)
            .ok()
            .and_then(|t| t.next_occurrence(&chrono::Local::now()))
            .map(|o| o.timestamp_millis()),
    };
    let sum = |f: fn(&SessionRecord) -> i64| ended.iter().map(|s| f(s)).sum();
    Ok(StatusRow {
        partnership: p.name.clone(),
        source: p.source.clone(),
        destination: p.destination.clone(),
        direction: p.direction.to_string(),
        schedule: p.schedule.to_string(),
        state: if running.is_some() && holder_gone(&p.name) {
            "interrupted"
        } else if running.is_some() {
            "running"
        } else if retry.is_some() {
            "retrying"
        } else if failed.is_some() {
            "failed"
        } else if last.is_none() {
            "never run"
        } else {
            "idle"
        }
        .to_string(),
        running,
        retry,
        last_result: last.map(|s| s.result.clone()),
        last_reason: failed.and_then(|s| s.reason.clone()),
        last_started_at: ended.last().map(|s| s.started_at),
        last_ended_at: last.and_then(|s| s.ended_at),
        next_run_at,
        daemon: now.daemon,
        sent: sum(|s| s.sent),
        applied: sum(|s| s.applied),
        conflicts: sum(|s| s.conflicts),
        errors: sum(|s| s.errors),
        open_conflicts: state.open_conflicts(&p.name)?,
        item_errors: state.item_errors(&p.name)?.len() as i64,
    })
}

pub fn state_report(
    config: &Config,
    state: &State,
    name: &str,
) -> Result<StateReport, crate::session::AgentError> {
    let p = config.partnership(name).map_err(Box::new)?;
    let recorded: Vec<DirectionState> = state.directions(name)?;
    let history = state.history(Some(name), 50)?;
    let directions = legs(p)
        .into_iter()
        .map(|leg| {
            let direction = leg.name();
            let rec = recorded.iter().find(|d| d.direction == direction);
            let knowledge = rec.map(|r| r.knowledge.clone()).unwrap_or_default();
            Ok(DirectionReport {
                knowledge_by_store: state.named(&knowledge)?.to_string(),
                knowledge,
                updated_at: rec.map(|r| r.updated_at),
                last_session: history.iter().find(|s| s.direction == direction).cloned(),
                direction,
            })
        })
        .collect::<Result<Vec<_>, StateError>>()?;
    Ok(StateReport {
        partnership: name.to_string(),
        directions,
        item_errors: state.item_errors(name)?,
    })
}

/// `YYYY-MM-DD HH:MM:SSZ` for unix milliseconds (UTC), written by hand to keep a date crate out.
pub fn fmt_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn opt_time(ms: Option<i64>) -> String {
    ms.map(fmt_time).unwrap_or_else(|| "-".into())
}

/// A moment for people: its time, and how far off it is (`in 40s`, `now`).
fn from_now(ms: i64, now: i64) -> String {
    let wait = ms - now;
    if wait <= 0 {
        format!("{} (now)", fmt_time(ms))
    } else {
        format!(
            "{} (in {})",
            fmt_time(ms),
            show(Duration::from_millis(wait as u64))
        )
    }
}

fn state_line(r: &StatusRow, now: i64) -> String {
    if let Some(s) = &r.running {
        let at = match &s.phase {
            Some(phase) => format!(
                "{phase}, batch {}: {} sent, {} applied, {} conflicts, {} errors",
                s.batches, s.sent, s.applied, s.conflicts, s.errors
            ),
            None => "starting".to_string(),
        };
        if r.state == "interrupted" {
            return format!(
                "interrupted: the agent running it stopped during {} {at}; the next session \
                 resumes from there",
                s.direction
            );
        }
        return format!("running: {} {at}", s.direction);
    }
    if let Some(retry) = &r.retry {
        let wait = retry.at - now;
        let when = if wait > 0 {
            format!("in {}", show(Duration::from_millis(wait as u64)))
        } else {
            "now".to_string()
        };
        return format!(
            "retrying {when} (attempt {}): {}",
            retry.attempt,
            retry.reason.as_deref().unwrap_or("the last attempt failed")
        );
    }
    r.state.clone()
}

fn next_run_line(r: &StatusRow, now: i64) -> String {
    if r.daemon && r.state == "running" {
        return "planned when the running session ends".to_string();
    }
    match (r.daemon, r.next_run_at) {
        (true, Some(at)) => from_now(at, now),
        (true, None) => "none (the cron expression has no further occurrence)".to_string(),
        (false, Some(at)) => format!("{} once agent run is running", from_now(at, now)),
        (false, None) if r.schedule.starts_with("every") => {
            format!("when agent run starts, then {}", r.schedule)
        }
        (false, None) => "none (the cron expression has no further occurrence)".to_string(),
    }
}

/// `agent status` for people; `now` (unix ms) is what waits are counted from.
pub fn render_status(rows: &[StatusRow], now: i64) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no partnerships configured\n");
    }
    for r in rows {
        out.push_str(&format!(
            "{}  {} {} {}  ({})\n",
            r.partnership,
            r.source,
            if r.direction == "both" { "<->" } else { "->" },
            r.destination,
            r.schedule,
        ));
        out.push_str(&format!("  state:     {}\n", state_line(r, now)));
        match (&r.last_result, r.last_started_at) {
            (Some(result), Some(started)) => out.push_str(&format!(
                "  last run:  {result}, {} .. {}\n",
                fmt_time(started),
                opt_time(r.last_ended_at)
            )),
            _ => out.push_str("  last run:  never\n"),
        }
        out.push_str(&format!("  next run:  {}\n", next_run_line(r, now)));
        out.push_str(&format!(
            "  changes:   {} sent, {} applied, {} conflicts, {} errors in the last run\n",
            r.sent, r.applied, r.conflicts, r.errors,
        ));
        out.push_str(&format!(
            "  open:      {} conflicts, {} item errors\n",
            r.open_conflicts, r.item_errors
        ));
        if let (Some(reason), None) = (&r.last_reason, &r.retry) {
            out.push_str(&format!("  failure:   {reason}\n"));
        }
    }
    out
}

pub fn render_state(report: &StateReport) -> String {
    let mut out = format!("{}\n", report.partnership);
    for d in &report.directions {
        out.push_str(&format!(
            "  {}\n    destination knows: {}\n    recorded at:       {}\n",
            d.direction,
            d.knowledge_by_store,
            opt_time(d.updated_at)
        ));
        match &d.last_session {
            Some(s) => out.push_str(&format!(
                "    last session:      #{} {} at {}{}\n    counts:            {} batches, {} sent, {} applied, {} conflicts, {} errors\n",
                s.id,
                s.result,
                fmt_time(s.started_at),
                s.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
                s.batches,
                s.sent,
                s.applied,
                s.conflicts,
                s.errors
            )),
            None => out.push_str("    last session:      none\n"),
        }
    }
    for e in &report.item_errors {
        out.push_str(&format!(
            "  item error ({}): {}: {}\n",
            e.direction, e.item, e.reason
        ));
    }
    out
}

pub fn render_history(sessions: &[SessionRecord]) -> String {
    let mut out = String::new();
    for s in sessions {
        out.push_str(&format!(
            "#{:<5} {}  {:<20} {:<24} {:<9} {:>6} sent {:>6} applied {:>4} conflicts {:>4} errors{}\n",
            s.id,
            fmt_time(s.started_at),
            s.partnership,
            s.direction,
            s.result,
            s.sent,
            s.applied,
            s.conflicts,
            s.errors,
            s.reason.as_deref().map(|r| format!("  ({r})")).unwrap_or_default()
        ));
    }
    if sessions.is_empty() {
        out.push_str("no sessions yet\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000;

    fn row(name: &str, state: &str) -> StatusRow {
        StatusRow {
            partnership: name.into(),
            source: "laptop".into(),
            destination: "server".into(),
            direction: "both".into(),
            schedule: "every 5m".into(),
            state: state.into(),
            running: None,
            retry: None,
            last_result: Some("completed".into()),
            last_reason: None,
            last_started_at: Some(NOW - 65_000),
            last_ended_at: Some(NOW - 63_800),
            next_run_at: Some(NOW + 235_000),
            daemon: true,
            sent: 120,
            applied: 118,
            conflicts: 2,
            errors: 0,
            open_conflicts: 2,
            item_errors: 0,
        }
    }

    #[test]
    fn status_in_each_state() {
        let never = StatusRow {
            last_result: None,
            last_started_at: None,
            last_ended_at: None,
            next_run_at: None,
            daemon: false,
            sent: 0,
            applied: 0,
            conflicts: 0,
            open_conflicts: 0,
            ..row("never-run", "never run")
        };
        let running = StatusRow {
            running: Some(RunningSession {
                direction: "laptop->server".into(),
                phase: Some("contents".into()),
                started_at: NOW - 2_000,
                batches: 3,
                sent: 1500,
                applied: 1498,
                conflicts: 1,
                errors: 0,
            }),
            next_run_at: Some(NOW - 2_000),
            ..row("running", "running")
        };
        let starting = StatusRow {
            running: Some(RunningSession {
                direction: "server->laptop".into(),
                phase: None,
                started_at: NOW,
                batches: 0,
                sent: 0,
                applied: 0,
                conflicts: 0,
                errors: 0,
            }),
            ..row("starting", "running")
        };
        let interrupted = StatusRow {
            running: Some(RunningSession {
                direction: "laptop->server".into(),
                phase: Some("contents".into()),
                started_at: NOW - 90_000,
                batches: 25,
                sent: 24_001,
                applied: 24_001,
                conflicts: 0,
                errors: 0,
            }),
            daemon: false,
            next_run_at: None,
            ..row("interrupted", "interrupted")
        };
        let reason =
            "retrying (laptop->server): cannot connect to run/server.coll.sock: connection refused";
        let retrying = StatusRow {
            retry: Some(Retry {
                attempt: 3,
                at: NOW + 40_000,
                wait_ms: Some(41_000),
                reason: Some(reason.into()),
            }),
            next_run_at: Some(NOW + 40_000),
            last_result: Some("failed".into()),
            last_reason: Some(reason.into()),
            ..row("retrying", "retrying")
        };
        let failed = StatusRow {
            last_result: Some("failed".into()),
            last_reason: Some("refused: the destination is out of date".into()),
            item_errors: 1,
            errors: 1,
            ..row("failed", "failed")
        };
        let cron_without_daemon = StatusRow {
            schedule: "cron */5 * * * *".into(),
            daemon: false,
            direction: "one-way".into(),
            ..row("cron", "idle")
        };
        let rows = [
            never,
            row("idle", "idle"),
            running,
            starting,
            interrupted,
            retrying,
            failed,
            cron_without_daemon,
        ];
        insta::assert_snapshot!(render_status(&rows, NOW));
        assert_eq!(render_status(&[], NOW), "no partnerships configured\n");
    }

    #[test]
    fn history_lines() {
        let session = |id, result: &str, reason: Option<&str>| SessionRecord {
            id,
            partnership: "laptop-server".into(),
            direction: "laptop->server".into(),
            started_at: NOW + id * 10_000,
            ended_at: Some(NOW + id * 10_000 + 1200),
            result: result.into(),
            reason: reason.map(str::to_string),
            phase: Some("contents".into()),
            batches: 2,
            sent: 7 * id,
            applied: 7 * id,
            conflicts: 0,
            errors: 0,
        };
        let sessions = [
            session(3, "running", None),
            session(2, "completed", None),
            session(1, "failed", Some("cannot connect to run/server.coll.sock")),
        ];
        insta::assert_snapshot!(render_history(&sessions));
        assert_eq!(render_history(&[]), "no sessions yet\n");
    }

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(fmt_time(1_795_000_000_123), "2026-11-18 11:06:40Z");
    }
}
