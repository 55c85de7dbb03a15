//! The mirror side of a download: one piece (or the whole file, from a
//! server that ignores `Range`) over HTTP, written in verified batches.

use std::ops::Range;
use std::sync::Arc;

use bytes::BytesMut;
use p2pmodel_protocol::VerifyError;
use p2pmodel_protocol::chunks::CHUNK_SIZE;
use url::Url;

use super::{Download, Failure, Kind, Shared};
use crate::mirror::client::RangeResponse;
use crate::mirror::{MirrorError, Probe};

/// Bytes checked and written at once: 16 chunks.
const BATCH_BYTES: usize = 16 * CHUNK_SIZE as usize;

/// One mirror of the blob, as probed.
#[derive(Debug, Clone)]
pub struct MirrorSource {
    /// The file's URL.
    pub url: Url,
    /// What the mirror said about it.
    pub probe: Probe,
}

impl Download {
    /// The probe of mirror `source` as the download knows it now, and its URL.
    fn mirror(&self, source: usize, shared: &Shared) -> (Url, Probe) {
        let work = shared.lock();
        match &work.sources[source].kind {
            Kind::Mirror { index, probe, .. } => (self.mirrors[*index].url.clone(), probe.clone()),
            Kind::Peer { .. } => unreachable!("source {source} is a mirror"),
        }
    }

    fn set_probe(shared: &Shared, source: usize, update: impl FnOnce(&mut Probe)) {
        if let Kind::Mirror { probe, .. } = &mut shared.lock().sources[source].kind {
            update(probe);
        }
    }

    /// Fetches `chunks` from mirror `source`.
    pub(super) async fn mirror_range(
        &self,
        source: usize,
        shared: &Shared,
        chunks: Range<u64>,
    ) -> Result<(), Failure> {
        let (url, mut probe) = self.mirror(source, shared);
        let size = self.partial.size();
        let (start, end) = (
            chunks.start * CHUNK_SIZE,
            (chunks.end * CHUNK_SIZE).min(size),
        );
        if probe.validator.is_none() && self.outboard.is_some() {
            // A verified source whose content changed: learn the new validator.
            probe = self.client.probe(&url).await?;
            if probe.size != size {
                return Err(MirrorError::Changed {
                    url: url.clone(),
                    detail: format!("size {size} became {}", probe.size),
                }
                .into());
            }
            let learnt = probe.clone();
            Self::set_probe(shared, source, move |p| *p = learnt);
        }
        match self.client.get_range(&url, start, end, &probe).await? {
            RangeResponse::Partial(response) => self.stream(&url, response, start, end).await,
            RangeResponse::Whole(response) => {
                // The server turned out to ignore Range: one worker reads
                // the whole file; the others give their pieces back.
                {
                    let mut work = shared.lock();
                    if let Kind::Mirror {
                        probe,
                        streaming_whole,
                        ..
                    } = &mut work.sources[source].kind
                    {
                        probe.ranges = false;
                        if *streaming_whole {
                            return Err(Failure::Requeue);
                        }
                        *streaming_whole = true;
                    }
                }
                tracing::info!(%url, "server ignores Range; reading the whole file in one stream");
                let result = self.stream(&url, response, 0, size).await;
                if let Kind::Mirror {
                    streaming_whole, ..
                } = &mut shared.lock().sources[source].kind
                {
                    *streaming_whole = false;
                }
                result
            }
        }
    }

    /// Reads the whole file from mirror `source`, which ignores `Range`,
    /// until nothing is missing.
    pub(super) async fn whole_file(&self, source: usize, shared: &Shared) -> Result<(), Failure> {
        let (url, probe) = self.mirror(source, shared);
        let size = self.partial.size();
        let result = match self.client.get_range(&url, 0, size, &probe).await {
            Ok(RangeResponse::Whole(response) | RangeResponse::Partial(response)) => {
                self.stream(&url, response, 0, size).await
            }
            Err(error) => Err(error.into()),
        };
        if let Kind::Mirror {
            streaming_whole, ..
        } = &mut shared.lock().sources[source].kind
        {
            *streaming_whole = false;
        }
        result
    }

    /// Writes the body of `response`, which holds bytes `start..end`, into
    /// the partial in verified batches of whole chunks.
    async fn stream(
        &self,
        url: &Url,
        mut response: reqwest::Response,
        start: u64,
        end: u64,
    ) -> Result<(), Failure> {
        let mut buffer = BytesMut::with_capacity(BATCH_BYTES);
        let mut offset = start;
        loop {
            let piece = response
                .chunk()
                .await
                .map_err(|source| MirrorError::Transport {
                    url: url.clone(),
                    source,
                })?;
            let finished = piece.is_none();
            if let Some(piece) = piece {
                let room = (end - offset) as usize - buffer.len();
                if piece.len() > room {
                    return Err(MirrorError::BadResponse {
                        url: url.clone(),
                        detail: "more bytes than asked for".into(),
                    }
                    .into());
                }
                buffer.extend_from_slice(&piece);
            }
            let at_end = offset + buffer.len() as u64 == end;
            let ready = if at_end {
                buffer.len()
            } else {
                buffer.len() / BATCH_BYTES * BATCH_BYTES
            };
            if ready > 0 {
                let batch = buffer.split_to(ready).freeze();
                self.write_batch(url, offset, batch).await?;
                offset += ready as u64;
            }
            if offset == end || self.partial.is_complete() {
                // Done, or other requests filled the rest (a whole-file
                // stream stops as soon as nothing is missing).
                return Ok(());
            }
            if finished {
                let received = offset + buffer.len() as u64;
                let whole = received - received % CHUNK_SIZE;
                if whole > offset {
                    let batch = buffer.split_to((whole - offset) as usize).freeze();
                    self.write_batch(url, offset, batch).await?;
                }
                return Err(MirrorError::Truncated {
                    url: url.clone(),
                    at: received,
                }
                .into());
            }
        }
    }

    /// Checks (when the outboard is known) and writes whole chunks at
    /// `offset`, off the async threads.
    async fn write_batch(
        &self,
        url: &Url,
        offset: u64,
        batch: bytes::Bytes,
    ) -> Result<(), Failure> {
        if let Some(budget) = &self.config.bandwidth {
            budget.take(batch.len() as u64).await;
        }
        let partial = Arc::clone(&self.partial);
        let outboard = self.outboard.clone();
        let progress = self.progress.clone();
        let origin = url.origin().ascii_serialization();
        let first_chunk = offset / CHUNK_SIZE;
        let writing = Arc::clone(&self.writes)
            .acquire_owned()
            .await
            .expect("the write semaphore is never closed");
        let written = tokio::task::spawn_blocking(move || {
            // Held until the write is done, even if the worker was aborted;
            // declared first so that it is released last, after `partial`.
            let _writing = writing;
            let partial = partial;
            if let Some(outboard) = outboard {
                outboard
                    .verify_chunks(first_chunk, &batch)
                    .map_err(Written::Bad)?;
            }
            let new_bytes = partial
                .write_chunks(first_chunk, &batch)
                .map_err(Written::Store)?;
            // Counted here: the worker may be gone by the end (it lost an
            // endgame race) while the write still happened.
            progress.received(&origin, new_bytes);
            Ok(())
        })
        .await
        .expect("the write task does not panic");
        match written {
            Ok(()) => Ok(()),
            Err(Written::Bad(VerifyError::ChunkMismatch { chunk })) => Err(MirrorError::BadData {
                url: url.clone(),
                chunk,
            }
            .into()),
            Err(Written::Bad(error)) => Err(MirrorError::BadResponse {
                url: url.clone(),
                detail: error.to_string(),
            }
            .into()),
            Err(Written::Store(error)) => Err(Failure::Store(error)),
        }
    }
}

enum Written {
    Bad(VerifyError),
    Store(p2pmodel_store::Error),
}
