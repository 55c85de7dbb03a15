//! [`Queue`]: the persistent download queue over a [`Node`].
//!
//! # Who owns what
//!
//! The queue owns the list of jobs (behind one mutex) and the queue file;
//! the node owns the transfers. A running job holds one node request; a
//! task per running job ([`runner::follow`]) copies its progress in and
//! reports its end. Every operation changes the list, saves it, wakes the
//! watchers ([`Queue::watch`]) and then starts queued jobs in order while
//! fewer than `max_concurrent` run ("pumping").
//!
//! # Crash and restart
//!
//! The file is saved on every change of state. [`Queue::open`] reads it
//! back: queued jobs keep their order and jobs that were running go first,
//! so they start again at once and resume from their partials (the node
//! resumes partials by itself).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use p2pmodel_node::{Fetched, LifecycleState, Node, NodeError, Progress, RequestId};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::error::QueueError;
use super::persist::{self, JobsFile, PersistError};
use super::runner;
use super::state::State;
use crate::job::{Job, JobId, JobResult, JobSpec, JobState, now_ms};
use crate::request::Limits;

/// How many completed jobs the queue remembers (the oldest are forgotten).
pub const KEEP_COMPLETED: usize = 100;

/// Limits of a [`Queue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Jobs that may wait at once; one more is refused (default 1000).
    pub max_queued: usize,
    /// Jobs whose transfers run at once (at least 1; default 2).
    pub max_concurrent: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_queued: 1000,
            max_concurrent: 2,
        }
    }
}

impl QueueConfig {
    /// Sets how many jobs may wait at once.
    pub fn with_max_queued(mut self, jobs: usize) -> Self {
        self.max_queued = jobs;
        self
    }

    /// Sets how many jobs run at once (at least 1).
    pub fn with_max_concurrent(mut self, jobs: usize) -> Self {
        self.max_concurrent = jobs.max(1);
        self
    }
}

/// Every job, grouped by state; queued jobs in the order they will start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Whether queued jobs are being started.
    pub processing: bool,
    /// Waiting jobs, next first.
    pub queued: Vec<Job>,
    /// Running jobs.
    pub active: Vec<Job>,
    /// Paused jobs (partials kept).
    pub paused: Vec<Job>,
    /// The most recently completed jobs, oldest first.
    pub completed: Vec<Job>,
    /// Failed jobs, until cleared.
    pub failed: Vec<Job>,
    /// Cancelled jobs (partials discarded).
    pub cancelled: Vec<Job>,
}

/// How many jobs run and wait, and the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Running jobs.
    pub active: usize,
    /// Queued jobs.
    pub pending: usize,
    /// The most jobs that may wait.
    pub max_queued: usize,
    /// The most jobs that run at once.
    pub max_concurrent: usize,
    /// Whether queued jobs are being started.
    pub processing: bool,
}

/// The persistent download queue of one node. Cloning is shallow.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("counts", &self.counts())
            .finish()
    }
}

struct Inner {
    node: Node,
    file: JobsFile,
    state: Mutex<State>,
    /// Bumped on every change of a job, progress included.
    changes: watch::Sender<u64>,
    /// Verified bytes received by this queue's transfers since it opened.
    received: AtomicU64,
}

impl Queue {
    /// Opens the queue saved in `node`'s store folder (or an empty one),
    /// puts jobs that were running back at the head of the queue, and
    /// starts what may start. Call within a tokio runtime.
    ///
    /// # Errors
    /// [`PersistError`] when the queue file cannot be read or written.
    pub fn open(node: Node, config: QueueConfig) -> Result<Self, PersistError> {
        let file = JobsFile::in_store(node.store().root());
        let saved = file.load()?;
        let (interrupted, rest): (Vec<Job>, Vec<Job>) = saved
            .jobs
            .into_iter()
            .partition(|job| job.state == JobState::Running);
        let jobs = interrupted
            .into_iter()
            .map(|mut job| {
                job.state = JobState::Queued;
                job
            })
            .chain(rest)
            .collect();
        let queue = Self {
            inner: Arc::new(Inner {
                node,
                file,
                state: Mutex::new(State {
                    jobs,
                    running: HashMap::new(),
                    next_id: saved.next_id.max(1),
                    processing: saved.processing,
                    config,
                }),
                changes: watch::channel(0).0,
                received: AtomicU64::new(0),
            }),
        };
        {
            let mut state = queue.state();
            queue.pump(&mut state);
            queue.save(&state)?;
        }
        Ok(queue)
    }

    /// The node the queue runs jobs on.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Adds a job at the end of the queue. It starts when the queue is
    /// being processed and a slot is free (see [`Queue::process`]).
    ///
    /// # Errors
    /// [`QueueError::QueueFull`], [`QueueError::InvalidTarget`],
    /// [`QueueError::Persist`].
    pub fn queue(&self, spec: JobSpec) -> Result<Job, QueueError> {
        runner::fetch_request(&spec)?;
        let mut state = self.state();
        let job = state.add(spec)?;
        self.commit(&mut state)?;
        Ok(job)
    }

    /// [`Queue::queue`], then makes sure queued jobs are being started.
    ///
    /// # Errors
    /// As [`Queue::queue`].
    pub fn queue_and_process(&self, spec: JobSpec) -> Result<Job, QueueError> {
        runner::fetch_request(&spec)?;
        let mut state = self.state();
        let id = state.add(spec)?.id;
        state.processing = true;
        self.commit(&mut state)?;
        let at = state.find(&id)?;
        Ok(state.jobs[at].clone())
    }

    /// Like [`Queue::queue`] (or [`Queue::queue_and_process`] with
    /// `start`), unless a job for the same target and output exists: a
    /// queued, running or completed one is returned as it is, a paused,
    /// failed or cancelled one is queued again (the fetch resumes its
    /// partial). Returns the job and whether it is new.
    ///
    /// # Errors
    /// As [`Queue::queue`].
    pub fn queue_smart(&self, spec: JobSpec, start: bool) -> Result<(Job, bool), QueueError> {
        runner::fetch_request(&spec)?;
        // One lock throughout, so that two callers with the same target
        // get one job.
        let mut state = self.state();
        let existing = state.jobs.iter().rposition(|job| job.spec.same_work(&spec));
        let (id, created) = match existing {
            Some(at) => {
                let job = &state.jobs[at];
                let id = job.id.clone();
                if job.state.is_at_rest() && job.state != JobState::Completed {
                    state.retry_at(at)?;
                }
                (id, false)
            }
            None => (state.add(spec)?.id, true),
        };
        state.processing |= start;
        self.commit(&mut state)?;
        let at = state.find(&id)?;
        Ok((state.jobs[at].clone(), created))
    }

    /// Starts processing the queue: from now on (and after restarts) queued
    /// jobs start in order as slots free up.
    ///
    /// # Errors
    /// [`QueueError::Persist`].
    pub fn process(&self) -> Result<(), QueueError> {
        let mut state = self.state();
        if !state.processing {
            state.processing = true;
            self.commit(&mut state)?;
        }
        Ok(())
    }

    /// Every job, grouped by state.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.state();
        let mut snapshot = Snapshot {
            processing: state.processing,
            ..Snapshot::default()
        };
        for job in &state.jobs {
            let list = match job.state {
                JobState::Queued => &mut snapshot.queued,
                JobState::Running => &mut snapshot.active,
                JobState::Paused => &mut snapshot.paused,
                JobState::Completed => &mut snapshot.completed,
                JobState::Failed => &mut snapshot.failed,
                JobState::Cancelled => &mut snapshot.cancelled,
            };
            list.push(job.clone());
        }
        snapshot
    }

    /// The job `id`, if the queue has it.
    pub fn job(&self, id: &JobId) -> Option<Job> {
        let state = self.state();
        state.find(id).ok().map(|at| state.jobs[at].clone())
    }

    /// Returns true if and only if the queue has a job `id` (in any state).
    pub fn has(&self, id: &JobId) -> bool {
        self.state().find(id).is_ok()
    }

    /// How many jobs run and wait, and the limits.
    pub fn counts(&self) -> Counts {
        self.state().counts()
    }

    /// Cancels job `id`. Without `clear` it is a pause: a running transfer
    /// stops, the partial stays and [`Queue::retry`] resumes it; a queued
    /// job leaves the queue as paused. With `clear` the job ends cancelled
    /// and its partial is discarded (once no other caller of the node
    /// still fetches the same target).
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`]; [`QueueError::WrongState`] for a
    /// completed job; [`QueueError::Node`] when the node is not active and
    /// a transfer would have to be stopped or a partial discarded.
    pub fn cancel(&self, id: &JobId, clear: bool) -> Result<Job, QueueError> {
        let mut state = self.state();
        let at = state.find(id)?;
        let job_state = state.jobs[at].state;
        if job_state == JobState::Completed {
            return Err(QueueError::WrongState {
                id: id.clone(),
                state: job_state,
                hint: "remove it instead",
            });
        }
        if let Some(request) = state.running.get(id).copied() {
            let node = &self.inner.node;
            let stopped = if clear {
                node.cancel_and_clear(request)
            } else {
                node.cancel(request)
            };
            match stopped {
                // The transfer ended on its own a moment ago; its outcome
                // is being reported and the job is at rest as requested.
                Ok(()) | Err(NodeError::UnknownRequest(_)) => {}
                Err(error) => return Err(error.into()),
            }
            state.running.remove(id);
        } else if clear {
            self.discard_partial(&state.jobs[at].spec)?;
        } else if job_state.is_at_rest() {
            return Ok(state.jobs[at].clone());
        }
        let job = &mut state.jobs[at];
        job.state = if clear {
            JobState::Cancelled
        } else {
            JobState::Paused
        };
        job.finished_at = Some(now_ms());
        let job = job.clone();
        self.commit(&mut state)?;
        Ok(job)
    }

    /// Pauses every queued and running job; returns how many.
    ///
    /// # Errors
    /// As [`Queue::cancel`].
    pub fn cancel_all(&self) -> Result<usize, QueueError> {
        self.cancel_where(|_| true)
    }

    /// Pauses every queued and running job of `group`; returns how many.
    ///
    /// # Errors
    /// As [`Queue::cancel`].
    pub fn cancel_group(&self, group: &str) -> Result<usize, QueueError> {
        self.cancel_where(|job| job.spec.group.as_deref() == Some(group))
    }

    fn cancel_where(&self, matches: impl Fn(&Job) -> bool) -> Result<usize, QueueError> {
        // Queued jobs first, so that none starts while running ones stop.
        let ids = |wanted: JobState| -> Vec<JobId> {
            self.state()
                .jobs
                .iter()
                .filter(|job| job.state == wanted && matches(job))
                .map(|job| job.id.clone())
                .collect()
        };
        let mut cancelled = 0;
        for wanted in [JobState::Queued, JobState::Running] {
            for id in ids(wanted) {
                match self.cancel(&id, false) {
                    Ok(_) => cancelled += 1,
                    // It completed or was removed in the meantime.
                    Err(QueueError::WrongState { .. } | QueueError::UnknownJob(_)) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(cancelled)
    }

    /// Removes a job that is not running from the queue and from memory.
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`]; [`QueueError::WrongState`] for a running
    /// job (cancel it first).
    pub fn remove(&self, id: &JobId) -> Result<Job, QueueError> {
        let mut state = self.state();
        let at = state.find(id)?;
        if state.jobs[at].state == JobState::Running {
            return Err(QueueError::WrongState {
                id: id.clone(),
                state: JobState::Running,
                hint: "cancel it first",
            });
        }
        let job = state.jobs.remove(at);
        self.commit(&mut state)?;
        Ok(job)
    }

    /// Moves queued job `id` to `position` (1 is next to start); a
    /// position past the end means last. Returns the position it took.
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`]; [`QueueError::WrongState`] unless queued.
    pub fn reorder(&self, id: &JobId, position: usize) -> Result<usize, QueueError> {
        let mut state = self.state();
        let at = state.find(id)?;
        let job_state = state.jobs[at].state;
        if job_state != JobState::Queued {
            return Err(QueueError::WrongState {
                id: id.clone(),
                state: job_state,
                hint: "only queued jobs can be moved",
            });
        }
        let job = state.jobs.remove(at);
        let taken = position.clamp(1, state.pending() + 1);
        // Insert before the queued job now at `taken`, or at the end.
        let index = state
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, job)| job.state == JobState::Queued)
            .nth(taken - 1)
            .map_or(state.jobs.len(), |(index, _)| index);
        state.jobs.insert(index, job);
        self.commit(&mut state)?;
        Ok(taken)
    }

    /// Queues a paused, failed or cancelled job again, at the end; returns
    /// its position. Its transfer resumes whatever partial is left.
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`]; [`QueueError::WrongState`] for a queued,
    /// running or completed job; [`QueueError::QueueFull`].
    pub fn retry(&self, id: &JobId) -> Result<usize, QueueError> {
        let mut state = self.state();
        let at = state.find(id)?;
        let position = state.retry_at(at)?;
        self.commit(&mut state)?;
        Ok(position)
    }

    /// Forgets every failed job; returns how many.
    ///
    /// # Errors
    /// [`QueueError::Persist`].
    pub fn clear_failed(&self) -> Result<usize, QueueError> {
        let mut state = self.state();
        let before = state.jobs.len();
        state.jobs.retain(|job| job.state != JobState::Failed);
        let cleared = before - state.jobs.len();
        if cleared > 0 {
            self.commit(&mut state)?;
        }
        Ok(cleared)
    }

    /// Changes the limits. Jobs already queued stay; a lower
    /// `max_concurrent` lets running jobs finish.
    ///
    /// # Errors
    /// [`QueueError::Persist`] when jobs it started could not be saved.
    pub fn set_limits(&self, limits: Limits) -> Result<Counts, QueueError> {
        let mut state = self.state();
        if let Some(queued) = limits.max_queued {
            state.config.max_queued = queued;
        }
        if let Some(concurrent) = limits.max_concurrent {
            state.config.max_concurrent = concurrent.max(1);
        }
        self.commit(&mut state)?;
        Ok(state.counts())
    }

    /// Suspends the node (see `Node::suspend`): transfers stop moving and
    /// wait; no queued job starts until [`Queue::resume`].
    pub async fn suspend(&self) {
        self.inner.node.suspend().await;
        self.notify();
    }

    /// Resumes the node; running transfers continue and queued jobs start.
    ///
    /// # Errors
    /// [`QueueError::Node`] when the node's resume check fails.
    pub async fn resume(&self) -> Result<(), QueueError> {
        self.inner.node.resume().await?;
        let mut state = self.state();
        self.commit(&mut state)
    }

    /// The node's lifecycle state.
    pub fn node_state(&self) -> LifecycleState {
        self.inner.node.state()
    }

    /// A receiver that changes whenever any job does (progress included).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Verified bytes this queue's transfers received since it opened.
    pub fn received_bytes(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }

    /// Copies a running job's progress in; `received` is what this
    /// request's sources had delivered at the last call. Returns the new
    /// figure.
    pub(super) fn record_progress(
        &self,
        id: &JobId,
        request: RequestId,
        progress: &Progress,
        received: u64,
    ) -> u64 {
        let now: u64 = progress.sources.iter().map(|source| source.bytes).sum();
        self.inner
            .received
            .fetch_add(now.saturating_sub(received), Ordering::Relaxed);
        let mut state = self.state();
        if state.running.get(id) == Some(&request) {
            if let Ok(at) = state.find(id) {
                state.jobs[at].progress = runner::job_progress(progress);
                self.notify();
            }
        }
        now.max(received)
    }

    /// Records how the transfer of job `id` ended, then starts what may.
    pub(super) fn finish(
        &self,
        id: &JobId,
        request: RequestId,
        result: Result<Fetched, NodeError>,
    ) {
        let mut state = self.state();
        if state.running.get(id) != Some(&request) {
            // Cancelled (or removed) while ending: the queue moved on.
            return;
        }
        state.running.remove(id);
        let Ok(at) = state.find(id) else { return };
        let job = &mut state.jobs[at];
        match result {
            // The node stopped under the job: it stays `running` in the
            // file, so the next start resumes it.
            Err(NodeError::Shutdown) => return,
            Ok(fetched) => {
                job.state = JobState::Completed;
                job.result = Some(JobResult {
                    hash: fetched.hash().to_hex(),
                    path: fetched.path().to_path_buf(),
                });
            }
            Err(NodeError::Cancelled) => job.state = JobState::Paused,
            Err(error) => {
                job.state = JobState::Failed;
                job.error = Some(error.to_string());
            }
        }
        job.finished_at = Some(now_ms());
        state.trim_completed();
        if let Err(error) = self.commit(&mut state) {
            tracing::error!(%error, "saving the queue after job {id} ended");
        }
    }

    /// Starts `spec`'s transfer on the node and at once discards it with
    /// its partial: the node's way to clear a partial that no transfer
    /// holds.
    fn discard_partial(&self, spec: &JobSpec) -> Result<(), QueueError> {
        let node = &self.inner.node;
        let handle = node.fetch(runner::fetch_request(spec)?)?;
        match node.cancel_and_clear(handle.id()) {
            Ok(()) | Err(NodeError::UnknownRequest(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Saves, wakes watchers and starts what may start.
    fn commit(&self, state: &mut State) -> Result<(), QueueError> {
        self.pump(state);
        self.notify();
        self.save(state).map_err(QueueError::from)
    }

    fn save(&self, state: &State) -> Result<(), PersistError> {
        let saved = persist::saved(state.next_id, state.processing, state.jobs.clone());
        self.inner.file.save(&saved)
    }

    /// Starts queued jobs in order while slots are free, the queue is
    /// processed and the node is active. The caller saves.
    fn pump(&self, state: &mut State) {
        if !state.processing || self.inner.node.state() != LifecycleState::Active {
            return;
        }
        while state.running.len() < state.config.max_concurrent {
            let Some(at) = state
                .jobs
                .iter()
                .position(|job| job.state == JobState::Queued)
            else {
                break;
            };
            let job = &mut state.jobs[at];
            let request = match runner::fetch_request(&job.spec) {
                Ok(request) => request,
                Err(error) => {
                    job.state = JobState::Failed;
                    job.error = Some(error.to_string());
                    job.finished_at = Some(now_ms());
                    continue;
                }
            };
            let handle = match self.inner.node.fetch(request) {
                Ok(handle) => handle,
                // Suspended or shutting down: the job waits its turn.
                Err(error) => {
                    tracing::debug!(%error, "the node refused to start job {}", job.id);
                    break;
                }
            };
            job.state = JobState::Running;
            job.started_at = Some(now_ms());
            job.error = None;
            let id = job.id.clone();
            state.running.insert(id.clone(), handle.id());
            tokio::spawn(runner::follow(self.clone(), id, handle.id(), handle));
        }
    }

    fn notify(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
