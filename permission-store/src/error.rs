//! Errors of the store, translated once into D-Bus names in `service`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Upstream's exact message for a missing id in Lookup, Delete,
    /// DeletePermission and GetPermission.
    #[error("No entry for {0}")]
    NoEntry(String),
    /// Upstream's exact message for a missing id in Set, SetValue and
    /// SetPermission with `create` false.
    #[error("Id {0} not found")]
    IdNotFound(String),
    /// Something our own methods were asked about is not there (an id, a
    /// grant, a permission), in words a person can act on; upstream's
    /// methods keep upstream's messages ([`StoreError::NoEntry`]).
    #[error("{0}")]
    NotFound(String),
    #[error("invalid table name {name:?}: {reason}")]
    BadTable { name: String, reason: &'static str },
    #[error("invalid data value: {0}")]
    BadData(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("the database {path} is corrupt ({reason}); it was moved aside to {moved_to}")]
    Corrupt {
        path: PathBuf,
        reason: String,
        moved_to: PathBuf,
    },
    #[error("the database {path} is corrupt ({reason}) and could not be moved aside: {error}")]
    CorruptStuck {
        path: PathBuf,
        reason: String,
        error: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the write could not be committed: {0}")]
    CommitFailed(String),
    #[error("the store's writer has stopped")]
    WriterGone,
    /// The caller of a write could not be identified, so the write was
    /// refused: the history never records a made-up author.
    #[error("the caller {} could not be identified: {reason}", sender.as_deref().unwrap_or("(no sender)"))]
    Unidentified {
        sender: Option<String>,
        reason: String,
    },
}

impl StoreError {
    /// Whether this is the "no such id" answer rather than a failure.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::NoEntry(_) | StoreError::IdNotFound(_) | StoreError::NotFound(_)
        )
    }
}
