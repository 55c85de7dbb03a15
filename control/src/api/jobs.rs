//! Handlers of `/v1/jobs` and `/v1/groups`: create, read, cancel, retry,
//! reorder, remove.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::{ApiState, read_body};
use crate::job::JobId;
use crate::request::{check_group, decode_job_request, decode_position};

/// `POST /v1/jobs`: 201 with a new job, 200 with an existing one (smart).
pub async fn create(State(api): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let request = decode_job_request(&read_body(body).await?)?;
    let queue = &api.queue;
    let (job, created) = if request.smart {
        queue.queue_smart(request.spec, request.start)?
    } else if request.start {
        (queue.queue_and_process(request.spec)?, true)
    } else {
        (queue.queue(request.spec)?, true)
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(job)).into_response())
}

/// `GET /v1/jobs`: every job, grouped by state.
pub async fn list(State(api): State<ApiState>) -> Response {
    Json(api.queue.snapshot()).into_response()
}

/// `GET /v1/jobs/{id}`.
pub async fn one(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = JobId::from(id.as_str());
    let job = api
        .queue
        .job(&id)
        .ok_or(crate::queue::QueueError::UnknownJob(id))?;
    Ok(Json(job).into_response())
}

/// `DELETE /v1/jobs/{id}[?clear=true]`: pauses the job (its transfer stops
/// now); with `clear` the partial is discarded too.
pub async fn cancel(
    State(api): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let clear = clear_flag(query.as_deref())?;
    let job = api.queue.cancel(&JobId::from(id.as_str()), clear)?;
    Ok(Json(job).into_response())
}

/// `POST /v1/jobs/{id}/retry`: queues a paused, failed or cancelled job.
pub async fn retry(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = JobId::from(id.as_str());
    let position = api.queue.retry(&id)?;
    let job = api.queue.job(&id);
    Ok(Json(json!({"position": position, "job": job})).into_response())
}

/// `POST /v1/jobs/{id}/position`: moves a queued job; answers the position
/// it took.
pub async fn reorder(
    State(api): State<ApiState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let position = decode_position(&read_body(body).await?)?;
    let taken = api.queue.reorder(&JobId::from(id.as_str()), position)?;
    Ok(Json(json!({"position": taken})).into_response())
}

/// `POST /v1/jobs/{id}/remove`: forgets a job that is not running.
pub async fn remove(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = api.queue.remove(&JobId::from(id.as_str()))?;
    Ok(Json(job).into_response())
}

/// `POST /v1/jobs/cancel-all`: pauses every queued and running job.
pub async fn cancel_all(State(api): State<ApiState>) -> Result<Response, ApiError> {
    let cancelled = api.queue.cancel_all()?;
    Ok(Json(json!({"cancelled": cancelled})).into_response())
}

/// `POST /v1/jobs/clear-failed`: forgets failed jobs.
pub async fn clear_failed(State(api): State<ApiState>) -> Result<Response, ApiError> {
    let cleared = api.queue.clear_failed()?;
    Ok(Json(json!({"cleared": cleared})).into_response())
}

/// `POST /v1/groups/{name}/cancel`: pauses the group's queued and running jobs.
pub async fn cancel_group(
    State(api): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_group(&name)?;
    let cancelled = api.queue.cancel_group(&name)?;
    Ok(Json(json!({"cancelled": cancelled})).into_response())
}

/// `clear=true` or `clear=false` in a query string; nothing else.
fn clear_flag(query: Option<&str>) -> Result<bool, ApiError> {
    let mut clear = false;
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        clear = match pair {
            "clear=true" | "clear=1" | "clear" => true,
            "clear=false" | "clear=0" => false,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("unexpected query {pair:?}; only clear=true or clear=false"),
                ));
            }
        };
    }
    Ok(clear)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clear_flag_takes_true_false_or_nothing() {
        assert!(!clear_flag(None).unwrap());
        assert!(clear_flag(Some("clear=true")).unwrap());
        assert!(!clear_flag(Some("clear=false")).unwrap());
        assert_eq!(
            clear_flag(Some("clear=maybe")).unwrap_err().code,
            "invalid_query"
        );
    }
}
