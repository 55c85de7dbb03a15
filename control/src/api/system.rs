//! Handlers of the queue's counts and limits, the node's lifecycle,
//! health, metrics and the OpenAPI document.

use std::fmt::Write;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use p2pmodel_node::LifecycleState;
use serde_json::json;

use super::error::ApiError;
use super::{ApiState, OPENAPI, read_body};
use crate::job::JobState;
use crate::request::decode_limits;

/// `GET /v1/queue/counts`.
pub async fn counts(State(api): State<ApiState>) -> Response {
    Json(api.queue.counts()).into_response()
}

/// `POST /v1/queue/limits`: changes `max_queued` and/or `max_concurrent`.
pub async fn limits(State(api): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let limits = decode_limits(&read_body(body).await?)?;
    Ok(Json(api.queue.set_limits(limits)?).into_response())
}

/// `POST /v1/queue/process`: starts queued jobs from now on.
pub async fn process(State(api): State<ApiState>) -> Result<Response, ApiError> {
    api.queue.process()?;
    Ok(Json(api.queue.counts()).into_response())
}

/// `POST /v1/suspend`: closes connections; transfers wait.
pub async fn suspend(State(api): State<ApiState>) -> Response {
    api.queue.suspend().await;
    state_answer(api.queue.node_state())
}

/// `POST /v1/resume`: transfers continue, queued jobs start.
pub async fn resume(State(api): State<ApiState>) -> Result<Response, ApiError> {
    api.queue.resume().await?;
    Ok(state_answer(api.queue.node_state()))
}

/// `GET /v1/state`: the node's lifecycle state.
pub async fn state(State(api): State<ApiState>) -> Response {
    state_answer(api.queue.node_state())
}

/// `GET /v1/health`: the daemon answers, and how its node is.
pub async fn health(State(api): State<ApiState>) -> Response {
    Json(json!({"status": "ok", "state": api.queue.node_state()})).into_response()
}

/// `GET /v1/metrics`: Prometheus text format.
pub async fn metrics(State(api): State<ApiState>) -> Response {
    let snapshot = api.queue.snapshot();
    let by_state = |state: JobState| match state {
        JobState::Queued => snapshot.queued.len(),
        JobState::Running => snapshot.active.len(),
        JobState::Paused => snapshot.paused.len(),
        JobState::Completed => snapshot.completed.len(),
        JobState::Failed => snapshot.failed.len(),
        JobState::Cancelled => snapshot.cancelled.len(),
    };
    let mut text = String::new();
    text.push_str("# HELP p2pmodel_jobs Jobs known to the queue, by state.\n");
    text.push_str("# TYPE p2pmodel_jobs gauge\n");
    for state in JobState::ALL {
        let _ = writeln!(
            text,
            "p2pmodel_jobs{{state=\"{state}\"}} {}",
            by_state(state)
        );
    }
    text.push_str(
        "# HELP p2pmodel_received_bytes_total Verified bytes received by jobs since the daemon started.\n",
    );
    text.push_str("# TYPE p2pmodel_received_bytes_total counter\n");
    let _ = writeln!(
        text,
        "p2pmodel_received_bytes_total {}",
        api.queue.received_bytes()
    );
    text.push_str(
        "# HELP p2pmodel_node_state The node's lifecycle state (1 for the current one).\n",
    );
    text.push_str("# TYPE p2pmodel_node_state gauge\n");
    let now = api.queue.node_state();
    for state in [
        LifecycleState::Active,
        LifecycleState::Suspending,
        LifecycleState::Suspended,
        LifecycleState::Resuming,
    ] {
        let _ = writeln!(
            text,
            "p2pmodel_node_state{{state=\"{state}\"}} {}",
            u8::from(state == now)
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

fn state_answer(state: LifecycleState) -> Response {
    Json(json!({"state": state})).into_response()
}
