//! Versions and knowledge, following Microsoft Sync Framework's metadata model.
//!
//! Every change made at a replica gets a [`Version`]: the replica's id plus a
//! tick count. Tick counts are per replica, start at 1, and each change takes
//! the next tick. A replica's [`Knowledge`] is a compact representation of all
//! the versions it knows about: "A5, B4" means ticks 1..=5 of replica A and
//! 1..=4 of replica B (seed 004, `004_eee2c1a9c3f4bba5.txt`, "Synchronisierungs-
//! beispiel"). Knowledge may also hold *exceptions*, ranges beyond the
//! contiguous prefix, e.g. `A5+7..9` knows A1..=5 and A7..=9.
//!
//! Per seed 003, learned knowledge is combined with [`Knowledge::union_with`],
//! [`Knowledge::project`] restricts knowledge to a set of changes, and
//! [`Knowledge::exclude`] removes a single item's change (recoverable errors,
//! deferred conflicts). Forgotten knowledge (seed 001) uses the same type.
//! A conflict is detected when neither side's knowledge contains the other
//! side's version ([`is_conflict`], seed 004 "Konfliktbeispiel").

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// Identifies a replica (a data store taking part in synchronization).
///
/// Shared, not copied: every version of a change batch names one of a few replicas, and an
/// import gives each new message four of them (its creation and three units), so a clone is a
/// reference count, not an allocation and a copy of 36 bytes (`bench/PROFILE.md`, round eleven).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ReplicaId(Arc<str>);

impl ReplicaId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a tick is written after a ':' — for every id but a one-letter one like the
    /// seed's "A", so "A5" stays as seed 004 writes it and a UUID reads "…e16:5", never "…e165".
    fn ends_with_digit(&self) -> bool {
        self.0.chars().nth(1).is_some() || self.0.ends_with(|c: char| c.is_ascii_digit())
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ReplicaId {
    fn from(s: &str) -> Self {
        ReplicaId(Arc::from(s))
    }
}

impl From<String> for ReplicaId {
    fn from(s: String) -> Self {
        ReplicaId(Arc::from(s))
    }
}

/// A plain JSON string, as when the id was a `String`.
impl Serialize for ReplicaId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ReplicaId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(ReplicaId::from)
    }
}

/// The version of one change: the replica that made it and its tick there.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Version {
    /// The replica that made the change.
    pub replica: ReplicaId,
    /// The replica-local tick count of the change (>= 1).
    pub tick: u64,
}

impl Version {
    /// A version for `tick` at `replica`.
    pub fn new(replica: impl Into<ReplicaId>, tick: u64) -> Self {
        Version {
            replica: replica.into(),
            tick,
        }
    }
}

/// Writes `replica` followed by `n`, inserting ':' when the id ends in a digit.
fn write_replica_tick(f: &mut fmt::Formatter<'_>, replica: &ReplicaId, n: u64) -> fmt::Result {
    if replica.ends_with_digit() {
        write!(f, "{replica}:{n}")
    } else {
        write!(f, "{replica}{n}")
    }
}

impl fmt::Display for Version {
    /// `A5`, or `A1:5` when the replica id ends in a digit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_replica_tick(f, &self.replica, self.tick)
    }
}

/// Up to this many ranges beyond its prefix, [`TickSet::union_with`] inserts another set's
/// ranges one by one; past it, merges the two sets in one pass.
const FEW_RANGES: usize = 8;

/// A set of ticks of one replica: a contiguous prefix `1..=upto` plus sorted
/// exception ranges.
///
/// Invariant: exceptions are inclusive ranges `(from, to)` with
/// `upto + 1 < from <= to`, sorted, and each range starts more than one tick
/// after the previous one ends (disjoint and non-adjacent). Tick 0 is never
/// contained, so every set has exactly one representation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct TickSet {
    upto: u64,
    exceptions: Vec<(u64, u64)>,
}

impl TickSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every tick `1..=upto` is contained.
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// The ranges beyond the prefix, sorted, disjoint and non-adjacent.
    pub fn exceptions(&self) -> &[(u64, u64)] {
        &self.exceptions
    }

    /// Whether `tick` is in the set (tick 0 never is).
    pub fn contains(&self, tick: u64) -> bool {
        if tick == 0 {
            return false;
        }
        if tick <= self.upto {
            return true;
        }
        let i = self.exceptions.partition_point(|&(_, to)| to < tick);
        self.exceptions
            .get(i)
            .is_some_and(|&(from, _)| from <= tick)
    }

    /// Adds one tick (tick 0 is ignored).
    pub fn insert(&mut self, tick: u64) {
        self.insert_range(tick, tick);
    }

    /// Adds the inclusive range `from..=to`. `from` is clamped to 1; an empty
    /// range (`from > to`) adds nothing. Touching ranges are merged, and
    /// exceptions reaching the prefix are absorbed into it.
    pub fn insert_range(&mut self, from: u64, to: u64) {
        let from = from.max(1);
        if from > to {
            return;
        }
        if from <= self.upto.saturating_add(1) {
            self.upto = self.upto.max(to);
            let n = self
                .exceptions
                .partition_point(|&(f, _)| f <= self.upto.saturating_add(1));
            if let Some(&(_, last_to)) = self.exceptions[..n].last() {
                self.upto = self.upto.max(last_to);
            }
            self.exceptions.drain(..n);
            return;
        }
        // Ranges [i, j) overlap or touch from..=to.
        let i = self
            .exceptions
            .partition_point(|&(_, t)| t.saturating_add(1) < from);
        let j = self
            .exceptions
            .partition_point(|&(f, _)| f <= to.saturating_add(1));
        let (mut new_from, mut new_to) = (from, to);
        if i < j {
            new_from = new_from.min(self.exceptions[i].0);
            new_to = new_to.max(self.exceptions[j - 1].1);
        }
        self.exceptions.splice(i..j, [(new_from, new_to)]);
    }

    /// Removes one tick. Removing from the prefix shrinks `upto` and moves
    /// the rest of the prefix into the exceptions.
    pub fn remove(&mut self, tick: u64) {
        if !self.contains(tick) {
            return;
        }
        if tick <= self.upto {
            let old = self.upto;
            self.upto = tick - 1;
            if tick < old {
                self.exceptions.insert(0, (tick + 1, old));
            }
            return;
        }
        let i = self.exceptions.partition_point(|&(_, to)| to < tick);
        let (from, to) = self.exceptions[i];
        let mut pieces = Vec::with_capacity(2);
        if from < tick {
            pieces.push((from, tick - 1));
        }
        if tick < to {
            pieces.push((tick + 1, to));
        }
        self.exceptions.splice(i..=i, pieces);
    }

    /// Adds every tick of `other`. A few ranges are inserted one by one; more are merged with
    /// this set's in one pass: inserting each into the middle of a set of n ranges shifts the
    /// ranges after it, n² for a knowledge of scattered ticks, which a batch of the id window
    /// teaches (`bench/PROFILE.md`, round twenty-one).
    pub fn union_with(&mut self, other: &TickSet) {
        if other.exceptions.len() <= FEW_RANGES {
            for (from, to) in other.ranges() {
                self.insert_range(from, to);
            }
            return;
        }
        let merged = {
            let (mut a, mut b) = (self.ranges().peekable(), other.ranges().peekable());
            let mut out = TickSet::new();
            loop {
                let next = match (a.peek(), b.peek()) {
                    (Some(x), Some(y)) if y.0 < x.0 => b.next(),
                    (Some(_), _) => a.next(),
                    (None, _) => b.next(),
                };
                let Some((from, to)) = next else { break };
                out.push_sorted(from, to);
            }
            out
        };
        *self = merged;
    }

    /// The set of `ticks`, given in ascending order (repeats allowed).
    pub fn from_sorted_ticks(ticks: impl IntoIterator<Item = u64>) -> TickSet {
        let mut set = TickSet::new();
        for tick in ticks {
            set.push_sorted(tick, tick);
        }
        set
    }

    /// Adds `from..=to`, which starts at or after the start of every range in the set: a
    /// comparison with the last range, where [`TickSet::insert_range`] searches.
    fn push_sorted(&mut self, from: u64, to: u64) {
        let from = from.max(1);
        if from > to {
            return;
        }
        match self.exceptions.last_mut() {
            None if from <= self.upto.saturating_add(1) => self.upto = self.upto.max(to),
            Some(last) if from <= last.1.saturating_add(1) => last.1 = last.1.max(to),
            _ => self.exceptions.push((from, to)),
        }
    }

    /// The ticks in both sets.
    pub fn intersect(&self, other: &TickSet) -> TickSet {
        let (a, b): (Vec<_>, Vec<_>) = (self.ranges().collect(), other.ranges().collect());
        let (mut i, mut j, mut out) = (0, 0, TickSet::new());
        while i < a.len() && j < b.len() {
            out.insert_range(a[i].0.max(b[j].0), a[i].1.min(b[j].1));
            if a[i].1 < b[j].1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        out
    }

    /// The ticks in `self` that are not in `other`.
    pub fn difference(&self, other: &TickSet) -> TickSet {
        let b: Vec<_> = other.ranges().collect();
        let (mut j, mut out) = (0, TickSet::new());
        for (from, to) in self.ranges() {
            while j < b.len() && b[j].1 < from {
                j += 1;
            }
            let mut cur = Some(from);
            while let (Some(c), Some(&(bf, bt))) = (cur, b.get(j)) {
                if bf > to {
                    break;
                }
                if bf > c {
                    out.insert_range(c, bf - 1);
                }
                if bt >= to {
                    cur = None; // b[j] may cover the next range too: keep j.
                } else {
                    cur = Some(bt + 1);
                    j += 1;
                }
            }
            if let Some(c) = cur {
                out.insert_range(c, to);
            }
        }
        out
    }

    /// Whether the set holds no tick.
    pub fn is_empty(&self) -> bool {
        self.upto == 0 && self.exceptions.is_empty()
    }

    /// All inclusive ranges in order, starting with `(1, upto)` if `upto > 0`.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (self.upto > 0)
            .then_some((1, self.upto))
            .into_iter()
            .chain(self.exceptions.iter().copied())
    }

    /// Whether every tick of `other` is in `self`.
    pub fn is_superset_of(&self, other: &TickSet) -> bool {
        other.difference(self).is_empty()
    }

    /// The highest tick contained, if any.
    pub fn max_tick(&self) -> Option<u64> {
        match self.exceptions.last() {
            Some(&(_, to)) => Some(to),
            None => (self.upto > 0).then_some(self.upto),
        }
    }
}

/// What a replica knows: for each replica, the set of its ticks known.
/// Empty tick sets are never stored, so equal knowledge compares equal.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Knowledge {
    map: BTreeMap<ReplicaId, TickSet>,
}

/// Forgotten knowledge (versions whose tombstones were cleaned up) has the
/// same shape as knowledge.
pub type ForgottenKnowledge = Knowledge;

impl Knowledge {
    /// Knowledge of nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the version is known.
    pub fn contains(&self, version: &Version) -> bool {
        self.map
            .get(&version.replica)
            .is_some_and(|t| t.contains(version.tick))
    }

    /// Learns one version.
    pub fn insert(&mut self, version: &Version) {
        self.insert_range(&version.replica, version.tick, version.tick);
    }

    /// Learns ticks `from..=to` of `replica` (same clamping as [`TickSet::insert_range`]).
    pub fn insert_range(&mut self, replica: &ReplicaId, from: u64, to: u64) {
        if from.max(1) <= to {
            let set = self.map.entry(replica.clone()).or_default();
            set.insert_range(from, to);
        }
    }

    /// Forgets a single version, e.g. a change that failed to apply.
    pub fn exclude(&mut self, version: &Version) {
        if let Some(set) = self.map.get_mut(&version.replica) {
            set.remove(version.tick);
            if set.is_empty() {
                self.map.remove(&version.replica);
            }
        }
    }

    /// Learns everything `other` knows.
    pub fn union_with(&mut self, other: &Knowledge) {
        for (replica, set) in &other.map {
            self.map.entry(replica.clone()).or_default().union_with(set);
        }
    }

    /// Everything either knows.
    pub fn union(&self, other: &Knowledge) -> Knowledge {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    /// What both know.
    pub fn intersect(&self, other: &Knowledge) -> Knowledge {
        self.zip_with(other, |a, b| b.map(|b| a.intersect(b)))
    }

    /// What `self` knows and `other` does not.
    pub fn difference(&self, other: &Knowledge) -> Knowledge {
        self.zip_with(other, |a, b| {
            Some(b.map_or_else(|| a.clone(), |b| a.difference(b)))
        })
    }

    /// Applies `f` to each of self's tick sets and other's set for the same
    /// replica, keeping the non-empty results.
    fn zip_with(
        &self,
        other: &Knowledge,
        f: impl Fn(&TickSet, Option<&TickSet>) -> Option<TickSet>,
    ) -> Knowledge {
        let map = self
            .map
            .iter()
            .filter_map(|(r, a)| Some((r.clone(), f(a, other.map.get(r))?)))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        Knowledge { map }
    }

    /// Whether `self` knows every version `other` knows.
    pub fn is_superset_of(&self, other: &Knowledge) -> bool {
        other.difference(self).is_empty()
    }

    /// The knowledge of exactly those of `versions` that `self` contains.
    pub fn project<'a>(&self, versions: impl IntoIterator<Item = &'a Version>) -> Knowledge {
        // Each replica's ticks sorted, then laid down in order: a batch's versions come in id
        // order, their ticks scattered, and inserted one by one each shifted the ranges after
        // it (`bench/PROFILE.md`, round twenty-one).
        let mut ticks: BTreeMap<&ReplicaId, Vec<u64>> = BTreeMap::new();
        for v in versions.into_iter().filter(|v| self.contains(v)) {
            ticks.entry(&v.replica).or_default().push(v.tick);
        }
        let mut out = Knowledge::new();
        for (replica, mut ticks) in ticks {
            ticks.sort_unstable();
            out.map
                .insert(replica.clone(), TickSet::from_sorted_ticks(ticks));
        }
        out
    }

    /// The ticks known for `replica`, if any.
    pub fn get(&self, replica: &ReplicaId) -> Option<&TickSet> {
        self.map.get(replica)
    }

    /// The contiguous prefix known for `replica` (0 if unknown).
    pub fn upto(&self, replica: &ReplicaId) -> u64 {
        self.map.get(replica).map_or(0, TickSet::upto)
    }

    /// Replicas with any known tick, sorted.
    pub fn replicas(&self) -> impl Iterator<Item = &ReplicaId> {
        self.map.keys()
    }

    /// `(replica, ticks)` pairs, sorted by replica.
    pub fn iter(&self) -> impl Iterator<Item = (&ReplicaId, &TickSet)> {
        self.map.iter()
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Replaces what is known of `replica` (an empty set removes it).
    pub fn set(&mut self, replica: &ReplicaId, ticks: TickSet) {
        if ticks.is_empty() {
            self.map.remove(replica);
        } else {
            self.map.insert(replica.clone(), ticks);
        }
    }

    /// Total number of ranges, prefixes included: a measure of size.
    pub fn range_count(&self) -> usize {
        self.map.values().map(|t| t.ranges().count()).sum()
    }
}

/// Seed 004's conflict rule: the two changes to one item were made without
/// knowledge of each other, i.e. neither side's knowledge contains the other
/// side's version.
pub fn is_conflict(
    source_version: &Version,
    source_knowledge: &Knowledge,
    dest_version: &Version,
    dest_knowledge: &Knowledge,
) -> bool {
    !source_knowledge.contains(dest_version) && !dest_knowledge.contains(source_version)
}

impl fmt::Display for Knowledge {
    /// E.g. `A5+7..9+12, B4`; `(none)` when empty. With a prefix of 0 the
    /// number is omitted (`A+7..9`; `A1:+7..9` for ids ending in a digit).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.map.is_empty() {
            return f.write_str("(none)");
        }
        for (n, (replica, set)) in self.map.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            match (set.upto, replica.ends_with_digit()) {
                (0, false) => write!(f, "{replica}")?,
                (0, true) => write!(f, "{replica}:")?,
                (upto, _) => write_replica_tick(f, replica, upto)?,
            }
            for &(from, to) in &set.exceptions {
                if from == to {
                    write!(f, "+{from}")?;
                } else {
                    write!(f, "+{from}..{to}")?;
                }
            }
        }
        Ok(())
    }
}

/// Wire form of one replica's entry.
#[derive(Serialize)]
struct EntryRef<'a> {
    replica: &'a ReplicaId,
    upto: u64,
    exceptions: &'a [(u64, u64)],
}

#[derive(Deserialize)]
struct Entry {
    replica: ReplicaId,
    upto: u64,
    #[serde(default)]
    exceptions: Vec<(u64, u64)>,
}

impl Serialize for Knowledge {
    /// A list sorted by replica of `{"replica", "upto", "exceptions": [[from, to], ..]}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.map.iter().map(|(replica, set)| EntryRef {
            replica,
            upto: set.upto,
            exceptions: &set.exceptions,
        }))
    }
}

impl<'de> Deserialize<'de> for Knowledge {
    /// Rejects duplicate replicas, tick 0 and reversed ranges; overlapping,
    /// adjacent or unsorted ranges are normalized.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<Entry>::deserialize(deserializer)?;
        let mut seen = BTreeSet::new();
        let mut out = Knowledge::new();
        for entry in entries {
            if !seen.insert(entry.replica.clone()) {
                return Err(D::Error::custom(format!(
                    "knowledge lists replica {:?} more than once",
                    entry.replica.as_str()
                )));
            }
            let mut set = TickSet::new();
            set.insert_range(1, entry.upto);
            for (from, to) in entry.exceptions {
                if from == 0 {
                    return Err(D::Error::custom(format!(
                        "knowledge of replica {:?}: tick 0 in range [{from}, {to}] (ticks start at 1)",
                        entry.replica.as_str()
                    )));
                }
                if from > to {
                    return Err(D::Error::custom(format!(
                        "knowledge of replica {:?}: range [{from}, {to}] has from > to",
                        entry.replica.as_str()
                    )));
                }
                set.insert_range(from, to);
            }
            out.set(&entry.replica, set);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(r: &str, t: u64) -> Version {
        Version::new(r, t)
    }

    fn k(versions: &[(&str, u64)]) -> Knowledge {
        let mut k = Knowledge::new();
        for &(r, t) in versions {
            k.insert(&v(r, t));
        }
        k
    }

    fn r(s: &str) -> ReplicaId {
        ReplicaId::from(s)
    }

    fn check_set_invariant(set: &TickSet) {
        let mut floor = set.upto().saturating_add(1); // next range must start above this
        for &(from, to) in set.exceptions() {
            assert!(from >= 1 && from <= to, "bad range {from}..{to} in {set:?}");
            assert!(
                from > floor,
                "range {from}..{to} touches previous in {set:?}"
            );
            floor = to.saturating_add(1);
        }
    }

    fn check_invariant(k: &Knowledge) {
        for (replica, set) in k.iter() {
            assert!(!set.is_empty(), "empty set stored for {replica}");
            check_set_invariant(set);
        }
    }

    /// A replica id is a plain JSON string on the wire and in state records, and its clones
    /// share one allocation.
    #[test]
    fn a_replica_id_is_a_json_string_and_clones_share_it() {
        let id = r("0b7e2c1a-4d5f-4e8a-9c3b-2f6d1e0a9b7c");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"0b7e2c1a-4d5f-4e8a-9c3b-2f6d1e0a9b7c\"");
        assert_eq!(serde_json::from_str::<ReplicaId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<ReplicaId>("7").is_err());
        assert!(Arc::ptr_eq(&id.0, &id.clone().0));
        assert!(r("A") < r("B") && r("A") == ReplicaId::from("A".to_string()));
    }

    #[test]
    fn seed_004_sync_example() {
        // Replica A: I1 created 1, I2 created 2, I2 updated 3, I3 created 4, I1 updated 5.
        let a = k(&[("A", 1), ("A", 2), ("A", 3), ("A", 4), ("A", 5)]);
        assert_eq!(a.to_string(), "A5");
        assert_eq!(a.range_count(), 1);
        // Replica B: I104 created 1, updated 2; I105 created 3, updated 4.
        let b = k(&[("B", 1), ("B", 2), ("B", 3), ("B", 4)]);
        assert_eq!(b.to_string(), "B4");
        let (mut a2, mut b2) = (a.clone(), b.clone());
        a2.union_with(&b);
        b2.union_with(&a);
        assert_eq!(a2.to_string(), "A5, B4");
        assert_eq!(a2, b2);
        assert_eq!(a2.upto(&r("A")), 5);
        assert_eq!(a2.upto(&r("C")), 0);
        check_invariant(&a2);
    }

    #[test]
    fn seed_004_conflict_table() {
        // A updated I2 at A6 knowing B4; B concurrently updated I2 at B5 knowing A5.
        let mut a_know = Knowledge::new();
        a_know.insert_range(&r("A"), 1, 6);
        a_know.insert_range(&r("B"), 1, 4);
        let mut b_know = Knowledge::new();
        b_know.insert_range(&r("A"), 1, 5);
        b_know.insert_range(&r("B"), 1, 5);
        assert_eq!(a_know.to_string(), "A6, B4");
        assert_eq!(b_know.to_string(), "A5, B5");
        // (source version, source knowledge, dest version, dest knowledge, conflict?)
        let cases = [
            (v("A", 6), &a_know, v("B", 5), &b_know, true),
            (v("B", 5), &b_know, v("A", 6), &a_know, true),
            (v("A", 6), &a_know, v("A", 3), &b_know, false),
            (v("A", 3), &b_know, v("A", 6), &a_know, false),
            (v("B", 5), &b_know, v("B", 4), &a_know, false),
        ];
        for (sv, sk, dv, dk, want) in cases {
            assert_eq!(is_conflict(&sv, sk, &dv, dk), want, "{sv} vs {dv}");
        }
    }

    #[test]
    fn insert_fills_gaps_into_prefix() {
        let mut t = TickSet::new();
        for tick in [1, 3, 5, 6, 9] {
            t.insert(tick);
        }
        assert_eq!(
            (t.upto(), t.exceptions()),
            (1, &[(3, 3), (5, 6), (9, 9)][..])
        );
        t.insert(2);
        assert_eq!((t.upto(), t.exceptions()), (3, &[(5, 6), (9, 9)][..]));
        t.insert_range(4, 8);
        assert_eq!((t.upto(), t.exceptions()), (9, &[][..]));
        t.insert_range(0, 0);
        t.insert_range(20, 11);
        assert_eq!(
            (t.upto(), t.exceptions().len(), t.max_tick()),
            (9, 0, Some(9))
        );
        assert!(!t.contains(0));
    }

    #[test]
    fn insert_range_merges_spanning_exceptions() {
        let mut t = TickSet::new();
        for (f, to) in [(4, 5), (8, 9), (12, 12), (20, 22)] {
            t.insert_range(f, to);
        }
        t.insert_range(6, 13);
        assert_eq!(t.exceptions(), &[(4, 13), (20, 22)]);
        assert_eq!(t.max_tick(), Some(22));
        assert_eq!(TickSet::new().max_tick(), None);
    }

    #[test]
    fn remove_splits_prefix_and_ranges() {
        let mut t = TickSet::new();
        t.insert_range(1, 10);
        t.remove(4);
        assert_eq!((t.upto(), t.exceptions()), (3, &[(5, 10)][..]));
        t.remove(7);
        assert_eq!(t.exceptions(), &[(5, 6), (8, 10)]);
        t.remove(1);
        assert_eq!(
            (t.upto(), t.exceptions()),
            (0, &[(2, 3), (5, 6), (8, 10)][..])
        );
        t.remove(99);
        t.remove(0);
        t.insert(1);
        t.insert(4);
        t.insert(7);
        assert_eq!((t.upto(), t.exceptions()), (10, &[][..]));
    }

    #[test]
    fn difference_and_intersect() {
        let mut a = TickSet::new();
        a.insert_range(1, 10);
        a.insert_range(15, 20);
        let mut b = TickSet::new();
        b.insert_range(3, 4);
        b.insert_range(9, 16);
        b.insert(20);
        let d = a.difference(&b);
        assert_eq!((d.upto(), d.exceptions()), (2, &[(5, 8), (17, 19)][..]));
        let i = a.intersect(&b);
        assert_eq!(
            (i.upto(), i.exceptions()),
            (0, &[(3, 4), (9, 10), (15, 16), (20, 20)][..])
        );
        assert!(a.is_superset_of(&i) && !a.is_superset_of(&b));
        let ka = k(&[("A", 1), ("A", 2), ("B", 1)]);
        let kb = k(&[("A", 2), ("C", 1)]);
        assert_eq!(ka.difference(&kb).to_string(), "A1, B1");
        assert_eq!(ka.intersect(&kb).to_string(), "A+2");
        assert!(ka.intersect(&Knowledge::new()).is_empty());
    }

    #[test]
    fn project_keeps_only_known_given_versions() {
        let mut know = Knowledge::new();
        know.insert_range(&r("A"), 1, 5);
        know.insert_range(&r("B"), 1, 4);
        let vs = [v("A", 2), v("A", 3), v("A", 7), v("B", 4), v("C", 1)];
        let p = know.project(&vs);
        assert_eq!(p.to_string(), "A+2..3, B+4");
        assert!(know.is_superset_of(&p) && !p.is_superset_of(&know));
        assert!(know.project(&[]).is_empty());
        check_invariant(&p);
    }

    #[test]
    fn exclude_removes_one_change() {
        let mut know = k(&[("A", 1), ("A", 2), ("A", 3), ("B", 1)]);
        know.exclude(&v("A", 2));
        assert_eq!(know.to_string(), "A1+3, B1");
        assert!(!know.contains(&v("A", 2)) && know.contains(&v("A", 3)));
        know.exclude(&v("B", 1));
        know.exclude(&v("Z", 1));
        assert_eq!(know.replicas().collect::<Vec<_>>(), vec![&r("A")]);
        assert!(know.get(&r("B")).is_none());
        check_invariant(&know);
    }

    #[test]
    fn display_forms() {
        let mut know = Knowledge::new();
        assert_eq!(know.to_string(), "(none)");
        know.insert_range(&r("A"), 1, 5);
        know.insert_range(&r("A"), 7, 9);
        know.insert(&v("A", 12));
        know.insert_range(&r("B"), 1, 4);
        assert_eq!(know.to_string(), "A5+7..9+12, B4");
        know.insert(&v("C", 3));
        know.insert_range(&r("srv1"), 1, 2);
        know.insert(&v("srv2", 4));
        assert_eq!(know.to_string(), "A5+7..9+12, B4, C+3, srv1:2, srv2:+4");
        assert_eq!(v("A", 5).to_string(), "A5");
        assert_eq!(v("srv1", 5).to_string(), "srv1:5");
        assert_eq!(know.range_count(), 7);
    }

    #[test]
    fn set_replaces_and_removes() {
        let mut know = k(&[("A", 1)]);
        let mut t = TickSet::new();
        t.insert(3);
        know.set(&r("A"), t.clone());
        assert_eq!(know.get(&r("A")), Some(&t));
        know.set(&r("A"), TickSet::new());
        assert!(know.is_empty());
    }

    #[test]
    fn serde_exact_json() {
        let mut know = Knowledge::new();
        know.insert_range(&r("B"), 1, 4);
        know.insert_range(&r("A"), 1, 5);
        know.insert_range(&r("A"), 7, 9);
        know.insert(&v("A", 12));
        know.insert(&v("C", 2));
        let json = serde_json::to_string(&know).unwrap();
        assert_eq!(
            json,
            r#"[{"replica":"A","upto":5,"exceptions":[[7,9],[12,12]]},{"replica":"B","upto":4,"exceptions":[]},{"replica":"C","upto":0,"exceptions":[[2,2]]}]"#
        );
        assert_eq!(serde_json::from_str::<Knowledge>(&json).unwrap(), know);
        assert_eq!(serde_json::to_string(&Knowledge::new()).unwrap(), "[]");
    }

    #[test]
    fn serde_normalizes_odd_but_valid_input() {
        let json = r#"[{"replica":"B","upto":0,"exceptions":[]},
            {"replica":"A","upto":3,"exceptions":[[9,10],[2,6],[8,9]]}]"#;
        let know: Knowledge = serde_json::from_str(json).unwrap();
        assert_eq!(know.to_string(), "A6+8..10");
        check_invariant(&know);
    }

    #[test]
    fn serde_rejects_invalid_input() {
        let cases = [
            (
                r#"[{"replica":"A","upto":1,"exceptions":[]},{"replica":"A","upto":2,"exceptions":[]}]"#,
                "more than once",
            ),
            (
                r#"[{"replica":"A","upto":1,"exceptions":[[0,3]]}]"#,
                "tick 0",
            ),
            (
                r#"[{"replica":"A","upto":1,"exceptions":[[5,3]]}]"#,
                "from > to",
            ),
            (
                r#"[{"replica":"A","upto":-1,"exceptions":[]}]"#,
                "invalid value",
            ),
            (
                r#"[{"replica":"A","upto":1.5,"exceptions":[]}]"#,
                "invalid type",
            ),
        ];
        for (json, want) in cases {
            let err = serde_json::from_str::<Knowledge>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    /// Two sets of more than `FEW_RANGES` scattered ranges, merged: the odd ticks and the even
    /// ones up to 40 make one range; what only one set holds stays apart.
    #[test]
    fn union_of_many_ranges_merges_them() {
        let odd = TickSet::from_sorted_ticks((1..=39).step_by(2).chain([61, 63]));
        let even = TickSet::from_sorted_ticks((2..=40).step_by(2).chain([70]));
        assert!(odd.exceptions().len() > FEW_RANGES && even.exceptions().len() > FEW_RANGES);
        let mut union = odd.clone();
        union.union_with(&even);
        assert_eq!(union.upto(), 40);
        assert_eq!(union.exceptions(), &[(61, 61), (63, 63), (70, 70)]);
        let mut other_way = even;
        other_way.union_with(&odd);
        assert_eq!(other_way, union);
    }

    const REPLICAS: [&str; 3] = ["A", "B", "C"];

    fn arb_knowledge() -> impl Strategy<Value = Knowledge> {
        let op = prop_oneof![
            (0..3usize, 1..60u64).prop_map(|(r, t)| (r, t, t)),
            (0..3usize, 0..60u64, 0..12u64).prop_map(|(r, f, len)| (r, f, f + len)),
        ];
        proptest::collection::vec(op, 0..20).prop_map(|ops| {
            let mut know = Knowledge::new();
            for (ri, from, to) in ops {
                know.insert_range(&r(REPLICAS[ri]), from, to);
            }
            know
        })
    }

    fn all_versions() -> impl Iterator<Item = Version> {
        REPLICAS.iter().flat_map(|r| (0..70).map(move |t| v(r, t)))
    }

    proptest! {
        #[test]
        fn union_laws(a in arb_knowledge(), b in arb_knowledge(), c in arb_knowledge()) {
            check_invariant(&a);
            let ab = a.union(&b);
            check_invariant(&ab);
            prop_assert_eq!(&ab, &b.union(&a));
            prop_assert_eq!(ab.union(&c), a.union(&b.union(&c)));
            prop_assert_eq!(a.union(&a), a.clone());
            prop_assert!(ab.is_superset_of(&a) && ab.is_superset_of(&b));
            for ver in all_versions() {
                prop_assert_eq!(ab.contains(&ver), a.contains(&ver) || b.contains(&ver));
                if a.contains(&ver) { prop_assert!(ab.contains(&ver)); }
            }
        }

        #[test]
        fn difference_intersect_partition(a in arb_knowledge(), b in arb_knowledge()) {
            let (d, i) = (a.difference(&b), a.intersect(&b));
            check_invariant(&d);
            check_invariant(&i);
            prop_assert_eq!(d.union(&i), a.clone());
            prop_assert!(d.intersect(&i).is_empty());
            for ver in all_versions() {
                prop_assert_eq!(d.contains(&ver), a.contains(&ver) && !b.contains(&ver));
                prop_assert_eq!(i.contains(&ver), a.contains(&ver) && b.contains(&ver));
            }
            prop_assert_eq!(a.is_superset_of(&b), b.difference(&a).is_empty());
            prop_assert_eq!(a.is_superset_of(&b), all_versions().all(|x| !b.contains(&x) || a.contains(&x)));
        }

        #[test]
        fn exclude_removes_only_that_tick(a in arb_knowledge(), ri in 0..3usize, tick in 1..70u64) {
            let mut e = a.clone();
            let gone = v(REPLICAS[ri], tick);
            e.exclude(&gone);
            check_invariant(&e);
            prop_assert!(!e.contains(&gone));
            for ver in all_versions().filter(|x| *x != gone) {
                prop_assert_eq!(e.contains(&ver), a.contains(&ver));
            }
            if a.contains(&gone) {
                e.insert(&gone);
                prop_assert_eq!(e, a);
            }
        }

        #[test]
        fn project_is_known_subset(a in arb_knowledge(), picks in proptest::collection::vec((0..3usize, 1..70u64), 0..30)) {
            let vs: Vec<Version> = picks.iter().map(|&(ri, t)| v(REPLICAS[ri], t)).collect();
            let p = a.project(&vs);
            check_invariant(&p);
            for ver in all_versions() {
                prop_assert_eq!(p.contains(&ver), a.contains(&ver) && vs.contains(&ver));
            }
        }

        #[test]
        fn serde_round_trip(a in arb_knowledge()) {
            let json = serde_json::to_string(&a).unwrap();
            let back: Knowledge = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, a);
        }

        #[test]
        fn permuted_inserts_are_compact(ticks in (1..80u64).prop_flat_map(|n| Just((1..=n).collect::<Vec<u64>>()).prop_shuffle())) {
            let mut know = Knowledge::new();
            for &t in &ticks {
                know.insert(&v("A", t));
                check_invariant(&know);
            }
            prop_assert_eq!(know.range_count(), 1);
            prop_assert!(know.get(&r("A")).unwrap().exceptions().is_empty());
            prop_assert_eq!(know.upto(&r("A")), ticks.len() as u64);
        }

        #[test]
        fn tickset_union_is_the_union_of_inserts(
            a in proptest::collection::vec((0..300u64, 0..4u64), 0..60),
            b in proptest::collection::vec((0..300u64, 0..4u64), 0..60),
        ) {
            let build = |ranges: &[(u64, u64)]| {
                let mut t = TickSet::new();
                for &(from, len) in ranges { t.insert_range(from, from + len); }
                t
            };
            let (ta, tb) = (build(&a), build(&b));
            let mut merged = ta.clone();
            merged.union_with(&tb);
            check_set_invariant(&merged);
            let mut one_by_one = ta.clone();
            for (from, to) in tb.ranges() { one_by_one.insert_range(from, to); }
            prop_assert_eq!(&merged, &one_by_one);
            for x in 0..310 {
                prop_assert_eq!(merged.contains(x), ta.contains(x) || tb.contains(x), "tick {}", x);
            }
        }

        #[test]
        fn from_sorted_ticks_is_their_inserts(mut ticks in proptest::collection::vec(0..120u64, 0..80)) {
            ticks.sort_unstable();
            let built = TickSet::from_sorted_ticks(ticks.iter().copied());
            check_set_invariant(&built);
            let mut inserted = TickSet::new();
            for &t in &ticks { inserted.insert(t); }
            prop_assert_eq!(built, inserted);
        }

        #[test]
        fn tickset_matches_set_model(ops in proptest::collection::vec((0..3u8, 0..50u64, 0..8u64), 0..40)) {
            let (mut t, mut model) = (TickSet::new(), BTreeSet::new());
            for (kind, tick, len) in ops {
                match kind {
                    0 => { t.insert_range(tick, tick + len); model.extend((tick.max(1))..=tick + len); }
                    1 => { t.remove(tick); model.remove(&tick); }
                    _ => { t.insert(tick); if tick > 0 { model.insert(tick); } }
                }
                check_set_invariant(&t);
                prop_assert_eq!(t.max_tick(), model.last().copied());
                prop_assert_eq!(t.is_empty(), model.is_empty());
                for x in 0..70 {
                    prop_assert_eq!(t.contains(x), model.contains(&x), "tick {}", x);
                }
            }
        }
    }
}
