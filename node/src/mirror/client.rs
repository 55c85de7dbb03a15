//! One HTTP mirror: what it serves and how to ask it for a range.
//!
//! Servers differ, so every answer is checked rather than trusted:
//! a `200` to a range request means the server ignores `Range` (or the
//! content changed, which the validator tells apart); `Content-Range` must
//! name exactly the bytes asked for and the size already known; an ETag or
//! `Last-Modified` that differs from the first answer means the content
//! changed under the URL. Requests carry `Accept-Encoding: identity` so the
//! bytes are the file's bytes.

use std::time::Duration;

use p2pmodel_protocol::verified::outboard_size;
use p2pmodel_protocol::wire::MAX_BLOB_SIZE;
use p2pmodel_protocol::{Hash, Outboard};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode};
use url::Url;

/// Largest sidecar outboard read into memory (256 MiB: the tree of a
/// 64 GiB blob). Larger blobs are verified whole at the end instead.
const MAX_SIDECAR: u64 = 256 << 20;
/// How long an idle connection to a mirror is kept for the next request.
const POOL_IDLE: Duration = Duration::from_secs(2);

/// Timeouts and retry limits for talking to mirrors.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Longest silence allowed while a response body is arriving.
    pub read_timeout: Duration,
    /// Failures in a row after which a mirror is given up for this fetch.
    pub max_failures: u32,
    /// First backoff after a failure; doubles each time.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// A bearer token sent only to this origin (`scheme://host:port`), never
    /// to another host a redirect leads to.
    pub bearer: Option<Bearer>,
}

/// A token for one origin (a Hugging Face endpoint, say).
#[derive(Clone)]
pub struct Bearer {
    /// `scheme://host:port` the token belongs to.
    pub origin: String,
    /// The token.
    pub token: String,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("origin", &self.origin)
            .field("token", &"<hidden>")
            .finish()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            max_failures: 6,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            bearer: None,
        }
    }
}

impl HttpConfig {
    /// Sets how long a body may stay silent.
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Sets the failures in a row after which a mirror is given up.
    pub fn with_max_failures(mut self, failures: u32) -> Self {
        self.max_failures = failures;
        self
    }

    /// Sets the first backoff after a failure.
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sends `token` as a bearer token to `origin` only.
    pub fn with_bearer(mut self, bearer: Option<Bearer>) -> Self {
        self.bearer = bearer;
        self
    }

    /// The wait before retry number `failures` (1-based).
    pub fn backoff_for(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// What went wrong with a mirror.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// Connection, reset or timeout: worth retrying after a pause.
    #[error("{url}: {source}")]
    Transport {
        /// The mirror.
        url: Url,
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP status. 408, 429 and 5xx are retried; others are final.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The mirror.
        url: Url,
        /// The status it answered.
        status: StatusCode,
    },
    /// The body ended before the bytes asked for.
    #[error("{url}: the response ended early, at byte {at}")]
    Truncated {
        /// The mirror.
        url: Url,
        /// Offset of the first byte that did not arrive.
        at: u64,
    },
    /// The content behind the URL is not what it was (validator or size changed).
    #[error("{url}: the file changed on the server during the download ({detail})")]
    Changed {
        /// The mirror.
        url: Url,
        /// What differed.
        detail: String,
    },
    /// An answer that makes no sense for the request.
    #[error("{url}: unusable response: {detail}")]
    BadResponse {
        /// The mirror.
        url: Url,
        /// What was wrong with it.
        detail: String,
    },
    /// Bytes that failed verification against the blob's hash tree.
    #[error("{url}: sent bytes that do not match the blob's hash (chunk {chunk}); mirror dropped")]
    BadData {
        /// The mirror.
        url: Url,
        /// The first chunk that was wrong.
        chunk: u64,
    },
}

impl MirrorError {
    /// True if and only if the same request may succeed after a pause.
    pub fn is_retryable(&self) -> bool {
        match self {
            MirrorError::Transport { .. } | MirrorError::Truncated { .. } => true,
            MirrorError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// What a mirror says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Size in bytes.
    pub size: u64,
    /// Strong ETag or Last-Modified: used with `If-Range` and to notice a change.
    pub validator: Option<String>,
    /// True if and only if the server answered a range request with 206.
    pub ranges: bool,
}

/// The answer to a range request.
#[derive(Debug)]
pub enum RangeResponse {
    /// 206: exactly the bytes asked for.
    Partial(Response),
    /// 200: the whole file from byte 0; the server ignores `Range`.
    Whole(Response),
}

/// An HTTP client for mirrors. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct MirrorClient {
    http: reqwest::Client,
    config: HttpConfig,
}

impl MirrorClient {
    /// A client with these timeouts and limits.
    ///
    /// Redirects are followed up to 10 times, never from https to http;
    /// credentials (`Authorization`, cookies) are dropped when a redirect
    /// leads to another host.
    pub fn new(config: HttpConfig) -> Self {
        install_crypto_provider();
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let downgrade = attempt.previous().last().is_some_and(|previous| {
                previous.scheme() == "https" && attempt.url().scheme() == "http"
            });
            if downgrade {
                attempt.error("refusing a redirect from https to http")
            } else if attempt.previous().len() >= 10 {
                attempt.error("more than 10 redirects")
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .redirect(policy)
            // Back-to-back requests reuse a connection; once a transfer
            // stops (paused, cancelled, done), the mirror sees it close.
            .pool_idle_timeout(POOL_IDLE)
            .user_agent(concat!("p2pmodel/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with a crypto provider and no custom TLS builds");
        Self { http, config }
    }

    /// A GET of `url` asking for the bytes as stored, with the bearer
    /// token when `url` is the token's origin.
    pub(crate) fn get(&self, url: &Url) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .get(url.clone())
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(bearer) = self
            .config
            .bearer
            .as_ref()
            .filter(|b| url.origin().ascii_serialization() == b.origin)
        {
            request = request.bearer_auth(&bearer.token);
        }
        request
    }

    /// Timeouts and limits in force.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Asks `url` for its first byte to learn size, validator and whether
    /// it serves ranges.
    ///
    /// # Errors
    /// A [`MirrorError`]; a missing size is [`MirrorError::BadResponse`].
    pub async fn probe(&self, url: &Url) -> Result<Probe, MirrorError> {
        let probe = self.probe_unchecked(url).await?;
        if probe.size > MAX_BLOB_SIZE {
            return Err(MirrorError::BadResponse {
                url: url.clone(),
                detail: format!(
                    "claims a size of {} bytes, over the 1 PiB limit",
                    probe.size
                ),
            });
        }
        Ok(probe)
    }

    async fn probe_unchecked(&self, url: &Url) -> Result<Probe, MirrorError> {
        let response = self
            .get(url)
            .header(header::RANGE, "bytes=0-0")
            .send()
            .await
            .map_err(|source| MirrorError::Transport {
                url: url.clone(),
                source,
            })?;
        let validator = validator(response.headers());
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let (_, total) = content_range(url, response.headers())?;
                Ok(Probe {
                    size: total,
                    validator,
                    ranges: true,
                })
            }
            StatusCode::OK => {
                let size = response
                    .content_length()
                    .ok_or_else(|| MirrorError::BadResponse {
                        url: url.clone(),
                        detail: "no Content-Length, so the size is unknown".into(),
                    })?;
                Ok(Probe {
                    size,
                    validator,
                    ranges: false,
                })
            }
            // An empty file cannot satisfy bytes=0-0.
            StatusCode::RANGE_NOT_SATISFIABLE => match content_range_total(response.headers()) {
                Some(0) => Ok(Probe {
                    size: 0,
                    validator,
                    ranges: true,
                }),
                _ => Err(MirrorError::Status {
                    url: url.clone(),
                    status: response.status(),
                }),
            },
            status => Err(MirrorError::Status {
                url: url.clone(),
                status,
            }),
        }
    }

    /// Asks for bytes `start..end` of a file of `size` bytes whose content
    /// had `validator` when probed.
    ///
    /// # Errors
    /// [`MirrorError::Changed`] when the server now serves other content,
    /// and the other [`MirrorError`]s.
    pub async fn get_range(
        &self,
        url: &Url,
        start: u64,
        end: u64,
        probe: &Probe,
    ) -> Result<RangeResponse, MirrorError> {
        let mut request = self
            .get(url)
            .header(header::RANGE, format!("bytes={start}-{}", end - 1));
        if let Some(validator) = &probe.validator {
            request = request.header(header::IF_RANGE, validator);
        }
        let response = request
            .send()
            .await
            .map_err(|source| MirrorError::Transport {
                url: url.clone(),
                source,
            })?;
        let now = validator(response.headers());
        if probe.validator.is_some() && now.is_some() && now != probe.validator {
            return Err(MirrorError::Changed {
                url: url.clone(),
                detail: format!(
                    "validator {:?} became {:?}",
                    probe.validator.as_deref().unwrap_or(""),
                    now.unwrap_or_default()
                ),
            });
        }
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let (range, total) = content_range(url, response.headers())?;
                if total != probe.size {
                    return Err(MirrorError::Changed {
                        url: url.clone(),
                        detail: format!("size {} became {total}", probe.size),
                    });
                }
                if range != (start..end) {
                    return Err(MirrorError::BadResponse {
                        url: url.clone(),
                        detail: format!(
                            "asked for bytes {start}..{end}, got {}..{}",
                            range.start, range.end
                        ),
                    });
                }
                Ok(RangeResponse::Partial(response))
            }
            StatusCode::OK => {
                if let Some(length) = response.content_length().filter(|&len| len != probe.size) {
                    return Err(MirrorError::Changed {
                        url: url.clone(),
                        detail: format!("size {} became {length}", probe.size),
                    });
                }
                Ok(RangeResponse::Whole(response))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => Err(MirrorError::Changed {
                url: url.clone(),
                detail: "the range is past the end of the file".into(),
            }),
            status => Err(MirrorError::Status {
                url: url.clone(),
                status,
            }),
        }
    }

    /// Looks for a `URL.obao` sidecar holding the blob's outboard and
    /// checks it against `hash`. Any failure means "no sidecar".
    pub async fn sidecar_outboard(&self, url: &Url, hash: Hash, size: u64) -> Option<Outboard> {
        let sidecar = Url::parse(&format!("{url}.obao")).ok()?;
        let expected = outboard_size(size);
        if expected > MAX_SIDECAR {
            tracing::debug!(%sidecar, "outboard too large to hold in memory; verifying the whole blob at the end");
            return None;
        }
        let response = self.get(&sidecar).send().await.ok()?;
        if response.status() != StatusCode::OK
            || response.content_length().is_some_and(|len| len != expected)
        {
            return None;
        }
        let mut bytes = Vec::new();
        let mut body = response;
        while let Some(piece) = body.chunk().await.ok()? {
            if (bytes.len() + piece.len()) as u64 > expected {
                tracing::debug!(%sidecar, "sidecar outboard is longer than the blob's tree");
                return None;
            }
            bytes.extend_from_slice(&piece);
        }
        match Outboard::from_untrusted(hash, size, bytes) {
            Ok(outboard) => Some(outboard),
            Err(error) => {
                tracing::warn!(%sidecar, %error, "ignoring a sidecar outboard that does not match the blob");
                None
            }
        }
    }
}

/// The strong ETag, or failing that Last-Modified: what `If-Range` accepts.
fn validator(headers: &HeaderMap) -> Option<String> {
    let text = |value: &HeaderValue| value.to_str().ok().map(str::to_owned);
    match headers.get(header::ETAG).and_then(text) {
        Some(etag) if !etag.starts_with("W/") => Some(etag),
        _ => headers.get(header::LAST_MODIFIED).and_then(text),
    }
}

/// Parses `Content-Range: bytes START-END/TOTAL` into `START..END+1` and TOTAL.
fn content_range(
    url: &Url,
    headers: &HeaderMap,
) -> Result<(std::ops::Range<u64>, u64), MirrorError> {
    let bad = |detail: &str| MirrorError::BadResponse {
        url: url.clone(),
        detail: detail.into(),
    };
    let value = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("206 without a Content-Range"))?;
    let spec = value
        .strip_prefix("bytes ")
        .ok_or_else(|| bad("Content-Range is not in bytes"))?;
    let (range, total) = spec
        .split_once('/')
        .ok_or_else(|| bad("Content-Range has no total"))?;
    let (first, last) = range
        .split_once('-')
        .ok_or_else(|| bad("malformed Content-Range"))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| bad("malformed Content-Range"))
    };
    let (first, last, total) = (parse(first)?, parse(last)?, parse(total)?);
    if first > last || last >= total {
        return Err(bad("Content-Range is out of bounds"));
    }
    Ok((first..last + 1, total))
}

/// The TOTAL of `Content-Range: bytes */TOTAL` (a 416 answer).
fn content_range_total(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    value.strip_prefix("bytes */")?.trim().parse().ok()
}

/// Makes ring the process's rustls provider (reqwest is built without one,
/// which keeps aws-lc-sys out of the build). Harmless when already set.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_str(value).unwrap()))
            .collect()
    }

    #[test]
    fn content_range_is_parsed_and_bounded() {
        let url = Url::parse("http://m/f").unwrap();
        let ok = headers(&[(header::CONTENT_RANGE, "bytes 10-19/100")]);
        assert_eq!(content_range(&url, &ok).unwrap(), (10..20, 100));
        for bad in [
            "bytes 20-10/100",
            "bytes 0-100/100",
            "items 0-1/2",
            "bytes 0-1",
            "bytes x-1/2",
        ] {
            let h = headers(&[(header::CONTENT_RANGE, bad)]);
            assert!(content_range(&url, &h).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn weak_etags_give_way_to_last_modified() {
        let h = headers(&[
            (header::ETAG, "W/\"x\""),
            (header::LAST_MODIFIED, "Tue, 01 Jan 2030 00:00:00 GMT"),
        ]);
        assert_eq!(
            validator(&h).as_deref(),
            Some("Tue, 01 Jan 2030 00:00:00 GMT")
        );
        let h = headers(&[(header::ETAG, "\"strong\"")]);
        assert_eq!(validator(&h).as_deref(), Some("\"strong\""));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let config = HttpConfig::default();
        assert_eq!(config.backoff_for(1), Duration::from_millis(250));
        assert_eq!(config.backoff_for(3), Duration::from_secs(1));
        assert_eq!(config.backoff_for(30), Duration::from_secs(8));
    }
}
