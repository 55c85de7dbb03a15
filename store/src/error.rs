//! Errors of the store: one enum per family of operations, and [`Error`]
//! over all of them.

use std::io;
use std::path::PathBuf;

use p2pmodel_protocol::{Hash, ManifestError, VerifyError};

/// Opening a store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another `Store` in this one) holds the store.
    #[error(
        "the store at {path} is in use by another p2pmodel process{}; wait for it to finish, or use another --store",
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse {
        /// The store folder.
        path: PathBuf,
        /// The process id that holds it, when it left one behind.
        pid: Option<u32>,
    },
    /// The store was written by an incompatible version of p2pmodel.
    #[error("the store at {path} has schema version {found}; this build reads version {expected}")]
    Schema {
        /// The store folder.
        path: PathBuf,
        /// Version found in the store.
        found: u64,
        /// Version this build reads and writes.
        expected: u64,
    },
    /// The folder or its database could not be created or read.
    #[error("cannot open the store at {path}")]
    Io {
        /// The store folder.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The database is damaged or unreadable.
    #[error("the store's database at {path} cannot be opened")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
}

/// Any error of a store operation after opening.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a data, outboard or temporary file failed
    /// (a full disk shows up here).
    #[error("{context}: {path}")]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The file involved.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The metadata database failed.
    #[error("store database: {0}")]
    Database(#[from] redb::Error),
    /// The store has no blob with this hash.
    #[error("blob {0} is not in the store")]
    NotFound(Hash),
    /// The bytes did not hash to what was expected. Nothing was published.
    #[error("content hashes to {actual}, expected {expected}")]
    HashMismatch {
        /// The hash that was asked for.
        expected: Hash,
        /// The hash of the bytes on disk.
        actual: Hash,
    },
    /// A partial was finished before every chunk was present.
    #[error("blob {key} is incomplete: {present} of {total} chunks")]
    Incomplete {
        /// The partial's key.
        key: String,
        /// Chunks present.
        present: u64,
        /// Chunks in the blob.
        total: u64,
    },
    /// Bytes failed verification against the blob's outboard.
    #[error("verification failed")]
    Verify(#[from] VerifyError),
    /// A manifest in the store or given to it is invalid.
    #[error("invalid manifest")]
    Manifest(#[from] ManifestError),
    /// A path given to the store cannot be used.
    #[error("{reason}: {path}")]
    BadPath {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A record in the database cannot be decoded: the store is damaged.
    #[error("damaged record in the store database ({0}); run `p2pmodel verify`")]
    Corrupt(String),
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(error: $t) -> Self {
                Error::Database(error.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Result of a store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
