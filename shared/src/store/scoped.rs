//! Filtered and header-only sync, the destination's side (seed 001's filter, seed 002's header
//! download; the scope itself is [`crate::scope`]).
//!
//! A scoped session keeps two records apart. What the destination was sent, or told lies outside
//! the scope, is its *scoped knowledge* of that source (`sync_scoped_knowledge`, one per source
//! and scope): the source enumerates against it, so nothing is enumerated twice. The store's own
//! knowledge claims only what it holds: the versions of the items the batch carried, never the
//! source's whole knowledge, and never a change that left the scope or content that came without
//! its body. A store that syncs on with others so never passes on knowledge of what it lacks,
//! and a wider scope later finds exactly the missing items.
//!
//! An item that *leaves* the scope (moved out, or its folder moved or renamed out) is removed
//! from the destination without a tombstone: it still exists. What the destination made itself
//! and what the source has not seen yet stays, so nothing is lost.

use std::collections::HashMap;

use rusqlite::OptionalExtension;

use super::apply::{is_withheld, ApplyOutcome, ImportSession};
use super::error::SqlContext;
use super::items::ItemChange;
use super::{Store, StoreError};
use crate::knowledge::{Knowledge, ReplicaId, Version};
use crate::model::ItemKind;
use crate::scope::{membership, FolderPattern, Membership};

/// An item that left the destination's scope, with the versions of its changes that did it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftScope {
    pub id: String,
    pub versions: Vec<Version>,
}

/// The versions of unit ?1 of the messages held without their body: the header-only list first
/// (CROSS JOIN keeps that order), each message's row by its id (with its item's rid), then its
/// unit, so the cost follows the header-only copies, not the store (the planner would otherwise
/// scan every unit).
pub(super) const HEADERS_ONLY_VERSIONS: &str = "SELECT coalesce(u.r, i.created_r), \
     coalesce(u.t, i.created_t) FROM sync_headers_only h \
     CROSS JOIN messages m ON m.id = h.item \
     CROSS JOIN sync_items i ON i.rid = m.sync_rid \
     LEFT JOIN sync_units u ON u.item = m.sync_rid AND u.unit = ?1";

impl Store {
    /// What this store knows of `source` through the scope with key `scope`.
    pub fn scoped_knowledge(
        &self,
        source: &ReplicaId,
        scope: &str,
    ) -> Result<Knowledge, StoreError> {
        let json: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT knowledge FROM sync_scoped_knowledge WHERE source = ?1 AND scope = ?2",
            )
            .and_then(|mut s| {
                s.query_row([source.as_str(), scope], |r| r.get(0))
                    .optional()
            })
            .ctx(&self.path, "cannot read scoped knowledge")?;
        match json {
            Some(json) => self.parse_knowledge(&json, "scoped knowledge"),
            None => Ok(Knowledge::new()),
        }
    }

    /// Applies one batch of a scoped session: the items (as [`Store::apply_batch`]), the items
    /// that left the scope, the store's knowledge of exactly what it holds, and the scoped
    /// knowledge of the source (`learned`, less what was not applied) — in one transaction.
    pub fn apply_scoped_batch(
        &mut self,
        session: &mut ImportSession,
        changes: &[ItemChange],
        left: &[LeftScope],
        learned: &Knowledge,
        last: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        let Some(scope) = session.scope.clone() else {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                what: "a scoped batch in a session without a scope".into(),
            });
        };
        // The store claims the versions of what the session carried, and only those the batch
        // lets it learn (a folder whose subtree is still being sent is learned with its end).
        for v in changes.iter().flat_map(|c| c.versions()) {
            session.carried.insert(v);
        }
        let holds = learned.intersect(&session.carried);
        self.apply_batch_with(
            session,
            changes,
            &holds,
            last,
            &mut |store, session, _, _| {
                let mut forget = Vec::new();
                for item in left {
                    store.leave_scope(session, item, &mut forget)?;
                }
                if !forget.is_empty() {
                    store.forget(&forget)?;
                    for v in &forget {
                        session.unclaimed.insert(v);
                    }
                }
                let mut scoped = store.scoped_knowledge(&session.source, &scope)?;
                let mut through = learned.clone();
                for v in &session.excluded {
                    through.exclude(v);
                }
                scoped.union_with(&through);
                let json = serde_json::to_string(&scoped).map_err(|e| StoreError::Corrupt {
                    path: store.path.clone(),
                    what: format!("cannot encode scoped knowledge: {e}"),
                })?;
                store
                    .conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO sync_scoped_knowledge (source, scope, knowledge) \
                     VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut s| s.execute([session.source.as_str(), &scope, &json]))
                    .map(|_| ())
                    .ctx(&store.path, "cannot save scoped knowledge")
            },
        )
    }

    /// One item that left the scope. Removed, unless it holds changes the source has not seen
    /// (they must travel first: the notice is not learned and comes again).
    fn leave_scope(
        &mut self,
        session: &mut ImportSession,
        item: &LeftScope,
        forget: &mut Vec<Version>,
    ) -> Result<(), StoreError> {
        let local = self.local_item(&item.id)?;
        let unseen = local.as_ref().is_some_and(|l| {
            !l.deleted
                && l.units
                    .iter()
                    .any(|(_, v, _)| !session.made_with.contains(v))
        });
        if unseen {
            session.excluded.extend(item.versions.iter().cloned());
            return Ok(());
        }
        for v in &item.versions {
            session.unclaimed.insert(v);
        }
        let Some(local) = local.filter(|l| !l.deleted) else {
            return Ok(());
        };
        match local.kind {
            ItemKind::Message => self.drop_held(&item.id, ItemKind::Message, forget),
            ItemKind::Folder => {
                self.drop_subtree(session, &item.id, forget)?;
                Ok(())
            }
        }
    }

    /// Removes the folder `root` and what lies below it, bottom up, keeping whatever this store
    /// made itself or the source has not seen (and the folders on their way). Returns whether
    /// `root` went.
    fn drop_subtree(
        &mut self,
        session: &ImportSession,
        root: &str,
        forget: &mut Vec<Version>,
    ) -> Result<bool, StoreError> {
        let children: Vec<String> =
            self.ids_where("SELECT id FROM folders WHERE parent_id = ?1", root)?;
        let mut empty = true;
        for child in children {
            let gone = self.drop_subtree(session, &child, forget)?;
            empty &= gone;
        }
        for message in self.ids_where("SELECT id FROM messages WHERE folder_id = ?1", root)? {
            if self.stays(session, &message)? {
                empty = false;
            } else {
                self.drop_held(&message, ItemKind::Message, forget)?;
            }
        }
        if !empty {
            return Ok(false);
        }
        self.drop_held(root, ItemKind::Folder, forget)?;
        Ok(true)
    }

    /// Whether an item below a folder that left the scope stays: it carries a change of this
    /// store's own (its knowledge of its own ticks cannot be taken back) or one the source has
    /// not seen.
    fn stays(&mut self, session: &ImportSession, id: &str) -> Result<bool, StoreError> {
        let own = self.replica.clone();
        Ok(self.local_item(id)?.is_some_and(|l| {
            l.units
                .iter()
                .any(|(_, v, _)| v.replica == own || !session.made_with.contains(v))
        }))
    }

    /// Removes a live item and its versions without a tombstone, noting the versions this store
    /// must stop claiming.
    fn drop_held(
        &mut self,
        id: &str,
        kind: ItemKind,
        forget: &mut Vec<Version>,
    ) -> Result<(), StoreError> {
        let local = self.local_item(id)?;
        if let Some(local) = &local {
            forget.extend(
                local
                    .units
                    .iter()
                    .map(|(_, v, _)| v.clone())
                    .filter(|v| v.replica != self.replica),
            );
        }
        let table = match kind {
            ItemKind::Folder => "DELETE FROM folders WHERE id = ?1",
            ItemKind::Message => "DELETE FROM messages WHERE id = ?1",
        };
        self.conn
            .prepare_cached(table)
            .and_then(|mut s| s.execute([id]))
            .ctx(&self.path, "cannot remove an item that left the scope")?;
        match local {
            Some(local) => self.forget_item(local.rid),
            None => Ok(()),
        }
    }

    fn ids_where(&self, sql: &str, key: &str) -> Result<Vec<String>, StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.query_map([key], |r| r.get(0))?.collect())
            .ctx(&self.path, "cannot read folder contents")
    }

    /// Takes versions out of the store's knowledge (items it no longer holds).
    fn forget(&mut self, versions: &[Version]) -> Result<(), StoreError> {
        let mut stored = self.stored_knowledge()?;
        for v in versions {
            stored.exclude(v);
        }
        self.write_stored_knowledge(&stored, 0)
    }

    /// Whether a message is held without its body.
    pub(super) fn is_headers_only(&self, id: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM sync_headers_only WHERE item = ?1")
            .and_then(|mut s| s.exists([id]))
            .ctx(&self.path, "cannot read header-only messages")
    }

    /// Whether a change brings the body of a message this store holds without it.
    pub(super) fn fills_in(&self, change: &ItemChange) -> Result<bool, StoreError> {
        if change.kind != ItemKind::Message || is_withheld(change) || change.is_tombstone() {
            return Ok(false);
        }
        Ok(self.any_headers_only()? && self.is_headers_only(&change.id)?)
    }

    /// The content versions of the messages this store holds without their body: a session
    /// that can send bodies treats them as unknown, and the bodies fill in (seed 002's header
    /// download, completed later).
    pub fn headers_only_versions(&mut self) -> Result<Knowledge, StoreError> {
        let rows: Vec<(i64, i64)> = self
            .conn
            .prepare_cached(HEADERS_ONLY_VERSIONS)
            .and_then(|mut s| {
                s.query_map([crate::model::Unit::Content.code()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            })
            .ctx(&self.path, "cannot read header-only messages")?;
        let mut lacks = Knowledge::new();
        for (r, t) in rows {
            lacks.insert(&self.version_of(r, t)?);
        }
        Ok(lacks)
    }

    /// Whether any message is held without its body.
    pub(super) fn any_headers_only(&self) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM sync_headers_only LIMIT 1")
            .and_then(|mut s| s.exists([]))
            .ctx(&self.path, "cannot read header-only messages")
    }

    /// Marks a message as held without its body, or as whole again.
    pub(super) fn mark_headers_only(&self, id: &str, headers_only: bool) -> Result<(), StoreError> {
        let sql = if headers_only {
            "INSERT OR IGNORE INTO sync_headers_only (item) VALUES (?1)"
        } else {
            "DELETE FROM sync_headers_only WHERE item = ?1"
        };
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([id]))
            .map(|_| ())
            .ctx(&self.path, "cannot mark a header-only message")
    }

    /// The folder hierarchy as it is now, for deciding what lies in a scope.
    pub(super) fn folder_tree(&self) -> Result<FolderTree, StoreError> {
        let rows: Vec<(String, Option<String>, String)> = self
            .conn
            .prepare_cached("SELECT id, parent_id, name FROM folders")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .ctx(&self.path, "cannot read folders")?;
        Ok(FolderTree {
            folders: rows.into_iter().map(|(id, p, n)| (id, (p, n))).collect(),
            memo: HashMap::new(),
        })
    }
}

/// The folders of a store by id, with each folder's standing towards a scope worked out once.
pub(super) struct FolderTree {
    folders: HashMap<String, (Option<String>, String)>,
    memo: HashMap<String, Membership>,
}

impl FolderTree {
    /// Where the folder `id` stands towards `patterns`; a folder the tree lacks is out.
    pub(super) fn membership(&mut self, id: &str, patterns: &[FolderPattern]) -> Membership {
        if let Some(m) = self.memo.get(id) {
            return *m;
        }
        let mut names: Vec<&str> = Vec::new();
        let mut at = Some(id);
        // A store never holds a cycle (the applier breaks them); the bound only guards a
        // hand-edited one.
        while let Some(folder) = at {
            let Some((parent, name)) = self.folders.get(folder) else {
                if names.is_empty() {
                    return Membership::Out;
                }
                break;
            };
            names.push(name);
            if names.len() > self.folders.len() {
                return Membership::Out;
            }
            at = parent.as_deref();
        }
        names.reverse();
        let m = membership(patterns, &names);
        self.memo.insert(id.to_string(), m);
        m
    }
}
