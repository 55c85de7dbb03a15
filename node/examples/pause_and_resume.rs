//! Pause a fetch half way with `cancel`, then fetch again: the second call
//! resumes from the verified chunks on disk.
//!
//! Run with: `cargo run -p p2pmodel-node --example pause_and_resume`

mod common;

use p2pmodel_node::{FetchRequest, NodeBuilder, NodeError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mirror = common::LocalMirror::start(32 << 20, 8 << 20).await?;
    let node = NodeBuilder::new(mirror.store_dir("store")).spawn()?;
    let request = FetchRequest::hash(mirror.hash).with_mirror(mirror.url.clone());

    let handle = node.fetch(request.clone())?;
    let mut progress = handle.progress();
    progress
        .wait_for(|p| p.total > 0 && p.done * 2 >= p.total)
        .await?;
    node.cancel(handle.id())?;
    match handle.await {
        Err(NodeError::Cancelled) => println!("paused at {} bytes", progress.borrow().done),
        other => println!("unexpected: {other:?}"),
    }

    let handle = node.fetch(request)?;
    let progress = handle.progress();
    let path = handle.await?.path().to_path_buf();
    println!(
        "resumed {} bytes from disk; done: {}",
        progress.borrow().resumed,
        path.display()
    );
    Ok(())
}
