//! The HTTP-only baseline's origin: the node's own mirror server on
//! loopback, every response body paced through one uplink shared by all
//! connections (first come, first served, in segments), counting the bytes
//! it sends. Latency and the clients' downlinks are not modelled here: at
//! the origin's rate shared by many clients they do not bind.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use p2pmodel_node::Store;
use p2pmodel_node::mirror::server;
use p2pmodel_protocol::Hash;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use url::Url;

use crate::net::SEGMENT;

/// A running origin. Dropping it stops the server.
pub struct Origin {
    url: Url,
    uplink: Arc<Uplink>,
    server: JoinHandle<()>,
}

/// Why the origin could not start.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// Importing or exporting the blob failed.
    #[error("cannot lay out the origin's files: {0}")]
    Files(String),
    /// The listener could not be opened.
    #[error("cannot listen on loopback: {0}")]
    Listen(#[from] io::Error),
}

impl Origin {
    /// Serves `blob` (whose hash is `hash`) from files laid out under
    /// `dir`, at `rate` bytes per second for all clients together.
    ///
    /// # Errors
    /// When the files cannot be written or no loopback port opened.
    pub async fn start(dir: &Path, blob: &[u8], rate: u64) -> Result<(Self, Hash), OriginError> {
        let files = |error: &dyn std::fmt::Display| OriginError::Files(error.to_string());
        let store = Store::open(dir.join("store")).map_err(|e| files(&e))?;
        let hash = store.import_bytes(blob).map_err(|e| files(&e))?;
        let served = dir.join("served");
        let name = store.export_mirror(hash, &served).map_err(|e| files(&e))?;
        drop(store);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let uplink = Arc::new(Uplink {
            rate,
            free: Mutex::new(Instant::now()),
            sent: AtomicU64::new(0),
        });
        let shaped = ShapedListener {
            inner: listener,
            uplink: uplink.clone(),
        };
        let router = server::router(served);
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(shaped, router).await {
                tracing::warn!(%error, "origin stopped");
            }
        });
        let url = Url::parse(&format!("http://{addr}/{name}")).map_err(|e| files(&e))?;
        Ok((
            Self {
                url,
                uplink,
                server,
            },
            hash,
        ))
    }

    /// The blob's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Bytes sent so far (headers and bodies).
    pub fn sent(&self) -> u64 {
        self.uplink.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The origin's uplink: when it is next free, at `rate`.
struct Uplink {
    rate: u64,
    free: Mutex<Instant>,
    sent: AtomicU64,
}

impl Uplink {
    /// Books `bytes` now; returns when they have left.
    fn book(&self, bytes: usize) -> Instant {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let start = (*free).max(Instant::now());
        *free = start + Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        *free
    }
}

struct ShapedListener {
    inner: TcpListener,
    uplink: Arc<Uplink>,
}

impl axum::serve::Listener for ShapedListener {
    type Io = ShapedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let shaped = ShapedStream {
                        inner: stream,
                        uplink: self.uplink.clone(),
                        booked: None,
                    };
                    return (shaped, addr);
                }
                Err(error) => tracing::warn!(%error, "origin accept failed"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection whose writes wait for their turn on the uplink.
struct ShapedStream {
    inner: TcpStream,
    uplink: Arc<Uplink>,
    /// The segment booked and when it has left.
    booked: Option<(Pin<Box<Sleep>>, usize)>,
}

impl AsyncRead for ShapedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ShapedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        let (left, bytes) = this.booked.get_or_insert_with(|| {
            let bytes = buf.len().min(SEGMENT);
            let at = this.uplink.book(bytes);
            (Box::pin(tokio::time::sleep_until(at)), bytes)
        });
        ready!(left.as_mut().poll(cx));
        let bytes = (*bytes).min(buf.len());
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..bytes]));
        this.booked = None;
        if let Ok(sent) = written {
            this.uplink.sent.fetch_add(sent as u64, Ordering::Relaxed);
        }
        Poll::Ready(written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
