//! [`Node`]: the in-process library node. Many callers, one transfer per
//! hash, pause and clear per caller, and a lifecycle gate.
//!
//! # Who owns what
//!
//! A `Node` is a cheap handle on shared state: the store, the transfer
//! table and the lifecycle. Each transfer is one task (see [`transfer`])
//! keyed by what it fetches (a hash, or a URL); callers are its
//! subscribers, each with its own [`RequestId`] and reply. The transfer
//! stops when its last subscriber leaves; a later fetch of the same key
//! waits for the stopping one to commit, then resumes its partial.
//!
//! A model is one transfer for its manifest whose files are fetched as
//! internal subscriptions to per-file transfers, so a file asked for on its
//! own and as part of a model still moves once.
//!
//! # Lifecycle
//!
//! `suspend` refuses new work, ends every attempt (HTTP requests stop now),
//! drops the HTTP client so that idle connections close, and waits until
//! no attempt runs. Transfers then wait; `resume` builds a new client and
//! they continue from their partials by themselves.

mod error;
mod lifecycle;
mod request;
mod transfer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use p2pmodel_protocol::Hash;
use p2pmodel_store::Store;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio_util::sync::CancellationToken;
use url::Url;

pub use error::{NodeError, SpawnError};
pub use lifecycle::LifecycleState;
pub use request::{FetchHandle, FetchRequest, RequestId};

use crate::bandwidth::Bandwidth;
use crate::fetch::{Fetcher, FetcherConfig};
use crate::hf::Hub;
use crate::progress::ProgressTracker;
use crate::swarm::{Swarm, SwarmConfig};
use request::TransferKey;
use transfer::Transfer;

/// A check run by [`Node::resume`] before the node reopens (for example,
/// "is the network back?"). An error keeps the node suspended.
pub type ResumeCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Builds a [`Node`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use p2pmodel_node::{FetchRequest, NodeBuilder};
///
/// let node = NodeBuilder::new("/var/lib/models")
///     .max_concurrent_transfers(2)
///     .bandwidth(50 << 20)
///     .spawn()?;
/// let hash = "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f".parse()?;
/// let mirror = "http://127.0.0.1:8080/model.bin".parse()?;
/// let handle = node.fetch(FetchRequest::hash(hash).with_mirror(mirror))?;
/// println!("{} started", handle.id());
/// let path = handle.await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct NodeBuilder {
    store: PathBuf,
    mirrors: Vec<Url>,
    max_transfers: usize,
    bandwidth: Option<u64>,
    fetcher: FetcherConfig,
    resume_check: Option<ResumeCheck>,
    hub: Option<Hub>,
    swarm: Option<SwarmConfig>,
}

impl NodeBuilder {
    /// A node on the store folder `store` (created if needed).
    pub fn new(store: impl Into<PathBuf>) -> Self {
        Self {
            store: store.into(),
            mirrors: Vec::new(),
            max_transfers: 4,
            bandwidth: None,
            fetcher: FetcherConfig::default(),
            resume_check: None,
            hub: None,
            swarm: None,
        }
    }

    /// Joins the swarm: serves the store's verified chunks to peers as
    /// `config` says (where it listens, how fast it uploads), and fetches
    /// from every connected peer that holds what it needs.
    pub fn swarm(mut self, config: SwarmConfig) -> Self {
        self.swarm = Some(config);
        self
    }

    /// The Hugging Face Hub for `hf://` names (default: `HF_ENDPOINT` and
    /// `HF_TOKEN` from the environment when the node is spawned). Its token
    /// goes to the Hub's origin only.
    pub fn hub(mut self, hub: Hub) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Adds a content-addressed mirror: a blob `HASH` is looked for at
    /// `BASE/HASH` on every fetch by hash.
    pub fn mirror(mut self, base: Url) -> Self {
        self.mirrors.push(base);
        self
    }

    /// Transfers that move bytes at once (at least 1; default 4); the
    /// others wait their turn in the `Queued` phase.
    pub fn max_concurrent_transfers(mut self, transfers: usize) -> Self {
        self.max_transfers = transfers.max(1);
        self
    }

    /// One budget for every transfer of the node, in bytes per second.
    pub fn bandwidth(mut self, bytes_per_second: u64) -> Self {
        self.bandwidth = Some(bytes_per_second);
        self
    }

    /// HTTP and download settings.
    pub fn fetcher_config(mut self, config: FetcherConfig) -> Self {
        self.fetcher = config;
        self
    }

    /// A check that [`Node::resume`] runs before reopening.
    pub fn resume_check(mut self, check: ResumeCheck) -> Self {
        self.resume_check = Some(check);
        self
    }

    /// Opens the store and starts the node (and its swarm, if asked for).
    /// Call within a tokio runtime.
    ///
    /// # Errors
    /// When the store cannot be opened (another process holds it, say) or
    /// the swarm cannot listen.
    pub fn spawn(self) -> Result<Node, SpawnError> {
        let hub = match self.hub {
            Some(hub) => hub,
            None => Hub::from_env().map_err(|error| SpawnError::HubEndpoint(error.to_string()))?,
        };
        let store = Store::open(&self.store)?;
        let swarm = match self.swarm {
            Some(config) => Some(Swarm::spawn(store.clone(), config)?),
            None => None,
        };
        let mut config = self.fetcher;
        config.http = config.http.with_bearer(hub.bearer());
        if let Some(rate) = self.bandwidth {
            config.download = config.download.with_bandwidth(Some(Bandwidth::new(rate)));
        }
        let fetcher = new_fetcher(&store, &config, swarm.as_ref());
        let shared = Shared {
            store,
            swarm,
            config,
            mirrors: self.mirrors,
            hub,
            tables: Mutex::new(Tables {
                transfers: HashMap::new(),
                stopping: Vec::new(),
                requests: HashMap::new(),
                fetcher: Some(fetcher),
                next_generation: 0,
            }),
            lifecycle: watch::channel(LifecycleState::Active).0,
            lifecycle_ops: tokio::sync::Mutex::new(()),
            attempts: watch::channel(0).0,
            permits: Arc::new(Semaphore::new(self.max_transfers)),
            resume_check: self.resume_check,
            next_request: AtomicU64::new(1),
            shut_down: AtomicBool::new(false),
        };
        Ok(Node {
            shared: Arc::new(shared),
        })
    }
}

/// The in-process p2pmodel node. Cloning is shallow; every clone drives
/// the same transfers. See the module docs for the model.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("store", &self.shared.store.root())
            .field("state", &self.state())
            .finish()
    }
}

struct Shared {
    store: Store,
    swarm: Option<Swarm>,
    config: FetcherConfig,
    mirrors: Vec<Url>,
    hub: Hub,
    tables: Mutex<Tables>,
    lifecycle: watch::Sender<LifecycleState>,
    /// Serialises `suspend` and `resume`.
    lifecycle_ops: tokio::sync::Mutex<()>,
    /// Attempts moving bytes now; `suspend` waits for zero.
    attempts: watch::Sender<usize>,
    permits: Arc<Semaphore>,
    resume_check: Option<ResumeCheck>,
    next_request: AtomicU64,
    /// Set by `shutdown`: every call fails with `Shutdown` from then on.
    shut_down: AtomicBool,
}

struct Tables {
    transfers: HashMap<TransferKey, Transfer>,
    /// Transfers whose subscribers all left, still committing.
    stopping: Vec<Transfer>,
    requests: HashMap<RequestId, TransferKey>,
    /// `None` while suspended: dropping the client closes its connections.
    fetcher: Option<Fetcher>,
    next_generation: u64,
}

impl Node {
    /// The store the node writes into.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The node's swarm, if it joined one ([`NodeBuilder::swarm`]).
    pub fn swarm(&self) -> Option<&Swarm> {
        self.shared.swarm.as_ref()
    }

    /// Starts or joins the transfer for `request`. Returns at once, before
    /// any I/O, with the caller's id and progress; await the handle for the
    /// path of the result.
    ///
    /// # Errors
    /// [`NodeError::Lifecycle`] unless the node is active.
    pub fn fetch(&self, request: FetchRequest) -> Result<FetchHandle, NodeError> {
        self.gate()?;
        Ok(self.subscribe(request))
    }

    /// Ends the call `id` alone: a pause. Its caller gets
    /// [`NodeError::Cancelled`]; other callers of the same transfer go on,
    /// and when none is left the transfer stops and keeps its partial.
    ///
    /// # Errors
    /// [`NodeError::Lifecycle`] unless active, [`NodeError::UnknownRequest`].
    pub fn cancel(&self, id: RequestId) -> Result<(), NodeError> {
        self.gate()?;
        self.leave(id, false)
    }

    /// Like [`Node::cancel`], and the partial is discarded as soon as no
    /// caller wants the transfer any more.
    ///
    /// # Errors
    /// [`NodeError::Lifecycle`] unless active, [`NodeError::UnknownRequest`].
    pub fn cancel_and_clear(&self, id: RequestId) -> Result<(), NodeError> {
        self.gate()?;
        self.leave(id, true)
    }

    /// Cancels every caller of the blob or model `hash`; returns how many.
    ///
    /// # Errors
    /// [`NodeError::Lifecycle`] unless active.
    pub fn cancel_hash(&self, hash: Hash) -> Result<usize, NodeError> {
        self.gate()?;
        let ids: Vec<RequestId> = {
            let tables = self.tables();
            let key = TransferKey::Hash(hash);
            tables
                .transfers
                .get(&key)
                .map(|t| t.subscribers.keys().copied().collect())
                .unwrap_or_default()
        };
        for id in &ids {
            // A caller may finish between the two locks: then there is
            // nothing left to cancel for it.
            let _ = self.leave(*id, false);
        }
        Ok(ids.len())
    }

    /// The lifecycle state. Never gated.
    pub fn state(&self) -> LifecycleState {
        *self.shared.lifecycle.borrow()
    }

    /// Stops all network activity: new work is refused, HTTP requests end,
    /// connections close, the swarm closes its listeners and connections;
    /// transfers wait and go on after [`Node::resume`]. Idempotent and
    /// never gated; returns once the node is suspended.
    pub async fn suspend(&self) {
        let _serial = self.shared.lifecycle_ops.lock().await;
        if self.state() != LifecycleState::Active {
            return;
        }
        self.shared
            .lifecycle
            .send_replace(LifecycleState::Suspending);
        let client = self.tables().fetcher.take();
        drop(client);
        let mut attempts = self.shared.attempts.subscribe();
        let _ = attempts.wait_for(|running| *running == 0).await;
        if let Some(swarm) = &self.shared.swarm {
            swarm.suspend().await;
        }
        self.shared
            .lifecycle
            .send_replace(LifecycleState::Suspended);
    }

    /// Reopens after [`Node::suspend`]; transfers continue by themselves.
    /// Idempotent and never gated.
    ///
    /// # Errors
    /// [`NodeError::ResumeFailed`] when the resume check fails; the node is
    /// then suspended again and `resume` may be retried.
    pub async fn resume(&self) -> Result<(), NodeError> {
        let _serial = self.shared.lifecycle_ops.lock().await;
        if self.shared.shut_down.load(Ordering::SeqCst) {
            return Err(NodeError::Shutdown);
        }
        if self.state() == LifecycleState::Active {
            return Ok(());
        }
        self.shared.lifecycle.send_replace(LifecycleState::Resuming);
        if let Some(check) = &self.shared.resume_check {
            if let Err(reason) = check() {
                self.shared
                    .lifecycle
                    .send_replace(LifecycleState::Suspended);
                return Err(NodeError::ResumeFailed(reason));
            }
        }
        if let Some(swarm) = &self.shared.swarm {
            if let Err(error) = swarm.resume().await {
                self.shared
                    .lifecycle
                    .send_replace(LifecycleState::Suspended);
                return Err(NodeError::ResumeFailed(error.to_string()));
            }
        }
        let fetcher = new_fetcher(
            &self.shared.store,
            &self.shared.config,
            self.shared.swarm.as_ref(),
        );
        self.tables().fetcher = Some(fetcher);
        self.shared.lifecycle.send_replace(LifecycleState::Active);
        Ok(())
    }

    /// Stops every transfer, commits what each verified, and waits for
    /// them. Callers still waiting get [`NodeError::Shutdown`].
    pub async fn shutdown(self) {
        self.shared.shut_down.store(true, Ordering::SeqCst);
        // Wakes transfers waiting to become active, so they see the end.
        self.shared.lifecycle.send_modify(|_| {});
        let done: Vec<watch::Receiver<bool>> = {
            let mut tables = self.tables();
            let running: Vec<Transfer> = tables.transfers.drain().map(|(_, t)| t).collect();
            for transfer in running {
                transfer.stop.cancel();
                tables.stopping.push(transfer);
            }
            tables.requests.clear();
            tables.stopping.iter().map(|t| t.done.clone()).collect()
        };
        for mut transfer in done {
            let _ = transfer.wait_for(|finished| *finished).await;
        }
        self.tables().fetcher = None;
        if let Some(swarm) = &self.shared.swarm {
            swarm.shutdown().await;
        }
    }

    fn gate(&self) -> Result<(), NodeError> {
        if self.shared.shut_down.load(Ordering::SeqCst) {
            return Err(NodeError::Shutdown);
        }
        match self.state() {
            LifecycleState::Active => Ok(()),
            state => Err(NodeError::Lifecycle(state)),
        }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.shared
            .tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a subscriber to the transfer for `request`, starting one if
    /// none runs (after the stopping one for the same key, if any, ends).
    fn subscribe(&self, request: FetchRequest) -> FetchHandle {
        let id = RequestId(self.shared.next_request.fetch_add(1, Ordering::Relaxed));
        let (reply, result) = oneshot::channel();
        let key = request.key();
        let mut tables = self.tables();
        tables.requests.insert(id, key.clone());
        if let Some(transfer) = tables.transfers.get_mut(&key) {
            transfer.subscribers.insert(
                id,
                transfer::Subscriber {
                    reply,
                    output: request.output,
                },
            );
            return FetchHandle {
                id,
                progress: transfer.progress.subscribe(),
                result,
            };
        }
        let previous = tables
            .stopping
            .iter()
            .rev()
            .find(|t| t.key == key)
            .map(|t| t.done.clone());
        let generation = tables.next_generation;
        tables.next_generation += 1;
        let progress = ProgressTracker::new();
        let stop = CancellationToken::new();
        let (done_tx, done) = watch::channel(false);
        let mut subscribers = HashMap::new();
        subscribers.insert(
            id,
            transfer::Subscriber {
                reply,
                output: request.output.clone(),
            },
        );
        let transfer = Transfer {
            generation,
            key: key.clone(),
            subscribers,
            progress: progress.clone(),
            stop: stop.clone(),
            clear: false,
            done,
        };
        let handle = FetchHandle {
            id,
            progress: progress.subscribe(),
            result,
        };
        tables.transfers.insert(key, transfer);
        drop(tables);
        let spec = transfer::Spec {
            generation,
            target: request.target,
            mirrors: request.mirrors,
            peers: request.peers,
        };
        tokio::spawn(transfer::run(
            self.clone(),
            spec,
            progress,
            stop,
            previous,
            done_tx,
        ));
        handle
    }

    /// Removes subscriber `id`; stops its transfer when it was the last.
    fn leave(&self, id: RequestId, clear: bool) -> Result<(), NodeError> {
        let mut tables = self.tables();
        let key = tables
            .requests
            .remove(&id)
            .ok_or(NodeError::UnknownRequest(id))?;
        let Some(transfer) = tables.transfers.get_mut(&key) else {
            return Err(NodeError::UnknownRequest(id));
        };
        transfer.clear |= clear;
        if let Some(subscriber) = transfer.subscribers.remove(&id) {
            let _ = subscriber.reply.send(Err(NodeError::Cancelled));
        }
        if transfer.subscribers.is_empty() {
            let transfer = tables.transfers.remove(&key).expect("looked up above");
            transfer.stop.cancel();
            tables.stopping.push(transfer);
        }
        Ok(())
    }
}

/// A fetcher for the node's store, settings and swarm.
fn new_fetcher(store: &Store, config: &FetcherConfig, swarm: Option<&Swarm>) -> Fetcher {
    let fetcher = Fetcher::new(store.clone(), config.clone());
    match swarm {
        Some(swarm) => fetcher.with_swarm(swarm.clone()),
        None => fetcher,
    }
}
