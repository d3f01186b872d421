//! Tombstone cleanup and forgotten knowledge (seed 001, "Cleaning Up Deleted Items"): tombstones
//! older than the store's retention are removed, and the versions they carried become *forgotten
//! knowledge*, so a destination that never heard of those deletes is recognised as out of date
//! and recovered by a full enumeration (see `full`).
//!
//! Forgotten knowledge says "this store may no longer hold an item that carries one of these
//! versions". Claiming too much is always safe — it only makes a destination that lacks a
//! claimed version run a full enumeration it did not need — while claiming too little loses
//! deletes. It is kept compact this way:
//!
//! - every removed tombstone's deletion version is added (the Sync Framework rule);
//! - then, per replica touched, each gap below the highest forgotten tick (between forgotten
//!   ranges, and before the first) is filled when the store knows every tick of the gap *and*
//!   no item here still carries a version in it (no live unit, no remaining tombstone). Such
//!   ticks are changes long superseded or forgotten: a destination lacking one needs nothing
//!   this store could send incrementally. A tick that is the current version of a live change
//!   is never claimed, so a destination that lacks it (an item error, a deferred conflict) is
//!   not pushed into full enumerations for it.
//!
//! Cleanup is cheap when there is nothing to do: one probe of the partial index
//! `sync_items_by_deletion`, which holds tombstones only.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::error::SqlContext;
use super::items::lacks_a_unit_row;
use super::{Store, StoreError};
use crate::knowledge::{Knowledge, ReplicaId, TickSet};

/// How long a store keeps tombstones (config key `retention`, flag `--retention`): a number and
/// one of the units s, m, h, d, e.g. `30d`. `0s` removes every tombstone at the next cleanup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention(Duration);

impl Retention {
    pub fn new(period: Duration) -> Retention {
        Retention(period)
    }

    pub fn period(self) -> Duration {
        self.0
    }

    /// How often a daemon runs cleanup: a tenth of the retention, at most hourly, at least
    /// every second.
    pub fn interval(self) -> Duration {
        (self.0 / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }
}

impl FromStr for Retention {
    type Err = String;

    fn from_str(s: &str) -> Result<Retention, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let bad = || {
            format!("retention {s:?} is not a duration: write a number and s, m, h or d (e.g. 30d)")
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        n.checked_mul(scale)
            .map(|secs| Retention(Duration::from_secs(secs)))
            .ok_or_else(|| format!("retention {s:?} is too long"))
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            0 => write!(f, "0s"),
            s if s.is_multiple_of(86_400) => write!(f, "{}d", s / 86_400),
            s if s.is_multiple_of(3600) => write!(f, "{}h", s / 3600),
            s if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

/// What one cleanup did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Tombstones removed.
    pub removed: u64,
    /// The store's forgotten knowledge afterwards.
    pub forgotten: Knowledge,
}

/// Tombstones removed per statement round; all rounds share one transaction.
const CHUNK: i64 = 2000;

/// Whether any tombstone was written at or before ?1: one probe of `sync_items_by_deletion`.
pub(super) const ANY_OLD_TOMBSTONE: &str = "SELECT EXISTS (SELECT 1 FROM sync_items \
     WHERE deleted_at IS NOT NULL AND deleted_at <= ?1)";

/// Up to ?2 tombstones written at or before ?1 with their deletion versions: the deletion index,
/// then each tombstone's unit by its rid.
pub(super) const OLD_TOMBSTONES: &str = "SELECT i.rid, u.r, u.t FROM sync_items i \
     LEFT JOIN sync_units u ON u.item = i.rid \
     WHERE i.deleted_at IS NOT NULL AND i.deleted_at <= ?1 LIMIT ?2";

/// Whether any item carries a version of replica ?1 with a tick in ?2..=?3 (see
/// [`Store::carries_version_between`]).
pub(super) const CARRIES_VERSION_BETWEEN: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM sync_units WHERE phase IN (1, 2, 3, 4, 5) ",
    "AND r = ?1 AND t BETWEEN ?2 AND ?3) ",
    "OR EXISTS (SELECT 1 FROM sync_items i WHERE i.kind IN (0, 1) AND i.created_r = ?1 ",
    "AND i.created_t BETWEEN ?2 AND ?3 AND i.deleted_at IS NULL AND ",
    lacks_a_unit_row!(""),
    ")"
);

impl Store {
    /// Removes the tombstones whose deletion is older than `retention` and records their
    /// versions as forgotten knowledge, in one transaction.
    pub fn cleanup_tombstones(
        &mut self,
        retention: Retention,
    ) -> Result<CleanupReport, StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let cutoff = now.saturating_sub(retention.period().as_secs());
        self.cleanup_tombstones_before(i64::try_from(cutoff).unwrap_or(i64::MAX))
    }

    /// Removes the tombstones written at or before `cutoff` (unix seconds).
    pub fn cleanup_tombstones_before(&mut self, cutoff: i64) -> Result<CleanupReport, StoreError> {
        let p = self.path.clone();
        let any: bool = self
            .conn
            .prepare_cached(ANY_OLD_TOMBSTONE)
            .and_then(|mut s| s.query_row([cutoff], |r| r.get(0)))
            .ctx(&p, "cannot look for old tombstones")?;
        if !any {
            return Ok(CleanupReport {
                removed: 0,
                forgotten: self.forgotten_knowledge()?,
            });
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .ctx(&p, "cannot begin cleanup")?;
        match self.cleanup_in_transaction(cutoff) {
            Ok(report) => {
                self.conn
                    .execute_batch("COMMIT")
                    .ctx(&p, "cannot commit cleanup")?;
                Ok(report)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn cleanup_in_transaction(&mut self, cutoff: i64) -> Result<CleanupReport, StoreError> {
        let p = self.path.clone();
        let mut removed = Knowledge::new();
        let mut count = 0u64;
        loop {
            let rows: Vec<(i64, Option<i64>, Option<i64>)> = self
                .conn
                .prepare_cached(OLD_TOMBSTONES)
                .and_then(|mut s| {
                    s.query_map(rusqlite::params![cutoff, CHUNK], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?
                    .collect()
                })
                .ctx(&p, "cannot read old tombstones")?;
            let exhausted = (rows.len() as i64) < CHUNK;
            for (rid, r, t) in rows {
                if let (Some(r), Some(t)) = (r, t) {
                    removed.insert(&self.version_of(r, t)?);
                }
                self.forget_item(rid)?;
                count += 1;
            }
            if exhausted {
                break;
            }
        }
        let mut forgotten = self.forgotten_knowledge()?;
        forgotten.union_with(&removed);
        let touched: Vec<ReplicaId> = removed.replicas().cloned().collect();
        let knowledge = self.knowledge()?;
        self.compact_forgotten(&mut forgotten, &touched, &knowledge)?;
        self.save_forgotten(&forgotten)?;
        tracing::info!(store = %p.display(), removed = count, forgotten = %forgotten, "tombstones cleaned up");
        Ok(CleanupReport {
            removed: count,
            forgotten,
        })
    }

    /// Removes every trace of the item at `rid` from the sync metadata (not from the public
    /// tables). By rid, not id: a message's row, which links its id to the item, may be gone.
    pub(crate) fn forget_item(&mut self, rid: i64) -> Result<(), StoreError> {
        let p = &self.path;
        self.conn
            .prepare_cached("DELETE FROM sync_units WHERE item = ?1")
            .and_then(|mut s| s.execute([rid]))
            .ctx(p, "cannot remove an item's versions")?;
        self.conn
            .prepare_cached("DELETE FROM sync_items WHERE rid = ?1")
            .and_then(|mut s| s.execute([rid]))
            .ctx(p, "cannot remove an item")?;
        Ok(())
    }

    pub(crate) fn save_forgotten(&self, forgotten: &Knowledge) -> Result<(), StoreError> {
        let json = serde_json::to_string(forgotten).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            what: format!("cannot encode forgotten knowledge: {e}"),
        })?;
        self.conn
            .prepare_cached("UPDATE sync_state SET forgotten = ?1 WHERE id = 1")
            .and_then(|mut s| s.execute([json]))
            .map(|_| ())
            .ctx(&self.path, "cannot save forgotten knowledge")
    }

    /// Fills the gaps below each touched replica's highest forgotten tick that `knowledge` (the
    /// store's) holds in full and where no item here carries a version (see the module doc).
    pub(crate) fn compact_forgotten(
        &mut self,
        forgotten: &mut Knowledge,
        replicas: &[ReplicaId],
        knowledge: &Knowledge,
    ) -> Result<(), StoreError> {
        for replica in replicas {
            let (Some(ticks), Some(known)) = (forgotten.get(replica), knowledge.get(replica))
            else {
                continue;
            };
            let mut gaps = Vec::new();
            let mut next = 1u64;
            for (from, to) in ticks.ranges() {
                if from > next {
                    gaps.push((next, from - 1));
                }
                next = to.saturating_add(1);
            }
            let idx = self.index_of(replica)?;
            let mut filled = ticks.clone();
            for (from, to) in gaps {
                let mut gap = TickSet::new();
                gap.insert_range(from, to);
                if !known.is_superset_of(&gap) {
                    continue;
                }
                if let Some(idx) = idx {
                    if self.carries_version_between(idx, from, to)? {
                        continue;
                    }
                }
                filled.insert_range(from, to);
            }
            forgotten.set(replica, filled);
        }
        Ok(())
    }

    /// Whether any item here (live unit or tombstone) carries a version of replica `idx` with a
    /// tick in `from..=to`: one seek per phase of the version index, then one per kind of the
    /// live items created then whose units without a row carry their creation version
    /// (migrations 7 and 8).
    fn carries_version_between(&self, idx: i64, from: u64, to: u64) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(CARRIES_VERSION_BETWEEN)
            .and_then(|mut s| {
                s.query_row(rusqlite::params![idx, from as i64, to as i64], |r| r.get(0))
            })
            .ctx(&self.path, "cannot look up versions")
    }
}
