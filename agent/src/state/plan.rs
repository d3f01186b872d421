//! What `agent run` plans for each partnership — the next scheduled run, and a retry under way
//! with its attempt, wait and reason — written to the state file so that `agent status`, which
//! reads only the state file, shows it. The plan is only meaningful while that `agent run` is
//! running (its `DaemonLock`); a clean stop removes it.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{now_ms, State, StateError};

/// One partnership's plan, as `agent run` made it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlannedRun {
    pub partnership: String,
    /// Unix ms of the next scheduled run (`None`: none, e.g. a cron expression with no further
    /// occurrence).
    pub next_run_at: Option<i64>,
    /// Failed attempts in a row being retried; 0 when not retrying.
    pub attempt: u32,
    /// Unix ms of the retry, while retrying.
    pub retry_at: Option<i64>,
    /// The backoff chosen for that retry.
    pub retry_wait_ms: Option<i64>,
    /// Why the last attempt failed.
    pub retry_reason: Option<String>,
    /// Unix ms of this plan.
    pub updated_at: i64,
}

impl PlannedRun {
    /// The earlier of the scheduled run and the retry.
    pub fn due_at(&self) -> Option<i64> {
        match (self.next_run_at, self.retry_at) {
            (Some(n), Some(r)) => Some(n.min(r)),
            (n, r) => n.or(r),
        }
    }
}

impl State {
    /// Writes (replaces) a partnership's plan.
    pub fn record_plan(&self, plan: &PlannedRun) -> Result<(), StateError> {
        self.sql(
            "cannot record the schedule",
            self.conn.execute(
                "INSERT OR REPLACE INTO schedule
                   (partnership, next_run_at, attempt, retry_at, retry_wait_ms, retry_reason, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    plan.partnership,
                    plan.next_run_at,
                    plan.attempt,
                    plan.retry_at,
                    plan.retry_wait_ms,
                    plan.retry_reason,
                    now_ms()
                ],
            ),
        )
        .map(|_| ())
    }

    /// Removes every plan but those of `keep` (all of them for an empty list).
    pub fn forget_plans_except(&self, keep: &[&str]) -> Result<(), StateError> {
        let keep = serde_json::to_string(keep).unwrap_or_else(|_| "[]".into());
        self.sql(
            "cannot record the schedule",
            self.conn.execute(
                "DELETE FROM schedule WHERE partnership NOT IN (SELECT value FROM json_each(?1))",
                [keep],
            ),
        )
        .map(|_| ())
    }

    /// A partnership's plan, if `agent run` wrote one.
    pub fn plan(&self, partnership: &str) -> Result<Option<PlannedRun>, StateError> {
        self.sql(
            "cannot read the schedule",
            self.conn
                .query_row(
                    "SELECT partnership, next_run_at, attempt, retry_at, retry_wait_ms, retry_reason, updated_at
                     FROM schedule WHERE partnership = ?1",
                    [partnership],
                    |r| {
                        Ok(PlannedRun {
                            partnership: r.get(0)?,
                            next_run_at: r.get(1)?,
                            attempt: r.get(2)?,
                            retry_at: r.get(3)?,
                            retry_wait_ms: r.get(4)?,
                            retry_reason: r.get(5)?,
                            updated_at: r.get(6)?,
                        })
                    },
                )
                .optional(),
        )
    }

    /// Deferred conflicts not yet settled on a store (open, or resolved by an operator and
    /// waiting for the next session).
    pub fn open_conflicts(&self, partnership: &str) -> Result<i64, StateError> {
        self.sql(
            "cannot read the conflict queue",
            self.conn.query_row(
                "SELECT count(*) FROM conflicts WHERE partnership = ?1 AND status <> 'resolved'",
                [partnership],
                |r| r.get(0),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_replaced_read_back_and_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(&dir.path().join("agent.db")).expect("state");
        assert_eq!(state.plan("ab").expect("read"), None);
        let retrying = PlannedRun {
            partnership: "ab".into(),
            next_run_at: Some(10_000),
            attempt: 3,
            retry_at: Some(4_000),
            retry_wait_ms: Some(4_000),
            retry_reason: Some("cannot connect".into()),
            updated_at: 0,
        };
        state.record_plan(&retrying).expect("write");
        state
            .record_plan(&PlannedRun {
                partnership: "cd".into(),
                next_run_at: Some(20_000),
                ..PlannedRun::default()
            })
            .expect("write");
        let read = state.plan("ab").expect("read").expect("plan");
        assert!(read.updated_at > 0);
        assert_eq!(
            read,
            PlannedRun {
                updated_at: read.updated_at,
                ..retrying.clone()
            }
        );
        assert_eq!(read.due_at(), Some(4_000));

        // A success: the retry is gone.
        state
            .record_plan(&PlannedRun {
                partnership: "ab".into(),
                next_run_at: Some(12_000),
                ..PlannedRun::default()
            })
            .expect("write");
        let read = state.plan("ab").expect("read").expect("plan");
        assert_eq!(
            (read.attempt, read.retry_at, read.due_at()),
            (0, None, Some(12_000))
        );

        state.forget_plans_except(&["cd"]).expect("forget");
        assert_eq!(state.plan("ab").expect("read"), None);
        assert!(state.plan("cd").expect("read").is_some());
        state.forget_plans_except(&[]).expect("forget");
        assert_eq!(state.plan("cd").expect("read"), None);
    }
}
