//! One peer to one peer over loopback: p2pmodel's swarm fetch (libp2p TCP +
//! TLS 1.3 with AES-GCM + yamux, every chunk verified, written to the
//! store) against a raw TCP copy of the same file in the same run, and the
//! same fetch over noise (ChaCha20-Poly1305, libp2p's usual encryption).
//! Built with the `quic` feature, it also fetches over libp2p QUIC in each
//! round.
//!
//! Run with:
//! `cargo run --release -p p2pmodel-bench --bin swarm-fetch -- [SIZE_MIB] [ROUNDS]`
//! (defaults: 1024 MiB, 3 rounds; the median round is reported), with
//! `--features quic` to add the QUIC fetch.
//!
//! The baseline reads the file, sends it over a plain TCP connection on
//! 127.0.0.1 and writes it to a file, then syncs (blocking threads, std's
//! copy): the same disk work with no encryption, multiplexing or
//! verification.
//!
//! Each row also gives the CPU time the process used (user and system,
//! both ends together, from `/proc/self/stat`), median of the rounds: the
//! two ends share the machine's cores, so a method that needs more CPU
//! per byte than the cores give is limited by it.

use std::path::Path;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use p2pmodel_node::swarm::is_quic;
use p2pmodel_node::swarm::{Encryption, Swarm, SwarmConfig};
use p2pmodel_node::{CancellationToken, Fetcher, FetcherConfig, ProgressTracker};
use p2pmodel_protocol::Hash;
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
    let mut listen: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    if cfg!(feature = "quic") {
        listen.push("/ip4/127.0.0.1/udp/0/quic-v1".parse()?);
    }
    let listening = listen.len();
    let seed = Swarm::spawn(seed_store, SwarmConfig::listen(listen))?;
    let mut addrs = seed.listen_addrs().await;
    while addrs.len() < listening {
        tokio::time::sleep(Duration::from_millis(10)).await;
        addrs = seed.listen_addrs().await;
    }
    let (quic_addrs, tcp_addrs): (Vec<_>, Vec<_>) = addrs.into_iter().partition(is_quic);
    println!("file: {size_mib} MiB, hash {hash}; {rounds} rounds, median shown");

    let (mut tcp, mut swarm, mut noise, mut quic) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let dir = work.path().join(format!("round-{round}"));
        std::fs::create_dir_all(&dir)?;
        warm_memory(&dir, size_mib << 20)?;
        tcp.push(measured(raw_tcp_copy(&source, &dir.join("tcp"))).await?);
        std::fs::remove_dir_all(dir.join("tcp")).ok();
        // The order turns over every round, so that none always runs on a
        // warmer page cache.
        let mut fetches = vec![
            (&tcp_addrs[0], &mut swarm, "swarm-tls", Encryption::Tls),
            (&tcp_addrs[0], &mut noise, "swarm-noise", Encryption::Noise),
        ];
        if let Some(addr) = quic_addrs.first() {
            fetches.push((addr, &mut quic, "swarm-quic", Encryption::Tls));
        }
        let turn = round % fetches.len();
        fetches.rotate_left(turn);
        for (addr, times, name, encryption) in fetches {
            let leech_dir = dir.join(name);
            warm_memory(&dir, size_mib << 20)?;
            let fetch = peer_fetch(&leech_dir, hash, addr, encryption);
            times.push(measured(fetch).await?);
            std::fs::remove_dir_all(&leech_dir).ok();
        }
    }
    let tcp = median(&tcp);
    let rate = |t: Duration| size_mib as f64 / t.as_secs_f64();
    let row = |method: &str, run: Run| {
        println!(
            "{:<40} {:>8.2} {:>10.0} {:>7.2} {:>7.2}",
            method,
            run.wall.as_secs_f64(),
            rate(run.wall),
            tcp.wall.as_secs_f64() / run.wall.as_secs_f64(),
            run.cpu.as_secs_f64(),
        );
    };
    println!(
        "{:<40} {:>8} {:>10} {:>7} {:>7}",
        "method", "seconds", "MiB/s", "ratio", "CPU s"
    );
    row("raw TCP copy (baseline)", tcp);
    let swarm = median(&swarm);
    row("p2pmodel peer fetch, TCP+TLS (verified)", swarm);
    let noise = median(&noise);
    row("p2pmodel peer fetch, TCP+noise (verified)", noise);
    println!(
        "TLS (AES-GCM) peer fetch / noise peer fetch (speed): {:.2}",
        noise.wall.as_secs_f64() / swarm.wall.as_secs_f64()
    );
    if !quic.is_empty() {
        let quic = median(&quic);
        row("p2pmodel peer fetch, QUIC (verified)", quic);
        println!(
            "QUIC peer fetch / TCP+TLS peer fetch (speed): {:.2}",
            swarm.wall.as_secs_f64() / quic.wall.as_secs_f64()
        );
    }
    println!("ratio = baseline time / method time; CPU s = process CPU time, both ends");
    Ok(())
}

/// One leech, on a fresh store in `dir`, dials the seed at `addr` with
/// `encryption` and fetches `hash` from it; the time from the dial to the
/// verified blob.
async fn peer_fetch(
    dir: &Path,
    hash: Hash,
    addr: &Multiaddr,
    encryption: Encryption,
) -> Result<Duration> {
    let store = Store::open(dir)?;
    let config = SwarmConfig::default().with_encryption(encryption);
    let leech = Swarm::spawn(store.clone(), config)?;
    let started = Instant::now();
    leech.dial(addr.clone()).await?;
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
    let elapsed = started.elapsed();
    leech.shutdown().await;
    Ok(elapsed)
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

/// Writes `size` bytes to a scratch file in `dir` and deletes it, so that
/// the copy measured next writes into memory just used. A virtual machine
/// that hands freed memory back to its host (virtio-balloon free page
/// reporting) makes the first write into memory freed more than a second
/// before about ten times dearer (2.7 against 0.25 CPU s per GiB into the
/// page cache on the machine the README's figures come from), and
/// whichever copy came after a pause paid for it.
fn warm_memory(dir: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let path = dir.join("warm");
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    let block = vec![0x5a_u8; 1 << 20];
    for _ in 0..size.div_ceil(1 << 20) {
        file.write_all(&block)?;
    }
    file.flush()?;
    drop(file);
    std::fs::remove_file(&path)?;
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

/// The wall-clock and CPU time of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Run {
    wall: Duration,
    cpu: Duration,
}

/// Runs `copy`, which reports its own wall-clock time, and adds the CPU
/// time the process used meanwhile.
async fn measured(copy: impl std::future::Future<Output = Result<Duration>>) -> Result<Run> {
    let before = process_cpu()?;
    let wall = copy.await?;
    Ok(Run {
        wall,
        cpu: process_cpu()?.saturating_sub(before),
    })
}

/// User plus system CPU time of this process so far (Linux).
fn process_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are the 12th and 13th of them, in ticks.
    let after_name = stat
        .rsplit_once(')')
        .ok_or("no command name in /proc/self/stat")?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // The kernel reports in USER_HZ, 100 on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

/// The run with the median wall-clock time.
fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}
