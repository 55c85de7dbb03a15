//! HTTP mirrors as a source of chunks.
//!
//! - [`client`]: one mirror over HTTP: probing size and validator, range
//!   requests with `If-Range`, sidecar outboards, retry classes.

pub mod client;
pub mod server;

pub use client::{Bearer, HttpConfig, MirrorClient, MirrorError, Probe};
