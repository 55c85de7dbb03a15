//! One peer to one peer over loopback: p2pmodel's swarm fetch (libp2p TCP +
//! noise + yamux, every chunk verified, written to the store) against a raw
//! TCP copy of the same file in the same run.
//!
//! Run with:
//! `cargo run --release -p p2pmodel-bench --bin swarm-fetch -- [SIZE_MIB] [ROUNDS]`
//! (defaults: 1024 MiB, 3 rounds; the median round is reported).
//!
//! The baseline reads the file, sends it over a plain TCP connection on
//! 127.0.0.1 and writes it to a file, then syncs (blocking threads, std's
//! copy): the same disk work with no encryption, multiplexing or
//! verification.

use std::path::Path;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use p2pmodel_node::swarm::{Swarm, SwarmConfig};
use p2pmodel_node::{CancellationToken, Fetcher, FetcherConfig, ProgressTracker};
use p2pmodel_store::Store;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let size_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let work = tempfile::tempdir()?;
    let source = work.path().join("blob");
    write_blob(&source, size_mib << 20)?;

    let seed_store = Store::open(work.path().join("seed"))?;
    let hash = seed_store.import_file(&source)?;
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    let seed = Swarm::spawn(seed_store, SwarmConfig::listen([listen]))?;
    let mut addrs = seed.listen_addrs().await;
    while addrs.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
        addrs = seed.listen_addrs().await;
    }
    println!("file: {size_mib} MiB, hash {hash}; {rounds} rounds, median shown");

    let (mut tcp, mut swarm) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let dir = work.path().join(format!("round-{round}"));
        std::fs::create_dir_all(&dir)?;
        tcp.push(raw_tcp_copy(&source, &dir.join("tcp")).await?);
        let store = Store::open(dir.join("store"))?;
        let leech = Swarm::spawn(store.clone(), SwarmConfig::default())?;
        let started = Instant::now();
        leech.dial(addrs[0].clone()).await?;
        Fetcher::new(store, FetcherConfig::default())
            .with_swarm(leech.clone())
            .fetch_blob(
                hash,
                &[],
                None,
                &ProgressTracker::new(),
                CancellationToken::new(),
            )
            .await?;
        swarm.push(started.elapsed());
        leech.shutdown().await;
        std::fs::remove_dir_all(dir.join("tcp")).ok();
    }
    let (tcp, swarm) = (median(&tcp), median(&swarm));
    let rate = |t: Duration| size_mib as f64 / t.as_secs_f64();
    println!(
        "{:<40} {:>8} {:>10} {:>7}",
        "method", "seconds", "MiB/s", "ratio"
    );
    println!(
        "{:<40} {:>8.2} {:>10.0} {:>7.2}",
        "raw TCP copy (baseline)",
        tcp.as_secs_f64(),
        rate(tcp),
        1.0
    );
    let ratio = tcp.as_secs_f64() / swarm.as_secs_f64();
    println!(
        "{:<40} {:>8.2} {:>10.0} {:>7.2}",
        "p2pmodel peer fetch (verified)",
        swarm.as_secs_f64(),
        rate(swarm),
        ratio
    );
    println!("ratio = baseline time / method time");
    Ok(())
}

fn write_blob(path: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"swarm-fetch bench");
    let mut xof = hasher.finalize_xof();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size >> 20 {
        xof.fill(&mut block);
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(())
}

/// Sends `source` over one loopback TCP connection into `target`, with
/// plain blocking threads (std's copy uses splice/sendfile where it can).
async fn raw_tcp_copy(source: &Path, target: &Path) -> Result<Duration> {
    let (source, target) = (source.to_path_buf(), target.to_path_buf());
    let elapsed = tokio::task::spawn_blocking(move || -> std::io::Result<Duration> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let started = Instant::now();
        let sender = std::thread::spawn(move || -> std::io::Result<()> {
            let (mut socket, _) = listener.accept()?;
            std::io::copy(&mut std::fs::File::open(source)?, &mut socket)?;
            Ok(())
        });
        let mut socket = std::net::TcpStream::connect(addr)?;
        let mut file = std::fs::File::create(target)?;
        std::io::copy(&mut socket, &mut file)?;
        file.sync_all()?;
        sender.join().expect("sender thread does not panic")?;
        Ok(started.elapsed())
    })
    .await??;
    Ok(elapsed)
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}
