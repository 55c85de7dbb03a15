//! The library node's concurrency contract against a real loopback mirror
//! that counts connections, requests and bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use p2pmodel_node::download::DownloadConfig;
use p2pmodel_node::mirror::HttpConfig;
use p2pmodel_node::{
    FetchRequest, FetcherConfig, LifecycleState, Node, NodeBuilder, NodeError, Phase, ResumeCheck,
};
use p2pmodel_protocol::{Hash, Manifest, ManifestEntry, Outboard};
use testkit::{TestMirror, generate};
use url::Url;

const MIB: u64 = 1 << 20;

fn node(dir: &tempfile::TempDir) -> NodeBuilder {
    let config = FetcherConfig::default()
        .with_http(HttpConfig::default().with_backoff(Duration::from_millis(5)))
        .with_download(DownloadConfig::default().with_request_chunks(16));
    NodeBuilder::new(dir.path().join("store")).fetcher_config(config)
}

fn publish(mirror: &TestMirror, name: &str, data: &[u8]) -> (Hash, Url) {
    let outboard = Outboard::compute(data, data.len() as u64).unwrap();
    mirror.put(name, data);
    mirror.put(&format!("{name}.obao"), outboard.as_bytes());
    (outboard.hash(), mirror.url(name).parse().unwrap())
}

/// Publishes `files` under `folder` with a manifest beside them; returns
/// the manifest and its URL.
fn publish_model(mirror: &TestMirror, folder: &str, files: &[(&str, Vec<u8>)]) -> (Manifest, Url) {
    let entries = files
        .iter()
        .map(|(path, data)| ManifestEntry {
            path: (*path).into(),
            size: data.len() as u64,
            hash: publish(mirror, &format!("{folder}/{path}"), data).0,
            sha256: None,
            mirrors: vec![],
        })
        .collect();
    let manifest = Manifest::new(entries).unwrap();
    mirror.put(&format!("{folder}/model.p2pmodel"), &manifest.encode());
    let url = mirror
        .url(&format!("{folder}/model.p2pmodel"))
        .parse()
        .unwrap();
    (manifest, url)
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bytes a fetch moves besides the blob: the sidecar outboard, and the one
/// byte of the probe (`Range: bytes=0-0`).
fn sidecar(size: u64) -> u64 {
    p2pmodel_protocol::verified::outboard_size(size) + 1
}

#[tokio::test]
async fn two_subscribers_share_one_transfer_and_one_may_leave() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir).spawn().unwrap();
    let mirror = TestMirror::start().await;
    let data = generate(8 * MIB, 1);
    let (hash, url) = publish(&mirror, "m.bin", &data);
    mirror.throttle(4 * MIB);

    let first = node
        .fetch(FetchRequest::hash(hash).with_mirror(url.clone()))
        .unwrap();
    let second = node
        .fetch(FetchRequest::hash(hash).with_mirror(url))
        .unwrap();
    assert_ne!(first.id(), second.id());
    wait_until("bytes flow", || mirror.body_bytes() > MIB).await;
    // A subscriber that joins late sees the current progress at once.
    assert!(second.progress().borrow().done > 0 || second.progress().borrow().total > 0);
    node.cancel(first.id()).unwrap();
    assert!(matches!(first.await, Err(NodeError::Cancelled)));
    mirror.throttle(0);
    let fetched = second.await.unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), data);
    let sent = mirror.body_bytes();
    assert!(
        sent <= data.len() as u64 + sidecar(data.len() as u64),
        "the blob moved once ({sent} bytes)"
    );
}

#[tokio::test]
async fn when_the_last_subscriber_leaves_the_bytes_stop_and_a_new_fetch_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir).spawn().unwrap();
    let mirror = TestMirror::start().await;
    let size = 16 * MIB;
    let data = generate(size, 2);
    let (hash, url) = publish(&mirror, "m.bin", &data);
    mirror.throttle(4 * MIB);

    let handle = node
        .fetch(FetchRequest::hash(hash).with_mirror(url.clone()))
        .unwrap();
    wait_until("a quarter arrived", || mirror.body_bytes() > size / 4).await;
    node.cancel(handle.id()).unwrap();
    assert!(matches!(handle.await, Err(NodeError::Cancelled)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped_at = mirror.body_bytes();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mirror.body_bytes(),
        stopped_at,
        "no bytes after the transfer stopped"
    );

    mirror.throttle(0);
    let handle = node
        .fetch(FetchRequest::hash(hash).with_mirror(url))
        .unwrap();
    handle.await.unwrap();
    let second = mirror.body_bytes() - stopped_at;
    // The remainder, plus requests that were in flight (4 x 256 KiB here).
    assert!(
        second <= size - stopped_at + MIB + sidecar(size),
        "second fetch moved {second} bytes after {stopped_at}"
    );
}

#[tokio::test]
async fn cancel_and_clear_removes_the_partial_from_store_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir).spawn().unwrap();
    let mirror = TestMirror::start().await;
    let data = generate(8 * MIB, 3);
    let (hash, url) = publish(&mirror, "m.bin", &data);
    mirror.throttle(2 * MIB);

    let handle = node
        .fetch(FetchRequest::hash(hash).with_mirror(url))
        .unwrap();
    wait_until("bytes flow", || mirror.body_bytes() > MIB).await;
    node.cancel_and_clear(handle.id()).unwrap();
    assert!(matches!(handle.await, Err(NodeError::Cancelled)));
    wait_until("the partial is gone", || {
        node.store().list().unwrap().is_empty()
    })
    .await;
    let leftovers = std::fs::read_dir(dir.path().join("store/partial"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "no partial file stays on disk");
}

#[tokio::test]
async fn cancel_hash_ends_every_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir).spawn().unwrap();
    let mirror = TestMirror::start().await;
    let data = generate(4 * MIB, 4);
    let (hash, url) = publish(&mirror, "m.bin", &data);
    mirror.throttle(MIB);
    let handles: Vec<_> = (0..3)
        .map(|_| {
            node.fetch(FetchRequest::hash(hash).with_mirror(url.clone()))
                .unwrap()
        })
        .collect();
    assert_eq!(node.cancel_hash(hash).unwrap(), 3);
    for handle in handles {
        assert!(matches!(handle.await, Err(NodeError::Cancelled)));
    }
}

#[tokio::test]
async fn suspend_closes_connections_refuses_work_and_resume_finishes_the_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir).spawn().unwrap();
    let mirror = TestMirror::start().await;
    let size = 16 * MIB;
    let data = generate(size, 5);
    let (hash, url) = publish(&mirror, "m.bin", &data);
    mirror.throttle(4 * MIB);

    let handle = node
        .fetch(FetchRequest::hash(hash).with_mirror(url.clone()))
        .unwrap();
    wait_until("connections are open", || {
        mirror.open_connections() > 0 && mirror.body_bytes() > 2 * MIB
    })
    .await;
    node.suspend().await;
    assert_eq!(node.state(), LifecycleState::Suspended);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        mirror.open_connections(),
        0,
        "every connection closed within 200 ms"
    );
    let during = mirror.body_bytes();

    match node.fetch(FetchRequest::hash(hash).with_mirror(url)) {
        Err(NodeError::Lifecycle(LifecycleState::Suspended)) => {}
        other => panic!("expected the lifecycle error, got {other:?}"),
    }
    assert!(matches!(
        node.cancel(handle.id()),
        Err(NodeError::Lifecycle(_))
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mirror.body_bytes(), during, "no bytes while suspended");
    assert_eq!(handle.progress().borrow().phase, Phase::Paused);

    mirror.throttle(0);
    node.resume().await.unwrap();
    let fetched = handle.await.unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), data);
    let after = mirror.body_bytes() - during;
    // Verified chunks are not fetched again: the rest, plus in-flight requests.
    assert!(
        after <= size - during + MIB + sidecar(size),
        "moved {after} after resume, {during} before"
    );
}

#[tokio::test]
async fn lifecycle_calls_are_idempotent_and_a_failed_resume_stays_suspended() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = Arc::new(AtomicBool::new(false));
    let check: ResumeCheck = {
        let healthy = Arc::clone(&healthy);
        Arc::new(move || {
            if healthy.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("network is down".into())
            }
        })
    };
    let node = node(&dir).resume_check(check).spawn().unwrap();
    assert_eq!(node.state(), LifecycleState::Active);
    node.resume().await.unwrap();
    assert_eq!(
        node.state(),
        LifecycleState::Active,
        "resume while active changes nothing"
    );
    node.suspend().await;
    node.suspend().await;
    assert_eq!(node.state(), LifecycleState::Suspended);
    match node.resume().await {
        Err(NodeError::ResumeFailed(reason)) => assert!(reason.contains("network is down")),
        other => panic!("expected a failed resume, got {other:?}"),
    }
    assert_eq!(node.state(), LifecycleState::Suspended);
    healthy.store(true, Ordering::SeqCst);
    node.resume().await.unwrap();
    assert_eq!(node.state(), LifecycleState::Active);
}

#[tokio::test]
async fn a_model_is_one_group_with_summed_progress_and_one_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir).spawn().unwrap();
    let mirror = TestMirror::start().await;
    let files = [
        ("a.bin", generate(4 * MIB, 6)),
        ("b.bin", generate(4 * MIB, 7)),
        ("c.json", generate(100, 8)),
    ];
    let (manifest, url) = publish_model(&mirror, "model", &files);
    let total = manifest.total_size();
    mirror.throttle(MIB);

    let handle = node
        .fetch(FetchRequest::hash(manifest.hash()).with_mirror(url.clone()))
        .unwrap();
    let progress = handle.progress();
    wait_until("the files are counted", || progress.borrow().total >= total).await;
    wait_until("several files move", || {
        progress
            .borrow()
            .sources
            .iter()
            .map(|s| s.bytes)
            .sum::<u64>()
            > MIB
    })
    .await;
    node.cancel(handle.id()).unwrap();
    assert!(matches!(handle.await, Err(NodeError::Cancelled)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = mirror.body_bytes();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mirror.body_bytes(),
        stopped,
        "cancelling the model stopped every file"
    );

    mirror.throttle(0);
    let out = dir.path().join("out");
    let handle = node
        .fetch(
            FetchRequest::hash(manifest.hash())
                .with_mirror(url)
                .with_output(&out),
        )
        .unwrap();
    let progress = handle.progress();
    assert_eq!(handle.await.unwrap().path(), out);
    for (path, data) in &files {
        assert_eq!(&std::fs::read(out.join(path)).unwrap(), data);
    }
    let last = progress.borrow().clone();
    assert_eq!(last.done, last.total, "{last:?}");
}

#[tokio::test]
async fn a_queued_transfer_waits_for_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let node: Node = node(&dir).max_concurrent_transfers(1).spawn().unwrap();
    let mirror = TestMirror::start().await;
    let (a, url_a) = publish(&mirror, "a.bin", &generate(4 * MIB, 9));
    let (b, url_b) = publish(&mirror, "b.bin", &generate(MIB, 10));
    mirror.throttle(2 * MIB);
    let first = node
        .fetch(FetchRequest::hash(a).with_mirror(url_a))
        .unwrap();
    let second = node
        .fetch(FetchRequest::hash(b).with_mirror(url_b))
        .unwrap();
    wait_until("the first moves", || mirror.body_bytes() > 0).await;
    assert_eq!(second.progress().borrow().phase, Phase::Queued);
    mirror.throttle(0);
    first.await.unwrap();
    second.await.unwrap();
}

#[tokio::test]
async fn shutdown_commits_and_a_new_node_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = TestMirror::start().await;
    let size = 16 * MIB;
    let data = generate(size, 11);
    let (hash, url) = publish(&mirror, "m.bin", &data);
    mirror.throttle(4 * MIB);
    let node = node(&dir).spawn().unwrap();
    let handle = node
        .fetch(FetchRequest::hash(hash).with_mirror(url.clone()))
        .unwrap();
    wait_until("a quarter arrived", || mirror.body_bytes() > size / 4).await;
    node.shutdown().await;
    assert!(matches!(handle.await, Err(NodeError::Shutdown)));
    let first = mirror.body_bytes();

    mirror.throttle(0);
    let node = node_on(&dir);
    let handle = node
        .fetch(FetchRequest::hash(hash).with_mirror(url))
        .unwrap();
    let progress = handle.progress();
    handle.await.unwrap();
    assert!(
        progress.borrow().resumed >= first - 2 * MIB,
        "resumed {} of {first}",
        progress.borrow().resumed
    );
}

fn node_on(dir: &tempfile::TempDir) -> Node {
    node(dir).spawn().unwrap()
}

#[tokio::test]
async fn a_model_fetch_completes_with_a_single_transfer_slot() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir).max_concurrent_transfers(1).spawn().unwrap();
    let mirror = TestMirror::start().await;
    let files = [("a.bin", generate(MIB, 12)), ("b.bin", generate(MIB, 13))];
    let (manifest, url) = publish_model(&mirror, "m", &files);
    let handle = node
        .fetch(FetchRequest::hash(manifest.hash()).with_mirror(url))
        .unwrap();
    let fetched = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("no deadlock")
        .unwrap();
    for (path, data) in &files {
        assert_eq!(&std::fs::read(fetched.path().join(path)).unwrap(), data);
    }
}

#[tokio::test]
async fn calls_after_shutdown_fail_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir).spawn().unwrap();
    let other = node.clone();
    node.shutdown().await;
    let request = FetchRequest::hash(Hash::of(b"anything"));
    assert!(matches!(other.fetch(request), Err(NodeError::Shutdown)));
    assert!(matches!(other.resume().await, Err(NodeError::Shutdown)));
}
