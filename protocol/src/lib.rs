//! The language p2pmodel nodes share: identifiers, chunks, verified ranges
//! and manifests. Pure: no sockets, no files, no clocks.
//!
//! - [`Hash`] names a blob by its BLAKE3 hash, printed as `b3sum` prints it.
//! - [`chunks`] cuts a blob into 16 KiB chunks and tracks them in a
//!   [`ChunkBitmap`].
//! - [`Outboard`] is a blob's hash tree; with it any run of chunks is
//!   checked on arrival ([`Outboard::verify_chunks`]), or sent with its
//!   proof ([`Outboard::encode_chunks`], [`decode_chunks`]).
//! - [`Manifest`] lists the files of a model; its hash names the model.
//! - [`wire`] is the chunk exchange between peers: requests, responses and
//!   their bounded framing.
//!
//! ```
//! use p2pmodel_protocol::{Hash, Outboard};
//!
//! let blob = vec![7u8; 100_000];
//! let outboard = Outboard::compute(&blob[..], blob.len() as u64).unwrap();
//! assert_eq!(outboard.hash(), Hash::of(&blob));
//! // Chunks 1 and 2 (16 KiB each) arrive from a mirror and are checked.
//! outboard.verify_chunks(1, &blob[16384..49152]).unwrap();
//! ```
#![deny(missing_docs)]

pub mod chunks;
mod hash;
pub mod manifest;
pub mod verified;
pub mod wire;

pub use chunks::{CHUNK_SIZE, ChunkBitmap};
pub use hash::{Hash, ParseHashError, Sha256};
pub use manifest::{Manifest, ManifestEntry, ManifestError};
pub use verified::{Outboard, VerifyError, decode_chunks};
