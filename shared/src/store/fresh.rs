//! New messages created with the import connection's triggers switched off: an import's hot
//! path.
//!
//! Every statement that may fire a trigger runs as a statement transaction: SQLite first copies
//! each page the statement touches into a statement journal, so that a trigger that fails can
//! undo the statement. For the INSERT of a new message that copying was a quarter of the
//! collector's instructions in an initial sync (callgrind, `bench/PROFILE.md`), and the
//! triggers it paid for do nothing there:
//! - `messages_track_insert` stands aside while `sync_state.applying = 1` (seed 004's inline
//!   tracking; the applier writes the item's remote versions itself);
//! - `messages_folder_exists` checks what the applier checks just before, in the same
//!   transaction: `create` makes a message whose folder is missing wait in the queue instead.
//!
//! So the new messages of a batch are applied first, with the connection's triggers off
//! (`SQLITE_DBCONFIG_ENABLE_TRIGGER`), and everything else after them with the triggers on.
//! Messages commute (see `apply::in_apply_order`), so only the order of their reports changes.
//! - This happens only while `messages` has no trigger but the store's own: an application's
//!   trigger, which may refuse an item (seed 003, a recoverable error), always runs.
//! - Only the creation of a message the store has never seen runs without triggers:
//!   `apply_one` switches them back on before any other write, should the guess of
//!   [`split_new_messages`] be wrong.
//! - Switching expires the connection's prepared statements (they are prepared again at their
//!   next use), so a batch switches at most twice in the common case.
//!
//! Such a message is also created without the full lookup of `local_item`
//! ([`Store::create_unseen`]): its folder's existence is checked once per batch, a tombstone with
//! its id by the small `sync_items_by_id` (folders and tombstones only; one statement for the
//! batch's range of ids, [`Store::held_among`]), and a live message with its id (two stores made
//! one id) by `messages`' own id index, which refuses the plain INSERT of the message row; the
//! item row inserted just before is then taken back and the change takes the ordinary path.
//! −6.5 % of the collector's instructions at 10k when it came (`bench/PROFILE.md`, step 11).
//!
//! A batch's unseen messages are created together, with their statements prepared once for the
//! batch: taking a statement from rusqlite's cache and giving it back (a copy of its SQL as the
//! cache key, two hashes of it, clearing the bindings) cost more than a tenth of each message's
//! statements when every message took its three (step 22).
//!
//! The setting belongs to the connection only: applications' connections, and the store's own
//! once the batch is applied, track every write as before.

use rusqlite::config::DbConfig;
use rusqlite::params;

use super::apply::{
    created_at, execute_item, execute_unit_version, INSERT_ITEM, INSERT_MESSAGE, INSERT_UNIT,
};
use super::error::SqlContext;
use super::items::{ItemChange, UnitState};
use super::schema::OWN_MESSAGE_TRIGGERS;
use super::{FastSet, Store, StoreError};
use crate::knowledge::{Knowledge, ReplicaId};
use crate::model::ItemKind;

/// Whether the store holds a folder or a tombstone with the id: what the split cannot see.
const PROBE_KNOWN_ID: &str = "SELECT EXISTS (SELECT 1 FROM sync_items \
     WHERE id = ?1 AND (kind = 0 OR deleted_at IS NOT NULL))";

/// The ids of the folders and tombstones between two ids, at most `?3` of them: the probe of a
/// whole batch in one statement ([`Store::held_among`]).
const HELD_BETWEEN: &str = "SELECT id FROM sync_items \
     WHERE id BETWEEN ?1 AND ?2 AND (kind = 0 OR deleted_at IS NOT NULL) LIMIT ?3";

impl Store {
    /// Switches the connection's triggers on or off. Switching to the current state changes
    /// nothing (and expires no statement).
    pub(super) fn set_triggers(&self, on: bool) -> Result<(), StoreError> {
        self.conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, on)
            .map(|_| ())
            .ctx(&self.path, "cannot switch the import connection's triggers")
    }

    /// Creates `changes`, messages the split found unseen whose folders exist, without looking
    /// each up first (the import's hottest path), with the connection's triggers off and the
    /// statements prepared once for all of them. A store that knows an id after all is found
    /// out before anything of that item stays written:
    /// - a tombstone (or a folder) with the id by `sync_items_by_id`, which holds only folders
    ///   and tombstones and so stays small: one statement for the batch ([`Store::held_among`]),
    ///   or one probe per message where the batch's range holds many;
    /// - a live message with the id (two stores made one id) by `messages`' own id index, which
    ///   refuses the plain INSERT of the message row; the item row inserted just before it is
    ///   then removed again.
    ///
    /// Returns those changes, in their order, for the ordinary way, which looks them up.
    pub(super) fn create_unseen<'c>(
        &mut self,
        changes: &[&'c ItemChange],
    ) -> Result<Vec<&'c ItemChange>, StoreError> {
        let mut known = Vec::new();
        if changes.is_empty() {
            return Ok(known);
        }
        let replicas = self.replica_indexes(changes)?;
        let index = |replica: &ReplicaId| {
            replicas
                .iter()
                .find(|(r, _)| *r == replica)
                .map(|(_, idx)| *idx)
        };
        let held_ids = self.held_among(changes)?;
        let (conn, path) = (&self.conn, &self.path);
        let prepare = |sql| {
            conn.prepare_cached(sql)
                .ctx(path, "cannot prepare an import statement")
        };
        let (mut probe, mut item) = (prepare(PROBE_KNOWN_ID)?, prepare(INSERT_ITEM)?);
        let (mut message, mut unit) = (prepare(INSERT_MESSAGE)?, prepare(INSERT_UNIT)?);
        for &change in changes {
            let held: bool = match &held_ids {
                Some(ids) => ids.contains(change.id.as_str()),
                None => probe
                    .query_row([&change.id], |r| r.get(0))
                    .ctx(path, "cannot look up an item")?,
            };
            let created_r = index(&change.created.replica);
            let all_indexed = change
                .units
                .iter()
                .all(|u| index(&u.version.replica).is_some());
            let (false, Some(created_r), true) = (held, created_r, all_indexed) else {
                known.push(change);
                continue;
            };
            let row = self.message_row(change)?;
            let created_at = created_at(change);
            execute_item(&mut item, &change.id, change, created_r, created_at)
                .ctx(path, "cannot record an item")?;
            let rid = conn.last_insert_rowid();
            match row.execute(&mut message, rid) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                        || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                {
                    conn.prepare_cached("DELETE FROM sync_items WHERE rid = ?1")
                        .and_then(|mut s| s.execute([rid]))
                        .ctx(path, "cannot take back an item row")?;
                    known.push(change);
                    continue;
                }
                other => other.ctx(path, "cannot create a message")?,
            };
            if row.withheld {
                self.mark_headers_only(&change.id, true)?;
            }
            // Only the units whose version or time differ from the item's creation have a row
            // (migration 7); a message as its store made it has none. Every replica has its
            // index (`all_indexed` above).
            let differ = |u: &&UnitState| u.version != change.created || u.at != created_at;
            for u in change.units.iter().filter(differ) {
                if let Some(r) = index(&u.version.replica) {
                    execute_unit_version(&mut unit, rid, r, u)
                        .ctx(path, "cannot record a version")?;
                }
            }
        }
        Ok(known)
    }

    /// The ids among `changes` that the store holds as a folder or a tombstone, found with one
    /// statement for all of them: the folders and tombstones between their smallest and largest
    /// id (a batch of the id window spans a slice of the id space, `id_window`). `None` when that
    /// range holds more of them than there are changes: each change is then probed on its own,
    /// so a store with many tombstones reads no more than before. One statement instead of one
    /// per message: −4 % of the collector's instructions in an initial sync (callgrind, 10k,
    /// `bench/PROFILE.md`, round nineteen).
    fn held_among(&self, changes: &[&ItemChange]) -> Result<Option<FastSet<String>>, StoreError> {
        let ids = changes.iter().map(|c| c.id.as_str());
        let (Some(low), Some(high)) = (ids.clone().min(), ids.max()) else {
            return Ok(Some(FastSet::default()));
        };
        let most = changes.len();
        // One more than the batch can hold tells a range of too many.
        let cap = i64::try_from(most).unwrap_or(i64::MAX).saturating_add(1);
        let mut statement = self
            .conn
            .prepare_cached(HELD_BETWEEN)
            .ctx(&self.path, "cannot prepare an import statement")?;
        let held = statement
            .query_map(params![low, high, cap], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<FastSet<String>, _>>())
            .ctx(&self.path, "cannot look up items")?;
        Ok((held.len() <= most).then_some(held))
    }

    /// The replica index of every version `changes` carry, each replica once (recorded in
    /// `sync_replicas` if new).
    fn replica_indexes<'c>(
        &mut self,
        changes: &[&'c ItemChange],
    ) -> Result<Vec<(&'c ReplicaId, i64)>, StoreError> {
        let mut indexes: Vec<(&ReplicaId, i64)> = Vec::new();
        for change in changes {
            let versions =
                std::iter::once(&change.created).chain(change.units.iter().map(|u| &u.version));
            for version in versions {
                if !indexes.iter().any(|(r, _)| *r == &version.replica) {
                    indexes.push((&version.replica, self.ensure_index(&version.replica)?));
                }
            }
        }
        Ok(indexes)
    }

    /// Whether `messages` has a trigger that is not the store's own (an application's).
    pub(super) fn has_foreign_message_triggers(&self) -> Result<bool, StoreError> {
        let names: Vec<String> = self
            .conn
            .prepare_cached(
                "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'messages'",
            )
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .ctx(&self.path, "cannot read the store's triggers")?;
        Ok(names
            .iter()
            .any(|name| !OWN_MESSAGE_TRIGGERS.contains(&name.as_str())))
    }
}

/// Splits a batch (in apply order) into the messages that look new to a store that knows
/// `known` (their creation version is unknown, they are no tombstone, and their id comes once)
/// and the rest, each in its order.
pub(super) fn split_new_messages<'a>(
    order: &[&'a ItemChange],
    known: &Knowledge,
) -> (Vec<&'a ItemChange>, Vec<&'a ItemChange>) {
    let (mut new, mut rest) = (Vec::new(), Vec::new());
    for (&change, alone) in order.iter().zip(ids_alone(order)) {
        let looks_new = alone
            && change.kind == ItemKind::Message
            && !change.is_tombstone()
            && !known.contains(&change.created);
        match looks_new {
            true => new.push(change),
            false => rest.push(change),
        }
    }
    (new, rest)
}

/// For each change of `order`, whether no other change has its id. A batch of messages comes
/// sorted by id (`apply::in_apply_order`), where an id that comes twice comes in a row: then the
/// runs of equal ids tell, without hashing every id (~2 % of an import's instructions did that).
/// Any other order is counted.
fn ids_alone(order: &[&ItemChange]) -> Vec<bool> {
    if order.windows(2).all(|w| w[0].id <= w[1].id) {
        return order
            .chunk_by(|a, b| a.id == b.id)
            .flat_map(|run| std::iter::repeat_n(run.len() == 1, run.len()))
            .collect();
    }
    let mut count = std::collections::HashMap::<&str, usize>::new();
    for change in order {
        *count.entry(change.id.as_str()).or_default() += 1;
    }
    order
        .iter()
        .map(|c| count.get(c.id.as_str()) == Some(&1))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rusqlite::config::DbConfig;

    use super::*;
    use crate::knowledge::{ReplicaId, Version};
    use crate::store::items::UnitState;
    use crate::store::tests::{new_store, public_rows, sync};
    use crate::store::ConflictRule;

    #[test]
    fn the_list_of_own_triggers_is_every_trigger_a_new_store_has_on_messages() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, app) = new_store(&dir, "s.db");
        let mut names: Vec<String> = app
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'messages'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        names.sort();
        let mut own: Vec<&str> = OWN_MESSAGE_TRIGGERS.to_vec();
        own.sort();
        assert_eq!(names, own);
    }

    /// Replaces two of the store's own triggers on `messages` by ones that log to `fired` when they
    /// fire: `messages_folder_exists` (every INSERT) and `messages_headers_only_content` (every
    /// UPDATE).
    fn log_two_own_triggers(app: &rusqlite::Connection) {
        app.execute_batch(
            "CREATE TABLE fired (what TEXT);
             DROP TRIGGER messages_folder_exists;
             CREATE TRIGGER messages_folder_exists BEFORE INSERT ON messages
             BEGIN INSERT INTO fired VALUES ('insert ' || NEW.id); END;
             DROP TRIGGER messages_headers_only_content;
             CREATE TRIGGER messages_headers_only_content BEFORE UPDATE ON messages
             BEGIN INSERT INTO fired VALUES ('update ' || NEW.id); END;",
        )
        .unwrap();
    }

    fn subject_of(app: &rusqlite::Connection, id: &str) -> String {
        app.query_row("SELECT subject FROM messages WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
    }

    /// Each id is one item in `app`'s store, its message with the subject given.
    fn each_once_with_its_subject(app: &rusqlite::Connection, expected: &[(&str, &str)]) {
        for &(id, subject) in expected {
            assert_eq!(subject_of(app, id), subject);
            let items: i64 = app
                .query_row("SELECT count(*) FROM sync_items WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(items, 1, "{id} is one item");
        }
    }

    fn fired(app: &rusqlite::Connection) -> Vec<String> {
        app.prepare("SELECT what FROM fired ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Two of the store's own triggers, replaced by ones that log when they fire (an
    /// application's trigger would turn the fast path off, see the refusing-trigger test in
    /// `store::tests`): the batch's new messages fire none, every other write fires them.
    #[test]
    fn new_messages_are_created_with_triggers_off_and_every_other_write_fires_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, app_a) = new_store(&dir, "a.db");
        let (mut b, app_b) = new_store(&dir, "b.db");
        app_a
            .execute_batch(
                "INSERT INTO folders (id, name) VALUES ('f', 'Inbox');
                 INSERT INTO messages (id, folder_id, subject) VALUES
                   ('m1', 'f', 'one'), ('m2', 'f', 'two'), ('m3', 'f', 'three');",
            )
            .unwrap();
        log_two_own_triggers(&app_b);
        let fired = || fired(&app_b);
        sync(&mut a, &mut b, 10, ConflictRule::Defer);
        assert_eq!(public_rows(&app_a), public_rows(&app_b));
        // The read-status batch updates the rows it finds (no value changes, is_read stays 0).
        let after_first = fired();
        assert!(
            after_first.iter().all(|f| f.starts_with("update ")),
            "new messages fired no trigger: {after_first:?}"
        );

        app_a
            .execute_batch(
                "UPDATE messages SET subject = 'two, edited' WHERE id = 'm2';
                 INSERT INTO messages (id, folder_id, subject) VALUES ('m4', 'f', 'four');",
            )
            .unwrap();
        sync(&mut a, &mut b, 10, ConflictRule::Defer);
        assert_eq!(public_rows(&app_a), public_rows(&app_b));
        assert_eq!(b.knowledge().unwrap(), a.knowledge().unwrap());
        let second: Vec<String> = fired().split_off(after_first.len());
        assert!(second.contains(&"update m2".to_string()), "{second:?}");
        assert!(!second.contains(&"insert m4".to_string()), "{second:?}");

        // After the batch the store's connection fires triggers, and tracks its writes, again.
        assert!(b
            .conn
            .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)
            .unwrap());
        let tick = |b: &Store| -> i64 {
            b.conn
                .query_row("SELECT tick FROM sync_state", [], |r| r.get(0))
                .unwrap()
        };
        let before = tick(&b);
        let fired_before = fired().len();
        b.conn
            .execute(
                "INSERT INTO messages (id, folder_id, subject) VALUES ('m5', 'f', 'five')",
                [],
            )
            .unwrap();
        assert_eq!(tick(&b), before + 1, "a local write took a tick");
        // (Its tracking then links the row to its item, an UPDATE: "update m5" follows.)
        assert_eq!(
            fired().get(fired_before).map(String::as_str),
            Some("insert m5")
        );
    }

    /// A message whose creation the store does not know but whose id it holds (two stores made
    /// the same id) is no new message: it is applied with the triggers on.
    #[test]
    fn a_wrong_guess_is_applied_with_the_triggers_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, app_a) = new_store(&dir, "a.db");
        let (mut b, app_b) = new_store(&dir, "b.db");
        app_a
            .execute_batch(
                "INSERT INTO folders (id, name) VALUES ('f', 'Inbox');
                 INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'from a');",
            )
            .unwrap();
        sync(&mut a, &mut b, 10, ConflictRule::IncomingWins);
        app_b
            .execute_batch(
                "INSERT INTO messages (id, folder_id, subject) VALUES ('m2', 'f', 'from b');",
            )
            .unwrap();
        log_two_own_triggers(&app_b);
        // a makes m2 too, unaware of b's.
        app_a
            .execute_batch(
                "INSERT INTO messages (id, folder_id, subject) VALUES ('m2', 'f', 'a too');",
            )
            .unwrap();
        sync(&mut a, &mut b, 10, ConflictRule::IncomingWins);
        let subject = subject_of(&app_b, "m2");
        assert_eq!(subject, "a too");
        let fired = fired(&app_b);
        assert!(fired.contains(&"update m2".to_string()), "{fired:?}");
    }

    /// The same wrong guess under a rule that keeps the local message: nothing of the incoming
    /// one is written before the store finds it knows the id.
    #[test]
    fn a_wrong_guess_writes_nothing_the_conflict_rule_does_not_keep() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, app_a) = new_store(&dir, "a.db");
        let (mut b, app_b) = new_store(&dir, "b.db");
        for (app, subject) in [(&app_a, "from a"), (&app_b, "from b")] {
            app.execute("INSERT INTO folders (id, name) VALUES ('f', 'Inbox')", [])
                .unwrap();
            app.execute(
                "INSERT INTO messages (id, folder_id, subject) VALUES ('m2', 'f', ?1)",
                [subject],
            )
            .unwrap();
        }
        sync(&mut a, &mut b, 10, ConflictRule::LocalWins);
        let subject = subject_of(&app_b, "m2");
        assert_eq!(subject, "from b");
        // The item row inserted before the message row was refused is taken back.
        let (rows, linked): (i64, bool) = app_b
            .query_row(
                "SELECT count(*), max(rid) = (SELECT sync_rid FROM messages WHERE id = 'm2') \
                 FROM sync_items WHERE id = 'm2'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((rows, linked), (1, true));
    }

    /// Two new stores, `a.db` and `b.db`, each with its own folder `f`.
    fn two_stores_with_inbox(
        dir: &tempfile::TempDir,
    ) -> ((Store, rusqlite::Connection), (Store, rusqlite::Connection)) {
        let stores = (new_store(dir, "a.db"), new_store(dir, "b.db"));
        for app in [&stores.0 .1, &stores.1 .1] {
            app.execute_batch("INSERT INTO folders (id, name) VALUES ('f', 'Inbox');")
                .unwrap();
        }
        stores
    }

    /// A message the store holds as a tombstone, made again elsewhere with the same id: it looks
    /// new, but the store knows its id, so it is brought back over its tombstone the ordinary
    /// way, in the tombstone's row, and not created as a second item.
    #[test]
    fn a_message_over_its_tombstone_is_no_new_message() {
        let dir = tempfile::tempdir().unwrap();
        let ((mut a, app_a), (mut b, app_b)) = two_stores_with_inbox(&dir);
        app_b
            .execute_batch(
                "INSERT INTO messages (id, folder_id, subject) VALUES ('m9', 'f', 'from b');
                 DELETE FROM messages WHERE id = 'm9';",
            )
            .unwrap();
        let rid_before: i64 = app_b
            .query_row("SELECT rid FROM sync_items WHERE id = 'm9'", [], |r| {
                r.get(0)
            })
            .unwrap();
        app_a
            .execute_batch(
                "INSERT INTO messages (id, folder_id, subject) VALUES ('m9', 'f', 'from a');",
            )
            .unwrap();
        let outcomes = sync(&mut a, &mut b, 10, ConflictRule::IncomingWins);
        assert!(outcomes.iter().all(|o| o.errors.is_empty()), "{outcomes:?}");
        let subject = subject_of(&app_b, "m9");
        assert_eq!(subject, "from a");
        let (rows, rid, deleted): (i64, i64, Option<i64>) = app_b
            .query_row(
                "SELECT count(*), max(rid), max(deleted_at) FROM sync_items WHERE id = 'm9'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((rows, rid, deleted), (1, rid_before, None));
        assert_eq!(
            b.local_item("m9").unwrap().unwrap().created,
            a.local_item("m9").unwrap().unwrap().created
        );
    }

    /// One batch of new-looking messages, two of which the store knows (one live, one a
    /// tombstone) between ones it does not: those two take the ordinary way, the rest are
    /// created together, each message is counted once, and each id ends as one item.
    #[test]
    fn a_batch_of_new_messages_sends_only_those_the_store_knows_the_ordinary_way() {
        let dir = tempfile::tempdir().unwrap();
        let ((mut a, app_a), (mut b, app_b)) = two_stores_with_inbox(&dir);
        app_b
            .execute_batch(
                "INSERT INTO messages (id, folder_id, subject) VALUES ('m2', 'f', 'b, live'),
                   ('m4', 'f', 'b, deleted');
                 DELETE FROM messages WHERE id = 'm4';",
            )
            .unwrap();
        app_a
            .execute_batch(
                "INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'a1'),
                   ('m2', 'f', 'a2'), ('m3', 'f', 'a3'), ('m4', 'f', 'a4'), ('m5', 'f', 'a5');
                 UPDATE messages SET is_read = 1 WHERE id = 'm3';",
            )
            .unwrap();
        let outcomes = sync(&mut a, &mut b, 100, ConflictRule::IncomingWins);
        assert!(outcomes.iter().all(|o| o.errors.is_empty()), "{outcomes:?}");
        // The five messages come in one batch, after the hierarchy's.
        let contents = outcomes.iter().find(|o| o.applied >= 5).unwrap();
        assert_eq!(contents.applied + contents.skipped, 5, "{contents:?}");
        each_once_with_its_subject(
            &app_b,
            &[
                ("m1", "a1"),
                ("m2", "a2"),
                ("m3", "a3"),
                ("m4", "a4"),
                ("m5", "a5"),
            ],
        );
        // m3's read status changed after its creation: its version has a row, as at a.
        let read_rows = |app: &rusqlite::Connection| -> i64 {
            app.query_row(
                "SELECT count(*) FROM sync_units u JOIN sync_items i ON i.rid = u.item \
                 WHERE i.id = 'm3' AND u.unit = ?1",
                [crate::model::Unit::Read.code()],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!((read_rows(&app_a), read_rows(&app_b)), (1, 1));
        assert_eq!(public_rows(&app_a), public_rows(&app_b));
        let (at_a, at_b) = (
            a.local_item("m3").unwrap().unwrap(),
            b.local_item("m3").unwrap().unwrap(),
        );
        assert_eq!((at_b.created, at_b.units), (at_a.created, at_a.units));
    }

    #[test]
    fn only_messages_new_to_the_store_and_alone_in_the_batch_count_as_new() {
        let a = ReplicaId::from("A");
        let change = |id: &str, kind, tick, unit: Option<crate::model::UnitValue>| ItemChange {
            id: id.into(),
            kind,
            created: Version::new(a.clone(), tick),
            units: unit
                .map(|value| UnitState {
                    value,
                    version: Version::new(a.clone(), tick),
                    at: 0,
                })
                .into_iter()
                .collect(),
        };
        let read = || Some(crate::model::UnitValue::Read { is_read: true });
        let changes = [
            change("new1", ItemKind::Message, 5, read()),
            change("known", ItemKind::Message, 2, read()),
            change("folder", ItemKind::Folder, 6, None),
            change(
                "gone",
                ItemKind::Message,
                7,
                Some(crate::model::UnitValue::MessageTombstone),
            ),
            change("twice", ItemKind::Message, 8, read()),
            change("new2", ItemKind::Message, 9, read()),
            change("twice", ItemKind::Message, 8, read()),
        ];
        let mut known = Knowledge::default();
        for t in 1..=3 {
            known.insert(&Version::new(a.clone(), t));
        }
        let (new, rest) = split_new_messages(&changes.iter().collect::<Vec<_>>(), &known);
        let ids = |v: Vec<&ItemChange>| v.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(new), ["new1", "new2"]);
        assert_eq!(ids(rest), ["known", "folder", "gone", "twice", "twice"]);

        // Sorted by id, as a batch of messages is applied: the same split, in that order.
        let mut sorted: Vec<&ItemChange> = changes.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let (new, rest) = split_new_messages(&sorted, &known);
        assert_eq!(ids(new), ["new1", "new2"]);
        assert_eq!(ids(rest), ["folder", "gone", "known", "twice", "twice"]);
        // An id twice at the start of a sorted batch; a batch of one.
        let first = change("a", ItemKind::Message, 10, read());
        let (new, rest) = split_new_messages(&[&first, &first, &changes[0]], &known);
        assert_eq!(
            (ids(new), ids(rest)),
            (vec!["new1".into()], vec!["a".into(); 2])
        );
        let (new, _) = split_new_messages(&[&changes[0]], &known);
        assert_eq!(ids(new), ["new1"]);
    }

    /// The batch's probe finds the folders and tombstones between the batch's smallest and
    /// largest id, and none outside; a range holding more of them than the batch has changes
    /// gives `None`, so that each change is probed on its own.
    #[test]
    fn the_batch_probe_finds_folders_and_tombstones_in_the_batch_s_range() {
        let dir = tempfile::tempdir().unwrap();
        let (store, app) = new_store(&dir, "s.db");
        app.execute_batch(
            "INSERT INTO folders (id, name) VALUES ('f', 'Inbox'), ('m3', 'named like mail');
             INSERT INTO messages (id, folder_id) VALUES ('m2', 'f'), ('m4', 'f'), ('m5', 'f'),
               ('m6', 'f'), ('m9', 'f'), ('live', 'f');
             DELETE FROM messages WHERE id IN ('m2', 'm4', 'm5', 'm6', 'm9');",
        )
        .unwrap();
        let a = ReplicaId::from("A");
        let change = |id: &str| ItemChange {
            id: id.into(),
            kind: ItemKind::Message,
            created: Version::new(a.clone(), 1),
            units: Vec::new(),
        };
        let held = |ids: &[&str]| {
            let changes: Vec<ItemChange> = ids.iter().map(|id| change(id)).collect();
            let refs: Vec<&ItemChange> = changes.iter().collect();
            store.held_among(&refs).unwrap().map(|set| {
                let mut v: Vec<String> = set.into_iter().collect();
                v.sort();
                v
            })
        };
        // m0..m4 holds the folder m3 and the tombstones m2 and m4; the live message and the
        // tombstones past m4 are not the probe's.
        assert_eq!(
            held(&["m4", "m1", "m35", "m0"]),
            Some(vec!["m2".into(), "m3".into(), "m4".into()])
        );
        assert_eq!(held(&["n1", "n2"]), Some(vec![]));
        assert_eq!(held(&[]), Some(vec![]));
        // Three in the range m2..m4 for two changes, six in m2..m9 for four: probed one by one;
        // six for six changes still in one statement.
        assert_eq!(held(&["m2", "m4"]), None);
        assert_eq!(held(&["m2", "m4", "m45", "m9"]), None);
        assert_eq!(
            held(&["m2", "m4", "m45", "m46", "m47", "m9"]).map(|v| v.len()),
            Some(6)
        );
    }

    /// A batch whose id range holds more tombstones than it has messages is probed message by
    /// message, with the same outcome: the message over its tombstone takes the ordinary way
    /// and stays one item, the others are created.
    #[test]
    fn a_batch_over_many_tombstones_is_probed_one_by_one_with_the_same_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let ((mut a, app_a), (mut b, app_b)) = two_stores_with_inbox(&dir);
        app_b
            .execute_batch(
                "INSERT INTO messages (id, folder_id) VALUES ('m2', 'f'), ('m3', 'f'), ('m4', 'f');
                 DELETE FROM messages;",
            )
            .unwrap();
        app_a
            .execute_batch(
                "INSERT INTO messages (id, folder_id, subject) VALUES ('m1', 'f', 'a1'),
                   ('m4', 'f', 'a4');",
            )
            .unwrap();
        let outcomes = sync(&mut a, &mut b, 100, ConflictRule::IncomingWins);
        assert!(outcomes.iter().all(|o| o.errors.is_empty()), "{outcomes:?}");
        each_once_with_its_subject(&app_b, &[("m1", "a1"), ("m4", "a4")]);
        assert_eq!(public_rows(&app_a), public_rows(&app_b));
    }
}
