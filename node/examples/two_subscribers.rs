//! Two callers ask for the same hash: one transfer serves both, and one
//! may leave without disturbing the other.
//!
//! Run with: `cargo run -p p2pmodel-node --example two_subscribers`

mod common;

use p2pmodel_node::{FetchRequest, NodeBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mirror = common::LocalMirror::start(16 << 20, 8 << 20).await?;
    let node = NodeBuilder::new(mirror.store_dir("store")).spawn()?;
    let request = FetchRequest::hash(mirror.hash).with_mirror(mirror.url.clone());
    let ui = node.fetch(request.clone())?;
    let loader = node.fetch(request)?;
    println!("{} and {} share one transfer", ui.id(), loader.id());
    node.cancel(ui.id())?;
    println!("{} left: {:?}", ui.id(), ui.await.err());
    println!(
        "{} finished: {}",
        loader.id(),
        loader.await?.path().display()
    );
    Ok(())
}
