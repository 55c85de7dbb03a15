//! The getter side of the chunk exchange: ask a peer, check every chunk
//! against the blob's root, write only what verified.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::PeerId;
use p2pmodel_protocol::chunks::{CHUNK_SIZE, chunk_count};
use p2pmodel_protocol::wire::{MAX_CHUNKS_PER_GET, MAX_FRAME, Request, Response};
use p2pmodel_protocol::{ChunkBitmap, Hash, decode_chunks};
use p2pmodel_store::{PartialKey, PartialMode, Store};
use tokio_util::sync::CancellationToken;

use super::{CHUNK_PROTOCOL, PeerError, Swarm, frame};
use crate::error::FetchError;
use crate::progress::{Phase, ProgressTracker};

/// Longest wait for one answer (4 MiB at a slow 1 Mbit/s is about 35 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

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
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| PeerError::Timeout(REQUEST_TIMEOUT))?
}

/// Fetches the blob `hash` from `peer` into the store and returns its path:
/// asks which chunks the peer holds, then fetches the missing ones in runs
/// of at most 256, each chunk verified against the root before it is
/// written. The peer needs no outboard from us and we need none from it.
///
/// # Errors
/// [`FetchError::Sources`] naming the peer when it lacks chunks, fails or
/// sends bytes that do not verify (nothing of those is written);
/// [`FetchError::Cancelled`] after committing what was written.
pub async fn fetch_blob(
    store: &Store,
    swarm: &Swarm,
    peer: PeerId,
    hash: Hash,
    progress: &ProgressTracker,
    cancel: CancellationToken,
) -> Result<PathBuf, FetchError> {
    let from_peer = |detail: String| FetchError::Sources(vec![format!("peer {peer}: {detail}")]);
    if let Some(record) = store.blob(hash)? {
        progress.add_blob(record.size, record.size);
        return Ok(store.blob_path(hash));
    }
    let (size, held) = match request(swarm, peer, &Request::Have { hash })
        .await
        .map_err(|e| from_peer(e.to_string()))?
    {
        Response::Have { size, bitmap } => {
            let held = ChunkBitmap::from_bytes(chunk_count(size), &bitmap)
                .map_err(|e| from_peer(e.to_string()))?;
            (size, held)
        }
        other => return Err(from_peer(format!("does not have the blob ({other:?})"))),
    };
    let opened = store.clone();
    let partial = tokio::task::spawn_blocking(move || {
        opened.open_partial(PartialKey::Blob(hash), size, PartialMode::Verified)
    })
    .await
    .expect("opening a partial does not panic")?;
    let partial = Arc::new(partial);
    progress.add_blob(size, partial.present_bytes());
    progress.set_phase(Phase::Downloading);
    let source = format!("peer {peer}");
    let mut outcome = Ok(());
    'runs: for run in partial.missing() {
        let mut start = run.start;
        while start < run.end {
            let end = (start + MAX_CHUNKS_PER_GET).min(run.end);
            if (start..end).any(|chunk| !held.get(chunk)) {
                outcome = Err(from_peer("does not hold every chunk".into()));
                break 'runs;
            }
            let get = Request::Get { hash, start, end };
            let answer = tokio::select! {
                answer = request(swarm, peer, &get) => answer,
                () = cancel.cancelled() => { outcome = Err(FetchError::Cancelled); break 'runs; }
            };
            let encoded = match answer {
                Ok(Response::Data {
                    size: answered,
                    encoded,
                }) if answered == size => encoded,
                Ok(other) => {
                    outcome = Err(from_peer(format!(
                        "refused chunks {start}..{end} ({other:?})"
                    )));
                    break 'runs;
                }
                Err(error) => {
                    outcome = Err(from_peer(error.to_string()));
                    break 'runs;
                }
            };
            let writer = Arc::clone(&partial);
            let written = tokio::task::spawn_blocking(move || {
                let mut new_bytes = 0;
                let mut store_error = None;
                let decoded =
                    decode_chunks(hash, size, start..end, &encoded[..], |offset, bytes| {
                        match writer.write_chunks(offset / CHUNK_SIZE, &bytes) {
                            Ok(new) => new_bytes += new,
                            Err(error) => store_error = Some(error),
                        }
                        Ok(())
                    });
                (decoded, store_error, new_bytes)
            })
            .await
            .expect("decoding does not panic");
            progress.received(&source, written.2);
            if let Some(error) = written.1 {
                outcome = Err(error.into());
                break 'runs;
            }
            if let Err(error) = written.0 {
                outcome = Err(from_peer(format!(
                    "sent chunks that do not verify: {error}"
                )));
                break 'runs;
            }
            start = end;
        }
    }
    let committing = Arc::clone(&partial);
    tokio::task::spawn_blocking(move || committing.commit())
        .await
        .expect("commit does not panic")?;
    outcome?;
    progress.set_phase(Phase::Verifying);
    let partial = Arc::into_inner(partial).expect("no other reference remains");
    tokio::task::spawn_blocking(move || partial.finish())
        .await
        .expect("finish does not panic")?;
    progress.set_phase(Phase::Complete);
    Ok(store.blob_path(hash))
}
