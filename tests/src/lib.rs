//! What the end-to-end tests (and the node's tests and benches) share:
//!
//! - [`TestMirror`]: a real HTTP server on loopback that serves a folder
//!   like any mirror, counts requests and body bytes, and injects the
//!   faults real servers show (ignored `Range`, 5xx, truncation, resets,
//!   stalls, corrupted bytes, redirects, content replaced mid-download).
//! - [`generate`]: incompressible deterministic data of any size.
//! - [`HostilePeer`]: a real libp2p peer on loopback that speaks the chunk
//!   protocol and misbehaves in one chosen [`Misbehaviour`], or floods
//!   another node with streams and connections.
//! - [`binary`]: the `p2pmodel` binary under test, built on first use.
//! - [`tcp_sockets`]: the TCP sockets a process holds, as the OS sees them.

mod connections;
mod hostile;
mod mirror;
mod sockets;

pub use hostile::{Flood, HostilePeer, Misbehaviour, OUTBOARD_LATE};
pub use mirror::{Faults, TestMirror};
pub use sockets::{TcpSocket, TcpState, tcp_sockets};

use std::path::PathBuf;
use std::sync::OnceLock;

/// `size` bytes of deterministic, incompressible data (BLAKE3 output).
pub fn generate(size: u64, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; usize::try_from(size).expect("test data fits in memory")];
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.finalize_xof().fill(&mut data);
    data
}

/// Verified bytes a fetch's `progress` credits to the swarm node `node`.
pub fn from_peer(progress: &p2pmodel_node::Progress, node: &p2pmodel_node::Node) -> u64 {
    let name = format!(
        "peer {}",
        node.swarm().expect("the node runs a swarm").peer_id()
    );
    progress
        .sources
        .iter()
        .find(|s| s.source == name)
        .map_or(0, |s| s.bytes)
}

/// The first address `swarm` listens on, once it does.
///
/// # Panics
/// When it does not listen within two seconds.
pub async fn listen_addr(swarm: &p2pmodel_node::swarm::Swarm) -> p2pmodel_node::swarm::Multiaddr {
    for _ in 0..200 {
        if let Some(addr) = swarm.listen_addrs().await.into_iter().next() {
            return addr;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the swarm never listened");
}

/// The BLAKE3 of a file, as `b3sum` prints it.
pub fn b3sum(path: &std::path::Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(std::fs::File::open(path).expect("file to hash exists"))
        .expect("file reads");
    hasher.finalize().to_hex().to_string()
}

/// Path of the `p2pmodel` binary of this build, built once per test run
/// so that it is never stale.
pub fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut build = std::process::Command::new(env!("CARGO"));
            build
                .args(["build", "--quiet", "-p", "p2pmodel", "--bin", "p2pmodel"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            // Cargo sets these for the test process. Passed on, they reach
            // ring's build script, which reruns when they change: the TLS
            // chain would be rebuilt here, and again by the next build.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                let per_crate = [
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                ];
                if per_crate.iter().any(|prefix| name.starts_with(prefix))
                    || name == "CARGO_PRIMARY_PACKAGE"
                    || name == "CARGO_TARGET_TMPDIR"
                {
                    build.env_remove(name.as_ref());
                }
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "building the p2pmodel binary failed");
            let exe = std::env::current_exe().expect("test binary path");
            // target/debug/deps/e2e-HASH -> target/debug/p2pmodel
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("target layout");
            profile_dir.join("p2pmodel")
        })
        .clone()
}
