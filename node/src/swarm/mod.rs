//! The swarm: a libp2p node (TCP, noise, yamux, identify) whose peers
//! exchange verified chunks over `libp2p-stream` substreams.
//!
//! - [`Swarm`] owns the libp2p event loop (one task) and is driven through
//!   a command channel; cloning it is shallow.
//! - [`provider`] answers requests from the store, with verified chunks only.
//! - [`getter`] asks a peer and checks every chunk against the blob's root
//!   before it is written.
//!
//! Each request runs on its own stream of [`CHUNK_PROTOCOL`]: one request
//! frame, one response frame, then the stream is closed (dropping an open
//! yamux stream would reset it).
//!
//! Not yet here: mDNS and Kademlia discovery, fetching from several peers
//! and mirrors at once, and closing listeners on `Node::suspend`.

mod frame;
pub mod getter;
mod provider;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, identify, noise, tcp, yamux};
use p2pmodel_protocol::wire::WireError;
use p2pmodel_store::Store;
use tokio::sync::{mpsc, oneshot};

/// The chunk exchange protocol (see `p2pmodel_protocol::wire`).
pub const CHUNK_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmodel/chunks/1");
/// File in the store folder holding the node's identity key.
const KEY_FILE: &str = "node.key";

/// Why talking to a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The stream failed or closed early.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a frame that is not valid.
    #[error("bad frame from peer: {0}")]
    Wire(#[from] WireError),
    /// No stream could be opened.
    #[error("cannot open a stream: {0}")]
    Open(String),
    /// The peer did not answer in time.
    #[error("the peer did not answer within {0:?}")]
    Timeout(Duration),
    /// The swarm's task has stopped.
    #[error("the swarm has stopped")]
    Stopped,
    /// Setting up the swarm failed.
    #[error("swarm setup: {0}")]
    Setup(String),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    stream: libp2p_stream::Behaviour,
    identify: identify::Behaviour,
}

enum Command {
    Dial(Multiaddr, PeerId, oneshot::Sender<Result<(), String>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
}

/// A running libp2p node serving the store. Cloning is shallow.
#[derive(Clone)]
pub struct Swarm {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl Swarm {
    /// Starts a node with the identity kept in the store folder (made on
    /// first use), listening on `listen`, serving the store's verified
    /// chunks. Call within a tokio runtime.
    ///
    /// # Errors
    /// [`PeerError::Setup`] when the identity or a listener cannot be set up.
    pub async fn spawn(store: Store, listen: &[Multiaddr]) -> Result<Self, PeerError> {
        let keypair = identity(store.root())?;
        let peer_id = keypair.public().to_peer_id();
        let setup = |e: &dyn std::fmt::Display| PeerError::Setup(e.to_string());
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_behaviour(|key| Behaviour {
                stream: libp2p_stream::Behaviour::new(),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/p2pmodel/1".into(),
                    key.public(),
                )),
            })
            .map_err(|e| setup(&e))?
            .with_swarm_config(|config| {
                config.with_idle_connection_timeout(Duration::from_secs(60))
            })
            .build();
        for addr in listen {
            swarm.listen_on(addr.clone()).map_err(|e| setup(&e))?;
        }
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control.accept(CHUNK_PROTOCOL).map_err(|e| setup(&e))?;
        tokio::spawn(provider::serve(store, incoming));
        let (commands, receiver) = mpsc::channel(16);
        tokio::spawn(run(swarm, receiver));
        Ok(Self {
            peer_id,
            control,
            commands,
        })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses it listens on, each ending in `/p2p/PEER_ID`.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::ListenAddrs(reply))
            .await
            .is_err()
        {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Connects to the peer at `addr`, which must end in `/p2p/PEER_ID`;
    /// returns that id once connected.
    ///
    /// # Errors
    /// [`PeerError::Open`] when the address has no peer id or the dial fails.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, PeerError> {
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            return Err(PeerError::Open(format!(
                "{addr} does not end in /p2p/PEER_ID"
            )));
        };
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Dial(addr, peer, reply))
            .await
            .map_err(|_| PeerError::Stopped)?;
        answer
            .await
            .map_err(|_| PeerError::Stopped)?
            .map_err(PeerError::Open)?;
        Ok(peer)
    }

    pub(crate) fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }
}

/// The node's key: read from the store folder, or made and saved
/// (owner-only) on first use, so the peer id survives restarts.
fn identity(root: &Path) -> Result<Keypair, PeerError> {
    let path = root.join(KEY_FILE);
    let setup = |e: &dyn std::fmt::Display| PeerError::Setup(format!("{}: {e}", path.display()));
    if let Ok(bytes) = std::fs::read(&path) {
        return Keypair::from_protobuf_encoding(&bytes).map_err(|e| setup(&e));
    }
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair.to_protobuf_encoding().map_err(|e| setup(&e))?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| setup(&e))?;
    file.write_all(&bytes).map_err(|e| setup(&e))?;
    Ok(keypair)
}

/// The event loop: owns the libp2p swarm, answers commands.
async fn run(mut swarm: libp2p::Swarm<Behaviour>, mut commands: mpsc::Receiver<Command>) {
    let mut dialing: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>> = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::ListenAddrs(reply)) => {
                    let me = *swarm.local_peer_id();
                    let addrs = swarm.listeners().map(|a| a.clone().with(Protocol::P2p(me))).collect();
                    let _ = reply.send(addrs);
                }
                Some(Command::Dial(addr, peer, reply)) => {
                    if swarm.is_connected(&peer) {
                        let _ = reply.send(Ok(()));
                    } else if let Err(error) = swarm.dial(addr) {
                        let _ = reply.send(Err(error.to_string()));
                    } else {
                        dialing.entry(peer).or_default().push(reply);
                    }
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    for reply in dialing.remove(&peer_id).unwrap_or_default() {
                        let _ = reply.send(Ok(()));
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer_id), error, .. } => {
                    for reply in dialing.remove(&peer_id).unwrap_or_default() {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
                SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening"),
                _ => {}
            },
        }
    }
}
