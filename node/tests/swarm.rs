//! Nodes on loopback exchanging verified chunks over libp2p: one seed,
//! two seeds at once, peers beside a mirror, a seed with rotten bytes.

use std::os::unix::fs::PermissionsExt;

use libp2p::Multiaddr;
use p2pmodel_node::swarm::{Encryption, Swarm, SwarmConfig, getter};
use p2pmodel_node::{FetchRequest, Node, NodeBuilder};
use p2pmodel_protocol::Hash;
use p2pmodel_protocol::Outboard;
use p2pmodel_protocol::chunks::CHUNK_SIZE;
use p2pmodel_protocol::wire::{Held, Refusal, Request, Response, Run, encode_frame};
use p2pmodel_store::{PartialKey, PartialMode, Store};
use testkit::{TestMirror, from_peer, generate, listen_addr};

const MIB: u64 = 1 << 20;

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

/// A bare swarm on its own store, listening on loopback.
fn swarm(dir: &tempfile::TempDir, name: &str) -> (Store, Swarm) {
    let store = Store::open(dir.path().join(name)).unwrap();
    let swarm = Swarm::spawn(store.clone(), SwarmConfig::listen([loopback()])).unwrap();
    (store, swarm)
}

/// A node in the swarm holding `data`; returns it, the hash and its address.
async fn seed(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> (Node, Hash, Multiaddr) {
    let node = NodeBuilder::new(dir.path().join(name))
        .swarm(SwarmConfig::listen([loopback()]))
        .spawn()
        .unwrap();
    let hash = node.store().import_bytes(data).unwrap();
    let addr = listen_addr(node.swarm().unwrap()).await;
    (node, hash, addr)
}

/// A node in the swarm that only dials out.
fn leech(dir: &tempfile::TempDir, name: &str) -> Node {
    NodeBuilder::new(dir.path().join(name))
        .swarm(SwarmConfig::default())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_blob_moves_from_a_seed_to_a_peer_verified() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(5 * MIB + 123, 1);
    let (seed, hash, addr) = seed(&dir, "seed", &data).await;
    let leech = leech(&dir, "leech");

    let handle = leech
        .fetch(FetchRequest::hash(hash).with_peer(addr))
        .unwrap();
    let progress = handle.progress();
    let fetched = handle.await.unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), data);
    let progress = progress.borrow().clone();
    assert_eq!(progress.done, data.len() as u64);
    assert_eq!(from_peer(&progress, &seed), data.len() as u64);
}

#[tokio::test]
async fn a_peer_that_speaks_only_noise_still_fetches_from_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(2 * MIB + 5, 7);
    let (_seed, hash, addr) = seed(&dir, "seed", &data).await;
    let leech = NodeBuilder::new(dir.path().join("leech"))
        .swarm(SwarmConfig::default().with_encryption(Encryption::Noise))
        .spawn()
        .unwrap();

    let fetched = leech
        .fetch(FetchRequest::hash(hash).with_peer(addr))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), data);
}

#[tokio::test]
async fn dialing_a_peer_under_another_peer_id_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, listener) = swarm(&dir, "listener");
    let addr = listen_addr(&listener).await;
    let impostor = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    for encryption in [Encryption::Tls, Encryption::Noise] {
        let store = Store::open(dir.path().join(format!("{encryption:?}"))).unwrap();
        let dialer =
            Swarm::spawn(store, SwarmConfig::default().with_encryption(encryption)).unwrap();
        let wrong = addr
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(impostor));
        assert!(dialer.dial(wrong).await.is_err(), "{encryption:?}");
        let right = addr
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(listener.peer_id()));
        assert_eq!(dialer.dial(right).await.unwrap(), listener.peer_id());
    }
}

#[tokio::test]
async fn a_peer_with_two_seeds_fetches_from_both() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(24 * MIB, 2);
    let (one, hash, first) = seed(&dir, "one", &data).await;
    let (two, _, second) = seed(&dir, "two", &data).await;
    let leech = leech(&dir, "leech");

    let handle = leech
        .fetch(FetchRequest::hash(hash).with_peer(first).with_peer(second))
        .unwrap();
    let progress = handle.progress();
    let fetched = handle.await.unwrap();
    assert_eq!(testkit::b3sum(fetched.path()), hash.to_hex());
    let progress = progress.borrow().clone();
    let (a, b) = (from_peer(&progress, &one), from_peer(&progress, &two));
    assert_eq!(a + b, data.len() as u64, "{progress:?}");
    assert!(a >= MIB && b >= MIB, "each seed served pieces: {a} and {b}");
}

#[tokio::test]
async fn a_peer_lends_its_outboard_so_a_plain_mirror_is_checked_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(16 * MIB, 4);
    let (seed, hash, addr) = seed(&dir, "seed", &data).await;
    // A mirror with no sidecar outboard, serving one corrupted byte.
    let mirror = TestMirror::start().await;
    mirror.put("blob", &data);
    mirror
        .faults()
        .corrupt_offset_plus_one
        .store(3 * MIB + 8, std::sync::atomic::Ordering::SeqCst);
    let leech = leech(&dir, "leech");

    let handle = leech
        .fetch(
            FetchRequest::hash(hash)
                .with_mirror(mirror.url("blob").parse().unwrap())
                .with_peer(addr),
        )
        .unwrap();
    let progress = handle.progress();
    let fetched = handle.await.unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), data);
    // Without the peer's outboard the mirror's bytes could only be checked
    // at the end, and the whole blob would have failed.
    assert!(from_peer(&progress.borrow(), &seed) > 0);
}

/// A swarm whose store holds the first `chunks` chunks of `data`,
/// verified and committed, as a partial; returns the blob's hash, the
/// partial (to add chunks) and the swarm.
fn partial_peer(
    dir: &tempfile::TempDir,
    data: &[u8],
    chunks: usize,
) -> (Hash, p2pmodel_store::Partial, Swarm) {
    let (store, swarm) = swarm(dir, "partial");
    let outboard = Outboard::compute(data, data.len() as u64).unwrap();
    store.put_partial_outboard(&outboard).unwrap();
    let partial = store
        .open_partial(
            PartialKey::Blob(outboard.hash()),
            data.len() as u64,
            PartialMode::Verified,
        )
        .unwrap();
    partial
        .write_chunks(0, &data[..chunks * CHUNK_SIZE as usize])
        .unwrap();
    partial.commit().unwrap();
    (outboard.hash(), partial, swarm)
}

#[tokio::test]
async fn a_partial_peer_serves_its_verified_chunks_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(8 * CHUNK_SIZE, 2);
    let (hash, _partial, seed) = partial_peer(&dir, &data, 4);
    let (_, leech) = swarm(&dir, "leech");
    let peer = leech.dial(listen_addr(&seed).await).await.unwrap();

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
async fn a_partial_peer_tells_what_it_gained_since_its_last_answer() {
    let dir = tempfile::tempdir().unwrap();
    // 4,096 chunks: a bitmap of 512 bytes.
    let data = generate(64 * MIB, 4);
    let (hash, partial, seed) = partial_peer(&dir, &data, 1);
    let (_, leech) = swarm(&dir, "leech");
    let peer = leech.dial(listen_addr(&seed).await).await.unwrap();

    let ask = async |since| {
        let request = Request::HaveChanges { hash, since };
        getter::request(&leech, peer, &request).await
    };
    let Response::Held {
        answer: first,
        held: Held::Whole(bitmap),
        ..
    } = ask(0).await.unwrap()
    else {
        panic!("expected the whole bitmap first");
    };
    assert_eq!(bitmap.len(), 512);
    assert_eq!(bitmap[0], 1);
    // Chunks 100 to 102 verify meanwhile.
    let gained = &data[100 * CHUNK_SIZE as usize..103 * CHUNK_SIZE as usize];
    partial.write_chunks(100, gained).unwrap();
    partial.commit().unwrap();
    let changes = ask(first).await.unwrap();
    let Response::Held {
        answer: second,
        held: Held::Toggled(runs),
        ..
    } = changes.clone()
    else {
        panic!("expected the changes, got {changes:?}");
    };
    assert_eq!(runs, [Run { skip: 100, len: 3 }]);
    assert!(encode_frame(&changes).len() < 20, "a few bytes, not 512");
    // Naming an answer it did not get, a getter is told everything again.
    let again = ask(first).await.unwrap();
    assert!(
        matches!(again, Response::Held { held: Held::Whole(_), answer, .. } if answer > second)
    );
}

#[tokio::test]
async fn a_seed_steers_a_second_peer_away_from_what_it_just_sent_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (seed_store, seed) = swarm(&dir, "seed");
    let hash = seed_store.import_bytes(&generate(MIB, 5)).unwrap();
    let addr = listen_addr(&seed).await;
    let (_, first) = swarm(&dir, "first");
    let (_, second) = swarm(&dir, "second");
    let seed_id = first.dial(addr.clone()).await.unwrap();
    second.dial(addr).await.unwrap();
    // 64 chunks in four regions of 16; the first peer gets region 1.
    let region = Request::Get {
        hash,
        start: 16,
        end: 32,
    };
    let sent = getter::request(&first, seed_id, &region).await.unwrap();
    assert!(matches!(sent, Response::Data { .. }));

    assert_eq!(
        shown(&second, seed_id, hash).await,
        [[0xff; 2], [0; 2], [0xff; 2], [0xff; 2]].concat()
    );
    let refused = getter::request(&second, seed_id, &region).await.unwrap();
    assert_eq!(refused, Response::Refused(Refusal::Busy));
    // The first peer still sees and gets all of it (a retry is answered).
    assert_eq!(shown(&first, seed_id, hash).await, vec![0xff; 8]);
    let again = getter::request(&first, seed_id, &region).await.unwrap();
    assert!(matches!(again, Response::Data { .. }));
}

/// The bitmap `peer` shows `swarm` for `hash`.
async fn shown(swarm: &Swarm, peer: libp2p::PeerId, hash: Hash) -> Vec<u8> {
    match getter::request(swarm, peer, &Request::Have { hash })
        .await
        .unwrap()
    {
        Response::Have { bitmap, .. } => bitmap,
        other => panic!("expected a bitmap, got {other:?}"),
    }
}

#[tokio::test]
async fn a_seed_with_an_upload_limit_refuses_what_it_cannot_send_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(4 * MIB, 31);
    let store = Store::open(dir.path().join("seed")).unwrap();
    let hash = store.import_bytes(&data).unwrap();
    // 256 KiB/s: two seconds of it are two answers of 256 KiB.
    let seed = Swarm::spawn(
        store,
        SwarmConfig::listen([loopback()]).with_upload_limit(256 << 10),
    )
    .unwrap();
    let addr = listen_addr(&seed).await;
    let (_store, leech) = swarm(&dir, "leech");
    leech.dial(addr).await.unwrap();

    let get = |start: u64| Request::Get {
        hash,
        start,
        end: start + 16,
    };
    // The first answer takes the budget's one second of burst, so that
    // the next ones wait for it.
    assert!(matches!(
        getter::request(&leech, seed.peer_id(), &get(0))
            .await
            .unwrap(),
        Response::Data { .. }
    ));
    let gets: Vec<Request> = (0..4).map(|i| get(i * 16)).collect();
    let answers = futures::future::join_all(
        gets.iter()
            .map(|request| getter::request(&leech, seed.peer_id(), request)),
    )
    .await;
    let (mut data_answers, mut busy) = (0, 0);
    for answer in answers {
        match answer.unwrap() {
            Response::Data { .. } => data_answers += 1,
            Response::Refused(Refusal::Busy) => busy += 1,
            other => panic!("expected chunks or busy, got {other:?}"),
        }
    }
    assert_eq!(
        (data_answers, busy),
        (2, 2),
        "two answers fill two seconds of the budget; the others are refused at once"
    );
    // Once they are sent, the seed answers again.
    assert!(matches!(
        getter::request(&leech, seed.peer_id(), &get(0))
            .await
            .unwrap(),
        Response::Data { .. }
    ));
}

#[tokio::test]
async fn bytes_that_rotted_on_the_seed_are_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(2 * MIB, 3);
    let (seed, hash, addr) = seed(&dir, "seed", &data).await;
    let path = seed.store().blob_path(hash);
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    permissions.set_mode(0o644);
    std::fs::set_permissions(&path, permissions).unwrap();
    let mut rotten = data.clone();
    rotten[(MIB + 5) as usize] ^= 0xff;
    std::fs::write(&path, &rotten).unwrap();

    let leech = leech(&dir, "leech");
    let result = leech
        .fetch(FetchRequest::hash(hash).with_peer(addr))
        .unwrap()
        .await;
    assert!(result.is_err(), "got {result:?}");
    assert!(!leech.store().has(hash).unwrap());
    let partial = leech
        .store()
        .partial_record(hash.as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(partial.size, data.len() as u64);
    let served = leech.store().readable(hash).unwrap().unwrap().present;
    assert!(
        !served.get(MIB / CHUNK_SIZE),
        "the rotten chunk never arrived"
    );
    assert!(served.count() > 0, "the sound chunks did");
}

#[tokio::test]
async fn the_peer_id_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let (_, swarm) = swarm(&dir, "node");
        swarm.peer_id()
    };
    // The store is held by the swarm's tasks until they end; reopen a copy
    // of the identity file in a new folder to compare without waiting.
    let key = std::fs::read(dir.path().join("node/node.key")).unwrap();
    std::fs::create_dir_all(dir.path().join("again")).unwrap();
    std::fs::write(dir.path().join("again/node.key"), key).unwrap();
    let (_, again) = swarm(&dir, "again");
    assert_eq!(again.peer_id(), first);
    let mode = std::fs::metadata(dir.path().join("node/node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is readable by its owner only");
}

#[tokio::test]
async fn a_handshake_slower_than_its_timeout_fails_the_dial() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, listener) = swarm(&dir, "listener");
    let addr = listen_addr(&listener).await;
    let store = Store::open(dir.path().join("hasty")).unwrap();
    let hasty = Swarm::spawn(
        store,
        SwarmConfig::default().with_handshake_timeout(std::time::Duration::from_nanos(1)),
    )
    .unwrap();
    let error = hasty.dial(addr.clone()).await.unwrap_err();
    assert!(error.to_string().contains("Timeout"), "{error}");
    // With libp2p's default the same dial succeeds.
    let store = Store::open(dir.path().join("patient")).unwrap();
    let patient = Swarm::spawn(store, SwarmConfig::default()).unwrap();
    assert_eq!(patient.dial(addr).await.unwrap(), listener.peer_id());
}
