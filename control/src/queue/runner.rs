//! Running one job on the node: turning its [`JobSpec`] into a
//! [`FetchRequest`], and the task that follows the transfer's progress and
//! reports its end to the queue.

use std::time::Duration;

use p2pmodel_node::hf::HfRef;
use p2pmodel_node::swarm::Multiaddr;
use p2pmodel_node::{FetchHandle, FetchRequest, Progress, RequestId};
use p2pmodel_protocol::{Hash, Sha256};

use super::error::QueueError;
use super::manager::Queue;
use crate::job::{JobId, JobProgress, JobSpec, Target};

/// How often at most a running job's progress is copied into the queue.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The node request for `spec`.
///
/// # Errors
/// [`QueueError::InvalidTarget`] for a target the node cannot take.
pub fn fetch_request(spec: &JobSpec) -> Result<FetchRequest, QueueError> {
    let invalid = |what: &str, error: &dyn std::fmt::Display| {
        QueueError::InvalidTarget(format!("{what}: {error}"))
    };
    let mut request = match &spec.target {
        Target::Hash { hash } => {
            let hash: Hash = hash.parse().map_err(|e| invalid(hash, &e))?;
            let mirrors = spec
                .mirrors
                .iter()
                .map(|text| text.parse().map_err(|e| invalid(text, &e)))
                .collect::<Result<Vec<url::Url>, _>>()?;
            let peers = spec
                .peers
                .iter()
                .map(|text| text.parse().map_err(|e| invalid(text, &e)))
                .collect::<Result<Vec<Multiaddr>, _>>()?;
            FetchRequest::hash(hash)
                .with_mirrors(mirrors)
                .with_peers(peers)
        }
        Target::Url { url, sha256 } => {
            let mut request = FetchRequest::url(url.parse().map_err(|e| invalid(url, &e))?);
            if let Some(text) = sha256 {
                let sha: Sha256 = text.parse().map_err(|e| invalid(text, &e))?;
                request = request.with_sha256(sha);
            }
            request
        }
        Target::Hf { name } => {
            let name: HfRef = name.parse().map_err(|e| invalid(name, &e))?;
            FetchRequest::hf(name)
        }
    };
    if let Some(output) = &spec.output {
        request = request.with_output(output);
    }
    Ok(request)
}

/// The queue's copy of a node progress snapshot.
pub fn job_progress(progress: &Progress) -> JobProgress {
    let phase = serde_json::to_value(progress.phase)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default();
    JobProgress {
        phase,
        done: progress.done,
        total: progress.total,
        resumed: progress.resumed,
        bytes_per_second: progress.bytes_per_second,
    }
}

/// Follows the transfer of job `id` (the node request `request`) until it
/// ends, copying its progress into the queue, then reports the outcome.
pub async fn follow(queue: Queue, id: JobId, request: RequestId, mut handle: FetchHandle) {
    let mut progress = handle.progress();
    let mut received = 0;
    let result = loop {
        tokio::select! {
            biased;
            result = &mut handle => break result,
            changed = progress.changed() => {
                if changed.is_err() {
                    break handle.await;
                }
                let snapshot = progress.borrow_and_update().clone();
                received = queue.record_progress(&id, request, &snapshot, received);
                tokio::time::sleep(PROGRESS_EVERY).await;
            }
        }
    };
    let snapshot = progress.borrow().clone();
    queue.record_progress(&id, request, &snapshot, received);
    queue.finish(&id, request, result);
}
