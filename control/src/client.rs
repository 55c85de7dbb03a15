//! [`Client`]: the control API from the caller's side, found through the
//! store folder's `control.addr` and `control.token`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes_buf::Lines;
use futures_util::StreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::job::{Job, JobId};
use crate::queue::{Counts, Snapshot};
use crate::request::{JobRequest, Limits};
use crate::server::{ADDR_FILE, TOKEN_FILE};

/// How long a call other than an event stream may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call to the control API failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The token or address file could not be read or used.
    #[error("{path}: {reason}")]
    Files {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The daemon could not be reached, or the connection broke.
    #[error("talking to the daemon: {0}")]
    Http(#[from] reqwest::Error),
    /// The daemon answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's stable code.
        code: String,
        /// The daemon's message.
        message: String,
    },
    /// The daemon's answer was not what this client expects.
    #[error("unexpected answer from the daemon: {0}")]
    Decode(String),
}

impl ClientError {
    /// The API error code, if the daemon answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of one daemon's control API. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client of the API at `addr` with `token`.
    ///
    /// # Errors
    /// [`ClientError::Http`] if the HTTP client cannot be built.
    pub fn new(addr: SocketAddr, token: &str) -> Result<Self, ClientError> {
        // reqwest is built without a TLS provider; this makes ring the one,
        // as the node does (the API is plain HTTP, but the builder asks).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()?;
        Ok(Self {
            http,
            base: format!("http://{addr}/v1"),
            token: token.trim().to_owned(),
        })
    }

    /// The client of the daemon serving the store folder `root`, from its
    /// address and token files; `None` when no daemon wrote them. The
    /// daemon may still be gone (after `kill -9`): see [`Client::health`].
    ///
    /// # Errors
    /// [`ClientError::Files`] for files that exist but cannot be used.
    pub fn for_store(root: &Path) -> Result<Option<Self>, ClientError> {
        let read = |name: &str| -> Result<Option<String>, ClientError> {
            let path = root.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(files(&path, error.to_string())),
            }
        };
        let (Some(addr), Some(token)) = (read(ADDR_FILE)?, read(TOKEN_FILE)?) else {
            return Ok(None);
        };
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| files(&root.join(ADDR_FILE), format!("{addr:?} is not IP:PORT")))?;
        Self::new(addr, &token).map(Some)
    }

    /// `GET /v1/health`: the daemon's status and node state.
    ///
    /// # Errors
    /// [`ClientError`]; [`ClientError::Http`] when no daemon answers.
    pub async fn health(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, "/health", None).await
    }

    /// `POST /v1/jobs`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create(&self, request: &JobRequest) -> Result<Job, ClientError> {
        self.call(Method::POST, "/jobs", Some(request.encode()))
            .await
    }

    /// `GET /v1/jobs`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn jobs(&self) -> Result<Snapshot, ClientError> {
        self.call(Method::GET, "/jobs", None).await
    }

    /// `GET /v1/jobs/{id}`.
    ///
    /// # Errors
    /// [`ClientError`]; code `unknown_job` for an unknown id.
    pub async fn job(&self, id: &JobId) -> Result<Job, ClientError> {
        self.call(
            Method::GET,
            &format!("/jobs/{}", segment(id.as_str())),
            None,
        )
        .await
    }

    /// `DELETE /v1/jobs/{id}`: pauses the job, or with `clear` cancels it
    /// and discards its partial.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn cancel(&self, id: &JobId, clear: bool) -> Result<Job, ClientError> {
        let path = format!("/jobs/{}?clear={clear}", segment(id.as_str()));
        self.call(Method::DELETE, &path, None).await
    }

    /// `POST /v1/jobs/{id}/retry`; returns the queue position.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn retry(&self, id: &JobId) -> Result<u64, ClientError> {
        let path = format!("/jobs/{}/retry", segment(id.as_str()));
        let answer: Value = self.call(Method::POST, &path, None).await?;
        number(&answer, "position")
    }

    /// `POST /v1/jobs/{id}/position`; returns the position taken.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn reorder(&self, id: &JobId, position: u64) -> Result<u64, ClientError> {
        let path = format!("/jobs/{}/position", segment(id.as_str()));
        let body = serde_json::json!({ "position": position }).to_string();
        let answer: Value = self
            .call(Method::POST, &path, Some(body.into_bytes()))
            .await?;
        number(&answer, "position")
    }

    /// `POST /v1/jobs/{id}/remove`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn remove(&self, id: &JobId) -> Result<Job, ClientError> {
        let path = format!("/jobs/{}/remove", segment(id.as_str()));
        self.call(Method::POST, &path, None).await
    }

    /// `POST /v1/jobs/cancel-all`; returns how many jobs were paused.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn cancel_all(&self) -> Result<u64, ClientError> {
        let answer: Value = self.call(Method::POST, "/jobs/cancel-all", None).await?;
        number(&answer, "cancelled")
    }

    /// `POST /v1/groups/{name}/cancel`; returns how many jobs were paused.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn cancel_group(&self, group: &str) -> Result<u64, ClientError> {
        let path = format!("/groups/{}/cancel", segment(group));
        let answer: Value = self.call(Method::POST, &path, None).await?;
        number(&answer, "cancelled")
    }

    /// `POST /v1/jobs/clear-failed`; returns how many were forgotten.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn clear_failed(&self) -> Result<u64, ClientError> {
        let answer: Value = self.call(Method::POST, "/jobs/clear-failed", None).await?;
        number(&answer, "cleared")
    }

    /// `GET /v1/queue/counts`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn counts(&self) -> Result<Counts, ClientError> {
        self.call(Method::GET, "/queue/counts", None).await
    }

    /// `POST /v1/queue/limits`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn set_limits(&self, limits: Limits) -> Result<Counts, ClientError> {
        let body = serde_json::to_vec(&limits).expect("limits serialise");
        self.call(Method::POST, "/queue/limits", Some(body)).await
    }

    /// `POST /v1/queue/process`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn process(&self) -> Result<Counts, ClientError> {
        self.call(Method::POST, "/queue/process", None).await
    }

    /// `POST /v1/suspend`, `POST /v1/resume` or `GET /v1/state`
    /// (`action` is `suspend`, `resume` or `state`); returns the state.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn lifecycle(&self, action: Lifecycle) -> Result<String, ClientError> {
        let (method, path) = match action {
            Lifecycle::Suspend => (Method::POST, "/suspend"),
            Lifecycle::Resume => (Method::POST, "/resume"),
            Lifecycle::State => (Method::GET, "/state"),
        };
        let answer: Value = self.call(method, path, None).await?;
        answer["state"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Decode(answer.to_string()))
    }

    /// `GET /v1/jobs/{id}/events`: the job's changes, until it comes to rest.
    ///
    /// # Errors
    /// [`ClientError`]; code `unknown_job` for an unknown id.
    pub async fn events(&self, id: &JobId) -> Result<JobEvents, ClientError> {
        let path = format!("/jobs/{}/events", segment(id.as_str()));
        let response = self
            .request(Method::GET, &path)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await?;
        let response = check(response).await?;
        Ok(JobEvents {
            body: Box::pin(response.bytes_stream()),
            lines: Lines::default(),
            event: String::new(),
            data: String::new(),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let mut request = self.request(method, path).timeout(CALL_TIMEOUT);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = check(request.send().await?).await?;
        let bytes = response.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|error| ClientError::Decode(error.to_string()))
    }
}

/// A lifecycle call of [`Client::lifecycle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// `POST /v1/suspend`.
    Suspend,
    /// `POST /v1/resume`.
    Resume,
    /// `GET /v1/state`.
    State,
}

/// The events of one job, as [`Client::events`] returns them.
pub struct JobEvents {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    lines: Lines,
    event: String,
    data: String,
}

impl std::fmt::Debug for JobEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEvents").finish_non_exhaustive()
    }
}

impl JobEvents {
    /// The job as of the next event; `None` when the stream ended (after
    /// the job came to rest, or was removed).
    ///
    /// # Cancel safety
    /// Cancel safe: a partly received event is kept for the next call.
    ///
    /// # Errors
    /// [`ClientError::Http`] when the connection breaks,
    /// [`ClientError::Decode`] for an event that is not a job.
    pub async fn next(&mut self) -> Result<Option<Job>, ClientError> {
        loop {
            while let Some(line) = self.lines.next_line() {
                if line.is_empty() {
                    let event = std::mem::take(&mut self.event);
                    let data = std::mem::take(&mut self.data);
                    match event.as_str() {
                        "job" => {
                            return serde_json::from_str(&data)
                                .map(Some)
                                .map_err(|error| ClientError::Decode(error.to_string()));
                        }
                        "removed" => return Ok(None),
                        _ => continue,
                    }
                }
                if let Some(value) = line.strip_prefix("event:") {
                    self.event = value.trim_start().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            match self.body.next().await {
                Some(chunk) => self.lines.push(&chunk?),
                None => return Ok(None),
            }
        }
    }
}

mod bytes_buf {
    //! Splitting a byte stream into text lines.

    /// Bytes received but not yet cut into lines.
    #[derive(Debug, Default)]
    pub struct Lines {
        pending: Vec<u8>,
    }

    impl Lines {
        /// Adds received bytes.
        pub fn push(&mut self, bytes: &[u8]) {
            self.pending.extend_from_slice(bytes);
        }

        /// The next complete line, without its `\n` (or `\r\n`).
        pub fn next_line(&mut self) -> Option<String> {
            let end = self.pending.iter().position(|&b| b == b'\n')?;
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Some(String::from_utf8_lossy(&line).into_owned())
        }
    }
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let answer = error_body(response).await;
    let error = &answer["error"];
    Err(ClientError::Api {
        status: status.as_u16(),
        code: error["code"].as_str().unwrap_or("unknown").to_owned(),
        message: error["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| status_text(status)),
    })
}

/// An error answer's body, or null if it is not JSON.
async fn error_body(response: reqwest::Response) -> Value {
    match response.bytes().await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

fn status_text(status: StatusCode) -> String {
    format!(
        "the daemon answered {}",
        status.canonical_reason().unwrap_or("an error")
    )
}

fn number(answer: &Value, field: &str) -> Result<u64, ClientError> {
    answer[field]
        .as_u64()
        .ok_or_else(|| ClientError::Decode(answer.to_string()))
}

fn files(path: &Path, reason: String) -> ClientError {
    ClientError::Files {
        path: path.display().to_string(),
        reason,
    }
}

/// Escapes `text` for one URL path segment.
fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::bytes_buf::Lines;

    #[test]
    fn lines_are_cut_across_chunks_and_lose_their_line_ends() {
        let mut lines = Lines::default();
        lines.push(b"event: job\r\nda");
        assert_eq!(lines.next_line().as_deref(), Some("event: job"));
        assert_eq!(lines.next_line(), None);
        lines.push(b"ta: {}\n\n");
        assert_eq!(lines.next_line().as_deref(), Some("data: {}"));
        assert_eq!(lines.next_line().as_deref(), Some(""));
    }
}
