//! Change enumeration, seed 001's GetChangeBatch: given what the destination knows, the next
//! batch of changes it lacks, in seed 002's phase order (hierarchy, contents, read status,
//! message deletes, folder deletes).
//!
//! Per phase and per replica, the enumeration walks the index `sync_units(phase, r, t)`, merged
//! with the live items by creation version (units without a row carry it), over the tick ranges
//! the source's knowledge has and the destination's lacks only, so its cost follows
//! the number of changes returned, never the store's size; each hit names its item by rid, read
//! by rowid with its units and values in one statement. Versions newer than the knowledge the
//! session started with (`made_with`) are left for the next session: the batch's learned
//! knowledge then says exactly what it carries. In the phases of messages the hits are walked a
//! window of batches ahead and sent in id order ([`super::id_window`]); folders go as found.

use super::error::SqlContext;
use super::id_window::{is_windowed, window_len, IdWindow};
use super::items::{lacks_a_unit_row, ItemChange};
pub use super::scoped_export::ExportScope;
use super::scoped_export::{Expansion, Filler};
use super::{FastSet, Store, StoreError};
use crate::knowledge::{Knowledge, ReplicaId, TickSet, Version};
use crate::model::{Change, LeftChange, Phase};

/// Where an enumeration stands between batches: the phase, the replica (by position in the
/// session's sorted replica list) and the last tick looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnumerationCursor {
    phase: usize,
    replica: usize,
    pub(super) after: u64,
    /// A folder of a scoped session whose subtree is being sent.
    pub(super) expansion: Option<Expansion>,
    /// Folders a scoped session sent with their subtrees: one whose versions are still held
    /// back (its subtree unfinished) is not sent twice.
    pub(super) expanded: std::collections::HashSet<String>,
    /// Changes of the current phase and replica walked ahead, to be sent in id order
    /// ([`super::id_window`]).
    pub(super) window: IdWindow,
    /// The last batch taken from a window read its items in reverse rid order.
    pub(super) sweep_down: bool,
}

impl EnumerationCursor {
    pub fn phase(&self) -> Option<Phase> {
        Phase::ALL.get(self.phase).copied()
    }

    pub fn is_done(&self) -> bool {
        self.phase >= Phase::ALL.len() && self.expansion.is_none() && self.window.is_empty()
    }
}

/// One batch of an export: the items (in wire form), the replica table their versions index,
/// every version the batch carries, and whether the enumeration is finished.
#[derive(Debug)]
pub struct ExportBatch {
    pub phase: Phase,
    pub replicas: Vec<ReplicaId>,
    pub changes: Vec<Change>,
    pub versions: Vec<Version>,
    /// Items that left the session's scope (scoped sessions only).
    pub left: Vec<LeftChange>,
    /// The versions of the changes that made them leave.
    pub left_versions: Vec<Version>,
    pub payload_bytes: usize,
    pub done: bool,
}

/// How many index rows one query reads at a time.
pub(super) const CHUNK: i64 = 512;

/// Up to ?5 units of phase ?1 made by replica ?2 with ticks in ?3..=?4, in tick order, each with
/// its item's rid: a range of the covering index `sync_units_by_version` (units changed since
/// their item's creation) merged with a range of `sync_items_by_creation` (live items of kind
/// ?6, the phase's [`Phase::live_kind`], created then, each once if a unit of the phase has no
/// row and so carries the creation version; migrations 7 and 8).
pub(super) const CHANGED_UNITS: &str = concat!(
    "SELECT item, t FROM sync_units WHERE phase = ?1 AND r = ?2 AND t BETWEEN ?3 AND ?4 ",
    "UNION ALL SELECT i.rid, i.created_t FROM sync_items i ",
    "WHERE i.kind = ?6 AND i.created_r = ?2 AND i.created_t BETWEEN ?3 AND ?4 ",
    "AND i.deleted_at IS NULL AND ",
    lacks_a_unit_row!(" AND k.phase = ?1"),
    " ORDER BY 2 LIMIT ?5"
);

/// [`CHANGED_UNITS`] for a phase without live units (the deletes): its units all have rows.
pub(super) const CHANGED_UNIT_ROWS: &str = concat!(
    "SELECT item, t FROM sync_units WHERE phase = ?1 AND r = ?2 AND t BETWEEN ?3 AND ?4 ",
    "ORDER BY 2 LIMIT ?5"
);

impl Store {
    /// The next batch of at most `limit` items (and about `max_bytes` of values) whose versions
    /// `made_with` holds and `dest` lacks, continuing from `cursor`.
    pub fn next_batch(
        &mut self,
        cursor: &mut EnumerationCursor,
        made_with: &Knowledge,
        dest: &Knowledge,
        limit: usize,
        max_bytes: usize,
    ) -> Result<ExportBatch, StoreError> {
        let limit = limit.max(1);
        self.reading(|store| {
            let filler = Filler::new(store, None, limit, max_bytes)?;
            store.fill_batch(filler, cursor, made_with, dest)
        })
    }

    /// Runs `read` in one read transaction, so what it reads is a consistent snapshot (one per
    /// batch of an export).
    pub(super) fn reading<T>(
        &mut self,
        read: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn
            .execute_batch("BEGIN DEFERRED")
            .ctx(&self.path, "cannot begin reading")?;
        let result = read(self);
        let end = self
            .conn
            .execute_batch("COMMIT")
            .ctx(&self.path, "cannot end reading");
        let value = result?;
        end?;
        Ok(value)
    }

    /// [`Store::next_batch`] for a scoped session: what lies outside `scope` goes as a notice
    /// that it left, bodies are withheld if the scope says so, and a folder that is in scope
    /// brings along what lies below it that the destination does not hold yet (it may just
    /// have entered the scope).
    pub fn next_scoped_batch(
        &mut self,
        cursor: &mut EnumerationCursor,
        made_with: &Knowledge,
        dest: &Knowledge,
        scope: &ExportScope,
        limit: usize,
        max_bytes: usize,
    ) -> Result<ExportBatch, StoreError> {
        let limit = limit.max(1);
        self.reading(|store| {
            let filler = Filler::new(store, Some(scope), limit, max_bytes)?;
            store.fill_batch(filler, cursor, made_with, dest)
        })
    }

    fn fill_batch(
        &mut self,
        mut filler: Filler<'_>,
        cursor: &mut EnumerationCursor,
        made_with: &Knowledge,
        dest: &Knowledge,
    ) -> Result<ExportBatch, StoreError> {
        let replicas: Vec<ReplicaId> = made_with.replicas().cloned().collect();
        let mut batch_phase: Option<Phase> = None;
        // Items (by rid) this batch has looked at: an item has an index row per unit.
        let mut looked_at = FastSet::default();
        if cursor.expansion.is_some() {
            self.expand(&mut filler, cursor)?;
            batch_phase = cursor.phase();
        }

        'phases: while let Some(phase) = cursor.phase() {
            if filler.is_full() {
                break;
            }
            // A batch stays within one phase, so a batch's phase is what progress shows.
            if batch_phase.is_some_and(|bp| bp != phase) {
                break;
            }
            let Some(replica) = replicas.get(cursor.replica) else {
                cursor.phase += 1;
                cursor.replica = 0;
                cursor.after = 0;
                continue;
            };
            if !cursor.window.is_empty() {
                if self.take_from_window(&mut filler, cursor, dest, &mut looked_at)? {
                    batch_phase.get_or_insert(phase);
                }
                continue;
            }
            let missing = missing_ticks(made_with, dest, replica);
            let idx = self.index_of(replica)?;
            let next_range = idx.and_then(|_| range_after(&missing, cursor.after));
            let (Some(idx), Some((from, to))) = (idx, next_range) else {
                cursor.replica += 1;
                cursor.after = 0;
                continue;
            };
            if is_windowed(phase) {
                self.walk_window(cursor, phase, idx, &missing, window_len(filler.limit()))?;
                continue;
            }
            let rows = self.changed_units(phase, idx, (from, to), CHUNK)?;
            let exhausted = (rows.len() as i64) < CHUNK;
            for (item, t) in rows {
                let t = t.max(0) as u64;
                cursor.after = t;
                if !missing.contains(t) || !looked_at.insert(item) {
                    continue;
                }
                let Some(change) = self.read_item_change_at(item)? else {
                    continue;
                };
                // Every unit may already be known (sent earlier in this session), or the item
                // already in the batch (a subtree sent along with its folder).
                if change.versions().all(|v| dest.contains(v)) || filler.seen.contains(&change.id) {
                    continue;
                }
                batch_phase.get_or_insert(phase);
                self.admit(&mut filler, cursor, change)?;
                if filler.is_full() {
                    break 'phases;
                }
            }
            if exhausted {
                cursor.after = to;
            }
        }
        Ok(filler.finish(
            batch_phase
                .or(cursor.phase())
                .unwrap_or(Phase::FolderDeletes),
            cursor.is_done(),
        ))
    }
}

impl Store {
    /// Up to `limit` `(rid, tick)` hits of `phase` made by the replica at `idx` with ticks in
    /// `range`, in tick order ([`CHANGED_UNITS`], or [`CHANGED_UNIT_ROWS`] for the deletes).
    pub(super) fn changed_units(
        &self,
        phase: Phase,
        idx: i64,
        range: (u64, u64),
        limit: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let (from, to) = (range.0 as i64, range.1 as i64);
        let read = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
        match phase.live_kind() {
            Some(kind) => self.conn.prepare_cached(CHANGED_UNITS).and_then(|mut s| {
                let params = rusqlite::params![phase.code(), idx, from, to, limit, kind.code()];
                s.query_map(params, read)?.collect()
            }),
            None => self
                .conn
                .prepare_cached(CHANGED_UNIT_ROWS)
                .and_then(|mut s| {
                    let params = rusqlite::params![phase.code(), idx, from, to, limit];
                    s.query_map(params, read)?.collect()
                }),
        }
        .ctx(&self.path, "cannot enumerate changes")
    }
}

/// The first range of `missing` with ticks after `after`, from the first of them.
pub(super) fn range_after(missing: &TickSet, after: u64) -> Option<(u64, u64)> {
    missing
        .ranges()
        .find(|&(_, to)| to > after)
        .map(|(from, to)| (from.max(after + 1), to))
}

/// Ticks of `replica` that `made_with` holds and `dest` lacks.
fn missing_ticks(made_with: &Knowledge, dest: &Knowledge, replica: &ReplicaId) -> TickSet {
    let have = made_with.get(replica).cloned().unwrap_or_default();
    match dest.get(replica) {
        Some(known) => have.difference(known),
        None => have,
    }
}

/// A rough size of an item's values, to keep batches under the frame cap.
pub(super) fn approximate_size(change: &ItemChange) -> usize {
    approximate_item_size(&change.id, change.units.iter().map(|u| &u.value))
}

/// [`approximate_size`] of the item `id` with `values`, before they are its units.
pub(super) fn approximate_item_size<'v>(
    id: &str,
    values: impl Iterator<Item = &'v crate::model::UnitValue>,
) -> usize {
    values.map(approximate_value_size).sum::<usize>() + id.len() + 32
}

/// A rough size of one unit's value ([`approximate_size`]).
fn approximate_value_size(value: &crate::model::UnitValue) -> usize {
    use crate::model::UnitValue;
    match value {
        UnitValue::Content {
            subject,
            sender,
            headers,
            body,
            ..
        } => {
            let body = body.as_ref().map_or(0, |b| b.wire_len() + b.wire_len() / 8);
            subject.len() + sender.len() + headers.len() + body + 64
        }
        UnitValue::Name { name } => name.len() + 32,
        _ => 48,
    }
}
