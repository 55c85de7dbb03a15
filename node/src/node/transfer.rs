//! One transfer: the task that fetches one key for all its subscribers,
//! pausing while the node is suspended and answering each subscriber at
//! the end.
//!
//! The task goes: wait for the transfer before it on the same key (if that
//! one is still committing) -> attempts, each with a fresh client from the
//! node and a transfer slot while it moves bytes, until one ends other than
//! by suspension ->
//! answer subscribers (exporting for those who asked) -> discard the
//! partial if a leaving subscriber asked to clear it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;

use p2pmodel_protocol::{Hash, Manifest};
use p2pmodel_store::PartialKey;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::request::{FetchHandle, FetchRequest, Target, TransferKey};
use super::{LifecycleState, Node, NodeError, RequestId};
use crate::error::FetchError;
use crate::fetch::{Fetched, Fetcher, HfFetched, sibling};
use crate::jitter::jittered;
use crate::progress::{Phase, Progress, ProgressTracker, SourceProgress};

/// Longest wait for a peer given with the request to answer a dial.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the peers given with a request are dialed again.
const REDIAL_INTERVAL: Duration = Duration::from_secs(3);
/// With no mirror, how long a fetch keeps dialing peers given with the
/// request that turned it away before it starts without them (a seed in a
/// flash crowd turns away handshakes beyond its limit).
const FIRST_DIAL_PATIENCE: Duration = Duration::from_secs(10);

/// A running or stopping transfer, as the node's table holds it.
pub(crate) struct Transfer {
    pub(crate) generation: u64,
    pub(crate) key: TransferKey,
    pub(crate) subscribers: HashMap<RequestId, Subscriber>,
    pub(crate) progress: ProgressTracker,
    pub(crate) stop: CancellationToken,
    /// A leaving subscriber asked to discard the partial.
    pub(crate) clear: bool,
    /// Turns true when the task has ended (and committed).
    pub(crate) done: watch::Receiver<bool>,
}

/// One caller waiting on a transfer.
pub(crate) struct Subscriber {
    pub(crate) reply: oneshot::Sender<Result<Fetched, NodeError>>,
    pub(crate) output: Option<PathBuf>,
}

/// What the task fetches.
pub(crate) struct Spec {
    pub(crate) generation: u64,
    pub(crate) target: Target,
    pub(crate) mirrors: Vec<Url>,
    pub(crate) peers: Vec<Multiaddr>,
}

/// What a successful transfer produced.
enum Done {
    Blob(Hash),
    Model(Hash),
}

/// The transfer task.
pub(crate) async fn run(
    node: Node,
    spec: Spec,
    progress: ProgressTracker,
    stop: CancellationToken,
    previous: Option<watch::Receiver<bool>>,
    done: watch::Sender<bool>,
) {
    // Answers the subscribers even if this task panics or is dropped, so
    // that no caller waits forever and the key is free again.
    let mut guard = Finish {
        node: Some(node),
        generation: spec.generation,
        done,
    };
    if let Some(mut previous) = previous {
        let _ = previous.wait_for(|finished| *finished).await;
    }
    let node = guard.node.clone().expect("set above");
    let outcome = drive(&node, &spec, &progress, &stop).await;
    drop(node);
    guard.finish(outcome);
}

/// Finishes a transfer exactly once: with its outcome, or, if the task
/// ends without one, with an error for every subscriber.
struct Finish {
    node: Option<Node>,
    generation: u64,
    done: watch::Sender<bool>,
}

impl Finish {
    fn finish(&mut self, outcome: Result<Done, FetchError>) {
        if let Some(node) = self.node.take() {
            node.finish(self.generation, outcome);
            // Let go of the store before saying so: after `shutdown`
            // returns, the store can be opened again.
            drop(node);
            self.done.send_replace(true);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let lost = FetchError::Sources(vec!["the transfer task ended unexpectedly".into()]);
        self.finish(Err(lost));
    }
}

async fn drive(
    node: &Node,
    spec: &Spec,
    progress: &ProgressTracker,
    stop: &CancellationToken,
) -> Result<Done, FetchError> {
    loop {
        let Some((fetcher, _running)) = node.wait_active(stop).await else {
            return Err(FetchError::Cancelled);
        };
        let attempt = stop.child_token();
        // Each attempt reports into its own tracker (sizes are counted
        // afresh); the transfer's tracker shows the latest attempt.
        let tracker = ProgressTracker::new();
        let forward = tokio::spawn(forward(tracker.subscribe(), progress.clone()));
        let result = {
            let work = fetch(node, &fetcher, spec, &tracker, attempt.clone());
            tokio::pin!(work);
            tokio::select! {
                result = &mut work => result,
                () = node.left_active() => {
                    attempt.cancel();
                    work.await
                }
            }
        };
        forward.abort();
        progress.set(tracker.snapshot());
        // The last clones of a suspended node's client go here, closing
        // its connections.
        drop(fetcher);
        match result {
            Err(FetchError::Cancelled) if !stop.is_cancelled() => progress.set_phase(Phase::Paused),
            result => return result,
        }
    }
}

async fn forward(mut from: watch::Receiver<Progress>, to: ProgressTracker) {
    loop {
        to.set(from.borrow_and_update().clone());
        if from.changed().await.is_err() {
            return;
        }
    }
}

/// One attempt at the whole target.
async fn fetch(
    node: &Node,
    fetcher: &Fetcher,
    spec: &Spec,
    progress: &ProgressTracker,
    cancel: CancellationToken,
) -> Result<Done, FetchError> {
    // A slot is held while this transfer moves bytes itself; a model
    // waiting on its files' transfers holds none (they need the slots).
    let slot = node.slot(progress, &cancel).await?;
    match &spec.target {
        Target::Hf(name) => match fetcher
            .fetch_hf(&node.shared.hub, name, progress, cancel)
            .await?
        {
            HfFetched::File(hash) => Ok(Done::Blob(hash)),
            HfFetched::Model(hash) => {
                progress.set_phase(Phase::Complete);
                Ok(Done::Model(hash))
            }
        },
        Target::Url { url, sha256 } => fetcher
            .fetch_url(url, *sha256, progress, cancel)
            .await
            .map(Done::Blob),
        Target::Hash(hash) => {
            let mut mirrors = spec.mirrors.clone();
            mirrors.extend(node.content_mirrors(*hash));
            node.dial(&spec.peers, mirrors.is_empty()).await;
            let fetched = tokio::select! {
                fetched = fetcher.fetch_blob_or_manifest(*hash, &mirrors, progress, cancel.clone()) => fetched?,
                never = node.keep_dialing(&spec.peers) => match never {},
            };
            match fetched {
                Err(_) => {
                    progress.set_phase(Phase::Complete);
                    Ok(Done::Blob(*hash))
                }
                Ok(manifest) => {
                    drop(slot);
                    fetch_model_files(node, spec, &manifest, progress, cancel).await?;
                    Ok(Done::Model(*hash))
                }
            }
        }
    }
}

/// Subscribes to one transfer per file and waits for all of them, showing
/// their sum as the model's progress. A failed file, or this attempt's
/// cancellation, ends the other subscriptions.
async fn fetch_model_files(
    node: &Node,
    spec: &Spec,
    manifest: &Manifest,
    progress: &ProgressTracker,
    cancel: CancellationToken,
) -> Result<(), FetchError> {
    let files: Vec<FetchHandle> = manifest
        .files()
        .iter()
        .map(|file| {
            let mut urls: Vec<Url> = file
                .mirrors
                .iter()
                .filter_map(|m| Url::parse(m).ok())
                .collect();
            urls.extend(
                spec.mirrors
                    .iter()
                    .filter_map(|model_url| sibling(model_url, &file.path)),
            );
            node.subscribe(
                FetchRequest::hash(file.hash)
                    .with_mirrors(urls)
                    .with_peers(spec.peers.iter().cloned()),
            )
        })
        .collect();
    let ids: Vec<RequestId> = files.iter().map(FetchHandle::id).collect();
    let receivers: Vec<watch::Receiver<Progress>> =
        files.iter().map(FetchHandle::progress).collect();
    let manifest_progress = progress.snapshot();
    let total = manifest.total_size();
    let show = || progress.set(sum(&manifest_progress, &receivers, total));
    let mut all = std::pin::pin!(futures_util::future::try_join_all(files));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            result = &mut all => break result.map(|_| ()),
            () = cancel.cancelled() => break Err(NodeError::Cancelled),
            _ = tick.tick() => show(),
        }
    };
    show();
    if result.is_err() {
        let clear = node.is_clearing(spec.generation);
        for id in ids {
            // Files that already finished have nothing left to cancel.
            let _ = node.leave(id, clear);
        }
    }
    match result {
        Ok(()) => {
            progress.set_phase(Phase::Complete);
            Ok(())
        }
        Err(NodeError::Cancelled) => Err(FetchError::Cancelled),
        Err(NodeError::Fetch(error)) => Err(FetchError::Sources(vec![error.to_string()])),
        Err(other) => Err(FetchError::Sources(vec![other.to_string()])),
    }
}

/// The model's progress: the manifest's, plus the sum of its files'.
fn sum(manifest: &Progress, files: &[watch::Receiver<Progress>], total: u64) -> Progress {
    let mut progress = Progress {
        phase: Phase::Downloading,
        done: manifest.done,
        total: manifest.total + total,
        resumed: manifest.resumed,
        bytes_per_second: 0,
        sources: manifest.sources.clone(),
    };
    for file in files {
        let file = file.borrow();
        progress.done += file.done;
        progress.resumed += file.resumed;
        if file.phase != Phase::Complete {
            progress.bytes_per_second += file.bytes_per_second;
        }
        for source in &file.sources {
            match progress
                .sources
                .iter_mut()
                .find(|s| s.source == source.source)
            {
                Some(entry) => entry.bytes += source.bytes,
                None => progress.sources.push(SourceProgress {
                    source: source.source.clone(),
                    bytes: source.bytes,
                }),
            }
        }
    }
    progress
}

/// Counts an attempt as running for as long as it lives.
struct AttemptGuard<'a>(&'a Node);

impl<'a> AttemptGuard<'a> {
    fn new(node: &'a Node) -> Self {
        node.shared.attempts.send_modify(|running| *running += 1);
        Self(node)
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        self.0.shared.attempts.send_modify(|running| *running -= 1);
    }
}

impl Node {
    /// A client to fetch with, once the node is active, and the guard that
    /// counts the attempt as running; `None` if `stop` fires first.
    ///
    /// The client is taken and the attempt counted under the table lock,
    /// the same lock under which `suspend` takes the client away: so
    /// `suspend` either sees this attempt and waits for it, or the attempt
    /// never gets the old client.
    async fn wait_active(&self, stop: &CancellationToken) -> Option<(Fetcher, AttemptGuard<'_>)> {
        let mut lifecycle = self.shared.lifecycle.subscribe();
        loop {
            if self
                .shared
                .shut_down
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return None;
            }
            if *lifecycle.borrow_and_update() == LifecycleState::Active {
                let tables = self.tables();
                if let Some(fetcher) = tables.fetcher.clone() {
                    return Some((fetcher, AttemptGuard::new(self)));
                }
            }
            tokio::select! {
                changed = lifecycle.changed() => changed.ok()?,
                () = stop.cancelled() => return None,
            }
        }
    }

    /// One of the node's transfer slots, showing `Queued` while waiting;
    /// [`FetchError::Cancelled`] if `cancel` fires first.
    async fn slot(
        &self,
        progress: &ProgressTracker,
        cancel: &CancellationToken,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, FetchError> {
        let permits = Arc::clone(&self.shared.permits);
        if let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
            return Ok(permit);
        }
        progress.set_phase(Phase::Queued);
        tokio::select! {
            permit = permits.acquire_owned() => Ok(permit.expect("the semaphore is never closed")),
            () = cancel.cancelled() => Err(FetchError::Cancelled),
        }
    }

    /// Resolves when the node stops being active.
    async fn left_active(&self) {
        let mut lifecycle = self.shared.lifecycle.subscribe();
        let _ = lifecycle
            .wait_for(|state| *state != LifecycleState::Active)
            .await;
    }

    /// Dials `peers` (at once, each for at most a few seconds); a peer that
    /// cannot be reached is logged and left out.
    /// Dials `peers`; with `patient`, those that fail are dialed again
    /// after short random pauses for up to [`FIRST_DIAL_PATIENCE`].
    async fn dial(&self, peers: &[Multiaddr], patient: bool) {
        let deadline = tokio::time::Instant::now() + FIRST_DIAL_PATIENCE;
        let mut failed = self.dial_all(peers).await;
        let mut pause = Duration::from_millis(200);
        while patient && !failed.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(jittered(pause)).await;
            pause = (pause * 2).min(REDIAL_INTERVAL);
            let again: Vec<Multiaddr> = failed.iter().map(|(addr, _)| addr.clone()).collect();
            failed = self.dial_all(&again).await;
        }
        for (addr, error) in failed {
            tracing::warn!(%addr, %error, "cannot reach peer");
        }
    }

    /// Dials `peers` again every few seconds, for peers that were not up
    /// yet or went away (dialing a connected peer opens nothing new).
    /// Never returns; the caller drops it.
    async fn keep_dialing(&self, peers: &[Multiaddr]) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(REDIAL_INTERVAL).await;
            for (addr, error) in self.dial_all(peers).await {
                tracing::debug!(%addr, %error, "still cannot reach peer");
            }
        }
    }

    /// Dials every address at once; returns those that failed, and why.
    async fn dial_all(&self, peers: &[Multiaddr]) -> Vec<(Multiaddr, String)> {
        let Some(swarm) = &self.shared.swarm else {
            let why = "this node has no swarm".to_owned();
            return peers
                .iter()
                .map(|addr| (addr.clone(), why.clone()))
                .collect();
        };
        let dials = peers.iter().map(|addr| async move {
            match tokio::time::timeout(DIAL_TIMEOUT, swarm.dial(addr.clone())).await {
                Ok(Ok(_)) => None,
                Ok(Err(error)) => Some((addr.clone(), error.to_string())),
                Err(_) => Some((addr.clone(), "no answer in time".to_owned())),
            }
        });
        futures_util::future::join_all(dials)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// `BASE/HASH` for each content-addressed mirror of the node.
    fn content_mirrors(&self, hash: Hash) -> Vec<Url> {
        self.shared
            .mirrors
            .iter()
            .filter_map(|base| {
                let mut url = base.clone();
                url.path_segments_mut()
                    .ok()?
                    .pop_if_empty()
                    .push(&hash.to_hex());
                Some(url)
            })
            .collect()
    }

    /// True if and only if the stopping transfer `generation` is to be cleared.
    fn is_clearing(&self, generation: u64) -> bool {
        let tables = self.tables();
        tables
            .stopping
            .iter()
            .any(|t| t.generation == generation && t.clear)
    }

    /// Answers the subscribers of transfer `generation` and removes it;
    /// discards its partial if that was asked.
    fn finish(&self, generation: u64, outcome: Result<Done, FetchError>) {
        let transfer = {
            let mut tables = self.tables();
            let transfer = match tables
                .stopping
                .iter()
                .position(|t| t.generation == generation)
            {
                Some(at) => Some(tables.stopping.remove(at)),
                None => {
                    let key = tables
                        .transfers
                        .iter()
                        .find(|(_, t)| t.generation == generation)
                        .map(|(k, _)| k.clone());
                    key.and_then(|key| tables.transfers.remove(&key))
                }
            };
            let Some(transfer) = transfer else { return };
            for id in transfer.subscribers.keys() {
                tables.requests.remove(id);
            }
            transfer
        };
        match outcome {
            Ok(done) => {
                for subscriber in transfer.subscribers.into_values() {
                    let answer = self.deliver(&done, subscriber.output.as_deref());
                    let _ = subscriber.reply.send(answer);
                }
            }
            Err(FetchError::Cancelled) => {
                if transfer.clear {
                    self.clear(&transfer.key);
                }
                for subscriber in transfer.subscribers.into_values() {
                    let _ = subscriber.reply.send(Err(NodeError::Shutdown));
                }
            }
            Err(error) => {
                let error = NodeError::from(error);
                for subscriber in transfer.subscribers.into_values() {
                    let _ = subscriber.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// What a subscriber gets: its own export, or the store's copy (for a
    /// model, a folder of hard links under `STORE/models/HASH`).
    fn deliver(&self, done: &Done, output: Option<&std::path::Path>) -> Result<Fetched, NodeError> {
        let store = &self.shared.store;
        match done {
            Done::Blob(hash) => {
                let path = match output {
                    Some(path) => {
                        store.export(*hash, path)?;
                        path.to_path_buf()
                    }
                    None => store.blob_path(*hash),
                };
                Ok(Fetched::Blob { hash: *hash, path })
            }
            Done::Model(hash) => {
                let manifest = store
                    .manifest(*hash)?
                    .ok_or(p2pmodel_store::Error::NotFound(*hash))?;
                let folder = output.map_or_else(
                    || store.root().join("models").join(hash.to_hex()),
                    PathBuf::from,
                );
                store.export_model(*hash, &folder)?;
                Ok(Fetched::Model {
                    hash: *hash,
                    manifest,
                    path: folder,
                })
            }
        }
    }

    fn clear(&self, key: &TransferKey) {
        let partial = match key {
            TransferKey::Hash(hash) => PartialKey::Blob(*hash),
            TransferKey::Url(url) => PartialKey::Url(url.clone()),
        };
        if let Err(error) = self.shared.store.discard_partial(&partial) {
            tracing::warn!(%error, "could not discard a cancelled partial");
        }
    }
}
