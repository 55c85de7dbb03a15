//! [`ApiError`]: every error the API answers, as
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.
//!
//! Statuses: 400 bad input, 401 no or wrong token, 404 unknown job or
//! route, 405 wrong method, 409 a job or the node in the wrong state, 413
//! body too large, 429 full queue, 500 internal (details go to the log,
//! not to the caller), 503 node shutting down or failing to resume.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use p2pmodel_node::NodeError;
use serde_json::json;

use crate::queue::QueueError;
use crate::request::RequestError;

/// An error answer of the control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable `snake_case` code.
    pub code: &'static str,
    /// A message for people.
    pub message: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401: the request lacks the right bearer token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer TOKEN, with the token from STORE/control.token",
        )
    }

    /// 404 for a path the API does not have.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// 405 for a method the path does not take.
    pub fn wrong_method() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take that method",
        )
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        let status = match error {
            RequestError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        let status = match &error {
            QueueError::UnknownJob(_) => StatusCode::NOT_FOUND,
            QueueError::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            QueueError::WrongState { .. } | QueueError::Node(NodeError::Lifecycle(_)) => {
                StatusCode::CONFLICT
            }
            QueueError::InvalidTarget(_) => StatusCode::BAD_REQUEST,
            QueueError::Node(NodeError::Shutdown | NodeError::ResumeFailed(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(%error, "control API");
            "internal error; the daemon's log has the details".to_owned()
        } else {
            error.to_string()
        };
        Self::new(status, error.code(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
