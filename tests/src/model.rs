//! A reference model of synchronization for the convergence property test: every store's items,
//! versions and knowledge in plain explicit sets, and a pairwise session applied the way seed 004
//! describes it. The model is written from the rules, not from the product's code, so the test
//! can compare the product against it after every session.
//!
//! - Each local row change takes the next tick of its store; the units it touches get the version
//!   (store, tick) and the time the store recorded (read back from the store, which is the only
//!   thing the model cannot know by itself).
//! - A store's knowledge is the set of versions it has seen. A session from S to D sends every
//!   item S holds with a version D does not know, then D learns all of S's knowledge except the
//!   versions of items it could not apply.
//! - Two versions of one change unit conflict when neither knowledge contained the other's
//!   (seed 004, "Konfliktbeispiel"): at D, the incoming version is unknown to D and D's version
//!   is unknown to S. Deletion is a unit too: a delete conflicts with an update the deleting side
//!   never saw, counted once per item.
//! - The policy is `newer-wins`: the change with the later time wins, ties broken by (replica id,
//!   tick), the same on every store. Update vs delete goes the same way: the later of the delete
//!   and the newest unseen update wins; a winning update brings the item back whole, a winning
//!   delete removes it.
//! - Delete vs delete is no conflict either; each store keeps the newer deletion, so what a store
//!   holds is never older than a version of the same unit it knows.
//! - A concurrent edit that gives both sides the identical value is settled the same way but is
//!   not a conflict: nothing the two sides wanted differs.
//!
//! Constraint conflicts (an item arriving in a folder deleted here, a move that would make a
//! cycle) are not followed: the applier settles them by changes of its own. The model lets the
//! item wait, or fail, as seed 003's queue would, and notes it in the session's `unsettled`
//! list; from there the test checks the end state only.

pub mod ops;

use std::collections::{BTreeMap, BTreeSet};

pub type StoreIdx = usize;

/// A version: the store that made the change and its tick there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ver {
    pub store: StoreIdx,
    pub tick: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    Name,
    Parent,
    Content,
    Read,
    Location,
    Deletion,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Name(String),
    Parent(Option<String>),
    Content { subject: String, body: String },
    Read(bool),
    Location(String),
}

impl Value {
    /// The folder this value places an item in, if it is a location.
    fn container(&self) -> Option<&str> {
        match self {
            Value::Parent(p) => p.as_deref(),
            Value::Location(f) => Some(f),
            _ => None,
        }
    }
}

/// A version with the time (unix ms) its store made the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub ver: Ver,
    pub at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Folder,
    Message,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Live(BTreeMap<Unit, (Stamp, Value)>),
    Tombstone(Stamp),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub kind: Kind,
    pub state: State,
}

impl Item {
    pub fn versions(&self) -> Vec<Ver> {
        match &self.state {
            State::Live(units) => units.values().map(|(s, _)| s.ver).collect(),
            State::Tombstone(s) => vec![s.ver],
        }
    }

    pub fn value(&self, unit: Unit) -> Option<&Value> {
        match &self.state {
            State::Live(units) => units.get(&unit).map(|(_, v)| v),
            State::Tombstone(_) => None,
        }
    }

    /// The folder a live item sits in (`None` at the top level or when deleted).
    pub fn container(&self) -> Option<&str> {
        [Unit::Parent, Unit::Location]
            .iter()
            .find_map(|u| self.value(*u))
            .and_then(Value::container)
    }

    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Live(_))
    }
}

/// One store in the model.
#[derive(Clone, Debug, Default)]
pub struct Replica {
    /// The store's replica id (used to break ties the way every store does).
    pub id: String,
    pub tick: u64,
    pub knowledge: BTreeSet<Ver>,
    pub items: BTreeMap<String, Item>,
}

impl Replica {
    pub fn live(&self, id: &str) -> Option<&Item> {
        self.items.get(id).filter(|i| i.is_live())
    }

    pub fn live_ids(&self, kind: Kind) -> Vec<String> {
        self.items
            .iter()
            .filter(|(_, i)| i.kind == kind && i.is_live())
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn holds_contents(&self, folder: &str) -> bool {
        self.items.values().any(|i| i.container() == Some(folder))
    }

    /// Whether `folder` is `ancestor` or lies below it here.
    pub fn is_within(&self, folder: &str, ancestor: &str) -> bool {
        let mut at = Some(folder.to_string());
        let mut steps = 0;
        while let Some(f) = at {
            if f == ancestor {
                return true;
            }
            steps += 1;
            if steps > self.items.len() {
                return true; // a cycle: never expected, treated as "within"
            }
            at = self.live(&f).and_then(Item::container).map(str::to_string);
        }
        false
    }
}

/// What the model says one session does at its destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionReport {
    /// (item, unit) of each reported conflict.
    pub conflicts: Vec<(String, Unit)>,
    /// (item, unit) of each concurrent edit to the identical value: settled, not reported.
    pub identical: Vec<(String, Unit)>,
    /// Items that could not be applied and come again next session.
    pub errors: Vec<String>,
    /// What happened that the generator's race rules are meant to keep out.
    pub unsettled: Vec<String>,
}

/// Every store of one run.
#[derive(Clone, Debug)]
pub struct Model {
    pub replicas: Vec<Replica>,
    /// Items ever created, and items some store deleted.
    pub created: BTreeSet<String>,
    pub deleted_somewhere: BTreeSet<String>,
    /// For each deletion, the versions of the units it replaced on the deleting store.
    pub covered: BTreeMap<Ver, Vec<Ver>>,
}

/// What happens to one item at the destination.
enum Step {
    Done,
    /// Waiting for its folder (or, for a folder delete, for its contents to go).
    Waits(String),
    Fails(String),
}

impl Model {
    pub fn new(replica_ids: Vec<String>) -> Model {
        Model {
            replicas: replica_ids
                .into_iter()
                .map(|id| Replica {
                    id,
                    ..Default::default()
                })
                .collect(),
            created: BTreeSet::new(),
            deleted_somewhere: BTreeSet::new(),
            covered: BTreeMap::new(),
        }
    }

    /// A local change at store `s` made at `at`: its version.
    fn next(&mut self, s: StoreIdx, at: i64) -> Stamp {
        let r = &mut self.replicas[s];
        r.tick += 1;
        let ver = Ver {
            store: s,
            tick: r.tick,
        };
        r.knowledge.insert(ver);
        Stamp { ver, at }
    }

    pub fn create(
        &mut self,
        s: StoreIdx,
        id: &str,
        kind: Kind,
        units: Vec<(Unit, Value)>,
        at: i64,
    ) {
        let stamp = self.next(s, at);
        let units = units.into_iter().map(|(u, v)| (u, (stamp, v))).collect();
        self.created.insert(id.to_string());
        self.replicas[s].items.insert(
            id.to_string(),
            Item {
                kind,
                state: State::Live(units),
            },
        );
    }

    pub fn update(&mut self, s: StoreIdx, id: &str, unit: Unit, value: Value, at: i64) {
        let stamp = self.next(s, at);
        if let Some(State::Live(units)) = self.replicas[s].items.get_mut(id).map(|i| &mut i.state) {
            units.insert(unit, (stamp, value));
        }
    }

    pub fn delete(&mut self, s: StoreIdx, id: &str, at: i64) {
        let stamp = self.next(s, at);
        self.deleted_somewhere.insert(id.to_string());
        if let Some(item) = self.replicas[s].items.get_mut(id) {
            self.covered.insert(stamp.ver, item.versions());
            item.state = State::Tombstone(stamp);
        }
    }

    /// Whether change `a` is newer than `b` under newer-wins: later time, then replica id, then
    /// tick — the same order on every store.
    fn newer(&self, a: Stamp, b: Stamp) -> bool {
        let key = |s: Stamp| (s.at, self.replicas[s.ver.store].id.clone(), s.ver.tick);
        key(a) > key(b)
    }

    /// The newest of some stamps under the same order.
    fn newest(&self, stamps: impl Iterator<Item = Stamp>) -> Option<Stamp> {
        stamps.reduce(|a, b| if self.newer(b, a) { b } else { a })
    }

    /// One session from `src` into `dst`.
    pub fn session(&mut self, src: StoreIdx, dst: StoreIdx) -> SessionReport {
        let made_with = self.replicas[src].knowledge.clone();
        let known = self.replicas[dst].knowledge.clone();
        let phase = |item: &Item| match (item.kind, item.is_live()) {
            (Kind::Folder, true) => 1,
            (Kind::Message, true) => 2,
            (Kind::Message, false) => 4,
            (Kind::Folder, false) => 5,
        };
        let mut sent: Vec<(u8, String, Item)> = self.replicas[src]
            .items
            .iter()
            .filter(|(_, i)| i.versions().iter().any(|v| !known.contains(v)))
            .map(|(id, i)| (phase(i), id.clone(), i.clone()))
            .collect();
        sent.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));

        let mut report = SessionReport::default();
        let mut excluded: BTreeSet<Ver> = BTreeSet::new();
        let mut waiting: Vec<(String, Item, String)> = Vec::new();
        for p in [1, 2, 4, 5] {
            let mut queue: Vec<(String, Item, String)> = std::mem::take(&mut waiting);
            queue.extend(
                sent.iter()
                    .filter(|(ph, _, _)| *ph == p)
                    .map(|(_, id, i)| (id.clone(), i.clone(), String::new())),
            );
            // Retried until it stops shrinking, as a queue of items waiting for their parent.
            loop {
                let before = queue.len();
                let mut still = Vec::new();
                for (id, incoming, _) in queue {
                    let mut conflicts = Vec::new();
                    match self.apply(dst, &made_with, &known, &id, &incoming, &mut conflicts) {
                        Step::Done => {
                            for (id, unit, identical) in conflicts {
                                match identical {
                                    true => report.identical.push((id, unit)),
                                    false => report.conflicts.push((id, unit)),
                                }
                            }
                        }
                        Step::Waits(why) => still.push((id, incoming, why)),
                        Step::Fails(why) => {
                            report.unsettled.push(why);
                            report.errors.push(id.clone());
                            excluded.extend(incoming.versions());
                        }
                    }
                }
                queue = still;
                if queue.is_empty() || queue.len() >= before {
                    break;
                }
            }
            waiting = queue;
        }
        for (id, incoming, why) in waiting {
            report.unsettled.push(why);
            report.errors.push(id);
            excluded.extend(incoming.versions());
        }
        let learned: Vec<Ver> = made_with.difference(&excluded).copied().collect();
        self.replicas[dst].knowledge.extend(learned);
        report
    }

    /// Applies one incoming item at `dst`.
    fn apply(
        &mut self,
        dst: StoreIdx,
        made_with: &BTreeSet<Ver>,
        known: &BTreeSet<Ver>,
        id: &str,
        incoming: &Item,
        conflicts: &mut Vec<(String, Unit, bool)>,
    ) -> Step {
        if incoming.versions().iter().all(|v| known.contains(v)) {
            return Step::Done;
        }
        let local = self.replicas[dst].items.get(id).cloned();
        // An item brought back over its tombstone by a conflict becomes a new change here.
        let mut renew_after = false;
        let replace = match (&incoming.state, local.as_ref().map(|l| &l.state)) {
            (State::Tombstone(_), None) => true,
            // Delete vs delete: no conflict; the newer deletion is the one kept, so what a
            // store holds is never older than what it knows.
            (State::Tombstone(theirs), Some(State::Tombstone(ours))) => self.newer(*theirs, *ours),
            (State::Tombstone(deletion), Some(State::Live(units))) => {
                let unseen = units
                    .values()
                    .map(|(s, _)| *s)
                    .filter(|s| !made_with.contains(&s.ver));
                match self.newest(unseen) {
                    Some(update) => {
                        conflicts.push((id.to_string(), Unit::Deletion, false));
                        let delete_wins = self.newer(*deletion, update);
                        if !delete_wins {
                            // The update's store wins whole: its item becomes a new change.
                            self.renew(dst, id);
                        }
                        delete_wins
                    }
                    None => true,
                }
            }
            (State::Live(_), None) => true,
            (State::Live(units), Some(State::Tombstone(deletion))) => {
                if made_with.contains(&deletion.ver) {
                    true // brought back at the source, knowing of the delete
                } else {
                    conflicts.push((id.to_string(), Unit::Deletion, false));
                    let update = self.newest(units.values().map(|(s, _)| *s));
                    let comes_back = update.is_some_and(|u| self.newer(u, *deletion));
                    if comes_back {
                        renew_after = true;
                    }
                    comes_back
                }
            }
            (State::Live(theirs), Some(State::Live(ours))) => {
                return self.apply_units(dst, made_with, known, id, theirs, ours, conflicts);
            }
        };
        if !replace {
            return Step::Done;
        }
        let r = &self.replicas[dst];
        if let Some(folder) = incoming.container() {
            if r.live(folder).is_none() {
                conflicts.clear();
                return Step::Waits(format!("{id} arrives in folder {folder}, gone or not here"));
            }
        }
        if !incoming.is_live() && incoming.kind == Kind::Folder && r.holds_contents(id) {
            conflicts.clear();
            return Step::Waits(format!("folder {id} is deleted but still holds items here"));
        }
        self.replicas[dst]
            .items
            .insert(id.to_string(), incoming.clone());
        if renew_after {
            self.renew(dst, id);
        }
        Step::Done
    }

    /// The store gives every unit of an item one new version (one tick), each unit keeping its
    /// time: the item as it holds it replaces older versions it knows of.
    fn renew(&mut self, dst: StoreIdx, id: &str) {
        let ver = self.next(dst, 0).ver;
        let r = &mut self.replicas[dst];
        if let Some(Item {
            state: State::Live(units),
            ..
        }) = r.items.get_mut(id)
        {
            for (stamp, _) in units.values_mut() {
                stamp.ver = ver;
            }
        }
    }

    /// An incoming live item over a live item: unit by unit.
    #[allow(clippy::too_many_arguments)]
    fn apply_units(
        &mut self,
        dst: StoreIdx,
        made_with: &BTreeSet<Ver>,
        known: &BTreeSet<Ver>,
        id: &str,
        theirs: &BTreeMap<Unit, (Stamp, Value)>,
        ours: &BTreeMap<Unit, (Stamp, Value)>,
        conflicts: &mut Vec<(String, Unit, bool)>,
    ) -> Step {
        let mut take = Vec::new();
        for (unit, (stamp, value)) in theirs {
            let Some((local, local_value)) = ours.get(unit) else {
                take.push((*unit, (*stamp, value.clone())));
                continue;
            };
            if known.contains(&stamp.ver) || local.ver == stamp.ver {
                continue;
            }
            if made_with.contains(&local.ver) {
                take.push((*unit, (*stamp, value.clone())));
                continue;
            }
            conflicts.push((id.to_string(), *unit, value == local_value));
            if self.newer(*stamp, *local) {
                take.push((*unit, (*stamp, value.clone())));
            }
        }
        let r = &self.replicas[dst];
        for (unit, (_, value)) in &take {
            let Some(folder) = value.container() else {
                continue;
            };
            if r.live(folder).is_none() {
                conflicts.clear();
                return Step::Waits(format!("{id} moves into folder {folder}, gone or not here"));
            }
            if *unit == Unit::Parent && r.is_within(folder, id) {
                conflicts.clear();
                return Step::Fails(format!("moving folder {id} under {folder} makes a cycle"));
            }
        }
        if let Some(State::Live(units)) = self.replicas[dst].items.get_mut(id).map(|i| &mut i.state)
        {
            units.extend(take);
        }
        Step::Done
    }

    /// A store's public rows in the fixture's `public_rows` form. Messages are made with the
    /// table defaults for sender, received_at and headers.
    pub fn rows(&self, s: StoreIdx) -> Vec<String> {
        let r = &self.replicas[s];
        let mut rows = Vec::new();
        for kind in [Kind::Folder, Kind::Message] {
            for id in r.live_ids(kind) {
                let Some(item) = r.live(&id) else { continue };
                rows.push(match kind {
                    Kind::Folder => format!(
                        "F {id} parent={} name={}",
                        item.container().unwrap_or("-"),
                        match item.value(Unit::Name) {
                            Some(Value::Name(n)) => n.as_str(),
                            _ => "",
                        }
                    ),
                    Kind::Message => {
                        let (subject, body) = match item.value(Unit::Content) {
                            Some(Value::Content { subject, body }) => (subject.as_str(), body.as_str()),
                            _ => ("", ""),
                        };
                        let read = matches!(item.value(Unit::Read), Some(Value::Read(true)));
                        let hex: String = body.bytes().map(|b| format!("{b:02X}")).collect();
                        format!(
                            "M {id} folder={} subject={subject} sender= at=0 headers= body={hex} read={}",
                            item.container().unwrap_or("-"),
                            u8::from(read)
                        )
                    }
                });
            }
        }
        rows
    }
}
