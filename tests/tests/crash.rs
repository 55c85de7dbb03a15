//! A fetch killed at any moment loses at most one documented window of
//! verified work, and never leaves a wrong file at its final path.

use std::time::Duration;

use p2pmodel_store::partial::COMMIT_BYTES;
use testkit::{TestMirror, b3sum, generate};

use crate::util::{IN_FLIGHT, Workspace, assert_ok, publish, signal, stderr, stdout, wait_until};

const MIB: u64 = 1 << 20;

async fn kill_nine_then_resume(size: u64, sidecar: bool) {
    let mirror = TestMirror::start().await;
    let data = generate(size, 42);
    let hash = publish(&mirror, "model.bin", &data, sidecar);
    let url = mirror.url("model.bin");
    let work = Workspace::new();
    let output = work.path("out.bin");
    let args = [
        "fetch",
        hash.as_str(),
        "--mirror",
        url.as_str(),
        "-o",
        output.to_str().unwrap(),
    ];

    // Four requests at size/16 per second each: half the blob after about
    // two seconds, so at least one commit window has closed.
    mirror.throttle(size / 16);
    let mut child = work.spawn(&args);
    wait_until("half the blob was sent", || mirror.body_bytes() >= size / 2).await;
    child.kill().await.expect("SIGKILL delivered");
    let first = mirror.body_bytes();
    assert!(!output.exists(), "nothing at the final path after a crash");

    mirror.throttle(0);
    let out = work.run(&args).await;
    assert_ok(&out);
    let second = mirror.body_bytes() - first;
    assert_eq!(b3sum(&output), hash);
    // The second run moves what the first had not committed: at most the
    // missing part plus one commit window and what was in flight.
    let bound = size - first.min(size) + COMMIT_BYTES + IN_FLIGHT + MIB;
    eprintln!(
        "size {size}: first run was sent {first} bytes, the resumed run {second} (bound {bound})"
    );
    assert!(
        second <= bound,
        "second run received {second} bytes; bound {bound} (first run sent {first})"
    );
    assert!(second < size, "the second run started from zero");

    let verify = work.run(&["verify"]).await;
    assert_ok(&verify);
}

#[tokio::test]
async fn kill_nine_mid_fetch_resumes_with_only_the_missing_part() {
    kill_nine_then_resume(256 * MIB, true).await;
}

#[tokio::test]
async fn kill_nine_mid_fetch_without_outboard_resumes_too() {
    kill_nine_then_resume(96 * MIB, false).await;
}

#[tokio::test]
async fn ctrl_c_pauses_with_status_130_and_the_next_fetch_resumes() {
    let mirror = TestMirror::start().await;
    let size = 64 * MIB;
    let data = generate(size, 43);
    let hash = publish(&mirror, "m.bin", &data, true);
    let url = mirror.url("m.bin");
    let work = Workspace::new();
    let args = ["fetch", hash.as_str(), "--mirror", url.as_str()];

    mirror.throttle(8 * MIB);
    let child = work.spawn(&args);
    wait_until("a quarter was sent", || mirror.body_bytes() >= size / 4).await;
    signal(&child, "INT");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "stderr: {}", stderr(&out));
    let message = stderr(&out);
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    assert!(message.contains("paused"), "{message}");
    let first = mirror.body_bytes();

    mirror.throttle(0);
    let out = work.run(&args).await;
    assert_ok(&out);
    assert_eq!(b3sum(std::path::Path::new(&stdout(&out))), hash);
    // A pause commits what was written: only in-flight bytes move twice.
    let second = mirror.body_bytes() - first;
    assert!(
        second <= size - first + IN_FLIGHT,
        "second run received {second}, first {first}"
    );
}

#[tokio::test]
async fn a_second_process_on_a_busy_store_gets_a_clear_error() {
    let mirror = TestMirror::start().await;
    let data = generate(16 * MIB, 44);
    let hash = publish(&mirror, "m.bin", &data, true);
    let url = mirror.url("m.bin");
    let work = Workspace::new();
    mirror.throttle(MIB);
    let mut fetching = work.spawn(&["fetch", hash.as_str(), "--mirror", url.as_str()]);
    wait_until("the fetch is running", || mirror.body_bytes() > 0).await;

    let out = work.run(&["list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("in use by another p2pmodel process"),
        "{}",
        stderr(&out)
    );
    fetching.kill().await.unwrap();
}
