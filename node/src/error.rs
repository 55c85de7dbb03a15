//! [`FetchError`]: why a fetch did not produce a verified blob or model.

use p2pmodel_protocol::{Hash, ManifestError, Sha256};

use crate::download::DownloadError;
use crate::mirror::MirrorError;

/// Why a fetch ended without its blob or model. Whatever was verified
/// before the error stays in the store, and the next fetch resumes it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The caller cancelled (a pause: the partial stays).
    #[error("cancelled; the partial download is kept and the next fetch resumes it")]
    Cancelled,
    /// The store lacks the blob, no mirror was given and no connected
    /// peer (or provider the DHT named) holds it.
    #[error(
        "{0} is not in the store, no mirror was given and no connected peer has it \
         (pass --mirror URL, --peer ADDRESS or --bootstrap ADDRESS)"
    )]
    NoSource(Hash),
    /// Every source failed; one line per source.
    #[error("no source could deliver the data:\n  {}", .0.join("\n  "))]
    Sources(Vec<String>),
    /// The content changed on the server again and again during the download.
    #[error("gave up: the file kept changing on the server")]
    Changed(#[source] MirrorError),
    /// A source served bytes whose BLAKE3 is not the one asked for.
    #[error("{source_url} serves content with hash {actual}, not {expected}; nothing was saved")]
    Mismatch {
        /// The source.
        source_url: String,
        /// The hash asked for.
        expected: Hash,
        /// The hash of what it served.
        actual: Hash,
    },
    /// A URL's content does not have the SHA-256 it was given.
    #[error("{url} serves content with SHA-256 {actual}, not {expected}; nothing was saved")]
    Sha256Mismatch {
        /// The URL.
        url: String,
        /// The SHA-256 given.
        expected: Sha256,
        /// The SHA-256 of the content.
        actual: Sha256,
    },
    /// The DHT's record said `sha256` names the blob `hash`, but that
    /// blob's SHA-256 is another: the record is wrong (a broken or lying
    /// peer). The blob was not kept under the alias.
    #[error(
        "the DHT says SHA-256 {sha256} is blob {hash}, but that blob's SHA-256 is {actual}: \
         a peer published a wrong record; nothing was kept for it"
    )]
    AliasMismatch {
        /// The SHA-256 asked for.
        sha256: Sha256,
        /// The blob the record named.
        hash: Hash,
        /// The SHA-256 of that blob.
        actual: Sha256,
    },
    /// A mirror URL that cannot be used.
    #[error("invalid mirror URL {0:?}")]
    BadUrl(String),
    /// The Hugging Face Hub could not list what was asked for.
    #[error(transparent)]
    Hub(#[from] crate::hf::HubError),
    /// A model's manifest is invalid.
    #[error("invalid model manifest")]
    Manifest(#[from] ManifestError),
    /// The store failed (a full disk shows up here).
    #[error(transparent)]
    Store(#[from] p2pmodel_store::Error),
}

impl From<DownloadError> for FetchError {
    fn from(error: DownloadError) -> Self {
        match error {
            DownloadError::Cancelled => FetchError::Cancelled,
            DownloadError::NoSourceLeft(lines) => FetchError::Sources(lines),
            DownloadError::Changed(error) => FetchError::Changed(error),
            DownloadError::Store(error) => FetchError::Store(error),
        }
    }
}
