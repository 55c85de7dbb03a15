//! [`State`]: the queue's jobs and limits, and the changes to them that
//! need no node (the manager adds saving, waking watchers and starting jobs).

use std::collections::HashMap;

use p2pmodel_node::RequestId;

use super::error::QueueError;
use super::manager::{Counts, KEEP_COMPLETED, QueueConfig};
use crate::job::{Job, JobId, JobSpec, JobState};

/// The queue's contents, behind the manager's mutex.
pub(super) struct State {
    /// Every job; queued ones in queue order.
    pub(super) jobs: Vec<Job>,
    /// The node request of each running job.
    pub(super) running: HashMap<JobId, RequestId>,
    /// The number of the next job's id.
    pub(super) next_id: u64,
    /// Whether queued jobs are started.
    pub(super) processing: bool,
    /// The limits.
    pub(super) config: QueueConfig,
}

impl State {
    /// The index of job `id`.
    pub(super) fn find(&self, id: &JobId) -> Result<usize, QueueError> {
        self.jobs
            .iter()
            .position(|job| &job.id == id)
            .ok_or_else(|| QueueError::UnknownJob(id.clone()))
    }

    /// Queued jobs.
    pub(super) fn pending(&self) -> usize {
        self.count(JobState::Queued)
    }

    /// Jobs in `state`.
    pub(super) fn count(&self, state: JobState) -> usize {
        self.jobs.iter().filter(|job| job.state == state).count()
    }

    /// Refuses when `max_queued` jobs wait already.
    pub(super) fn check_room(&self) -> Result<(), QueueError> {
        let pending = self.pending();
        if pending >= self.config.max_queued {
            return Err(QueueError::QueueFull(pending));
        }
        Ok(())
    }

    /// Running and waiting jobs, and the limits.
    pub(super) fn counts(&self) -> Counts {
        Counts {
            active: self.count(JobState::Running),
            pending: self.pending(),
            max_queued: self.config.max_queued,
            max_concurrent: self.config.max_concurrent,
            processing: self.processing,
        }
    }

    /// Adds a queued job for `spec` at the end.
    pub(super) fn add(&mut self, spec: JobSpec) -> Result<Job, QueueError> {
        self.check_room()?;
        let job = Job::new(JobId::numbered(self.next_id), spec);
        self.next_id += 1;
        self.jobs.push(job.clone());
        Ok(job)
    }

    /// Queues the paused, failed or cancelled job at `at` again, at the
    /// end; returns its position.
    pub(super) fn retry_at(&mut self, at: usize) -> Result<usize, QueueError> {
        let job = &self.jobs[at];
        if !job.state.is_at_rest() || job.state == JobState::Completed {
            return Err(QueueError::WrongState {
                id: job.id.clone(),
                state: job.state,
                hint: "only paused, failed or cancelled jobs can be retried",
            });
        }
        self.check_room()?;
        let mut job = self.jobs.remove(at);
        job.state = JobState::Queued;
        job.error = None;
        job.result = None;
        job.finished_at = None;
        self.jobs.push(job);
        Ok(self.pending())
    }

    /// Forgets the oldest completed jobs beyond [`KEEP_COMPLETED`].
    pub(super) fn trim_completed(&mut self) {
        let mut excess = self
            .count(JobState::Completed)
            .saturating_sub(KEEP_COMPLETED);
        self.jobs.retain(|job| {
            if excess > 0 && job.state == JobState::Completed {
                excess -= 1;
                return false;
            }
            true
        });
    }
}
