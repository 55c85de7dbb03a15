//! HTTP mirrors as a source of chunks.
//!
//! - [`client`]: one mirror over HTTP: probing size and validator, range
//!   requests with `If-Range`, sidecar outboards, retry classes.
//! - [`download`]: fills the missing chunks of a partial from several
//!   mirrors at once, verifying each chunk when the outboard is known.

pub mod client;
pub mod download;
pub mod server;

pub use client::{Bearer, HttpConfig, MirrorClient, MirrorError, Probe};
pub use download::{Download, DownloadConfig, DownloadError, MirrorSource};
