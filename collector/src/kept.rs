//! The collector's connection to its store, kept from one session to the next.
//!
//! A connection per session started every session with a cold page cache, so each of its
//! lookups read the upper levels of the store's B-trees again; and its close was the store's
//! last connection closing, which copies the whole WAL into the database right after the
//! session, while the next one waits for the collector's one thread. A kept connection keeps
//! those pages cached (the collector's own commits do not invalidate its cache) and leaves
//! checkpoints to `wal_autocheckpoint`; the daemon's stop closes it, which checkpoints.
//!
//! Sessions at once: the first takes the kept connection, any other opens its own, and at the
//! end one connection is kept and the others closed. A store file that was replaced or removed
//! since (a restore from a backup) is told by its device and inode and opened anew, so a kept
//! connection never writes into a file that is no longer at the store's path. A file
//! overwritten in place keeps its inode and cannot be told: stop the collector before restoring
//! a store (README, "Restoring a store from a backup").

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use shared::store::{Store, StoreError, IMPORT_PAGE_CACHE_MIB};

/// Which file a connection was opened on: (device, inode).
type FileId = (u64, u64);

/// The store at one path and the connection kept for it between sessions.
#[derive(Debug)]
pub struct KeptStore {
    path: PathBuf,
    slot: Mutex<Option<Lease>>,
}

/// A connection a session holds, and the file it was opened on.
#[derive(Debug)]
pub struct Lease {
    pub store: Store,
    file: Option<FileId>,
}

impl KeptStore {
    pub fn new(path: PathBuf) -> Self {
        KeptStore {
            path,
            slot: Mutex::new(None),
        }
    }

    /// The kept connection if it is still on the file at the path, else a new one.
    pub fn take(&self) -> Result<Lease, StoreError> {
        let kept = self
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(lease) = kept {
            if lease.file.is_some() && lease.file == file_id(&self.path) {
                return Ok(lease);
            }
            // The file at the path is another one now. Closing the old connection would end
            // with SQLite deleting `<path>-wal` and `<path>-shm` by name, which may by now be
            // the new store's, so it is left open instead (its file handles point at the
            // replaced file only): a leak of one connection (and its idle checkpointer thread)
            // per replacement, never a lost WAL.
            std::mem::forget(lease);
        }
        let mut store = Store::open(&self.path)?;
        store.set_page_cache_mib(IMPORT_PAGE_CACHE_MIB)?;
        store.checkpoint_in_background()?;
        Ok(Lease {
            store,
            file: file_id(&self.path),
        })
    }

    /// Keeps `lease` for the next session, unless a connection is kept already.
    pub fn give_back(&self, lease: Lease) {
        let mut slot = self
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(lease);
        }
    }
}

fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_kept_connection_is_reused_until_the_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let kept = KeptStore::new(path.clone());
        let first = kept.take().unwrap();
        let replica = first.store.replica().clone();
        kept.give_back(first);
        let again = kept.take().unwrap();
        assert_eq!(again.store.replica(), &replica, "the same store");
        assert!(again.file.is_some());
        let file = again.file;
        kept.give_back(again);

        // A second session at once gets its own connection; only one is kept afterwards.
        let a = kept.take().unwrap();
        let b = kept.take().unwrap();
        assert_eq!(a.file, file);
        kept.give_back(a);
        kept.give_back(b);

        // The store is replaced by another file (a restore): a new connection on the new file.
        let other = dir.path().join("other.db");
        drop(Store::open(&other).unwrap());
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        std::fs::rename(&other, &path).unwrap();
        let fresh = kept.take().unwrap();
        assert_ne!(fresh.file, file, "opened on the new file");
        assert_ne!(
            fresh.store.replica(),
            &replica,
            "the restored store's identity"
        );
    }
}
