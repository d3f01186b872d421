//! One item's versions and values: read for export, read for the conflict check (seed 001's
//! GetLocalVersions), and converted to and from the wire form with its per-batch replica table.

use std::rc::Rc;

use rusqlite::vtab::array::Array;

use super::enumerate::approximate_item_size;
use super::error::SqlContext;
use super::{FastMap, FastSet, Store, StoreError};
use crate::knowledge::{ReplicaId, Version};
use crate::model::{Body, Change, ItemKind, StoredBody, Unit, UnitChange, UnitValue, WireVersion};

/// One change unit of an item: its update version, when it was made, and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitState {
    pub version: Version,
    pub at: i64,
    pub value: UnitValue,
}

/// An item as a change: every unit with its version (a tombstone has only its deletion unit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemChange {
    pub id: String,
    pub kind: ItemKind,
    pub created: Version,
    pub units: Vec<UnitState>,
}

impl ItemChange {
    pub fn is_tombstone(&self) -> bool {
        self.units.iter().any(|u| u.value.unit().is_tombstone())
    }

    pub fn unit(&self, unit: Unit) -> Option<&UnitState> {
        self.units.iter().find(|u| u.value.unit() == unit)
    }

    /// Every version the change carries: its units' update versions.
    pub fn versions(&self) -> impl Iterator<Item = &Version> {
        self.units.iter().map(|u| &u.version)
    }

    /// The wire form, with versions as indexes into `table`; the values move, uncopied.
    pub fn into_wire(self, table: &mut ReplicaTable) -> Change {
        Change {
            id: self.id,
            kind: self.kind,
            created: table.wire(&self.created),
            units: self
                .units
                .into_iter()
                .map(|u| UnitChange {
                    version: table.wire(&u.version),
                    at: u.at,
                    value: u.value,
                })
                .collect(),
        }
    }

    /// Reads a change off the wire, checking that it is well formed: versions name replicas of
    /// the batch's table, ticks are not 0, the units fit the kind and none is repeated.
    pub fn from_wire(change: Change, replicas: &[ReplicaId]) -> Result<ItemChange, String> {
        let Change {
            id,
            kind,
            created,
            units: wire_units,
        } = change;
        let version = |v: WireVersion| -> Result<Version, String> {
            let replica = replicas.get(v.0 as usize).ok_or_else(|| {
                format!(
                    "item {id}: version names replica #{} but the batch lists {}",
                    v.0,
                    replicas.len()
                )
            })?;
            if v.1 == 0 {
                return Err(format!("item {id}: tick 0 is not a version"));
            }
            Ok(Version {
                replica: replica.clone(),
                tick: v.1,
            })
        };
        if id.is_empty() {
            return Err("an item has an empty id".into());
        }
        let created = version(created)?;
        let mut units = Vec::with_capacity(wire_units.len());
        for u in wire_units {
            let unit = u.value.unit();
            let fits = Unit::live_units(kind).contains(&unit) || unit == Unit::tombstone(kind);
            if !fits {
                return Err(format!("item {id}: a {kind:?} has no {unit:?} unit"));
            }
            if units.iter().any(|s: &UnitState| s.value.unit() == unit) {
                return Err(format!("item {id}: unit {unit:?} appears twice"));
            }
            units.push(UnitState {
                version: version(u.version)?,
                at: u.at,
                value: u.value,
            });
        }
        let item = ItemChange {
            id,
            kind,
            created,
            units,
        };
        let live = Unit::live_units(item.kind);
        let complete = if item.is_tombstone() {
            item.units.len() == 1
        } else {
            item.units.len() == live.len() && live.iter().all(|u| item.unit(*u).is_some())
        };
        if !complete {
            return Err(format!(
                "item {}: a live item must carry exactly its units, a tombstone only its deletion",
                item.id
            ));
        }
        // Undecodable bodies are refused here, with the rest of the batch, before anything is
        // applied.
        for u in &item.units {
            if let UnitValue::Content {
                body: Some(body), ..
            } = &u.value
            {
                if let Err(e) = body.check() {
                    return Err(format!("item {}: {e}", item.id));
                }
            }
        }
        Ok(item)
    }
}

/// The replica table of one batch: global ids in the order versions refer to them.
#[derive(Debug, Default)]
pub struct ReplicaTable {
    ids: Vec<ReplicaId>,
    index: FastMap<ReplicaId, u32>,
}

impl ReplicaTable {
    pub fn wire(&mut self, v: &Version) -> WireVersion {
        let next = self.ids.len() as u32;
        let idx = *self.index.entry(v.replica.clone()).or_insert_with(|| {
            self.ids.push(v.replica.clone());
            next
        });
        WireVersion(idx, v.tick)
    }

    pub fn into_ids(self) -> Vec<ReplicaId> {
        self.ids
    }
}

/// The rid of the item with id ?1, live or tombstone, as a scalar subquery (migration 6): a live
/// message through `messages`' id index and its `sync_rid`, any other item (a folder, a
/// tombstone) through `sync_items_by_id`, which holds only those.
macro_rules! rid_by_id {
    () => {
        "(SELECT sync_rid FROM messages WHERE id = ?1 UNION ALL \
         SELECT rid FROM sync_items WHERE id = ?1 AND (kind = 0 OR deleted_at IS NOT NULL) \
         LIMIT 1)"
    };
}
pub(crate) use rid_by_id;

/// Whether the item `i` has a live unit without a row (migration 7: such a unit carries the
/// item's creation version), as an SQL condition; `$also` narrows the units (e.g. to a phase).
macro_rules! lacks_a_unit_row {
    ($also:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM sync_live_units k WHERE k.kind = i.kind",
            $also,
            " AND NOT EXISTS (SELECT 1 FROM sync_units u WHERE u.item = i.rid AND u.unit = k.unit))"
        )
    };
}
pub(crate) use lacks_a_unit_row;

/// Adds to a live item's `units` (unit, version, made at) the ones that have no row: they
/// carry the item's creation version and time (migration 7). Units stay in code order.
pub(super) fn with_creation_units(
    kind: ItemKind,
    units: &mut Vec<(Unit, Version, i64)>,
    created: &Version,
    created_at: i64,
) {
    let before = units.len();
    for &unit in Unit::live_units(kind) {
        if !units[..before].iter().any(|u| u.0 == unit) {
            units.push((unit, created.clone(), created_at));
        }
    }
    if units.len() > before {
        units.sort_by_key(|u| u.0.code());
    }
}

/// The destination's versions of one item (seed 001's GetLocalVersions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalItem {
    /// The item's row in `sync_items` (handed out in arrival order; its units are keyed by it).
    pub rid: i64,
    pub kind: ItemKind,
    pub created: Version,
    pub deleted: bool,
    /// (unit, update version, made at in unix ms)
    pub units: Vec<(Unit, Version, i64)>,
}

impl LocalItem {
    pub fn unit(&self, unit: Unit) -> Option<&(Unit, Version, i64)> {
        self.units.iter().find(|u| u.0 == unit)
    }
}

impl Store {
    /// The local versions of an item, live or tombstone; `None` if the store never saw it.
    /// One statement: the item's rid by its id ([`rid_by_id`]), its row and its units.
    pub fn local_item(&mut self, id: &str) -> Result<Option<LocalItem>, StoreError> {
        type Row = (
            i64,
            i64,
            (i64, i64, i64),
            Option<i64>,
            Option<(i64, i64, i64, i64)>,
        );
        let rows: Vec<Row> = self
            .conn
            .prepare_cached(concat!(
                "SELECT i.rid, i.kind, i.created_r, i.created_t, i.deleted_at, u.unit, u.r, ",
                "u.t, u.at, i.created_at FROM sync_items i LEFT JOIN sync_units u ON u.item = i.rid ",
                "WHERE i.rid = ",
                rid_by_id!()
            ))
            .and_then(|mut s| {
                s.query_map([id], |r| {
                    let unit = match r.get::<_, Option<i64>>(5)? {
                        Some(unit) => Some((unit, r.get(6)?, r.get(7)?, r.get(8)?)),
                        None => None,
                    };
                    let created = (r.get(2)?, r.get(3)?, r.get(9)?);
                    Ok((r.get(0)?, r.get(1)?, created, r.get(4)?, unit))
                })?
                .collect()
            })
            .ctx(&self.path, "cannot read an item's versions")?;
        let Some(&(rid, kind, (cr, ct, created_at), deleted_at, _)) = rows.first() else {
            return Ok(None);
        };
        let kind = ItemKind::from_code(kind).ok_or_else(|| StoreError::Corrupt {
            path: self.path.clone(),
            what: format!("item {id} has kind {kind}"),
        })?;
        let mut units = Vec::with_capacity(rows.len());
        for (unit, r, t, at) in rows.into_iter().filter_map(|row| row.4) {
            let unit = Unit::from_code(unit).ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("item {id} has unit code {unit}"),
            })?;
            units.push((unit, self.version_of(r, t)?, at));
        }
        let created = self.version_of(cr, ct)?;
        if deleted_at.is_none() {
            with_creation_units(kind, &mut units, &created, created_at);
        }
        Ok(Some(LocalItem {
            rid,
            kind,
            created,
            deleted: deleted_at.is_some(),
            units,
        }))
    }

    /// An item with its values, as a change to export; `None` if the store never saw it.
    pub fn read_item_change(&mut self, id: &str) -> Result<Option<ItemChange>, StoreError> {
        self.read_change(CHANGE_BY_ID, rusqlite::types::Value::Text(id.to_string()))
    }

    /// [`Store::read_item_change`] of the item at `rid` (its row in `sync_items`): what the
    /// enumeration finds in the version index, read without the random-key lookup by id.
    pub(super) fn read_item_change_at(
        &mut self,
        rid: i64,
    ) -> Result<Option<ItemChange>, StoreError> {
        self.read_change(CHANGE_BY_RID, rusqlite::types::Value::Integer(rid))
    }

    /// [`Store::read_item_change_at`] of each of `rids` in turn, in one execution of one
    /// statement, until the changes read reach `budget` bytes (by [`approximate_item_size`]; at
    /// least one is read): the rids read, each with its change (`None` for a rid with no item).
    /// An enumeration's batch of a thousand messages took the statement from the cache and gave
    /// it back a thousand times, 7 % of the synchronizer's instructions (`bench/PROFILE.md`,
    /// round twenty-one), and then ran it a thousand times, each run opening its cursors anew
    /// (round twenty-two); the budget keeps a batch of large messages from reading far past
    /// what the batch can take. A rid asked for twice is read once.
    pub(super) fn read_item_changes_at(
        &mut self,
        rids: &[i64],
        budget: usize,
    ) -> Result<Vec<(i64, Option<ItemChange>)>, StoreError> {
        let mut asked = FastSet::default();
        let asked: Array = Rc::new(
            rids.iter()
                .filter(|&&rid| asked.insert(rid))
                .map(|&rid| rusqlite::types::Value::Integer(rid))
                .collect(),
        );
        let mut raw: Vec<(i64, Option<RawChange>)> = Vec::new();
        self.conn
            .prepare_cached(CHANGES_BY_RIDS)
            .and_then(|mut stmt| {
                let mut rows = stmt.query([asked])?;
                let mut bytes = 0;
                // The rows come in the order of `asked` (its rows are the join's outer loop),
                // each item's rows together.
                while let Some(r) = rows.next()? {
                    let rid: i64 = r.get(ASKED_RID)?;
                    if raw.last().is_none_or(|(last, _)| *last != rid) {
                        if bytes >= budget && !raw.is_empty() {
                            break;
                        }
                        let head = match r.get::<_, Option<i64>>(FOUND_RID)? {
                            Some(_) => Some(ChangeHead::from_row(r)?),
                            None => None,
                        };
                        bytes += head.as_ref().map_or(0, ChangeHead::approximate_size);
                        raw.push((rid, head.map(|head| (head, Vec::with_capacity(3)))));
                    }
                    if let Some((_, Some((_, units)))) = raw.last_mut() {
                        if let Some(unit) = read_raw_unit(r)? {
                            units.push(unit);
                        }
                    }
                }
                Ok(())
            })
            .ctx(&self.path, "cannot read items")?;
        raw.into_iter()
            .map(|(rid, read)| Ok((rid, self.finish_change(read)?)))
            .collect()
    }

    /// One statement per item: its row in `sync_items`, its values (a live item's row in
    /// `messages` or `folders`, read once) and one result row per unit.
    fn read_change(
        &mut self,
        sql: &str,
        key: rusqlite::types::Value,
    ) -> Result<Option<ItemChange>, StoreError> {
        let read = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut stmt| read_raw_change(&mut stmt, key))
            .ctx(&self.path, "cannot read an item")?;
        self.finish_change(read)
    }

    /// The change of an item as [`read_raw_change`] read it, its replicas resolved and its rows
    /// checked.
    fn finish_change(&mut self, read: Option<RawChange>) -> Result<Option<ItemChange>, StoreError> {
        let Some((head, raw_units)) = read else {
            return Ok(None);
        };
        let id = head.id;
        let corrupt = |path: &std::path::Path, what: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            what,
        };
        let kind = ItemKind::from_code(head.kind)
            .ok_or_else(|| corrupt(&self.path, format!("item {id} has kind {}", head.kind)))?;
        let mut versions = Vec::with_capacity(raw_units.len());
        for (unit, r, t, at) in raw_units {
            let unit = Unit::from_code(unit)
                .ok_or_else(|| corrupt(&self.path, format!("item {id} has unit code {unit}")))?;
            versions.push((unit, self.version_of(r, t)?, at));
        }
        let created = self.version_of(head.created.0, head.created.1)?;
        if head.values.is_some() {
            with_creation_units(kind, &mut versions, &created, head.created_at);
        }
        let values = match head.values {
            None => versions
                .iter()
                .filter(|(unit, _, _)| unit.is_tombstone())
                .map(|(unit, _, _)| match unit {
                    Unit::FolderTombstone => UnitValue::FolderTombstone,
                    _ => UnitValue::MessageTombstone,
                })
                .collect(),
            Some(values) => values,
        };
        if head.live_without_row {
            return Err(corrupt(
                &self.path,
                format!("item {id} is live but has no row"),
            ));
        }
        let mut units = Vec::with_capacity(values.len());
        for value in values {
            let unit = value.unit();
            let (_, version, at) =
                versions
                    .iter()
                    .find(|u| u.0 == unit)
                    .cloned()
                    .ok_or_else(|| {
                        corrupt(&self.path, format!("item {id} has no version for {unit:?}"))
                    })?;
            units.push(UnitState { version, at, value });
        }
        Ok(Some(ItemChange {
            id,
            kind,
            created,
            units,
        }))
    }
}

/// What `read_change` reads of the item whose `key` is ?1: the item, one row per unit version,
/// and in each the values of a live message or folder (NULL for a tombstone, whose row is gone),
/// found once per item.
macro_rules! change_where {
    ($key:literal, $value:expr) => {
        concat!(
            change_columns!(),
            " FROM sync_items i ",
            change_joins!(),
            " WHERE ",
            $key,
            " = ",
            $value
        )
    };
}
/// The columns [`ChangeHead::from_row`] and [`read_raw_unit`] read, by position.
macro_rules! change_columns {
    () => {
        concat!(
            "SELECT i.id, i.kind, i.created_r, i.created_t, i.deleted_at, u.unit, u.r, u.t, u.at, ",
            "m.subject, m.sender, m.received_at, m.headers, m.body, m.is_read, m.folder_id, ",
            "f.name, f.parent_id, coalesce(m.id, f.id) IS NOT NULL, i.created_at"
        )
    };
}
/// A live item's row in `messages` or `folders` (found once per item), and its units' rows.
macro_rules! change_joins {
    () => {
        concat!(
            "LEFT JOIN messages m ON i.kind = 1 AND i.deleted_at IS NULL AND m.sync_rid = i.rid ",
            "LEFT JOIN folders f ON i.kind = 0 AND i.deleted_at IS NULL AND f.id = i.id ",
            "LEFT JOIN sync_units u ON u.item = i.rid"
        )
    };
}
pub(super) const CHANGE_BY_ID: &str = change_where!("i.rid", rid_by_id!());
pub(super) const CHANGE_BY_RID: &str = change_where!("i.rid", "?1");

/// [`CHANGE_BY_RID`] of every rid in the array ?1 (`rarray`), in the array's order: the array
/// is the outer loop of a left join, so a rid with no item gives one row whose `i.rid`
/// ([`FOUND_RID`]) is NULL. [`ASKED_RID`] is the rid asked for.
pub(super) const CHANGES_BY_RIDS: &str = concat!(
    change_columns!(),
    ", a.value, i.rid FROM rarray(?1) a LEFT JOIN sync_items i ON i.rid = a.value ",
    change_joins!()
);
const ASKED_RID: usize = 20;
const FOUND_RID: usize = 21;

/// An item's own columns and, for a live item, its values (read from the first result row).
struct ChangeHead {
    id: String,
    kind: i64,
    created: (i64, i64),
    created_at: i64,
    /// `None` for a tombstone.
    values: Option<Vec<UnitValue>>,
    live_without_row: bool,
}

/// A unit's version as read: unit code, replica index, tick, time.
type RawUnit = (i64, i64, i64, i64);

/// An item as read, before its replicas are resolved and its rows checked.
type RawChange = (ChangeHead, Vec<RawUnit>);

/// The rows of the item `key` names, read with `stmt` (a statement of [`change_where`]).
fn read_raw_change(
    stmt: &mut rusqlite::Statement<'_>,
    key: rusqlite::types::Value,
) -> rusqlite::Result<Option<RawChange>> {
    let mut rows = stmt.query([key])?;
    let mut head: Option<ChangeHead> = None;
    let mut raw_units: Vec<RawUnit> = Vec::with_capacity(3);
    while let Some(r) = rows.next()? {
        if head.is_none() {
            head = Some(ChangeHead::from_row(r)?);
        }
        if let Some(unit) = read_raw_unit(r)? {
            raw_units.push(unit);
        }
    }
    Ok(head.map(|head| (head, raw_units)))
}

/// The unit version on a row of [`change_columns`], if the item has a unit row.
fn read_raw_unit(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<RawUnit>> {
    Ok(match r.get::<_, Option<i64>>(5)? {
        Some(unit) => Some((unit, r.get(6)?, r.get(7)?, r.get(8)?)),
        None => None,
    })
}

impl ChangeHead {
    /// About the bytes the change takes in a batch ([`approximate_item_size`]).
    fn approximate_size(&self) -> usize {
        approximate_item_size(&self.id, self.values.iter().flatten())
    }

    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChangeHead> {
        let kind: i64 = r.get(1)?;
        let deleted: Option<i64> = r.get(4)?;
        let has_row: bool = r.get(18)?;
        let values = match (deleted, has_row) {
            (Some(_), _) | (None, false) => None,
            (None, true) if kind == ItemKind::Message.code() => {
                let body: Option<StoredBody> = r.get(13)?;
                Some(vec![
                    UnitValue::Content {
                        subject: r.get(9)?,
                        sender: r.get(10)?,
                        received_at: r.get(11)?,
                        headers: r.get(12)?,
                        body: body.map(Body::from_stored),
                    },
                    UnitValue::Read {
                        is_read: r.get::<_, i64>(14)? != 0,
                    },
                    UnitValue::Location {
                        folder_id: r.get(15)?,
                    },
                ])
            }
            (None, true) => Some(vec![
                UnitValue::Name { name: r.get(16)? },
                UnitValue::Parent {
                    parent_id: r.get(17)?,
                },
            ]),
        };
        Ok(ChangeHead {
            id: r.get(0)?,
            kind,
            created: (r.get(2)?, r.get(3)?),
            created_at: r.get(19)?,
            values,
            live_without_row: deleted.is_none() && !has_row,
        })
    }
}
