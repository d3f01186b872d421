//! Filtered and header-only sync, the source's side: seed 001's filter callback, asked of every
//! item "before an item is added to the change batch", answered by the folder's path
//! ([`crate::scope`]).
//!
//! - An item in scope travels, its body withheld if the scope has no bodies or this store holds
//!   the message without its body (seed 002's header download).
//! - An item outside the scope travels as a notice that it left ([`LeftChange`]): the destination
//!   may hold it from before it moved out.
//! - A folder in scope may have just entered it (moved or renamed into a matching path): what
//!   lies below it has no change of its own to be enumerated by. So a folder in scope brings its
//!   subtree along, every item the destination does not hold yet (`ExportScope::holds`), and its
//!   own versions are learned only with the last of them — a session cut short sends it again.

use std::collections::VecDeque;

use super::enumerate::{approximate_size, EnumerationCursor, ExportBatch, CHUNK};
use super::error::SqlContext;
use super::items::{ItemChange, ReplicaTable};
use super::scoped::FolderTree;
use super::{FastSet, Store, StoreError};
use crate::knowledge::{Knowledge, Version};
use crate::model::{Body, Change, ItemKind, LeftChange, Phase, UnitValue};
use crate::scope::{FolderPattern, Membership};

/// What a scoped export needs: the scope, and what the destination holds — its knowledge at
/// the session's start plus what the session sent it since.
#[derive(Clone, Debug)]
pub struct ExportScope {
    pub patterns: Vec<FolderPattern>,
    pub bodies: bool,
    pub holds: Knowledge,
}

/// A folder's subtree being sent: the folder's own versions, held back until it is done, the
/// folders still to walk, and the folder whose messages are being listed (with the last rowid).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Expansion {
    held: Vec<Version>,
    queue: VecDeque<String>,
    listing: Option<(String, i64)>,
}

/// One batch being filled.
pub(super) struct Filler<'a> {
    scope: Option<&'a ExportScope>,
    tree: Option<FolderTree>,
    /// Whether this store holds any message without its body.
    headers_only: bool,
    table: ReplicaTable,
    pub(super) seen: FastSet<String>,
    changes: Vec<Change>,
    versions: Vec<Version>,
    left: Vec<LeftChange>,
    left_versions: Vec<Version>,
    bytes: usize,
    limit: usize,
    max_bytes: usize,
}

impl<'a> Filler<'a> {
    pub(super) fn new(
        store: &Store,
        scope: Option<&'a ExportScope>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Filler<'a>, StoreError> {
        let tree = match scope {
            Some(s) if !s.patterns.is_empty() => Some(store.folder_tree()?),
            _ => None,
        };
        Ok(Filler {
            scope,
            tree,
            headers_only: store.any_headers_only()?,
            table: ReplicaTable::default(),
            seen: FastSet::default(),
            changes: Vec::new(),
            versions: Vec::new(),
            left: Vec::new(),
            left_versions: Vec::new(),
            bytes: 0,
            limit,
            max_bytes,
        })
    }

    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// How many more items the batch takes (its byte budget aside).
    pub(super) fn room(&self) -> usize {
        self.limit
            .saturating_sub(self.changes.len() + self.left.len())
    }

    /// The bytes the batch can still take.
    pub(super) fn bytes_left(&self) -> usize {
        self.max_bytes.saturating_sub(self.bytes)
    }

    pub(super) fn is_full(&self) -> bool {
        self.changes.len() + self.left.len() >= self.limit || self.bytes >= self.max_bytes
    }

    pub(super) fn finish(self, phase: Phase, done: bool) -> ExportBatch {
        ExportBatch {
            phase,
            replicas: self.table.into_ids(),
            changes: self.changes,
            versions: self.versions,
            left: self.left,
            left_versions: self.left_versions,
            payload_bytes: self.bytes,
            done,
        }
    }

    fn patterns(&self) -> &[FolderPattern] {
        self.scope.map_or(&[], |s| &s.patterns)
    }

    /// Whether an item lies in the scope (its folder's path, for a message).
    fn in_scope(&mut self, change: &ItemChange) -> bool {
        let Some(tree) = self.tree.as_mut() else {
            return true;
        };
        let patterns = self.scope.map_or(&[][..], |s| &s.patterns[..]);
        if change.is_tombstone() {
            return true;
        }
        match change.kind {
            ItemKind::Folder => tree.membership(&change.id, patterns) >= Membership::Ancestor,
            ItemKind::Message => change.units.iter().any(|u| match &u.value {
                UnitValue::Location { folder_id } => {
                    tree.membership(folder_id, patterns) == Membership::Matched
                }
                _ => false,
            }),
        }
    }

    /// Adds an item in scope, its body withheld where it must be. Its versions are the batch's
    /// unless `hold` (they are then the caller's to add later).
    fn push(
        &mut self,
        store: &Store,
        mut change: ItemChange,
        hold: bool,
    ) -> Result<(), StoreError> {
        let withhold = change.kind == ItemKind::Message
            && (self.scope.is_some_and(|s| !s.bodies)
                || (self.headers_only && store.is_headers_only(&change.id)?));
        if withhold {
            for u in &mut change.units {
                if let UnitValue::Content { body, .. } = &mut u.value {
                    *body = Some(Body::Withheld);
                }
            }
        }
        super::limits::cap_for_sending(&mut change);
        self.seen.insert(change.id.clone());
        self.bytes += approximate_size(&change);
        if !hold {
            self.versions.extend(change.versions().cloned());
        }
        self.changes.push(change.into_wire(&mut self.table));
        Ok(())
    }
}

impl Store {
    /// Adds one enumerated item to the batch: in scope, as a change; outside, as a notice that
    /// it left. A folder in scope of a filtered session starts sending its subtree.
    pub(super) fn admit(
        &mut self,
        filler: &mut Filler<'_>,
        cursor: &mut EnumerationCursor,
        change: ItemChange,
    ) -> Result<(), StoreError> {
        if !filler.in_scope(&change) {
            filler.seen.insert(change.id.clone());
            let versions: Vec<Version> = change.versions().cloned().collect();
            filler.left.push(LeftChange {
                id: change.id,
                versions: versions.iter().map(|v| filler.table.wire(v)).collect(),
            });
            filler.bytes += 64;
            filler.left_versions.extend(versions);
            return Ok(());
        }
        let expands = !filler.patterns().is_empty()
            && change.kind == ItemKind::Folder
            && !change.is_tombstone();
        if !expands {
            return filler.push(self, change, false);
        }
        if !cursor.expanded.insert(change.id.clone()) {
            return Ok(());
        }
        let held: Vec<Version> = change.versions().cloned().collect();
        let id = change.id.clone();
        filler.push(self, change, true)?;
        cursor.expansion = Some(Expansion {
            held,
            queue: VecDeque::from([id]),
            listing: None,
        });
        self.expand(filler, cursor)
    }

    /// Sends what lies below the folder being expanded until the batch is full or the subtree
    /// is done (then the folder's own versions are learned with this batch).
    pub(super) fn expand(
        &mut self,
        filler: &mut Filler<'_>,
        cursor: &mut EnumerationCursor,
    ) -> Result<(), StoreError> {
        let Some(mut exp) = cursor.expansion.take() else {
            return Ok(());
        };
        // Borrowed from the session's scope, not from `filler`, which the walk fills.
        let Some(scope) = filler.scope else {
            return Ok(());
        };
        let (holds, patterns) = (&scope.holds, &scope.patterns[..]);
        loop {
            if filler.is_full() {
                cursor.expansion = Some(exp);
                return Ok(());
            }
            if let Some((folder, after)) = exp.listing.as_mut() {
                let rows: Vec<(i64, String)> = self
                    .conn
                    .prepare_cached(
                        "SELECT rowid, id FROM messages WHERE folder_id = ?1 AND rowid > ?2 \
                         ORDER BY rowid LIMIT ?3",
                    )
                    .and_then(|mut s| {
                        s.query_map(rusqlite::params![folder.as_str(), *after, CHUNK], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?
                        .collect()
                    })
                    .ctx(&self.path, "cannot list a folder's messages")?;
                let exhausted = (rows.len() as i64) < CHUNK;
                for (rowid, id) in rows {
                    *after = rowid;
                    self.send_unless_held(filler, holds, &id)?;
                    if filler.is_full() {
                        break;
                    }
                }
                if exhausted && !filler.is_full() {
                    exp.listing = None;
                }
                continue;
            }
            let Some(folder) = exp.queue.pop_front() else {
                filler.versions.extend(exp.held);
                return Ok(());
            };
            let children: Vec<String> = self
                .conn
                .prepare_cached("SELECT id FROM folders WHERE parent_id = ?1")
                .and_then(|mut s| s.query_map([&folder], |r| r.get(0))?.collect())
                .ctx(&self.path, "cannot list a folder's folders")?;
            for child in children {
                let standing = match filler.tree.as_mut() {
                    Some(tree) => tree.membership(&child, patterns),
                    None => Membership::Matched,
                };
                if standing == Membership::Out {
                    continue;
                }
                self.send_unless_held(filler, holds, &child)?;
                exp.queue.push_back(child);
            }
            let standing = match filler.tree.as_mut() {
                Some(tree) => tree.membership(&folder, patterns),
                None => Membership::Matched,
            };
            if standing == Membership::Matched {
                exp.listing = Some((folder, 0));
            }
        }
    }

    /// Sends an item of an expanded subtree unless the destination holds every version of it.
    fn send_unless_held(
        &mut self,
        filler: &mut Filler<'_>,
        holds: &Knowledge,
        id: &str,
    ) -> Result<(), StoreError> {
        if filler.seen.contains(id) {
            return Ok(());
        }
        let Some(local) = self.local_item(id)? else {
            return Ok(());
        };
        if local.units.iter().all(|(_, v, _)| holds.contains(v)) {
            return Ok(());
        }
        match self.read_item_change(id)? {
            Some(change) => filler.push(self, change, false),
            None => Ok(()),
        }
    }
}
