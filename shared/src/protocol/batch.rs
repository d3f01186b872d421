//! synchronizer ↔ collector: the session's opening, then change batches each answered by a
//! success message only after the batch committed (seed 000, seed 003).

use serde::{Deserialize, Serialize};

use crate::knowledge::{Knowledge, ReplicaId};
use crate::model::{Change, LeftChange, Phase};
use crate::scope::Scope;
use crate::store::{
    ConflictRule, FullPosition, FullRange, ItemError, ReportedConflict, Resolution,
};

/// synchronizer → collector: a session begins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginSession {
    /// The source replica.
    pub source: ReplicaId,
    /// The source's knowledge when the session began: what conflict detection compares with.
    pub made_with: Knowledge,
    pub rule: ConflictRule,
    /// Operators' choices for conflicts deferred earlier; they override `rule` where they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolutions: Vec<Resolution>,
    /// A scoped session (filtered or header-only): the destination answers with its scoped
    /// knowledge of this source and applies batches as scoped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// collector → synchronizer: what the destination really knows (seed 004: "Ziel bereitet
/// Kenntnisse vor und sendet sie").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionReady {
    pub replica: ReplicaId,
    pub knowledge: Knowledge,
    pub forgotten: Knowledge,
    /// Where a full enumeration from this source stopped in an earlier session, if one did:
    /// the source continues there instead of starting over. Left out when there is none, so a
    /// synchronizer that never runs full enumerations still reads the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<FullPosition>,
    /// In a scoped session: what the destination knows of the source through this scope (what
    /// it was sent, and what it was told lies outside). The source enumerates against it and
    /// `knowledge` together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoped: Option<Knowledge>,
    /// The content versions of messages the destination holds without their body, when the
    /// session may send bodies: the source sends those messages again, bodies included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacks_bodies: Option<Knowledge>,
}

/// synchronizer → collector: one batch of changes (seed 001 GetChangeBatch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBatch {
    /// 1, 2, 3, … within the session.
    pub seq: u64,
    pub phase: Phase,
    /// The replica table the changes' versions index.
    pub replicas: Vec<ReplicaId>,
    /// Inside a frame, packed (`packed.rs`); a JSON array elsewhere, and read in either form.
    #[serde(
        serialize_with = "super::packed::serialize_changes",
        deserialize_with = "super::packed::deserialize_changes"
    )]
    pub changes: Vec<Change>,
    /// What the destination learns once every change is applied (seed 003): the source's
    /// knowledge projected onto the batch, or all of it with the last batch.
    pub learned: Knowledge,
    pub last: bool,
    /// Present on every batch of a full enumeration (seed 001): the id range the batch covers.
    /// The destination drops the items in that range the source knew and no longer has. Left
    /// out on incremental batches; a collector that does not know the field refuses the batch
    /// rather than apply it as incremental.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<FullRange>,
    /// Scoped sessions: items that left the scope; the destination stops holding them. Their
    /// versions index `replicas`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<LeftChange>,
}

/// collector → synchronizer: the success message for one batch, sent after its commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchApplied {
    pub seq: u64,
    pub applied: u64,
    pub skipped: u64,
    /// Items waiting in the queue for their parent.
    pub pending: u64,
    pub conflicts: Vec<ReportedConflict>,
    pub errors: Vec<ItemError>,
    /// The destination's whole knowledge after the commit.
    pub knowledge: Knowledge,
}
