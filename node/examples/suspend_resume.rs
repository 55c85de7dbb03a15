//! Suspend the node mid-transfer (an app going to the background): new
//! calls are refused and connections close; after resume the transfer
//! finishes by itself.
//!
//! Run with: `cargo run -p p2pmodel-node --example suspend_resume`

mod common;

use std::time::Duration;

use p2pmodel_node::{FetchRequest, NodeBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mirror = common::LocalMirror::start(32 << 20, 8 << 20).await?;
    let node = NodeBuilder::new(mirror.store_dir("store")).spawn()?;
    let request = FetchRequest::hash(mirror.hash).with_mirror(mirror.url.clone());
    let handle = node.fetch(request.clone())?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    node.suspend().await;
    println!("state: {}", node.state());
    println!("a new fetch now: {:?}", node.fetch(request).err());
    tokio::time::sleep(Duration::from_secs(1)).await;

    node.resume().await?;
    println!("state: {}", node.state());
    println!("done: {}", handle.await?.path().display());
    Ok(())
}
