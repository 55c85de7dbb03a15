//! The daemon's download queue and control API as users meet them: a real
//! `p2pmodel daemon` process, killed with SIGKILL and started again on the
//! same store, and `p2pmodel fetch` joining the daemon's job and pausing it
//! on Ctrl+C.

use std::time::Duration;

use p2pmodel_control::{Client, Job, JobId, JobRequest, JobSpec, JobState, Target};
use testkit::{TestMirror, b3sum, generate};
use tokio::process::Child;

use crate::util::{Workspace, assert_ok, publish, signal, stderr, stdout, wait_until};

const MIB: u64 = 1 << 20;

/// Starts `p2pmodel daemon` on loopback with `extra` flags; returns it and
/// a client of its control API once that answers (a file left by a killed
/// daemon does not count).
async fn start_daemon(work: &Workspace, extra: &[&str]) -> (Child, Client) {
    let mut args = vec!["daemon", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"];
    args.extend_from_slice(extra);
    let daemon = work.spawn(&args);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(client)) = Client::for_store(&work.store())
            && client.health().await.is_ok()
        {
            return (daemon, client);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon's control API did not answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hash_job(hash: &str, mirror: &str) -> JobRequest {
    JobRequest {
        spec: JobSpec {
            target: Target::Hash {
                hash: hash.to_owned(),
            },
            mirrors: vec![mirror.to_owned()],
            peers: vec![],
            output: None,
            group: None,
        },
        start: true,
        smart: false,
    }
}

async fn wait_for_state(client: &Client, id: &JobId, state: JobState) -> Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let job = client.job(id).await.unwrap();
        if job.state == state {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} stayed {} (wanted {state})",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|job| job.id.clone()).collect()
}

#[tokio::test]
async fn a_killed_daemon_restarts_its_queue_in_order_and_finishes_it() {
    let mirror = TestMirror::start().await;
    let size = 8 * MIB;
    let blobs: Vec<(String, String)> = (0..3)
        .map(|n| {
            let name = format!("q{n}.bin");
            let hash = publish(&mirror, &name, &generate(size, 60 + n), true);
            (hash, mirror.url(&name))
        })
        .collect();
    let work = Workspace::new();
    // Half a MiB/s per response, four in flight: 3 MiB take more than the
    // store's commit interval, so some chunks are committed before the kill.
    mirror.throttle(MIB / 2);
    let (daemon, client) = start_daemon(&work, &["--max-concurrent-jobs", "1"]).await;
    let mut jobs = Vec::new();
    for (hash, url) in &blobs {
        jobs.push(client.create(&hash_job(hash, url)).await.unwrap().id);
    }
    // Queue order now: third, then second.
    assert_eq!(client.reorder(&jobs[2], 1).await.unwrap(), 1);
    wait_for_state(&client, &jobs[0], JobState::Running).await;
    wait_until("the first job moved a few MiB", || {
        mirror.body_bytes() >= 3 * MIB
    })
    .await;

    let mut daemon = daemon;
    daemon.kill().await.expect("SIGKILL delivered");
    let before_restart = mirror.body_bytes();

    let (mut daemon, client) = start_daemon(&work, &["--max-concurrent-jobs", "1"]).await;
    let snapshot = client.jobs().await.unwrap();
    let running_again: Vec<JobId> = ids(&snapshot.active)
        .into_iter()
        .chain(ids(&snapshot.queued))
        .collect();
    assert_eq!(
        running_again,
        [jobs[0].clone(), jobs[2].clone(), jobs[1].clone()],
        "the interrupted job first, then the queue in its order: {snapshot:?}"
    );
    assert_eq!(ids(&snapshot.queued), [jobs[2].clone(), jobs[1].clone()]);

    mirror.throttle(0);
    let mut started = Vec::new();
    for (id, (hash, _)) in jobs.iter().zip(&blobs) {
        let job = wait_for_state(&client, id, JobState::Completed).await;
        let result = job.result.as_ref().unwrap();
        assert_eq!(&result.hash, hash);
        assert_eq!(&b3sum(&result.path), hash);
        started.push((job.started_at.unwrap(), job.id.clone()));
    }
    started.sort();
    let order: Vec<JobId> = started.into_iter().map(|(_, id)| id).collect();
    assert_eq!(order, [jobs[0].clone(), jobs[2].clone(), jobs[1].clone()]);
    let first = client.job(&jobs[0]).await.unwrap();
    assert!(
        first.progress.resumed > 0,
        "the interrupted job resumed its partial ({before_restart} bytes were sent before the kill)"
    );
    daemon.kill().await.unwrap();
}

#[tokio::test]
async fn ctrl_c_in_fetch_pauses_the_daemons_job_and_the_next_fetch_resumes_it() {
    let mirror = TestMirror::start().await;
    let size = 32 * MIB;
    let data = generate(size, 70);
    let hash = publish(&mirror, "c.bin", &data, true);
    let url = mirror.url("c.bin");
    let work = Workspace::new();
    let (mut daemon, client) = start_daemon(&work, &[]).await;
    let output = work.path("c.bin");
    let args = [
        "fetch",
        hash.as_str(),
        "--mirror",
        url.as_str(),
        "-o",
        output.to_str().unwrap(),
    ];

    mirror.throttle(2 * MIB);
    let fetch = work.spawn(&args);
    wait_until("the daemon's transfer moves bytes", || {
        mirror.body_bytes() >= 4 * MIB
    })
    .await;
    let snapshot = client.jobs().await.unwrap();
    assert_eq!(snapshot.active.len(), 1, "the fetch runs as a daemon job");
    let id = snapshot.active[0].id.clone();

    signal(&fetch, "INT");
    let out = tokio::time::timeout(Duration::from_secs(30), fetch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("paused"), "{}", stderr(&out));
    let paused = client.job(&id).await.unwrap();
    assert_eq!(paused.state, JobState::Paused);
    wait_until("the mirror's connections closed", || {
        mirror.open_connections() == 0
    })
    .await;
    let at_pause = mirror.body_bytes();
    assert!(at_pause < size);

    mirror.throttle(0);
    let out = work.run(&args).await;
    assert_ok(&out);
    assert_eq!(stdout(&out), output.to_str().unwrap());
    assert_eq!(b3sum(&output), hash);
    let done = client.job(&id).await.unwrap();
    assert_eq!(done.state, JobState::Completed, "the same job resumed");
    assert!(done.progress.resumed > 0, "{done:?}");
    assert_eq!(client.jobs().await.unwrap().completed.len(), 1);
    daemon.kill().await.unwrap();
}
