//! The provider side of the chunk exchange: answers each request from the
//! store with verified chunks only.
//!
//! A node serves every chunk that is verified and committed: all of a
//! complete blob, and the committed chunks of a verified partial, so peers
//! still fetching feed each other. Each chunk is checked against the
//! outboard as it is read (`encode_chunks`), so bytes that rotted on disk
//! are refused, never sent.

use std::sync::Arc;

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use p2pmodel_protocol::chunks::chunk_count;
use p2pmodel_protocol::verified::outboard_size;
use p2pmodel_protocol::wire::{MAX_FRAME, Refusal, Request, Response};
use p2pmodel_store::Store;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::frame;
use crate::bandwidth::Bandwidth;

/// Largest request body read (requests are small).
const MAX_REQUEST: usize = 1024;
/// Requests answered at once; more are refused as busy.
const MAX_ANSWERING: usize = 64;

/// Answers every incoming stream of the chunk protocol until `stop`
/// fires, then waits for the answers under way, so that the store is let
/// go of when this returns.
pub(crate) async fn serve(
    store: Store,
    mut incoming: libp2p_stream::IncomingStreams,
    upload: Option<Bandwidth>,
    stop: CancellationToken,
) {
    use futures::StreamExt;
    let answering = Arc::new(Semaphore::new(MAX_ANSWERING));
    let mut answers = tokio::task::JoinSet::new();
    while let Some(Some((peer, stream))) = stop.run_until_cancelled(incoming.next()).await {
        let permit = Arc::clone(&answering).try_acquire_owned().ok();
        answers.spawn(answer_stream(
            store.clone(),
            peer,
            stream,
            permit,
            upload.clone(),
        ));
        // Reap the finished ones so the set stays small.
        while answers.try_join_next().is_some() {}
    }
    drop(store);
    while answers.join_next().await.is_some() {}
}

async fn answer_stream(
    store: Store,
    peer: PeerId,
    mut stream: Stream,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    upload: Option<Bandwidth>,
) {
    let request: Request = match frame::read(&mut stream, MAX_REQUEST).await {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(%peer, %error, "dropping a stream with a bad request");
            return;
        }
    };
    let response = match permit {
        None => Response::Refused(Refusal::Busy),
        Some(_permit) => tokio::task::spawn_blocking(move || answer(&store, &request))
            .await
            .unwrap_or(Response::Refused(Refusal::Busy)),
    };
    if let (Some(budget), Response::Data { encoded, .. }) = (&upload, &response) {
        budget.take(encoded.len() as u64).await;
    }
    if let Err(error) = frame::write(&mut stream, &response).await {
        tracing::debug!(%peer, %error, "could not answer");
    }
    let _ = stream.close().await;
}

/// The answer to one request, from what the store holds.
pub(crate) fn answer(store: &Store, request: &Request) -> Response {
    let hash = match request {
        Request::Have { hash } | Request::Get { hash, .. } | Request::GetOutboard { hash, .. } => {
            *hash
        }
    };
    let readable = match store.readable(hash) {
        Ok(Some(readable)) => readable,
        Ok(None) => return Response::Refused(Refusal::NotFound),
        Err(error) => {
            tracing::warn!(%hash, %error, "cannot read a blob to serve it");
            return Response::Refused(Refusal::NotFound);
        }
    };
    match *request {
        Request::Have { .. } => Response::Have {
            size: readable.size,
            bitmap: readable.present.as_bytes().to_vec(),
        },
        Request::Get { start, end, .. } => {
            if end > chunk_count(readable.size) {
                return Response::Refused(Refusal::Invalid);
            }
            if (start..end).any(|chunk| !readable.present.get(chunk)) {
                return Response::Refused(Refusal::NotFound);
            }
            match readable.outboard.encode_chunks(&readable.data, start..end) {
                Ok(encoded) if encoded.len() + 64 <= MAX_FRAME => Response::Data {
                    size: readable.size,
                    encoded,
                },
                Ok(_) => Response::Refused(Refusal::Invalid),
                Err(error) => {
                    tracing::warn!(%hash, %error, "refusing to serve chunks that fail verification on disk");
                    Response::Refused(Refusal::NotFound)
                }
            }
        }
        Request::GetOutboard { offset, len, .. } => {
            let total = outboard_size(readable.size);
            if offset >= total {
                return Response::Refused(Refusal::Invalid);
            }
            let len = len.min(total - offset) as usize;
            let mut bytes = vec![0u8; len];
            use std::os::unix::fs::FileExt;
            match readable
                .outboard
                .storage()
                .read_exact_at(&mut bytes, offset)
            {
                Ok(()) => Response::Outboard {
                    size: readable.size,
                    bytes,
                },
                Err(_) => Response::Refused(Refusal::NotFound),
            }
        }
    }
}
