//! [`NodeError`]: why a call on a [`Node`](super::Node) failed.

use std::sync::Arc;

use super::{LifecycleState, RequestId};
use crate::error::FetchError;

/// Why a call on a node failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// This caller's request was cancelled (by itself or by `cancel_hash`).
    /// Unless it was cancelled with `clear`, the partial stays and the next
    /// fetch of the same hash resumes it.
    #[error("cancelled")]
    Cancelled,
    /// The node is not active (suspended, or on its way in or out); only
    /// `suspend`, `resume` and `state` are accepted.
    #[error("the node is {0}; only suspend, resume and state are accepted")]
    Lifecycle(LifecycleState),
    /// `resume` failed; the node stays suspended and `resume` may be retried.
    #[error("resume failed: {0}; the node stays suspended")]
    ResumeFailed(String),
    /// No request with this id is waiting (it finished or was cancelled).
    #[error("no request {0} is waiting")]
    UnknownRequest(RequestId),
    /// The node shut down before the call finished.
    #[error("the node shut down")]
    Shutdown,
    /// The fetch failed; what was verified stays in the store.
    #[error(transparent)]
    Fetch(Arc<FetchError>),
    /// The store failed (for example while exporting the result).
    #[error(transparent)]
    Store(Arc<p2pmodel_store::Error>),
}

impl From<FetchError> for NodeError {
    fn from(error: FetchError) -> Self {
        match error {
            FetchError::Cancelled => NodeError::Cancelled,
            error => NodeError::Fetch(Arc::new(error)),
        }
    }
}

impl From<p2pmodel_store::Error> for NodeError {
    fn from(error: p2pmodel_store::Error) -> Self {
        NodeError::Store(Arc::new(error))
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The store could not be opened (another process holds it, say).
    #[error(transparent)]
    Store(#[from] p2pmodel_store::OpenError),
    /// The swarm could not start (a listen address is taken, say).
    #[error("starting the swarm")]
    Swarm(#[from] crate::swarm::PeerError),
    /// `HF_ENDPOINT` is not a usable URL.
    #[error("HF_ENDPOINT: {0}")]
    HubEndpoint(String),
}
