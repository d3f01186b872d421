//! Constraint conflicts (seed 003, "constraint conflicts ... can then be resolved as specified by
//! the application or the provider"): changes that do not collide on one change unit but cannot
//! both hold in a folder tree. Each is settled here, deterministically, by the applier; what it
//! changes on its own store it changes as an ordinary local change (a new tick of this replica),
//! so the settlement reaches every other store by plain synchronization, and two stores that
//! settle the same case independently make the same edit (which is then no conflict at all, see
//! `conflict`). None is deferred to an operator: there is one sensible outcome each.
//!
//! - **Parent deleted elsewhere.** A folder delete arrives for a folder that here still holds an
//!   item the deleting store never saw in it (a message added or moved in, a message edited where
//!   the delete lost, a subfolder): the delete loses, the folder is *restored* — it stays, gets a
//!   new version, and so comes back on the store that deleted it. Nothing is silently lost. On the
//!   deleting store an item arriving for its deleted folder waits (an item error that says so)
//!   until the folder comes back.
//! - **Same name.** Two sibling folders end up with the same name (created or renamed on two
//!   stores): the one with the greater id is renamed to `Name (xxxxxxxx)`, the first 8
//!   characters of its id. Every store picks the same folder and the same new name.
//! - **Cycle.** X moved under Y on one store, Y under X on another: the newer move wins (time,
//!   then version, as `newer-wins`). Where the incoming move wins, the folder in its way (the
//!   topmost folder between the new parent and the mover) takes the mover's former place; where
//!   it loses, it is learned and not applied. No store ever holds a cycle: the store's own
//!   triggers refuse one.

use rusqlite::OptionalExtension;

use super::apply::{kind_name, ItemReport};
use super::conflict::{newer, summary, Outcome, ReportedConflict};
use super::error::SqlContext;
use super::items::{lacks_a_unit_row, rid_by_id, ItemChange, UnitState};
use super::{Store, StoreError};
use crate::knowledge::{Knowledge, Version};
use crate::model::{ItemKind, Unit, UnitValue};

impl Store {
    /// Whether a folder holds an item with a version `made_with` lacks: an item the deleting
    /// store never saw there.
    pub(super) fn holds_unseen_items(
        &mut self,
        folder: &str,
        made_with: &Knowledge,
    ) -> Result<bool, StoreError> {
        // The items' unit rows, and the creation version of each item with a unit without one
        // (which carries it, migration 7).
        let versions: Vec<(i64, i64)> = self
            .conn
            .prepare_cached(concat!(
                "WITH held (rid) AS (SELECT sync_rid FROM messages WHERE folder_id = ?1 ",
                "UNION ALL SELECT i.rid FROM folders f JOIN sync_items i ",
                "ON i.id = f.id AND i.kind = 0 WHERE f.parent_id = ?1) ",
                "SELECT u.r, u.t FROM sync_units u WHERE u.item IN (SELECT rid FROM held) ",
                "UNION ALL SELECT i.created_r, i.created_t FROM sync_items i ",
                "WHERE i.rid IN (SELECT rid FROM held) AND ",
                lacks_a_unit_row!("")
            ))
            .and_then(|mut s| {
                s.query_map([folder], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .ctx(&self.path, "cannot look into a folder")?;
        for (r, t) in versions {
            if !made_with.contains(&self.version_of(r, t)?) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Gives a folder's units a new local version, so it comes back where it was deleted.
    pub(super) fn restore_folder(&mut self, folder: &str) -> Result<Version, StoreError> {
        let v = self.renew_versions(folder)?;
        // (renew_versions gave every unit a row.)
        self.conn
            .prepare_cached(concat!(
                "UPDATE sync_units SET at = ",
                "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) WHERE item = ",
                rid_by_id!()
            ))
            .and_then(|mut s| s.execute([folder]))
            .ctx(&self.path, "cannot restore a folder")?;
        Ok(v)
    }

    /// Gives every unit of an item one new local version (one tick): the item as this store
    /// holds it becomes a change made with everything the store knows, and so replaces, on
    /// every store, any older version of its units this store has learned of but does not hold.
    /// Each unit keeps the time it was last edited (for `newer-wins`, nobody edited it now).
    pub(super) fn renew_versions(&mut self, item: &str) -> Result<Version, StoreError> {
        let tick: i64 = self
            .conn
            .query_row(
                "UPDATE sync_state SET tick = tick + 1 WHERE id = 1 RETURNING tick",
                [],
                |r| r.get(0),
            )
            .ctx(&self.path, "cannot take a tick")?;
        self.conn
            .prepare_cached(MATERIALIZE_UNITS)
            .and_then(|mut s| s.execute([item]))
            .ctx(&self.path, "cannot renew an item's versions")?;
        self.conn
            .prepare_cached(concat!(
                "UPDATE sync_units SET r = 0, t = ?2 WHERE item = ",
                rid_by_id!()
            ))
            .and_then(|mut s| s.execute(rusqlite::params![item, tick]))
            .ctx(&self.path, "cannot renew an item's versions")?;
        Ok(Version {
            replica: self.replica.clone(),
            tick: tick.max(0) as u64,
        })
    }

    pub(super) fn folder_name(&self, folder: &str) -> Result<String, StoreError> {
        self.conn
            .prepare_cached("SELECT name FROM folders WHERE id = ?1")
            .and_then(|mut s| s.query_row([folder], |r| r.get(0)).optional())
            .map(Option::unwrap_or_default)
            .ctx(&self.path, "cannot read a folder")
    }

    /// Why an item waits for its parent: not arrived yet, or deleted here (then it waits for
    /// the store that still holds the folder to bring it back).
    pub(super) fn missing_parent(
        &mut self,
        change: &ItemChange,
        parent: &str,
        verb: &str,
    ) -> Result<String, StoreError> {
        let deleted_here = self.local_item(parent)?.is_some_and(|l| l.deleted);
        let why = if deleted_here {
            "which was deleted here; it waits until the folder comes back from a store that still holds it"
        } else {
            "which has not arrived"
        };
        Ok(format!(
            "{} {} {verb} folder {parent}, {why}",
            kind_name(change.kind),
            change.id
        ))
    }

    /// An incoming move of folder `change.id` under `parent`, which lies below it here: decides
    /// between this move and the local moves in its way. Returns whether the incoming move is to
    /// be applied (the way is then cleared).
    pub(super) fn break_cycle(
        &mut self,
        session_made_with: &Knowledge,
        change: &ItemChange,
        incoming: &UnitState,
        parent: &str,
        report: &mut ItemReport,
    ) -> Result<bool, StoreError> {
        let mover = change.id.as_str();
        // The folders from `parent` up to the one right below the mover.
        let mut chain = vec![parent.to_string()];
        while let Some(last) = chain.last() {
            match self.parent_of_folder(last)? {
                Some(p) if p == mover => break,
                Some(p) if !chain.contains(&p) => chain.push(p),
                _ => break,
            }
        }
        let mut newest: Option<(Version, i64)> = None;
        for folder in &chain {
            let local = self.local_item(folder)?;
            if let Some((_, v, at)) = local.as_ref().and_then(|l| l.unit(Unit::Parent)) {
                let later = newest
                    .as_ref()
                    .is_none_or(|(nv, nat)| newer((*at, v), (*nat, nv)));
                if !session_made_with.contains(v) && later {
                    newest = Some((v.clone(), *at));
                }
            }
        }
        let incoming_wins = newest
            .as_ref()
            .is_none_or(|(v, at)| newer((incoming.at, &incoming.version), (*at, v)));
        let mover_parent = self.parent_of_folder(mover)?;
        let in_the_way = chain.last().cloned().unwrap_or_else(|| parent.to_string());
        let local_version = match &newest {
            Some((v, _)) => v.clone(),
            None => self
                .local_item(mover)?
                .and_then(|l| l.unit(Unit::Parent).map(|u| u.1.clone()))
                .unwrap_or_else(|| incoming.version.clone()),
        };
        report.conflicts.push(ReportedConflict {
            item: mover.to_string(),
            kind: ItemKind::Folder,
            unit: Unit::Parent,
            local: local_version,
            remote: incoming.version.clone(),
            outcome: if incoming_wins {
                Outcome::Moved
            } else {
                Outcome::Local
            },
            label: self.folder_name(mover)?,
            local_value: format!("folder {in_the_way} moved below it"),
            remote_value: summary(&incoming.value),
        });
        if incoming_wins {
            self.local_change(
                "UPDATE folders SET parent_id = ?2 WHERE id = ?1",
                rusqlite::params![in_the_way, mover_parent],
            )?;
        }
        Ok(incoming_wins)
    }

    /// Renames the folder with the greater id where two siblings share `folder`'s name.
    pub(super) fn rename_same_name(
        &mut self,
        folder: &str,
        report: &mut ItemReport,
    ) -> Result<(), StoreError> {
        let Some((name, parent)) = self
            .conn
            .prepare_cached("SELECT name, parent_id FROM folders WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([folder], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                })
                .optional()
            })
            .ctx(&self.path, "cannot read a folder")?
        else {
            return Ok(());
        };
        let siblings: Vec<String> = self
            .conn
            .prepare_cached(
                "SELECT id FROM folders WHERE parent_id IS ?1 AND name = ?2 AND id <> ?3 ORDER BY id",
            )
            .and_then(|mut s| {
                s.query_map(rusqlite::params![parent, name, folder], |r| r.get(0))?
                    .collect()
            })
            .ctx(&self.path, "cannot look for same-name folders")?;
        for other in siblings {
            let loser = if other.as_str() > folder {
                other.clone()
            } else {
                folder.to_string()
            };
            let new_name = self.free_name(&name, parent.as_deref(), &loser)?;
            let versions = [self.name_version(&other)?, self.name_version(folder)?];
            self.local_change(
                "UPDATE folders SET name = ?2 WHERE id = ?1",
                rusqlite::params![loser, new_name],
            )?;
            let renamed_self = loser == folder;
            if let [Some(local), Some(remote)] = versions {
                report.conflicts.push(ReportedConflict {
                    item: loser,
                    kind: ItemKind::Folder,
                    unit: Unit::Name,
                    local,
                    remote,
                    outcome: Outcome::Renamed,
                    label: name.clone(),
                    local_value: summary(&UnitValue::Name { name: name.clone() }),
                    remote_value: summary(&UnitValue::Name { name: new_name }),
                });
            }
            if renamed_self {
                break;
            }
        }
        Ok(())
    }

    /// `Name (xxxxxxxx)` with the first 8 characters of the loser's id, longer if taken.
    fn free_name(
        &self,
        name: &str,
        parent: Option<&str>,
        loser: &str,
    ) -> Result<String, StoreError> {
        let mut len = 8;
        loop {
            let short: String = loser.chars().take(len).collect();
            let candidate = format!("{name} ({short})");
            let taken: bool = self
                .conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM folders WHERE parent_id IS ?1 AND name = ?2)",
                )
                .and_then(|mut s| s.query_row(rusqlite::params![parent, candidate], |r| r.get(0)))
                .ctx(&self.path, "cannot look for same-name folders")?;
            if !taken || len >= loser.chars().count() {
                return Ok(candidate);
            }
            len += 8;
        }
    }

    fn name_version(&mut self, folder: &str) -> Result<Option<Version>, StoreError> {
        Ok(self
            .local_item(folder)?
            .and_then(|l| l.unit(Unit::Name).map(|u| u.1.clone())))
    }

    fn parent_of_folder(&self, folder: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT parent_id FROM folders WHERE id = ?1")
            .and_then(|mut s| s.query_row([folder], |r| r.get(0)).optional())
            .map(Option::flatten)
            .ctx(&self.path, "cannot read a folder")
    }

    /// Runs one statement as a *local* change inside the import transaction: the tracking
    /// triggers give it a new tick of this replica, so it travels to the other stores.
    fn local_change(&mut self, sql: &str, params: impl rusqlite::Params) -> Result<(), StoreError> {
        self.conn
            .execute_batch("UPDATE sync_state SET applying = 0 WHERE id = 1")
            .ctx(&self.path, "cannot make a local change")?;
        let result = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(params))
            .ctx(&self.path, "cannot make a local change");
        self.conn
            .execute_batch("UPDATE sync_state SET applying = 1 WHERE id = 1")
            .ctx(&self.path, "cannot make a local change")?;
        result.map(|_| ())
    }
}

/// Gives every live unit of the item with id ?1 a row (migration 7: a unit without one carries
/// the item's creation version and time), so its units can be changed in place.
const MATERIALIZE_UNITS: &str = concat!(
    "INSERT INTO sync_units (item, unit, r, t, at, phase) ",
    "SELECT i.rid, k.unit, i.created_r, i.created_t, i.created_at, k.phase ",
    "FROM sync_items i JOIN sync_live_units k ON k.kind = i.kind ",
    "WHERE i.rid = ",
    rid_by_id!(),
    " AND i.deleted_at IS NULL ",
    "AND NOT EXISTS (SELECT 1 FROM sync_units u WHERE u.item = i.rid AND u.unit = k.unit)"
);
