//! The items of an information store as they travel in a change batch: folders and messages,
//! their *change units* and the versions those units carry.
//!
//! Seed 004 (`004_eee2c1a9c3f4bba5.txt`) asks for change tracking at least per item and allows
//! finer tracking "because the potential for data conflicts is lowered"; icsync tracks per change
//! unit. A message has three units — content, read status (seed 002 syncs read status on its own)
//! and location (a move is one update, never delete + create) — and a folder has two: name and
//! location. A deleted item is a *tombstone* (seed 004: global id, deletion version, creation
//! version).

mod body;
mod unit_de;

pub use body::{Body, StoredBody};
use serde::{Deserialize, Serialize};

/// Whether an item is a folder or a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    Folder,
    Message,
}

impl ItemKind {
    /// The code the store keeps in `sync_items.kind`.
    pub fn code(self) -> i64 {
        match self {
            ItemKind::Folder => 0,
            ItemKind::Message => 1,
        }
    }

    pub fn from_code(code: i64) -> Option<ItemKind> {
        match code {
            0 => Some(ItemKind::Folder),
            1 => Some(ItemKind::Message),
            _ => None,
        }
    }
}

/// A change unit: the part of an item that carries its own update version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Folder name.
    Name,
    /// Folder location: `parent_id`.
    Parent,
    /// Message content: subject, sender, received_at, headers, body.
    Content,
    /// Message read status: `is_read`.
    Read,
    /// Message location: `folder_id`.
    Location,
    /// The deletion of a message (its tombstone's deletion version).
    MessageTombstone,
    /// The deletion of a folder.
    FolderTombstone,
}

impl Unit {
    pub const ALL: [Unit; 7] = [
        Unit::Name,
        Unit::Parent,
        Unit::Content,
        Unit::Read,
        Unit::Location,
        Unit::MessageTombstone,
        Unit::FolderTombstone,
    ];

    /// The code the store keeps in `sync_units.unit`.
    pub fn code(self) -> i64 {
        match self {
            Unit::Name => 1,
            Unit::Parent => 2,
            Unit::Content => 3,
            Unit::Read => 4,
            Unit::Location => 5,
            Unit::MessageTombstone => 8,
            Unit::FolderTombstone => 9,
        }
    }

    pub fn from_code(code: i64) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.code() == code)
    }

    /// The session phase that carries this unit (seed 002's order).
    pub fn phase(self) -> Phase {
        match self {
            Unit::Name | Unit::Parent => Phase::Hierarchy,
            Unit::Content | Unit::Location => Phase::Contents,
            Unit::Read => Phase::ReadStatus,
            Unit::MessageTombstone => Phase::MessageDeletes,
            Unit::FolderTombstone => Phase::FolderDeletes,
        }
    }

    pub fn is_tombstone(self) -> bool {
        matches!(self, Unit::MessageTombstone | Unit::FolderTombstone)
    }

    /// The live units of an item of this kind.
    pub fn live_units(kind: ItemKind) -> &'static [Unit] {
        match kind {
            ItemKind::Folder => &[Unit::Name, Unit::Parent],
            ItemKind::Message => &[Unit::Content, Unit::Read, Unit::Location],
        }
    }

    pub fn tombstone(kind: ItemKind) -> Unit {
        match kind {
            ItemKind::Folder => Unit::FolderTombstone,
            ItemKind::Message => Unit::MessageTombstone,
        }
    }
}

/// The phases of a session, in the order seed 002's replication state machine runs them:
/// hierarchy, then contents, then read status, then deletes (contents before their folders).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Hierarchy,
    Contents,
    ReadStatus,
    MessageDeletes,
    FolderDeletes,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Hierarchy,
        Phase::Contents,
        Phase::ReadStatus,
        Phase::MessageDeletes,
        Phase::FolderDeletes,
    ];

    /// The code the store keeps in `sync_units.phase` (its index orders enumeration).
    pub fn code(self) -> i64 {
        match self {
            Phase::Hierarchy => 1,
            Phase::Contents => 2,
            Phase::ReadStatus => 3,
            Phase::MessageDeletes => 4,
            Phase::FolderDeletes => 5,
        }
    }

    /// The kind whose live units this phase carries (folders' name and parent; messages'
    /// content and location, then their read state). The delete phases carry only tombstones.
    pub fn live_kind(self) -> Option<ItemKind> {
        [ItemKind::Folder, ItemKind::Message]
            .into_iter()
            .find(|&kind| Unit::live_units(kind).iter().any(|u| u.phase() == self))
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Hierarchy => "hierarchy",
            Phase::Contents => "contents",
            Phase::ReadStatus => "read-status",
            Phase::MessageDeletes => "message-deletes",
            Phase::FolderDeletes => "folder-deletes",
        }
    }
}

/// The value of one change unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "unit")]
pub enum UnitValue {
    Name {
        name: String,
    },
    Parent {
        parent_id: Option<String>,
    },
    Content {
        subject: String,
        sender: String,
        received_at: i64,
        /// Attached after the JSON inside a frame (`protocol/attached.rs`), like the body.
        #[serde(serialize_with = "crate::protocol::attached::text_value")]
        headers: String,
        body: Option<Body>,
    },
    Read {
        is_read: bool,
    },
    Location {
        folder_id: String,
    },
    MessageTombstone,
    FolderTombstone,
}

impl UnitValue {
    pub fn unit(&self) -> Unit {
        match self {
            UnitValue::Name { .. } => Unit::Name,
            UnitValue::Parent { .. } => Unit::Parent,
            UnitValue::Content { .. } => Unit::Content,
            UnitValue::Read { .. } => Unit::Read,
            UnitValue::Location { .. } => Unit::Location,
            UnitValue::MessageTombstone => Unit::MessageTombstone,
            UnitValue::FolderTombstone => Unit::FolderTombstone,
        }
    }
}

/// A version inside a change batch: an index into the batch's replica table and a tick.
/// Sending indexes instead of 36-character replica ids keeps batches small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireVersion(pub u32, pub u64);

/// One unit of an item in a change batch: its update version, when it was made (unix
/// milliseconds, for `newer-wins`), and its value. Read off the wire by `unit_de`, in one pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnitChange {
    pub version: WireVersion,
    pub at: i64,
    #[serde(flatten)]
    pub value: UnitValue,
}

/// One item in a change batch: every unit the source holds for it, each with its version. A live
/// item carries all its live units; a tombstone carries only its deletion unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub id: String,
    pub kind: ItemKind,
    pub created: WireVersion,
    pub units: Vec<UnitChange>,
}

/// An item that left a scoped session's scope (seed 001's filter): the destination stops holding
/// it. `versions` are the changes that took it out, in the batch's replica table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeftChange {
    pub id: String,
    pub versions: Vec<WireVersion>,
}

impl Change {
    pub fn is_tombstone(&self) -> bool {
        self.units.iter().any(|u| u.value.unit().is_tombstone())
    }

    pub fn unit(&self, unit: Unit) -> Option<&UnitChange> {
        self.units.iter().find(|u| u.value.unit() == unit)
    }

    /// The parent this item needs to exist first: a folder's parent, a message's folder.
    pub fn needs_parent(&self) -> Option<&str> {
        self.units.iter().find_map(|u| match &u.value {
            UnitValue::Parent { parent_id } => parent_id.as_deref(),
            UnitValue::Location { folder_id } => Some(folder_id.as_str()),
            _ => None,
        })
    }
}
