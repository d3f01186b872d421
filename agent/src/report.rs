//! What the operator CLI prints: `agent status`, `agent state NAME`, `agent history`, as text for
//! people and as JSON for tools. Read straight from the state file, so it works with or without
//! a running `agent run`.

use serde::Serialize;
use shared::knowledge::Knowledge;

use crate::config::{Config, Partnership};
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
    /// idle | running | failed | never run
    pub state: String,
    pub last_result: Option<String>,
    pub last_reason: Option<String>,
    pub last_started_at: Option<i64>,
    pub last_ended_at: Option<i64>,
    pub sent: i64,
    pub applied: i64,
    pub conflicts: i64,
    pub errors: i64,
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

pub fn status(config: &Config, state: &State) -> Result<Vec<StatusRow>, StateError> {
    config
        .partnerships
        .iter()
        .map(|p| status_row(p, state))
        .collect()
}

fn status_row(p: &Partnership, state: &State) -> Result<StatusRow, StateError> {
    // The latest session of each direction makes up the partnership's last run.
    let recent = state.history(Some(&p.name), legs(p).len())?;
    let running = recent.iter().any(|s| s.result == "running");
    let failed = recent.iter().find(|s| s.result == "failed");
    let last = recent.first();
    let sum = |f: fn(&SessionRecord) -> i64| recent.iter().map(f).sum();
    Ok(StatusRow {
        partnership: p.name.clone(),
        source: p.source.clone(),
        destination: p.destination.clone(),
        direction: p.direction.to_string(),
        schedule: p.schedule.to_string(),
        state: match (last, running, failed) {
            (None, _, _) => "never run",
            (_, true, _) => "running",
            (_, _, Some(_)) => "failed",
            _ => "idle",
        }
        .to_string(),
        last_result: last.map(|s| s.result.clone()),
        last_reason: failed.and_then(|s| s.reason.clone()),
        last_started_at: recent.last().map(|s| s.started_at),
        last_ended_at: last.and_then(|s| s.ended_at),
        sent: sum(|s| s.sent),
        applied: sum(|s| s.applied),
        conflicts: sum(|s| s.conflicts),
        errors: sum(|s| s.errors),
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

pub fn render_status(rows: &[StatusRow]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no partnerships configured\n");
    }
    for r in rows {
        out.push_str(&format!(
            "{}  {} {} {}  ({})\n  state:     {}\n  last run:  {} .. {}\n  changes:   {} sent, {} applied, {} conflicts, {} errors\n",
            r.partnership,
            r.source,
            if r.direction == "both" { "<->" } else { "->" },
            r.destination,
            r.schedule,
            r.state,
            opt_time(r.last_started_at),
            opt_time(r.last_ended_at),
            r.sent,
            r.applied,
            r.conflicts,
            r.errors,
        ));
        if let Some(reason) = &r.last_reason {
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
    use super::fmt_time;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(fmt_time(1_795_000_000_123), "2026-11-18 11:06:40Z");
    }
}
