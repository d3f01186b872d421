//! Random operations for the convergence test: what an application does to one store by plain
//! SQL, chosen from the model's view of that store, with a seeded generator so a run replays
//! from its seed alone.
//!
//! Some races the model does not follow (the applier settles them by changes of its own) or the
//! product does not settle yet; [`Races`] lets the generator make them or keep them out. Keeping
//! one out is a rule over the model's knowledge: an operation is not made when it would race
//! with a change its store has not seen (or, for repeated deletes, at all).

use std::fmt;

use rusqlite::{params, Connection};

use super::{Item, Kind, Model, State, StoreIdx, Unit, Value};

/// A small deterministic generator (splitmix64): the same seed, the same run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_5EED)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below((hi - lo + 1) as usize) as u32
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Clone>(&mut self, from: &[T]) -> Option<T> {
        (!from.is_empty()).then(|| from[self.below(from.len())].clone())
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Which known-gap races the generator may make.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Races {
    /// A folder deleted on one store while another puts an item in it (a new item, a move, or an
    /// edit that brings a deleted item back into it).
    pub allow_parent_delete_races: bool,
    /// Concurrent folder moves that would make a cycle once both are applied.
    pub allow_cycle_races: bool,
    /// Concurrent edits of one change unit to the identical value.
    pub allow_identical_value_races: bool,
    /// An update winning over a delete whose store had unit versions the updating store never
    /// saw: the item comes back with the updater's older units.
    pub allow_stale_comebacks: bool,
    /// A second delete of an item while some store still holds the tombstone of a first.
    pub allow_repeated_deletes: bool,
}

/// One application operation on one store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    CreateFolder {
        id: String,
        parent: Option<String>,
        name: String,
    },
    CreateMessage {
        id: String,
        folder: String,
        subject: String,
        body: String,
    },
    RenameFolder {
        id: String,
        name: String,
    },
    MoveFolder {
        id: String,
        parent: Option<String>,
    },
    DeleteFolder {
        id: String,
    },
    EditMessage {
        id: String,
        subject: String,
        body: String,
    },
    MarkRead {
        id: String,
        read: bool,
    },
    MoveMessage {
        id: String,
        folder: String,
    },
    DeleteMessage {
        id: String,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let top = |p: &Option<String>| p.clone().unwrap_or_else(|| "top".into());
        match self {
            Op::CreateFolder { id, parent, name } => {
                write!(f, "create folder {id} {name:?} in {}", top(parent))
            }
            Op::CreateMessage {
                id,
                folder,
                subject,
                ..
            } => write!(f, "create message {id} {subject:?} in {folder}"),
            Op::RenameFolder { id, name } => write!(f, "rename folder {id} to {name:?}"),
            Op::MoveFolder { id, parent } => write!(f, "move folder {id} to {}", top(parent)),
            Op::DeleteFolder { id } => write!(f, "delete folder {id}"),
            Op::EditMessage { id, subject, body } => {
                write!(f, "edit message {id}: {subject:?}, {body:?}")
            }
            Op::MarkRead { id, read } => write!(f, "mark message {id} read={read}"),
            Op::MoveMessage { id, folder } => write!(f, "move message {id} to {folder}"),
            Op::DeleteMessage { id } => write!(f, "delete message {id}"),
        }
    }
}

impl Op {
    /// Runs the operation as an application would: one statement on one row.
    pub fn execute(&self, app: &Connection) -> rusqlite::Result<usize> {
        match self {
            Op::CreateFolder { id, parent, name } => app.execute(
                "INSERT INTO folders (id, parent_id, name) VALUES (?1, ?2, ?3)",
                params![id, parent, name],
            ),
            Op::CreateMessage {
                id,
                folder,
                subject,
                body,
            } => app.execute(
                "INSERT INTO messages (id, folder_id, subject, body) VALUES (?1, ?2, ?3, ?4)",
                params![id, folder, subject, body],
            ),
            Op::RenameFolder { id, name } => app.execute(
                "UPDATE folders SET name = ?2 WHERE id = ?1",
                params![id, name],
            ),
            Op::MoveFolder { id, parent } => app.execute(
                "UPDATE folders SET parent_id = ?2 WHERE id = ?1",
                params![id, parent],
            ),
            Op::DeleteFolder { id } => app.execute("DELETE FROM folders WHERE id = ?1", [id]),
            Op::EditMessage { id, subject, body } => app.execute(
                "UPDATE messages SET subject = ?2, body = ?3 WHERE id = ?1",
                params![id, subject, body],
            ),
            Op::MarkRead { id, read } => app.execute(
                "UPDATE messages SET is_read = ?2 WHERE id = ?1",
                params![id, i64::from(*read)],
            ),
            Op::MoveMessage { id, folder } => app.execute(
                "UPDATE messages SET folder_id = ?2 WHERE id = ?1",
                params![id, folder],
            ),
            Op::DeleteMessage { id } => app.execute("DELETE FROM messages WHERE id = ?1", [id]),
        }
    }

    /// Records the operation in the model, made at `at` (unix ms, as the store recorded it).
    pub fn record(&self, model: &mut Model, s: StoreIdx, at: i64) {
        match self.clone() {
            Op::CreateFolder { id, parent, name } => model.create(
                s,
                &id,
                Kind::Folder,
                vec![
                    (Unit::Name, Value::Name(name)),
                    (Unit::Parent, Value::Parent(parent)),
                ],
                at,
            ),
            Op::CreateMessage {
                id,
                folder,
                subject,
                body,
            } => model.create(
                s,
                &id,
                Kind::Message,
                vec![
                    (Unit::Content, Value::Content { subject, body }),
                    (Unit::Read, Value::Read(false)),
                    (Unit::Location, Value::Location(folder)),
                ],
                at,
            ),
            Op::DeleteFolder { id } | Op::DeleteMessage { id } => model.delete(s, &id, at),
            op => {
                let (id, unit, value) = op.unit_value();
                model.update(s, &id, unit, value, at);
            }
        }
    }

    /// An update's item, unit and new value.
    fn unit_value(self) -> (String, Unit, Value) {
        match self {
            Op::RenameFolder { id, name } => (id, Unit::Name, Value::Name(name)),
            Op::MoveFolder { id, parent } => (id, Unit::Parent, Value::Parent(parent)),
            Op::EditMessage { id, subject, body } => {
                (id, Unit::Content, Value::Content { subject, body })
            }
            Op::MarkRead { id, read } => (id, Unit::Read, Value::Read(read)),
            Op::MoveMessage { id, folder } => (id, Unit::Location, Value::Location(folder)),
            Op::CreateFolder { id, .. }
            | Op::CreateMessage { id, .. }
            | Op::DeleteFolder { id }
            | Op::DeleteMessage { id } => (id, Unit::Deletion, Value::Read(false)),
        }
    }
}

/// Makes operations for one run.
pub struct Gen {
    pub rng: Rng,
    pub races: Races,
    counter: u64,
}

impl Gen {
    pub fn new(seed: u64, races: Races) -> Gen {
        Gen {
            rng: Rng::new(seed),
            races,
            counter: 0,
        }
    }

    /// A fresh number for ids, names, subjects and bodies: no two stores ever make the same one.
    fn fresh(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// An operation store `s` can make now, or `None` if a few tries found none.
    pub fn op(&mut self, model: &Model, s: StoreIdx) -> Option<Op> {
        const WEIGHTS: [usize; 9] = [8, 12, 10, 10, 5, 15, 15, 12, 6];
        for _ in 0..30 {
            let mut roll = self.rng.below(WEIGHTS.iter().sum());
            let kind = WEIGHTS
                .iter()
                .position(|w| {
                    let hit = roll < *w;
                    roll = roll.saturating_sub(*w);
                    hit
                })
                .unwrap_or(0);
            if let Some(op) = self.try_op(kind, model, s) {
                return Some(op);
            }
        }
        None
    }

    fn try_op(&mut self, kind: usize, model: &Model, s: StoreIdx) -> Option<Op> {
        let r = &model.replicas[s];
        let folders = r.live_ids(Kind::Folder);
        let messages = r.live_ids(Kind::Message);
        let n = self.fresh();
        let op = match kind {
            0 => {
                let parent = if self.rng.chance(30) {
                    None
                } else {
                    self.rng.pick(&folders)
                };
                Op::CreateFolder {
                    id: format!("f{n:04}"),
                    parent,
                    name: format!("folder {n}"),
                }
            }
            1 => Op::CreateMessage {
                id: format!("m{n:04}"),
                folder: self.rng.pick(&folders)?,
                subject: format!("subject {n}"),
                body: format!("body {n}"),
            },
            2 => Op::RenameFolder {
                id: self.rng.pick(&folders)?,
                name: format!("folder {n}"),
            },
            3 => {
                let id = self.rng.pick(&folders)?;
                let mut targets: Vec<Option<String>> = std::iter::once(None)
                    .chain(folders.iter().cloned().map(Some))
                    .filter(|p| p.as_ref().is_none_or(|p| !r.is_within(p, &id)))
                    .filter(|p| r.live(&id).and_then(Item::container) != p.as_deref())
                    .collect();
                // With cycle races let in, seek them half of the time.
                if self.races.allow_cycle_races && self.rng.chance(50) {
                    let racing: Vec<Option<String>> = targets
                        .iter()
                        .filter(|p| p.as_ref().is_some_and(|p| reaches_anywhere(model, p, &id)))
                        .cloned()
                        .collect();
                    if !racing.is_empty() {
                        targets = racing;
                    }
                }
                Op::MoveFolder {
                    parent: self.rng.pick(&targets)?,
                    id,
                }
            }
            4 => {
                let empty: Vec<String> = folders
                    .into_iter()
                    .filter(|f| !r.holds_contents(f))
                    .collect();
                Op::DeleteFolder {
                    id: self.rng.pick(&empty)?,
                }
            }
            5 => {
                let id = self.rng.pick(&messages)?;
                let Some(Value::Content { subject, body }) =
                    r.live(&id).and_then(|m| m.value(Unit::Content)).cloned()
                else {
                    return None;
                };
                let (subject, body) = if self.rng.chance(50) {
                    (format!("subject {n}"), body)
                } else {
                    (subject, format!("body {n}"))
                };
                Op::EditMessage { id, subject, body }
            }
            6 => {
                let id = self.rng.pick(&messages)?;
                let read = matches!(r.live(&id)?.value(Unit::Read), Some(Value::Read(true)));
                Op::MarkRead { id, read: !read }
            }
            7 => {
                let id = self.rng.pick(&messages)?;
                let here = r.live(&id)?.container();
                let targets: Vec<String> = folders
                    .iter()
                    .filter(|f| Some(f.as_str()) != here)
                    .cloned()
                    .collect();
                Op::MoveMessage {
                    folder: self.rng.pick(&targets)?,
                    id,
                }
            }
            _ => Op::DeleteMessage {
                id: self.rng.pick(&messages)?,
            },
        };
        self.allowed(model, s, &op).then_some(op)
    }

    /// Whether `op` at store `s` stays clear of the races this run keeps out.
    fn allowed(&self, model: &Model, s: StoreIdx, op: &Op) -> bool {
        let races = self.races;
        let r = &model.replicas[s];
        // The folder the operation leaves its item in.
        let container = match op {
            Op::CreateFolder { parent, .. } => parent.clone(),
            Op::MoveFolder { parent, .. } => parent.clone(),
            Op::CreateMessage { folder, .. } | Op::MoveMessage { folder, .. } => {
                Some(folder.clone())
            }
            Op::RenameFolder { id, .. } | Op::EditMessage { id, .. } | Op::MarkRead { id, .. } => {
                r.live(id).and_then(Item::container).map(str::to_string)
            }
            Op::DeleteFolder { .. } | Op::DeleteMessage { .. } => None,
        };
        if !races.allow_parent_delete_races {
            if container.is_some_and(|f| deletion_unseen(model, s, &f)) {
                return false;
            }
            if let Op::DeleteFolder { id } = op {
                if placement_unseen(model, s, id) {
                    return false;
                }
            }
        }
        let updated = match op {
            Op::RenameFolder { id, .. }
            | Op::MoveFolder { id, .. }
            | Op::EditMessage { id, .. }
            | Op::MarkRead { id, .. }
            | Op::MoveMessage { id, .. } => Some(id),
            _ => None,
        };
        if !races.allow_stale_comebacks {
            if updated.is_some_and(|id| stale_deletion_unseen(model, s, id)) {
                return false;
            }
            if let Op::DeleteFolder { id } | Op::DeleteMessage { id } = op {
                if update_unseen_by_updater(model, s, id) {
                    return false;
                }
            }
        }
        if !races.allow_repeated_deletes {
            if let Op::DeleteFolder { id } | Op::DeleteMessage { id } = op {
                if model
                    .replicas
                    .iter()
                    .any(|r| r.items.get(id).is_some_and(|i| !i.is_live()))
                {
                    return false;
                }
            }
        }
        if let Op::MoveFolder {
            id,
            parent: Some(p),
        } = op
        {
            if !races.allow_cycle_races && reaches_anywhere(model, p, id) {
                return false;
            }
        }
        if !races.allow_identical_value_races {
            if let Op::MoveFolder { .. } | Op::MarkRead { .. } | Op::MoveMessage { .. } = op {
                let (id, unit, value) = op.clone().unit_value();
                if same_value_unseen(model, s, &id, unit, &value) {
                    return false;
                }
            }
        }
        true
    }
}

/// Some store deleted `folder` in a change store `s` has not seen.
fn deletion_unseen(model: &Model, s: StoreIdx, folder: &str) -> bool {
    let known = &model.replicas[s].knowledge;
    model.replicas.iter().any(|r| {
        matches!(r.items.get(folder).map(|i| &i.state),
            Some(State::Tombstone(d)) if !known.contains(&d.ver))
    })
}

/// Some store deleted `id` in a change store `s` has not seen, over unit versions `s` has not
/// seen either: an update from `s` winning over that delete would bring back older units.
fn stale_deletion_unseen(model: &Model, s: StoreIdx, id: &str) -> bool {
    let known = &model.replicas[s].knowledge;
    model
        .replicas
        .iter()
        .any(|r| match r.items.get(id).map(|i| &i.state) {
            Some(State::Tombstone(d)) if !known.contains(&d.ver) => model
                .covered
                .get(&d.ver)
                .is_some_and(|units| units.iter().any(|v| !known.contains(v))),
            _ => false,
        })
}

/// Some store holds `id` with a change store `s` has not seen, while `s` holds versions of it
/// that store has not seen: a delete from `s` would race an update that, winning, brings back
/// older units.
fn update_unseen_by_updater(model: &Model, s: StoreIdx, id: &str) -> bool {
    let ours = model.replicas[s]
        .items
        .get(id)
        .map(Item::versions)
        .unwrap_or_default();
    let known = &model.replicas[s].knowledge;
    model.replicas.iter().any(|r| {
        r.live(id).is_some_and(|i| {
            i.versions().iter().any(|v| !known.contains(v))
                && ours.iter().any(|v| !r.knowledge.contains(v))
        })
    })
}

/// Some store holds an item in `folder` with a change store `s` has not seen.
fn placement_unseen(model: &Model, s: StoreIdx, folder: &str) -> bool {
    let known = &model.replicas[s].knowledge;
    model.replicas.iter().any(|r| {
        r.items.values().any(|i| {
            i.container() == Some(folder) && i.versions().iter().any(|v| !known.contains(v))
        })
    })
}

/// Whether `ancestor` is `folder` or above it in some store's tree, following every store's
/// parent of every folder: a move under `folder` could then make a cycle once moves meet.
fn reaches_anywhere(model: &Model, folder: &str, ancestor: &str) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![folder.to_string()];
    while let Some(f) = todo.pop() {
        if f == ancestor {
            return true;
        }
        if !seen.insert(f.clone()) {
            continue;
        }
        for r in &model.replicas {
            if let Some(p) = r.live(&f).and_then(Item::container) {
                todo.push(p.to_string());
            }
        }
    }
    false
}

/// Some store holds `unit` of `id` at `value` in a version store `s` has not seen.
fn same_value_unseen(model: &Model, s: StoreIdx, id: &str, unit: Unit, value: &Value) -> bool {
    let known = &model.replicas[s].knowledge;
    model
        .replicas
        .iter()
        .any(|r| match r.items.get(id).map(|i| &i.state) {
            Some(State::Live(units)) => units
                .get(&unit)
                .is_some_and(|(stamp, v)| v == value && !known.contains(&stamp.ver)),
            _ => false,
        })
}
