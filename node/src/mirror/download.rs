//! [`Download`]: fills the missing chunks of one partial blob from HTTP
//! mirrors, several requests at once.
//!
//! The missing chunks are cut into requests of [`DownloadConfig::request_chunks`]
//! and put in one queue. Each mirror runs [`DownloadConfig::parallel`]
//! workers that take requests from it, so fast mirrors take more. A body is
//! cut into batches of whole chunks; with an outboard each batch is checked
//! before it is written, so a mirror that sends one bad byte is dropped at
//! once and its request goes back to the queue for the others. A failed or
//! cut-short request goes back to the queue too; the mirror retries after a
//! doubling backoff and is given up after [`HttpConfig::max_failures`]
//! failures in a row. A mirror that ignores `Range` serves one sequential
//! stream of the whole file instead.
//!
//! Cancelling (the token) stops every request at once; chunks written so
//! far stay in the partial.
//!
//! [`HttpConfig::max_failures`]: super::HttpConfig::max_failures

use std::collections::VecDeque;
use std::fs::File;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use p2pmodel_protocol::chunks::{CHUNK_SIZE, chunk_count};
use p2pmodel_protocol::{Outboard, VerifyError};
use p2pmodel_store::Partial;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::client::{MirrorClient, MirrorError, Probe, RangeResponse};
use crate::bandwidth::Bandwidth;
use crate::progress::ProgressTracker;

/// Most writes in flight at once (far above the workers' count).
const MAX_WRITES: usize = 1 << 16;

/// Bytes checked and written at once: 16 chunks.
const BATCH_BYTES: usize = 16 * CHUNK_SIZE as usize;

/// How a download spreads its requests.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DownloadConfig {
    /// Requests in flight per mirror.
    pub parallel: usize,
    /// Chunks (16 KiB each) per range request.
    pub request_chunks: u64,
    /// A byte budget shared with other downloads (`None`: unlimited).
    pub bandwidth: Option<Bandwidth>,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            parallel: 4,
            request_chunks: 256,
            bandwidth: None,
        }
    }
}

impl DownloadConfig {
    /// Sets the requests in flight per mirror (at least 1).
    pub fn with_parallel(mut self, parallel: usize) -> Self {
        self.parallel = parallel.max(1);
        self
    }

    /// Shares `budget` with every other download that holds it.
    pub fn with_bandwidth(mut self, budget: Option<Bandwidth>) -> Self {
        self.bandwidth = budget;
        self
    }

    /// Sets the chunks per range request (at least 1).
    pub fn with_request_chunks(mut self, chunks: u64) -> Self {
        self.request_chunks = chunks.max(1);
        self
    }
}

/// Why a download stopped before the blob was complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The cancellation token fired.
    #[error("cancelled")]
    Cancelled,
    /// Every mirror was given up; one line per mirror.
    #[error("no source could deliver the rest of the blob:\n  {}", .0.join("\n  "))]
    NoSourceLeft(Vec<String>),
    /// The content changed under the URL of an unverified download: the
    /// chunks received so far belong to the old content.
    #[error(transparent)]
    Changed(MirrorError),
    /// Writing to the store failed (a full disk, say).
    #[error("writing to the store failed")]
    Store(#[from] p2pmodel_store::Error),
}

/// One mirror of the blob, as probed.
#[derive(Debug, Clone)]
pub struct MirrorSource {
    /// The file's URL.
    pub url: Url,
    /// What the mirror said about it.
    pub probe: Probe,
}

/// Fills a partial from mirrors. See the module docs.
#[derive(Debug)]
pub struct Download {
    /// One permit per write running on a blocking thread; see `writes_settled`.
    writes: Arc<Semaphore>,
    client: MirrorClient,
    partial: Arc<Partial>,
    outboard: Option<Arc<Outboard<File>>>,
    sources: Vec<MirrorSource>,
    progress: ProgressTracker,
    config: DownloadConfig,
}

#[derive(Debug)]
struct Work {
    queue: VecDeque<Range<u64>>,
    in_flight: usize,
    mirrors: Vec<MirrorStatus>,
    /// Set when an unverified download learns its content changed.
    changed: Option<MirrorError>,
}

#[derive(Debug)]
struct MirrorStatus {
    probe: Probe,
    failures: u32,
    dropped: Option<String>,
    streaming_whole: bool,
}

#[derive(Debug)]
struct Shared {
    work: Mutex<Work>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Work> {
        self.work
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Download {
    /// A download of the missing chunks of `partial` from `sources`.
    /// Without an outboard the partial must be unverified and there must
    /// be exactly one source (bytes of two servers are never mixed).
    pub fn new(
        client: MirrorClient,
        partial: Arc<Partial>,
        outboard: Option<Arc<Outboard<File>>>,
        sources: Vec<MirrorSource>,
        progress: ProgressTracker,
        config: DownloadConfig,
    ) -> Self {
        debug_assert!(
            outboard.is_some() || sources.len() <= 1,
            "unverified downloads use one source"
        );
        Self {
            writes: Arc::new(Semaphore::new(MAX_WRITES)),
            client,
            partial,
            outboard,
            sources,
            progress,
            config,
        }
    }

    /// Runs until the partial is complete, every mirror is given up, or
    /// `cancel` fires. Chunks written stay written either way; the caller
    /// commits and finishes the partial.
    ///
    /// # Errors
    /// See [`DownloadError`].
    pub async fn run(self, cancel: CancellationToken) -> Result<(), DownloadError> {
        let queue = self.requests();
        if queue.is_empty() {
            return Ok(());
        }
        let mirrors = self
            .sources
            .iter()
            .map(|source| MirrorStatus {
                probe: source.probe.clone(),
                failures: 0,
                dropped: None,
                streaming_whole: false,
            })
            .collect();
        let shared = Arc::new(Shared {
            work: Mutex::new(Work {
                queue,
                in_flight: 0,
                mirrors,
                changed: None,
            }),
            wake: Notify::new(),
        });
        let this = Arc::new(self);
        let mut workers = JoinSet::new();
        for mirror in 0..this.sources.len() {
            for _ in 0..this.config.parallel {
                workers.spawn(Arc::clone(&this).worker(mirror, Arc::clone(&shared)));
            }
        }
        let store_error = tokio::select! {
            () = cancel.cancelled() => {
                workers.abort_all();
                while workers.join_next().await.is_some() {}
                this.writes_settled().await;
                return Err(DownloadError::Cancelled);
            }
            error = drain(&mut workers) => error,
        };
        this.writes_settled().await;
        if let Some(error) = store_error {
            return Err(DownloadError::Store(error));
        }
        if this.partial.is_complete() {
            return Ok(());
        }
        let mut work = shared.lock();
        if let Some(changed) = work.changed.take() {
            return Err(DownloadError::Changed(changed));
        }
        let failures = this
            .sources
            .iter()
            .zip(&work.mirrors)
            .map(|(source, status)| {
                format!(
                    "{}: {}",
                    source.url,
                    status.dropped.as_deref().unwrap_or("stopped")
                )
            })
            .collect();
        Err(DownloadError::NoSourceLeft(failures))
    }

    /// Waits until no write started by an aborted worker is still running,
    /// so that nothing touches the partial after `run` returns.
    async fn writes_settled(&self) {
        let _all = self.writes.acquire_many(MAX_WRITES as u32).await;
    }

    /// The missing chunks, cut into requests.
    fn requests(&self) -> VecDeque<Range<u64>> {
        let step = self.config.request_chunks;
        let mut queue = VecDeque::new();
        for run in self.partial.missing() {
            let mut start = run.start;
            while start < run.end {
                let end = (start + step).min(run.end);
                queue.push_back(start..end);
                start = end;
            }
        }
        queue
    }

    async fn worker(
        self: Arc<Self>,
        mirror: usize,
        shared: Arc<Shared>,
    ) -> Result<(), p2pmodel_store::Error> {
        loop {
            let Some((range, probe)) = self.take(mirror, &shared).await else {
                return Ok(());
            };
            // A whole-file stream took no request off the queue.
            let requeue = probe.ranges;
            let url = &self.sources[mirror].url;
            let result = self
                .fetch(mirror, &shared, url, range.clone(), &probe)
                .await;
            let backoff = {
                let mut work = shared.lock();
                work.in_flight -= 1;
                if !requeue {
                    work.mirrors[mirror].streaming_whole = false;
                }
                match result {
                    Ok(()) => {
                        work.mirrors[mirror].failures = 0;
                        None
                    }
                    Err(Failure::Store(error)) => {
                        if requeue {
                            work.queue.push_front(range);
                        }
                        drop(work);
                        shared.wake.notify_waiters();
                        return Err(error);
                    }
                    Err(Failure::Mirror(error)) => {
                        if requeue {
                            work.queue.push_front(range);
                        }
                        self.failed(mirror, &mut work, error)
                    }
                    Err(Failure::Requeue) => {
                        work.queue.push_front(range);
                        None
                    }
                }
            };
            shared.wake.notify_waiters();
            if let Some(backoff) = backoff {
                tokio::time::sleep(backoff).await;
            }
        }
    }

    /// Records a failure of `mirror`; returns the pause before its next
    /// request, or `None` when the mirror is done for.
    fn failed(
        &self,
        mirror: usize,
        work: &mut Work,
        error: MirrorError,
    ) -> Option<std::time::Duration> {
        let url = &self.sources[mirror].url;
        let status = &mut work.mirrors[mirror];
        if let MirrorError::Changed { .. } = error {
            if self.outboard.is_none() {
                tracing::warn!(%error, "content changed under an unverified download");
                status.dropped = Some(error.to_string());
                work.changed = Some(error);
                work.queue.clear();
                return None;
            }
            // Verified: bytes of the new content are checked anyway; learn
            // the new validator on the next probe.
            status.probe.validator = None;
        }
        if error.is_retryable() || matches!(error, MirrorError::Changed { .. }) {
            status.failures += 1;
            if status.failures < self.client.config().max_failures {
                tracing::debug!(%url, %error, failures = status.failures, "retrying mirror");
                return Some(self.client.config().backoff_for(status.failures));
            }
        }
        tracing::warn!(%url, %error, "giving up on mirror for this blob");
        status.dropped.get_or_insert_with(|| error.to_string());
        None
    }

    /// Waits for a request for `mirror`; `None` when there is nothing left
    /// for it to do.
    async fn take(&self, mirror: usize, shared: &Shared) -> Option<(Range<u64>, Probe)> {
        loop {
            let notified = shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut work = shared.lock();
                let status = &work.mirrors[mirror];
                if status.dropped.is_some() {
                    return None;
                }
                if !status.probe.ranges {
                    // One sequential stream of the whole file per mirror,
                    // while any chunk is missing; its other workers retire.
                    if status.streaming_whole {
                        return None;
                    }
                    if let Some(missing) = self.pop_missing(&mut work.queue) {
                        work.queue.push_front(missing);
                        work.mirrors[mirror].streaming_whole = true;
                        work.in_flight += 1;
                        let probe = work.mirrors[mirror].probe.clone();
                        return Some((0..chunk_count(self.partial.size()), probe));
                    }
                } else if let Some(range) = self.pop_missing(&mut work.queue) {
                    work.in_flight += 1;
                    return Some((range, work.mirrors[mirror].probe.clone()));
                }
                // Nothing to take now; requests in flight elsewhere may
                // still fail and come back.
                if work.in_flight == 0 {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Pops the next run of chunks that are still missing.
    fn pop_missing(&self, queue: &mut VecDeque<Range<u64>>) -> Option<Range<u64>> {
        while let Some(range) = queue.pop_front() {
            let Some(start) = range.clone().find(|&chunk| !self.partial.has_chunk(chunk)) else {
                continue;
            };
            let end = (start..range.end)
                .find(|&chunk| self.partial.has_chunk(chunk))
                .unwrap_or(range.end);
            if end < range.end {
                queue.push_front(end..range.end);
            }
            return Some(start..end);
        }
        None
    }

    async fn fetch(
        &self,
        mirror: usize,
        shared: &Shared,
        url: &Url,
        chunks: Range<u64>,
        probe: &Probe,
    ) -> Result<(), Failure> {
        let size = self.partial.size();
        let (start, end) = (
            chunks.start * CHUNK_SIZE,
            (chunks.end * CHUNK_SIZE).min(size),
        );
        let mut probe = probe.clone();
        if probe.validator.is_none() && probe.ranges && self.outboard.is_some() {
            // A verified source whose content changed: learn the new validator.
            probe = self.client.probe(url).await?;
            if probe.size != size {
                return Err(MirrorError::Changed {
                    url: url.clone(),
                    detail: format!("size {size} became {}", probe.size),
                }
                .into());
            }
            shared.lock().mirrors[mirror].probe = probe.clone();
        }
        let response = if probe.ranges {
            self.client.get_range(url, start, end, &probe).await?
        } else {
            self.client.get_range(url, 0, size, &probe).await?
        };
        match response {
            RangeResponse::Partial(response) => self.stream(url, response, start, end).await,
            RangeResponse::Whole(response) if !probe.ranges => {
                self.stream(url, response, 0, size).await
            }
            RangeResponse::Whole(response) => {
                // The server turned out to ignore Range: one worker reads
                // the whole file; the others give their requests back.
                {
                    let mut work = shared.lock();
                    let status = &mut work.mirrors[mirror];
                    status.probe.ranges = false;
                    if status.streaming_whole {
                        return Err(Failure::Requeue);
                    }
                    status.streaming_whole = true;
                }
                tracing::info!(%url, "server ignores Range; reading the whole file in one stream");
                let result = self.stream(url, response, 0, size).await;
                shared.lock().mirrors[mirror].streaming_whole = false;
                result
            }
        }
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
            partial
                .write_chunks(first_chunk, &batch)
                .map_err(Written::Store)
        })
        .await
        .expect("the write task does not panic");
        match written {
            Ok(new_bytes) => {
                self.progress
                    .received(&url.origin().ascii_serialization(), new_bytes);
                Ok(())
            }
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

/// How one request ended without its bytes: the mirror's fault, the
/// store's, or a request handed back unharmed (another worker reads the
/// whole file).
enum Failure {
    Mirror(MirrorError),
    Store(p2pmodel_store::Error),
    Requeue,
}

impl From<MirrorError> for Failure {
    fn from(error: MirrorError) -> Self {
        Failure::Mirror(error)
    }
}

/// Waits for every worker; at the first store error (a full disk, say)
/// stops the others, since no source can help, and returns it.
async fn drain(
    workers: &mut JoinSet<Result<(), p2pmodel_store::Error>>,
) -> Option<p2pmodel_store::Error> {
    let mut first = None;
    while let Some(joined) = workers.join_next().await {
        if let Ok(Err(error)) = joined {
            workers.abort_all();
            first.get_or_insert(error);
        }
    }
    first
}
