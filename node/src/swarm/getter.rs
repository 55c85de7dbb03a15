//! The getter side of the chunk exchange: requests to one peer, who holds
//! a blob, and its outboard (checked against the hash). Chunks themselves
//! are fetched by [`Download`](crate::download::Download), from every
//! peer at once.

use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::PeerId;
use p2pmodel_protocol::verified::outboard_size;
use p2pmodel_protocol::wire::{MAX_FRAME, MAX_OUTBOARD_PER_GET, Refusal, Request, Response};
use p2pmodel_protocol::{Hash, Outboard};

use super::{CHUNK_PROTOCOL, PeerError, Swarm, frame};

/// Longest wait for mDNS to find a first peer before a fetch asks around.
const DISCOVERY_WAIT: Duration = Duration::from_secs(3);
/// Longest wait for one answer (4 MiB at a slow 1 Mbit/s is about 35 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before asking a busy peer again.
const BUSY_PAUSE: Duration = Duration::from_millis(200);
/// Times a busy peer is asked before its refusal stands (about 10 s).
const BUSY_TRIES: u32 = 50;

/// Sends `request` to `peer` on a new stream and reads its answer.
///
/// # Errors
/// [`PeerError`] when the stream fails, the answer is not a valid frame,
/// or it does not come within a minute.
pub async fn request(
    swarm: &Swarm,
    peer: PeerId,
    request: &Request,
) -> Result<Response, PeerError> {
    request_within(swarm, peer, request, REQUEST_TIMEOUT).await
}

/// [`request_within`], asked again while the peer answers that it is
/// busy (up to [`BUSY_TRIES`] times); for requests whose refusal would end
/// a fetch rather than be retried by the download.
async fn request_unless_busy(
    swarm: &Swarm,
    peer: PeerId,
    request: &Request,
    limit: Duration,
) -> Result<Response, PeerError> {
    for _ in 1..BUSY_TRIES {
        match request_within(swarm, peer, request, limit).await? {
            Response::Refused(Refusal::Busy) => tokio::time::sleep(BUSY_PAUSE).await,
            answer => return Ok(answer),
        }
    }
    request_within(swarm, peer, request, limit).await
}

/// [`request`] with its own time limit (for each try).
///
/// A peer whose provider is busy when the stream arrives drops the stream
/// unread (libp2p-stream holds one waiting inbound stream per protocol and
/// drops the next); the request is sent again on a new stream after a
/// short random pause, up to [`DROPPED_TRIES`] times. Every request is
/// idempotent, so asking twice is harmless.
pub(crate) async fn request_within(
    swarm: &Swarm,
    peer: PeerId,
    request: &Request,
    limit: Duration,
) -> Result<Response, PeerError> {
    let mut tries = 1;
    loop {
        match exchange(swarm, peer, request, limit).await {
            Err(PeerError::Io(error)) if dropped_unread(&error) && tries < DROPPED_TRIES => {
                tracing::trace!(%peer, %error, tries, "stream dropped by the peer; asking again");
                tokio::time::sleep(retry_pause(tries)).await;
                tries += 1;
            }
            answer => return answer,
        }
    }
}

/// Times a request goes out when the peer keeps dropping its stream.
const DROPPED_TRIES: u32 = 6;

/// One request on one stream.
async fn exchange(
    swarm: &Swarm,
    peer: PeerId,
    request: &Request,
    limit: Duration,
) -> Result<Response, PeerError> {
    let mut control = swarm.control();
    let exchange = async {
        let mut stream = control
            .open_stream(peer, CHUNK_PROTOCOL)
            .await
            .map_err(|e| PeerError::Open(e.to_string()))?;
        frame::write(&mut stream, request).await?;
        let response = frame::read::<Response>(&mut stream, MAX_FRAME).await?;
        let _ = stream.close().await;
        Ok(response)
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| PeerError::Timeout(limit))?
}

/// True for the errors of a stream the peer reset before answering (yamux
/// reports a write on a reset stream as `WriteZero`).
fn dropped_unread(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::WriteZero
            | ErrorKind::ConnectionReset
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

/// About 20 ms doubling with each try, spread at random.
fn retry_pause(tries: u32) -> Duration {
    crate::jitter::jittered(Duration::from_millis(20 << tries.min(6)))
}

/// The connected peers that hold at least one chunk of `hash`, with the
/// size each gives for it. Peers that do not answer within five seconds,
/// or stay busy, are left out.
pub async fn holders(swarm: &Swarm, hash: Hash) -> Vec<(PeerId, u64)> {
    survey(swarm, hash).await.holders
}

/// What the connected peers said about a blob.
pub(crate) struct Survey {
    /// Peers holding at least one chunk, with the size each gives.
    pub(crate) holders: Vec<(PeerId, u64)>,
    /// Some peer may hold chunks soon: it failed to answer (a busy seed
    /// drops streams in a crowd) or it is fetching the blob itself and has
    /// no chunk yet.
    pub(crate) worth_asking_again: bool,
}

/// Asks every connected peer what it holds of `hash` (see [`holders`]).
pub(crate) async fn survey(swarm: &Swarm, hash: Hash) -> Survey {
    if swarm.discovers() {
        // Just started: give mDNS a moment to find the local network.
        let deadline = tokio::time::Instant::now() + DISCOVERY_WAIT;
        while swarm.connected_peers().await.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let have = Request::Have { hash };
    let mut survey = Survey {
        holders: Vec::new(),
        worth_asking_again: false,
    };
    // A few rounds while none answers: a stream may fail on a connection
    // that is just closing (two peers that dialed each other at once).
    for round in 0..3 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let peers = swarm.connected_peers().await;
        let answers = futures_util::future::join_all(
            peers
                .iter()
                .map(|peer| request_unless_busy(swarm, *peer, &have, Duration::from_secs(5))),
        )
        .await;
        let mut failed = false;
        for (peer, answer) in peers.into_iter().zip(answers) {
            match answer {
                Ok(Response::Have { size, bitmap }) if bitmap.iter().any(|b| *b != 0) => {
                    survey.holders.push((peer, size));
                }
                Ok(Response::Have { .. }) => survey.worth_asking_again = true,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%peer, %error, "asking what a peer holds failed");
                    failed = true;
                }
            }
        }
        survey.worth_asking_again |= failed;
        if !survey.holders.is_empty() || !failed {
            break;
        }
    }
    survey
}

/// Fetches the outboard of the blob `hash` of `size` bytes from `peer` and
/// checks it against the hash.
///
/// # Errors
/// [`PeerError`] when the peer fails or refuses, or sends an outboard
/// that does not match the hash.
pub async fn fetch_outboard(
    swarm: &Swarm,
    peer: PeerId,
    hash: Hash,
    size: u64,
) -> Result<Outboard, PeerError> {
    let total = outboard_size(size);
    let mut bytes = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    while (bytes.len() as u64) < total {
        let offset = bytes.len() as u64;
        let len = (total - offset).min(MAX_OUTBOARD_PER_GET);
        let get = Request::GetOutboard { hash, offset, len };
        match request_unless_busy(swarm, peer, &get, REQUEST_TIMEOUT).await? {
            Response::Outboard {
                size: answered,
                bytes: piece,
            } if answered == size && !piece.is_empty() && piece.len() as u64 <= len => {
                bytes.extend_from_slice(&piece);
            }
            other => {
                return Err(PeerError::Refused(format!(
                    "outboard bytes {offset}..{}: {other:?}",
                    offset + len
                )));
            }
        }
    }
    Outboard::from_untrusted(hash, size, bytes).map_err(|e| PeerError::Refused(e.to_string()))
}
