//! `p2pmodel daemon`: seeds the store to peers until Ctrl+C or SIGTERM.
//!
//! Prints the peer id and the addresses to dial, one per line, and writes
//! the addresses to `STORE/daemon.addrs` so that tools and tests can find
//! the daemon. Peers dial it with `p2pmodel fetch HASH --peer ADDRESS`,
//! or join the DHT through it with `--bootstrap ADDRESS`; with
//! `--bootstrap` of its own, it announces the store's blobs in the DHT.
//! Beside the swarm it runs the download queue and its control API (see
//! `control.rs`).

use std::process::ExitCode;

use anyhow::Context;
use std::path::PathBuf;

use p2pmodel_node::NodeBuilder;

use super::fetch::swarm_config;
use tokio::signal::unix::{SignalKind, signal};

use crate::args::ControlArgs;

/// File in the store folder listing the daemon's addresses.
pub const ADDRS_FILE: &str = "daemon.addrs";

pub async fn run(
    root: PathBuf,
    listen: &[String],
    upload_limit: Option<&str>,
    mdns: bool,
    bootstrap: &[String],
    control: &ControlArgs,
) -> anyhow::Result<ExitCode> {
    let config = swarm_config(listen, upload_limit, mdns, bootstrap)?;
    let listening = config.listen.len();
    // Absolute, so that the paths in job results mean the same to clients
    // started in other folders.
    let root = std::path::absolute(&root).context("resolving the store folder")?;
    let node = NodeBuilder::new(&root)
        .swarm(config)
        .spawn()
        .with_context(|| format!("starting a node on the store at {}", root.display()))?;
    let swarm = node.swarm().expect("the node joined the swarm").clone();
    let control = super::control::start(node, control).await?;
    let mut addrs = swarm.listen_addrs().await;
    while addrs.len() < listening {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        addrs = swarm.listen_addrs().await;
    }
    println!("peer id: {}", swarm.peer_id());
    let lines: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    for line in &lines {
        println!("{line}");
    }
    let file = root.join(ADDRS_FILE);
    let staging = root.join(format!("{ADDRS_FILE}.{}", std::process::id()));
    std::fs::write(&staging, lines.join("\n") + "\n").context("writing the address file")?;
    std::fs::rename(&staging, &file).context("writing the address file")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    let _ = std::fs::remove_file(&file);
    // Stops the API, then the node (and its swarm).
    control.stop().await;
    Ok(ExitCode::SUCCESS)
}
