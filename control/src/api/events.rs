//! `GET /v1/jobs/{id}/events`: a job's changes as Server-Sent Events.
//!
//! Every event is `event: job` with the whole job as JSON data. The first
//! is the job as it is now; then one per change (progress is sampled at
//! most every 100 ms); the stream ends after the job comes to rest
//! (paused, completed, failed or cancelled), with that state as the last
//! event. A job removed meanwhile ends the stream with `event: removed`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use tokio::sync::watch;

use super::ApiState;
use super::error::ApiError;
use crate::job::{Job, JobId};
use crate::queue::{Queue, QueueError};

/// Where one event stream is.
struct Follow {
    queue: Queue,
    id: JobId,
    changes: watch::Receiver<u64>,
    last: Option<Job>,
    ended: bool,
}

/// `GET /v1/jobs/{id}/events`.
pub async fn stream(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = JobId::from(id.as_str());
    if !api.queue.has(&id) {
        return Err(QueueError::UnknownJob(id).into());
    }
    let follow = Follow {
        changes: api.queue.watch(),
        queue: api.queue,
        id,
        last: None,
        ended: false,
    };
    let events = stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok::<_, Infallible>(event), follow))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

impl Follow {
    /// The next event, or `None` once the stream has ended.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        loop {
            self.changes.borrow_and_update();
            let Some(job) = self.queue.job(&self.id) else {
                self.ended = true;
                return Some(Event::default().event("removed").data(self.id.as_str()));
            };
            if self.last.as_ref() != Some(&job) {
                self.ended = job.state.is_at_rest();
                let data = serde_json::to_string(&job).expect("jobs serialise");
                self.last = Some(job);
                return Some(Event::default().event("job").data(data));
            }
            self.changes.changed().await.ok()?;
        }
    }
}
