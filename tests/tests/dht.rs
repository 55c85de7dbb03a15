//! Finding peers through the DHT, as users do beyond a LAN: daemons joined
//! through a bootstrap daemon, and `fetch --bootstrap` with no `--peer`.

use std::time::{Duration, Instant};

use p2pmodel_node::swarm::dht::LOOKUP_WAIT;
use testkit::{TestMirror, b3sum, generate};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::util::{
    Workspace, assert_ok, bytes_from, last_progress, peer_id, seeded, signal, start_daemon, stderr,
    stdout, wait_until,
};

const MIB: u64 = 1 << 20;

/// Starts a daemon on `work` joined through `bootstrap`, and waits until
/// it says it announced its store in the DHT.
async fn start_announcing_daemon(work: &Workspace, bootstrap: &str) -> tokio::process::Child {
    let mut command = work.command(&[
        "daemon",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-mdns",
        "--bootstrap",
        bootstrap,
    ]);
    command.env("RUST_LOG", "warn,p2pmodel_node::swarm::dht=info");
    let mut daemon = command.spawn().expect("binary starts");
    let mut lines = BufReader::new(daemon.stderr.take().unwrap()).lines();
    let announced = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("announced the store to the DHT") {
                return;
            }
        }
        panic!("the daemon ended without announcing its store");
    };
    tokio::time::timeout(Duration::from_secs(60), announced)
        .await
        .expect("the daemon announced its store within a minute");
    // Keep reading, so that the daemon never writes into a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    daemon
}

#[tokio::test]
async fn a_fetch_finds_the_seed_through_the_bootstrap_daemon_alone() {
    let bootstrap = Workspace::new();
    let (mut bootstrap_daemon, bootstrap_addr) = start_daemon(&bootstrap).await;
    let data = generate(5 * MIB + 17, 31);
    let (seed, hash) = seeded(&data).await;
    let mut seed_daemon = start_announcing_daemon(&seed, &bootstrap_addr).await;
    let addrs_file = seed.store().join("daemon.addrs");
    wait_until("the seed wrote its addresses", || addrs_file.exists()).await;
    let seed_addr = std::fs::read_to_string(&addrs_file).unwrap();

    let leech = Workspace::new();
    let target = leech.path("fetched.bin");
    let out = leech
        .run(&[
            "fetch",
            &hash,
            "--bootstrap",
            &bootstrap_addr,
            "--json",
            "-o",
            target.to_str().unwrap(),
        ])
        .await;
    assert_ok(&out);
    assert_eq!(b3sum(&target), hash);
    let from_seed = bytes_from(
        &last_progress(&stdout(&out)),
        &format!("peer {}", peer_id(seed_addr.trim())),
    );
    assert_eq!(from_seed, data.len() as u64, "{}", stdout(&out));

    signal(&seed_daemon, "TERM");
    signal(&bootstrap_daemon, "TERM");
    assert!(seed_daemon.wait().await.unwrap().success());
    assert!(bootstrap_daemon.wait().await.unwrap().success());
}

#[tokio::test]
async fn with_no_provider_anywhere_a_fetch_falls_back_to_its_mirror_promptly() {
    let mirror = TestMirror::start().await;
    let data = generate(MIB + 9, 32);
    let hash = crate::util::publish(&mirror, "model.bin", &data, false);
    // One bootstrap daemon that holds nothing, one that is gone.
    let empty = Workspace::new();
    let (mut empty_daemon, empty_addr) = start_daemon(&empty).await;
    let gone = Workspace::new();
    let (mut gone_daemon, gone_addr) = start_daemon(&gone).await;
    signal(&gone_daemon, "KILL");
    let _ = gone_daemon.wait().await;

    for bootstrap in [&empty_addr, &gone_addr] {
        let leech = Workspace::new();
        let target = leech.path("fetched.bin");
        let started = Instant::now();
        let out = leech
            .run(&[
                "fetch",
                &hash,
                "--bootstrap",
                bootstrap,
                "--mirror",
                &mirror.url("model.bin"),
                "-o",
                target.to_str().unwrap(),
            ])
            .await;
        let took = started.elapsed();
        assert_ok(&out);
        assert_eq!(b3sum(&target), hash);
        // The lookup ends as soon as the DHT answers (or cannot be
        // reached): the fetch never sits out the DHT's wait.
        assert!(took < LOOKUP_WAIT, "with {bootstrap}: took {took:?}");
    }

    signal(&empty_daemon, "TERM");
    assert!(empty_daemon.wait().await.unwrap().success());
}

#[tokio::test]
async fn a_bootstrap_address_without_a_peer_id_is_refused() {
    let work = Workspace::new();
    let out = work
        .run(&[
            "fetch",
            &"0".repeat(64),
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/4001",
        ])
        .await;
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("--bootstrap"), "{message}");
    assert!(message.contains("/p2p/PEER_ID"), "{message}");
}
