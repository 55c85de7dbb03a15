//! The daemon's side of the control API: the node, its queue and the
//! server that `p2pmodel daemon` runs beside the swarm.

use anyhow::Context;
use p2pmodel_control::{ControlServer, Queue, QueueConfig, ServerConfig, serve};
use p2pmodel_node::{Node, NodeBuilder};
use p2pmodel_store::Store;

use crate::args::ControlArgs;

/// The running control API and the node it drives.
pub struct Control {
    node: Node,
    server: ControlServer,
}

/// Starts a node on `store`'s folder, opens its queue (restarting jobs that
/// were running) and serves the API. Returns the node's store, which the
/// rest of the daemon shares (a store is opened once per process).
pub async fn start(store: Store, args: &ControlArgs) -> anyhow::Result<(Store, Control)> {
    // Absolute, so that the paths in job results mean the same to clients
    // started in other folders.
    let root = std::path::absolute(store.root()).context("resolving the store folder")?;
    drop(store);
    let node = NodeBuilder::new(&root)
        .spawn()
        .with_context(|| format!("opening the store at {}", root.display()))?;
    let config = QueueConfig::default()
        .with_max_queued(args.max_queued_jobs)
        .with_max_concurrent(args.max_concurrent_jobs);
    let queue = Queue::open(node.clone(), config).context("opening the download queue")?;
    let server = serve(
        queue,
        ServerConfig::default()
            .with_listen(args.control_listen)
            .with_allow_remote(args.control_allow_remote),
    )
    .await
    .context("starting the control API")?;
    tracing::info!(addr = %server.addr(), "control API listening");
    Ok((node.store().clone(), Control { node, server }))
}

impl Control {
    /// Stops the API, then the node: running jobs commit what they
    /// verified and stay running in the queue file, so the next daemon
    /// resumes them.
    pub async fn stop(self) {
        self.server.shutdown().await;
        self.node.shutdown().await;
    }
}
