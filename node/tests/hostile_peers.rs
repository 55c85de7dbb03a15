//! Hostile peers on loopback, one kind of lie each (`testkit::Misbehaviour`).
//!
//! - `beside_an_honest_seed`: a leecher given the hostile peer and an
//!   honest seed ends with the right bytes, and the hostile peer gave at
//!   most the pieces it had in flight when it was dropped, all verified.
//! - `alone`: a leecher given only the hostile peer fails with an error
//!   naming it, publishes nothing, and every chunk it kept is right.
//! - A torn store: a seed whose bitmap claims chunks whose bytes were
//!   flipped on disk (in a partial and in a complete blob) never serves
//!   them, and the leecher gets them from another seed.

use std::time::Duration;

use libp2p::Multiaddr;
use p2pmodel_node::swarm::{SwarmConfig, getter};
use p2pmodel_node::{FetchRequest, Node, NodeBuilder, Progress};
use p2pmodel_protocol::chunks::CHUNK_SIZE;
use p2pmodel_protocol::wire::{Refusal, Request, Response};
use p2pmodel_protocol::{Hash, Outboard};
use p2pmodel_store::{PartialKey, PartialMode};
use testkit::{HostilePeer, Misbehaviour, OUTBOARD_LATE, b3sum, generate, listen_addr};

const MIB: u64 = 1 << 20;
/// The blob every case moves.
const SIZE: u64 = 16 * MIB + 5;
/// What a peer can give before it is dropped: the requests a download has
/// in flight to it at once (4 pieces of 64 chunks, the defaults).
const IN_FLIGHT: u64 = 4 * 64 * CHUNK_SIZE;
/// A fetch that takes longer than this is stuck, not slow (the slowest
/// case waits out six timeouts of 30 s spread over four workers).
const STUCK: Duration = Duration::from_secs(300);

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

/// A node in the swarm holding `data`; returns it, the hash and its address.
async fn seed(dir: &tempfile::TempDir, data: &[u8]) -> (Node, Hash, Multiaddr) {
    let node = listening(dir, "seed").await;
    let hash = node.store().import_bytes(data).unwrap();
    let addr = listen_addr(node.swarm().unwrap()).await;
    (node, hash, addr)
}

/// A node in the swarm listening on loopback, with an empty store.
async fn listening(dir: &tempfile::TempDir, name: &str) -> Node {
    NodeBuilder::new(dir.path().join(name))
        .swarm(SwarmConfig::listen([loopback()]))
        .spawn()
        .unwrap()
}

/// A node in the swarm that only dials out.
fn leech(dir: &tempfile::TempDir) -> Node {
    NodeBuilder::new(dir.path().join("leech"))
        .swarm(SwarmConfig::default())
        .spawn()
        .unwrap()
}

/// Bytes written that came from the hostile peer.
fn from_hostile(progress: &Progress, hostile: &HostilePeer) -> u64 {
    let name = format!("peer {}", hostile.peer_id());
    progress
        .sources
        .iter()
        .find(|s| s.source == name)
        .map_or(0, |s| s.bytes)
}

async fn beside_an_honest_seed(misbehaviour: Misbehaviour) {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(SIZE, 11);
    let hostile = HostilePeer::serving(&data, misbehaviour).await;
    let (_seed, hash, seed_addr) = seed(&dir, &data).await;
    let leech = leech(&dir);

    // The hostile peer first, so it is dialled and asked first.
    let handle = leech
        .fetch(
            FetchRequest::hash(hash)
                .with_peer(hostile.addr())
                .with_peer(seed_addr),
        )
        .unwrap();
    let progress = handle.progress();
    let fetched = tokio::time::timeout(STUCK, handle)
        .await
        .expect("the fetch ends")
        .expect("the honest seed completes the blob");
    assert_eq!(b3sum(fetched.path()), hash.to_hex());
    let progress = progress.borrow().clone();
    assert_eq!(progress.done, SIZE);
    let taken = from_hostile(&progress, &hostile);
    println!("{misbehaviour:?}: {taken} bytes came from the hostile peer");
    assert!(
        taken <= IN_FLIGHT,
        "the hostile peer gave {taken} bytes: it was not dropped ({progress:?})"
    );
}

async fn alone(misbehaviour: Misbehaviour) {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(SIZE, 12);
    let hash = Hash::of(&data);
    let hostile = HostilePeer::serving(&data, misbehaviour).await;
    let leech = leech(&dir);

    let result = tokio::time::timeout(
        STUCK,
        leech
            .fetch(FetchRequest::hash(hash).with_peer(hostile.addr()))
            .unwrap(),
    )
    .await
    .expect("the fetch ends");
    let error = format!("{:#}", result.expect_err("nothing honest to fetch from"));
    println!("{misbehaviour:?}: {error}");
    assert!(
        error.contains(&hostile.peer_id().to_string()) || error.contains("no connected peer"),
        "the error names the peer or says none has the blob: {error}"
    );
    assert!(!leech.store().has(hash).unwrap(), "nothing is published");
    // Whatever was kept is verified: each chunk the store would serve is
    // the blob's own.
    if let Some(kept) = leech.store().readable(hash).unwrap() {
        use std::os::unix::fs::FileExt;
        let mut chunk = vec![0u8; CHUNK_SIZE as usize];
        for index in (0..kept.present.len()).filter(|i| kept.present.get(*i)) {
            let start = (index * CHUNK_SIZE) as usize;
            let end = (start + CHUNK_SIZE as usize).min(data.len());
            kept.data
                .read_exact_at(&mut chunk[..end - start], start as u64)
                .unwrap();
            assert_eq!(chunk[..end - start], data[start..end], "chunk {index}");
        }
        assert!(kept.present.count() * CHUNK_SIZE <= IN_FLIGHT);
    }
}

/// Flips one byte of chunk `chunk` in the file at `path`, behind the
/// store's back.
fn flip(path: &std::path::Path, chunk: u64) {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    let at = chunk * CHUNK_SIZE + 100;
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
    file.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_with_torn_chunks_never_serve_them_and_the_leecher_gets_them_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(SIZE, 13);
    let outboard = Outboard::compute(&data[..], SIZE).unwrap();
    let hash = outboard.hash();
    let (torn_partial, torn_blob, honest) = (100, 700, 0);

    // A seed with every chunk verified and committed in a partial, then
    // one chunk flipped in the partial's data file.
    let partial_seed = listening(&dir, "partial-seed").await;
    let store = partial_seed.store();
    store.put_partial_outboard(&outboard).unwrap();
    let partial = store
        .open_partial(PartialKey::Blob(hash), SIZE, PartialMode::Verified)
        .unwrap();
    partial.write_chunks(0, &data).unwrap();
    partial.commit().unwrap();
    drop(partial);
    flip(
        &store.root().join("partial").join(format!("{hash}.data")),
        torn_partial,
    );
    // A seed with the complete blob, one chunk flipped.
    let blob_seed = listening(&dir, "blob-seed").await;
    blob_seed.store().import_bytes(&data).unwrap();
    flip(&blob_seed.store().blob_path(hash), torn_blob);
    let (partial_addr, blob_addr) = (
        listen_addr(partial_seed.swarm().unwrap()).await,
        listen_addr(blob_seed.swarm().unwrap()).await,
    );

    // Asked directly, each refuses its torn chunk and serves a sound one.
    let asker = leech(&dir);
    let swarm = asker.swarm().unwrap();
    for (addr, torn) in [(&partial_addr, torn_partial), (&blob_addr, torn_blob)] {
        let peer = swarm.dial(addr.clone()).await.unwrap();
        let get = |chunk: u64| Request::Get {
            hash,
            start: chunk,
            end: chunk + 1,
        };
        let answer = getter::request(swarm, peer, &get(torn)).await.unwrap();
        assert_eq!(answer, Response::Refused(Refusal::NotFound), "chunk {torn}");
        let answer = getter::request(swarm, peer, &get(honest)).await.unwrap();
        assert!(matches!(answer, Response::Data { .. }), "chunk {honest}");
    }
    drop(asker);

    // A leecher given both torn seeds and an honest one ends with the
    // right bytes.
    let other = tempfile::tempdir().unwrap();
    let (_honest_seed, _, honest_addr) = seed(&other, &data).await;
    let leecher = NodeBuilder::new(other.path().join("leecher"))
        .swarm(SwarmConfig::default())
        .spawn()
        .unwrap();
    let fetched = tokio::time::timeout(
        STUCK,
        leecher
            .fetch(
                FetchRequest::hash(hash)
                    .with_peer(partial_addr)
                    .with_peer(blob_addr)
                    .with_peer(honest_addr),
            )
            .unwrap(),
    )
    .await
    .expect("the fetch ends")
    .expect("the honest seed fills the torn chunks");
    assert_eq!(b3sum(fetched.path()), hash.to_hex());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_slow_to_lend_its_outboard_is_asked_again_until_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(SIZE, 13);
    let hash = Hash::of(&data);
    // It drops every outboard request for its first 6 s: longer than the
    // first three rounds of asking (1.5 s), well within the 30 s of
    // patience for peers that failed only transiently.
    let started = std::time::Instant::now();
    let late = HostilePeer::serving(&data, Misbehaviour::OutboardLate).await;
    let leech = leech(&dir);

    let fetched = tokio::time::timeout(
        STUCK,
        leech
            .fetch(FetchRequest::hash(hash).with_peer(late.addr()))
            .unwrap(),
    )
    .await
    .expect("the fetch ends")
    .expect("the outboard is lent once the peer can");
    assert_eq!(b3sum(fetched.path()), hash.to_hex());
    assert!(
        started.elapsed() >= OUTBOARD_LATE,
        "the fetch waited for the outboard"
    );
}

macro_rules! cases {
    ($($name:ident: $misbehaviour:expr;)*) => {
        mod with_an_honest_seed_the_fetch_completes_and_the_liar_is_dropped {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::beside_an_honest_seed($misbehaviour).await;
                }
            )*
        }
        mod alone_the_liar_gives_a_clear_error_and_no_wrong_byte {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::alone($misbehaviour).await;
                }
            )*
        }
    };
}

cases! {
    flips_a_byte: testkit::Misbehaviour::FlipByte;
    names_a_wrong_size_with_its_data: testkit::Misbehaviour::WrongSize;
    lies_about_the_size_everywhere: testkit::Misbehaviour::LiesAboutSize;
    sends_another_blob: testkit::Misbehaviour::OtherBlob;
    claims_chunks_and_refuses_them: testkit::Misbehaviour::RefuseGet;
    never_answers: testkit::Misbehaviour::Silent;
    trickles: testkit::Misbehaviour::Trickle;
    announces_an_oversized_frame: testkit::Misbehaviour::Oversized;
    sends_an_endless_frame: testkit::Misbehaviour::Endless;
}
