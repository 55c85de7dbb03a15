//! The handshake that encrypts a connection and proves who the peer is:
//! TLS 1.3 ([`tls`](super::tls), AES-GCM first) offered first and noise
//! second, so that a peer that speaks only noise still connects; or noise
//! alone, when [`Encryption::Noise`] is chosen.

use std::io;

use futures::future::{BoxFuture, Either};
use futures::{AsyncRead, AsyncWrite, FutureExt, TryFutureExt};
use libp2p::PeerId;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::identity::Keypair;
use libp2p::noise;

use super::tls::{self, TlsConfigs, TlsSetupError};

/// How a swarm encrypts its connections (and learns who is at the other
/// end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encryption {
    /// TLS 1.3 with AES-GCM, offered first; noise is offered and accepted
    /// too, so peers that speak only noise still connect. AES-GCM costs a
    /// fraction of ChaCha20's CPU on processors with AES instructions.
    #[default]
    Tls,
    /// Noise only (ChaCha20-Poly1305), libp2p's usual choice.
    Noise,
}

/// The protocols the handshake can be, as negotiated by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Tls,
    Noise,
}

impl AsRef<str> for Protocol {
    fn as_ref(&self) -> &str {
        match self {
            Protocol::Tls => tls::PROTOCOL,
            Protocol::Noise => "/noise",
        }
    }
}

/// A connection's bytes after the handshake.
pub(super) type Secured<C> = Either<futures_rustls::TlsStream<C>, noise::Output<C>>;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The TLS handshake failed or the peer's certificate was refused.
    #[error("TLS handshake: {0}")]
    Tls(#[source] io::Error),
    /// The noise handshake failed.
    #[error("noise handshake: {0}")]
    Noise(#[from] noise::Error),
}

/// Why the handshake's settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SecuritySetupError {
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// Noise could not be set up.
    #[error("setting up noise: {0}")]
    Noise(#[from] noise::Error),
}

/// The connection upgrade of one node: TLS then noise, or noise alone.
#[derive(Clone)]
pub(super) struct Secure {
    tls: Option<TlsConfigs>,
    noise: noise::Config,
}

impl Secure {
    /// The upgrade of a node with identity `key`.
    pub(super) fn new(key: &Keypair, encryption: Encryption) -> Result<Self, SecuritySetupError> {
        let tls = match encryption {
            Encryption::Tls => Some(TlsConfigs::new(key)?),
            Encryption::Noise => None,
        };
        Ok(Self {
            tls,
            noise: noise::Config::new(key)?,
        })
    }
}

impl UpgradeInfo for Secure {
    type Info = Protocol;
    type InfoIter = std::vec::IntoIter<Protocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        match self.tls {
            Some(_) => vec![Protocol::Tls, Protocol::Noise],
            None => vec![Protocol::Noise],
        }
        .into_iter()
    }
}

impl<C> InboundConnectionUpgrade<C> for Secure
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Secured<C>);
    type Error = HandshakeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, protocol: Protocol) -> Self::Future {
        match (protocol, self.tls) {
            (Protocol::Tls, Some(tls)) => async move {
                let stream = futures_rustls::TlsAcceptor::from(tls.server)
                    .accept(socket)
                    .await
                    .map_err(HandshakeError::Tls)?;
                over_tls(stream.into())
            }
            .boxed(),
            _ => over_noise(self.noise.upgrade_inbound(socket, "/noise")),
        }
    }
}

impl<C> OutboundConnectionUpgrade<C> for Secure
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Secured<C>);
    type Error = HandshakeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, protocol: Protocol) -> Self::Future {
        match (protocol, self.tls) {
            (Protocol::Tls, Some(tls)) => async move {
                let stream = futures_rustls::TlsConnector::from(tls.client)
                    .connect(tls::no_server_name(), socket)
                    .await
                    .map_err(HandshakeError::Tls)?;
                over_tls(stream.into())
            }
            .boxed(),
            _ => over_noise(self.noise.upgrade_outbound(socket, "/noise")),
        }
    }
}

/// A finished TLS handshake's stream, with the peer its certificate names.
fn over_tls<C>(
    stream: futures_rustls::TlsStream<C>,
) -> Result<(PeerId, Secured<C>), HandshakeError> {
    let peer = tls::peer_id(stream.get_ref().1)
        .map_err(|error| HandshakeError::Tls(io::Error::new(io::ErrorKind::InvalidData, error)))?;
    Ok((peer, Either::Left(stream)))
}

/// A noise handshake, with its stream as a [`Secured`] one.
fn over_noise<C: Send + 'static>(
    handshake: impl Future<Output = Result<(PeerId, noise::Output<C>), noise::Error>> + Send + 'static,
) -> BoxFuture<'static, Result<(PeerId, Secured<C>), HandshakeError>> {
    handshake
        .map_ok(|(peer, output)| (peer, Either::Right(output)))
        .map_err(HandshakeError::Noise)
        .boxed()
}
