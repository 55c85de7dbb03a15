//! The redb tables and the records kept in them.
//!
//! Every table name carries a version suffix; [`SCHEMA_VERSION`] in `meta-0`
//! names the whole layout and is checked on open. Records are postcard
//! encodings of the structs below, so adding a table is cheap and changing a
//! record means a new schema version.

use redb::TableDefinition;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};

/// Version of the table layout written by this build.
pub const SCHEMA_VERSION: u64 = 1;

/// `"schema"` -> [`SCHEMA_VERSION`].
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta-0");
/// Blob hash -> [`BlobRecord`], for complete, verified blobs.
pub const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs-0");
/// Partial key -> [`PartialRecord`], for blobs still arriving.
pub const PARTIALS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("partials-0");
/// Partial key -> chunk bitmap bytes (see `ChunkBitmap::as_bytes`).
pub const BITMAPS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("bitmaps-0");
/// Blob hash -> blob size: a checked outboard file exists (in `blobs/`
/// for a complete blob, in `partial/` otherwise).
pub const OUTBOARDS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("outboards-0");
/// Model hash -> canonical manifest encoding.
pub const MANIFESTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("manifests-0");
/// SHA-256 -> BLAKE3 of the same bytes.
pub const ALIASES: TableDefinition<&[u8; 32], &[u8; 32]> = TableDefinition::new("aliases-0");

/// A complete blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobRecord {
    /// Size in bytes.
    pub size: u64,
    /// When it was completed, in seconds since the Unix epoch.
    pub completed_at: u64,
}

/// How the chunks of a partial are known to be right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartialMode {
    /// Each chunk was checked against the outboard before it was recorded.
    Verified,
    /// No outboard was known: recorded chunks were received from `source`
    /// (whose content carried `validator`) and are only checked when the
    /// whole blob is hashed at the end.
    Unverified {
        /// The URL the bytes came from.
        source: String,
        /// The HTTP validator (strong ETag or Last-Modified) of that content.
        validator: Option<String>,
    },
}

/// A blob that is still arriving.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartialRecord {
    /// Size in bytes.
    pub size: u64,
    /// The hash the blob must have, when known (not for a plain URL).
    pub expected: Option<[u8; 32]>,
    /// How recorded chunks were checked.
    pub mode: PartialMode,
    /// Last time chunks were recorded, in seconds since the Unix epoch.
    pub touched_at: u64,
}

/// Encodes a record for a table value.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    postcard::to_stdvec(record).expect("encoding to memory cannot fail")
}

/// Decodes a record read from a table value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|error| Error::Corrupt(format!("{what}: {error}")))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Nanoseconds since the Unix epoch, for unique staging names.
pub fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos())
}
