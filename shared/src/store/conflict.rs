//! Conflicts (seed 004, "Konfliktbeispiel"): two versions of one change unit made without
//! knowledge of each other, how a session settles them, and what is reported.
//!
//! Detection lives in the applier; this module holds the plain rules:
//!
//! - [`ConflictRule`]: the session's policy, seen from the destination.
//! - [`Resolution`]: an operator's choice for one deferred conflict, named by the version that
//!   wins. It overrides the policy for that item and unit in every session that meets the conflict
//!   again, in either direction, as long as the winning version is still one of the two sides.
//! - [`ReportedConflict`]: what the agent learns of a conflict — enough to show both sides to an
//!   operator without opening a store.
//!
//! Two concurrent edits that leave the unit with the *same value* are no conflict for anyone:
//! the applier keeps the value, takes the greater version (by [`newer`]) so every store ends
//! with the same one, and reports nothing.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::knowledge::Version;
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

/// An operator's choice for one conflict: on `item`'s `unit`, the version `winner` wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    pub item: String,
    pub unit: Unit,
    pub winner: Version,
}

/// How a conflict ended on the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The incoming version won by the session's policy.
    Incoming,
    /// The destination's version won by the session's policy.
    Local,
    /// Kept aside for an operator (policy `defer`); it comes again next session.
    Deferred,
    /// Settled by an operator's [`Resolution`].
    Resolved,
    /// Constraint: a folder whose delete would have lost items the deleting store never saw was
    /// kept, and comes back on that store (seed 003's constraint conflicts).
    Restored,
    /// Constraint: two sibling folders had the same name; the one with the greater id was renamed.
    Renamed,
    /// Constraint: two concurrent moves would have made a folder cycle; the newer move won and
    /// the folder in its way took the mover's former place.
    Moved,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Incoming => "incoming",
            Outcome::Local => "local",
            Outcome::Deferred => "deferred",
            Outcome::Resolved => "resolved",
            Outcome::Restored => "restored",
            Outcome::Renamed => "renamed",
            Outcome::Moved => "moved",
        }
    }
}

/// A conflict met while applying, as reported to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedConflict {
    pub item: String,
    pub kind: ItemKind,
    pub unit: Unit,
    /// The destination's version, and the source's.
    pub local: Version,
    pub remote: Version,
    pub outcome: Outcome,
    /// What the item is to a person: a folder's name, a message's subject.
    #[serde(default)]
    pub label: String,
    /// Short summaries of both values ("read", "“Budget” (2.0 KiB)", "deleted").
    #[serde(default)]
    pub local_value: String,
    #[serde(default)]
    pub remote_value: String,
}

/// A session's resolutions, looked up per item and unit.
#[derive(Clone, Debug, Default)]
pub struct Resolutions(HashMap<(String, Unit), Version>);

impl Resolutions {
    pub fn new(list: Vec<Resolution>) -> Resolutions {
        Resolutions(
            list.into_iter()
                .map(|r| ((r.item, r.unit), r.winner))
                .collect(),
        )
    }

    /// How a conflict on `item`'s `unit` is settled: by a resolution naming a version of one of
    /// the two sides, else by `rule` (`policy_incoming_wins` is what a non-deferring rule
    /// decided). A side has several versions when an update meets a delete: any unit's version
    /// names the live side.
    pub fn settle(
        &self,
        item: &str,
        unit: Unit,
        incoming: &[&Version],
        local: &[&Version],
        rule: ConflictRule,
        policy_incoming_wins: bool,
    ) -> (bool, Outcome) {
        match self.0.get(&(item.to_string(), unit)) {
            Some(w) if incoming.contains(&w) => return (true, Outcome::Resolved),
            Some(w) if local.contains(&w) => return (false, Outcome::Resolved),
            _ => {}
        }
        match (rule, policy_incoming_wins) {
            (ConflictRule::Defer, _) => (false, Outcome::Deferred),
            (_, true) => (true, Outcome::Incoming),
            (_, false) => (false, Outcome::Local),
        }
    }
}

/// Whether change `a` is newer than `b`: later time first, then the greater version, so every
/// store breaks a tie the same way.
pub fn newer(a: (i64, &Version), b: (i64, &Version)) -> bool {
    (a.0, &a.1.replica, a.1.tick) > (b.0, &b.1.replica, b.1.tick)
}

/// A one-line summary of a unit's value for an operator.
pub fn summary(value: &UnitValue) -> String {
    match value {
        UnitValue::Name { name } => format!("“{}”", clip(name)),
        UnitValue::Parent { parent_id: None } => "at the top".into(),
        UnitValue::Parent { parent_id: Some(p) } => format!("under folder {}", clip(p)),
        UnitValue::Content { subject, body, .. } => match body {
            Some(b) => format!("“{}” ({})", clip(subject), human_size(b.wire_len())),
            None => format!("“{}”", clip(subject)),
        },
        UnitValue::Read { is_read: true } => "read".into(),
        UnitValue::Read { is_read: false } => "unread".into(),
        UnitValue::Location { folder_id } => format!("in folder {}", clip(folder_id)),
        UnitValue::MessageTombstone | UnitValue::FolderTombstone => "deleted".into(),
    }
}

/// What an item is to a person, from any of its values: a folder's name, a message's subject.
pub fn label_of<'a>(values: impl IntoIterator<Item = &'a UnitValue>) -> Option<String> {
    values.into_iter().find_map(|v| match v {
        UnitValue::Name { name } => Some(clip(name)),
        UnitValue::Content { subject, .. } => Some(clip(subject)),
        _ => None,
    })
}

fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX - 1).collect();
    out.push('…');
    out
}

fn human_size(bytes: usize) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(r: &str, t: u64) -> Version {
        Version {
            replica: r.into(),
            tick: t,
        }
    }

    #[test]
    fn a_resolution_names_the_winner_whichever_side_it_is_on() {
        let res = Resolutions::new(vec![Resolution {
            item: "m".into(),
            unit: Unit::Content,
            winner: v("b", 4),
        }]);
        // Seen from the store that holds b4, and from the one that holds a5.
        assert_eq!(
            res.settle(
                "m",
                Unit::Content,
                &[&v("a", 5)],
                &[&v("b", 4)],
                ConflictRule::Defer,
                false
            ),
            (false, Outcome::Resolved)
        );
        assert_eq!(
            res.settle(
                "m",
                Unit::Content,
                &[&v("b", 4)],
                &[&v("a", 5)],
                ConflictRule::Defer,
                false
            ),
            (true, Outcome::Resolved)
        );
        // A version that is neither side (the source edited again): the policy applies.
        assert_eq!(
            res.settle(
                "m",
                Unit::Content,
                &[&v("b", 6)],
                &[&v("a", 5)],
                ConflictRule::Defer,
                false
            ),
            (false, Outcome::Deferred)
        );
        // Another unit of the same item is not resolved.
        assert_eq!(
            res.settle(
                "m",
                Unit::Read,
                &[&v("b", 4)],
                &[&v("a", 5)],
                ConflictRule::NewerWins,
                true
            ),
            (true, Outcome::Incoming)
        );
    }

    #[test]
    fn summaries_say_what_a_person_needs() {
        assert_eq!(summary(&UnitValue::Read { is_read: true }), "read");
        assert_eq!(summary(&UnitValue::FolderTombstone), "deleted");
        assert_eq!(
            summary(&UnitValue::Parent { parent_id: None }),
            "at the top"
        );
        let long = "x".repeat(100);
        assert_eq!(summary(&UnitValue::Name { name: long }).chars().count(), 62);
        assert_eq!(human_size(2048), "2.0 KiB");
    }
}
