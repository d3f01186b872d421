//! One item's versions and values: read for export, read for the conflict check (seed 001's
//! GetLocalVersions), and converted to and from the wire form with its per-batch replica table.

use std::collections::HashMap;

use super::error::SqlContext;
use super::{Store, StoreError};
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

    /// The wire form, with versions as indexes into `table`.
    pub fn to_wire(&self, table: &mut ReplicaTable) -> Change {
        Change {
            id: self.id.clone(),
            kind: self.kind,
            created: table.wire(&self.created),
            units: self
                .units
                .iter()
                .map(|u| UnitChange {
                    version: table.wire(&u.version),
                    at: u.at,
                    value: u.value.clone(),
                })
                .collect(),
        }
    }

    /// Reads a change off the wire, checking that it is well formed: versions name replicas of
    /// the batch's table, ticks are not 0, the units fit the kind and none is repeated.
    pub fn from_wire(change: Change, replicas: &[ReplicaId]) -> Result<ItemChange, String> {
        let version = |v: WireVersion| -> Result<Version, String> {
            let replica = replicas.get(v.0 as usize).ok_or_else(|| {
                format!(
                    "item {}: version names replica #{} but the batch lists {}",
                    change.id,
                    v.0,
                    replicas.len()
                )
            })?;
            if v.1 == 0 {
                return Err(format!("item {}: tick 0 is not a version", change.id));
            }
            Ok(Version {
                replica: replica.clone(),
                tick: v.1,
            })
        };
        if change.id.is_empty() {
            return Err("an item has an empty id".into());
        }
        let created = version(change.created)?;
        let mut units = Vec::with_capacity(change.units.len());
        for u in &change.units {
            let unit = u.value.unit();
            let fits = Unit::live_units(change.kind).contains(&unit)
                || unit == Unit::tombstone(change.kind);
            if !fits {
                return Err(format!(
                    "item {}: a {:?} has no {:?} unit",
                    change.id, change.kind, unit
                ));
            }
            if units.iter().any(|s: &UnitState| s.value.unit() == unit) {
                return Err(format!("item {}: unit {unit:?} appears twice", change.id));
            }
            units.push(UnitState {
                version: version(u.version)?,
                at: u.at,
                value: u.value.clone(),
            });
        }
        let item = ItemChange {
            id: change.id,
            kind: change.kind,
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
                if body.is_withheld() {
                    continue;
                }
                if let Err(e) = body.clone().into_stored() {
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
    index: HashMap<ReplicaId, u32>,
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
    /// One statement: the item's row by its id, and its units by the item's rid.
    pub fn local_item(&mut self, id: &str) -> Result<Option<LocalItem>, StoreError> {
        type Row = (
            i64,
            i64,
            i64,
            i64,
            Option<i64>,
            Option<(i64, i64, i64, i64)>,
        );
        let rows: Vec<Row> = self
            .conn
            .prepare_cached(
                "SELECT i.rid, i.kind, i.created_r, i.created_t, i.deleted_at, u.unit, u.r, u.t, u.at \
                 FROM sync_items i LEFT JOIN sync_units u ON u.item = i.rid WHERE i.id = ?1",
            )
            .and_then(|mut s| {
                s.query_map([id], |r| {
                    let unit = match r.get::<_, Option<i64>>(5)? {
                        Some(unit) => Some((unit, r.get(6)?, r.get(7)?, r.get(8)?)),
                        None => None,
                    };
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, unit))
                })?
                .collect()
            })
            .ctx(&self.path, "cannot read an item's versions")?;
        let Some(&(rid, kind, cr, ct, deleted_at, _)) = rows.first() else {
            return Ok(None);
        };
        let kind = ItemKind::from_code(kind).ok_or_else(|| StoreError::Corrupt {
            path: self.path.clone(),
            what: format!("item {id} has kind {kind}"),
        })?;
        let mut units = Vec::with_capacity(rows.len());
        for (unit, r, t, at) in rows.into_iter().filter_map(|row| row.5) {
            let unit = Unit::from_code(unit).ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("item {id} has unit code {unit}"),
            })?;
            units.push((unit, self.version_of(r, t)?, at));
        }
        Ok(Some(LocalItem {
            rid,
            kind,
            created: self.version_of(cr, ct)?,
            deleted: deleted_at.is_some(),
            units,
        }))
    }

    /// An item with its values, as a change to export; `None` if the store never saw it.
    pub fn read_item_change(&mut self, id: &str) -> Result<Option<ItemChange>, StoreError> {
        let Some(local) = self.local_item(id)? else {
            return Ok(None);
        };
        let mut units = Vec::with_capacity(local.units.len());
        if local.deleted {
            for (unit, version, at) in local.units {
                if unit.is_tombstone() {
                    let value = match unit {
                        Unit::FolderTombstone => UnitValue::FolderTombstone,
                        _ => UnitValue::MessageTombstone,
                    };
                    units.push(UnitState { version, at, value });
                }
            }
        } else {
            let values: Vec<UnitValue> = match local.kind {
                ItemKind::Folder => self
                    .conn
                    .prepare_cached("SELECT name, parent_id FROM folders WHERE id = ?1")
                    .and_then(|mut s| {
                        s.query_row([id], |r| {
                            Ok(vec![
                                UnitValue::Name { name: r.get(0)? },
                                UnitValue::Parent {
                                    parent_id: r.get(1)?,
                                },
                            ])
                        })
                    })
                    .ctx(&self.path, "cannot read a folder")?,
                ItemKind::Message => self
                    .conn
                    .prepare_cached(
                        "SELECT subject, sender, received_at, headers, body, is_read, folder_id \
                         FROM messages WHERE id = ?1",
                    )
                    .and_then(|mut s| {
                        s.query_row([id], |r| {
                            let body: Option<StoredBody> = r.get(4)?;
                            Ok(vec![
                                UnitValue::Content {
                                    subject: r.get(0)?,
                                    sender: r.get(1)?,
                                    received_at: r.get(2)?,
                                    headers: r.get(3)?,
                                    body: body.map(Body::from_stored),
                                },
                                UnitValue::Read {
                                    is_read: r.get::<_, i64>(5)? != 0,
                                },
                                UnitValue::Location {
                                    folder_id: r.get(6)?,
                                },
                            ])
                        })
                    })
                    .ctx(&self.path, "cannot read a message")?,
            };
            for value in values {
                let unit = value.unit();
                let (_, version, at) =
                    local
                        .unit(unit)
                        .cloned()
                        .ok_or_else(|| StoreError::Corrupt {
                            path: self.path.clone(),
                            what: format!("item {id} has no version for {unit:?}"),
                        })?;
                units.push(UnitState { version, at, value });
            }
        }
        Ok(Some(ItemChange {
            id: id.to_string(),
            kind: local.kind,
            created: local.created,
            units,
        }))
    }
}
