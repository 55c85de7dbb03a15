//! `p2pmodel serve-mirror DIR`: serves a folder as an HTTP mirror until Ctrl+C.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use p2pmodel_node::mirror::server::{self, ServeOptions};

use super::parse_size;

pub async fn run(dir: &Path, listen: &str, rate: Option<&str>) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
    let rate = rate.map(parse_size).transpose()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    eprintln!("serving {} at http://{addr}/ (Ctrl+C stops)", dir.display());
    let task = server::spawn(
        listener,
        server::router_with(dir, ServeOptions::default().with_rate(rate)),
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl+C")?;
    task.abort();
    Ok(ExitCode::SUCCESS)
}
