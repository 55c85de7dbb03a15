//! Fetching one large file from a local HTTP mirror: p2pmodel (verified,
//! resumable, written to its store) against plain unverified copies of the
//! same file in the same run.
//!
//! Run with:
//! `cargo run --release -p p2pmodel-bench --bin mirror-fetch -- [SIZE_MIB] [ROUNDS]`
//! (defaults: 1024 MiB, 3 rounds; the median round is reported).
//!
//! Baselines: a bare reqwest GET streamed to a file (one connection, no
//! hashing), and `curl -o FILE` when curl is installed. The mirror is the
//! node's own static server on 127.0.0.1, in this process. Every copy is
//! written to the same filesystem and its BLAKE3 checked afterwards
//! (outside the timing).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use p2pmodel_node::mirror::server;
use p2pmodel_node::{CancellationToken, Fetcher, FetcherConfig, ProgressTracker};
use p2pmodel_protocol::{Hash, Outboard};
use p2pmodel_store::Store;
use tokio::io::AsyncWriteExt;
use url::Url;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> Result<()> {
    // reqwest is built without a default TLS provider (see DESIGN.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let size_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let size = size_mib << 20;
    let work = tempfile::tempdir()?;
    let mirror_dir = work.path().join("mirror");
    std::fs::create_dir_all(&mirror_dir)?;
    let hash = write_blob(&mirror_dir, size)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url: Url = format!("http://{}/blob", listener.local_addr()?).parse()?;
    let _server = server::spawn(listener, server::router(&mirror_dir));
    let curl = which("curl");
    println!(
        "file: {size_mib} MiB, hash {hash}; {rounds} rounds, median shown; {} cores",
        cores()
    );

    let mut results: Vec<(&str, Vec<Duration>)> = vec![
        ("reqwest copy (baseline)", Vec::new()),
        ("curl -o (baseline)", Vec::new()),
        ("p2pmodel fetch, sidecar outboard", Vec::new()),
        ("p2pmodel fetch, no outboard", Vec::new()),
    ];
    for round in 0..rounds {
        let dir = work.path().join(format!("round-{round}"));
        std::fs::create_dir_all(&dir)?;
        results[0]
            .1
            .push(timed(reqwest_copy(&url, &dir.join("reqwest"))).await?);
        check(&dir.join("reqwest"), hash)?;
        if let Some(curl) = &curl {
            results[1]
                .1
                .push(timed(curl_copy(curl, &url, &dir.join("curl"))).await?);
            check(&dir.join("curl"), hash)?;
        }
        let store = Store::open(dir.join("store-verified"))?;
        results[2]
            .1
            .push(timed(p2pmodel_fetch(store, hash, &url)).await?);
        std::fs::rename(
            mirror_dir.join("blob.obao"),
            work.path().join("blob.obao.aside"),
        )?;
        let store = Store::open(dir.join("store-unverified"))?;
        results[3]
            .1
            .push(timed(p2pmodel_fetch(store, hash, &url)).await?);
        std::fs::rename(
            work.path().join("blob.obao.aside"),
            mirror_dir.join("blob.obao"),
        )?;
        std::fs::remove_dir_all(&dir)?;
    }

    let baseline = median(&results[0].1);
    println!(
        "{:<36} {:>10} {:>12} {:>8}",
        "method", "seconds", "MiB/s", "ratio"
    );
    for (name, times) in &results {
        if times.is_empty() {
            println!("{name:<36} {:>10}", "(not installed)");
            continue;
        }
        let t = median(times);
        let rate = size_mib as f64 / t.as_secs_f64();
        let ratio = baseline.as_secs_f64() / t.as_secs_f64();
        println!(
            "{name:<36} {:>10.2} {rate:>12.0} {ratio:>8.2}",
            t.as_secs_f64()
        );
    }
    println!("ratio = baseline time / method time (1.0 = as fast as the reqwest copy)");
    Ok(())
}

/// Writes `size` bytes of incompressible data and its sidecar outboard.
fn write_blob(dir: &Path, size: u64) -> Result<Hash> {
    use std::io::Write;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"mirror-fetch bench");
    let mut xof = hasher.finalize_xof();
    let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join("blob"))?);
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size >> 20 {
        xof.fill(&mut block);
        file.write_all(&block)?;
    }
    file.flush()?;
    drop(file);
    let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(dir.join("blob"))?);
    let outboard = Outboard::compute(reader, size)?;
    std::fs::write(dir.join("blob.obao"), outboard.as_bytes())?;
    Ok(outboard.hash())
}

async fn timed(work: impl std::future::Future<Output = Result<()>>) -> Result<Duration> {
    let started = Instant::now();
    work.await?;
    Ok(started.elapsed())
}

async fn reqwest_copy(url: &Url, target: &Path) -> Result<()> {
    let client = reqwest::Client::new();
    let mut body = client
        .get(url.clone())
        .send()
        .await?
        .error_for_status()?
        .bytes_stream();
    let mut file =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(target).await?);
    while let Some(piece) = body.next().await {
        file.write_all(&piece?).await?;
    }
    file.flush().await?;
    file.into_inner().sync_all().await?;
    Ok(())
}

async fn curl_copy(curl: &Path, url: &Url, target: &Path) -> Result<()> {
    let status = tokio::process::Command::new(curl)
        .args(["-s", "-f", "-o"])
        .arg(target)
        .arg(url.as_str())
        .status()
        .await?;
    if !status.success() {
        return Err(format!("curl exited with {status}").into());
    }
    std::fs::File::open(target)?.sync_all()?;
    Ok(())
}

async fn p2pmodel_fetch(store: Store, hash: Hash, url: &Url) -> Result<()> {
    let fetcher = Fetcher::new(store, FetcherConfig::default());
    let progress = ProgressTracker::new();
    let mirrors = std::slice::from_ref(url);
    fetcher
        .fetch_blob(hash, mirrors, None, &progress, CancellationToken::new())
        .await?;
    Ok(())
}

fn check(path: &Path, hash: Hash) -> Result<()> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    if Hash::from(hasher.finalize()) != hash {
        return Err(format!("{} does not match the blob", path.display()).into());
    }
    Ok(())
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
