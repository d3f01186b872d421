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

    #[error("{path}: {context}: {source}")]
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
