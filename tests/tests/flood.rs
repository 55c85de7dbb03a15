//! A seeding daemon under floods from hostile clients: thousands of
//! streams asking for 4 MiB each and never reading, thousands of
//! connections. Its memory stays bounded (peak RSS read from
//! `/proc/PID/status`) and an honest peer still fetches.

use std::time::Duration;

use libp2p::Multiaddr;
use p2pmodel_protocol::Hash;
use p2pmodel_protocol::wire::{MAX_CHUNKS_PER_GET, Request};
use testkit::{HostilePeer, b3sum, generate};
use tokio::process::Child;

use crate::util::{Workspace, assert_ok, seeded, start_daemon, wait_until};

const MIB: u64 = 1 << 20;
/// A generous bound on the daemon's peak resident memory: answers being
/// built or written are capped far below it, however many are asked for.
const MAX_RSS: u64 = 512 * MIB;

/// Starts `p2pmodel daemon` seeding a fresh blob of `size` bytes; returns
/// its workspace, the daemon, its first address and the blob's hash.
async fn seeding_daemon(size: u64) -> (Workspace, Child, Multiaddr, Hash) {
    let (work, hash) = seeded(&generate(size, 21)).await;
    let (daemon, addr) = start_daemon(&work).await;
    (work, daemon, addr.parse().unwrap(), hash.parse().unwrap())
}

/// A field of `/proc/PID/status` in bytes (`VmHWM` is the peak RSS).
fn status_bytes(daemon: &Child, field: &str) -> u64 {
    let pid = daemon.id().expect("the daemon runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// File descriptors the daemon holds open now.
fn open_fds(daemon: &Child) -> usize {
    let pid = daemon.id().expect("the daemon runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Fetches `hash` from `addr` with the real binary and checks the bytes.
async fn honest_fetch(hash: Hash, addr: &Multiaddr) {
    let leech = Workspace::new();
    let target = leech.path("fetched.bin");
    let out = leech
        .run(&[
            "fetch",
            &hash.to_hex(),
            "--peer",
            &addr.to_string(),
            "-o",
            target.to_str().unwrap(),
        ])
        .await;
    assert_ok(&out);
    assert_eq!(b3sum(&target), hash.to_hex());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_gets_never_read_keeps_memory_bounded_and_an_honest_fetch_completes() {
    let (_seed, mut daemon, addr, hash) = seeding_daemon(64 * MIB).await;
    let before = status_bytes(&daemon, "VmRSS");

    let get = Request::Get {
        hash,
        start: 0,
        end: MAX_CHUNKS_PER_GET,
    };
    // Four hostile peers, 2,500 streams each asking for 4 MiB; each holds
    // its last 125 streams unread.
    let mut floods = Vec::new();
    for _ in 0..4 {
        let hostile = HostilePeer::client().await;
        let peer = hostile.dial(&addr).await;
        let get = get.clone();
        floods.push(tokio::spawn(async move {
            let flood = hostile.flood(peer, &get, 2500, 125).await;
            (hostile, flood)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    honest_fetch(hash, &addr).await;
    let mut flood = testkit::Flood::default();
    let mut hostile = Vec::new();
    for done in floods {
        let (peer, one) = done.await.unwrap();
        flood.sent += one.sent;
        flood.failed += one.failed;
        hostile.push(peer);
    }

    let peak = status_bytes(&daemon, "VmHWM");
    println!(
        "flood: {flood:?}; daemon RSS {} MiB before, peak {} MiB",
        before / MIB,
        peak / MIB
    );
    assert!(
        flood.sent >= 1000,
        "the flood reached the daemon: {flood:?}"
    );
    assert!(peak < MAX_RSS, "peak RSS {} MiB", peak / MIB);
    daemon.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_are_turned_away_and_an_honest_fetch_completes() {
    let (_seed, mut daemon, addr, hash) = seeding_daemon(16 * MIB).await;
    let fds_before = open_fds(&daemon);
    let port = addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();

    // Silent TCP connections that never start a handshake, as many as
    // this process may open (up to 2,000): past the limit of handshakes
    // under way, the daemon closes them at once.
    let mut silent = Vec::new();
    for _ in 0..2000 {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(socket) => silent.push(socket),
            Err(error) => {
                println!("stopped opening connections at {}: {error}", silent.len());
                break;
            }
        }
    }
    let fds_silent = open_fds(&daemon);
    println!(
        "{} silent connections: daemon fds {fds_before} before, {fds_silent} with them open",
        silent.len()
    );
    assert!(silent.len() >= 500, "the flood was large enough");
    assert!(
        fds_silent < fds_before + 200,
        "the daemon holds {fds_silent} descriptors"
    );
    // Their handshakes time out (10 s) while the flood keeps its sockets.
    wait_until("the silent handshakes timed out", || {
        open_fds(&daemon) < fds_before + 8
    })
    .await;

    // Full libp2p connections from one hostile peer: a few are kept.
    let hostile = HostilePeer::client().await;
    let established = hostile.dial_many(&addr, 200).await;
    println!(
        "200 libp2p dials from one peer: {established} established at first; daemon fds {}",
        open_fds(&daemon)
    );
    // Those past the per-peer limit are closed as they are seen, while
    // the attacker keeps its side open.
    wait_until("the daemon turned the extra connections away", || {
        open_fds(&daemon) < fds_before + 16
    })
    .await;

    honest_fetch(hash, &addr).await;
    let peak = status_bytes(&daemon, "VmHWM");
    println!("daemon peak RSS {} MiB", peak / MIB);
    assert!(peak < MAX_RSS, "peak RSS {} MiB", peak / MIB);
    drop(silent);
    daemon.kill().await.unwrap();
}
