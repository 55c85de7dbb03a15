//! The p2pmodel daemon's control plane: a persistent download queue over a
//! [`Node`](p2pmodel_node::Node), the HTTP/JSON API that drives it, and a
//! client of that API.
//!
//! - [`Queue`] holds [`Job`]s (a target, a state, progress, timestamps) in
//!   the store folder (`jobs.json`), starts them in order on the node as
//!   slots free up, and survives `kill -9`: queued jobs keep their order
//!   and running ones start again, resuming their partials.
//! - [`api::router`] serves the queue over HTTP under `/v1`, every request
//!   authenticated with the bearer token of `STORE/control.token`;
//!   [`serve`] binds it (loopback unless told otherwise) and writes the
//!   token and address files. `openapi.json` in this crate describes it.
//! - [`Client`] is what the command line uses to talk to a daemon on the
//!   same store.
//! - [`decode_job_request`] turns an untrusted request body into a
//!   validated [`JobRequest`]; it is pure and fuzzed.
//!
//! Without the default `runtime` feature only the job types and the
//! request decoding are built (that is what the fuzz target uses).
#![deny(missing_docs)]

mod job;
mod request;

#[cfg(feature = "runtime")]
pub mod api;
#[cfg(feature = "runtime")]
mod client;
#[cfg(feature = "runtime")]
mod queue;
#[cfg(feature = "runtime")]
mod server;

pub use job::{Job, JobId, JobProgress, JobResult, JobSpec, JobState, Target};
pub use request::{
    JobRequest, Limits, MAX_BODY, RequestError, check_group, decode_job_request, decode_limits,
    decode_position,
};

#[cfg(feature = "runtime")]
pub use client::{Client, ClientError, JobEvents, Lifecycle};
#[cfg(feature = "runtime")]
pub use queue::{
    Counts, JOBS_FILE, KEEP_COMPLETED, PersistError, Queue, QueueConfig, QueueError, Snapshot,
};
#[cfg(feature = "runtime")]
pub use server::{ADDR_FILE, ControlServer, ServeError, ServerConfig, TOKEN_FILE, serve};
