//! The provider side of the chunk exchange: answers each request from the
//! store with verified chunks only, within bounded memory.
//!
//! A node serves every chunk that is verified and committed: all of a
//! complete blob, and the committed chunks of a verified partial, so peers
//! still fetching feed each other. Each chunk is checked against the
//! outboard as it is read (`encode_chunks`), so bytes that rotted on disk
//! are refused, never sent.
//!
//! Peers are untrusted, so everything an answer holds is bounded
//! ([`budget`](super::budget)): streams being read or answered, answers
//! being built or written, and their bytes, with at most an eighth of each
//! for one peer. A stream over the limit is dropped at once; a request
//! over it is refused as busy. A request must arrive within
//! [`REQUEST_TIMEOUT`] and its answer be taken within [`ANSWER_TIMEOUT`],
//! so a silent or non-reading peer cannot hold a slot for long.

use std::sync::Arc;
use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use p2pmodel_protocol::chunks::{CHUNK_SIZE, chunk_count};
use p2pmodel_protocol::verified::outboard_size;
use p2pmodel_protocol::wire::{MAX_FRAME, Refusal, Request, Response, encode_frame};
use p2pmodel_store::Store;
use tokio_util::sync::CancellationToken;

use super::budget::{Budget, Ticket, Use};
use super::frame;
use super::steer::Steer;
use super::told::Told;
use super::upload::Upload;
use crate::bandwidth::Bandwidth;

/// Largest request body read (requests are small).
const MAX_REQUEST: usize = 1024;
/// What answers may use at once, all peers together: 1,024 streams, 64
/// answers and 64 MiB of answer bytes (sixteen of the largest); one peer
/// gets an eighth of each. While an answer is framed it briefly exists
/// twice more, so answers never hold much more than 200 MiB.
const LIMITS: Use = Use {
    streams: 1024,
    answers: 64,
    bytes: 64 << 20,
};
/// Longest wait for the request frame of a new stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time to hand an answer to a peer (4 MiB at a slow 1 Mbit/s is
/// about 35 s); the getter waits as long.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

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
    let budget = Budget::new(LIMITS);
    let shown = Shown::default();
    let upload = upload.map(Upload::new);
    let mut answers = tokio::task::JoinSet::new();
    while let Some(Some((peer, stream))) = stop.run_until_cancelled(incoming.next()).await {
        // Reap the finished ones so the set stays small.
        while answers.try_join_next().is_some() {}
        let Some(ticket) = budget.stream(peer) else {
            tracing::debug!(%peer, "too many streams: dropping one");
            continue;
        };
        answers.spawn(answer_stream(
            store.clone(),
            shown.clone(),
            peer,
            stream,
            ticket,
            upload.clone(),
        ));
    }
    drop(store);
    while answers.join_next().await.is_some() {}
}

/// What peers are shown of the blobs: steering, and what each was told
/// last. Cloning is shallow.
#[derive(Debug, Clone, Default)]
struct Shown {
    steer: Arc<Steer>,
    told: Arc<Told>,
}

async fn answer_stream(
    store: Store,
    shown: Shown,
    peer: PeerId,
    mut stream: Stream,
    mut ticket: Ticket,
    upload: Option<Upload>,
) {
    let request = tokio::time::timeout(
        REQUEST_TIMEOUT,
        frame::read::<Request>(&mut stream, MAX_REQUEST),
    )
    .await;
    let request = match request {
        Ok(Ok(request)) => request,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "dropping a stream with a bad request");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "dropping a stream that sent no request in time");
            return;
        }
    };
    // Chunks wait for the upload budget; more than its queue holds are
    // refused, so that the peer asks another.
    let admitted = match (&upload, &request) {
        (Some(upload), Request::Get { start, end, .. }) => {
            Some(upload.admit(end.saturating_sub(*start) * CHUNK_SIZE))
        }
        _ => None,
    };
    let queue_full = matches!(admitted, Some(None));
    let (response, ticket) = if !queue_full && ticket.answer() {
        tokio::task::spawn_blocking(move || {
            let response = answer(&store, &shown, peer, &request, &mut ticket);
            (response, ticket)
        })
        .await
        .expect("answering does not panic")
    } else {
        (Response::Refused(Refusal::Busy), ticket)
    };
    let limited = match (&upload, &response) {
        (Some(upload), Response::Data { .. }) => Some(upload),
        _ => None,
    };
    let bytes = encode_frame(&response);
    drop(response);
    let written = tokio::time::timeout(ANSWER_TIMEOUT, async {
        match limited {
            Some(upload) => upload.write(&mut stream, &bytes).await?,
            None => stream.write_all(&bytes).await?,
        }
        stream.close().await
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%peer, %error, "could not answer"),
        Err(_) => tracing::debug!(%peer, "the peer did not take its answer in time"),
    }
    // Held until here: the answer's bytes count until they are gone.
    drop(ticket);
    drop(admitted);
}

/// The answer to `peer`'s request, from what the store holds, if `ticket`
/// can reserve its bytes (else a busy refusal). What `peer` is shown of a
/// whole blob, and sent of it, goes through steering; what it was told
/// last, through `shown.told`.
fn answer(
    store: &Store,
    shown: &Shown,
    peer: PeerId,
    request: &Request,
    ticket: &mut Ticket,
) -> Response {
    let hash = match request {
        Request::Have { hash }
        | Request::HaveChanges { hash, .. }
        | Request::Get { hash, .. }
        | Request::GetOutboard { hash, .. } => *hash,
    };
    let readable = match store.readable(hash) {
        Ok(Some(readable)) => readable,
        Ok(None) => return Response::Refused(Refusal::NotFound),
        Err(error) => {
            tracing::warn!(%hash, %error, "cannot read a blob to serve it");
            return Response::Refused(Refusal::NotFound);
        }
    };
    let cost = match *request {
        Request::Have { .. } | Request::HaveChanges { .. } => readable.present.as_bytes().len(),
        Request::Get { start, end, .. } => ((end - start) * CHUNK_SIZE) as usize,
        Request::GetOutboard { len, .. } => len as usize,
    };
    if !ticket.reserve(cost) {
        return Response::Refused(Refusal::Busy);
    }
    let whole = readable.present.is_complete();
    // What `peer` is shown: of a whole blob, less what steering hides.
    let mut present = readable.present;
    if whole && matches!(request, Request::Have { .. } | Request::HaveChanges { .. }) {
        shown.steer.hide(hash, peer, &mut present);
    }
    match *request {
        Request::Have { .. } => Response::Have {
            size: readable.size,
            bitmap: present.as_bytes().to_vec(),
        },
        Request::HaveChanges { since, .. } => {
            let (answer, held) = shown.told.answer(hash, peer, since, present);
            Response::Held {
                size: readable.size,
                answer,
                held,
            }
        }
        Request::Get { start, end, .. } => {
            if end > chunk_count(readable.size) {
                return Response::Refused(Refusal::Invalid);
            }
            if (start..end).any(|chunk| !present.get(chunk)) {
                return Response::Refused(Refusal::NotFound);
            }
            if whole && shown.steer.hides(hash, peer, start..end) {
                // Just sent to another peer: fetch it from the crowd.
                return Response::Refused(Refusal::Busy);
            }
            match readable.outboard.encode_chunks(&readable.data, start..end) {
                Ok(encoded) if encoded.len() + 64 <= MAX_FRAME => {
                    if whole {
                        shown
                            .steer
                            .sent(hash, chunk_count(readable.size), start..end, peer);
                    }
                    Response::Data {
                        size: readable.size,
                        encoded,
                    }
                }
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
