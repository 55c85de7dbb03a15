//! Hugging Face names: `hf://ORG/REPO[@REV][:QUANT][/PATH]`.
//!
//! A fetch resolves the revision to a commit, lists the files at that
//! commit with the tree API ([`Hub`]), keeps those the name selects
//! ([`select`]: a path, include globs, and for GGUF repositories one
//! quantization with all its shards, see [`QUANT_PREFERENCE`]), and fetches
//! each from its `resolve` URL (which usually redirects to a CDN). An LFS
//! file's SHA-256 is checked before it is published and recorded as its
//! alias, so the next fetch of the same file needs no network. `HF_ENDPOINT`
//! replaces the Hub's address and `HF_TOKEN` is sent as a bearer token to
//! that endpoint only, never to the host a redirect leads to. A [`Hub`] with
//! a cache folder also writes each fetched snapshot into the Hugging Face
//! cache layout ([`cache`]).
//!
//! Start with [`HfRef`] (what is asked) and [`select`] (what is taken).

pub use cache::{CacheError, Snapshot, SnapshotFile};
pub use hub::{Commit, DEFAULT_ENDPOINT, Hub, HubError, HubFile, Listing};
pub use name::HfRef;
pub use quant::{BadQuant, QUANT_PREFERENCE, Quant, Shard};
pub use select::SelectError;

pub mod cache;
mod hub;
mod name;
mod quant;
pub mod select;
