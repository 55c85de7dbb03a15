//! The byte streams under the swarm: TCP by default (with QUIC beside it
//! when built with the `quic` feature), or a transport the caller gives in
//! [`SwarmConfig`](super::SwarmConfig) (a simulated network, say).
//! Encryption ([`security`](super::security)) and yamux go on top of TCP
//! and of a given transport, so the rest of the swarm runs the same code
//! over both; QUIC brings its own encryption (TLS 1.3) and streams.

use std::fmt;
use std::sync::Arc;

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, tcp};

use super::limits;
use super::security::{Encryption, Secure};

/// True if and only if this build can listen on and dial QUIC addresses
/// (`/udp/PORT/quic-v1`): the crate was built with its `quic` feature.
pub const QUIC: bool = cfg!(feature = "quic");

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

/// True if and only if `addr` is a QUIC address (`quic-v1`, or the older
/// draft `quic`).
pub fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic))
}

/// The transport a swarm with identity `key` uses: `raw` (TCP when `None`)
/// with `encryption` and yamux on top; with the `quic` feature and no
/// `raw`, QUIC beside TCP.
pub(super) fn authenticated(
    key: &Keypair,
    raw: Option<&TransportFactory>,
    encryption: Encryption,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let (raw, builtin) = match raw {
        Some(factory) => ((factory.0)(), false),
        None => (
            tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .map(|stream, _| Box::new(stream) as Box<dyn RawStream>)
                .boxed(),
            true,
        ),
    };
    let secured = raw
        .upgrade(Version::V1Lazy)
        .authenticate(Secure::new(key, encryption)?)
        .multiplex(limits::yamux())
        .boxed();
    Ok(if builtin {
        with_quic(key, secured)
    } else {
        secured
    })
}

/// `tcp` or'ed with QUIC: each address goes to the transport that speaks it.
#[cfg(feature = "quic")]
fn with_quic(
    key: &Keypair,
    tcp: Boxed<(PeerId, StreamMuxerBox)>,
) -> Boxed<(PeerId, StreamMuxerBox)> {
    use futures::future::Either;
    use libp2p::quic;

    let quic = quic::tokio::Transport::new(quic::Config::new(key))
        .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)));
    tcp.or_transport(quic)
        .map(|either, _| match either {
            Either::Left(output) | Either::Right(output) => output,
        })
        .boxed()
}

/// Without the `quic` feature: `tcp` alone.
#[cfg(not(feature = "quic"))]
fn with_quic(
    _key: &Keypair,
    tcp: Boxed<(PeerId, StreamMuxerBox)>,
) -> Boxed<(PeerId, StreamMuxerBox)> {
    tcp
}
