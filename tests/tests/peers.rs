//! Fetching from a seeding daemon over the swarm, as users do on a LAN
//! (peers dialled directly; discovery comes later).

use std::time::Duration;

use testkit::{b3sum, generate};

use crate::util::{Workspace, assert_ok, signal, stderr, stdout, wait_until};

const MIB: u64 = 1 << 20;

/// Starts `p2pmodel daemon` on the workspace's store; returns it and the
/// first address it wrote to `daemon.addrs`.
async fn start_daemon(work: &Workspace) -> (tokio::process::Child, String) {
    let daemon = work.spawn(&["daemon", "--listen", "/ip4/127.0.0.1/tcp/0"]);
    let addrs_file = work.store().join("daemon.addrs");
    wait_until("the daemon wrote its addresses", || addrs_file.exists()).await;
    let addr = std::fs::read_to_string(&addrs_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    (daemon, addr)
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
