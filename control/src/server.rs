//! [`serve`]: binds the control API, writes `STORE/control.token` (owner
//! only) and `STORE/control.addr`, and serves until
//! [`ControlServer::shutdown`].
//!
//! The API listens on loopback unless the caller allows otherwise: the
//! token is the only thing between a caller and the queue, and it travels
//! in clear HTTP.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::queue::Queue;

/// The token file's name in the store folder.
pub const TOKEN_FILE: &str = "control.token";

/// The address file's name in the store folder: `IP:PORT` and a newline.
pub const ADDR_FILE: &str = "control.addr";

/// How long [`ControlServer::shutdown`] lets open requests (event streams
/// included) finish before it drops them.
const DRAIN: Duration = Duration::from_secs(2);

/// Where and how to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:0`: loopback, any port).
    pub listen: SocketAddr,
    /// Whether a non-loopback `listen` is allowed (default no).
    pub allow_remote: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            allow_remote: false,
        }
    }
}

impl ServerConfig {
    /// Listens on `addr`.
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Allows (or not) an address other than loopback.
    pub fn with_allow_remote(mut self, allow: bool) -> Self {
        self.allow_remote = allow;
        self
    }
}

/// Why the API could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address is not loopback and remote access was not allowed.
    #[error(
        "{0} is not a loopback address; the control API listens on loopback unless remote access is explicitly allowed"
    )]
    RemoteNotAllowed(SocketAddr),
    /// No random bytes for the token.
    #[error("no random bytes for the control token: {0}")]
    Random(getrandom::Error),
    /// Binding or writing the token and address files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: io::Error,
    },
}

/// The running API. Dropping it leaves the server running until the
/// runtime ends; call [`ControlServer::shutdown`] to stop it.
#[derive(Debug)]
pub struct ControlServer {
    addr: SocketAddr,
    token: Arc<str>,
    root: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl ControlServer {
    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Stops serving (letting open requests finish for a moment) and
    /// removes the address and token files.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(DRAIN, &mut task).await.is_err() {
            task.abort();
        }
        for name in [ADDR_FILE, TOKEN_FILE] {
            let _ = fs::remove_file(self.root.join(name));
        }
    }
}

/// Serves the API over `queue`, writing the token and address files into
/// the queue's store folder.
///
/// # Errors
/// [`ServeError`] for a remote address not allowed, no randomness, or a
/// failure to bind or to write the files.
pub async fn serve(queue: Queue, config: ServerConfig) -> Result<ControlServer, ServeError> {
    if !config.listen.ip().is_loopback() && !config.allow_remote {
        return Err(ServeError::RemoteNotAllowed(config.listen));
    }
    let root = queue.node().store().root().to_path_buf();
    let token: Arc<str> = api::new_token().map_err(ServeError::Random)?.into();
    write_private(&root.join(TOKEN_FILE), token.as_bytes()).map_err(|source| ServeError::Io {
        what: format!("writing {}", root.join(TOKEN_FILE).display()),
        source,
    })?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Io {
            what: format!("listening on {}", config.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        what: "reading the bound address".into(),
        source,
    })?;
    let router = api::router(ApiState {
        queue,
        token: token.clone(),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    write_private(&root.join(ADDR_FILE), format!("{addr}\n").as_bytes()).map_err(|source| {
        ServeError::Io {
            what: format!("writing {}", root.join(ADDR_FILE).display()),
            source,
        }
    })?;
    Ok(ControlServer {
        addr,
        token,
        root,
        stop,
        task,
    })
}

/// Writes `bytes` to `path` through a staging file created new with mode
/// 0600, so that the content is never readable by others, not even for a
/// moment, and readers never see half of it.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let staging = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&staging);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staging)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&staging, path)
}
