//! Full enumeration (seed 001, "Recovering an Out-of-Date Replica"): when a destination lacks
//! part of the source's forgotten knowledge, it may still hold items whose deletes the source
//! has forgotten, so the source sends everything it has instead of what the destination lacks.
//!
//! The source walks its items by id in two passes, folders then messages (a folder's messages
//! never wait long for it), live items and remaining tombstones alike. Each batch covers an id
//! range of one pass: from after the previous batch's last id up to its own last id, the pass's
//! last batch up to the end. The destination applies the items through the normal applier
//! (conflict rules included; a tombstone here is never revived by a stale live copy, because the
//! version comparison skips versions it knows), then *drops* each local item of that kind in the
//! range that the batch does not carry and whose every version the source's `made_with` holds:
//! the source knew it and no longer has it, so it was deleted there and forgotten. A drop takes
//! no tick; the item's versions become forgotten here too. Items the source does not know are
//! kept and travel on. Folders found this way are dropped at the end, when the messages pass
//! has emptied them; one that still holds items made here is kept and given a new local version
//! so it travels back to the source (seed 003: restore the parent, as `constraint` does when a
//! folder delete meets unseen items; nothing is lost).
//!
//! The destination records how far it got (`sync_full_enumeration`, written in each batch's
//! transaction) with the source knowledge the enumeration started with and the versions it did
//! not apply; a later session resumes there. At the end it learns the source's knowledge —
//! intersected with the starting knowledge and minus those versions, since the earlier ranges
//! were done against it — and its forgotten knowledge absorbs the source's.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::apply::{ApplyOutcome, ImportSession};
use super::enumerate::{approximate_size, ExportBatch};
use super::error::SqlContext;
use super::items::{ItemChange, ReplicaTable};
use super::{Store, StoreError};
use crate::knowledge::{Knowledge, ReplicaId};
use crate::model::{ItemKind, Phase};

/// Where a full enumeration stands: the pass and the last item id done (none: the pass has not
/// started).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullPosition {
    pub kind: ItemKind,
    pub after: Option<String>,
}

impl FullPosition {
    pub fn start() -> FullPosition {
        FullPosition {
            kind: ItemKind::Folder,
            after: None,
        }
    }
}

/// The id range one full-enumeration batch covers, and the source's forgotten knowledge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullRange {
    /// The pass: every change of the batch is of this kind.
    pub kind: ItemKind,
    /// Ids above this one (none: from the pass's first id).
    pub after: Option<String>,
    /// Ids up to and including this one (none: to the end of the pass).
    pub upto: Option<String>,
    /// The source's forgotten knowledge, absorbed by the destination at the end.
    pub forgotten: Knowledge,
}

impl FullRange {
    /// Whether `id` lies in the range.
    pub fn holds(&self, id: &str) -> bool {
        self.after.as_deref().is_none_or(|a| id > a) && self.upto.as_deref().is_none_or(|u| id <= u)
    }

    /// Where the enumeration stands after this batch (`None`: it is finished).
    pub fn next(&self) -> Option<FullPosition> {
        match (&self.upto, self.kind) {
            (Some(upto), kind) => Some(FullPosition {
                kind,
                after: Some(upto.clone()),
            }),
            (None, ItemKind::Folder) => Some(FullPosition {
                kind: ItemKind::Message,
                after: None,
            }),
            (None, ItemKind::Message) => None,
        }
    }

    /// Checks a received batch: it continues from `expected`, its changes lie in its range and
    /// are of its kind, and it is the session's last exactly when it ends the enumeration.
    pub fn check(
        &self,
        expected: &FullPosition,
        changes: &[ItemChange],
        last: bool,
    ) -> Result<(), String> {
        if self.kind != expected.kind || self.after != expected.after {
            return Err(format!(
                "full enumeration batch starts at {:?} after {:?} where {:?} after {:?} was due",
                self.kind, self.after, expected.kind, expected.after
            ));
        }
        if let Some(c) = changes
            .iter()
            .find(|c| c.kind != self.kind || !self.holds(&c.id))
        {
            return Err(format!(
                "item {} ({:?}) lies outside the batch's range",
                c.id, c.kind
            ));
        }
        if last != self.next().is_none() {
            return Err("a full enumeration ends exactly with the messages pass".into());
        }
        Ok(())
    }
}

/// One batch of a full enumeration at the source.
#[derive(Debug)]
pub struct FullBatch {
    pub batch: ExportBatch,
    pub kind: ItemKind,
    pub after: Option<String>,
    pub upto: Option<String>,
}

impl Store {
    /// The next full-enumeration batch from `position`: at most `limit` items (and about
    /// `max_bytes` of values) of the pass's kind, by id.
    pub fn next_full_batch(
        &mut self,
        position: &mut FullPosition,
        limit: usize,
        max_bytes: usize,
    ) -> Result<FullBatch, StoreError> {
        let limit = limit.max(1);
        self.reading(|store| store.fill_full_batch(position, limit, max_bytes))
    }

    fn fill_full_batch(
        &mut self,
        position: &mut FullPosition,
        limit: usize,
        max_bytes: usize,
    ) -> Result<FullBatch, StoreError> {
        let ids = self.item_ids(position.kind, position.after.as_deref(), None, limit)?;
        let exhausted = ids.len() < limit;
        let mut table = ReplicaTable::default();
        let (mut changes, mut versions, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        let mut upto = None;
        for id in &ids {
            let Some(mut change) = self.read_item_change(id)? else {
                continue;
            };
            super::limits::cap_for_sending(&mut change);
            bytes += approximate_size(&change);
            versions.extend(change.versions().cloned());
            changes.push(change.into_wire(&mut table));
            upto = Some(id.clone());
            if bytes >= max_bytes {
                break;
            }
        }
        let whole = exhausted && upto.as_ref() == ids.last();
        let kind = position.kind;
        let after = position.after.take();
        let upto = if whole { None } else { upto.or(after.clone()) };
        let range = FullRange {
            kind,
            after: after.clone(),
            upto: upto.clone(),
            forgotten: Knowledge::new(),
        };
        let done = range.next().is_none();
        if let Some(next) = range.next() {
            *position = next;
        }
        Ok(FullBatch {
            batch: ExportBatch {
                phase: match kind {
                    ItemKind::Folder => Phase::Hierarchy,
                    ItemKind::Message => Phase::Contents,
                },
                replicas: table.into_ids(),
                changes,
                versions,
                left: Vec::new(),
                left_versions: Vec::new(),
                payload_bytes: bytes,
                done,
            },
            kind,
            after,
            upto,
        })
    }

    /// Ids of `kind` in `(after, upto]` (from the first id when `after` is none), in id order,
    /// at most `limit` (0: all). Folders: a range scan of `sync_items_by_id` (which holds every
    /// folder item, live or tombstone). Messages: the live ones by `messages`' id index merged
    /// with the tombstones by `sync_items_by_id` (migration 6), both ranges in id order.
    fn item_ids(
        &self,
        kind: ItemKind,
        after: Option<&str>,
        upto: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let limit = if limit == 0 { -1 } else { limit as i64 };
        self.conn
            .prepare_cached(&item_ids_sql(kind, after.is_some()))
            .and_then(|mut s| {
                s.query_map(rusqlite::params![after.unwrap_or(""), upto, limit], |r| {
                    r.get(0)
                })?
                .collect()
            })
            .ctx(&self.path, "cannot enumerate items")
    }

    /// Where an interrupted full enumeration from `source` stopped, if one did.
    pub fn full_position(&self, source: &ReplicaId) -> Result<Option<FullPosition>, StoreError> {
        use rusqlite::OptionalExtension;
        let row: Option<(i64, Option<String>)> = self
            .conn
            .prepare_cached("SELECT kind, after FROM sync_full_enumeration WHERE source = ?1")
            .and_then(|mut s| {
                s.query_row([source.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .ctx(&self.path, "cannot read full enumeration progress")?;
        row.map(|(kind, after)| {
            let kind = ItemKind::from_code(kind).ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("full enumeration progress names kind {kind}"),
            })?;
            Ok(FullPosition { kind, after })
        })
        .transpose()
    }

    /// Applies one full-enumeration batch (see the module doc). `carried` lists every id the
    /// batch carries, including items refused before applying (they exist at the source).
    pub fn apply_full_batch(
        &mut self,
        session: &mut ImportSession,
        changes: &[ItemChange],
        carried: &HashSet<String>,
        learned: &Knowledge,
        last: bool,
        range: &FullRange,
    ) -> Result<ApplyOutcome, StoreError> {
        self.apply_batch_with(
            session,
            changes,
            learned,
            last,
            &mut |store, session, learned, _outcome| {
                store.finish_full_batch(session, carried, learned, last, range)
            },
        )
    }

    fn finish_full_batch(
        &mut self,
        session: &ImportSession,
        carried: &HashSet<String>,
        learned: &mut Knowledge,
        last: bool,
        range: &FullRange,
    ) -> Result<(), StoreError> {
        let source = session.source.as_str().to_string();
        let (base, mut excluded) = self.full_progress(&source, &session.made_with)?;
        let mut dropped = Knowledge::new();
        let local = self.item_ids(range.kind, range.after.as_deref(), range.upto.as_deref(), 0)?;
        for id in local.iter().filter(|id| !carried.contains(*id)) {
            self.drop_if_forgotten(session, &source, id, &mut dropped)?;
        }
        for v in &session.excluded {
            excluded.insert(v);
        }
        let mut forgotten = self.forgotten_knowledge()?;
        forgotten.union_with(&dropped);
        if let Some(next) = range.next().filter(|_| !last) {
            self.save_full_progress(&source, &next, &base, &excluded)?;
            return self.save_forgotten(&forgotten);
        }
        self.drop_folders(session, &source, &mut forgotten)?;
        *learned = learned.intersect(&base).difference(&excluded);
        forgotten.union_with(&range.forgotten);
        let touched: Vec<ReplicaId> = forgotten.replicas().cloned().collect();
        let knows = self.knowledge()?.union(learned);
        self.compact_forgotten(&mut forgotten, &touched, &knows)?;
        self.save_forgotten(&forgotten)?;
        self.conn
            .prepare_cached("DELETE FROM sync_full_enumeration WHERE source = ?1")
            .and_then(|mut s| s.execute([&source]))
            .ctx(&self.path, "cannot end full enumeration")?;
        Ok(())
    }

    /// The enumeration's starting knowledge and the versions left out so far (a new
    /// enumeration starts from this session's `made_with`).
    fn full_progress(
        &self,
        source: &str,
        made_with: &Knowledge,
    ) -> Result<(Knowledge, Knowledge), StoreError> {
        use rusqlite::OptionalExtension;
        let row: Option<(String, String)> = self
            .conn
            .prepare_cached("SELECT base, excluded FROM sync_full_enumeration WHERE source = ?1")
            .and_then(|mut s| {
                s.query_row([source], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .ctx(&self.path, "cannot read full enumeration progress")?;
        match row {
            Some((base, excluded)) => Ok((
                self.parse_knowledge(&base, "full enumeration base")?,
                self.parse_knowledge(&excluded, "full enumeration exclusions")?,
            )),
            None => Ok((made_with.clone(), Knowledge::new())),
        }
    }

    fn save_full_progress(
        &self,
        source: &str,
        next: &FullPosition,
        base: &Knowledge,
        excluded: &Knowledge,
    ) -> Result<(), StoreError> {
        let encode = |k: &Knowledge| {
            serde_json::to_string(k).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("cannot encode knowledge: {e}"),
            })
        };
        let (base, excluded) = (encode(base)?, encode(excluded)?);
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO sync_full_enumeration (source, kind, after, base, excluded) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    source,
                    next.kind.code(),
                    next.after,
                    base,
                    excluded
                ])
            })
            .map(|_| ())
            .ctx(&self.path, "cannot record full enumeration progress")
    }

    /// Drops a local item the source knew and no longer has: a message or tombstone now, a live
    /// folder at the end (recorded in `sync_full_drops`).
    fn drop_if_forgotten(
        &mut self,
        session: &ImportSession,
        source: &str,
        id: &str,
        dropped: &mut Knowledge,
    ) -> Result<(), StoreError> {
        let Some(local) = self.local_item(id)? else {
            return Ok(());
        };
        if local.units.is_empty() || !local.units.iter().all(|u| session.made_with.contains(&u.1)) {
            return Ok(());
        }
        if !local.deleted && local.kind == ItemKind::Folder {
            return self
                .conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO sync_full_drops (source, item) VALUES (?1, ?2)",
                )
                .and_then(|mut s| s.execute([source, id]))
                .map(|_| ())
                .ctx(&self.path, "cannot record a folder to drop");
        }
        if !local.deleted {
            self.conn
                .prepare_cached("DELETE FROM messages WHERE id = ?1")
                .and_then(|mut s| s.execute([id]))
                .ctx(&self.path, "cannot drop a message")?;
        }
        for (_, v, _) in &local.units {
            dropped.insert(v);
        }
        self.forget_item(local.rid)
    }

    /// Drops the recorded folders that are empty now, deepest first; a folder still holding
    /// items made here is kept and given a new local version, so it travels back.
    fn drop_folders(
        &mut self,
        session: &ImportSession,
        source: &str,
        forgotten: &mut Knowledge,
    ) -> Result<(), StoreError> {
        let mut waiting: Vec<String> = self
            .conn
            .prepare_cached("SELECT item FROM sync_full_drops WHERE source = ?1")
            .and_then(|mut s| s.query_map([source], |r| r.get(0))?.collect())
            .ctx(&self.path, "cannot read folders to drop")?;
        loop {
            let before = waiting.len();
            let mut still = Vec::new();
            for id in waiting {
                let local = self.local_item(&id)?;
                let Some(local) = local.filter(|l| !l.deleted) else {
                    continue;
                };
                if !local.units.iter().all(|u| session.made_with.contains(&u.1)) {
                    continue; // changed here meanwhile: it travels to the source
                }
                let empty: bool = self
                    .conn
                    .prepare_cached(
                        "SELECT NOT EXISTS (SELECT 1 FROM messages WHERE folder_id = ?1) \
                         AND NOT EXISTS (SELECT 1 FROM folders WHERE parent_id = ?1)",
                    )
                    .and_then(|mut s| s.query_row([&id], |r| r.get(0)))
                    .ctx(&self.path, "cannot look into a folder")?;
                if !empty {
                    still.push(id);
                    continue;
                }
                self.conn
                    .prepare_cached("DELETE FROM folders WHERE id = ?1")
                    .and_then(|mut s| s.execute([&id]))
                    .ctx(&self.path, "cannot drop a folder")?;
                for (_, v, _) in &local.units {
                    forgotten.insert(v);
                }
                self.forget_item(local.rid)?;
            }
            waiting = still;
            if waiting.is_empty() || waiting.len() >= before {
                break;
            }
        }
        for id in &waiting {
            tracing::warn!(folder = %id, "folder deleted at the source still holds items made here; kept and sent back");
            self.restore_folder(id)?;
        }
        self.conn
            .prepare_cached("DELETE FROM sync_full_drops WHERE source = ?1")
            .and_then(|mut s| s.execute([source]))
            .map(|_| ())
            .ctx(&self.path, "cannot clear folders to drop")
    }
}

/// The statement of [`Store::item_ids`]: binds (after, upto, limit). `after`: whether the range
/// starts after ?1 (or at it: '' is the least text value, so `>= ''` takes every id).
pub(super) fn item_ids_sql(kind: ItemKind, after: bool) -> String {
    let from = if after { ">" } else { ">=" };
    let range = format!("id {from} ?1 AND (?2 IS NULL OR id <= ?2)");
    match kind {
        ItemKind::Folder => {
            format!("SELECT id FROM sync_items WHERE kind = 0 AND {range} ORDER BY id LIMIT ?3")
        }
        ItemKind::Message => format!(
            "SELECT id FROM messages WHERE {range} \
             UNION ALL SELECT id FROM sync_items \
              WHERE deleted_at IS NOT NULL AND kind = 1 AND {range} \
             ORDER BY 1 LIMIT ?3"
        ),
    }
}
