//! The daemon's side of the control API: the node, its queue and the
//! server that `p2pmodel daemon` runs beside the swarm.

use anyhow::Context;
use p2pmodel_control::{ControlServer, Queue, QueueConfig, ServerConfig, serve};
use p2pmodel_node::Node;

use crate::args::ControlArgs;

/// The running control API and the node it drives.
pub struct Control {
    node: Node,
    server: ControlServer,
}

/// Opens the queue of `node` (restarting jobs that were running) and
/// serves the API.
pub async fn start(node: Node, args: &ControlArgs) -> anyhow::Result<Control> {
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
    Ok(Control { node, server })
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
