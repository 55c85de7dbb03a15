//! Nodes on loopback that find each other through the DHT alone: a
//! bootstrap node holding nothing, seeds that join through it, and peers
//! that fetch a hash, or a URL by its SHA-256, with no `--peer` given.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use p2pmodel_node::swarm::dht::LOOKUP_WAIT;
use p2pmodel_node::swarm::{Swarm, SwarmConfig};
use p2pmodel_node::{FetchError, FetchRequest, Node, NodeBuilder, NodeError};
use p2pmodel_protocol::{Hash, Sha256};
use p2pmodel_store::Store;
use sha2::Digest;
use testkit::{TestMirror, from_peer, generate, listen_addr};

const MIB: u64 = 1 << 20;

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

/// A listening node that holds nothing and uses no bootstrap peer: the
/// one others join through. Returns it and its address.
async fn bootstrap_node(dir: &tempfile::TempDir) -> (Node, Multiaddr) {
    let node = NodeBuilder::new(dir.path().join("bootstrap"))
        .swarm(SwarmConfig::listen([loopback()]))
        .spawn()
        .unwrap();
    let addr = listen_addr(node.swarm().unwrap()).await;
    (node, addr)
}

/// A listening node joined through `bootstrap` whose store held `data`
/// (and the aliases given) before it started; returns it and the hash.
fn seed(
    dir: &tempfile::TempDir,
    name: &str,
    data: &[u8],
    aliases: &[Sha256],
    bootstrap: &Multiaddr,
) -> (Node, Hash) {
    let root = dir.path().join(name);
    let store = Store::open(&root).unwrap();
    let hash = store.import_bytes(data).unwrap();
    for sha256 in aliases {
        store.put_alias(*sha256, hash).unwrap();
    }
    drop(store);
    let node = NodeBuilder::new(root)
        .swarm(SwarmConfig::listen([loopback()]).with_bootstrap([bootstrap.clone()]))
        .spawn()
        .unwrap();
    (node, hash)
}

/// A node that only dials out, joined through `bootstrap`.
fn leech(dir: &tempfile::TempDir, name: &str, bootstrap: &Multiaddr) -> Node {
    NodeBuilder::new(dir.path().join(name))
        .swarm(SwarmConfig::default().with_bootstrap([bootstrap.clone()]))
        .spawn()
        .unwrap()
}

fn sha256(data: &[u8]) -> Sha256 {
    Sha256(sha2::Sha256::digest(data).into())
}

/// Waits until the DHT, asked by `asker`, names a provider of `hash`
/// (the seed announces once it has joined, a moment after it starts).
async fn until_provided(asker: &Swarm, hash: Hash) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while asker.find_providers(hash, true).await.is_empty() {
        assert!(Instant::now() < deadline, "no provider of {hash} announced");
    }
}

/// Waits until the DHT, asked by `asker`, has an alias record for `sha256`.
async fn until_aliased(asker: &Swarm, sha256: Sha256) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while asker.resolve_alias(sha256).await.is_empty() {
        assert!(Instant::now() < deadline, "no alias record for {sha256}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_peer_finds_the_seed_through_the_dht_and_fetches_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let (bootstrap, addr) = bootstrap_node(&dir).await;
    let data = generate(3 * MIB + 5, 1);
    let (seed, hash) = seed(&dir, "seed", &data, &[], &addr);
    let leech = leech(&dir, "leech", &addr);
    assert!(leech.swarm().unwrap().uses_dht());
    assert!(!bootstrap.swarm().unwrap().uses_dht());

    let handle = leech.fetch(FetchRequest::hash(hash)).unwrap();
    let progress = handle.progress();
    let fetched = handle.await.unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), data);
    let progress = progress.borrow().clone();
    assert_eq!(
        from_peer(&progress, &seed),
        data.len() as u64,
        "{progress:?}"
    );
    assert_eq!(from_peer(&progress, &bootstrap), 0);
}

#[tokio::test]
async fn an_alias_record_leads_to_the_blob_on_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (_bootstrap, addr) = bootstrap_node(&dir).await;
    let data = generate(2 * MIB + 77, 2);
    let sha = sha256(&data);
    let (seed, hash) = seed(&dir, "seed", &data, &[sha], &addr);
    let leech = leech(&dir, "leech", &addr);
    until_aliased(leech.swarm().unwrap(), sha).await;

    // The URL serves nothing: the bytes can only come from the seed.
    let mirror = TestMirror::start().await;
    let url = mirror.url("gone.bin").parse().unwrap();
    let handle = leech
        .fetch(FetchRequest::url(url).with_sha256(sha))
        .unwrap();
    let progress = handle.progress();
    let fetched = handle.await.unwrap();
    assert_eq!(fetched.hash(), hash);
    assert_eq!(std::fs::read(fetched.path()).unwrap(), data);
    assert_eq!(leech.store().alias(sha).unwrap(), Some(hash));
    let progress = progress.borrow().clone();
    assert_eq!(
        from_peer(&progress, &seed),
        data.len() as u64,
        "{progress:?}"
    );
}

#[tokio::test]
async fn a_lying_alias_record_fails_the_fetch_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_bootstrap, addr) = bootstrap_node(&dir).await;
    let wanted = generate(MIB + 3, 3);
    let sha = sha256(&wanted);
    // The liar claims that the SHA-256 of `wanted` names other bytes.
    let other = generate(MIB + 3, 4);
    let (_liar, lie) = seed(&dir, "liar", &other, &[sha], &addr);
    let leech = leech(&dir, "leech", &addr);
    until_aliased(leech.swarm().unwrap(), sha).await;

    let mirror = TestMirror::start().await;
    mirror.put("model.bin", &wanted);
    let url = mirror.url("model.bin").parse().unwrap();
    let error = leech
        .fetch(FetchRequest::url(url).with_sha256(sha))
        .unwrap()
        .await
        .unwrap_err();
    let NodeError::Fetch(error) = error else {
        panic!("{error:?}")
    };
    assert!(
        matches!(*error, FetchError::AliasMismatch { sha256, hash, .. } if sha256 == sha && hash == lie),
        "{error}"
    );
    assert!(error.to_string().contains("wrong record"), "{error}");
    assert_eq!(leech.store().alias(sha).unwrap(), None);
    assert!(!leech.store().has(lie).unwrap());
    assert!(leech.store().list().unwrap().is_empty());
}

#[tokio::test]
async fn with_no_provider_anywhere_a_fetch_falls_back_to_its_mirror_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let (_bootstrap, addr) = bootstrap_node(&dir).await;
    let leech = leech(&dir, "leech", &addr);
    let data = generate(MIB, 5);
    let mirror = TestMirror::start().await;
    mirror.put("model.bin", &data);
    let hash = Hash::of(&data);

    let started = Instant::now();
    let fetched = leech
        .fetch(FetchRequest::hash(hash).with_mirror(mirror.url("model.bin").parse().unwrap()))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), data);
    // The lookup ends when the bootstrap node answers that it knows no
    // provider: the fetch never sits out the DHT's wait.
    let took = started.elapsed();
    assert!(took < LOOKUP_WAIT, "took {took:?}");
}

#[tokio::test]
async fn a_seed_that_joins_later_is_found_once_it_announced() {
    let dir = tempfile::tempdir().unwrap();
    let (_bootstrap, addr) = bootstrap_node(&dir).await;
    let leech = leech(&dir, "leech", &addr);
    let data = generate(MIB + 1, 6);
    let hash = Hash::of(&data);
    assert!(
        leech
            .swarm()
            .unwrap()
            .find_providers(hash, false)
            .await
            .is_empty()
    );

    let (seed, _) = seed(&dir, "seed", &data, &[], &addr);
    until_provided(leech.swarm().unwrap(), hash).await;
    let fetched = leech
        .fetch(FetchRequest::hash(hash))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), data);
    drop(seed);
}

#[test]
fn a_bootstrap_address_without_a_peer_id_is_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let error = NodeBuilder::new(dir.path())
        .swarm(SwarmConfig::default().with_bootstrap(["/ip4/127.0.0.1/tcp/4001".parse().unwrap()]))
        .spawn()
        .unwrap_err();
    let chain = format!("{error}: {}", std::error::Error::source(&error).unwrap());
    assert!(chain.contains("/p2p/PEER_ID"), "{chain}");
}

#[tokio::test]
async fn a_suspended_seed_stays_unreachable_and_serves_again_after_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (bootstrap, addr) = bootstrap_node(&dir).await;
    let data = generate(MIB + 11, 7);
    let (seed, hash) = seed(&dir, "seed", &data, &[], &addr);
    let leech = leech(&dir, "leech", &addr);
    until_provided(leech.swarm().unwrap(), hash).await;

    seed.suspend().await;
    assert!(seed.swarm().unwrap().connected_peers().await.is_empty());
    // Asked for providers meanwhile, the DHT still names the seed; its
    // dial fails and nothing reopens on the seed's side.
    let seed_id = seed.swarm().unwrap().peer_id();
    assert!(
        !leech
            .swarm()
            .unwrap()
            .find_providers(hash, false)
            .await
            .contains(&seed_id)
    );
    assert!(seed.swarm().unwrap().connected_peers().await.is_empty());
    assert!(
        !bootstrap
            .swarm()
            .unwrap()
            .connected_peers()
            .await
            .contains(&seed_id)
    );

    seed.resume().await.unwrap();
    let fetched = leech
        .fetch(FetchRequest::hash(hash))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), data);
}
