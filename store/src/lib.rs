//! The on-disk store of p2pmodel: which blobs a node has, which chunks of
//! the ones still arriving are present, and the files themselves.
//!
//! - [`Store`] opens a store folder (one process at a time), imports files,
//!   lists, removes and exports blobs, and keeps manifests and aliases.
//! - [`Partial`] is a blob still arriving: chunks are written in place and
//!   recorded in batches after an fsync (see [`partial`] for the window a
//!   crash may lose). [`Partial::finish`] hashes the whole blob and only
//!   then publishes it under its hash.
//! - [`Store::verify`] rehashes everything and repairs the records;
//!   [`Store::gc`] removes abandoned partials and staging files.
//!
//! Metadata lives in redb ([`tables`]); data and outboards in plain files.
#![deny(missing_docs)]

mod error;
mod maintenance;
pub mod partial;
mod store;
pub mod tables;

pub use error::{Error, OpenError, Result};
pub use maintenance::{GcReport, VerifyReport};
pub use partial::{Partial, PartialKey, Readable};
pub use store::{BlobInfo, BlobState, ExportMethod, MIRROR_MANIFEST, Store};
pub use tables::PartialMode;
