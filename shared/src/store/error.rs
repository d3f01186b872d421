//! Errors of the information store.

use std::path::PathBuf;

/// What can go wrong with an information store. Every message names the store's path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: not an icsync store (it is {what}); refusing to touch it")]
    NotAStore { path: PathBuf, what: String },

    #[error(
        "{path}: no store here; nothing was created (a synchronizer or collector serving this \
         path creates it)"
    )]
    NoStore { path: PathBuf },

    #[error("{path}: cannot create the store: directory {dir} does not exist")]
    NoDirectory { path: PathBuf, dir: PathBuf },

    #[error(
        "{path}: store schema version {found} is newer than this build understands ({supported}); \
         upgrade icsync"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error("{path}: {context}: {source}{}", sqlite_hint(source))]
    Sqlite {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{path}: cannot start the background checkpointer: {source}")]
    Checkpointer {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: corrupt sync metadata: {what}")]
    Corrupt { path: PathBuf, what: String },
}

impl StoreError {
    /// Whether trying again later may succeed: the store was busy or locked by another writer,
    /// or its disk was full (space may be freed; `agent run` retries with backoff).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                )
            ),
            _ => false,
        }
    }
}

/// What SQLite's two errors an operator meets most mean here. "database is locked": every
/// connection of the product waits 10 s for a lock (`busy_timeout`), so another writer held one
/// longer than that. "database or disk is full": the transaction rolled back whole, so what was
/// committed before it stays, and the next session resumes from there.
fn sqlite_hint(source: &rusqlite::Error) -> &'static str {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            " (another connection held a write lock on the store for over 10 s; a later try may \
             succeed)"
        }
        Some(rusqlite::ErrorCode::DiskFull) => {
            " (free space on the disk that holds the store; what was committed stays, and the \
             next session resumes from there)"
        }
        _ => "",
    }
}

/// Attaches the store's path and what was being done to a rusqlite error.
pub(crate) trait SqlContext<T> {
    fn ctx(self, path: &std::path::Path, context: &'static str) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, path: &std::path::Path, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            context,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: i32, message: &str) -> StoreError {
        StoreError::Sqlite {
            path: "b.db".into(),
            context: "cannot begin the import transaction",
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                Some(message.into()),
            ),
        }
    }

    /// A lock held too long and a full disk say what they mean; other SQLite errors are as
    /// SQLite says them.
    #[test]
    fn a_lock_held_too_long_and_a_full_disk_say_what_they_mean() {
        let busy = sqlite(rusqlite::ffi::SQLITE_BUSY, "database is locked");
        assert_eq!(
            busy.to_string(),
            "b.db: cannot begin the import transaction: database is locked (another connection \
             held a write lock on the store for over 10 s; a later try may succeed)"
        );
        assert!(busy.is_retryable());
        let full = sqlite(rusqlite::ffi::SQLITE_FULL, "database or disk is full");
        assert_eq!(
            full.to_string(),
            "b.db: cannot begin the import transaction: database or disk is full (free space on \
             the disk that holds the store; what was committed stays, and the next session \
             resumes from there)"
        );
        assert!(full.is_retryable());
        let corrupt = sqlite(
            rusqlite::ffi::SQLITE_CORRUPT,
            "database disk image is malformed",
        );
        assert_eq!(
            corrupt.to_string(),
            "b.db: cannot begin the import transaction: database disk image is malformed"
        );
        assert!(!corrupt.is_retryable());
    }
}
