//! The swarm side of a download: finding peers that hold chunks of the
//! blob, and fetching one piece from a peer, every chunk checked against
//! the blob's hash before it is written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use p2pmodel_protocol::wire::{Held, Refusal, Request, Response, Run};
use p2pmodel_protocol::{ChunkBitmap, decode_chunks};
use tokio::sync::mpsc;

use super::{Download, Failure, Kind, Peers, Shared, Source};
use crate::swarm::getter::request_within;

/// Longest wait for a peer to say what it holds.
const HAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one piece (1 MiB at 1 Mbit/s is about 8 s; a peer
/// slower than a quarter of that loses its piece to the others).
const PIECE_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks every connected peer what it holds, for as long as the download
/// runs (see [`refresh_interval`]): new peers become sources (their index
/// is sent on `joined` so that workers start for them) and known ones
/// update their bitmap. Peers that showed the whole blob are asked again
/// too: a seed shows a crowd only what it has not just sent to others.
///
/// Each answer is used as it comes, and a peer is asked again only once
/// it answered: a busy peer's late answer holds up nobody else's. Peers
/// are asked for the changes since their last answer
/// ([`Request::HaveChanges`]); after a failed ask, a peer is asked once the
/// plain way ([`Request::Have`]), which nodes that do not know changes
/// answer too.
pub(super) async fn find(
    peers: Peers,
    shared: Arc<Shared>,
    chunks: u64,
    joined: mpsc::Sender<usize>,
) {
    use futures_util::StreamExt;
    let mut tick = tokio::time::interval(refresh_interval(chunks));
    let mut asking = futures_util::stream::FuturesUnordered::new();
    let mut in_flight = HashSet::new();
    // What each peer told last, and the peers to ask the plain way next.
    let mut told: HashMap<PeerId, Told> = HashMap::new();
    let mut plain = HashSet::new();
    // Peers asked in the first round and not answered yet; `peers_asked`
    // is set once, when it reaches zero.
    let mut first_round: Option<usize> = None;
    let mut all_asked = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let connected = peers.swarm.connected_peers().await;
                let work = shared.lock();
                for peer in connected {
                    let dropped = work.sources.iter().any(|source| {
                        source.dropped.is_some()
                            && matches!(&source.kind, Kind::Peer { peer: known, .. } if *known == peer)
                    });
                    if !dropped && in_flight.insert(peer) {
                        let request = if plain.remove(&peer) {
                            Request::Have { hash: peers.hash }
                        } else {
                            let since = told.get(&peer).map_or(0, |last: &Told| last.answer);
                            Request::HaveChanges { hash: peers.hash, since }
                        };
                        let swarm = peers.swarm.clone();
                        asking.push(async move {
                            let answer = request_within(&swarm, peer, &request, HAVE_TIMEOUT).await;
                            (peer, request, answer)
                        });
                    }
                }
                drop(work);
                if first_round.is_none() {
                    first_round = Some(asking.len());
                }
            }
            Some((peer, request, answer)) = asking.next() => {
                in_flight.remove(&peer);
                if answer.is_err() && matches!(request, Request::HaveChanges { .. }) {
                    plain.insert(peer);
                }
                if let Some(held) = read_held(peer, answer, chunks, &mut told) {
                    learn(&shared, peer, held, &joined);
                }
                if let Some(left) = &mut first_round {
                    *left = left.saturating_sub(1);
                }
            }
        }
        if !all_asked && first_round == Some(0) {
            all_asked = true;
            shared.lock().peers_asked = true;
            shared.wake.notify_waiters();
        }
    }
}

/// What a peer told in its last [`Response::Held`]: the answer's number
/// and the bitmap it described.
struct Told {
    answer: u64,
    held: ChunkBitmap,
}

/// The chunks `peer` holds, from its answer to `Have` or `HaveChanges`
/// (changes are applied to what it told before, in `told`, which keeps
/// the result); `None` for a refusal, a failure, or an answer that does
/// not fit the blob.
fn read_held(
    peer: PeerId,
    answer: Result<Response, crate::swarm::PeerError>,
    chunks: u64,
    told: &mut HashMap<PeerId, Told>,
) -> Option<ChunkBitmap> {
    let held = match answer.ok()? {
        Response::Have { size, bitmap } if chunks_of(size) == Some(chunks) => {
            ChunkBitmap::from_bytes(chunks, &bitmap).ok()
        }
        Response::Held { size, answer, held } if chunks_of(size) == Some(chunks) => {
            let last = told.remove(&peer);
            let bitmap = match held {
                Held::Whole(bytes) => ChunkBitmap::from_bytes(chunks, &bytes).ok(),
                Held::Toggled(runs) => {
                    last.zip(Run::ranges(&runs, chunks)).map(|(last, ranges)| {
                        let mut bitmap = last.held;
                        for range in ranges {
                            bitmap.toggle_range(range);
                        }
                        bitmap
                    })
                }
            };
            if let Some(bitmap) = &bitmap {
                told.insert(
                    peer,
                    Told {
                        answer,
                        held: bitmap.clone(),
                    },
                );
            }
            bitmap
        }
        Response::Have { size, .. } | Response::Held { size, .. } => {
            tracing::debug!(%peer, size, "peer has a blob of another size under this hash");
            return None;
        }
        _ => return None,
    };
    if held.is_none() {
        tracing::debug!(%peer, "peer sent a bitmap or changes that do not fit");
    }
    held
}

/// Takes in what one peer holds.
fn learn(shared: &Shared, peer: PeerId, held: ChunkBitmap, joined: &mpsc::Sender<usize>) {
    let mut work = shared.lock();
    let known = work
        .sources
        .iter_mut()
        .find(|source| matches!(&source.kind, Kind::Peer { peer: known, .. } if *known == peer));
    match known {
        Some(Source {
            kind: Kind::Peer { held: old, .. },
            ..
        }) => *old = held,
        _ => {
            tracing::debug!(%peer, chunks = held.count(), "peer joins the download");
            work.sources.push(Source::new(Kind::Peer { peer, held }));
            let _ = joined.try_send(work.sources.len() - 1);
        }
    }
    drop(work);
    shared.wake.notify_waiters();
}

/// How often peers are asked what they hold: four times a second, so that
/// what one peer just got spreads before the others fetch it elsewhere;
/// less often for huge blobs, at most one bitmap's worth of 256 KiB per
/// second per peer: answers are mostly changes, but each one still reads
/// and compares the whole bitmap on the peer.
fn refresh_interval(chunks: u64) -> Duration {
    let bitmap_bytes = chunks.div_ceil(8);
    Duration::from_millis(250).max(Duration::from_secs_f64(
        bitmap_bytes as f64 / f64::from(256 << 10),
    ))
}

/// The chunk count of a blob of `size` bytes, if the size is one we accept.
fn chunks_of(size: u64) -> Option<u64> {
    (size <= p2pmodel_protocol::wire::MAX_BLOB_SIZE)
        .then(|| p2pmodel_protocol::chunks::chunk_count(size))
}

impl Download {
    /// Fetches `chunks` from `peer` and writes them, each checked against
    /// the blob's hash.
    pub(super) async fn peer_piece(
        &self,
        peer: PeerId,
        chunks: std::ops::Range<u64>,
    ) -> Result<(), Failure> {
        let peers = self.peers.as_ref().expect("peer sources come with a swarm");
        let (hash, size) = (peers.hash, self.partial.size());
        let get = Request::Get {
            hash,
            start: chunks.start,
            end: chunks.end,
        };
        let encoded = match request_within(&peers.swarm, peer, &get, PIECE_TIMEOUT).await {
            Ok(Response::Data {
                size: answered,
                encoded,
            }) if answered == size => encoded,
            Ok(Response::Refused(Refusal::NotFound)) => return Err(Failure::Lacks),
            Ok(Response::Refused(Refusal::Busy)) => return Err(Failure::Busy),
            Ok(other) => {
                return Err(Failure::Peer {
                    error: format!("answered chunks {chunks:?} with {}", describe(&other)),
                    fatal: true,
                });
            }
            Err(error) => {
                return Err(Failure::Peer {
                    error: error.to_string(),
                    fatal: false,
                });
            }
        };
        if let Some(budget) = &self.config.bandwidth {
            budget.take(encoded.len() as u64).await;
        }
        let partial = Arc::clone(&self.partial);
        let progress = self.progress.clone();
        let name = format!("peer {peer}");
        let writing = Arc::clone(&self.writes)
            .acquire_owned()
            .await
            .expect("the write semaphore is never closed");
        let range = chunks.clone();
        let (decoded, stored) = tokio::task::spawn_blocking(move || {
            // Released last, after `partial`; see `Download::writes_settled`.
            let _writing = writing;
            let partial = partial;
            // The verified chunks are written at once: one large write
            // costs the kernel about half as much as many of 16 KiB. If a
            // chunk fails, those before it were verified and are written.
            let mut verified = Vec::with_capacity(encoded.len());
            let decoded = decode_chunks(hash, size, range.clone(), &encoded[..], |_, bytes| {
                verified.extend_from_slice(&bytes);
                Ok(())
            });
            drop(encoded);
            let stored = if verified.is_empty() {
                Ok(())
            } else {
                partial.write_chunks(range.start, &verified).map(|new| {
                    // Counted here: the worker may be gone by the end (it
                    // lost an endgame race) while the write still happened.
                    progress.received(&name, new);
                })
            };
            (decoded, stored)
        })
        .await
        .expect("decoding does not panic");
        stored.map_err(Failure::Store)?;
        decoded.map_err(|error| Failure::Peer {
            error: format!("sent chunks {chunks:?} that do not verify: {error}"),
            fatal: true,
        })
    }
}

/// A short description of an unexpected answer (never its payload).
fn describe(response: &Response) -> String {
    match response {
        Response::Have { .. } | Response::Held { .. } => "a bitmap".into(),
        Response::Data { size, .. } => format!("data for a blob of {size} bytes"),
        Response::Outboard { .. } => "an outboard".into(),
        Response::Refused(refusal) => format!("a refusal ({refusal:?})"),
    }
}
