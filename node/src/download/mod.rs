//! [`Download`]: fills the missing chunks of one partial blob from every
//! source at once: HTTP mirrors and swarm peers.
//!
//! The blob is cut into pieces of [`DownloadConfig::request_chunks`]
//! chunks (`pieces`; [`DownloadConfig::peer_request_chunks`] when peers
//! serve). Each source runs [`DownloadConfig::parallel`]
//! workers; a worker picks the rarest wanted piece its source can serve
//! (a mirror serves all, a peer what its bitmap shows), fetches it, and
//! writes only verified chunks. Fast sources come back for more sooner, so
//! they take more; a source holding everything, with no peer fetching that
//! could hand pieces on, asks for a run of adjacent pieces at once. In the
//! endgame a piece in flight is doubled on another source and the loser
//! cancelled.
//!
//! A source that sends one bad chunk is dropped for this download and
//! named in the log; its piece goes back for the others. A failed request
//! goes back too; the source retries after a doubling backoff and is
//! given up after [`HttpConfig::max_failures`] failures in a row. A mirror
//! that ignores `Range` serves one sequential stream of the whole file.
//!
//! Peers are found while the download runs: several times a second the
//! connected peers are asked what they hold (`peer`), so peers that dial
//! in or finish more chunks join at once.
//!
//! Without an outboard (an unverified download) there is one mirror and no
//! peer: bytes of two servers are never mixed unchecked.
//!
//! Cancelling (the token) stops every request at once; chunks written so
//! far stay in the partial.
//!
//! [`HttpConfig::max_failures`]: crate::mirror::HttpConfig::max_failures

mod http;
mod peer;
mod pieces;

use std::fs::File;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use p2pmodel_protocol::chunks::{CHUNK_SIZE, chunk_count};
use p2pmodel_protocol::wire::MAX_CHUNKS_PER_GET;
use p2pmodel_protocol::{ChunkBitmap, Hash, Outboard};
use p2pmodel_store::Partial;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use http::MirrorSource;

use crate::bandwidth::Bandwidth;
use crate::mirror::{MirrorClient, MirrorError, Probe};
use crate::progress::ProgressTracker;
use crate::swarm::Swarm;
use pieces::{Pick, Pieces};

/// Most writes in flight at once (far above the workers' count).
const MAX_WRITES: usize = 1 << 16;
/// How often the download checks whether it is stuck.
const STALL_CHECK: Duration = Duration::from_secs(1);
/// How long a source holding the whole blob leaves a wanted piece to the
/// peers still fetching that hold it, before it helps (see `Download::next`).
const DEFER_TO_PEERS: Duration = Duration::from_millis(500);
/// How much of a source's throughput is kept in flight (see
/// `Source::pipeline`).
const PIPELINE_TIME: Duration = Duration::from_millis(250);
/// Most pieces one request asks for (see `Source::run_length`): 1 MiB with
/// the 256 KiB pieces of a download that peers serve.
const MAX_RUN: usize = 4;
/// A download with peers but no progress and nothing in flight for this
/// long gives up (peers that might gain chunks are waited for until then).
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// How a download spreads its requests.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DownloadConfig {
    /// Requests in flight per source.
    pub parallel: usize,
    /// Chunks (16 KiB each) per request: the size of a piece, when only
    /// mirrors serve the download.
    pub request_chunks: u64,
    /// The size of a piece when peers serve too: smaller, so that a piece
    /// a peer fetched from a busy seed is whole (and served onwards) sooner.
    pub peer_request_chunks: u64,
    /// A byte budget shared with other downloads (`None`: unlimited).
    pub bandwidth: Option<Bandwidth>,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            parallel: 4,
            request_chunks: 64,
            peer_request_chunks: 16,
            bandwidth: None,
        }
    }
}

impl DownloadConfig {
    /// Sets the requests in flight per source (at least 1).
    pub fn with_parallel(mut self, parallel: usize) -> Self {
        self.parallel = parallel.max(1);
        self
    }

    /// Shares `budget` with every other download that holds it.
    pub fn with_bandwidth(mut self, budget: Option<Bandwidth>) -> Self {
        self.bandwidth = budget;
        self
    }

    /// Sets the chunks per request (at least 1, at most 256, the most a
    /// peer answers at once).
    pub fn with_request_chunks(mut self, chunks: u64) -> Self {
        self.request_chunks = chunks.clamp(1, p2pmodel_protocol::wire::MAX_CHUNKS_PER_GET);
        self
    }

    /// Sets the chunks per request when peers serve too (same bounds).
    pub fn with_peer_request_chunks(mut self, chunks: u64) -> Self {
        self.peer_request_chunks = chunks.clamp(1, p2pmodel_protocol::wire::MAX_CHUNKS_PER_GET);
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
    /// Every source was given up; one line per source.
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

/// The swarm side of a download: where peers are asked, for which blob.
#[derive(Debug, Clone)]
struct Peers {
    swarm: Swarm,
    hash: Hash,
}

/// Fills a partial from mirrors and peers. See the module docs.
#[derive(Debug)]
pub struct Download {
    /// One permit per write running on a blocking thread; see `writes_settled`.
    writes: Arc<Semaphore>,
    client: MirrorClient,
    partial: Arc<Partial>,
    outboard: Option<Arc<Outboard<File>>>,
    mirrors: Vec<MirrorSource>,
    peers: Option<Peers>,
    progress: ProgressTracker,
    config: DownloadConfig,
}

/// One source as the download sees it.
#[derive(Debug)]
struct Source {
    kind: Kind,
    failures: u32,
    /// Why it was given up, once it is.
    dropped: Option<String>,
    /// Pieces it is fetching now.
    in_flight: usize,
    /// Its measured throughput in bytes per second (0: not yet known).
    rate: f64,
}

#[derive(Debug)]
enum Kind {
    Mirror {
        /// Index into `Download::mirrors`.
        index: usize,
        probe: Probe,
        /// A worker reads the whole file (the mirror ignores `Range`).
        streaming_whole: bool,
    },
    Peer {
        peer: PeerId,
        /// What it said it holds, last time it was asked.
        held: ChunkBitmap,
    },
}

impl Source {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            failures: 0,
            dropped: None,
            in_flight: 0,
            rate: 0.0,
        }
    }

    /// Pieces it may have in flight: enough to cover [`PIPELINE_TIME`] of
    /// its measured throughput, plus one; two until it is measured; never
    /// more than `parallel`. A slow source thus holds few pieces, which
    /// come back sooner (and can be served on to other peers sooner).
    fn pipeline(&self, parallel: usize, piece_bytes: u64) -> usize {
        let depth = if self.rate == 0.0 {
            2
        } else {
            (self.rate * PIPELINE_TIME.as_secs_f64() / piece_bytes as f64).ceil() as usize + 1
        };
        depth.clamp(1, parallel)
    }

    /// Pieces per request: enough that `parallel` requests cover
    /// [`PIPELINE_TIME`] of its measured throughput, within [`MAX_RUN`] and
    /// the most chunks a peer answers at once; one until it is measured.
    fn run_length(&self, parallel: usize, piece_bytes: u64) -> usize {
        let wanted =
            self.rate * PIPELINE_TIME.as_secs_f64() / (parallel as f64 * piece_bytes as f64);
        let largest = MAX_CHUNKS_PER_GET * CHUNK_SIZE / piece_bytes;
        (wanted.ceil() as usize).clamp(1, MAX_RUN.min(largest as usize).max(1))
    }

    /// Learns from a piece of `bytes` that took `elapsed` while
    /// `concurrent` pieces (this one included) were in flight.
    fn measured(&mut self, bytes: u64, elapsed: Duration, concurrent: usize) {
        let sample = bytes as f64 / elapsed.as_secs_f64().max(1e-3) * concurrent as f64;
        self.rate = if self.rate == 0.0 {
            sample
        } else {
            0.7 * self.rate + 0.3 * sample
        };
    }

    /// True if and only if the source holds the whole blob (a mirror, or a
    /// peer whose bitmap is full).
    fn holds_everything(&self) -> bool {
        match &self.kind {
            Kind::Mirror { .. } => true,
            Kind::Peer { held, .. } => held.is_complete(),
        }
    }

    /// True if and only if the source can serve every chunk of `chunks`.
    fn serves(&self, chunks: Range<u64>) -> bool {
        match &self.kind {
            Kind::Mirror { .. } => self.dropped.is_none(),
            Kind::Peer { held, .. } => self.dropped.is_none() && held.has_range(chunks),
        }
    }
}

#[derive(Debug)]
struct Work {
    pieces: Pieces,
    sources: Vec<Source>,
    /// Set when an unverified download learns its content changed.
    changed: Option<MirrorError>,
    /// When a piece was last written.
    last_progress: Instant,
    /// Set once the connected peers were asked what they hold.
    peers_asked: bool,
}

impl Work {
    /// True if and only if some source could still be of use: a mirror, a
    /// peer serving a wanted piece, or a peer that may gain chunks.
    fn any_hope(&self) -> bool {
        self.sources.iter().any(|source| {
            source.dropped.is_none()
                && match &source.kind {
                    Kind::Mirror { .. } => true,
                    Kind::Peer { held, .. } => {
                        !held.is_complete()
                            || self.pieces.wanted().any(|chunks| held.has_range(chunks))
                    }
                }
        })
    }
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

/// What a worker does next.
enum Next {
    Piece(Pick),
    /// Read the whole file from a mirror that ignores `Range`.
    WholeFile,
    Stop,
}

/// How one request ended without its bytes.
enum Failure {
    /// The mirror failed; how it counts depends on the error.
    Mirror(MirrorError),
    /// The peer failed; `fatal` when it sent bytes that do not verify or
    /// answered nonsense (it is dropped at once).
    Peer { error: String, fatal: bool },
    /// The peer does not hold those chunks (any more).
    Lacks,
    /// The peer is busy: ask again soon, it is not a failure.
    Busy,
    /// The store failed: no source can help.
    Store(p2pmodel_store::Error),
    /// Handed back unharmed (another worker reads the whole file).
    Requeue,
    /// Another source delivered the piece first (the endgame).
    Beaten,
}

impl From<MirrorError> for Failure {
    fn from(error: MirrorError) -> Self {
        Failure::Mirror(error)
    }
}

impl Download {
    /// Fetches the chunks of `pick` from `source`.
    async fn fetch_piece(
        &self,
        source: usize,
        shared: &Shared,
        pick: &Pick,
    ) -> Result<(), Failure> {
        let peer = match &shared.lock().sources[source].kind {
            Kind::Peer { peer, .. } => Some(*peer),
            Kind::Mirror { .. } => None,
        };
        match peer {
            Some(peer) => self.peer_piece(peer, pick.chunks.clone()).await,
            None => self.mirror_range(source, shared, pick.chunks.clone()).await,
        }
    }

    /// A download of the missing chunks of `partial` from `mirrors`.
    /// Without an outboard the partial must be unverified and there must
    /// be exactly one mirror (bytes of two servers are never mixed).
    pub fn new(
        client: MirrorClient,
        partial: Arc<Partial>,
        outboard: Option<Arc<Outboard<File>>>,
        mirrors: Vec<MirrorSource>,
        progress: ProgressTracker,
        config: DownloadConfig,
    ) -> Self {
        debug_assert!(
            outboard.is_some() || mirrors.len() <= 1,
            "unverified downloads use one source"
        );
        Self {
            writes: Arc::new(Semaphore::new(MAX_WRITES)),
            client,
            partial,
            outboard,
            mirrors,
            peers: None,
            progress,
            config,
        }
    }

    /// Chunks per piece: smaller when peers serve too (see
    /// [`DownloadConfig::peer_request_chunks`]).
    fn piece_chunks(&self) -> u64 {
        match self.peers {
            Some(_) => self.config.peer_request_chunks,
            None => self.config.request_chunks,
        }
    }

    /// Also fetches from every peer of `swarm` that holds chunks of the
    /// blob `hash` (the partial's). Needs a verified download: peers'
    /// chunks are checked against `hash` as they arrive.
    pub fn with_peers(mut self, swarm: Swarm, hash: Hash) -> Self {
        debug_assert!(self.outboard.is_some(), "peers serve verified downloads");
        self.peers = Some(Peers { swarm, hash });
        self
    }

    /// Runs until the partial is complete, every source is given up, or
    /// `cancel` fires. Chunks written stay written either way; the caller
    /// commits and finishes the partial.
    ///
    /// # Errors
    /// See [`DownloadError`].
    pub async fn run(self, cancel: CancellationToken) -> Result<(), DownloadError> {
        if self.partial.is_complete() {
            return Ok(());
        }
        let partial = Arc::clone(&self.partial);
        let pieces = Pieces::new(chunk_count(partial.size()), self.piece_chunks(), |chunks| {
            chunks.clone().any(|chunk| !partial.has_chunk(chunk))
        });
        let sources = self
            .mirrors
            .iter()
            .enumerate()
            .map(|(index, mirror)| {
                Source::new(Kind::Mirror {
                    index,
                    probe: mirror.probe.clone(),
                    streaming_whole: false,
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            work: Mutex::new(Work {
                pieces,
                sources,
                changed: None,
                last_progress: Instant::now(),
                peers_asked: false,
            }),
            wake: Notify::new(),
        });
        let this = Arc::new(self);
        let mut workers = JoinSet::new();
        for source in 0..this.mirrors.len() {
            this.spawn_workers(source, &shared, &mut workers);
        }
        let (joined_tx, mut joined) = mpsc::channel(16);
        let finder = this.peers.clone().map(|peers| {
            tokio::spawn(peer::find(
                peers,
                Arc::clone(&shared),
                chunk_count(this.partial.size()),
                joined_tx,
            ))
        });
        let outcome = this
            .supervise(&shared, &mut workers, &mut joined, &cancel)
            .await;
        if let Some(finder) = finder {
            finder.abort();
        }
        workers.abort_all();
        while workers.join_next().await.is_some() {}
        this.writes_settled().await;
        outcome?;
        if this.partial.is_complete() {
            return Ok(());
        }
        let mut work = shared.lock();
        if let Some(changed) = work.changed.take() {
            return Err(DownloadError::Changed(changed));
        }
        let failures = work
            .sources
            .iter()
            .map(|source| {
                let name = match &source.kind {
                    Kind::Mirror { index, .. } => this.mirrors[*index].url.to_string(),
                    Kind::Peer { peer, .. } => format!("peer {peer}"),
                };
                format!(
                    "{name}: {}",
                    source
                        .dropped
                        .as_deref()
                        .unwrap_or("has no chunk still missing")
                )
            })
            .collect();
        Err(DownloadError::NoSourceLeft(failures))
    }

    /// Watches the workers until the blob is complete, no source is left,
    /// `cancel` fires or the store fails; starts workers for peers as
    /// they are found.
    async fn supervise(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        workers: &mut JoinSet<Result<(), p2pmodel_store::Error>>,
        joined: &mut mpsc::Receiver<usize>,
        cancel: &CancellationToken,
    ) -> Result<(), DownloadError> {
        let mut tick = tokio::time::interval(STALL_CHECK);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Err(DownloadError::Cancelled),
                Some(joined) = workers.join_next(), if !workers.is_empty() => {
                    if let Ok(Err(error)) = joined {
                        return Err(DownloadError::Store(error));
                    }
                }
                Some(source) = joined.recv() => self.spawn_workers(source, shared, workers),
                _ = tick.tick() => {}
            }
            if self.partial.is_complete() {
                return Ok(());
            }
            let work = shared.lock();
            if work.changed.is_some() {
                return Ok(());
            }
            if self.peers.is_none() {
                // Mirrors only: done when every worker has stopped.
                if workers.is_empty() {
                    return Ok(());
                }
                continue;
            }
            let idle = work.pieces.in_flight() == 0;
            let stalled = work.last_progress.elapsed() > STALL_LIMIT;
            // Peers must have been asked once before giving up on them.
            let hopeless = work.peers_asked && !work.any_hope();
            if idle && (stalled || hopeless) {
                return Ok(());
            }
        }
    }

    fn spawn_workers(
        self: &Arc<Self>,
        source: usize,
        shared: &Arc<Shared>,
        workers: &mut JoinSet<Result<(), p2pmodel_store::Error>>,
    ) {
        for _ in 0..self.config.parallel {
            workers.spawn(Arc::clone(self).worker(source, Arc::clone(shared)));
        }
    }

    /// Waits until no write started by an aborted worker is still running,
    /// so that nothing touches the partial after `run` returns.
    async fn writes_settled(&self) {
        let _all = self.writes.acquire_many(MAX_WRITES as u32).await;
    }

    async fn worker(
        self: Arc<Self>,
        source: usize,
        shared: Arc<Shared>,
    ) -> Result<(), p2pmodel_store::Error> {
        let mut helping = false;
        loop {
            let (pick, result) = match self.next(source, &shared, &mut helping).await {
                Next::Stop => return Ok(()),
                Next::WholeFile => {
                    let result = self.whole_file(source, &shared).await;
                    (None, result)
                }
                Next::Piece(pick) => {
                    let started = Instant::now();
                    let result = tokio::select! {
                        result = self.fetch_piece(source, &shared, &pick) => result,
                        // Another source finished it first (the endgame).
                        () = pick.done.cancelled() => Err(Failure::Beaten),
                    };
                    (Some((pick, started.elapsed())), result)
                }
            };
            let backoff = {
                let mut work = shared.lock();
                if let Some((pick, elapsed)) = &pick {
                    let status = &mut work.sources[source];
                    if result.is_ok() {
                        let bytes = (pick.chunks.end - pick.chunks.start) * CHUNK_SIZE;
                        status.measured(bytes, *elapsed, status.in_flight);
                    }
                    status.in_flight -= 1;
                    match &result {
                        Ok(()) => work.pieces.finished(pick.pieces.clone()),
                        Err(_) => work.pieces.released(pick.pieces.clone(), source),
                    }
                }
                match result {
                    Ok(()) => {
                        work.sources[source].failures = 0;
                        work.last_progress = Instant::now();
                        None
                    }
                    Err(Failure::Store(error)) => {
                        drop(work);
                        shared.wake.notify_waiters();
                        return Err(error);
                    }
                    Err(Failure::Requeue | Failure::Beaten) => None,
                    Err(Failure::Busy) => Some(Duration::from_millis(100)),
                    Err(Failure::Lacks) => {
                        if let (Some((pick, _)), Kind::Peer { held, .. }) =
                            (&pick, &mut work.sources[source].kind)
                        {
                            // Asked again at the next refresh.
                            for chunk in pick.chunks.clone() {
                                held.clear(chunk);
                            }
                        }
                        // A peer that keeps refusing what it claims to hold
                        // (bytes that rotted on its disk) is given up.
                        let error = "refused chunks it said it held".to_owned();
                        self.peer_failed(source, &mut work, error, false)
                    }
                    Err(Failure::Mirror(error)) => self.mirror_failed(source, &mut work, error),
                    Err(Failure::Peer { error, fatal }) => {
                        self.peer_failed(source, &mut work, error, fatal)
                    }
                }
            };
            shared.wake.notify_waiters();
            if let Some(backoff) = backoff {
                tokio::time::sleep(backoff).await;
            }
        }
    }

    /// Waits for work for `source`: a piece, the whole file, or the end.
    ///
    /// A source holding the whole blob (a mirror, a seed) leaves pieces
    /// that a peer still fetching holds to that peer, so that a seed's
    /// upload goes to what only seeds have and the other peers' uploads
    /// are used; `helping` (the worker's own flag) turns on when such
    /// pieces have waited [`DEFER_TO_PEERS`] with nobody taking them (the
    /// peers are busy or slow), and off again once the source finds a
    /// piece no such peer holds. The wait has one deadline: pieces that
    /// come back meanwhile wake the worker but do not restart it.
    async fn next(&self, source: usize, shared: &Shared, helping: &mut bool) -> Next {
        let mut help_at: Option<Instant> = None;
        loop {
            let notified = shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deferred = {
                let mut guard = shared.lock();
                let work = &mut *guard;
                if work.sources[source].dropped.is_some()
                    || work.changed.is_some()
                    || self.partial.is_complete()
                {
                    return Next::Stop;
                }
                if let Kind::Mirror {
                    probe,
                    streaming_whole,
                    ..
                } = &mut work.sources[source].kind
                {
                    if !probe.ranges {
                        // One sequential stream of the whole file per
                        // mirror; its other workers retire.
                        if *streaming_whole {
                            return Next::Stop;
                        }
                        *streaming_whole = true;
                        return Next::WholeFile;
                    }
                }
                let Work {
                    pieces, sources, ..
                } = work;
                let me = &sources[source];
                let piece_bytes = self.piece_chunks() * CHUNK_SIZE;
                let whole = self.peers.is_some() && me.holds_everything();
                let partial_peers = sources
                    .iter()
                    .any(|s| matches!(s.kind, Kind::Peer { .. }) && !s.holds_everything());
                // A seed (a peer with the whole blob) that peers still
                // fetching can relieve gets one piece at a time: its uplink
                // is the crowd's to share. Mirrors keep their pipeline.
                let seed = whole && matches!(me.kind, Kind::Peer { .. });
                let depth = if seed && partial_peers {
                    1
                } else {
                    me.pipeline(self.config.parallel, piece_bytes)
                };
                let full = me.in_flight >= depth;
                // A peer still fetching that holds the piece and has room
                // in its pipeline for it.
                let elsewhere = |chunks: Range<u64>| {
                    sources.iter().any(|s| {
                        matches!(s.kind, Kind::Peer { .. })
                            && !s.holds_everything()
                            && s.dropped.is_none()
                            && s.in_flight < s.pipeline(self.config.parallel, piece_bytes)
                            && s.serves(chunks.clone())
                    })
                };
                let serves = |chunks: Range<u64>| {
                    me.serves(chunks.clone()) && (!whole || *helping || !elsewhere(chunks))
                };
                let holders = |chunks: Range<u64>| {
                    sources
                        .iter()
                        .filter(|s| matches!(s.kind, Kind::Peer { .. }) && s.serves(chunks.clone()))
                        .count()
                };
                // With no peer fetching to hand pieces on sooner, a source
                // holding everything asks for several at once.
                let run = if whole && !partial_peers {
                    me.run_length(self.config.parallel, piece_bytes)
                } else {
                    1
                };
                // Enough in flight for this source: wait for one back.
                while let Some(mut pick) = (!full)
                    .then(|| pieces.pick(source, serves, holders))
                    .flatten()
                {
                    pieces.extend(&mut pick, source, run, serves);
                    if pick
                        .chunks
                        .clone()
                        .any(|chunk| !self.partial.has_chunk(chunk))
                    {
                        if !elsewhere(pick.chunks.clone()) {
                            *helping = false;
                        }
                        sources[source].in_flight += 1;
                        return Next::Piece(pick);
                    }
                    // Written meanwhile (by a whole-file stream).
                    pieces.finished(pick.pieces);
                }
                // A peer with nothing wanted left to serve overtakes a
                // piece that only a whole source (shared by the crowd, so
                // slow for each) is fetching.
                if !full && !whole && matches!(me.kind, Kind::Peer { .. }) {
                    let slow = |taker: usize| sources[taker].holds_everything();
                    if let Some(pick) = pieces.overtake(source, |chunks| me.serves(chunks), slow) {
                        sources[source].in_flight += 1;
                        return Next::Piece(pick);
                    }
                }
                if self.peers.is_none() && pieces.in_flight() == 0 {
                    // Mirrors only, and nothing in flight can come back.
                    return Next::Stop;
                }
                !full && whole && pieces.wanted().any(|chunks| me.serves(chunks))
            };
            if deferred {
                let deadline = *help_at.get_or_insert_with(|| Instant::now() + DEFER_TO_PEERS);
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep_until(deadline) => *helping = true,
                }
            } else {
                help_at = None;
                notified.await;
            }
        }
    }

    /// Records a failure of mirror `source`; returns the pause before its
    /// next request, or `None` when the mirror is done for.
    fn mirror_failed(
        &self,
        source: usize,
        work: &mut Work,
        error: MirrorError,
    ) -> Option<Duration> {
        let status = &mut work.sources[source];
        let Kind::Mirror { index, probe, .. } = &mut status.kind else {
            unreachable!("mirror failures come from mirrors");
        };
        let url = &self.mirrors[*index].url;
        if let MirrorError::Changed { .. } = error {
            if self.outboard.is_none() {
                tracing::warn!(%error, "content changed under an unverified download");
                status.dropped = Some(error.to_string());
                work.changed = Some(error);
                return None;
            }
            // Verified: bytes of the new content are checked anyway; learn
            // the new validator on the next probe.
            probe.validator = None;
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

    /// Records a failure of peer `source`, as [`Download::mirror_failed`].
    fn peer_failed(
        &self,
        source: usize,
        work: &mut Work,
        error: String,
        fatal: bool,
    ) -> Option<Duration> {
        let status = &mut work.sources[source];
        let Kind::Peer { peer, .. } = &status.kind else {
            unreachable!("peer failures come from peers");
        };
        if !fatal {
            status.failures += 1;
            if status.failures < self.client.config().max_failures {
                tracing::debug!(%peer, %error, failures = status.failures, "retrying peer");
                return Some(self.client.config().backoff_for(status.failures));
            }
        }
        tracing::warn!(%peer, %error, "dropping peer for this blob");
        status.dropped.get_or_insert(error);
        None
    }
}
