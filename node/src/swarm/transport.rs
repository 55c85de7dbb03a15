//! The byte streams under the swarm: TCP by default, or a transport the
//! caller gives in [`SwarmConfig`](super::SwarmConfig) (a simulated
//! network, say). Noise and yamux go on top either way, so the rest of the
//! swarm runs the same code over both.

use std::fmt;
use std::sync::Arc;

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::{PeerId, noise, tcp};

use super::limits;

/// A connection's bytes, before encryption and multiplexing.
pub trait RawStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> RawStream for T {}

/// A transport of plain byte streams, addressed by multiaddrs.
pub type RawTransport = Boxed<Box<dyn RawStream>>;

/// Makes the [`RawTransport`] a swarm runs over. Cloning is shallow.
#[derive(Clone)]
pub struct TransportFactory(Arc<dyn Fn() -> RawTransport + Send + Sync>);

impl TransportFactory {
    /// Wraps `make`, called once per swarm.
    pub fn new(make: impl Fn() -> RawTransport + Send + Sync + 'static) -> Self {
        Self(Arc::new(make))
    }
}

impl fmt::Debug for TransportFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransportFactory")
    }
}

/// The transport a swarm with identity `key` uses: `raw` (TCP when `None`)
/// with noise and yamux on top.
pub(super) fn authenticated(
    key: &Keypair,
    raw: Option<&TransportFactory>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let raw = match raw {
        Some(factory) => (factory.0)(),
        None => tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .map(|stream, _| Box::new(stream) as Box<dyn RawStream>)
            .boxed(),
    };
    Ok(raw
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(limits::yamux())
        .boxed())
}
