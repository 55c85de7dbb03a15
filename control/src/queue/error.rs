//! [`QueueError`]: why a queue operation was refused.

use p2pmodel_node::NodeError;

use super::persist::PersistError;
use crate::job::{JobId, JobState};

/// Why a queue operation was refused. Each variant has a stable
/// [`code`](QueueError::code) that the control API returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// No job has this id.
    #[error("no job {0}")]
    UnknownJob(JobId),
    /// The queue holds its maximum of waiting jobs.
    #[error("the queue is full ({0} jobs wait); retry when some have started, or raise the limit")]
    QueueFull(usize),
    /// The operation does not apply to a job in this state.
    #[error("job {id} is {state}; {hint}")]
    WrongState {
        /// The job.
        id: JobId,
        /// Its state.
        state: JobState,
        /// What the caller can do instead.
        hint: &'static str,
    },
    /// The target cannot be fetched as given (an `hf://` name that does not
    /// parse, say).
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    /// The node refused (it is suspended, or shutting down).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The queue file could not be written; the change holds in memory only.
    #[error("the queue could not be saved: {0}")]
    Persist(#[from] PersistError),
}

impl QueueError {
    /// A stable `snake_case` code for this kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            QueueError::UnknownJob(_) => "unknown_job",
            QueueError::QueueFull(_) => "queue_full",
            QueueError::WrongState { .. } => "wrong_state",
            QueueError::InvalidTarget(_) => "invalid_target",
            QueueError::Node(NodeError::Lifecycle(_)) => "node_not_active",
            QueueError::Node(NodeError::Shutdown) => "shutting_down",
            QueueError::Node(NodeError::ResumeFailed(_)) => "resume_failed",
            QueueError::Node(_) => "node_error",
            QueueError::Persist(_) => "persist_failed",
        }
    }
}
