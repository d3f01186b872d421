//! Message changes handed out in id order, a window of batches at a time: what keeps the
//! destination's id index from being rewritten whole by every batch.
//!
//! An enumeration finds changes in the order their versions were made (seed 001: the tick
//! ranges the destination lacks), and an application names its messages as it likes
//! (PRODUCT.md: any text id). With ids in no order, a batch of 1000 new messages lands on leaves
//! all over the destination's `messages` id index, and each batch's commit (PRODUCT.md: a batch
//! is applied atomically, success after commit) writes every leaf it touched into the WAL again:
//! at 100k messages ~470 of each batch's ~750 WAL frames (`bench/PROFILE.md`, rounds eight and
//! fifteen). The applier already orders a batch by id (`apply::in_apply_order`); that does not
//! change which leaves a batch touches.
//!
//! So for the phases of messages the enumeration walks ahead by [`WINDOW_BATCHES`] batches'
//! worth of changes in tick order, sorts them by id, and the next batches take them from the
//! front: each batch then carries a slice of the id space and lands on a third of the leaves
//! (~280 instead of ~590 at 100k). Nothing else changes:
//! - a batch still stays within one phase and one replica's ticks, and learns exactly the
//!   versions it carries (seed 001's learned knowledge, `project`ed in the export); the
//!   session's last batch learns the knowledge it was made with, as before;
//! - an item is read when its batch is filled, in that batch's read transaction, so a batch
//!   is still one consistent snapshot; one changed since the walk is sent as it is now (its
//!   newer versions stay unlearned, as before), one deleted since is left to its delete;
//! - an item met twice (a unit per tick) is queued once; one already sent is skipped by its
//!   versions, as before.
//!
//! What it costs, and why the window is three batches and no more (`bench/PROFILE.md`, round
//! fifteen):
//! - the destination's knowledge is fragmented while a window is being sent (it learns
//!   scattered ticks of the window) and whole again at the window's end: more ranges to read,
//!   write and send back with each batch, the more the wider the window;
//! - a batch's messages lie all over the window's pages at the source. A window of three
//!   batches (~8 MB of messages) about fits the export's page cache
//!   (`EXPORT_PAGE_CACHE_MIB`); a batch reads its messages in rid order, the next one in
//!   reverse, so each starts on the pages the last one left in the cache;
//! - the window holds two integers per change, not the changes.
//!
use std::collections::VecDeque;
use std::rc::Rc;

use rusqlite::vtab::array::Array;

use super::enumerate::{range_after, EnumerationCursor, CHUNK};
use super::error::SqlContext;
use super::items::ItemChange;
use super::scoped_export::Filler;
use super::{FastMap, FastSet, Store, StoreError};
use crate::knowledge::{Knowledge, TickSet};
use crate::model::{ItemKind, Phase};

/// Batches' worth of changes a window holds (see the module's text).
pub(super) const WINDOW_BATCHES: usize = 3;

/// At most this many changes in a window, whatever the batch size: about what the export's page
/// cache holds of ~2 KiB messages. A batch larger than this is a window of its own.
pub(super) const WINDOW_MAX: usize = 3_000;

/// The global ids of the items whose rids are in the array ?1 (`rarray`), with their rids: one
/// statement for a window's items instead of one run per item (`bench/PROFILE.md`, round
/// twenty-two).
pub(super) const IDS_AT: &str =
    "SELECT i.rid, i.id FROM rarray(?1) a JOIN sync_items i ON i.rid = a.value";

/// The changes walked ahead: `(rid, tick)` pairs in the id order of their items, the next first.
pub(super) type IdWindow = VecDeque<(i64, u64)>;

/// Whether the changes of `phase` are sent a window at a time: those of messages.
pub(super) fn is_windowed(phase: Phase) -> bool {
    phase.live_kind() == Some(ItemKind::Message)
}

/// How many changes a window walks ahead for batches of `limit`.
pub(super) fn window_len(limit: usize) -> usize {
    limit
        .saturating_mul(WINDOW_BATCHES)
        .min(WINDOW_MAX)
        .max(limit)
}

impl Store {
    /// Walks from the cursor over the ticks of `missing` (replica at `idx`, `phase`) until
    /// `len` items are found or the ticks end, and queues the items in id order. The
    /// cursor moves past everything walked.
    pub(super) fn walk_window(
        &mut self,
        cursor: &mut EnumerationCursor,
        phase: Phase,
        idx: i64,
        missing: &TickSet,
        len: usize,
    ) -> Result<(), StoreError> {
        let mut hits: Vec<(i64, u64)> = Vec::new();
        let mut queued = FastSet::default();
        while hits.len() < len {
            let Some((from, to)) = range_after(missing, cursor.after) else {
                break;
            };
            let want = CHUNK.min((len - hits.len()) as i64);
            let rows = self.changed_units(phase, idx, (from, to), want)?;
            let exhausted = (rows.len() as i64) < want;
            for (item, t) in rows {
                let t = t.max(0) as u64;
                cursor.after = t;
                if missing.contains(t) && queued.insert(item) {
                    hits.push((item, t));
                }
            }
            if exhausted {
                cursor.after = to;
            }
        }
        let ticks: FastMap<i64, u64> = hits.iter().copied().collect();
        let rids: Array = Rc::new(
            hits.iter()
                .map(|&(item, _)| rusqlite::types::Value::Integer(item))
                .collect(),
        );
        // An item gone since (in this same read transaction: none) has no row: nothing to send.
        let mut keyed: Vec<(String, i64, u64)> = self
            .conn
            .prepare_cached(IDS_AT)
            .and_then(|mut stmt| {
                stmt.query_map([rids], |r| {
                    let item: i64 = r.get(0)?;
                    Ok((
                        r.get(1)?,
                        item,
                        ticks.get(&item).copied().unwrap_or_default(),
                    ))
                })?
                .collect()
            })
            .ctx(&self.path, "cannot read the items' ids")?;
        keyed.sort_unstable();
        cursor.window = keyed.into_iter().map(|(_, item, t)| (item, t)).collect();
        Ok(())
    }

    /// Fills the batch from the front of the cursor's window: the next batch's worth, read in
    /// rid order, every other batch in reverse (the source's pages in order, starting where the
    /// last batch left the cache; the applier orders them by id again). What does not fit goes
    /// back to the window's front.
    pub(super) fn take_from_window(
        &mut self,
        filler: &mut Filler<'_>,
        cursor: &mut EnumerationCursor,
        dest: &Knowledge,
        looked_at: &mut FastSet<i64>,
    ) -> Result<bool, StoreError> {
        let n = filler.room().min(cursor.window.len());
        let mut next: Vec<(i64, u64)> = cursor.window.drain(..n).collect();
        next.sort_unstable();
        cursor.sweep_down = !cursor.sweep_down;
        if cursor.sweep_down {
            next.reverse();
        }
        let mut admitted = false;
        // Read ahead with one statement, the batch's room in bytes at a time.
        let mut read: FastMap<i64, Option<ItemChange>> = FastMap::default();
        for (pos, &(item, _)) in next.iter().enumerate() {
            if filler.is_full() {
                for &rest in next[pos..].iter().rev() {
                    cursor.window.push_front(rest);
                }
                break;
            }
            if !looked_at.insert(item) {
                continue;
            }
            if !read.contains_key(&item) {
                let ahead = next[pos + 1..].iter().map(|&(rid, _)| rid);
                let ahead: Vec<i64> = std::iter::once(item)
                    .chain(ahead.filter(|rid| !looked_at.contains(rid)))
                    .collect();
                read.extend(self.read_item_changes_at(&ahead, filler.bytes_left())?);
            }
            let Some(change) = read.remove(&item).flatten() else {
                continue;
            };
            // Deleted since the walk: its delete goes in its own phase, by its own tick.
            if change.is_tombstone() {
                continue;
            }
            if change.versions().all(|v| dest.contains(v)) || filler.seen.contains(&change.id) {
                continue;
            }
            admitted = true;
            self.admit(filler, cursor, change)?;
        }
        Ok(admitted)
    }
}
