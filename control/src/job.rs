//! What the queue holds: [`Job`]s, each with a [`JobSpec`] (what to fetch),
//! a [`JobState`] and the last progress seen. Plain data, serialised the
//! same way in `STORE/jobs.json` and in the control API's answers.

use std::fmt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Names one job. Ids are `job-N`, numbered per store and never reused, so
/// an id stays valid across daemon restarts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// The id numbered `n`.
    pub fn numbered(n: u64) -> Self {
        Self(format!("job-{n}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for JobId {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a job fetches. Every field was validated by
/// [`decode_job_request`](crate::decode_job_request) before a job holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// A blob or model by its BLAKE3 hash (64 lowercase hex digits).
    Hash {
        /// The hash.
        hash: String,
    },
    /// The content of an http(s) URL.
    Url {
        /// The URL.
        url: String,
        /// The SHA-256 the content must have (64 lowercase hex digits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// A Hugging Face file, folder or repository: `hf://ORG/REPO[@REV][/PATH]`.
    Hf {
        /// The name.
        name: String,
    },
}

impl fmt::Display for Target {
    /// The hash, the URL or the `hf://` name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Hash { hash } => f.write_str(hash),
            Target::Url { url, .. } => f.write_str(url),
            Target::Hf { name } => f.write_str(name),
        }
    }
}

/// Everything a job was asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// What to fetch.
    pub target: Target,
    /// Mirrors serving a hash target (the blob or the model's manifest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
    /// Swarm peers (multiaddrs ending in `/p2p/PEER_ID`) to fetch from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Where to export the result (an absolute path): a file for a blob, a
    /// folder for a model. Without it the result stays in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    /// A group name shared by jobs that belong together (the shards of one
    /// model, say), so they can be cancelled together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl JobSpec {
    /// Returns true if and only if both fetch the same target to the same
    /// place: the test the smart queue uses to find an existing job.
    pub fn same_work(&self, other: &JobSpec) -> bool {
        self.target == other.target && self.output == other.output
    }
}

/// Where a job is. `Queued` and `Running` move on by themselves; the others
/// wait for a caller ([`JobState::is_at_rest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a slot, in queue order.
    Queued,
    /// Its transfer runs on the node.
    Running,
    /// Cancelled without clearing: the partial stays; retry resumes it.
    Paused,
    /// Fetched and verified (and exported, if it had an output).
    Completed,
    /// The fetch failed; [`Job::error`] says why. Retry queues it again.
    Failed,
    /// Cancelled with clear: the partial was discarded.
    Cancelled,
}

impl JobState {
    /// Every state, in the order reports list them.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Paused,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// Returns true if and only if the job will not change unless a caller
    /// acts on it (everything but queued and running).
    pub fn is_at_rest(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    /// The state's name, as JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last progress a job's transfer reported (see the node's `Progress`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    /// The transfer's phase (`queued`, `paused`, `probing`, `downloading`,
    /// `verifying`, `complete`); empty before the transfer started.
    pub phase: String,
    /// Bytes present, including those resumed from an earlier run.
    pub done: u64,
    /// Bytes in all (0 while probing).
    pub total: u64,
    /// Bytes that were already present when the transfer started.
    pub resumed: u64,
    /// Verified bytes per second over the last few seconds.
    pub bytes_per_second: u64,
}

/// What a completed job produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// BLAKE3 of the blob or model, as `b3sum` prints it.
    pub hash: String,
    /// The export, or the store's copy when the job had no output.
    pub path: PathBuf,
}

/// One job: what it fetches, where it is, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// What it fetches.
    #[serde(flatten)]
    pub spec: JobSpec,
    /// Where it is.
    pub state: JobState,
    /// The last progress seen.
    #[serde(default)]
    pub progress: JobProgress,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at: u64,
    /// When its transfer last started, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// When it last came to rest (completed, failed, paused or cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// Why it failed (for a failed job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it produced (for a completed job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
}

impl Job {
    /// A new queued job.
    pub fn new(id: JobId, spec: JobSpec) -> Self {
        Self {
            id,
            spec,
            state: JobState::Queued,
            progress: JobProgress::default(),
            created_at: now_ms(),
            started_at: None,
            finished_at: None,
            error: None,
            result: None,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_round_trips_through_json_with_flat_spec_fields() {
        let spec = JobSpec {
            target: Target::Url {
                url: "http://127.0.0.1:1/a".into(),
                sha256: None,
            },
            mirrors: vec![],
            peers: vec![],
            output: Some("/tmp/a".into()),
            group: Some("g".into()),
        };
        let job = Job::new(JobId::numbered(7), spec);
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["id"], "job-7");
        assert_eq!(json["target"]["kind"], "url");
        assert_eq!(json["group"], "g");
        assert_eq!(json["state"], "queued");
        let back: Job = serde_json::from_value(json).unwrap();
        assert_eq!(back, job);
    }

    #[test]
    fn only_queued_and_running_jobs_move_by_themselves() {
        let moving: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| !s.is_at_rest())
            .collect();
        assert_eq!(moving, [JobState::Queued, JobState::Running]);
    }
}
