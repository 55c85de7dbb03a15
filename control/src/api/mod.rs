//! The HTTP/JSON control API: [`router`] over a [`Queue`], every route
//! under `/v1` and behind the bearer token (see `auth.rs`).
//!
//! [`ENDPOINTS`] lists every route the router serves; `openapi.json` at the
//! crate's root documents each of them (a test holds the two together) and
//! is served at `GET /v1/openapi.json`.

mod auth;
mod error;
mod events;
mod jobs;
mod system;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::{MethodRouter, delete, get, post};

pub use auth::new_token;
pub use error::ApiError;

use crate::queue::Queue;
use crate::request::{MAX_BODY, RequestError};

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// What every handler gets: the queue and the token.
#[derive(Clone)]
pub struct ApiState {
    /// The queue the API drives.
    pub queue: Queue,
    /// The bearer token every request must carry.
    pub token: Arc<str>,
}

/// Every route: method and path (in OpenAPI's spelling, which is axum's).
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{id}"),
    ("DELETE", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs/{id}/events"),
    ("POST", "/v1/jobs/{id}/retry"),
    ("POST", "/v1/jobs/{id}/position"),
    ("POST", "/v1/jobs/{id}/remove"),
    ("POST", "/v1/jobs/cancel-all"),
    ("POST", "/v1/jobs/clear-failed"),
    ("POST", "/v1/groups/{name}/cancel"),
    ("GET", "/v1/queue/counts"),
    ("POST", "/v1/queue/limits"),
    ("POST", "/v1/queue/process"),
    ("POST", "/v1/suspend"),
    ("POST", "/v1/resume"),
    ("GET", "/v1/state"),
    ("GET", "/v1/health"),
    ("GET", "/v1/metrics"),
    ("GET", "/v1/openapi.json"),
];

/// The handler of one entry of [`ENDPOINTS`].
fn handler(method: &str, path: &str) -> MethodRouter<ApiState> {
    match (method, path) {
        ("POST", "/v1/jobs") => post(jobs::create),
        ("GET", "/v1/jobs") => get(jobs::list),
        ("GET", "/v1/jobs/{id}") => get(jobs::one),
        ("DELETE", "/v1/jobs/{id}") => delete(jobs::cancel),
        ("GET", "/v1/jobs/{id}/events") => get(events::stream),
        ("POST", "/v1/jobs/{id}/retry") => post(jobs::retry),
        ("POST", "/v1/jobs/{id}/position") => post(jobs::reorder),
        ("POST", "/v1/jobs/{id}/remove") => post(jobs::remove),
        ("POST", "/v1/jobs/cancel-all") => post(jobs::cancel_all),
        ("POST", "/v1/jobs/clear-failed") => post(jobs::clear_failed),
        ("POST", "/v1/groups/{name}/cancel") => post(jobs::cancel_group),
        ("GET", "/v1/queue/counts") => get(system::counts),
        ("POST", "/v1/queue/limits") => post(system::limits),
        ("POST", "/v1/queue/process") => post(system::process),
        ("POST", "/v1/suspend") => post(system::suspend),
        ("POST", "/v1/resume") => post(system::resume),
        ("GET", "/v1/state") => get(system::state),
        ("GET", "/v1/health") => get(system::health),
        ("GET", "/v1/metrics") => get(system::metrics),
        ("GET", "/v1/openapi.json") => get(system::openapi),
        _ => unreachable!("{method} {path} is in ENDPOINTS without a handler"),
    }
}

/// The API over `state`, with no socket: serve it, or call it directly in
/// tests.
pub fn router(state: ApiState) -> Router {
    let mut router = Router::new();
    for (method, path) in ENDPOINTS {
        router = router.route(path, handler(method, path));
    }
    router
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::wrong_method() })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state)
}

/// Reads a request body of at most [`MAX_BODY`] bytes.
async fn read_body(body: Body) -> Result<Vec<u8>, ApiError> {
    // Hitting the limit is the only error a caller can still hear about:
    // a connection that broke mid-body gets no answer anyway.
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map(|bytes| bytes.to_vec())
        .map_err(|_| RequestError::TooLarge.into())
}
