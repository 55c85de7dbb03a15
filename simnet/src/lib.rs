//! simnet: many real p2pmodel nodes in one process, over a simulated
//! network, in virtual time.
//!
//! - [`net`] is the network: per-host uplink and downlink rates, latency,
//!   loss, crashes; a libp2p transport over it, so each node runs the real
//!   swarm (noise, yamux, the chunk protocol, the downloader).
//! - [`scenario`] says what happens: how many nodes, their links, when they
//!   arrive, leave or crash, who lies; [`run`] plays it on a paused tokio
//!   clock and records when each node finished and what each link carried.
//! - [`report`] turns runs into JSON, a table and an SVG plot, beside the
//!   fluid lower bound of the time until every node has the blob.
#![deny(missing_docs)]

pub mod net;
pub mod origin;
pub mod report;
pub mod run;
pub mod scenario;
