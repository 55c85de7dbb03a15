//! Fetch one blob and print its progress as it arrives.
//!
//! Run with: `cargo run -p p2pmodel-node --example fetch_progress`

mod common;

use p2pmodel_node::{FetchRequest, NodeBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mirror = common::LocalMirror::start(32 << 20, 8 << 20).await?;
    let node = NodeBuilder::new(mirror.store_dir("store")).spawn()?;
    let handle = node.fetch(FetchRequest::hash(mirror.hash).with_mirror(mirror.url.clone()))?;
    println!("{} started for {}", handle.id(), mirror.hash);
    let mut progress = handle.progress();
    let printer = tokio::spawn(async move {
        while progress.changed().await.is_ok() {
            let now = progress.borrow_and_update().clone();
            println!("{:?}: {} of {} bytes", now.phase, now.done, now.total);
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    });
    let path = handle.await?.path().to_path_buf();
    printer.abort();
    println!("done: {}", path.display());
    Ok(())
}
