//! agent ↔ synchronizer: the agent asks for a session; the synchronizer runs it against the
//! destination's collector, reports progress after every acknowledged batch, and ends with a
//! completion message (seed 000) or a failure.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::knowledge::Knowledge;
use crate::model::Phase;
use crate::scope::Scope;
use crate::store::{ConflictRule, ItemError, ReportedConflict, Resolution};

/// agent → synchronizer: run one session from this store to the collector at `collector`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// The partnership, for logs.
    pub partnership: String,
    /// The destination collector's socket path.
    pub collector: PathBuf,
    /// The sync-state record the agent holds for this direction: the destination knowledge it
    /// last saw acknowledged. Only used to notice a destination that went back in time (a
    /// restored backup); the session always starts from what the destination really knows.
    pub state: Option<Knowledge>,
    /// Items per change batch.
    pub batch: u32,
    /// How the destination settles conflicts in this session.
    pub rule: ConflictRule,
    /// Operators' choices for conflicts deferred earlier (`agent resolve`), passed on to the
    /// collector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolutions: Vec<Resolution>,
    /// What the destination receives, if not everything: the partnership's `folders` and
    /// `bodies` (source to destination only; the destination's own changes all travel back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// synchronizer → agent: after every batch the collector acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub phase: Phase,
    pub stats: SessionStats,
    /// The destination's knowledge after the acknowledged batch: the new sync-state record.
    pub knowledge: Knowledge,
}

/// Counts of a session so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionStats {
    pub batches: u64,
    pub sent: u64,
    pub applied: u64,
    pub skipped: u64,
    pub conflicts: u64,
    pub errors: u64,
    pub bytes: u64,
}

/// synchronizer → agent: the session completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completed {
    pub stats: SessionStats,
    pub knowledge: Knowledge,
    pub conflicts: Vec<ReportedConflict>,
    pub errors: Vec<ItemError>,
    /// The destination knew less than the agent's record: it was restored from a backup or
    /// otherwise lost changes, and this session sent them again.
    pub destination_regressed: bool,
}

/// synchronizer → agent: the session stopped; batches acknowledged so far stay applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failed {
    pub reason: String,
    pub retryable: bool,
    pub stats: SessionStats,
}
