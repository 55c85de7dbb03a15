//! A hostile peer: a real libp2p node on loopback (TCP, noise, yamux) that
//! speaks the chunk protocol and misbehaves in one chosen way.
//!
//! [`HostilePeer::serving`] holds a blob and answers every request as its
//! [`Misbehaviour`] says; it works out the honest answer first (with
//! `Outboard::compute(..).encode_chunks(..)`) and then spoils it, so each
//! fault is exactly one lie. [`HostilePeer::client`] serves nothing and is
//! used to flood another node: many streams whose answers it never reads
//! ([`HostilePeer::flood`]), or many connections ([`HostilePeer::dial_many`]).

use std::collections::VecDeque;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol, noise, tcp, yamux};
use p2pmodel_protocol::chunks::{CHUNK_SIZE, chunk_count};
use p2pmodel_protocol::wire::{
    self, MAX_FRAME, Refusal, Request, Response, decode_frame, encode_frame, frame_len,
};
use p2pmodel_protocol::{ChunkBitmap, Outboard};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The chunk protocol, as the node names it.
const CHUNK_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmodel/chunks/1");

/// How a [`HostilePeer`] answers `Get`. `Have` and `GetOutboard` are
/// answered truthfully (so that it looks like a useful peer) except where
/// a variant says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// The right encoding with one byte of chunk data flipped (the last).
    FlipByte,
    /// The right encoding under a size one chunk larger than the blob's.
    WrongSize,
    /// Every answer (`Have`, `GetOutboard`, `Get`) names a size one chunk
    /// larger, with a bitmap to match: a peer lying about the blob itself.
    LiesAboutSize,
    /// A valid encoding of the same chunks of another blob of the same size.
    OtherBlob,
    /// Claims every chunk in `Have` but refuses every `Get` as not found.
    RefuseGet,
    /// Never answers a `Get`: holds the stream open in silence.
    Silent,
    /// Sends the right answer one byte every 50 ms.
    Trickle,
    /// Answers with a length prefix above `MAX_FRAME`, then nothing.
    Oversized,
    /// Announces a frame of exactly `MAX_FRAME` bytes, then sends junk
    /// for as long as the stream stays open.
    Endless,
    /// Not a lie: drops every `GetOutboard` stream during its first
    /// [`OUTBOARD_LATE`], as a seed swamped by a crowd might, and answers
    /// everything else honestly.
    OutboardLate,
}

/// How long a [`Misbehaviour::OutboardLate`] peer keeps its outboard.
pub const OUTBOARD_LATE: Duration = Duration::from_secs(6);

impl std::str::FromStr for Misbehaviour {
    type Err = String;

    /// A variant by its name in kebab case: `flip-byte`, `wrong-size`,
    /// `lies-about-size`, `other-blob`, `refuse-get`, `silent`, `trickle`,
    /// `oversized`, `endless`, `outboard-late`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name {
            "flip-byte" => Self::FlipByte,
            "wrong-size" => Self::WrongSize,
            "lies-about-size" => Self::LiesAboutSize,
            "other-blob" => Self::OtherBlob,
            "refuse-get" => Self::RefuseGet,
            "silent" => Self::Silent,
            "trickle" => Self::Trickle,
            "oversized" => Self::Oversized,
            "endless" => Self::Endless,
            "outboard-late" => Self::OutboardLate,
            other => return Err(format!("no misbehaviour is called {other:?}")),
        })
    }
}

/// A hostile libp2p peer on 127.0.0.1. Dropping it stops it.
pub struct HostilePeer {
    peer_id: PeerId,
    addr: Multiaddr,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Dial>,
    tasks: Vec<JoinHandle<()>>,
}

/// What [`HostilePeer::flood`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flood {
    /// Streams opened and sent a request.
    pub sent: usize,
    /// Streams that could not be opened (refused or reset at once).
    pub failed: usize,
}

/// A dial, and where to say how it ended.
struct Dial {
    addr: Multiaddr,
    reply: oneshot::Sender<Result<PeerId, String>>,
}

/// The blob a serving peer holds, and its honest answers' ingredients.
struct Held {
    data: Vec<u8>,
    outboard: Outboard,
    /// A blob of the same size with other bytes (for [`Misbehaviour::OtherBlob`]).
    other: Option<(Vec<u8>, Outboard)>,
    misbehaviour: Misbehaviour,
    /// When it started serving.
    started: std::time::Instant,
}

impl HostilePeer {
    /// A peer holding `data` that answers requests for its hash as
    /// `misbehaviour` says (and refuses requests for any other hash).
    pub async fn serving(data: &[u8], misbehaviour: Misbehaviour) -> Self {
        let outboard = Outboard::compute(data, data.len() as u64).expect("outboard of memory");
        let other = (misbehaviour == Misbehaviour::OtherBlob).then(|| {
            let other: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
            let outboard = Outboard::compute(&other[..], other.len() as u64).expect("outboard");
            (other, outboard)
        });
        let held = std::sync::Arc::new(Held {
            data: data.to_vec(),
            outboard,
            other,
            misbehaviour,
            started: std::time::Instant::now(),
        });
        Self::start(Some(held)).await
    }

    /// A peer that serves nothing: a client to flood other nodes with.
    pub async fn client() -> Self {
        Self::start(None).await
    }

    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Its address, ending in `/p2p/PEER_ID`.
    pub fn addr(&self) -> Multiaddr {
        self.addr.clone()
    }

    /// Connects to the node at `addr`; returns its peer id.
    ///
    /// # Panics
    /// When the dial fails.
    pub async fn dial(&self, addr: &Multiaddr) -> PeerId {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Dial {
                addr: addr.clone(),
                reply,
            })
            .await
            .expect("the hostile peer runs");
        answer
            .await
            .expect("the hostile peer answers")
            .expect("the dial succeeds")
    }

    /// Dials `addr` `count` times more, each a new connection (the same
    /// peer id); returns how many were established by the time each dial
    /// ended (a node that refuses a connection may close it just after).
    pub async fn dial_many(&self, addr: &Multiaddr, count: usize) -> usize {
        let dials = (0..count).map(|_| async {
            let (reply, answer) = oneshot::channel();
            let dial = Dial {
                addr: addr.clone(),
                reply,
            };
            self.commands.send(dial).await.is_ok() && matches!(answer.await, Ok(Ok(_)))
        });
        futures::future::join_all(dials)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// Opens `streams` streams to `peer` one after the other, writes
    /// `request` on each and never reads an answer; keeps the last
    /// `held` of them open (older ones are dropped, which resets them).
    pub async fn flood(
        &self,
        peer: PeerId,
        request: &Request,
        streams: usize,
        held: usize,
    ) -> Flood {
        let frame = encode_frame(request);
        let mut control = self.control.clone();
        let mut open: VecDeque<Stream> = VecDeque::with_capacity(held + 1);
        let mut flood = Flood::default();
        for _ in 0..streams {
            let opened = tokio::time::timeout(
                Duration::from_secs(10),
                control.open_stream(peer, CHUNK_PROTOCOL),
            )
            .await;
            let Ok(Ok(mut stream)) = opened else {
                flood.failed += 1;
                continue;
            };
            if stream.write_all(&frame).await.is_err() || stream.flush().await.is_err() {
                flood.failed += 1;
                continue;
            }
            flood.sent += 1;
            open.push_back(stream);
            if open.len() > held {
                open.pop_front();
            }
        }
        flood
    }

    async fn start(held: Option<std::sync::Arc<Held>>) -> Self {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let peer_id = *swarm.local_peer_id();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("address"))
            .expect("listens on loopback");
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address.with(Protocol::P2p(peer_id));
            }
        };
        let mut control = swarm.behaviour().new_control();
        let mut incoming = control.accept(CHUNK_PROTOCOL).expect("first accept");
        let (commands, receiver) = mpsc::channel(64);
        let mut tasks = vec![tokio::spawn(drive(swarm, receiver))];
        if let Some(held) = held {
            tasks.push(tokio::spawn(async move {
                while let Some((_, stream)) = incoming.next().await {
                    tokio::spawn(answer(std::sync::Arc::clone(&held), stream));
                }
            }));
        }
        Self {
            peer_id,
            addr,
            control,
            commands,
            tasks,
        }
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Polls the swarm and runs dials until the peer is dropped.
async fn drive(
    mut swarm: libp2p::Swarm<libp2p_stream::Behaviour>,
    mut dials: mpsc::Receiver<Dial>,
) {
    let mut pending: std::collections::HashMap<ConnectionId, oneshot::Sender<_>> =
        std::collections::HashMap::new();
    loop {
        tokio::select! {
            dial = dials.recv() => {
                let Some(Dial { addr, reply }) = dial else { return };
                let opts = match addr.iter().last() {
                    Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer)
                        .addresses(vec![addr])
                        .condition(PeerCondition::Always)
                        .build(),
                    _ => DialOpts::unknown_peer_id().address(addr).build(),
                };
                let id = opts.connection_id();
                match swarm.dial(opts) {
                    Ok(()) => { pending.insert(id, reply); }
                    Err(error) => { let _ = reply.send(Err(error.to_string())); }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, .. } => {
                    if let Some(reply) = pending.remove(&connection_id) {
                        let _ = reply.send(Ok(peer_id));
                    }
                }
                SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                    if let Some(reply) = pending.remove(&connection_id) {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
                _ => {}
            },
        }
    }
}

/// Reads one request from `stream` and answers it as `held` misbehaves.
async fn answer(held: std::sync::Arc<Held>, mut stream: Stream) {
    let mut buffer = Vec::new();
    let request = loop {
        let mut byte = [0u8; 256];
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&byte[..n]),
        }
        match decode_frame::<Request>(&buffer) {
            Ok(Some((request, _))) => break request,
            Ok(None) => continue,
            Err(_) => return,
        }
    };
    let honest = held.honest(&request);
    let bytes = match (held.misbehaviour, &request) {
        (Misbehaviour::Silent, Request::Get { .. }) => {
            // Holds the stream until the other side gives up.
            let mut sink = [0u8; 64];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        (Misbehaviour::Oversized, Request::Get { .. }) => {
            let too_long = u32::try_from(MAX_FRAME + 1).expect("fits");
            too_long.to_be_bytes().to_vec()
        }
        (Misbehaviour::OutboardLate, Request::GetOutboard { .. })
            if held.started.elapsed() < OUTBOARD_LATE =>
        {
            return;
        }
        (Misbehaviour::Endless, Request::Get { .. }) => {
            let max = u32::try_from(MAX_FRAME).expect("fits");
            debug_assert_eq!(frame_len(&max.to_be_bytes()), Ok(Some(MAX_FRAME)));
            if stream.write_all(&max.to_be_bytes()).await.is_err() {
                return;
            }
            let junk = vec![0xa5u8; 64 << 10];
            while stream.write_all(&junk).await.is_ok() {}
            return;
        }
        (Misbehaviour::Trickle, Request::Get { .. }) => {
            for byte in encode_frame(&honest) {
                if stream.write_all(&[byte]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = stream.close().await;
            return;
        }
        _ => encode_frame(&held.spoil(&request, honest)),
    };
    let _ = stream.write_all(&bytes).await;
    let _ = stream.close().await;
}

impl Held {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// What an honest peer holding the blob would answer.
    fn honest(&self, request: &Request) -> Response {
        let hash = match request {
            Request::Have { hash }
            | Request::HaveChanges { hash, .. }
            | Request::Get { hash, .. }
            | Request::GetOutboard { hash, .. } => *hash,
        };
        if hash != self.outboard.hash() {
            return Response::Refused(Refusal::NotFound);
        }
        match *request {
            Request::Have { .. } => Response::Have {
                size: self.size(),
                bitmap: ChunkBitmap::full(chunk_count(self.size()))
                    .as_bytes()
                    .to_vec(),
            },
            // Always the whole bitmap: it never changes.
            Request::HaveChanges { .. } => Response::Held {
                size: self.size(),
                answer: 1,
                held: wire::Held::Whole(
                    ChunkBitmap::full(chunk_count(self.size()))
                        .as_bytes()
                        .to_vec(),
                ),
            },
            Request::Get { start, end, .. } => Response::Data {
                size: self.size(),
                encoded: self.encode(&self.data, &self.outboard, start..end),
            },
            Request::GetOutboard { offset, len, .. } => {
                let bytes = self.outboard.as_bytes();
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(len as usize).min(bytes.len());
                Response::Outboard {
                    size: self.size(),
                    bytes: bytes[start..end].to_vec(),
                }
            }
        }
    }

    fn encode(&self, data: &[u8], outboard: &Outboard, chunks: std::ops::Range<u64>) -> Vec<u8> {
        let end = chunks.end.min(chunk_count(self.size()));
        outboard
            .encode_chunks(data, chunks.start..end)
            .expect("encoding from memory")
    }

    /// `honest`, spoiled as the misbehaviour says.
    fn spoil(&self, request: &Request, honest: Response) -> Response {
        let larger = self.size() + CHUNK_SIZE;
        match (self.misbehaviour, honest) {
            (Misbehaviour::FlipByte, Response::Data { size, mut encoded }) => {
                if let Some(last) = encoded.last_mut() {
                    *last ^= 0x01;
                }
                Response::Data { size, encoded }
            }
            (Misbehaviour::WrongSize, Response::Data { encoded, .. }) => Response::Data {
                size: larger,
                encoded,
            },
            (Misbehaviour::LiesAboutSize, Response::Data { encoded, .. }) => Response::Data {
                size: larger,
                encoded,
            },
            (Misbehaviour::LiesAboutSize, Response::Have { .. }) => Response::Have {
                size: larger,
                bitmap: ChunkBitmap::full(chunk_count(larger)).as_bytes().to_vec(),
            },
            (Misbehaviour::LiesAboutSize, Response::Held { answer, .. }) => Response::Held {
                size: larger,
                answer,
                held: wire::Held::Whole(ChunkBitmap::full(chunk_count(larger)).as_bytes().to_vec()),
            },
            (Misbehaviour::LiesAboutSize, Response::Outboard { bytes, .. }) => Response::Outboard {
                size: larger,
                bytes,
            },
            (Misbehaviour::OtherBlob, Response::Data { size, .. }) => {
                let (data, outboard) = self.other.as_ref().expect("made for OtherBlob");
                let chunks = request.chunks().expect("data answers a Get");
                Response::Data {
                    size,
                    encoded: self.encode(data, outboard, chunks),
                }
            }
            (Misbehaviour::RefuseGet, Response::Data { .. }) => {
                Response::Refused(Refusal::NotFound)
            }
            (_, honest) => honest,
        }
    }
}
