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

    #[error("{path}: {context}: {source}{}", busy_hint(source))]
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
    /// Whether trying again later may succeed (the store was busy or locked by another writer).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

/// What "database is locked" means here: every connection of the product waits 10 s for a lock
/// (`busy_timeout`), so another writer held one longer than that.
fn busy_hint(source: &rusqlite::Error) -> &'static str {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            " (another connection held a write lock on the store for over 10 s; a later try may \
             succeed)"
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

    /// A lock held too long says so, and is retryable; other SQLite errors are as SQLite says.
    #[test]
    fn a_lock_held_too_long_says_what_it_means() {
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
            "b.db: cannot begin the import transaction: database or disk is full"
        );
        assert!(!full.is_retryable());
    }
}
