//! How many connections and streams the swarm accepts from peers, who are
//! untrusted: bounds that keep a flood of connections or streams from
//! using up the node's descriptors and memory.
//!
//! Each connection may carry [`STREAMS_PER_CONNECTION`] streams at once
//! (a download opens a handful per peer); yamux buffers at most 256 KiB
//! per stream, so unread bytes stay under 32 MiB per connection. Beyond
//! the connection limits below, new connections are closed as soon as
//! they arrive; the provider bounds what answers use
//! ([`budget`](super::budget)).

use libp2p::{connection_limits, yamux};

/// Streams open at once on one connection, both directions.
const STREAMS_PER_CONNECTION: usize = 128;
/// Incoming connections still in their handshake.
const PENDING_INCOMING: u32 = 64;
/// Incoming connections established, all peers together.
const ESTABLISHED_INCOMING: u32 = 256;
/// Connections to or from one peer.
const ESTABLISHED_PER_PEER: u32 = 4;

/// The behaviour that refuses connections beyond the limits.
pub(super) fn connections() -> connection_limits::Behaviour {
    connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(PENDING_INCOMING))
            .with_max_established_incoming(Some(ESTABLISHED_INCOMING))
            .with_max_established_per_peer(Some(ESTABLISHED_PER_PEER)),
    )
}

/// The yamux settings of every connection.
pub(super) fn yamux() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(STREAMS_PER_CONNECTION);
    config
}
