//! What a caller asks a [`Node`](super::Node) for, and the handle it gets back.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use libp2p::Multiaddr;
use p2pmodel_protocol::{Hash, Sha256};
use tokio::sync::{oneshot, watch};
use url::Url;

use super::NodeError;
use crate::fetch::Fetched;
use crate::hf::HfRef;
use crate::progress::Progress;

/// Names one call to [`Node::fetch`](super::Node::fetch). Unique within one
/// node for its lifetime; it is how a caller cancels its own call without
/// touching anyone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "req-{}", self.0)
    }
}

/// What to fetch: a blob or model by hash (with mirrors), or a plain URL.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub(crate) target: Target,
    pub(crate) mirrors: Vec<Url>,
    pub(crate) peers: Vec<Multiaddr>,
    pub(crate) output: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub(crate) enum Target {
    Hash(Hash),
    Url { url: Url, sha256: Option<Sha256> },
    Hf(HfRef),
}

/// What a transfer is shared by: every request with the same key joins
/// the same transfer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum TransferKey {
    Hash(Hash),
    Url(String),
}

impl FetchRequest {
    /// The blob or model named `hash`.
    pub fn hash(hash: Hash) -> Self {
        Self {
            target: Target::Hash(hash),
            mirrors: Vec::new(),
            peers: Vec::new(),
            output: None,
        }
    }

    /// The content of a plain URL (its hash is learnt on the way).
    pub fn url(url: Url) -> Self {
        Self {
            target: Target::Url { url, sha256: None },
            mirrors: Vec::new(),
            peers: Vec::new(),
            output: None,
        }
    }

    /// A Hugging Face file, folder or repository (`hf://ORG/REPO[@REV][/PATH]`):
    /// one file is fetched as a blob, several as a model.
    pub fn hf(name: HfRef) -> Self {
        Self {
            target: Target::Hf(name),
            mirrors: Vec::new(),
            peers: Vec::new(),
            output: None,
        }
    }

    /// Adds a mirror serving the blob (or the model's manifest).
    pub fn with_mirror(mut self, mirror: Url) -> Self {
        self.mirrors.push(mirror);
        self
    }

    /// Adds mirrors.
    pub fn with_mirrors(mut self, mirrors: impl IntoIterator<Item = Url>) -> Self {
        self.mirrors.extend(mirrors);
        self
    }

    /// Adds a peer to dial (a multiaddr, with or without `/p2p/PEER_ID`)
    /// before fetching by hash; every connected peer is asked anyway. Needs
    /// a node that joined the swarm ([`NodeBuilder::swarm`](super::NodeBuilder::swarm)).
    pub fn with_peer(mut self, peer: Multiaddr) -> Self {
        self.peers.push(peer);
        self
    }

    /// Adds peers to dial, as [`FetchRequest::with_peer`].
    pub fn with_peers(mut self, peers: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.peers.extend(peers);
        self
    }

    /// For a URL: the SHA-256 its content must have.
    pub fn with_sha256(mut self, sha256: Sha256) -> Self {
        if let Target::Url { sha256: slot, .. } = &mut self.target {
            *slot = Some(sha256);
        }
        self
    }

    /// Exports the result here (a file for a blob, a folder for a model)
    /// instead of answering with its place in the store.
    pub fn with_output(mut self, output: impl Into<PathBuf>) -> Self {
        self.output = Some(output.into());
        self
    }

    pub(crate) fn key(&self) -> TransferKey {
        match &self.target {
            Target::Hash(hash) => TransferKey::Hash(*hash),
            Target::Url { url, .. } => TransferKey::Url(url.to_string()),
            Target::Hf(name) => TransferKey::Url(name.to_string()),
        }
    }
}

/// One caller's view of a transfer: its id (known before any I/O), its
/// progress, and, when awaited, the result: its hash and path (the export
/// the caller asked for, or the store's copy).
///
/// Dropping the handle does not cancel the call; use
/// [`Node::cancel`](super::Node::cancel) with [`FetchHandle::id`].
#[derive(Debug)]
pub struct FetchHandle {
    pub(crate) id: RequestId,
    pub(crate) progress: watch::Receiver<Progress>,
    pub(crate) result: oneshot::Receiver<Result<Fetched, NodeError>>,
}

impl FetchHandle {
    /// This call's id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The transfer's progress: the current snapshot at once (also when
    /// joining a transfer already running), then every change.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }
}

impl Future for FetchHandle {
    type Output = Result<Fetched, NodeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.result)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(NodeError::Shutdown)))
    }
}
