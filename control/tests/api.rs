//! The control API over real loopback sockets: a real node on a temporary
//! store, a real loopback mirror (the testkit's, which throttles and
//! counts connections), and the crate's own client.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use p2pmodel_control::api::{ENDPOINTS, OPENAPI};
use p2pmodel_control::{
    Client, ControlServer, Job, JobId, JobRequest, JobSpec, JobState, Lifecycle, Queue,
    QueueConfig, ServerConfig, Target, serve,
};
use p2pmodel_node::mirror::HttpConfig;
use p2pmodel_node::{FetcherConfig, NodeBuilder};
use p2pmodel_protocol::Outboard;
use serde_json::Value;
use testkit::{TestMirror, generate};

const MIB: u64 = 1 << 20;

/// A node, its queue and the API served over loopback, on a temporary store.
struct Daemon {
    dir: tempfile::TempDir,
    server: ControlServer,
    client: Client,
}

async fn daemon(config: QueueConfig) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let fetcher = FetcherConfig::default()
        .with_http(HttpConfig::default().with_backoff(Duration::from_millis(5)));
    let node = NodeBuilder::new(dir.path().join("store"))
        .fetcher_config(fetcher)
        .spawn()
        .unwrap();
    let queue = Queue::open(node, config).unwrap();
    let server = serve(queue, ServerConfig::default()).await.unwrap();
    let client = Client::new(server.addr(), server.token()).unwrap();
    Daemon {
        dir,
        server,
        client,
    }
}

impl Daemon {
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr())
    }

    async fn wait_for(&self, id: &JobId, state: JobState) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.client.job(id).await.unwrap();
            if job.state == state {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} is {} (wanted {state}): {job:?}",
                job.state
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Publishes `data` with its outboard; returns the hash and URL.
fn publish(mirror: &TestMirror, name: &str, data: &[u8]) -> (String, String) {
    let outboard = Outboard::compute(data, data.len() as u64).unwrap();
    mirror.put(name, data);
    mirror.put(&format!("{name}.obao"), outboard.as_bytes());
    (outboard.hash().to_string(), mirror.url(name))
}

fn job_request(hash: &str, mirror: &str, start: bool) -> JobRequest {
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
        start,
        smart: false,
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn json(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn error_code(error: &p2pmodel_control::ClientError) -> &str {
    error.code().unwrap_or("(not an API error)")
}

#[tokio::test]
async fn requests_without_the_right_token_get_401_and_the_token_file_is_owner_only() {
    let daemon = daemon(QueueConfig::default()).await;
    let http = reqwest::Client::new();
    let health = daemon.url("/v1/health");

    let bare = http.get(&health).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    let body = json(bare).await;
    assert_eq!(body["error"]["code"], "unauthorized");

    let wrong = Client::new(daemon.server.addr(), &"0".repeat(64)).unwrap();
    let error = wrong.health().await.unwrap_err();
    assert_eq!(error_code(&error), "unauthorized");
    let error = wrong.jobs().await.unwrap_err();
    assert_eq!(error_code(&error), "unauthorized");
    let mangled = http
        .get(&health)
        .header("authorization", format!("Basic {}", daemon.server.token()))
        .send()
        .await
        .unwrap();
    assert_eq!(mangled.status(), 401);

    let ok = daemon.client.health().await.unwrap();
    assert_eq!(ok["state"], "active");

    let token_file = daemon.store().join("control.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        daemon.server.token()
    );
    let addr = std::fs::read_to_string(daemon.store().join("control.addr")).unwrap();
    assert_eq!(addr.trim(), daemon.server.addr().to_string());
    // The files lead a client to the daemon.
    let found = Client::for_store(&daemon.store()).unwrap().unwrap();
    assert_eq!(found.health().await.unwrap()["status"], "ok");

    daemon.server.shutdown().await;
    assert!(!token_file.exists(), "the token goes with the server");
}

#[tokio::test]
async fn a_remote_address_needs_an_explicit_allowance() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path().join("store")).spawn().unwrap();
    let queue = Queue::open(node, QueueConfig::default()).unwrap();
    let config = ServerConfig::default().with_listen("0.0.0.0:0".parse().unwrap());
    let refused = serve(queue, config).await.unwrap_err();
    assert!(
        refused.to_string().contains("not a loopback address"),
        "{refused}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_the_router_serves() {
    let daemon = daemon(QueueConfig::default()).await;
    let document: Value = serde_json::from_str(OPENAPI).unwrap();
    let paths = document["paths"].as_object().unwrap();
    for (method, path) in ENDPOINTS {
        let operation = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not in openapi.json"))[method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {path} is not in openapi.json"
        );
        assert!(
            operation["responses"]["401"].is_object(),
            "{method} {path} documents its 401"
        );
    }
    let documented: usize = paths
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        ENDPOINTS.len(),
        "no documented route is missing from the router"
    );

    let served = reqwest::Client::new()
        .get(daemon.url("/v1/openapi.json"))
        .bearer_auth(daemon.server.token())
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(json(served).await, document);
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_stable_codes() {
    let daemon = daemon(QueueConfig::default()).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>| {
        http.post(daemon.url(path))
            .bearer_auth(daemon.server.token())
            .body(body)
            .send()
    };
    let answer = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body = json(response).await;
        (status, body["error"]["code"].as_str().unwrap().to_owned())
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/jobs", b"not json".to_vec(), 400, "invalid_json"),
        ("/v1/jobs", b"{}".to_vec(), 400, "missing_target"),
        (
            "/v1/jobs",
            br#"{"hash":"00"}"#.to_vec(),
            400,
            "invalid_field",
        ),
        ("/v1/jobs", vec![b' '; 70 * 1024], 413, "body_too_large"),
        (
            "/v1/jobs",
            br#"{"hf":"hf://org"}"#.to_vec(),
            400,
            "invalid_target",
        ),
        (
            "/v1/jobs/job-99/position",
            br#"{"position":1}"#.to_vec(),
            404,
            "unknown_job",
        ),
        (
            "/v1/jobs/job-99/position",
            br#"{"position":0}"#.to_vec(),
            400,
            "invalid_field",
        ),
        ("/v1/groups/a%20b/cancel", vec![], 400, "invalid_field"),
        ("/v1/nowhere", vec![], 404, "not_found"),
        ("/v1/health", vec![], 405, "method_not_allowed"),
    ];
    for (path, body, status, code) in cases {
        let got = answer(post(path, body).await.unwrap()).await;
        assert_eq!(got, (status, code.to_owned()), "POST {path}");
    }
    let peers = format!(
        r#"{{"hash":"{}","peers":["/ip4/127.0.0.1/tcp/x"]}}"#,
        "ab".repeat(32)
    );
    let got = answer(post("/v1/jobs", peers.into_bytes()).await.unwrap()).await;
    assert_eq!(got, (400, "invalid_target".to_owned()));
    let error = daemon.client.job(&JobId::from("job-7")).await.unwrap_err();
    assert_eq!(error_code(&error), "unknown_job");
    let delete = http
        .delete(daemon.url("/v1/jobs/job-1?clear=perhaps"))
        .bearer_auth(daemon.server.token())
        .send()
        .await
        .unwrap();
    assert_eq!(answer(delete).await, (400, "invalid_query".to_owned()));
}

#[tokio::test]
async fn with_one_slot_jobs_run_one_at_a_time_in_queue_order_and_reorder_reports_the_position() {
    let daemon = daemon(QueueConfig::default().with_max_concurrent(1)).await;
    let mirror = TestMirror::start().await;
    mirror.throttle(2 * MIB);
    let mut ids = Vec::new();
    for n in 0..3 {
        let (hash, url) = publish(&mirror, &format!("{n}.bin"), &generate(MIB, n));
        let job = daemon
            .client
            .create(&job_request(&hash, &url, true))
            .await
            .unwrap();
        ids.push(job.id);
    }
    let first = daemon.wait_for(&ids[0], JobState::Running).await;
    assert!(first.started_at.is_some());
    let counts = daemon.client.counts().await.unwrap();
    assert_eq!((counts.active, counts.pending), (1, 2));

    // Third job to the front; second job past the end lands last.
    assert_eq!(daemon.client.reorder(&ids[2], 1).await.unwrap(), 1);
    assert_eq!(daemon.client.reorder(&ids[1], 99).await.unwrap(), 2);
    let queued: Vec<JobId> = daemon
        .client
        .jobs()
        .await
        .unwrap()
        .queued
        .into_iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(queued, [ids[2].clone(), ids[1].clone()]);
    let error = daemon.client.reorder(&ids[0], 1).await.unwrap_err();
    assert_eq!(
        error_code(&error),
        "wrong_state",
        "a running job cannot move"
    );

    mirror.throttle(0);
    let mut finished = Vec::new();
    for id in &ids {
        let job = daemon.wait_for(id, JobState::Completed).await;
        assert_eq!(job.progress.done, MIB);
        finished.push((job.started_at.unwrap(), job.id.clone()));
    }
    finished.sort();
    let order: Vec<JobId> = finished.into_iter().map(|(_, id)| id).collect();
    assert_eq!(order, [ids[0].clone(), ids[2].clone(), ids[1].clone()]);
    let result = daemon.client.job(&ids[0]).await.unwrap().result.unwrap();
    assert_eq!(std::fs::read(&result.path).unwrap(), generate(MIB, 0));

    let metrics = reqwest::Client::new()
        .get(daemon.url("/v1/metrics"))
        .bearer_auth(daemon.server.token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("p2pmodel_jobs{state=\"completed\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("p2pmodel_node_state{state=\"active\"} 1"),
        "{metrics}"
    );
    let received: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("p2pmodel_received_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(received >= 3 * MIB, "{received}");
}

#[tokio::test]
async fn remove_retry_clear_failed_and_a_full_queue() {
    let daemon = daemon(QueueConfig::default().with_max_queued(2)).await;
    let mirror = TestMirror::start().await;
    let missing = mirror.url("missing.bin");
    let client = &daemon.client;
    let failing = client
        .create(&job_request(&"ab".repeat(32), &missing, false))
        .await
        .unwrap();
    let (hash, url) = publish(&mirror, "ok.bin", &generate(MIB, 9));
    let other = client
        .create(&job_request(&hash, &url, false))
        .await
        .unwrap();
    assert_eq!(other.state, JobState::Queued, "not processed yet");

    let full = client
        .create(&job_request(&hash, &url, false))
        .await
        .unwrap_err();
    assert_eq!(error_code(&full), "queue_full");
    assert!(matches!(
        full,
        p2pmodel_control::ClientError::Api { status: 429, .. }
    ));

    assert_eq!(client.remove(&other.id).await.unwrap().id, other.id);
    assert_eq!(
        error_code(&client.job(&other.id).await.unwrap_err()),
        "unknown_job"
    );
    assert_eq!(client.counts().await.unwrap().pending, 1);

    client.process().await.unwrap();
    let failed = daemon.wait_for(&failing.id, JobState::Failed).await;
    assert!(failed.error.as_deref().is_some_and(|e| !e.is_empty()));
    assert_eq!(client.jobs().await.unwrap().failed.len(), 1);

    assert_eq!(client.retry(&failing.id).await.unwrap(), 1);
    daemon.wait_for(&failing.id, JobState::Failed).await;
    assert_eq!(client.clear_failed().await.unwrap(), 1);
    assert_eq!(
        error_code(&client.job(&failing.id).await.unwrap_err()),
        "unknown_job"
    );
    assert_eq!(client.clear_failed().await.unwrap(), 0);
}

#[tokio::test]
async fn the_smart_queue_returns_the_job_already_there() {
    let daemon = daemon(QueueConfig::default()).await;
    let mirror = TestMirror::start().await;
    let (hash, url) = publish(&mirror, "s.bin", &generate(MIB, 3));
    let mut request = job_request(&hash, &url, false);
    request.smart = true;
    let first = daemon.client.create(&request).await.unwrap();
    let again = daemon.client.create(&request).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(daemon.client.jobs().await.unwrap().queued.len(), 1);

    // A paused job is queued again rather than duplicated.
    daemon.client.cancel(&first.id, false).await.unwrap();
    let resumed = daemon.client.create(&request).await.unwrap();
    assert_eq!(
        (resumed.id.clone(), resumed.state),
        (first.id.clone(), JobState::Queued)
    );

    // Another output is other work.
    request.spec.output = Some(daemon.dir.path().join("copy.bin"));
    let other = daemon.client.create(&request).await.unwrap();
    assert_ne!(other.id, first.id);
}

#[tokio::test]
async fn cancelling_a_group_or_everything_pauses_queued_jobs() {
    let daemon = daemon(QueueConfig::default()).await;
    let mirror = TestMirror::start().await;
    let mut in_group = Vec::new();
    for n in 0..3u64 {
        let (hash, url) = publish(&mirror, &format!("g{n}.bin"), &generate(MIB, 20 + n));
        let mut request = job_request(&hash, &url, false);
        if n < 2 {
            request.spec.group = Some("llama-shards".into());
        }
        let job = daemon.client.create(&request).await.unwrap();
        if n < 2 {
            in_group.push(job.id);
        }
    }
    assert_eq!(daemon.client.cancel_group("llama-shards").await.unwrap(), 2);
    assert_eq!(daemon.client.cancel_group("nobody").await.unwrap(), 0);
    let snapshot = daemon.client.jobs().await.unwrap();
    let paused: Vec<JobId> = snapshot.paused.into_iter().map(|job| job.id).collect();
    assert_eq!(paused, in_group);
    assert_eq!(snapshot.queued.len(), 1);
    assert_eq!(daemon.client.cancel_all().await.unwrap(), 1);
    assert_eq!(daemon.client.counts().await.unwrap().pending, 0);
    assert_eq!(daemon.client.jobs().await.unwrap().paused.len(), 3);
}

#[tokio::test]
async fn the_event_stream_starts_with_the_current_state_and_ends_with_the_final_one() {
    let daemon = daemon(QueueConfig::default()).await;
    let mirror = TestMirror::start().await;
    mirror.throttle(MIB);
    let (hash, url) = publish(&mirror, "e.bin", &generate(2 * MIB, 4));
    let job = daemon
        .client
        .create(&job_request(&hash, &url, true))
        .await
        .unwrap();
    let mut events = daemon.client.events(&job.id).await.unwrap();
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.id, job.id);
    assert!(matches!(first.state, JobState::Queued | JobState::Running));
    let mut seen = vec![first];
    while let Some(next) = events.next().await.unwrap() {
        seen.push(next);
    }
    let last = seen.last().unwrap();
    assert_eq!(last.state, JobState::Completed);
    assert_eq!(last.progress.done, 2 * MIB);
    assert!(seen.len() > 2, "progress came in between: {}", seen.len());
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|job| !job.state.is_at_rest()),
        "only the last event is at rest"
    );

    // A job at rest: one event, then the end.
    let mut events = daemon.client.events(&job.id).await.unwrap();
    assert_eq!(
        events.next().await.unwrap().unwrap().state,
        JobState::Completed
    );
    assert!(events.next().await.unwrap().is_none());
}

#[tokio::test]
async fn delete_stops_the_transfer_and_clear_removes_the_partial() {
    let daemon = daemon(QueueConfig::default()).await;
    let mirror = TestMirror::start().await;
    let size = 32 * MIB;
    mirror.throttle(2 * MIB);
    let (hash, url) = publish(&mirror, "big.bin", &generate(size, 6));
    let job = daemon
        .client
        .create(&job_request(&hash, &url, true))
        .await
        .unwrap();
    wait_until("the mirror sends bytes", || {
        mirror.open_connections() > 0 && mirror.body_bytes() > MIB
    })
    .await;

    let paused = daemon.client.cancel(&job.id, false).await.unwrap();
    assert_eq!(paused.state, JobState::Paused);
    wait_until("the mirror's connections closed", || {
        mirror.open_connections() == 0
    })
    .await;
    let stopped = mirror.body_bytes();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mirror.body_bytes(), stopped, "no bytes after the pause");
    assert!(stopped < size);
    let partial_dir = daemon.store().join("partial");
    let partials = || std::fs::read_dir(&partial_dir).unwrap().count();
    assert!(partials() > 0, "the pause keeps the partial");
    assert_eq!(
        daemon.client.job(&job.id).await.unwrap().state,
        JobState::Paused
    );

    // Resumed, then cancelled with clear: the partial goes.
    assert_eq!(daemon.client.retry(&job.id).await.unwrap(), 1);
    daemon.wait_for(&job.id, JobState::Running).await;
    wait_until("bytes move again", || mirror.body_bytes() > stopped).await;
    let cancelled = daemon.client.cancel(&job.id, true).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    wait_until("the partial is discarded", || partials() == 0).await;
    wait_until("the mirror's connections closed", || {
        mirror.open_connections() == 0
    })
    .await;

    // A paused job's partial, which no transfer holds, is discarded too.
    daemon.client.retry(&job.id).await.unwrap();
    daemon.wait_for(&job.id, JobState::Running).await;
    let before = mirror.body_bytes();
    wait_until("bytes move once more", || {
        mirror.body_bytes() > before + MIB
    })
    .await;
    daemon.client.cancel(&job.id, false).await.unwrap();
    wait_until("the mirror's connections closed", || {
        mirror.open_connections() == 0
    })
    .await;
    wait_until("the paused partial is on disk", || partials() > 0).await;
    let cleared = daemon.client.cancel(&job.id, true).await.unwrap();
    assert_eq!(cleared.state, JobState::Cancelled);
    wait_until("the paused partial is discarded", || partials() == 0).await;
}

#[tokio::test]
async fn a_suspended_node_keeps_jobs_queued_until_resume() {
    let daemon = daemon(QueueConfig::default()).await;
    let mirror = TestMirror::start().await;
    let (hash, url) = publish(&mirror, "l.bin", &generate(MIB, 8));
    assert_eq!(
        daemon.client.lifecycle(Lifecycle::Suspend).await.unwrap(),
        "suspended"
    );
    assert_eq!(
        daemon.client.lifecycle(Lifecycle::State).await.unwrap(),
        "suspended"
    );
    let job = daemon
        .client
        .create(&job_request(&hash, &url, true))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        daemon.client.job(&job.id).await.unwrap().state,
        JobState::Queued
    );
    assert_eq!(
        daemon.client.lifecycle(Lifecycle::Resume).await.unwrap(),
        "active"
    );
    daemon.wait_for(&job.id, JobState::Completed).await;
}
