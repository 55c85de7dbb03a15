//! The p2pmodel library node: gets blobs and models into a [`Store`],
//! verified, resumable and never half-written at their final path.
//!
//! - [`Node`] is what applications embed: one transfer per hash shared by
//!   every caller, pause or clear per caller, models as groups, and a
//!   suspend/resume lifecycle. Build one with [`NodeBuilder`].
//! - [`Fetcher`] is the step below: one blob or plain URL from HTTP mirrors
//!   and swarm peers into the store, reporting [`Progress`].
//! - [`download`] fills a partial blob from every mirror and peer at once:
//!   rarest pieces first, an endgame, sources that lie dropped.
//! - [`mirror`] holds the HTTP side: the client that copes with servers that
//!   ignore `Range`, truncate, redirect or change content, and a static
//!   mirror server.
//! - [`swarm`] holds the libp2p side: the provider that serves verified
//!   chunks, requests to peers, mDNS discovery, the DHT, limits.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use p2pmodel_node::{FetchRequest, NodeBuilder};
//!
//! let node = NodeBuilder::new("/tmp/p2pmodel-store").spawn()?;
//! let hash = "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f".parse()?;
//! let mirror = "http://127.0.0.1:8080/model.bin".parse()?;
//! let handle = node.fetch(FetchRequest::hash(hash).with_mirror(mirror))?;
//! let mut progress = handle.progress();
//! tokio::spawn(async move {
//!     while progress.changed().await.is_ok() {
//!         let now = progress.borrow().clone();
//!         eprintln!("{} of {} bytes", now.done, now.total);
//!     }
//! });
//! println!("{}", handle.await?.path().display());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod bandwidth;
pub mod download;
mod error;
mod fetch;
pub mod hf;
mod jitter;
pub mod mirror;
mod node;
mod progress;
pub mod swarm;

pub use bandwidth::Bandwidth;
pub use error::FetchError;
pub use fetch::{Fetched, Fetcher, FetcherConfig, HfFetched};
pub use node::{
    FetchHandle, FetchRequest, LifecycleState, Node, NodeBuilder, NodeError, RequestId,
    ResumeCheck, SpawnError,
};
pub use p2pmodel_store::Store;
pub use progress::{Phase, Progress, ProgressTracker, SourceProgress};
pub use tokio_util::sync::CancellationToken;
