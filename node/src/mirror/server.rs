//! A plain HTTP mirror: serves the files of a folder with `Range`,
//! `If-Range`, strong ETags and `HEAD`, which is all a p2pmodel client
//! needs. `p2pmodel serve-mirror DIR` and the demo run it; a folder written
//! by `Store::export_mirror` (files, `.obao` sidecars and the model's
//! manifest) is a complete mirror for p2pmodel clients.
//!
//! It is a small static server, not a web server: one range per request (a
//! multi-range request gets the whole file), no listings, and no path that
//! leaves the folder.

use std::io::SeekFrom;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

/// How a mirror serves.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Pace every response body to at most this many bytes per second
    /// (`None`: as fast as the connection goes). Lets a demo or a test on
    /// loopback show a transfer that takes a while.
    pub bytes_per_second: Option<u64>,
}

impl ServeOptions {
    /// Sets the per-response rate limit.
    pub fn with_rate(mut self, bytes_per_second: Option<u64>) -> Self {
        self.bytes_per_second = bytes_per_second.filter(|&rate| rate > 0);
        self
    }
}

#[derive(Debug)]
struct Served {
    root: PathBuf,
    options: ServeOptions,
}

/// The router of a mirror serving the files under `root` at full speed.
pub fn router(root: impl Into<PathBuf>) -> Router {
    router_with(root, ServeOptions::default())
}

/// The router of a mirror serving the files under `root` as `options` say.
pub fn router_with(root: impl Into<PathBuf>, options: ServeOptions) -> Router {
    Router::new().fallback(serve).with_state(Arc::new(Served {
        root: root.into(),
        options,
    }))
}

/// Serves `router` on `listener` until the returned task is aborted.
pub fn spawn(listener: tokio::net::TcpListener, router: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, "mirror server stopped");
        }
    })
}

async fn serve(State(served): State<Arc<Served>>, request: Request) -> Response {
    let root = &served.root;
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some(path) = resolve(root, request.uri().path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let head = request.method() == Method::HEAD;
    match file_response(
        &path,
        request.headers(),
        head,
        served.options.bytes_per_second,
    )
    .await
    {
        Ok(response) => response,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            StatusCode::NOT_FOUND.into_response()
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "mirror read failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Maps a URL path to a file under `root`; `None` for anything that could
/// leave it.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(url_path.trim_start_matches('/'))?;
    let relative = Path::new(&decoded);
    if decoded.is_empty()
        || !relative
            .components()
            .all(|part| matches!(part, Component::Normal(_)))
    {
        return None;
    }
    Some(root.join(relative))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn file_response(
    path: &Path,
    headers: &HeaderMap,
    head: bool,
    rate: Option<u64>,
) -> std::io::Result<Response> {
    let mut file = tokio::fs::File::open(path).await?;
    let metadata = file.metadata().await?;
    if !metadata.is_file() {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    let size = metadata.len();
    let etag = etag(&metadata);
    let range = requested_range(headers, &etag, size);
    let mut response = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    let (start, len) = match range {
        Requested::Whole => {
            response = response.status(StatusCode::OK);
            (0, size)
        }
        Requested::Part(start, end) => {
            response = response.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", end - 1),
            );
            (start, end - start)
        }
        Requested::Unsatisfiable => {
            return Ok(Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .expect("static headers are valid"));
        }
    };
    let response = response.header(header::CONTENT_LENGTH, len);
    if head {
        return Ok(response
            .body(Body::empty())
            .expect("static headers are valid"));
    }
    file.seek(SeekFrom::Start(start)).await?;
    let pieces = ReaderStream::with_capacity(file.take(len), 256 * 1024);
    let body = match rate {
        None => Body::from_stream(pieces),
        Some(rate) => Body::from_stream(pieces.then(move |piece| async move {
            if let Ok(bytes) = &piece {
                tokio::time::sleep(Duration::from_secs_f64(bytes.len() as f64 / rate as f64)).await;
            }
            piece
        })),
    };
    Ok(response.body(body).expect("static headers are valid"))
}

/// A strong ETag that changes when the file is replaced or rewritten.
fn etag(metadata: &std::fs::Metadata) -> HeaderValue {
    use std::os::unix::fs::MetadataExt;
    let tag = format!(
        "\"{:x}-{:x}-{:x}\"",
        metadata.len(),
        metadata.mtime_nsec() + metadata.mtime() * 1_000_000_000,
        metadata.ino()
    );
    HeaderValue::from_str(&tag).expect("hex digits are a valid header")
}

enum Requested {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// The one byte range asked for, honouring `If-Range`.
fn requested_range(headers: &HeaderMap, etag: &HeaderValue, size: u64) -> Requested {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Requested::Whole;
    };
    if headers
        .get(header::IF_RANGE)
        .is_some_and(|if_range| if_range != etag)
    {
        return Requested::Whole;
    }
    let Some(spec) = range.strip_prefix("bytes=") else {
        return Requested::Whole;
    };
    if spec.contains(',') {
        return Requested::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Requested::Whole;
    };
    let (start, end) = match (
        first.trim().parse::<u64>().ok(),
        last.trim().parse::<u64>().ok(),
    ) {
        (Some(start), Some(last)) if start <= last => (start, last.saturating_add(1).min(size)),
        (Some(start), None) if last.trim().is_empty() => (start, size),
        (None, Some(suffix)) if first.trim().is_empty() => (size.saturating_sub(suffix), size),
        _ => return Requested::Whole,
    };
    if start >= size || start >= end {
        return Requested::Unsatisfiable;
    }
    Requested::Part(start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(range: &str, if_range: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        if let Some(tag) = if_range {
            headers.insert(header::IF_RANGE, HeaderValue::from_str(tag).unwrap());
        }
        headers
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let tag = HeaderValue::from_static("\"t\"");
        let part = |h: &HeaderMap| match requested_range(h, &tag, 100) {
            Requested::Part(a, b) => Some((a, b)),
            _ => None,
        };
        assert_eq!(part(&headers("bytes=0-9", None)), Some((0, 10)));
        assert_eq!(part(&headers("bytes=90-", None)), Some((90, 100)));
        assert_eq!(part(&headers("bytes=-5", None)), Some((95, 100)));
        assert_eq!(part(&headers("bytes=50-500", None)), Some((50, 100)));
        assert_eq!(part(&headers("bytes=0-1,5-6", None)), None);
        assert_eq!(
            part(&headers("bytes=0-9", Some("\"old\""))),
            None,
            "a stale If-Range gets the whole file"
        );
        assert_eq!(part(&headers("bytes=0-9", Some("\"t\""))), Some((0, 10)));
        assert!(matches!(
            requested_range(&headers("bytes=100-", None), &tag, 100),
            Requested::Unsatisfiable
        ));
    }

    #[test]
    fn paths_never_leave_the_folder() {
        let root = Path::new("/srv/mirror");
        assert_eq!(
            resolve(root, "/a/b%20c.gguf"),
            Some(PathBuf::from("/srv/mirror/a/b c.gguf"))
        );
        assert_eq!(
            resolve(root, "//etc/passwd"),
            Some(PathBuf::from("/srv/mirror/etc/passwd"))
        );
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/%2e%2e/x",
            "/",
            "/%zz",
            "/a/%2F..%2F..%2Fx",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
    }
}
