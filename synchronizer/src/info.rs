//! `synchronizer info`: a store's replica id, knowledge, forgotten knowledge and counts.

use std::path::Path;

use serde::Serialize;
use shared::knowledge::{Knowledge, ReplicaId};
use shared::store::{Store, StoreCounts, StoreError};

#[derive(Debug, Serialize)]
pub struct StoreInfo {
    pub store: String,
    pub replica: ReplicaId,
    pub tick: u64,
    pub knowledge: Knowledge,
    pub forgotten_knowledge: Knowledge,
    #[serde(flatten)]
    pub counts: StoreCounts,
}

/// Reads the store's identity and counts; a path with no store is an error, and nothing is
/// created.
pub fn read(path: &Path) -> Result<StoreInfo, StoreError> {
    let store = Store::open_existing(path)?;
    Ok(StoreInfo {
        store: path.display().to_string(),
        replica: store.replica().clone(),
        tick: store.tick()?,
        knowledge: store.knowledge()?,
        forgotten_knowledge: store.forgotten_knowledge()?,
        counts: store.counts()?,
    })
}

/// The human form.
pub fn render(info: &StoreInfo) -> String {
    format!(
        "store:      {}\nreplica:    {}\ntick:       {}\nknowledge:  {}\nforgotten:  {}\nfolders:    {}\nmessages:   {}\ntombstones: {}\n",
        info.store,
        info.replica,
        info.tick,
        info.knowledge,
        info.forgotten_knowledge,
        info.counts.folders,
        info.counts.messages,
        info.counts.tombstones
    )
}
