//! Two nodes on loopback exchanging verified chunks over libp2p.

use std::os::unix::fs::PermissionsExt;

use libp2p::Multiaddr;
use p2pmodel_node::swarm::{Swarm, getter};
use p2pmodel_node::{CancellationToken, FetchError, ProgressTracker};
use p2pmodel_protocol::chunks::CHUNK_SIZE;
use p2pmodel_protocol::wire::{Refusal, Request, Response};
use p2pmodel_protocol::{Hash, Outboard};
use p2pmodel_store::{PartialKey, PartialMode, Store};
use testkit::generate;

const MIB: u64 = 1 << 20;

async fn node(dir: &tempfile::TempDir, name: &str) -> (Store, Swarm) {
    let store = Store::open(dir.path().join(name)).unwrap();
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let swarm = Swarm::spawn(store.clone(), &[listen]).await.unwrap();
    (store, swarm)
}

/// Connects `from` to `to`; returns `to`'s peer id.
async fn connect(from: &Swarm, to: &Swarm) -> libp2p::PeerId {
    let mut addrs = to.listen_addrs().await;
    for _ in 0..100 {
        if !addrs.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        addrs = to.listen_addrs().await;
    }
    from.dial(addrs[0].clone()).await.unwrap()
}

#[tokio::test]
async fn a_blob_moves_from_a_seed_to_a_peer_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (seed_store, seed) = node(&dir, "seed").await;
    let (leech_store, leech) = node(&dir, "leech").await;
    let data = generate(5 * MIB + 123, 1);
    let hash = seed_store.import_bytes(&data).unwrap();
    let peer = connect(&leech, &seed).await;
    assert_eq!(peer, seed.peer_id());

    let progress = ProgressTracker::new();
    let path = getter::fetch_blob(
        &leech_store,
        &leech,
        peer,
        hash,
        &progress,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert_eq!(progress.snapshot().done, data.len() as u64);
}

#[tokio::test]
async fn a_partial_peer_serves_its_verified_chunks_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (seed_store, seed) = node(&dir, "seed").await;
    let (_, leech) = node(&dir, "leech").await;
    let data = generate(8 * CHUNK_SIZE, 2);
    let outboard = Outboard::compute(&data[..], data.len() as u64).unwrap();
    let hash = outboard.hash();
    seed_store.put_partial_outboard(&outboard).unwrap();
    let partial = seed_store
        .open_partial(
            PartialKey::Blob(hash),
            data.len() as u64,
            PartialMode::Verified,
        )
        .unwrap();
    partial
        .write_chunks(0, &data[..4 * CHUNK_SIZE as usize])
        .unwrap();
    partial.commit().unwrap();
    let peer = connect(&leech, &seed).await;

    match getter::request(&leech, peer, &Request::Have { hash })
        .await
        .unwrap()
    {
        Response::Have { bitmap, .. } => assert_eq!(bitmap, vec![0b0000_1111]),
        other => panic!("expected a bitmap, got {other:?}"),
    }
    let held = getter::request(
        &leech,
        peer,
        &Request::Get {
            hash,
            start: 1,
            end: 3,
        },
    )
    .await
    .unwrap();
    assert!(matches!(held, Response::Data { .. }));
    let missing = getter::request(
        &leech,
        peer,
        &Request::Get {
            hash,
            start: 3,
            end: 6,
        },
    )
    .await
    .unwrap();
    assert_eq!(missing, Response::Refused(Refusal::NotFound));
}

#[tokio::test]
async fn bytes_that_rotted_on_the_seed_are_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (seed_store, seed) = node(&dir, "seed").await;
    let (leech_store, leech) = node(&dir, "leech").await;
    let data = generate(2 * MIB, 3);
    let hash = seed_store.import_bytes(&data).unwrap();
    let path = seed_store.blob_path(hash);
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    permissions.set_mode(0o644);
    std::fs::set_permissions(&path, permissions).unwrap();
    let mut rotten = data.clone();
    rotten[(MIB + 5) as usize] ^= 0xff;
    std::fs::write(&path, &rotten).unwrap();
    let peer = connect(&leech, &seed).await;

    let result = getter::fetch_blob(
        &leech_store,
        &leech,
        peer,
        hash,
        &ProgressTracker::new(),
        CancellationToken::new(),
    )
    .await;
    match result {
        Err(FetchError::Sources(lines)) => assert!(lines[0].contains("refused"), "{lines:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!leech_store.has(Hash::of(&data)).unwrap());
}

#[tokio::test]
async fn the_peer_id_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let (_, swarm) = node(&dir, "node").await;
        swarm.peer_id()
    };
    // The store is held by the swarm's tasks until they end; reopen a copy
    // of the identity file in a new folder to compare without waiting.
    let key = std::fs::read(dir.path().join("node/node.key")).unwrap();
    std::fs::create_dir_all(dir.path().join("again")).unwrap();
    std::fs::write(dir.path().join("again/node.key"), key).unwrap();
    let (_, again) = node(&dir, "again").await;
    assert_eq!(again.peer_id(), first);
    let mode = std::fs::metadata(dir.path().join("node/node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is readable by its owner only");
}
