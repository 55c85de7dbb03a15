//! Fetching from real HTTP mirrors on loopback, healthy and misbehaving.
//! Every test checks the bytes at the final path, or that nothing is there.

use std::sync::atomic::Ordering;
use std::time::Duration;

use p2pmodel_node::download::DownloadConfig;
use p2pmodel_node::mirror::HttpConfig;
use p2pmodel_node::{
    CancellationToken, FetchError, Fetcher, FetcherConfig, ProgressTracker, Store,
};
use p2pmodel_protocol::{Hash, Outboard, Sha256};
use testkit::{TestMirror, generate};
use url::Url;

const MIB: u64 = 1 << 20;

struct Setup {
    _dir: tempfile::TempDir,
    fetcher: Fetcher,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let config = FetcherConfig::default()
        .with_http(
            HttpConfig::default()
                .with_read_timeout(Duration::from_millis(500))
                .with_backoff(Duration::from_millis(5))
                .with_max_failures(4),
        )
        .with_download(DownloadConfig::default().with_request_chunks(16));
    Setup {
        fetcher: Fetcher::new(store, config),
        _dir: dir,
    }
}

/// Puts `data` on `mirror` as `name`, with its `.obao` sidecar when asked.
fn publish(mirror: &TestMirror, name: &str, data: &[u8], sidecar: bool) -> (Hash, Url) {
    let outboard = Outboard::compute(data, data.len() as u64).unwrap();
    mirror.put(name, data);
    if sidecar {
        mirror.put(&format!("{name}.obao"), outboard.as_bytes());
    }
    (outboard.hash(), mirror.url(name).parse().unwrap())
}

async fn fetch(
    setup: &Setup,
    hash: Hash,
    mirrors: &[Url],
) -> Result<std::path::PathBuf, FetchError> {
    let progress = ProgressTracker::new();
    setup
        .fetcher
        .fetch_blob(hash, mirrors, None, &progress, CancellationToken::new())
        .await
}

fn assert_published(setup: &Setup, hash: Hash, data: &[u8]) {
    let path = setup.fetcher.store().blob_path(hash);
    assert_eq!(
        std::fs::read(path).expect("blob is published"),
        data,
        "published bytes differ"
    );
}

fn assert_not_published(setup: &Setup, hash: Hash) {
    assert!(
        !setup.fetcher.store().blob_path(hash).exists(),
        "a wrong blob reached its final path"
    );
    assert!(!setup.fetcher.store().has(hash).unwrap());
}

#[tokio::test]
async fn two_mirrors_with_a_sidecar_share_the_work() {
    let setup = setup();
    let (a, b) = (TestMirror::start().await, TestMirror::start().await);
    let data = generate(8 * MIB, 1);
    let (hash, url_a) = publish(&a, "m.bin", &data, true);
    let (_, url_b) = publish(&b, "m.bin", &data, true);
    let progress = ProgressTracker::new();
    setup
        .fetcher
        .fetch_blob(
            hash,
            &[url_a, url_b],
            None,
            &progress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_published(&setup, hash, &data);
    let sources = progress.snapshot().sources;
    assert_eq!(sources.len(), 2, "both mirrors delivered: {sources:?}");
    assert_eq!(
        sources.iter().map(|s| s.bytes).sum::<u64>(),
        data.len() as u64,
        "no byte counted twice"
    );
}

#[tokio::test]
async fn without_an_outboard_the_whole_blob_is_checked_at_the_end() {
    let setup = setup();
    let mirror = TestMirror::start().await;
    let data = generate(3 * MIB + 123, 2);
    let (hash, url) = publish(&mirror, "m.bin", &data, false);
    fetch(&setup, hash, &[url]).await.unwrap();
    assert_published(&setup, hash, &data);
    assert!(
        setup.fetcher.store().outboard(hash).unwrap().is_some(),
        "the outboard is built at the end"
    );
}

#[tokio::test]
async fn a_server_that_ignores_range_is_read_in_one_stream() {
    for sidecar in [true, false] {
        let setup = setup();
        let mirror = TestMirror::start().await;
        mirror.faults().ignore_range.store(true, Ordering::SeqCst);
        let data = generate(2 * MIB, 3);
        let (hash, url) = publish(&mirror, "m.bin", &data, sidecar);
        fetch(&setup, hash, &[url]).await.unwrap();
        assert_published(&setup, hash, &data);
        // The probe's `bytes=0-0` gets the whole file as an answer; it is
        // dropped after the headers, but on loopback the server may have
        // pushed all of it into socket buffers by then. Then one stream.
        assert!(
            mirror.body_bytes() < 3 * data.len() as u64,
            "the file was streamed once after the probe"
        );
    }
}

#[tokio::test]
async fn truncated_bodies_are_resumed_from_the_last_whole_chunk() {
    let setup = setup();
    let mirror = TestMirror::start().await;
    mirror.faults().cut_after.store(100_000, Ordering::SeqCst);
    mirror.faults().truncate_next.store(3, Ordering::SeqCst);
    let data = generate(4 * MIB, 4);
    let (hash, url) = publish(&mirror, "m.bin", &data, false);
    fetch(&setup, hash, &[url]).await.unwrap();
    assert_published(&setup, hash, &data);
}

#[tokio::test]
async fn server_errors_and_resets_are_retried_with_backoff() {
    let setup = setup();
    let mirror = TestMirror::start().await;
    mirror.faults().fail_next.store(2, Ordering::SeqCst);
    mirror.faults().cut_after.store(50_000, Ordering::SeqCst);
    mirror.faults().reset_next.store(2, Ordering::SeqCst);
    let data = generate(2 * MIB, 5);
    let (hash, url) = publish(&mirror, "m.bin", &data, true);
    fetch(&setup, hash, &[url]).await.unwrap();
    assert_published(&setup, hash, &data);
}

#[tokio::test]
async fn a_stalled_body_times_out_and_is_requested_again() {
    let setup = setup();
    let mirror = TestMirror::start().await;
    mirror.faults().cut_after.store(10_000, Ordering::SeqCst);
    mirror.faults().stall_for_ms.store(3_000, Ordering::SeqCst);
    mirror.faults().stall_next.store(1, Ordering::SeqCst);
    let data = generate(MIB, 6);
    let (hash, url) = publish(&mirror, "m.bin", &data, true);
    fetch(&setup, hash, &[url]).await.unwrap();
    assert_published(&setup, hash, &data);
}

#[tokio::test]
async fn a_mirror_that_never_recovers_gives_a_clear_error() {
    let setup = setup();
    let mirror = TestMirror::start().await;
    let data = generate(MIB, 7);
    let (hash, url) = publish(&mirror, "m.bin", &data, true);
    mirror.faults().fail_next.store(u32::MAX, Ordering::SeqCst);
    match fetch(&setup, hash, &[url]).await {
        Err(FetchError::Sources(lines)) => assert!(lines[0].contains("503"), "{lines:?}"),
        other => panic!("expected a source error, got {other:?}"),
    }
    assert_not_published(&setup, hash);
}

#[tokio::test]
async fn a_corrupting_mirror_is_dropped_and_the_honest_one_finishes() {
    let setup = setup();
    let (bad, good) = (TestMirror::start().await, TestMirror::start().await);
    let data = generate(4 * MIB, 8);
    let (hash, bad_url) = publish(&bad, "m.bin", &data, true);
    let (_, good_url) = publish(&good, "m.bin", &data, true);
    bad.faults()
        .corrupt_offset_plus_one
        .store(MIB + 1, Ordering::SeqCst);
    // Everything from the bad mirror is corrupt at one offset; whichever of
    // its requests covers that offset gets it dropped.
    let progress = ProgressTracker::new();
    setup
        .fetcher
        .fetch_blob(
            hash,
            &[bad_url, good_url.clone()],
            None,
            &progress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_published(&setup, hash, &data);
}

#[tokio::test]
async fn a_single_corrupting_mirror_without_outboard_publishes_nothing() {
    let setup = setup();
    let mirror = TestMirror::start().await;
    let data = generate(MIB, 9);
    let (hash, url) = publish(&mirror, "m.bin", &data, false);
    mirror
        .faults()
        .corrupt_offset_plus_one
        .store(1000, Ordering::SeqCst);
    match fetch(&setup, hash, &[url]).await {
        Err(FetchError::Mismatch { expected, .. }) => assert_eq!(expected, hash),
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert_not_published(&setup, hash);
}

#[tokio::test]
async fn a_single_corrupting_mirror_with_outboard_is_refused_before_writing() {
    let setup = setup();
    let mirror = TestMirror::start().await;
    let data = generate(MIB, 10);
    let (hash, url) = publish(&mirror, "m.bin", &data, true);
    mirror
        .faults()
        .corrupt_offset_plus_one
        .store(5000, Ordering::SeqCst);
    match fetch(&setup, hash, &[url]).await {
        Err(FetchError::Sources(lines)) => assert!(lines[0].contains("do not match"), "{lines:?}"),
        other => panic!("expected the mirror to be dropped, got {other:?}"),
    }
    assert_not_published(&setup, hash);
}

#[tokio::test]
async fn credentials_are_not_forwarded_to_a_redirect_on_another_host() {
    let setup = setup();
    let (front, cdn) = (TestMirror::start().await, TestMirror::start().await);
    let data = generate(MIB, 11);
    let (hash, _) = publish(&cdn, "m.bin", &data, true);
    *front.faults().redirect_to.lock().unwrap() = Some(cdn.base());
    let with_credentials: Url = front
        .url("m.bin")
        .replace("http://", "http://user:secret@")
        .parse()
        .unwrap();
    fetch(&setup, hash, &[with_credentials]).await.unwrap();
    assert_published(&setup, hash, &data);
    assert!(
        !front.authorization_headers().is_empty(),
        "the first host got the credentials"
    );
    assert!(
        cdn.authorization_headers().is_empty(),
        "the redirect target got {:?}",
        cdn.authorization_headers()
    );
}

#[tokio::test]
async fn content_replaced_mid_download_is_never_mixed() {
    let setup = setup();
    let mirror = TestMirror::start().await;
    let (v1, v2) = (generate(4 * MIB, 12), generate(4 * MIB, 13));
    mirror.put("m.bin", &v1);
    mirror.throttle(8 * MIB);
    let url: Url = mirror.url("m.bin").parse().unwrap();
    let fetcher = setup.fetcher.clone();
    let task = tokio::spawn({
        let url = url.clone();
        async move {
            fetcher
                .fetch_url(
                    &url,
                    None,
                    &ProgressTracker::new(),
                    CancellationToken::new(),
                )
                .await
        }
    });
    while mirror.body_bytes() < MIB {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mirror.put("m.bin", &v2);
    mirror.throttle(0);
    let hash = task.await.unwrap().unwrap();
    assert_eq!(hash, Hash::of(&v2), "the result is wholly the new content");
    assert_published(&setup, hash, &v2);
}

#[tokio::test]
async fn a_cancelled_fetch_resumes_and_moves_only_the_remainder() {
    let setup = setup();
    let mirror = TestMirror::start().await;
    let data = generate(16 * MIB, 14);
    let (hash, url) = publish(&mirror, "m.bin", &data, true);
    mirror.throttle(16 * MIB);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (fetcher, cancel, url) = (setup.fetcher.clone(), cancel.clone(), url.clone());
        async move {
            fetcher
                .fetch_blob(hash, &[url], None, &ProgressTracker::new(), cancel)
                .await
        }
    });
    while mirror.body_bytes() < 6 * MIB {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    assert!(matches!(task.await.unwrap(), Err(FetchError::Cancelled)));
    let first_run = mirror.body_bytes();
    mirror.throttle(0);

    let progress = ProgressTracker::new();
    setup
        .fetcher
        .fetch_blob(hash, &[url], None, &progress, CancellationToken::new())
        .await
        .unwrap();
    assert_published(&setup, hash, &data);
    let second_run = mirror.body_bytes() - first_run;
    let resumed = progress.snapshot().resumed;
    assert!(
        resumed >= 4 * MIB,
        "most of the first run was kept (resumed {resumed})"
    );
    // The second run moves what was missing plus the sidecar (64 KiB here).
    assert!(
        second_run <= data.len() as u64 - resumed + 128 * 1024,
        "second run sent {second_run} bytes, resumed {resumed}"
    );
}

#[tokio::test]
async fn a_url_with_a_sha256_is_checked_and_recorded_as_an_alias() {
    let setup = setup();
    let mirror = TestMirror::start().await;
    let data = generate(MIB, 15);
    mirror.put("f.bin", &data);
    let url: Url = mirror.url("f.bin").parse().unwrap();
    let sha = Sha256(sha2_digest(&data));

    let wrong = Sha256([0; 32]);
    let result = setup
        .fetcher
        .fetch_url(
            &url,
            Some(wrong),
            &ProgressTracker::new(),
            CancellationToken::new(),
        )
        .await;
    assert!(
        matches!(result, Err(FetchError::Sha256Mismatch { .. })),
        "{result:?}"
    );
    assert_not_published(&setup, Hash::of(&data));

    let hash = setup
        .fetcher
        .fetch_url(
            &url,
            Some(sha),
            &ProgressTracker::new(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(hash, Hash::of(&data));
    assert_eq!(setup.fetcher.store().alias(sha).unwrap(), Some(hash));
    // Known by its SHA-256 now: no request at all the next time.
    let before = mirror.requests();
    setup
        .fetcher
        .fetch_url(
            &url,
            Some(sha),
            &ProgressTracker::new(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(mirror.requests(), before);
}

fn sha2_digest(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// A server that answers every request with the same canned bytes.
async fn canned_server(answer: &'static str) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/f", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    url
}

#[tokio::test]
async fn a_mirror_claiming_an_absurd_size_is_refused_not_obeyed() {
    let setup = setup();
    let url = canned_server(
        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-0/18446744073709551615\r\nContent-Length: 1\r\n\r\nx",
    )
    .await;
    let progress = ProgressTracker::new();
    let result = setup
        .fetcher
        .fetch_url(&url, None, &progress, CancellationToken::new())
        .await;
    match result {
        Err(FetchError::Sources(lines)) => assert!(lines[0].contains("1 PiB"), "{lines:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
