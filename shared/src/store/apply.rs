//! The change applier (seed 003, "Applying Changes"): imports one change batch into the store in
//! one transaction together with the store's updated knowledge, so a batch is all or nothing.
//!
//! For each item the destination's versions (seed 001's GetLocalVersions) are compared with the
//! incoming ones unit by unit (seed 004's conflict example): an incoming version the destination
//! already knows is skipped; a destination version the source knew (`made_with`) is replaced; if
//! neither knows the other's, the two were made without knowledge of each other, a conflict,
//! settled by the session's [`ConflictRule`].
//!
//! The batch's learned knowledge is added to the store's knowledge *minus* the versions of changes
//! that were not applied (seed 003's "exclude"): deferred conflicts, items that failed, and items
//! queued because their parent folder has not arrived yet. Queued items (seed 003, "Special
//! Considerations for Hierarchical Replicas") are retried after every batch of the session and
//! dropped at its end — queued work is "only good until the end of a pair-wise session" — so
//! they come again next session.

use serde::{Deserialize, Serialize};

use super::error::SqlContext;
use super::items::{ItemChange, LocalItem, UnitState};
use super::{Store, StoreError};
use crate::knowledge::{Knowledge, ReplicaId, Version};
use crate::model::{ItemKind, Unit, UnitValue};

/// How a session settles a conflict, seen from the destination that applies the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictRule {
    /// The incoming change wins.
    IncomingWins,
    /// The destination's value stays; it learns the incoming version.
    LocalWins,
    /// The change made later wins; ties go the same way on every store (by version).
    NewerWins,
    /// Read status: read wins. Every other unit: newer wins. Update vs delete: the update wins.
    Merge,
    /// The destination's value stays and the incoming version stays unlearned, so the conflict
    /// comes again every session until an operator resolves it (seed 004, "Protokollkonflikt").
    Defer,
}

/// A conflict met while applying, as reported to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedConflict {
    pub item: String,
    pub kind: ItemKind,
    pub unit: Unit,
    pub local: Version,
    pub remote: Version,
    /// "incoming", "local" or "deferred".
    pub outcome: String,
}

/// An item that could not be applied; it stays out of the learned knowledge and comes again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    pub item: String,
    pub reason: String,
}

/// What applying one batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub applied: u64,
    pub skipped: u64,
    pub conflicts: Vec<ReportedConflict>,
    pub errors: Vec<ItemError>,
    /// Items waiting for their parent after this batch.
    pub pending: u64,
    /// The store's whole knowledge after the commit.
    pub knowledge: Knowledge,
}

/// The destination's side of one session: what the source knew, the conflict rule, and the
/// queue of items waiting for their parent.
#[derive(Debug)]
pub struct ImportSession {
    pub source: ReplicaId,
    pub made_with: Knowledge,
    pub rule: ConflictRule,
    pending: Vec<(ItemChange, String)>,
    /// Versions kept out of every learned knowledge of this session (looked up per version of
    /// every applied item, hence a set).
    excluded: std::collections::HashSet<Version>,
}

impl ImportSession {
    pub fn new(source: ReplicaId, made_with: Knowledge, rule: ConflictRule) -> ImportSession {
        ImportSession {
            source,
            made_with,
            rule,
            pending: Vec::new(),
            excluded: Default::default(),
        }
    }
}

/// What became of one item.
enum Step {
    Applied,
    Skipped,
    /// Waiting for a parent folder (or, for a folder delete, for its contents to go).
    Pending(String),
}

#[derive(Default)]
struct ItemReport {
    conflicts: Vec<ReportedConflict>,
    excluded: Vec<Version>,
}

impl Store {
    /// Applies one batch in one transaction with the store's knowledge (seed 003, "Saving Updated
    /// Destination Knowledge"). `learned` is the batch's learned knowledge; `last` ends the
    /// session (queued items are dropped and come again next session).
    pub fn apply_batch(
        &mut self,
        session: &mut ImportSession,
        changes: Vec<ItemChange>,
        learned: &Knowledge,
        last: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE; UPDATE sync_state SET applying = 1 WHERE id = 1;")
            .ctx(&self.path, "cannot begin the import transaction")?;
        match self.apply_in_transaction(session, changes, learned, last) {
            Ok(outcome) => {
                self.conn
                    .execute_batch("UPDATE sync_state SET applying = 0 WHERE id = 1; COMMIT;")
                    .ctx(&self.path, "cannot commit the batch")?;
                Ok(outcome)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                // Replica indexes handed out inside the rolled-back transaction are gone.
                self.by_id.clear();
                self.by_idx.clear();
                self.reload_replicas()?;
                Err(e)
            }
        }
    }

    fn apply_in_transaction(
        &mut self,
        session: &mut ImportSession,
        changes: Vec<ItemChange>,
        learned: &Knowledge,
        last: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        let known = self.knowledge()?;
        let mut outcome = ApplyOutcome::default();
        let mut learned = learned.clone();

        for change in changes {
            self.apply_guarded(session, &known, change, &mut outcome, &mut learned, false)?;
        }
        // Queued items whose parent arrived in this batch.
        loop {
            let before = session.pending.len();
            let waiting = std::mem::take(&mut session.pending);
            for (change, _) in waiting {
                for v in change.versions() {
                    session.excluded.remove(v);
                }
                self.apply_guarded(session, &known, change, &mut outcome, &mut learned, true)?;
            }
            if session.pending.len() >= before {
                break;
            }
        }
        if last {
            for (change, reason) in session.pending.drain(..) {
                outcome.errors.push(ItemError {
                    item: change.id.clone(),
                    reason: format!("{reason}; it comes again next session"),
                });
            }
        }
        outcome.pending = session.pending.len() as u64;
        for v in &session.excluded {
            learned.exclude(v);
        }
        self.save_learned(&learned)?;
        outcome.knowledge = self.knowledge()?;
        Ok(outcome)
    }

    /// Applies one item inside a savepoint: a constraint an application's trigger raises fails
    /// only that item (a recoverable error, seed 003), not the batch.
    fn apply_guarded(
        &mut self,
        session: &mut ImportSession,
        known: &Knowledge,
        change: ItemChange,
        outcome: &mut ApplyOutcome,
        learned: &mut Knowledge,
        from_queue: bool,
    ) -> Result<(), StoreError> {
        self.conn
            .execute_batch("SAVEPOINT item")
            .ctx(&self.path, "cannot begin an item")?;
        let mut report = ItemReport::default();
        match self.apply_one(session, known, &change, &mut report) {
            Ok(step) => {
                self.conn
                    .execute_batch("RELEASE item")
                    .ctx(&self.path, "cannot end an item")?;
                match step {
                    Step::Applied => outcome.applied += 1,
                    Step::Skipped => outcome.skipped += 1,
                    Step::Pending(reason) => {
                        session.excluded.extend(change.versions().cloned());
                        session.pending.push((change, reason));
                        return Ok(());
                    }
                }
                for v in &report.excluded {
                    learned.exclude(v);
                }
                session.excluded.extend(report.excluded);
                outcome.conflicts.extend(report.conflicts);
                // A queued item applied now: what it carried is learned too (the batch that
                // brought it learned everything but it).
                if from_queue {
                    for v in change.versions() {
                        if session.made_with.contains(v) && !session.excluded.contains(v) {
                            learned.insert(v);
                        }
                    }
                }
                Ok(())
            }
            Err(StoreError::Sqlite { source, .. })
                if source.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
            {
                self.conn
                    .execute_batch("ROLLBACK TO item; RELEASE item")
                    .ctx(&self.path, "cannot undo a failed item")?;
                session.excluded.extend(change.versions().cloned());
                outcome.errors.push(ItemError {
                    item: change.id.clone(),
                    reason: source.to_string(),
                });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn apply_one(
        &mut self,
        session: &ImportSession,
        known: &Knowledge,
        change: &ItemChange,
        report: &mut ItemReport,
    ) -> Result<Step, StoreError> {
        if change.versions().all(|v| known.contains(v)) {
            return Ok(Step::Skipped);
        }
        let local = self.local_item(&change.id)?;
        if let Some(local) = &local {
            if local.kind != change.kind {
                // Two stores used one id for a folder and a message: this item fails alone.
                return Err(item_refused(format!(
                    "item {} is a {:?} here but arrives as a {:?}",
                    change.id, local.kind, change.kind
                )));
            }
        }
        match (change.is_tombstone(), local) {
            (true, None) => {
                self.write_tombstone(change)?;
                Ok(Step::Applied)
            }
            (true, Some(local)) if local.deleted => Ok(Step::Applied),
            (true, Some(local)) => self.apply_delete(session, change, &local, report),
            (false, None) => self.create(change),
            (false, Some(local)) if local.deleted => {
                self.apply_over_tombstone(session, change, &local, report)
            }
            (false, Some(local)) => self.apply_units(session, known, change, &local, report),
        }
    }

    /// An incoming delete of an item the destination holds live.
    fn apply_delete(
        &mut self,
        session: &ImportSession,
        change: &ItemChange,
        local: &LocalItem,
        report: &mut ItemReport,
    ) -> Result<Step, StoreError> {
        let Some(deletion) = change.units.first() else {
            return Ok(Step::Skipped);
        };
        // Local units the source never saw: update vs delete.
        let unseen: Vec<&(Unit, Version, i64)> = local
            .units
            .iter()
            .filter(|(_, v, _)| !session.made_with.contains(v))
            .collect();
        if let Some(newest) = unseen.iter().max_by_key(|u| (u.2, u.1.clone())) {
            let delete_wins = match session.rule {
                ConflictRule::IncomingWins => true,
                ConflictRule::LocalWins | ConflictRule::Merge | ConflictRule::Defer => false,
                ConflictRule::NewerWins => {
                    newer((deletion.at, &deletion.version), (newest.2, &newest.1))
                }
            };
            let deferred = session.rule == ConflictRule::Defer;
            report.conflicts.push(ReportedConflict {
                item: change.id.clone(),
                kind: change.kind,
                unit: deletion.value.unit(),
                local: newest.1.clone(),
                remote: deletion.version.clone(),
                outcome: outcome_name(delete_wins, deferred),
            });
            if deferred {
                report.excluded.push(deletion.version.clone());
            }
            if !delete_wins {
                return Ok(Step::Applied);
            }
        }
        if change.kind == ItemKind::Folder && self.folder_has_contents(&change.id)? {
            return Ok(Step::Pending(format!(
                "folder {} still holds items here; its delete waits for theirs",
                change.id
            )));
        }
        let table = match change.kind {
            ItemKind::Folder => "DELETE FROM folders WHERE id = ?1",
            ItemKind::Message => "DELETE FROM messages WHERE id = ?1",
        };
        self.conn
            .prepare_cached(table)
            .and_then(|mut s| s.execute([&change.id]))
            .ctx(&self.path, "cannot delete an item")?;
        self.write_tombstone(change)?;
        Ok(Step::Applied)
    }

    /// An incoming live item the destination holds as a tombstone.
    fn apply_over_tombstone(
        &mut self,
        session: &ImportSession,
        change: &ItemChange,
        local: &LocalItem,
        report: &mut ItemReport,
    ) -> Result<Step, StoreError> {
        let Some((unit, deletion, deleted_at)) = local.units.first().cloned() else {
            return self.create(change);
        };
        if session.made_with.contains(&deletion) {
            // The source knew of the delete and holds the item live: it was brought back there.
            return self.create(change);
        }
        let newest = change
            .units
            .iter()
            .max_by_key(|u| (u.at, u.version.clone()));
        let Some(newest) = newest else {
            return Ok(Step::Skipped);
        };
        let update_wins = match session.rule {
            ConflictRule::IncomingWins | ConflictRule::Merge => true,
            ConflictRule::LocalWins | ConflictRule::Defer => false,
            ConflictRule::NewerWins => newer((newest.at, &newest.version), (deleted_at, &deletion)),
        };
        let deferred = session.rule == ConflictRule::Defer;
        report.conflicts.push(ReportedConflict {
            item: change.id.clone(),
            kind: change.kind,
            unit,
            local: deletion,
            remote: newest.version.clone(),
            outcome: outcome_name(update_wins, deferred),
        });
        if deferred {
            report.excluded.extend(change.versions().cloned());
        }
        if update_wins {
            self.create(change)
        } else {
            Ok(Step::Applied)
        }
    }

    /// An incoming live item the destination holds live: unit by unit.
    fn apply_units(
        &mut self,
        session: &ImportSession,
        known: &Knowledge,
        change: &ItemChange,
        local: &LocalItem,
        report: &mut ItemReport,
    ) -> Result<Step, StoreError> {
        let mut take: Vec<&UnitState> = Vec::new();
        for incoming in &change.units {
            let unit = incoming.value.unit();
            if known.contains(&incoming.version) {
                continue;
            }
            let Some((_, local_version, local_at)) = local.unit(unit).cloned() else {
                take.push(incoming);
                continue;
            };
            if local_version == incoming.version {
                continue;
            }
            if session.made_with.contains(&local_version) {
                take.push(incoming);
                continue;
            }
            // Neither knows the other's change: a conflict (seed 004, "Konfliktbeispiel").
            let incoming_wins = match session.rule {
                ConflictRule::IncomingWins => true,
                ConflictRule::LocalWins | ConflictRule::Defer => false,
                ConflictRule::NewerWins => {
                    newer((incoming.at, &incoming.version), (local_at, &local_version))
                }
                ConflictRule::Merge => match incoming.value {
                    UnitValue::Read { is_read } => {
                        is_read && !self.local_is_read(&change.id)?
                            || is_read == self.local_is_read(&change.id)?
                                && newer(
                                    (incoming.at, &incoming.version),
                                    (local_at, &local_version),
                                )
                    }
                    _ => newer((incoming.at, &incoming.version), (local_at, &local_version)),
                },
            };
            let deferred = session.rule == ConflictRule::Defer;
            report.conflicts.push(ReportedConflict {
                item: change.id.clone(),
                kind: change.kind,
                unit,
                local: local_version.clone(),
                remote: incoming.version.clone(),
                outcome: outcome_name(incoming_wins, deferred),
            });
            if deferred {
                report.excluded.push(incoming.version.clone());
            }
            if incoming_wins {
                take.push(incoming);
            }
        }
        if take.is_empty() {
            return Ok(Step::Skipped);
        }
        for u in &take {
            if let Some(parent) = parent_of(&u.value) {
                if !self.folder_exists(parent)? {
                    return Ok(Step::Pending(format!(
                        "{} {} moves into folder {parent}, which has not arrived",
                        kind_name(change.kind),
                        change.id
                    )));
                }
                if change.kind == ItemKind::Folder && self.is_within(parent, &change.id)? {
                    return Err(cycle_error(&change.id, parent));
                }
            }
        }
        for u in take {
            self.write_unit_value(change, &u.value)?;
            self.write_unit_version(&change.id, u)?;
        }
        Ok(Step::Applied)
    }

    /// A new item (or one brought back over its tombstone): every unit as it arrives.
    fn create(&mut self, change: &ItemChange) -> Result<Step, StoreError> {
        if let Some(parent) = change.units.iter().find_map(|u| parent_of(&u.value)) {
            if !self.folder_exists(parent)? {
                return Ok(Step::Pending(format!(
                    "{} {} belongs in folder {parent}, which has not arrived",
                    kind_name(change.kind),
                    change.id
                )));
            }
        }
        match change.kind {
            ItemKind::Folder => {
                let name = change.units.iter().find_map(|u| match &u.value {
                    UnitValue::Name { name } => Some(name.clone()),
                    _ => None,
                });
                let parent = change.units.iter().find_map(|u| parent_of(&u.value));
                self.conn
                    .prepare_cached(
                        "INSERT INTO folders (id, parent_id, name) VALUES (?1, ?2, ?3) \
                         ON CONFLICT(id) DO UPDATE SET parent_id = excluded.parent_id, name = excluded.name",
                    )
                    .and_then(|mut s| s.execute(rusqlite::params![change.id, parent, name.unwrap_or_default()]))
                    .ctx(&self.path, "cannot create a folder")?;
            }
            ItemKind::Message => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO messages (id, folder_id) VALUES (?1, ?2) ON CONFLICT(id) DO NOTHING",
                    )
                    .and_then(|mut s| {
                        s.execute(rusqlite::params![
                            change.id,
                            change.units.iter().find_map(|u| parent_of(&u.value))
                        ])
                    })
                    .ctx(&self.path, "cannot create a message")?;
                for u in &change.units {
                    self.write_unit_value(change, &u.value)?;
                }
            }
        }
        let created_r = self.ensure_index(&change.created.replica)?;
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO sync_items (id, kind, created_r, created_t, deleted_at) \
                 VALUES (?1, ?2, ?3, ?4, NULL)",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    change.id,
                    change.kind.code(),
                    created_r,
                    change.created.tick as i64
                ])
            })
            .ctx(&self.path, "cannot record an item")?;
        self.conn
            .prepare_cached("DELETE FROM sync_units WHERE item = ?1")
            .and_then(|mut s| s.execute([&change.id]))
            .ctx(&self.path, "cannot record an item")?;
        for u in &change.units {
            self.write_unit_version(&change.id, u)?;
        }
        Ok(Step::Applied)
    }

    fn write_unit_value(
        &mut self,
        change: &ItemChange,
        value: &UnitValue,
    ) -> Result<(), StoreError> {
        let id = &change.id;
        let result = match value {
            UnitValue::Name { name } => self
                .conn
                .prepare_cached("UPDATE folders SET name = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(rusqlite::params![id, name])),
            UnitValue::Parent { parent_id } => self
                .conn
                .prepare_cached("UPDATE folders SET parent_id = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(rusqlite::params![id, parent_id])),
            UnitValue::Content {
                subject,
                sender,
                received_at,
                headers,
                body,
            } => {
                let body = match body.clone().map(|b| b.into_stored()).transpose() {
                    Ok(body) => body,
                    Err(reason) => {
                        return Err(StoreError::Corrupt {
                            path: self.path.clone(),
                            what: format!("message {id}: {reason}"),
                        })
                    }
                };
                self.conn
                    .prepare_cached(
                        "UPDATE messages SET subject = ?2, sender = ?3, received_at = ?4, \
                         headers = ?5, body = ?6 WHERE id = ?1",
                    )
                    .and_then(|mut s| {
                        s.execute(rusqlite::params![
                            id,
                            subject,
                            sender,
                            received_at,
                            headers,
                            body
                        ])
                    })
            }
            UnitValue::Read { is_read } => self
                .conn
                .prepare_cached("UPDATE messages SET is_read = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(rusqlite::params![id, *is_read as i64])),
            UnitValue::Location { folder_id } => self
                .conn
                .prepare_cached("UPDATE messages SET folder_id = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(rusqlite::params![id, folder_id])),
            UnitValue::MessageTombstone | UnitValue::FolderTombstone => Ok(0),
        };
        result.map(|_| ()).ctx(&self.path, "cannot write an item")
    }

    fn write_unit_version(&mut self, item: &str, u: &UnitState) -> Result<(), StoreError> {
        let r = self.ensure_index(&u.version.replica)?;
        let unit = u.value.unit();
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO sync_units (item, unit, r, t, at, phase) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    item,
                    unit.code(),
                    r,
                    u.version.tick as i64,
                    u.at,
                    unit.phase().code()
                ])
            })
            .map(|_| ())
            .ctx(&self.path, "cannot record a version")
    }

    /// Records an item as a tombstone with the incoming deletion version.
    fn write_tombstone(&mut self, change: &ItemChange) -> Result<(), StoreError> {
        let Some(deletion) = change.units.first() else {
            return Ok(());
        };
        let created_r = self.ensure_index(&change.created.replica)?;
        self.conn
            .prepare_cached(
                "INSERT INTO sync_items (id, kind, created_r, created_t, deleted_at) \
                 VALUES (?1, ?2, ?3, ?4, CAST(strftime('%s', 'now') AS INTEGER)) \
                 ON CONFLICT(id) DO UPDATE SET deleted_at = CAST(strftime('%s', 'now') AS INTEGER)",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    change.id,
                    change.kind.code(),
                    created_r,
                    change.created.tick as i64
                ])
            })
            .ctx(&self.path, "cannot record a tombstone")?;
        self.conn
            .prepare_cached("DELETE FROM sync_units WHERE item = ?1")
            .and_then(|mut s| s.execute([&change.id]))
            .ctx(&self.path, "cannot record a tombstone")?;
        self.write_unit_version(&change.id, deletion)
    }

    /// Adds the learned knowledge to the stored knowledge. Knowledge of this store's own ticks
    /// beyond its counter (a store restored from a backup hearing of its lost changes) moves the
    /// counter forward, so no tick is ever given out twice.
    fn save_learned(&mut self, learned: &Knowledge) -> Result<(), StoreError> {
        let json: String = self
            .conn
            .query_row("SELECT knowledge FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .ctx(&self.path, "cannot read knowledge")?;
        let mut stored: Knowledge =
            serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("knowledge is not valid: {e}"),
            })?;
        stored.union_with(learned);
        let own_max = stored
            .get(&self.replica)
            .and_then(|t| t.max_tick())
            .unwrap_or(0);
        stored.set(&self.replica, Default::default());
        let json = serde_json::to_string(&stored).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            what: format!("cannot encode knowledge: {e}"),
        })?;
        self.conn
            .prepare_cached(
                "UPDATE sync_state SET knowledge = ?1, tick = max(tick, ?2) WHERE id = 1",
            )
            .and_then(|mut s| s.execute(rusqlite::params![json, own_max as i64]))
            .map(|_| ())
            .ctx(&self.path, "cannot save knowledge")
    }

    fn ensure_index(&mut self, replica: &ReplicaId) -> Result<i64, StoreError> {
        if let Some(idx) = self.index_of(replica)? {
            return Ok(idx);
        }
        let idx: i64 = self
            .conn
            .query_row(
                "INSERT INTO sync_replicas (idx, replica) \
                 VALUES ((SELECT coalesce(max(idx), 0) + 1 FROM sync_replicas), ?1) RETURNING idx",
                [replica.as_str()],
                |r| r.get(0),
            )
            .ctx(&self.path, "cannot record a replica")?;
        self.by_id.insert(replica.clone(), idx);
        self.by_idx.insert(idx, replica.clone());
        Ok(idx)
    }

    fn folder_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM folders WHERE id = ?1")
            .and_then(|mut s| s.exists([id]))
            .ctx(&self.path, "cannot look up a folder")
    }

    fn folder_has_contents(&self, id: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE folder_id = ?1) \
                     OR EXISTS (SELECT 1 FROM folders WHERE parent_id = ?1)",
            )
            .and_then(|mut s| s.query_row([id], |r| r.get::<_, bool>(0)))
            .ctx(&self.path, "cannot look into a folder")
    }

    /// Whether `folder` is `ancestor` or lies below it.
    fn is_within(&self, folder: &str, ancestor: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "WITH RECURSIVE up(id) AS (SELECT ?1 UNION SELECT f.parent_id FROM folders f \
                 JOIN up ON f.id = up.id WHERE f.parent_id IS NOT NULL) \
                 SELECT EXISTS (SELECT 1 FROM up WHERE id = ?2)",
            )
            .and_then(|mut s| s.query_row([folder, ancestor], |r| r.get::<_, bool>(0)))
            .ctx(&self.path, "cannot walk the folder tree")
    }

    fn local_is_read(&self, id: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT is_read FROM messages WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get::<_, i64>(0)))
            .map(|v| v != 0)
            .ctx(&self.path, "cannot read a message")
    }
}

/// Whether change `a` is newer than `b`: later time first, then the greater version, so every
/// store breaks a tie the same way.
fn newer(a: (i64, &Version), b: (i64, &Version)) -> bool {
    (a.0, &a.1.replica, a.1.tick) > (b.0, &b.1.replica, b.1.tick)
}

fn outcome_name(incoming_wins: bool, deferred: bool) -> String {
    match (deferred, incoming_wins) {
        (true, _) => "deferred",
        (false, true) => "incoming",
        (false, false) => "local",
    }
    .to_string()
}

fn parent_of(value: &UnitValue) -> Option<&str> {
    match value {
        UnitValue::Parent { parent_id } => parent_id.as_deref(),
        UnitValue::Location { folder_id } => Some(folder_id),
        _ => None,
    }
}

fn kind_name(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Folder => "folder",
        ItemKind::Message => "message",
    }
}

/// A move that would make a folder its own ancestor is refused like a constraint an
/// application's trigger raises: the item fails alone and comes again.
fn cycle_error(id: &str, parent: &str) -> StoreError {
    item_refused(format!(
        "moving folder {id} under {parent} would make a cycle"
    ))
}

/// An error that fails one item (a recoverable error, seed 003), not the batch.
fn item_refused(reason: String) -> StoreError {
    StoreError::Sqlite {
        path: Default::default(),
        context: "refused an item",
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            Some(reason),
        ),
    }
}
