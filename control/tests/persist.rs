//! The queue across restarts of its node on the same store: order, ids
//! and interrupted jobs (the end-to-end tests do the same with `kill -9`).

use p2pmodel_control::{JOBS_FILE, JobId, JobSpec, JobState, Queue, QueueConfig, Target};
use p2pmodel_node::NodeBuilder;

fn spec(n: u8) -> JobSpec {
    JobSpec {
        target: Target::Hash {
            hash: format!("{n:02x}").repeat(32),
        },
        mirrors: vec![format!("http://127.0.0.1:9/{n}.bin")],
        peers: vec![],
        output: None,
        group: None,
    }
}

fn open(dir: &tempfile::TempDir) -> Queue {
    let node = NodeBuilder::new(dir.path().join("store")).spawn().unwrap();
    Queue::open(node, QueueConfig::default()).unwrap()
}

/// Drops the queue and shuts its node down, so the store can be opened again.
async fn close(queue: Queue) {
    let node = queue.node().clone();
    drop(queue);
    node.shutdown().await;
}

fn queued(queue: &Queue) -> Vec<JobId> {
    queue
        .snapshot()
        .queued
        .into_iter()
        .map(|job| job.id)
        .collect()
}

#[tokio::test]
async fn a_reopened_queue_keeps_its_order_and_never_reuses_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir);
    let ids: Vec<JobId> = (1..=3).map(|n| queue.queue(spec(n)).unwrap().id).collect();
    assert_eq!(queue.reorder(&ids[2], 1).unwrap(), 1);
    let removed = queue.queue(spec(4)).unwrap().id;
    queue.remove(&removed).unwrap();
    let order = queued(&queue);
    close(queue).await;

    let queue = open(&dir);
    assert_eq!(queued(&queue), order);
    assert_eq!(order, [ids[2].clone(), ids[0].clone(), ids[1].clone()]);
    assert!(!queue.snapshot().processing, "nobody asked to process");
    let next = queue.queue(spec(5)).unwrap().id;
    assert_eq!(next, JobId::numbered(5), "job-4 was used once already");
    close(queue).await;
}

#[tokio::test]
async fn jobs_that_were_running_go_first_when_the_queue_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir);
    for n in 1..=3 {
        queue.queue(spec(n)).unwrap();
    }
    close(queue).await;
    // As a daemon killed while job-2 ran leaves the file.
    let path = dir.path().join("store").join(JOBS_FILE);
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    saved["jobs"][1]["state"] = "running".into();
    std::fs::write(&path, serde_json::to_vec(&saved).unwrap()).unwrap();

    let queue = open(&dir);
    assert_eq!(
        queued(&queue),
        [JobId::numbered(2), JobId::numbered(1), JobId::numbered(3)]
    );
    assert!(
        queue
            .snapshot()
            .queued
            .iter()
            .all(|job| job.state == JobState::Queued)
    );
    close(queue).await;
}
