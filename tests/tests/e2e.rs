//! End-to-end tests: the real `p2pmodel` binary against real HTTP servers
//! on loopback, killed with real signals.
//!
//! Where new tests go: one module per user-facing topic.
//! - `crash`: SIGKILL and SIGINT in the middle of a fetch, then resume.
//! - `dht`: peers found through the DHT, joined through a bootstrap daemon.
//! - `cli`: the commands as a user types them.
//! - `control`: the daemon's queue and control API, and `fetch` as its client.
//! - `faults`: random kills, a full disk.
//! - `flood`: a seeding daemon under floods of streams and connections.
//! - `lan`: discovery by mDNS, inside network namespaces the test makes.
//! - `peers`: a seeding daemon and peers that fetch from it.

mod cli;
mod control;
mod crash;
mod dht;
mod faults;
mod flood;
mod lan;
mod peers;
mod util;
