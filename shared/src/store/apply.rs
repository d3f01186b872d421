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

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::conflict::{
    label_of, newer, summary, ConflictRule, Outcome, ReportedConflict, Resolution, Resolutions,
};
use super::error::SqlContext;
use super::fresh::split_new_messages;
use super::items::{ItemChange, LocalItem, UnitState};
use super::{Store, StoreError};
use crate::knowledge::{Knowledge, ReplicaId, Version};
use crate::model::{ItemKind, Unit, UnitValue};

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
    /// Operators' choices for deferred conflicts, overriding `rule` where they apply.
    resolutions: Resolutions,
    /// Items waiting for their parent, by id: an item that comes again in a later phase of the
    /// session waits once.
    pending: std::collections::BTreeMap<String, (ItemChange, String)>,
    /// Versions kept out of every learned knowledge of this session (looked up per version of
    /// every applied item, hence a set).
    pub(crate) excluded: HashSet<Version>,
    /// Items that failed in this session: an item enumerated again in a later phase fails once.
    failed: HashSet<String>,
    /// Versions the store does not claim although the session told it of them (`scoped`):
    /// changes that took items out of the scope, and the versions of items it stopped holding.
    /// They stay out of the store's knowledge, so a session that carries them whole sends them
    /// again.
    pub(crate) unclaimed: Knowledge,
    /// What the session carried so far (scoped sessions): the store claims no more of the
    /// source's knowledge than this.
    pub(crate) carried: Knowledge,
    /// The key of the session's scope ([`crate::scope::Scope::key`]), if it has one.
    pub(crate) scope: Option<String>,
}

impl ImportSession {
    pub fn new(source: ReplicaId, made_with: Knowledge, rule: ConflictRule) -> ImportSession {
        ImportSession {
            source,
            made_with,
            rule,
            resolutions: Resolutions::default(),
            pending: Default::default(),
            excluded: Default::default(),
            failed: Default::default(),
            unclaimed: Knowledge::new(),
            carried: Knowledge::new(),
            scope: None,
        }
    }

    /// A scoped session (filtered or header-only): batches are applied with
    /// [`Store::apply_scoped_batch`].
    pub fn with_scope(mut self, scope: Option<String>) -> ImportSession {
        self.scope = scope;
        self
    }

    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The operators' resolutions this session applies when it meets their conflicts.
    pub fn with_resolutions(mut self, resolutions: Vec<Resolution>) -> ImportSession {
        self.resolutions = Resolutions::new(resolutions);
        self
    }
}

/// Work done inside an import transaction before the learned knowledge is saved.
pub(crate) type BeforeSave<'a> = dyn FnMut(
        &mut Store,
        &mut ImportSession,
        &mut Knowledge,
        &mut ApplyOutcome,
    ) -> Result<(), StoreError>
    + 'a;

/// What became of one item.
enum Step {
    Applied,
    Skipped,
    /// Waiting for a parent folder (or, for a folder delete, for its contents to go).
    Pending(String),
}

/// Whether each item runs in its own savepoint. A savepoint costs a copy of every page the item
/// touches, so a batch is first applied without; only a batch in which an item fails is applied
/// again, each item in a savepoint, so that the failure stays the item's alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    Optimistic,
    PerItem,
}

/// What every item of one batch attempt shares.
struct ItemContext<'a> {
    known: &'a Knowledge,
    outcome: &'a mut ApplyOutcome,
    learned: &'a mut Knowledge,
    guard: Guard,
}

/// How a change reached [`Store::apply_guarded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arrival {
    /// In this batch.
    Batch,
    /// In this batch, a message the split found unseen (see `fresh`) whose folder exists: it
    /// may be created without first being looked up.
    Unseen,
    /// From the session's queue: an item whose parent arrived since.
    Queued,
}

fn is_constraint(e: &StoreError) -> bool {
    matches!(e, StoreError::Sqlite { source, .. }
        if source.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation))
}

#[derive(Default)]
pub(super) struct ItemReport {
    pub(super) conflicts: Vec<ReportedConflict>,
    pub(super) excluded: Vec<Version>,
}

impl Store {
    /// Applies one batch in one transaction with the store's knowledge (seed 003, "Saving Updated
    /// Destination Knowledge"). `learned` is the batch's learned knowledge; `last` ends the
    /// session (queued items are dropped and come again next session).
    pub fn apply_batch(
        &mut self,
        session: &mut ImportSession,
        changes: &[ItemChange],
        learned: &Knowledge,
        last: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        self.apply_batch_with(session, changes, learned, last, &mut |_, _, _, _| Ok(()))
    }

    /// [`Store::apply_batch`] with `before_save` run in the same transaction once the items are
    /// applied, just before the learned knowledge is saved (a full enumeration's drops, `full`).
    pub(crate) fn apply_batch_with(
        &mut self,
        session: &mut ImportSession,
        changes: &[ItemChange],
        learned: &Knowledge,
        last: bool,
        before_save: &mut BeforeSave<'_>,
    ) -> Result<ApplyOutcome, StoreError> {
        let saved = (
            session.pending.clone(),
            session.excluded.clone(),
            session.failed.clone(),
        );
        let first = self.apply_attempt(
            session,
            changes,
            learned,
            last,
            Guard::Optimistic,
            before_save,
        );
        match first {
            Err(e) if is_constraint(&e) => {
                // An item failed: apply the batch again, each item in its own savepoint.
                (session.pending, session.excluded, session.failed) = saved;
                self.apply_attempt(session, changes, learned, last, Guard::PerItem, before_save)
            }
            result => result,
        }
    }

    fn apply_attempt(
        &mut self,
        session: &mut ImportSession,
        changes: &[ItemChange],
        learned: &Knowledge,
        last: bool,
        guard: Guard,
        before_save: &mut BeforeSave<'_>,
    ) -> Result<ApplyOutcome, StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE; UPDATE sync_state SET applying = 1 WHERE id = 1;")
            .ctx(&self.path, "cannot begin the import transaction")?;
        match self.apply_in_transaction(session, changes, learned, last, guard, before_save) {
            Ok(outcome) => {
                self.conn
                    .execute_batch("UPDATE sync_state SET applying = 0 WHERE id = 1; COMMIT;")
                    .ctx(&self.path, "cannot commit the batch")?;
                Ok(outcome)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                let _ = self.set_triggers(true);
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
        changes: &[ItemChange],
        learned: &Knowledge,
        last: bool,
        guard: Guard,
        before_save: &mut BeforeSave<'_>,
    ) -> Result<ApplyOutcome, StoreError> {
        let known = self.knowledge()?;
        let mut outcome = ApplyOutcome::default();
        let mut learned = learned.clone();
        let mut item = ItemContext {
            known: &known,
            outcome: &mut outcome,
            learned: &mut learned,
            guard,
        };

        let order = in_apply_order(changes);
        let (new, rest) = split_new_messages(&order, &known);
        let (new, rest) = if !new.is_empty() && self.has_foreign_message_triggers()? {
            (Vec::new(), order)
        } else {
            (new, rest)
        };
        if !new.is_empty() {
            // New messages first, with the triggers off (see `fresh`); on again whatever happens.
            let folders = self.existing_folders(&new)?;
            self.set_triggers(false)?;
            let created = self.apply_new_messages(session, &mut item, new, &folders);
            self.set_triggers(true)?;
            created?;
        }
        for change in rest {
            self.apply_guarded(session, &mut item, change, Arrival::Batch)?;
        }
        // Queued items whose parent arrived in this batch.
        loop {
            let before = session.pending.len();
            let waiting = std::mem::take(&mut session.pending);
            for (change, _) in waiting.values() {
                for v in change.versions() {
                    session.excluded.remove(v);
                }
                self.apply_guarded(session, &mut item, change, Arrival::Queued)?;
            }
            if session.pending.len() >= before {
                break;
            }
        }
        if last {
            for (_, (change, reason)) in std::mem::take(&mut session.pending) {
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
        before_save(self, session, &mut learned, &mut outcome)?;
        if !session.unclaimed.is_empty() {
            learned = learned.difference(&session.unclaimed);
        }
        let stored = self.save_learned(&learned)?;
        outcome.knowledge = self.with_own_ticks(stored)?;
        Ok(outcome)
    }

    /// Applies the batch's new messages (see `fresh`), with the connection's triggers off. In a
    /// first attempt those whose folder exists are created together, with statements prepared
    /// once for the batch ([`Store::create_unseen`]); the others, and those the store turns out
    /// to know, take the ordinary way. Per item (after a failure), each is created on its own
    /// inside its savepoint.
    fn apply_new_messages(
        &mut self,
        session: &mut ImportSession,
        item: &mut ItemContext<'_>,
        new: Vec<&ItemChange>,
        folders: &HashSet<&str>,
    ) -> Result<(), StoreError> {
        let in_known_folder =
            |change: &ItemChange| folder_of(change).is_some_and(|f| folders.contains(f));
        let (unseen, other): (Vec<&ItemChange>, Vec<&ItemChange>) =
            new.into_iter().partition(|change| {
                item.guard == Guard::Optimistic
                    && in_known_folder(change)
                    && !session.failed.contains(&change.id)
            });
        let known = self.create_unseen(&unseen)?;
        item.outcome.applied += (unseen.len() - known.len()) as u64;
        for change in other {
            let arrival = match in_known_folder(change) {
                true => Arrival::Unseen,
                false => Arrival::Batch,
            };
            self.apply_guarded(session, item, change, arrival)?;
        }
        for change in known {
            self.apply_guarded(session, item, change, Arrival::Batch)?;
        }
        Ok(())
    }

    /// Applies one item. With [`Guard::PerItem`] it runs inside a savepoint, so a constraint an
    /// application's trigger raises fails only that item (a recoverable error, seed 003), not
    /// the batch; with [`Guard::Optimistic`] such a failure fails the attempt, which
    /// [`Store::apply_batch`] then repeats per item.
    fn apply_guarded(
        &mut self,
        session: &mut ImportSession,
        item: &mut ItemContext<'_>,
        change: &ItemChange,
        arrival: Arrival,
    ) -> Result<(), StoreError> {
        if session.failed.contains(&change.id) {
            session.excluded.extend(change.versions().cloned());
            item.outcome.skipped += 1;
            return Ok(());
        }
        let guarded = item.guard == Guard::PerItem;
        if guarded {
            self.conn
                .prepare_cached("SAVEPOINT item")
                .and_then(|mut s| s.execute([]))
                .ctx(&self.path, "cannot begin an item")?;
        }
        let mut report = ItemReport::default();
        match self.apply_one(session, item.known, change, arrival, &mut report) {
            Ok(step) => {
                if guarded {
                    self.conn
                        .prepare_cached("RELEASE item")
                        .and_then(|mut s| s.execute([]))
                        .ctx(&self.path, "cannot end an item")?;
                }
                match step {
                    Step::Applied => item.outcome.applied += 1,
                    Step::Skipped => item.outcome.skipped += 1,
                    Step::Pending(reason) => {
                        session.excluded.extend(change.versions().cloned());
                        session
                            .pending
                            .insert(change.id.clone(), (change.clone(), reason));
                        return Ok(());
                    }
                }
                for v in &report.excluded {
                    item.learned.exclude(v);
                }
                session.excluded.extend(report.excluded);
                item.outcome.conflicts.extend(report.conflicts);
                // A queued item applied now: what it carried is learned too (the batch that
                // brought it learned everything but it).
                if arrival == Arrival::Queued {
                    for v in change.versions() {
                        if session.made_with.contains(v) && !session.excluded.contains(v) {
                            item.learned.insert(v);
                        }
                    }
                }
                Ok(())
            }
            Err(StoreError::Sqlite { source, .. })
                if guarded
                    && source.sqlite_error_code()
                        == Some(rusqlite::ErrorCode::ConstraintViolation) =>
            {
                self.conn
                    .execute_batch("ROLLBACK TO item; RELEASE item")
                    .ctx(&self.path, "cannot undo a failed item")?;
                session.excluded.extend(change.versions().cloned());
                session.failed.insert(change.id.clone());
                item.outcome.errors.push(ItemError {
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
        arrival: Arrival,
        report: &mut ItemReport,
    ) -> Result<Step, StoreError> {
        if arrival == Arrival::Unseen && self.create_unseen(&[change])?.is_empty() {
            return Ok(Step::Applied);
        }
        if change.versions().all(|v| known.contains(v)) && !self.fills_in(change)? {
            return Ok(Step::Skipped);
        }
        let local = self.local_item(&change.id)?;
        if local.is_some() || change.is_tombstone() || change.kind != ItemKind::Message {
            // Only a new message is created with the triggers off (see `fresh`).
            self.set_triggers(true)?;
        }
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
                self.write_tombstone(change, None)?;
                Ok(Step::Applied)
            }
            (true, Some(local)) if local.deleted => {
                // Both deleted: the newer deletion stays, the same on every store, so knowing
                // a deletion always means holding it or a newer one.
                let newer_delete = match (change.units.first(), local.units.first()) {
                    (Some(incoming), Some((_, v, at))) => {
                        newer((incoming.at, &incoming.version), (*at, v)).then_some(incoming)
                    }
                    _ => None,
                };
                if let Some(incoming) = newer_delete {
                    self.write_unit_version(local.rid, incoming)?;
                }
                Ok(Step::Applied)
            }
            (true, Some(local)) => self.apply_delete(session, change, &local, report),
            (false, None) => self.create(change, None, report),
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
        if let Some(&(newest_unit, ref newest, newest_at)) =
            unseen.iter().copied().max_by_key(|u| (u.2, u.1.clone()))
        {
            let policy = match session.rule {
                ConflictRule::IncomingWins => true,
                ConflictRule::LocalWins | ConflictRule::Merge | ConflictRule::Defer => false,
                ConflictRule::NewerWins => {
                    newer((deletion.at, &deletion.version), (newest_at, newest))
                }
            };
            let unit = deletion.value.unit();
            let local_versions: Vec<&Version> = unseen.iter().map(|u| &u.1).collect();
            let (delete_wins, outcome) = session.resolutions.settle(
                &change.id,
                unit,
                &[&deletion.version],
                &local_versions,
                session.rule,
                policy,
            );
            let current = self.read_item_change(&change.id)?;
            let values = current.as_ref().map(|c| &c.units[..]).unwrap_or(&[]);
            report.conflicts.push(ReportedConflict {
                item: change.id.clone(),
                kind: change.kind,
                unit,
                local: newest.clone(),
                remote: deletion.version.clone(),
                outcome,
                label: label_of(values.iter().map(|u| &u.value)).unwrap_or_default(),
                local_value: values
                    .iter()
                    .find(|u| u.value.unit() == newest_unit)
                    .map(|u| format!("changed: {}", summary(&u.value)))
                    .unwrap_or_default(),
                remote_value: summary(&deletion.value),
            });
            if outcome == Outcome::Deferred {
                report.excluded.push(deletion.version.clone());
            }
            if !delete_wins {
                if outcome != Outcome::Deferred {
                    // The item stays, and the delete is learned — and with it whatever the
                    // deleting store knew of the item's units. The item as kept here must
                    // replace those, so it becomes a new change (update vs delete: the
                    // update's store wins whole).
                    self.renew_versions(&change.id)?;
                }
                return Ok(Step::Applied);
            }
        }
        if change.kind == ItemKind::Folder && self.folder_has_contents(&change.id)? {
            if self.holds_unseen_items(&change.id, &session.made_with)? {
                // A constraint conflict (seed 003): the delete would lose items the deleting
                // store never saw. The folder stays and comes back there.
                let restored = self.restore_folder(&change.id)?;
                let name = self.folder_name(&change.id)?;
                report.conflicts.push(ReportedConflict {
                    item: change.id.clone(),
                    kind: change.kind,
                    unit: deletion.value.unit(),
                    local: restored,
                    remote: deletion.version.clone(),
                    outcome: Outcome::Restored,
                    label: name,
                    local_value: "holds items the deleting store never saw".into(),
                    remote_value: summary(&deletion.value),
                });
                return Ok(Step::Applied);
            }
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
        self.write_tombstone(change, Some(local.rid))?;
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
            return self.create(change, Some(local.rid), report);
        };
        if session.made_with.contains(&deletion) {
            // The source knew of the delete and holds the item live: it was brought back there.
            return self.create(change, Some(local.rid), report);
        }
        let newest = change
            .units
            .iter()
            .max_by_key(|u| (u.at, u.version.clone()));
        let Some(newest) = newest else {
            return Ok(Step::Skipped);
        };
        let policy = match session.rule {
            ConflictRule::IncomingWins | ConflictRule::Merge => true,
            ConflictRule::LocalWins | ConflictRule::Defer => false,
            ConflictRule::NewerWins => newer((newest.at, &newest.version), (deleted_at, &deletion)),
        };
        let incoming_versions: Vec<&Version> = change.versions().collect();
        let (update_wins, outcome) = session.resolutions.settle(
            &change.id,
            unit,
            &incoming_versions,
            &[&deletion],
            session.rule,
            policy,
        );
        report.conflicts.push(ReportedConflict {
            item: change.id.clone(),
            kind: change.kind,
            unit,
            local: deletion,
            remote: newest.version.clone(),
            outcome,
            label: label_of(change.units.iter().map(|u| &u.value)).unwrap_or_default(),
            local_value: "deleted".into(),
            remote_value: format!("changed: {}", summary(&newest.value)),
        });
        if outcome == Outcome::Deferred {
            report.excluded.extend(change.versions().cloned());
        }
        if !update_wins {
            return Ok(Step::Applied);
        }
        let step = self.create(change, Some(local.rid), report)?;
        if matches!(step, Step::Applied) {
            // Brought back whole as the updating store holds it: a new change here, so it
            // replaces the units this store knew before it deleted the item (on other stores
            // too), instead of keeping their older versions beside newer knowledge.
            self.renew_versions(&change.id)?;
        }
        Ok(step)
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
        // The destination's values, read at the item's first conflict only.
        let mut current: Option<ItemChange> = None;
        for incoming in &change.units {
            let unit = incoming.value.unit();
            // A header-only copy meeting its body: the body fills in (the version check first,
            // it costs no query).
            if unit == Unit::Content
                && local.unit(unit).is_some_and(|l| l.1 == incoming.version)
                && self.fills_in(change)?
            {
                take.push(incoming);
                continue;
            }
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
            if current.is_none() {
                current = self.read_item_change(&change.id)?;
            }
            let values = current.as_ref().map(|c| &c.units[..]).unwrap_or(&[]);
            let local_value = values.iter().find(|u| u.value.unit() == unit);
            let incoming_newer =
                newer((incoming.at, &incoming.version), (local_at, &local_version));
            if local_value.is_some_and(|l| l.value == incoming.value) {
                // Both made the same edit: no conflict. The greater version stays everywhere.
                if incoming_newer {
                    take.push(incoming);
                }
                continue;
            }
            let policy = match session.rule {
                ConflictRule::IncomingWins => true,
                ConflictRule::LocalWins | ConflictRule::Defer => false,
                ConflictRule::NewerWins => incoming_newer,
                // The values differ: read wins over unread; any other unit, newer wins.
                ConflictRule::Merge => match incoming.value {
                    UnitValue::Read { is_read } => is_read,
                    _ => incoming_newer,
                },
            };
            let (incoming_wins, outcome) = session.resolutions.settle(
                &change.id,
                unit,
                &[&incoming.version],
                &[&local_version],
                session.rule,
                policy,
            );
            report.conflicts.push(ReportedConflict {
                item: change.id.clone(),
                kind: change.kind,
                unit,
                local: local_version.clone(),
                remote: incoming.version.clone(),
                outcome,
                label: label_of(change.units.iter().map(|u| &u.value)).unwrap_or_default(),
                local_value: local_value.map(|l| summary(&l.value)).unwrap_or_default(),
                remote_value: summary(&incoming.value),
            });
            if outcome == Outcome::Deferred {
                report.excluded.push(incoming.version.clone());
            }
            if incoming_wins {
                take.push(incoming);
            }
        }
        if take.is_empty() {
            return Ok(Step::Skipped);
        }
        let mut writes = Vec::with_capacity(take.len());
        for u in take {
            if let Some(parent) = parent_of(&u.value) {
                if !self.folder_exists(parent)? {
                    return Ok(Step::Pending(self.missing_parent(
                        change,
                        parent,
                        "moves into",
                    )?));
                }
                if change.kind == ItemKind::Folder
                    && self.is_within(parent, &change.id)?
                    && !self.break_cycle(&session.made_with, change, u, parent, report)?
                {
                    // The moves in its way were newer: this one loses, and is learned.
                    continue;
                }
            }
            writes.push(u);
        }
        for u in &writes {
            self.write_unit_value(change, &u.value)?;
            self.write_unit_version(local.rid, u)?;
        }
        if change.kind == ItemKind::Folder && !writes.is_empty() {
            self.rename_same_name(&change.id, report)?;
        }
        Ok(Step::Applied)
    }

    /// A new item (or one brought back over its tombstone): every unit as it arrives.
    /// `tombstone`: the rid of the item's tombstone here, `None` if the store never saw it.
    fn create(
        &mut self,
        change: &ItemChange,
        tombstone: Option<i64>,
        report: &mut ItemReport,
    ) -> Result<Step, StoreError> {
        if let Some(parent) = folder_of(change) {
            if !self.folder_exists(parent)? {
                return Ok(Step::Pending(self.missing_parent(
                    change,
                    parent,
                    "belongs in",
                )?));
            }
        }
        // The item row first: a message row names it (`messages.sync_rid`).
        let rid = match tombstone {
            None => {
                // The import's hot path: plain single-row INSERTs, which need no statement
                // journal (an INSERT OR REPLACE or an upsert copies every page it touches first).
                self.record_item(change, INSERT_ITEM, &change.id)?;
                self.conn.last_insert_rowid()
            }
            Some(rid) => {
                // An item brought back over its tombstone keeps its row (and rid): its units
                // are replaced, its creation version is the incoming one.
                self.revive_item(rid, change)?;
                self.delete_units(rid)?;
                rid
            }
        };
        match change.kind {
            ItemKind::Folder => {
                let name = change.units.iter().find_map(|u| match &u.value {
                    UnitValue::Name { name } => Some(name.clone()),
                    _ => None,
                });
                let parent = folder_of(change);
                self.conn
                    .prepare_cached(
                        "INSERT INTO folders (id, parent_id, name) VALUES (?1, ?2, ?3) \
                         ON CONFLICT(id) DO UPDATE SET parent_id = excluded.parent_id, name = excluded.name",
                    )
                    .and_then(|mut s| s.execute(rusqlite::params![change.id, parent, name.unwrap_or_default()]))
                    .ctx(&self.path, "cannot create a folder")?;
            }
            ItemKind::Message => self.insert_message(change, rid, UPSERT_MESSAGE)?,
        }
        self.insert_unit_versions(rid, change)?;
        if change.kind == ItemKind::Folder {
            self.rename_same_name(&change.id, report)?;
        }
        Ok(Step::Applied)
    }

    /// The folders that exist here, of those the `messages` are in: looked up once per batch,
    /// not once per message.
    fn existing_folders<'c>(
        &self,
        messages: &[&'c ItemChange],
    ) -> Result<HashSet<&'c str>, StoreError> {
        let mut exist = HashSet::new();
        for folder in messages
            .iter()
            .filter_map(|c| folder_of(c))
            .collect::<HashSet<_>>()
        {
            if self.folder_exists(folder)? {
                exist.insert(folder);
            }
        }
        Ok(exist)
    }

    /// A message row with all its values in one statement, linked to its item row at `rid`;
    /// `sql` is [`INSERT_MESSAGE`] or [`UPSERT_MESSAGE`].
    fn insert_message(
        &mut self,
        change: &ItemChange,
        rid: i64,
        sql: &str,
    ) -> Result<(), StoreError> {
        let row = self.message_row(change)?;
        if row.withheld {
            self.mark_headers_only(&change.id, true)?;
        }
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| row.execute(&mut s, rid))
            .map(|_| ())
            .ctx(&self.path, "cannot create a message")
    }

    /// The values of `change`'s message row, as [`INSERT_MESSAGE`] and [`UPSERT_MESSAGE`] bind
    /// them. Refused if it has no content.
    pub(super) fn message_row<'c>(
        &self,
        change: &'c ItemChange,
    ) -> Result<MessageRow<'c>, StoreError> {
        let (mut folder, mut is_read, mut content) = (None, false, None);
        for u in &change.units {
            match &u.value {
                UnitValue::Location { folder_id } => folder = Some(folder_id.as_str()),
                UnitValue::Read { is_read: r } => is_read = *r,
                UnitValue::Content { .. } => content = Some(&u.value),
                _ => {}
            }
        }
        let Some(UnitValue::Content {
            subject,
            sender,
            received_at,
            headers,
            body,
        }) = content
        else {
            return Err(item_refused(format!(
                "message {} has no content",
                change.id
            )));
        };
        Ok(MessageRow {
            id: &change.id,
            folder,
            subject,
            sender,
            received_at: *received_at,
            headers,
            withheld: body.as_ref().is_some_and(|b| b.is_withheld()),
            body: self.body_value(&change.id, body.as_ref())?,
            is_read,
        })
    }

    fn body_value<'a>(
        &self,
        id: &str,
        body: Option<&'a crate::model::Body>,
    ) -> Result<Option<rusqlite::types::ToSqlOutput<'a>>, StoreError> {
        body.map(|b| b.sql_value())
            .transpose()
            .map_err(|reason| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("message {id}: {reason}"),
            })
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
                self.mark_headers_only(id, body.as_ref().is_some_and(|b| b.is_withheld()))?;
                let body = self.body_value(id, body.as_ref())?;
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

    /// Records a unit's version for the item at `rid` (its row in `sync_items`), replacing the
    /// unit's version it holds.
    pub(super) fn write_unit_version(
        &mut self,
        item: i64,
        u: &UnitState,
    ) -> Result<(), StoreError> {
        self.unit_version(
            "INSERT OR REPLACE INTO sync_units (item, unit, r, t, at, phase) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            item,
            u,
        )
    }

    /// Records the versions of `change`'s units for the item at `rid`, which has none yet: only
    /// those that differ from the item's creation (version or time); the others carry it without
    /// a row (migration 7). A new message as its store made it writes none.
    fn insert_unit_versions(&mut self, rid: i64, change: &ItemChange) -> Result<(), StoreError> {
        let created_at = created_at(change);
        change
            .units
            .iter()
            .filter(|u| u.version != change.created || u.at != created_at)
            .try_for_each(|u| self.insert_unit_version(rid, u))
    }

    /// Records the version of a unit the item at `rid` does not have yet: a plain INSERT.
    fn insert_unit_version(&mut self, item: i64, u: &UnitState) -> Result<(), StoreError> {
        self.unit_version(INSERT_UNIT, item, u)
    }

    fn unit_version(&mut self, sql: &str, item: i64, u: &UnitState) -> Result<(), StoreError> {
        let r = self.ensure_index(&u.version.replica)?;
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| execute_unit_version(&mut s, item, r, u))
            .map(|_| ())
            .ctx(&self.path, "cannot record a version")
    }

    /// Records an item as a tombstone with the incoming deletion version: the item row at `rid`
    /// (the item held live until now) or, with `None`, a new row.
    fn write_tombstone(&mut self, change: &ItemChange, rid: Option<i64>) -> Result<(), StoreError> {
        let Some(deletion) = change.units.first() else {
            return Ok(());
        };
        let rid = match rid {
            Some(rid) => {
                self.conn
                    .prepare_cached(
                        "UPDATE sync_items SET deleted_at = CAST(strftime('%s', 'now') AS INTEGER) \
                         WHERE rid = ?1",
                    )
                    .and_then(|mut s| s.execute([rid]))
                    .ctx(&self.path, "cannot record an item")?;
                self.delete_units(rid)?;
                rid
            }
            None => {
                self.record_item(
                    change,
                    "INSERT INTO sync_items (id, kind, created_r, created_t, deleted_at, created_at) \
                     VALUES (?1, ?2, ?3, ?4, CAST(strftime('%s', 'now') AS INTEGER), ?5)",
                    &change.id,
                )?;
                self.conn.last_insert_rowid()
            }
        };
        self.insert_unit_version(rid, deletion)
    }

    /// Makes the tombstone at `rid` the live item `change` brings: its kind and creation
    /// version.
    fn revive_item(&mut self, rid: i64, change: &ItemChange) -> Result<(), StoreError> {
        self.record_item(
            change,
            "UPDATE sync_items SET kind = ?2, created_r = ?3, created_t = ?4, deleted_at = NULL, \
             created_at = ?5 WHERE rid = ?1",
            &rid,
        )
    }

    /// Writes an item's `sync_items` row with `sql`, which binds (`key`: its id or rid, kind,
    /// created replica index, created tick, created at).
    fn record_item(
        &mut self,
        change: &ItemChange,
        sql: &str,
        key: &dyn rusqlite::ToSql,
    ) -> Result<(), StoreError> {
        let created_r = self.ensure_index(&change.created.replica)?;
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| execute_item(&mut s, key, change, created_r, created_at(change)))
            .map(|_| ())
            .ctx(&self.path, "cannot record an item")
    }

    /// Removes every unit version of the item at `rid`.
    pub(super) fn delete_units(&mut self, rid: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM sync_units WHERE item = ?1")
            .and_then(|mut s| s.execute([rid]))
            .map(|_| ())
            .ctx(&self.path, "cannot replace an item's versions")
    }

    /// Adds the learned knowledge to the stored knowledge. Knowledge of this store's own ticks
    /// beyond its counter (a store restored from a backup hearing of its lost changes) moves the
    /// counter forward, so no tick is ever given out twice. Returns the stored knowledge as
    /// written, so the batch's end knowledge is not read and parsed back.
    fn save_learned(&mut self, learned: &Knowledge) -> Result<Knowledge, StoreError> {
        let mut stored = self.stored_knowledge()?;
        stored.union_with(learned);
        let own_max = stored
            .get(&self.replica)
            .and_then(|t| t.max_tick())
            .unwrap_or(0);
        stored.set(&self.replica, Default::default());
        self.write_stored_knowledge(&stored, own_max)?;
        Ok(stored)
    }

    /// The knowledge row as stored: of other replicas only (its own is `1..=tick`).
    pub(super) fn stored_knowledge(&self) -> Result<Knowledge, StoreError> {
        let json: String = self
            .conn
            .query_row("SELECT knowledge FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .ctx(&self.path, "cannot read knowledge")?;
        self.parse_knowledge(&json, "knowledge")
    }

    /// Writes the knowledge row, raising the tick counter to `own_max` if it is lower.
    pub(super) fn write_stored_knowledge(
        &self,
        stored: &Knowledge,
        own_max: u64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(stored).map_err(|e| StoreError::Corrupt {
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

    pub(super) fn ensure_index(&mut self, replica: &ReplicaId) -> Result<i64, StoreError> {
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

    pub(super) fn folder_exists(&self, id: &str) -> Result<bool, StoreError> {
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
    pub(super) fn is_within(&self, folder: &str, ancestor: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "WITH RECURSIVE up(id) AS (SELECT ?1 UNION SELECT f.parent_id FROM folders f \
                 JOIN up ON f.id = up.id WHERE f.parent_id IS NOT NULL) \
                 SELECT EXISTS (SELECT 1 FROM up WHERE id = ?2)",
            )
            .and_then(|mut s| s.query_row([folder, ancestor], |r| r.get::<_, bool>(0)))
            .ctx(&self.path, "cannot walk the folder tree")
    }
}

/// The order a batch's items are applied in. Messages in id order: the random-key tree an
/// import writes (`messages`' id index) is then walked from left to right, each leaf read and
/// dirtied once per batch, instead of leaves evicted from the page cache
/// and read back again. Applying a message reads no other message and changes no folder, so
/// messages commute; only the order of their reports changes. Folders keep their order (a parent
/// before its children, as the source sent them). The sort is stable: an id that came twice keeps
/// its order.
fn in_apply_order(changes: &[ItemChange]) -> Vec<&ItemChange> {
    let mut order: Vec<&ItemChange> = changes.iter().collect();
    if changes.iter().all(|c| c.kind == ItemKind::Message) {
        order.sort_by(|a, b| a.id.cmp(&b.id));
    }
    order
}

/// The values of one message row (see [`Store::message_row`]).
pub(super) struct MessageRow<'c> {
    id: &'c str,
    folder: Option<&'c str>,
    subject: &'c str,
    sender: &'c str,
    received_at: i64,
    headers: &'c str,
    body: Option<rusqlite::types::ToSqlOutput<'c>>,
    is_read: bool,
    /// Its body is withheld (a header-only scope): the store records it as headers only.
    pub(super) withheld: bool,
}

impl MessageRow<'_> {
    /// Runs `statement` ([`INSERT_MESSAGE`] or [`UPSERT_MESSAGE`]) with the row's values, linked
    /// to the item row at `rid`.
    pub(super) fn execute(
        &self,
        statement: &mut rusqlite::Statement<'_>,
        rid: i64,
    ) -> rusqlite::Result<usize> {
        statement.execute(rusqlite::params![
            self.id,
            self.folder,
            self.subject,
            self.sender,
            self.received_at,
            self.headers,
            self.body,
            self.is_read as i64,
            rid
        ])
    }
}

/// A new message row, linked to its item row: (id, folder, subject, sender, received_at,
/// headers, body, is_read, sync_rid). A plain INSERT: `messages`' id index refuses an id held.
pub(super) const INSERT_MESSAGE: &str = "INSERT INTO messages \
     (id, folder_id, subject, sender, received_at, headers, body, is_read, sync_rid) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// [`INSERT_MESSAGE`], or the row's values and link replaced if the id has a row.
const UPSERT_MESSAGE: &str = "INSERT INTO messages \
     (id, folder_id, subject, sender, received_at, headers, body, is_read, sync_rid) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT(id) DO UPDATE SET folder_id = excluded.folder_id, \
     subject = excluded.subject, sender = excluded.sender, \
     received_at = excluded.received_at, headers = excluded.headers, \
     body = excluded.body, is_read = excluded.is_read, sync_rid = excluded.sync_rid";

/// A new item's row in `sync_items`: (id, kind, created replica index, created tick, created
/// at).
pub(super) const INSERT_ITEM: &str =
    "INSERT INTO sync_items (id, kind, created_r, created_t, deleted_at, created_at) \
     VALUES (?1, ?2, ?3, ?4, NULL, ?5)";

/// A unit version an item does not have yet: (item rid, unit code, replica index, tick, at,
/// phase code).
pub(super) const INSERT_UNIT: &str =
    "INSERT INTO sync_units (item, unit, r, t, at, phase) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Runs `statement` (an item row's INSERT or UPDATE, such as [`INSERT_ITEM`]) with `change`'s
/// item values: `key` (its id or rid), kind, created replica index `created_r`, created tick,
/// created at.
pub(super) fn execute_item(
    statement: &mut rusqlite::Statement<'_>,
    key: &dyn rusqlite::ToSql,
    change: &ItemChange,
    created_r: i64,
    created_at: i64,
) -> rusqlite::Result<usize> {
    statement.execute(rusqlite::params![
        key,
        change.kind.code(),
        created_r,
        change.created.tick as i64,
        created_at
    ])
}

/// Runs `statement` ([`INSERT_UNIT`] or an upsert of the same values) for `u`'s version, whose
/// replica has index `r`, on the item at `item`.
pub(super) fn execute_unit_version(
    statement: &mut rusqlite::Statement<'_>,
    item: i64,
    r: i64,
    u: &UnitState,
) -> rusqlite::Result<usize> {
    let unit = u.value.unit();
    statement.execute(rusqlite::params![
        item,
        unit.code(),
        r,
        u.version.tick as i64,
        u.at,
        unit.phase().code()
    ])
}

/// When an incoming item was created (unix ms): the time of its units that carry its creation
/// version (one row change made them all), 0 if none does.
pub(super) fn created_at(change: &ItemChange) -> i64 {
    change
        .units
        .iter()
        .find(|u| u.version == change.created)
        .map_or(0, |u| u.at)
}

/// The folder a change puts its item in, if it carries its location.
fn folder_of(change: &ItemChange) -> Option<&str> {
    change.units.iter().find_map(|u| parent_of(&u.value))
}

pub(super) fn parent_of(value: &UnitValue) -> Option<&str> {
    match value {
        UnitValue::Parent { parent_id } => parent_id.as_deref(),
        UnitValue::Location { folder_id } => Some(folder_id),
        _ => None,
    }
}

/// Whether a change is a message's content arriving without its body.
pub(super) fn is_withheld(change: &ItemChange) -> bool {
    change.units.iter().any(
        |u| matches!(&u.value, UnitValue::Content { body: Some(body), .. } if body.is_withheld()),
    )
}

pub(super) fn kind_name(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Folder => "folder",
        ItemKind::Message => "message",
    }
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
