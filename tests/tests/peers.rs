//! Fetching over the swarm as users do on a LAN, peers dialled directly:
//! a seeding daemon, a seed with three leechers that feed each other, two
//! seeds at once, a peer process that corrupts chunks, a seed killed
//! mid-transfer, and a node that suspends.

use std::time::Duration;

use p2pmodel_node::swarm::SwarmConfig;
use p2pmodel_node::{FetchRequest, NodeBuilder};
use testkit::{TcpState, b3sum, generate, tcp_sockets};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::util::{
    Workspace, assert_ok, bytes_from, last_progress, peer_id, seeded, signal, start_daemon,
    start_daemon_with, stderr, stdout,
};

const MIB: u64 = 1 << 20;

/// Loopback ports free now (bound, then let go).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

#[tokio::test]
async fn a_daemon_seeds_and_a_peer_fetches_from_it() {
    let seed = Workspace::new();
    let file = seed.path("model.bin");
    std::fs::write(&file, generate(6 * MIB + 1, 5)).unwrap();
    let out = seed.run(&["add", file.to_str().unwrap()]).await;
    assert_ok(&out);
    let hash = stdout(&out);

    let (daemon, addr) = start_daemon(&seed).await;
    let addrs_file = seed.store().join("daemon.addrs");
    assert!(addr.contains("/p2p/"), "{addr}");

    let leech = Workspace::new();
    let target = leech.path("fetched.bin");
    let out = leech
        .run(&[
            "fetch",
            &hash,
            "--peer",
            &addr,
            "-o",
            target.to_str().unwrap(),
        ])
        .await;
    assert_ok(&out);
    assert_eq!(b3sum(&target), hash);

    signal(&daemon, "TERM");
    let done = tokio::time::timeout(Duration::from_secs(10), daemon.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(done.status.success(), "daemon: {}", stderr(&done));
    assert!(
        !addrs_file.exists(),
        "the address file goes with the daemon"
    );
}

#[tokio::test]
async fn a_leecher_with_two_seed_daemons_receives_chunks_from_both() {
    let size = 16 * MIB;
    let data = generate(size, 21);
    let (first, hash) = seeded(&data).await;
    let (second, same) = seeded(&data).await;
    assert_eq!(hash, same);
    // Each seed uploads 8 MiB/s: neither alone keeps up with the leecher.
    let (mut a, a_addr) = start_daemon_with(&first, &["--upload-limit", "8M"]).await;
    let (mut b, b_addr) = start_daemon_with(&second, &["--upload-limit", "8M"]).await;

    let leech = Workspace::new();
    let target = leech.path("model.bin");
    let target = target.to_str().unwrap();
    let out = leech
        .run(&[
            "fetch", &hash, "--json", "--peer", &a_addr, "--peer", &b_addr, "-o", target,
        ])
        .await;
    assert_ok(&out);
    assert_eq!(b3sum(std::path::Path::new(target)), hash);
    let last = last_progress(&String::from_utf8_lossy(&out.stdout));
    let from_a = bytes_from(&last, &format!("peer {}", peer_id(&a_addr)));
    let from_b = bytes_from(&last, &format!("peer {}", peer_id(&b_addr)));
    println!("seed A sent {from_a} bytes, seed B {from_b}");
    assert_eq!(from_a + from_b, size, "every byte came from the two seeds");
    assert!(
        from_a >= size / 4 && from_b >= size / 4,
        "both seeds sent a fair share: {from_a} and {from_b} bytes"
    );
    a.kill().await.unwrap();
    b.kill().await.unwrap();
}

#[tokio::test]
async fn a_peer_process_that_corrupts_chunks_is_dropped_and_the_fetch_completes() {
    let size = 8 * MIB;
    let data = generate(size, 22);
    let (seed, hash) = seeded(&data).await;
    let (mut daemon, seed_addr) = start_daemon_with(&seed, &["--upload-limit", "8M"]).await;
    let served = seed.path("served.bin");
    std::fs::write(&served, &data).unwrap();
    // A process that answers every request with one byte of chunk data
    // flipped (and the rest honestly).
    let mut hostile = tokio::process::Command::new(env!("CARGO_BIN_EXE_hostile-peer"))
        .arg(&served)
        .arg("flip-byte")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(hostile.stdout.take().unwrap()).lines();
    let hostile_addr = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the hostile peer prints its address")
        .unwrap()
        .expect("an address line");

    let leech = Workspace::new();
    let target = leech.path("model.bin");
    let target = target.to_str().unwrap();
    // The hostile peer first, so that it is dialled and asked first.
    let out = leech
        .run(&[
            "fetch",
            &hash,
            "--json",
            "--peer",
            &hostile_addr,
            "--peer",
            &seed_addr,
            "-o",
            target,
        ])
        .await;
    assert_ok(&out);
    assert_eq!(b3sum(std::path::Path::new(target)), hash);
    let hostile_id = peer_id(&hostile_addr);
    let last = last_progress(&String::from_utf8_lossy(&out.stdout));
    let from_hostile = bytes_from(&last, &format!("peer {hostile_id}"));
    assert!(
        from_hostile <= 4 * MIB,
        "at most the pieces in flight to it when it was dropped came from the hostile peer: {from_hostile} bytes"
    );
    let log = stderr(&out);
    assert!(
        log.contains("dropping peer") && log.contains(hostile_id),
        "the log names the dropped peer: {log}"
    );
    hostile.kill().await.unwrap();
    daemon.kill().await.unwrap();
}

#[tokio::test]
async fn a_peer_without_the_blob_gives_a_clear_error() {
    let seed = Workspace::new();
    let (mut daemon, addr) = start_daemon(&seed).await;
    let leech = Workspace::new();
    let missing = "ab".repeat(32);
    let out = leech.run(&["fetch", &missing, "--peer", &addr]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no connected peer has it"),
        "{}",
        stderr(&out)
    );
    daemon.kill().await.unwrap();
}

#[tokio::test]
async fn one_seed_and_three_leechers_started_together_finish_and_feed_each_other() {
    let size = 48 * MIB;
    let (seed, hash) = seeded(&generate(size, 11)).await;
    // The seed uploads 8 MiB/s, as a seed on a slow uplink would: alone it
    // would need three times 6 s for three copies.
    let (mut daemon, seed_addr) = start_daemon_with(&seed, &["--upload-limit", "8M"]).await;
    let ports = free_ports(3);
    let leechers: Vec<Workspace> = (0..3).map(|_| Workspace::new()).collect();
    let children: Vec<tokio::process::Child> = leechers
        .iter()
        .enumerate()
        .map(|(i, work)| {
            let listen = format!("/ip4/127.0.0.1/tcp/{}", ports[i]);
            let out = work.path("model.bin");
            let mut args = vec![
                "fetch".to_owned(),
                hash.clone(),
                "--json".into(),
                "--listen".into(),
                listen,
                "--peer".into(),
                seed_addr.clone(),
                "-o".into(),
                out.to_str().unwrap().to_owned(),
            ];
            for (j, port) in ports.iter().enumerate() {
                if j != i {
                    args.push("--peer".into());
                    args.push(format!("/ip4/127.0.0.1/tcp/{port}"));
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            work.spawn(&args)
        })
        .collect();
    let mut from_seed = 0;
    for (work, child) in leechers.iter().zip(children) {
        let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
            .await
            .expect("every leecher finishes")
            .unwrap();
        assert_ok(&out);
        assert_eq!(b3sum(&work.path("model.bin")), hash);
        let last = last_progress(&String::from_utf8_lossy(&out.stdout));
        from_seed += bytes_from(&last, &format!("peer {}", peer_id(&seed_addr)));
    }
    daemon.kill().await.unwrap();
    let copies = from_seed as f64 / size as f64;
    println!("the seed uploaded {copies:.2} copies for three leechers");
    assert!(
        copies < 2.0,
        "the leechers fed each other: the seed sent {copies:.2} copies"
    );
}

#[tokio::test]
async fn a_seed_killed_mid_transfer_does_not_stop_the_fetch() {
    let size = 32 * MIB;
    let data = generate(size, 12);
    let (first, hash) = seeded(&data).await;
    let (second, _) = seeded(&data).await;
    let (mut doomed, doomed_addr) = start_daemon_with(&first, &["--upload-limit", "4M"]).await;
    let (mut other, other_addr) = start_daemon_with(&second, &["--upload-limit", "4M"]).await;
    let leech = Workspace::new();
    let target = leech.path("model.bin");
    let mut fetch = leech.spawn(&[
        "fetch",
        &hash,
        "--json",
        "--peer",
        &doomed_addr,
        "--peer",
        &other_addr,
        "-o",
        target.to_str().unwrap(),
    ]);
    let doomed_source = format!("peer {}", peer_id(&doomed_addr));
    let mut lines = BufReader::new(fetch.stdout.take().unwrap()).lines();
    let mut before_kill = 0;
    while let Some(line) = lines.next_line().await.unwrap() {
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        before_kill = bytes_from(&line, &doomed_source);
        if before_kill > 0 {
            break;
        }
    }
    assert!(before_kill > 0, "the doomed seed served before it died");
    doomed.kill().await.unwrap();
    let mut last = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        last = line;
    }
    let status = tokio::time::timeout(Duration::from_secs(120), fetch.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "fetch ended with {status:?}");
    assert_eq!(b3sum(&target), hash);
    let done: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(done["event"], "done", "{last}");
    other.kill().await.unwrap();
}

#[tokio::test]
async fn a_suspended_node_holds_no_socket_and_finishes_after_resume() {
    let size = 24 * MIB;
    let (seed, hash) = seeded(&generate(size, 13)).await;
    let (mut daemon, seed_addr) = start_daemon_with(&seed, &["--upload-limit", "4M"]).await;
    let dir = tempfile::tempdir().unwrap();
    let listen: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let node = NodeBuilder::new(dir.path().join("store"))
        .swarm(SwarmConfig::listen([listen]))
        .spawn()
        .unwrap();
    let me = std::process::id();
    let handle = node
        .fetch(FetchRequest::hash(hash.parse().unwrap()).with_peer(seed_addr.parse().unwrap()))
        .unwrap();
    let mut progress = handle.progress();
    progress
        .wait_for(|p| p.done > 0 && p.done < size)
        .await
        .unwrap();
    let listening = |port: u16| {
        tcp_sockets(me)
            .iter()
            .any(|s| s.state == TcpState::Listen && s.local.port() == port)
    };
    let port = tcp_sockets(me)
        .iter()
        .find(|s| s.state == TcpState::Listen)
        .expect("the node listens")
        .local
        .port();

    node.suspend().await;
    let left = tcp_sockets(me);
    assert!(left.is_empty(), "sockets left after suspend: {left:?}");
    let paused_at = progress.borrow().done;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        progress.borrow().done,
        paused_at,
        "nothing moves while suspended"
    );

    node.resume().await.unwrap();
    assert!(listening(port), "it listens on the same port again");
    let fetched = handle.await.unwrap();
    assert_eq!(b3sum(fetched.path()), hash);
    node.shutdown().await;
    daemon.kill().await.unwrap();
}
