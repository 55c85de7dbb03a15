//! `hf://` names against a fake Hub (the revision, tree and resolve APIs)
//! that redirects downloads to a second server standing in for the CDN.
//!
//! The fake Hub knows one commit: `main` resolves to it, and the tree and
//! resolve APIs answer only for it, so every test also checks that a fetch
//! lists and downloads at the commit its revision pointed to.

use std::collections::BTreeSet;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use p2pmodel_node::hf::{HfRef, Hub};
use p2pmodel_node::{FetchRequest, Fetched, NodeBuilder, NodeError};
use p2pmodel_protocol::Hash;
use sha2::Digest;
use testkit::{TestMirror, generate};
use url::Url;

/// The commit `main` points to.
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// One file of the fake repository.
struct RepoFile {
    path: &'static str,
    data: Vec<u8>,
    /// Stored in LFS (listed with a SHA-256) rather than in git.
    lfs: bool,
    /// A SHA-256 to list instead of the real one.
    wrong_sha: Option<String>,
}

/// An LFS file (weights).
fn lfs(path: &'static str, size: u64, seed: u64) -> RepoFile {
    RepoFile {
        path,
        data: generate(size, seed),
        lfs: true,
        wrong_sha: None,
    }
}

/// A small file kept in git (configs, READMEs).
fn small(path: &'static str, seed: u64) -> RepoFile {
    RepoFile {
        path,
        data: generate(300, seed),
        lfs: false,
        wrong_sha: None,
    }
}

impl RepoFile {
    fn sha256(&self) -> String {
        hex(&sha2::Sha256::digest(&self.data))
    }

    /// A stand-in for the git blob id: any 40 hex digits tied to the content.
    fn blob_id(&self) -> String {
        self.sha256()[..40].to_owned()
    }

    /// The name the Hugging Face cache gives its content.
    fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.blob_id()
        }
    }
}

struct FakeHub {
    url: Url,
    authorization: Arc<Mutex<Vec<String>>>,
    resolved: Arc<Mutex<Vec<String>>>,
}

impl FakeHub {
    /// The paths downloads were asked for, in order.
    fn resolved(&self) -> Vec<String> {
        self.resolved.lock().unwrap().clone()
    }
}

#[derive(Clone)]
struct HubState {
    listing: Arc<String>,
    cdn: String,
    authorization: Arc<Mutex<Vec<String>>>,
    resolved: Arc<Mutex<Vec<String>>>,
}

/// Serves `files` as `org/repo@main`; downloads redirect to `cdn`.
async fn fake_hub(cdn: &TestMirror, files: &[RepoFile]) -> FakeHub {
    let mut entries = Vec::new();
    for file in files {
        cdn.put(file.path, &file.data);
        let mut entry = serde_json::json!({
            "type": "file", "path": file.path, "size": file.data.len(), "oid": file.blob_id(),
        });
        if file.lfs {
            let sha = file.wrong_sha.clone().unwrap_or_else(|| file.sha256());
            entry["lfs"] =
                serde_json::json!({"oid": sha, "size": file.data.len(), "pointerSize": 134});
        }
        entries.push(entry);
    }
    entries
        .push(serde_json::json!({"type": "directory", "path": "weights", "oid": "1".repeat(40)}));
    let state = HubState {
        listing: Arc::new(serde_json::to_string(&entries).unwrap()),
        cdn: cdn.base(),
        authorization: Arc::default(),
        resolved: Arc::default(),
    };
    let (authorization, resolved) = (
        Arc::clone(&state.authorization),
        Arc::clone(&state.resolved),
    );
    let router = Router::new()
        .route(
            "/api/models/org/repo/revision/{revision}",
            axum::routing::get(revision),
        )
        .route(
            "/api/models/org/repo/tree/{revision}",
            axum::routing::get(listing),
        )
        .route(
            "/org/repo/resolve/{revision}/{*path}",
            axum::routing::get(resolve),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    FakeHub {
        url,
        authorization,
        resolved,
    }
}

fn record(state: &HubState, headers: &HeaderMap) {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        state.authorization.lock().unwrap().push(auth.to_owned());
    }
}

async fn revision(
    State(state): State<HubState>,
    Path(revision): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&state, &headers);
    if revision != "main" && revision != COMMIT {
        return StatusCode::NOT_FOUND.into_response();
    }
    let body = serde_json::json!({"id": "org/repo", "sha": COMMIT}).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn listing(
    State(state): State<HubState>,
    Path(revision): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&state, &headers);
    if revision != COMMIT {
        return StatusCode::NOT_FOUND.into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.listing.as_str().to_owned(),
    )
        .into_response()
}

async fn resolve(
    State(state): State<HubState>,
    Path((revision, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    record(&state, &headers);
    if revision != COMMIT {
        return StatusCode::NOT_FOUND.into_response();
    }
    state.resolved.lock().unwrap().push(path.clone());
    (
        StatusCode::FOUND,
        [(header::LOCATION, format!("{}/{path}", state.cdn))],
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hub_for(fake: &FakeHub) -> Hub {
    Hub::new(fake.url.clone()).with_token("hf_secret")
}

fn node_with(dir: &tempfile::TempDir, hub: Hub) -> p2pmodel_node::Node {
    NodeBuilder::new(dir.path().join("store"))
        .hub(hub)
        .spawn()
        .unwrap()
}

fn node(dir: &tempfile::TempDir, fake: &FakeHub) -> p2pmodel_node::Node {
    node_with(dir, hub_for(fake))
}

async fn fetch(node: &p2pmodel_node::Node, name: HfRef) -> Result<Fetched, NodeError> {
    node.fetch(FetchRequest::hf(name)).unwrap().await
}

fn parse(name: &str) -> HfRef {
    name.parse().unwrap()
}

/// The paths of a fetched model's files.
fn paths(fetched: &Fetched) -> BTreeSet<String> {
    match fetched {
        Fetched::Model { manifest, .. } => {
            manifest.files().iter().map(|f| f.path.clone()).collect()
        }
        other => panic!("expected a model, got {other:?}"),
    }
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| (*p).to_owned()).collect()
}

fn fetch_error(result: Result<Fetched, NodeError>) -> String {
    match result {
        Err(NodeError::Fetch(error)) => error.to_string(),
        other => panic!("expected a fetch error, got {other:?}"),
    }
}

/// The usual GGUF repository: a README, a config and three quantizations.
fn quantized_repo() -> Vec<RepoFile> {
    vec![
        small("README.md", 1),
        small("config.json", 2),
        lfs("model-F16.gguf", 96 << 10, 3),
        lfs("model.Q8_0.gguf", 64 << 10, 4),
        lfs("model-q5_k_m.gguf", 48 << 10, 5),
    ]
}

#[tokio::test]
async fn a_whole_repository_becomes_a_model_and_the_token_stays_with_the_hub() {
    let cdn = TestMirror::start().await;
    let files = [
        small("config.json", 1),
        lfs("weights/model.safetensors", 3 << 20, 2),
    ];
    let hub = fake_hub(&cdn, &files).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let out = dir.path().join("out");
    let fetched = node
        .fetch(FetchRequest::hf(parse("hf://org/repo")).with_output(&out))
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(fetched, Fetched::Model { .. }));
    for file in &files {
        assert_eq!(std::fs::read(out.join(file.path)).unwrap(), file.data);
    }
    assert!(
        hub.authorization
            .lock()
            .unwrap()
            .iter()
            .all(|auth| auth == "Bearer hf_secret")
    );
    assert!(
        !hub.authorization.lock().unwrap().is_empty(),
        "the Hub got the token"
    );
    assert!(
        cdn.authorization_headers().is_empty(),
        "the CDN got {:?}",
        cdn.authorization_headers()
    );
    // The SHA-256 of each LFS file is now an alias of its BLAKE3.
    let sha = p2pmodel_protocol::Sha256(sha2::Sha256::digest(&files[1].data).into());
    assert_eq!(
        node.store().alias(sha).unwrap(),
        Some(Hash::of(&files[1].data))
    );
}

#[tokio::test]
async fn a_file_whose_sha256_does_not_match_is_refused() {
    let cdn = TestMirror::start().await;
    let mut file = lfs("model.gguf", 1 << 20, 3);
    file.wrong_sha = Some("ab".repeat(32));
    let data = file.data.clone();
    let hub = fake_hub(&cdn, &[file]).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let error = fetch_error(fetch(&node, parse("hf://org/repo/model.gguf")).await);
    assert!(error.contains("SHA-256"), "{error}");
    assert!(
        !node.store().has(Hash::of(&data)).unwrap(),
        "nothing was published"
    );
}

#[tokio::test]
async fn a_single_file_known_by_its_sha256_is_not_downloaded_again() {
    let cdn = TestMirror::start().await;
    let files = [lfs("weights/model.gguf", 1 << 20, 4)];
    let hub = fake_hub(&cdn, &files).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let name = parse("hf://org/repo/weights/model.gguf");
    let first = fetch(&node, name.clone()).await.unwrap();
    assert!(matches!(first, Fetched::Blob { .. }));
    assert_eq!(first.hash(), Hash::of(&files[0].data));
    let before = cdn.requests();
    let again = fetch(&node, name).await.unwrap();
    assert_eq!(again.hash(), first.hash());
    assert_eq!(cdn.requests(), before, "the CDN was not asked again");
}

#[tokio::test]
async fn a_named_quantization_is_taken_with_the_other_files_of_the_repository() {
    let cdn = TestMirror::start().await;
    let hub = fake_hub(&cdn, &quantized_repo()).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let fetched = fetch(&node, parse("hf://org/repo:q8_0")).await.unwrap();
    let expected = set(&["README.md", "config.json", "model.Q8_0.gguf"]);
    assert_eq!(paths(&fetched), expected);
    assert_eq!(
        hub.resolved().into_iter().collect::<BTreeSet<_>>(),
        expected
    );
}

#[tokio::test]
async fn an_absent_quantization_is_refused_listing_the_available_ones() {
    let cdn = TestMirror::start().await;
    let hub = fake_hub(&cdn, &quantized_repo()).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let name = parse("hf://org/repo").with_quant("Q4_K_M".parse().unwrap());
    let error = fetch_error(fetch(&node, name).await);
    assert!(
        error.contains("there is no Q4_K_M quantization; available: Q5_K_M, Q8_0, F16"),
        "{error}"
    );
    assert!(hub.resolved().is_empty(), "nothing was downloaded");
}

#[tokio::test]
async fn without_a_name_the_preferred_quantization_is_taken() {
    let cdn = TestMirror::start().await;
    let hub = fake_hub(&cdn, &quantized_repo()).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let fetched = fetch(&node, parse("hf://org/repo")).await.unwrap();
    assert_eq!(
        paths(&fetched),
        set(&["README.md", "config.json", "model-q5_k_m.gguf"])
    );
}

#[tokio::test]
async fn a_single_quantization_is_taken_even_outside_the_preference_order() {
    let cdn = TestMirror::start().await;
    let files = [
        small("config.json", 1),
        lfs("model-TQ1_0.gguf", 32 << 10, 2),
    ];
    let hub = fake_hub(&cdn, &files).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let fetched = fetch(&node, parse("hf://org/repo")).await.unwrap();
    assert_eq!(paths(&fetched), set(&["config.json", "model-TQ1_0.gguf"]));
}

/// Three shards of Q4_K_M beside a whole Q8_0 file.
fn sharded_repo() -> Vec<RepoFile> {
    vec![
        small("config.json", 1),
        lfs("Q4_K_M/model-Q4_K_M-00001-of-00003.gguf", 64 << 10, 2),
        lfs("Q4_K_M/model-Q4_K_M-00002-of-00003.gguf", 64 << 10, 3),
        lfs("Q4_K_M/model-Q4_K_M-00003-of-00003.gguf", 16 << 10, 4),
        lfs("model-Q8_0.gguf", 128 << 10, 5),
    ]
}

#[tokio::test]
async fn the_shards_of_the_chosen_quantization_arrive_as_one_model() {
    let cdn = TestMirror::start().await;
    let files = sharded_repo();
    let hub = fake_hub(&cdn, &files).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let out = dir.path().join("out");
    let fetched = node
        .fetch(FetchRequest::hf(parse("hf://org/repo")).with_output(&out))
        .unwrap()
        .await
        .unwrap();
    let expected: BTreeSet<String> = files[..4].iter().map(|f| f.path.to_owned()).collect();
    assert_eq!(paths(&fetched), expected);
    for file in &files[..4] {
        assert_eq!(std::fs::read(out.join(file.path)).unwrap(), file.data);
    }
    assert!(!out.join("model-Q8_0.gguf").exists());
}

#[tokio::test]
async fn a_missing_shard_is_named_and_nothing_is_downloaded() {
    let cdn = TestMirror::start().await;
    let mut files = sharded_repo();
    files.remove(2);
    let hub = fake_hub(&cdn, &files).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let error = fetch_error(fetch(&node, parse("hf://org/repo:Q4_K_M")).await);
    assert!(
        error.contains("shard \"Q4_K_M/model-Q4_K_M-00002-of-00003.gguf\" is missing"),
        "{error}"
    );
    assert!(hub.resolved().is_empty(), "nothing was downloaded");
}

#[tokio::test]
async fn a_bad_shard_fails_its_whole_group() {
    let cdn = TestMirror::start().await;
    let mut files = sharded_repo();
    files[2].wrong_sha = Some("cd".repeat(32));
    let hub = fake_hub(&cdn, &files).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let error = fetch_error(fetch(&node, parse("hf://org/repo")).await);
    assert!(error.contains("SHA-256"), "{error}");
    assert!(
        !hub.resolved().contains(&files[3].path.to_owned()),
        "the shard after the bad one was not fetched: {:?}",
        hub.resolved()
    );
}

#[tokio::test]
async fn include_globs_narrow_the_files_and_a_glob_matching_nothing_is_refused() {
    let cdn = TestMirror::start().await;
    let hub = fake_hub(&cdn, &quantized_repo()).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let name = parse("hf://org/repo")
        .with_include("*.JSON")
        .with_include("*f16*");
    let fetched = fetch(&node, name).await.unwrap();
    assert_eq!(paths(&fetched), set(&["config.json", "model-F16.gguf"]));
    let error =
        fetch_error(fetch(&node, parse("hf://org/repo").with_include("*.safetensors")).await);
    assert!(
        error.contains("no file matches --include *.safetensors; the files are: README.md"),
        "{error}"
    );
}

/// The names in `dir` that an export left behind while staging.
fn staging_leftovers(dir: &FsPath) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(".p2pmodel-") {
            found.push(name);
        }
        if entry.file_type().unwrap().is_dir() {
            found.extend(staging_leftovers(&entry.path()));
        }
    }
    found
}

#[tokio::test]
async fn a_snapshot_is_exported_into_the_hugging_face_cache_layout_again_and_again() {
    let cdn = TestMirror::start().await;
    let files = [
        small("config.json", 1),
        lfs("gguf/model-Q4_K_M.gguf", 256 << 10, 2),
    ];
    let hub = fake_hub(&cdn, &files).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hf-cache");
    let node = node_with(&dir, hub_for(&hub).with_cache(&cache));
    let repo = cache.join("models--org--repo");
    for round in 0..2 {
        fetch(&node, parse("hf://org/repo")).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(repo.join("refs/main")).unwrap(),
            COMMIT,
            "round {round}"
        );
        let snapshot = repo.join("snapshots").join(COMMIT);
        for (file, up) in files.iter().zip(["../../", "../../../"]) {
            let link = snapshot.join(file.path);
            let target = std::fs::read_link(&link).unwrap();
            assert_eq!(
                target,
                FsPath::new(&format!("{up}blobs/{}", file.etag())),
                "a relative link"
            );
            assert_eq!(std::fs::read(&link).unwrap(), file.data, "round {round}");
            let blob = repo.join("blobs").join(file.etag());
            assert!(
                std::fs::symlink_metadata(&blob).unwrap().is_file(),
                "the blob is a file, not a link into the store"
            );
            assert_eq!(std::fs::read(&blob).unwrap(), file.data);
        }
        assert!(staging_leftovers(&cache).is_empty());
    }
    let blobs: Vec<_> = std::fs::read_dir(repo.join("blobs")).unwrap().collect();
    assert_eq!(blobs.len(), files.len(), "one blob per file");
}
