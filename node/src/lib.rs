//! The p2pmodel library node: gets blobs and models into a [`Store`],
//! verified, resumable and never half-written at their final path.
//!
//! - [`Fetcher`] fetches a blob or a model by hash from HTTP mirrors, or a
//!   plain URL, into the store, and reports [`Progress`].
//! - [`mirror`] holds the HTTP side: the client that copes with servers that
//!   ignore `Range`, truncate, redirect or change content, and the download
//!   that fills a partial blob from several mirrors at once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use p2pmodel_node::{Fetcher, FetcherConfig, ProgressTracker};
//! use p2pmodel_store::Store;
//! use tokio_util::sync::CancellationToken;
//!
//! let store = Store::open("/tmp/p2pmodel-store")?;
//! let fetcher = Fetcher::new(store, FetcherConfig::default());
//! let hash = "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f".parse()?;
//! let mirrors = vec!["http://127.0.0.1:8080/model.bin".parse()?];
//! let progress = ProgressTracker::new();
//! let fetched = fetcher.fetch(hash, &mirrors, &progress, CancellationToken::new()).await?;
//! println!("{}", fetched.path().display());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod bandwidth;
mod error;
mod fetch;
pub mod mirror;
mod node;
mod progress;

pub use bandwidth::Bandwidth;
pub use error::FetchError;
pub use fetch::{Fetched, Fetcher, FetcherConfig};
pub use node::{
    FetchHandle, FetchRequest, LifecycleState, Node, NodeBuilder, NodeError, RequestId, ResumeCheck,
};
pub use p2pmodel_store::Store;
pub use progress::{Phase, Progress, ProgressTracker, SourceProgress};
pub use tokio_util::sync::CancellationToken;
