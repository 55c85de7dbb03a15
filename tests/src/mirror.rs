//! [`TestMirror`]: the node's static mirror server behind a layer that
//! counts and misbehaves on request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use p2pmodel_node::mirror::server;

use crate::connections::CountingListener;

/// Misbehaviours, each armed for the next N responses (or, for the flags
/// and rates, until changed). All start off.
#[derive(Debug, Default)]
pub struct Faults {
    /// Drop the `Range` header: every answer is a 200 with the whole file.
    pub ignore_range: AtomicBool,
    /// Answer the next N requests with 503.
    pub fail_next: AtomicU32,
    /// End the next N bodies early (after [`Faults::cut_after`] bytes).
    pub truncate_next: AtomicU32,
    /// Reset the connection in the middle of the next N bodies.
    pub reset_next: AtomicU32,
    /// Go silent for [`Faults::stall_for`] in the middle of the next N bodies.
    pub stall_next: AtomicU32,
    /// Bytes of a body sent before a truncation, reset or stall.
    pub cut_after: AtomicU64,
    /// How long a stall lasts, in milliseconds.
    pub stall_for_ms: AtomicU64,
    /// Flip the byte at this file offset plus one (0: off) in every body.
    pub corrupt_offset_plus_one: AtomicU64,
    /// Limit every body to this many bytes per second (0: unlimited).
    pub bytes_per_second: AtomicU64,
    /// Answer every request with a 302 to this base URL (same path).
    pub redirect_to: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct Counters {
    open_connections: Arc<AtomicUsize>,
    accepted_connections: Arc<AtomicUsize>,
    requests: AtomicU64,
    body_bytes: AtomicU64,
    authorization: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct Shared {
    faults: Faults,
    counters: Counters,
}

/// A mirror on 127.0.0.1 serving the files of its own temporary folder.
/// The server stops when the mirror is dropped.
#[derive(Debug)]
pub struct TestMirror {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestMirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestMirror {
    /// Starts a mirror with an empty folder on a free loopback port.
    ///
    /// # Panics
    /// If no port can be bound.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let shared = Arc::new(Shared {
            faults: Faults::default(),
            counters: Counters::default(),
        });
        let router = server::router(dir.path()).layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            misbehave,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let counters = &shared.counters;
        let listener = CountingListener::new(
            listener,
            Arc::clone(&counters.open_connections),
            Arc::clone(&counters.accepted_connections),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            dir,
            shared,
            task,
        }
    }

    /// The folder it serves.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (or atomically replaces, changing its ETag) the file at `path`.
    pub fn put(&self, path: &str, bytes: &[u8]) -> PathBuf {
        let target = self.dir.path().join(path);
        std::fs::create_dir_all(target.parent().expect("file in folder")).expect("create folders");
        let staging = self
            .dir
            .path()
            .join(format!(".staging-{}", path.replace('/', "_")));
        std::fs::write(&staging, bytes).expect("write mirror file");
        std::fs::rename(&staging, &target).expect("replace mirror file");
        target
    }

    /// The URL of `path` on this mirror.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The fault switches.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Connections open now, as the server holds them.
    pub fn open_connections(&self) -> usize {
        self.shared.counters.open_connections.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted_connections(&self) -> usize {
        self.shared
            .counters
            .accepted_connections
            .load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.counters.requests.load(Ordering::SeqCst)
    }

    /// Body bytes sent so far (bytes handed to the connection).
    pub fn body_bytes(&self) -> u64 {
        self.shared.counters.body_bytes.load(Ordering::SeqCst)
    }

    /// Every `Authorization` header received, in order.
    pub fn authorization_headers(&self) -> Vec<String> {
        self.shared
            .counters
            .authorization
            .lock()
            .expect("lock")
            .clone()
    }

    /// Limits bodies to `rate` bytes per second (0: unlimited).
    pub fn throttle(&self, rate: u64) {
        self.faults().bytes_per_second.store(rate, Ordering::SeqCst);
    }
}

/// Takes one armed shot of a counter, if any is left.
fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[derive(Clone, Copy)]
enum Cut {
    None,
    Truncate,
    Reset,
    Stall(Duration),
}

async fn misbehave(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let faults = &shared.faults;
    shared.counters.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(auth) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        shared
            .counters
            .authorization
            .lock()
            .expect("lock")
            .push(auth.to_owned());
    }
    if let Some(base) = faults.redirect_to.lock().expect("lock").clone() {
        let location = format!("{base}{}", request.uri().path());
        return (StatusCode::FOUND, [(header::LOCATION, location)]).into_response();
    }
    if take(&faults.fail_next) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if faults.ignore_range.load(Ordering::SeqCst) {
        request.headers_mut().remove(header::RANGE);
    }
    let response = next.run(request).await;
    let cut = if take(&faults.truncate_next) {
        Cut::Truncate
    } else if take(&faults.reset_next) {
        Cut::Reset
    } else if take(&faults.stall_next) {
        Cut::Stall(Duration::from_millis(
            faults.stall_for_ms.load(Ordering::SeqCst),
        ))
    } else {
        Cut::None
    };
    let start = body_start(response.headers().get(header::CONTENT_RANGE));
    let plan = Plan {
        cut,
        cut_after: faults.cut_after.load(Ordering::SeqCst),
        corrupt: faults
            .corrupt_offset_plus_one
            .load(Ordering::SeqCst)
            .checked_sub(1),
        rate: faults.bytes_per_second.load(Ordering::SeqCst),
    };
    let (parts, body) = response.into_parts();
    let body = shape(body, start, plan, Arc::clone(&shared));
    Response::from_parts(parts, body)
}

/// File offset of a body's first byte, from its `Content-Range`.
fn body_start(content_range: Option<&HeaderValue>) -> u64 {
    content_range
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Clone, Copy)]
struct Plan {
    cut: Cut,
    cut_after: u64,
    corrupt: Option<u64>,
    rate: u64,
}

/// Re-emits a body in pieces of at most 64 KiB, counting, pacing,
/// corrupting and cutting it as planned.
fn shape(body: Body, start: u64, plan: Plan, shared: Arc<Shared>) -> Body {
    let pieces = body.into_data_stream().flat_map(|piece| {
        let pieces: Vec<Result<Bytes, axum::Error>> = match piece {
            Ok(bytes) => (0..bytes.len())
                .step_by(64 * 1024)
                .map(|i| Ok(bytes.slice(i..bytes.len().min(i + 64 * 1024))))
                .collect(),
            Err(error) => vec![Err(error)],
        };
        futures_util::stream::iter(pieces)
    });
    let state = (Box::pin(pieces), start, 0u64, false, shared);
    let stream = futures_util::stream::unfold(
        state,
        move |(mut pieces, offset, sent, done, shared)| async move {
            if done {
                return None;
            }
            let piece = match pieces.next().await? {
                Ok(piece) => piece,
                Err(error) => {
                    return Some((
                        Err(std::io::Error::other(error)),
                        (pieces, offset, sent, true, shared),
                    ));
                }
            };
            let mut piece = piece.to_vec();
            if let Some(at) = plan
                .corrupt
                .filter(|&at| at >= offset && at < offset + piece.len() as u64)
            {
                piece[(at - offset) as usize] ^= 0x55;
            }
            let mut finish = false;
            let keep = (plan.cut_after.saturating_sub(sent) as usize).min(piece.len());
            let crossing = sent <= plan.cut_after && sent + piece.len() as u64 > plan.cut_after;
            match plan.cut {
                Cut::Truncate if crossing => {
                    piece.truncate(keep);
                    finish = true;
                }
                Cut::Reset if crossing => {
                    let reset =
                        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset");
                    return Some((Err(reset), (pieces, offset, sent, true, shared)));
                }
                Cut::Stall(pause) if crossing => tokio::time::sleep(pause).await,
                _ => {}
            }
            if plan.rate > 0 {
                tokio::time::sleep(Duration::from_secs_f64(
                    piece.len() as f64 / plan.rate as f64,
                ))
                .await;
            }
            let len = piece.len() as u64;
            shared.counters.body_bytes.fetch_add(len, Ordering::SeqCst);
            Some((
                Ok(Bytes::from(piece)),
                (pieces, offset + len, sent + len, finish, shared),
            ))
        },
    );
    Body::from_stream(stream)
}
