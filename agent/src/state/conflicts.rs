//! The operator's queue of deferred conflicts (seed 004, "Protokollkonflikt": the conflict is
//! logged and left for someone to decide).
//!
//! A conflict under the `defer` policy comes again every session, in each direction of a two-way
//! partnership; the queue keeps one row per partnership, item and change unit while it is not
//! settled, counting how often sessions met it. "Local" is the store that deferred it first.
//! `agent resolve` records the winning *version*; every later session of the partnership sends
//! it to the collector, which applies it when it meets the conflict again, whichever side it is
//! on (see `shared::store::conflict`). The row is settled when a session reports it resolved; if
//! meanwhile one side changed again, the choice no longer names either side and the conflict is
//! open again, with the new values.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use shared::knowledge::Version;
use shared::store::{Outcome, ReportedConflict, Resolution};

use super::{now_ms, State, StateError};

/// One conflict in the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueuedConflict {
    pub id: i64,
    pub partnership: String,
    pub item: String,
    pub kind: String,
    pub unit: String,
    pub label: String,
    pub local_store: String,
    pub remote_store: String,
    pub local_version: Version,
    pub remote_version: Version,
    pub local_value: String,
    pub remote_value: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub times_seen: i64,
    /// open | resolving (chosen, waiting for the next session) | resolved
    pub status: String,
    /// The side an operator chose: "local" or "remote".
    pub keep: Option<String>,
}

/// Which side of a conflict wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Keep {
    /// The value of the store that deferred the conflict first.
    Local,
    /// The value of the other store.
    Remote,
}

/// Why a resolution was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no conflict {0} in the queue; `agent conflicts` lists them")]
    Unknown(i64),
    #[error("conflict {0} is already resolved")]
    AlreadyResolved(i64),
    #[error(transparent)]
    State(#[from] StateError),
}

const COLUMNS: &str = "id, partnership, item, kind, unit, label, local_store, remote_store, \
    local_version, remote_version, local_value, remote_value, first_seen, last_seen, times_seen, \
    status, winner";

impl State {
    /// Records what a session of `partnership` from `source` to `destination` reported:
    /// deferred conflicts join the queue (or are counted again), resolved ones leave it.
    pub fn record_conflicts(
        &self,
        partnership: &str,
        source: &str,
        destination: &str,
        conflicts: &[ReportedConflict],
    ) -> Result<(), StateError> {
        for c in conflicts {
            let unit = name_of(&c.unit);
            match c.outcome {
                Outcome::Deferred => {
                    self.record_deferred(partnership, source, destination, &unit, c)?
                }
                Outcome::Resolved => {
                    self.sql(
                        "cannot settle a conflict",
                        self.conn.execute(
                            "UPDATE conflicts SET status = 'resolved', resolved_at = ?4 \
                             WHERE partnership = ?1 AND item = ?2 AND unit = ?3 AND status <> 'resolved'",
                            params![partnership, c.item, unit, now_ms()],
                        ),
                    )?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn record_deferred(
        &self,
        partnership: &str,
        source: &str,
        destination: &str,
        unit: &str,
        c: &ReportedConflict,
    ) -> Result<(), StateError> {
        let existing = self.find_unsettled(partnership, &c.item, unit)?;
        let Some(row) = existing else {
            return self
                .sql(
                    "cannot queue a conflict",
                    self.conn.execute(
                        "INSERT INTO conflicts (partnership, item, kind, unit, label, local_store, \
                         remote_store, local_version, remote_version, local_value, remote_value, \
                         first_seen, last_seen, times_seen, status) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, 1, 'open')",
                        params![
                            partnership,
                            c.item,
                            name_of(&c.kind),
                            unit,
                            c.label,
                            destination,
                            source,
                            json(&c.local),
                            json(&c.remote),
                            c.local_value,
                            c.remote_value,
                            now_ms()
                        ],
                    ),
                )
                .map(|_| ());
        };
        // Seen from the row's "local" store, or from the other side (versions swapped).
        let (local, remote, local_value, remote_value) = if row.local_store == destination {
            (&c.local, &c.remote, &c.local_value, &c.remote_value)
        } else {
            (&c.remote, &c.local, &c.remote_value, &c.local_value)
        };
        let choice = row.keep.as_deref().map(|k| match k {
            "local" => &row.local_version,
            _ => &row.remote_version,
        });
        // A choice that names neither side any more (one side changed again) is void.
        let still_chosen = choice.is_some_and(|w| w == local || w == remote);
        self.sql(
            "cannot queue a conflict",
            self.conn.execute(
                "UPDATE conflicts SET local_version = ?2, remote_version = ?3, local_value = ?4, \
                 remote_value = ?5, label = CASE WHEN ?6 = '' THEN label ELSE ?6 END, \
                 last_seen = ?7, times_seen = times_seen + 1, \
                 status = CASE WHEN ?8 THEN status ELSE 'open' END, \
                 winner = CASE WHEN ?8 THEN winner ELSE NULL END WHERE id = ?1",
                params![
                    row.id,
                    json(local),
                    json(remote),
                    local_value,
                    remote_value,
                    c.label,
                    now_ms(),
                    still_chosen
                ],
            ),
        )
        .map(|_| ())
    }

    fn find_unsettled(
        &self,
        partnership: &str,
        item: &str,
        unit: &str,
    ) -> Result<Option<QueuedConflict>, StateError> {
        self.sql(
            "cannot read the conflict queue",
            self.conn
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM conflicts WHERE partnership = ?1 AND item = ?2 \
                         AND unit = ?3 AND status <> 'resolved'"
                    ),
                    params![partnership, item, unit],
                    queued,
                )
                .optional(),
        )
    }

    /// The queue: every conflict not yet settled, or with `all` the settled ones too; oldest
    /// first.
    pub fn conflicts(&self, all: bool) -> Result<Vec<QueuedConflict>, StateError> {
        let filter = if all {
            ""
        } else {
            "WHERE status <> 'resolved'"
        };
        self.sql(
            "cannot read the conflict queue",
            self.conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM conflicts {filter} ORDER BY id"
                ))
                .and_then(|mut s| s.query_map([], queued)?.collect()),
        )
    }

    /// Records an operator's choice for conflict `id`; it goes out with the partnership's next
    /// session.
    pub fn resolve(&self, id: i64, keep: Keep) -> Result<QueuedConflict, ResolveError> {
        let row = self
            .sql(
                "cannot read the conflict queue",
                self.conn
                    .query_row(
                        &format!("SELECT {COLUMNS} FROM conflicts WHERE id = ?1"),
                        [id],
                        queued,
                    )
                    .optional(),
            )?
            .ok_or(ResolveError::Unknown(id))?;
        if row.status == "resolved" {
            return Err(ResolveError::AlreadyResolved(id));
        }
        let winner = match keep {
            Keep::Local => &row.local_version,
            Keep::Remote => &row.remote_version,
        };
        self.sql(
            "cannot record a resolution",
            self.conn.execute(
                "UPDATE conflicts SET status = 'resolving', winner = ?2 WHERE id = ?1",
                params![id, json(winner)],
            ),
        )?;
        Ok(QueuedConflict {
            status: "resolving".into(),
            keep: Some(keep_name(keep).into()),
            ..row
        })
    }

    /// The operators' choices waiting for `partnership`'s next session.
    pub fn resolutions(&self, partnership: &str) -> Result<Vec<Resolution>, StateError> {
        let rows: Vec<(String, String, String)> = self.sql(
            "cannot read the conflict queue",
            self.conn
                .prepare(
                    "SELECT item, unit, winner FROM conflicts \
                     WHERE partnership = ?1 AND status = 'resolving' ORDER BY id",
                )
                .and_then(|mut s| {
                    s.query_map([partnership], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect()
                }),
        )?;
        rows.into_iter()
            .map(|(item, unit, winner)| {
                let corrupt = |what: String| StateError::Corrupt {
                    path: self.path.clone(),
                    what,
                };
                Ok(Resolution {
                    item,
                    unit: serde_json::from_value(serde_json::Value::String(unit.clone()))
                        .map_err(|e| corrupt(format!("conflict unit {unit:?}: {e}")))?,
                    winner: serde_json::from_str(&winner)
                        .map_err(|e| corrupt(format!("conflict winner {winner:?}: {e}")))?,
                })
            })
            .collect()
    }
}

impl State {
    /// A version for people: the store's name instead of its replica id (`laptop5`).
    pub fn named_version(&self, v: &Version) -> Result<String, StateError> {
        let store: Option<String> = self.sql(
            "cannot read replicas",
            self.conn
                .query_row(
                    "SELECT store FROM replicas WHERE replica = ?1",
                    [v.replica.as_str()],
                    |r| r.get(0),
                )
                .optional(),
        )?;
        Ok(match store {
            Some(name) => Version {
                replica: name.as_str().into(),
                tick: v.tick,
            }
            .to_string(),
            None => v.to_string(),
        })
    }
}

fn keep_name(keep: Keep) -> &'static str {
    match keep {
        Keep::Local => "local",
        Keep::Remote => "remote",
    }
}

/// A serde enum's name ("content", "folder").
fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn json(v: &Version) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn queued(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedConflict> {
    let version = |i: usize| -> rusqlite::Result<Version> {
        let text: String = r.get(i)?;
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    let local_version = version(8)?;
    let remote_version = version(9)?;
    let winner: Option<String> = r.get(16)?;
    let winner: Option<Version> = winner.and_then(|w| serde_json::from_str(&w).ok());
    let keep = winner.map(|w| {
        if w == local_version {
            "local".to_string()
        } else {
            "remote".to_string()
        }
    });
    Ok(QueuedConflict {
        id: r.get(0)?,
        partnership: r.get(1)?,
        item: r.get(2)?,
        kind: r.get(3)?,
        unit: r.get(4)?,
        label: r.get(5)?,
        local_store: r.get(6)?,
        remote_store: r.get(7)?,
        local_version,
        remote_version,
        local_value: r.get(10)?,
        remote_value: r.get(11)?,
        first_seen: r.get(12)?,
        last_seen: r.get(13)?,
        times_seen: r.get(14)?,
        status: r.get(15)?,
        keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::model::{ItemKind, Unit};

    fn v(r: &str, t: u64) -> Version {
        Version {
            replica: r.into(),
            tick: t,
        }
    }

    fn deferred(local: Version, remote: Version, local_value: &str) -> ReportedConflict {
        ReportedConflict {
            item: "m1".into(),
            kind: ItemKind::Message,
            unit: Unit::Content,
            local,
            remote,
            outcome: Outcome::Deferred,
            label: "Budget".into(),
            local_value: local_value.into(),
            remote_value: "other".into(),
        }
    }

    #[test]
    fn a_conflict_met_from_both_sides_is_one_row_and_a_choice_goes_out_until_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(&dir.path().join("agent.db")).expect("state");
        // Deferred on b (a's change incoming), then on a (b's change incoming).
        state
            .record_conflicts("ab", "a", "b", &[deferred(v("B", 4), v("A", 5), "b's")])
            .expect("record");
        state
            .record_conflicts("ab", "b", "a", &[deferred(v("A", 5), v("B", 4), "a's")])
            .expect("record");
        let queue = state.conflicts(false).expect("queue");
        assert_eq!(queue.len(), 1, "{queue:?}");
        let q = &queue[0];
        assert_eq!(
            (q.local_store.as_str(), q.remote_store.as_str()),
            ("b", "a")
        );
        assert_eq!(
            (q.local_version.clone(), q.remote_version.clone()),
            (v("B", 4), v("A", 5))
        );
        assert_eq!((q.times_seen, q.local_value.as_str()), (2, "other"));
        assert_eq!(state.open_conflicts("ab").expect("count"), 1);
        assert!(state.resolutions("ab").expect("none").is_empty());

        let chosen = state.resolve(q.id, Keep::Remote).expect("resolve");
        assert_eq!(chosen.keep.as_deref(), Some("remote"));
        let out = state.resolutions("ab").expect("resolutions");
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].unit, out[0].winner.clone()),
            (Unit::Content, v("A", 5))
        );

        let mut settled = deferred(v("B", 4), v("A", 5), "");
        settled.outcome = Outcome::Resolved;
        state
            .record_conflicts("ab", "a", "b", &[settled])
            .expect("settle");
        assert!(state.conflicts(false).expect("queue").is_empty());
        assert_eq!(state.conflicts(true).expect("all").len(), 1);
        assert_eq!(state.open_conflicts("ab").expect("count"), 0);
        assert!(matches!(
            state.resolve(q.id, Keep::Local),
            Err(ResolveError::AlreadyResolved(_))
        ));
        assert!(matches!(
            state.resolve(99, Keep::Local),
            Err(ResolveError::Unknown(99))
        ));
    }

    #[test]
    fn a_choice_that_names_neither_side_any_more_opens_the_conflict_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(&dir.path().join("agent.db")).expect("state");
        state
            .record_conflicts("ab", "a", "b", &[deferred(v("B", 4), v("A", 5), "x")])
            .expect("record");
        let id = state.conflicts(false).expect("queue")[0].id;
        state.resolve(id, Keep::Local).expect("resolve");
        // a edited again before the choice went out: A7 is new to the operator.
        state
            .record_conflicts("ab", "a", "b", &[deferred(v("B", 4), v("A", 7), "x")])
            .expect("record");
        let q = &state.conflicts(false).expect("queue")[0];
        // B4 is still one side: the choice of "local" stands.
        assert_eq!(q.status, "resolving");
        state
            .record_conflicts("ab", "a", "b", &[deferred(v("B", 6), v("A", 7), "y")])
            .expect("record");
        let q = &state.conflicts(false).expect("queue")[0];
        assert_eq!((q.status.as_str(), q.keep.clone()), ("open", None));
        assert!(state.resolutions("ab").expect("none").is_empty());
    }
}
