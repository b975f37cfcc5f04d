use std::path::PathBuf;

use crate::KeyValue;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },

    #[error("key {key:?} not found")]
    NotFound { key: String },

    /// An optimistic-concurrency check failed; `current` is the value now stored, if any.
    #[error("conflict on key {key:?}: expected mod revision {expected}, found {}", found_revision(.current))]
    Conflict { key: String, expected: i64, current: Option<Box<KeyValue>> },

    /// The revision asked for is older than the oldest kept (API: 410 Gone).
    #[error("revision {requested} has been compacted; the oldest available revision is {compacted}")]
    Compacted { requested: i64, compacted: i64 },

    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision { requested: i64, current: i64 },

    #[error("invalid revision {0}")]
    InvalidRevision(i64),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("value for key {key:?} is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge { key: String, size: usize, limit: usize },

    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },

    /// The data file cannot be used; it is left exactly as found.
    #[error("data file {}: {message}", path.display())]
    DataFile { path: PathBuf, message: String },

    #[error("storage engine: {0}")]
    Engine(String),

    #[error("etcd: {0}")]
    Etcd(String),

    #[error("the store is closed")]
    Closed,
}

fn found_revision(current: &Option<Box<KeyValue>>) -> String {
    match current {
        Some(kv) => kv.mod_revision.to_string(),
        None => "no key".to_owned(),
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}

macro_rules! engine_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Engine(e.to_string())
            }
        }
    )*};
}
engine_errors!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);
