//! The persistent download queue: [`Queue`] over a node, saved in
//! `STORE/jobs.json`. Start reading at [`manager`].

mod error;
mod manager;
mod persist;
mod runner;
mod state;

pub use error::QueueError;
pub use manager::{Counts, KEEP_COMPLETED, Queue, QueueConfig, Snapshot};
pub use persist::{JOBS_FILE, PersistError};
