//! `p2pmodel daemon`: seeds the store to peers until Ctrl+C or SIGTERM.
//!
//! Prints the peer id and the addresses to dial, one per line, and writes
//! the addresses to `STORE/daemon.addrs` so that tools and tests can find
//! the daemon. Discovery (mDNS, the DHT) comes later: peers dial it with
//! `p2pmodel fetch HASH --peer ADDRESS`. Beside the swarm it runs the
//! download queue and its control API (see `control.rs`).

use std::process::ExitCode;

use anyhow::Context;
use p2pmodel_node::swarm::Swarm;
use p2pmodel_store::Store;
use tokio::signal::unix::{SignalKind, signal};

use crate::args::ControlArgs;

/// File in the store folder listing the daemon's addresses.
pub const ADDRS_FILE: &str = "daemon.addrs";

pub async fn run(
    store: Store,
    listen: &[String],
    control: &ControlArgs,
) -> anyhow::Result<ExitCode> {
    let listen = listen
        .iter()
        .map(|text| {
            text.parse()
                .with_context(|| format!("{text:?} is not a multiaddr"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (store, control) = super::control::start(store, control).await?;
    let root = store.root().to_path_buf();
    let swarm = Swarm::spawn(store, &listen)
        .await
        .context("starting the swarm")?;
    let mut addrs = swarm.listen_addrs().await;
    while addrs.len() < listen.len() {
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
    control.stop().await;
    Ok(ExitCode::SUCCESS)
}
