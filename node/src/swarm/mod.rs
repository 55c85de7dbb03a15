//! The swarm: a libp2p node (TCP, noise, yamux, identify; QUIC beside TCP
//! when built with the `quic` feature) whose peers exchange verified chunks
//! over `libp2p-stream` substreams.
//!
//! - [`Swarm`] owns the libp2p event loop (one task) and is driven through
//!   a command channel; cloning it is shallow.
//! - `provider` answers requests from the store, with verified chunks only;
//!   `steer` and `told` decide what it shows each peer of a blob, and
//!   whether as the changes since its last answer to that peer.
//! - [`getter`] asks a peer and checks every chunk against the blob's root
//!   before it is written.
//!
//! Each request runs on its own stream of [`CHUNK_PROTOCOL`]: one request
//! frame, one response frame, then the stream is closed (dropping an open
//! yamux stream would reset it).
//!
//! [`Swarm::suspend`] closes every listener and connection (the node's
//! `suspend` calls it) and refuses new ones; [`Swarm::resume`] listens
//! again on the same addresses. Peers are found by dialing them (`--peer`),
//! when they dial in, by mDNS, or through the DHT ([`dht`]: Kademlia, used
//! when bootstrap peers are given); a download uses every connected peer
//! that has chunks it needs.

mod budget;
pub mod dht;
mod frame;
pub mod getter;
mod limits;
mod provider;
mod security;
mod steer;
mod tls;
mod told;
mod transport;
mod upload;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use libp2p::allow_block_list::{self, AllowedPeers};
use libp2p::core::transport::ListenerId;
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{PeerId, StreamProtocol, identify, mdns};
use p2pmodel_protocol::wire::WireError;
use p2pmodel_store::Store;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bandwidth::Bandwidth;

pub use libp2p::Multiaddr;
pub use security::{Encryption, HandshakeError, SecuritySetupError};
pub use tls::TlsSetupError;
pub use transport::{QUIC, RawStream, RawTransport, TransportFactory, is_quic};

/// The chunk exchange protocol (see `p2pmodel_protocol::wire`).
pub const CHUNK_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmodel/chunks/1");
/// How often the DHT checks that it still knows a peer (else it joins again).
const DHT_TICK: Duration = Duration::from_secs(5);
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
    /// The peer refused or answered something unusable.
    #[error("the peer refused: {0}")]
    Refused(String),
    /// The peer did not answer in time.
    #[error("the peer did not answer within {0:?}")]
    Timeout(Duration),
    /// The swarm's task has stopped.
    #[error("the swarm has stopped")]
    Stopped,
    /// Setting up the swarm failed.
    #[error("swarm setup: {0}")]
    Setup(String),
    /// A bootstrap address does not name its peer.
    #[error(
        "bootstrap address {0} does not end in /p2p/PEER_ID \
         (give an address as `p2pmodel daemon` prints it)"
    )]
    Bootstrap(Multiaddr),
    /// A QUIC address was given to a build without the `quic` feature.
    #[error(
        "{0} is a QUIC address, and this build has no QUIC: build p2pmodel \
         with `--features quic`, or use a TCP address (/ip4/HOST/tcp/PORT)"
    )]
    NoQuic(Multiaddr),
}

impl PeerError {
    /// True for failures that asking again may cure: the stream failed,
    /// could not be opened, or the answer was late (a busy peer, a
    /// connection closing); false when the peer answered wrongly or the
    /// request cannot be made.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Io(_) | Self::Open(_) | Self::Timeout(_))
    }
}

/// Refuses `addr` when it is a QUIC address and this build has no QUIC
/// (see [`QUIC`]); lets every other address through.
///
/// # Errors
/// [`PeerError::NoQuic`] for a QUIC address without the `quic` feature.
pub fn check_transport(addr: &Multiaddr) -> Result<(), PeerError> {
    if !QUIC && is_quic(addr) {
        return Err(PeerError::NoQuic(addr.clone()));
    }
    Ok(())
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    stream: libp2p_stream::Behaviour,
    identify: identify::Behaviour,
    limits: libp2p::connection_limits::Behaviour,
    /// LAN discovery, when asked for; dropped while suspended.
    mdns: Toggle<mdns::tokio::Behaviour>,
    /// The DHT (see [`dht`]).
    kad: kad::Behaviour<MemoryStore>,
    /// On while suspended: an allow list naming no peer refuses every
    /// connection, so that Kademlia's own dials open nothing.
    gate: Toggle<allow_block_list::Behaviour<AllowedPeers>>,
}

enum Command {
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, String>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    Suspend(oneshot::Sender<()>),
    Resume(oneshot::Sender<Result<(), String>>),
    Dht(dht::Command),
}

/// How a [`Swarm`] runs.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SwarmConfig {
    /// Addresses to listen on (none: only peers it dials reach it).
    pub listen: Vec<Multiaddr>,
    /// A budget for the bytes it serves to peers (`None`: unlimited).
    pub upload: Option<Bandwidth>,
    /// Finds peers on the local network by mDNS and connects to them.
    /// Multicasts on every interface of the machine (or of its network
    /// namespace).
    pub mdns: bool,
    /// The byte streams to run over instead of TCP (and QUIC): a simulated
    /// network, say; noise and yamux go on top as with TCP. It alone
    /// decides which addresses it speaks.
    pub transport: Option<TransportFactory>,
    /// Peers to join the DHT through, each address ending in
    /// `/p2p/PEER_ID`; none: the node does not use the DHT (when it
    /// listens, it still answers the queries of others).
    pub bootstrap: Vec<Multiaddr>,
    /// Longest a connection's handshake may take (libp2p's 10 s when
    /// `None`). The handshake's timer runs on the wall clock, so a
    /// simulation in virtual time sets it long.
    pub handshake_timeout: Option<Duration>,
    /// How connections over TCP (or a given transport) are encrypted:
    /// TLS 1.3 with AES-GCM first, noise accepted too, by default.
    pub encryption: Encryption,
}

impl SwarmConfig {
    /// Listens on `listen`.
    pub fn listen(listen: impl IntoIterator<Item = Multiaddr>) -> Self {
        Self {
            listen: listen.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Turns mDNS discovery on the local network on or off.
    pub fn with_mdns(mut self, mdns: bool) -> Self {
        self.mdns = mdns;
        self
    }

    /// Gives a connection's handshake up to `timeout`.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// Encrypts connections with `encryption`.
    pub fn with_encryption(mut self, encryption: Encryption) -> Self {
        self.encryption = encryption;
        self
    }

    /// Runs over the transport `make` builds instead of TCP.
    pub fn with_transport(mut self, make: TransportFactory) -> Self {
        self.transport = Some(make);
        self
    }

    /// Joins the DHT through these peers (addresses ending in
    /// `/p2p/PEER_ID`, as a daemon prints them): announces what the store
    /// holds and finds providers of what it fetches. [`Swarm::spawn`]
    /// refuses an address without a peer id.
    pub fn with_bootstrap(mut self, peers: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.bootstrap.extend(peers);
        self
    }

    /// Serves peers at most `bytes_per_second`, all peers together.
    pub fn with_upload_limit(mut self, bytes_per_second: u64) -> Self {
        self.upload = Some(Bandwidth::new(bytes_per_second));
        self
    }
}

/// A running libp2p node serving the store. Cloning is shallow.
#[derive(Clone)]
pub struct Swarm {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    /// It finds peers by mDNS.
    discovers: bool,
    /// It uses the DHT (it has bootstrap peers).
    dht: bool,
    /// It runs over the built-in transports (no transport was given), so
    /// QUIC addresses are refused unless built with QUIC.
    builtin: bool,
    /// Fired by [`Swarm::shutdown`].
    stop: CancellationToken,
    /// The event loop and the provider; awaited by [`Swarm::shutdown`].
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
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
    /// first use), serving the store's verified chunks, as `config` says.
    /// Call within a tokio runtime.
    ///
    /// # Errors
    /// [`PeerError::Setup`] when the identity or a listener cannot be set
    /// up; [`PeerError::Bootstrap`] for a bootstrap address without a peer
    /// id; [`PeerError::NoQuic`] for a QUIC address (to listen on or to
    /// bootstrap through) in a build without the `quic` feature.
    pub fn spawn(store: Store, config: SwarmConfig) -> Result<Self, PeerError> {
        let discovers = config.mdns;
        let builtin = config.transport.is_none();
        if builtin {
            for addr in config.listen.iter().chain(&config.bootstrap) {
                check_transport(addr)?;
            }
        }
        let bootstrap = dht::bootstrap_peers(&config.bootstrap)?;
        let listens = !config.listen.is_empty();
        let keypair = identity(store.root())?;
        let peer_id = keypair.public().to_peer_id();
        let setup = |e: &dyn std::fmt::Display| PeerError::Setup(e.to_string());
        let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|key| {
                transport::authenticated(key, config.transport.as_ref(), config.encryption)
            })
            .map_err(|e| setup(&e))?
            .with_behaviour(|key| {
                Ok(Behaviour {
                    stream: libp2p_stream::Behaviour::new(),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/p2pmodel/1".into(),
                        key.public(),
                    )),
                    limits: limits::connections(),
                    mdns: discovery(config.mdns, key.public().to_peer_id())?,
                    kad: dht::behaviour(key.public().to_peer_id(), listens),
                    gate: Toggle::from(None),
                })
            })
            .map_err(|e| setup(&e))?
            .with_swarm_config(|config| {
                config.with_idle_connection_timeout(Duration::from_secs(60))
            });
        let mut swarm = match config.handshake_timeout {
            Some(timeout) => swarm.with_connection_timeout(timeout),
            None => swarm,
        }
        .build();
        let mut listeners = Vec::new();
        for addr in config.listen {
            let id = swarm.listen_on(addr.clone()).map_err(|e| setup(&e))?;
            listeners.push((id, addr));
        }
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control.accept(CHUNK_PROTOCOL).map_err(|e| setup(&e))?;
        let stop = CancellationToken::new();
        let uses_dht = !bootstrap.is_empty();
        let dht = dht::Dht::start(&mut swarm, store.clone(), bootstrap, listens);
        let provider = tokio::spawn(provider::serve(
            store,
            incoming,
            config.upload,
            stop.clone(),
        ));
        let (commands, receiver) = mpsc::channel(16);
        let event_loop = tokio::spawn(
            EventLoop {
                swarm,
                listeners,
                closed: Vec::new(),
                dialing: HashMap::new(),
                dialed: HashMap::new(),
                suspended: None,
                mdns: config.mdns,
                dht,
            }
            .run(receiver, stop.clone()),
        );
        Ok(Self {
            peer_id,
            control,
            commands,
            discovers,
            dht: uses_dht,
            builtin,
            stop,
            tasks: Arc::new(Mutex::new(vec![event_loop, provider])),
        })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses it listens on, each ending in `/p2p/PEER_ID`.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (reply, answer) = oneshot::channel();
        if self.send(Command::ListenAddrs(reply)).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Connects to the peer at `addr` (ending in `/p2p/PEER_ID` or not);
    /// returns the peer's id once connected.
    ///
    /// # Errors
    /// [`PeerError::Open`] when the dial fails or the swarm is suspended;
    /// [`PeerError::NoQuic`] for a QUIC address in a build without the
    /// `quic` feature.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, PeerError> {
        if self.builtin {
            check_transport(&addr)?;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Dial(addr, reply)).await?;
        answer
            .await
            .map_err(|_| PeerError::Stopped)?
            .map_err(PeerError::Open)
    }

    /// True if and only if it finds peers on the local network by mDNS.
    pub fn discovers(&self) -> bool {
        self.discovers
    }

    /// The peers connected now, whoever dialed.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        let (reply, answer) = oneshot::channel();
        if self.send(Command::ConnectedPeers(reply)).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Closes every listener and connection; returns once none is left.
    /// Dials fail until [`Swarm::resume`]. Idempotent.
    pub async fn suspend(&self) {
        let (reply, answer) = oneshot::channel();
        if self.send(Command::Suspend(reply)).await.is_ok() {
            let _ = answer.await;
        }
    }

    /// Listens again on the addresses it had before [`Swarm::suspend`]
    /// (the same ports when they are free). Idempotent.
    ///
    /// # Errors
    /// [`PeerError::Setup`] when no listener can be opened again.
    pub async fn resume(&self) -> Result<(), PeerError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Resume(reply)).await?;
        answer
            .await
            .map_err(|_| PeerError::Stopped)?
            .map_err(PeerError::Setup)
    }

    /// Stops the swarm: closes every socket, waits for answers under way,
    /// and lets go of the store. Every clone stops working.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
    }

    async fn send(&self, command: Command) -> Result<(), PeerError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| PeerError::Stopped)
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
struct EventLoop {
    swarm: libp2p::Swarm<Behaviour>,
    /// Listeners open now, each with the address it was asked for; once
    /// bound, a port 0 in it is replaced by the port taken, so that
    /// `resume` listens on the same port again.
    listeners: Vec<(ListenerId, Multiaddr)>,
    /// The listeners' addresses while suspended, to listen on again.
    closed: Vec<Multiaddr>,
    dialing: HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<PeerId, String>>)>,
    /// Who answered at each address dialed, so that dialing it again while
    /// connected opens no second connection.
    dialed: HashMap<Multiaddr, PeerId>,
    /// While suspended: callers of `suspend` waiting for the last socket
    /// to close; `None` while active.
    suspended: Option<Vec<oneshot::Sender<()>>>,
    /// mDNS was asked for (it is off while suspended).
    mdns: bool,
    dht: dht::Dht,
}

impl EventLoop {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(DHT_TICK);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                command = commands.recv() => match command {
                    None => return,
                    Some(command) => self.command(command),
                },
                event = self.swarm.select_next_some() => self.event(event),
                _ = tick.tick() => if self.suspended.is_none() {
                    self.dht.tick(&mut self.swarm);
                },
            }
            self.answer_suspend();
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                let me = *self.swarm.local_peer_id();
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|a| a.clone().with(Protocol::P2p(me)))
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Dial(addr, reply) => self.dial(addr, reply),
            Command::Suspend(reply) => {
                if self.suspended.is_none() {
                    self.close_everything();
                }
                self.suspended.get_or_insert_with(Vec::new).push(reply);
            }
            Command::Resume(reply) => {
                let _ = reply.send(self.resume());
            }
            Command::Dht(command) => self.dht.command(&mut self.swarm, command),
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, String>>) {
        if self.suspended.is_some() {
            let _ = reply.send(Err("the node is suspended".into()));
            return;
        }
        let known = match addr.iter().last() {
            Some(Protocol::P2p(peer)) => Some(peer),
            _ => self.dialed.get(&addr).copied(),
        };
        if let Some(peer) = known.filter(|peer| self.swarm.is_connected(peer)) {
            let _ = reply.send(Ok(peer));
            return;
        }
        let opts = match addr.iter().last() {
            Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
            _ => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dialing.insert(id, (addr, reply));
            }
            Err(error) => {
                let _ = reply.send(Err(error.to_string()));
            }
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                if self.suspended.is_some() {
                    // Raced with `suspend`: nothing may stay open.
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                }
                if let Some((addr, reply)) = self.dialing.remove(&connection_id) {
                    self.dialed.insert(addr, peer_id);
                    let _ = reply.send(Ok(peer_id));
                }
                self.dht.connected(peer_id);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                peer_id,
            } => {
                if let Some((_, reply)) = self.dialing.remove(&connection_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
                if let Some(peer) = peer_id {
                    self.dht.dial_failed(peer);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => {
                self.dht.event(&mut self.swarm, event);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.dht.identified(&mut self.swarm, peer_id, &info),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if self.suspended.is_some() || self.swarm.is_connected(&peer) {
                        continue;
                    }
                    tracing::debug!(%peer, %addr, "found a peer on the local network");
                    let opts = DialOpts::peer_id(peer)
                        .addresses(vec![addr])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(error) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, %error, "cannot dial a peer found by mDNS");
                    }
                }
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!(%address, "listening");
                if let Some((_, asked)) =
                    self.listeners.iter_mut().find(|(id, _)| *id == listener_id)
                {
                    *asked = with_bound_port(asked, &address);
                }
            }
            _ => {}
        }
    }

    /// Removes every listener (remembering its address for `resume`) and
    /// closes every connection.
    fn close_everything(&mut self) {
        // Dropping the mDNS behaviour closes its sockets.
        self.swarm.behaviour_mut().mdns = Toggle::from(None);
        self.swarm.behaviour_mut().gate =
            Toggle::from(Some(allow_block_list::Behaviour::default()));
        for (id, addr) in std::mem::take(&mut self.listeners) {
            self.swarm.remove_listener(id);
            self.closed.push(addr);
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Answers the callers of `suspend` once no socket is left.
    fn answer_suspend(&mut self) {
        let Some(waiting) = &mut self.suspended else {
            return;
        };
        let idle = self.swarm.listeners().next().is_none()
            && self.swarm.connected_peers().next().is_none();
        if idle {
            for reply in waiting.drain(..) {
                let _ = reply.send(());
            }
        }
    }

    fn resume(&mut self) -> Result<(), String> {
        if self.suspended.take().is_none() {
            return Ok(());
        }
        let me = *self.swarm.local_peer_id();
        self.swarm.behaviour_mut().gate = Toggle::from(None);
        self.swarm.behaviour_mut().mdns =
            discovery(self.mdns, me).map_err(|e| format!("mDNS: {e}"))?;
        for addr in std::mem::take(&mut self.closed) {
            let id = self
                .swarm
                .listen_on(addr.clone())
                .map_err(|e| format!("{addr}: {e}"))?;
            self.listeners.push((id, addr));
        }
        self.dht.join(&mut self.swarm);
        Ok(())
    }
}

/// The mDNS behaviour when `on`, else a disabled one.
fn discovery(on: bool, me: PeerId) -> std::io::Result<Toggle<mdns::tokio::Behaviour>> {
    Ok(Toggle::from(if on {
        Some(mdns::tokio::Behaviour::new(mdns::Config::default(), me)?)
    } else {
        None
    }))
}

/// `asked` with its TCP or UDP (QUIC) port 0 replaced by the port of
/// `bound`; `asked` itself when it named a port.
fn with_bound_port(asked: &Multiaddr, bound: &Multiaddr) -> Multiaddr {
    let port = bound.iter().find_map(|p| match p {
        Protocol::Tcp(port) | Protocol::Udp(port) => Some(port),
        _ => None,
    });
    asked
        .iter()
        .map(|p| match (p, port) {
            (Protocol::Tcp(0), Some(port)) => Protocol::Tcp(port),
            (Protocol::Udp(0), Some(port)) => Protocol::Udp(port),
            (p, _) => p,
        })
        .collect()
}
