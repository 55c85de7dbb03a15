//! `hf://` names against a fake Hub (the tree and resolve APIs) that
//! redirects downloads to a second server standing in for the CDN.

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

struct FakeHub {
    url: Url,
    authorization: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct HubState {
    listing: Arc<String>,
    cdn: String,
    authorization: Arc<Mutex<Vec<String>>>,
}

/// Serves `files` as `org/repo@main`: LFS entries carry `sha256` (the
/// real digest unless overridden), downloads redirect to `cdn`.
async fn fake_hub(cdn: &TestMirror, files: &[(&str, Vec<u8>, Option<String>)]) -> FakeHub {
    let mut entries = Vec::new();
    for (path, data, sha_override) in files {
        cdn.put(path, data);
        let sha = sha_override
            .clone()
            .unwrap_or_else(|| hex(&sha2::Sha256::digest(data)));
        entries.push(serde_json::json!({
            "type": "file", "path": path, "size": data.len(), "oid": "0000",
            "lfs": {"oid": sha, "size": data.len(), "pointerSize": 134},
        }));
    }
    entries.push(serde_json::json!({"type": "directory", "path": "weights", "oid": "1111"}));
    let state = HubState {
        listing: Arc::new(serde_json::to_string(&entries).unwrap()),
        cdn: cdn.base(),
        authorization: Arc::default(),
    };
    let authorization = Arc::clone(&state.authorization);
    let router = Router::new()
        .route(
            "/api/models/org/repo/tree/main",
            axum::routing::get(listing),
        )
        .route(
            "/org/repo/resolve/main/{*path}",
            axum::routing::get(resolve),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    FakeHub { url, authorization }
}

fn record(state: &HubState, headers: &HeaderMap) {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        state.authorization.lock().unwrap().push(auth.to_owned());
    }
}

async fn listing(State(state): State<HubState>, headers: HeaderMap) -> Response {
    record(&state, &headers);
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.listing.as_str().to_owned(),
    )
        .into_response()
}

async fn resolve(
    State(state): State<HubState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&state, &headers);
    (
        StatusCode::FOUND,
        [(header::LOCATION, format!("{}/{path}", state.cdn))],
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn node(dir: &tempfile::TempDir, hub: &FakeHub) -> p2pmodel_node::Node {
    let hub = Hub {
        endpoint: hub.url.clone(),
        token: Some("hf_secret".into()),
    };
    NodeBuilder::new(dir.path().join("store"))
        .hub(hub)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_whole_repository_becomes_a_model_and_the_token_stays_with_the_hub() {
    let cdn = TestMirror::start().await;
    let files = [
        ("config.json", generate(300, 1), None),
        ("weights/model.gguf", generate(3 << 20, 2), None),
    ];
    let hub = fake_hub(&cdn, &files).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let out = dir.path().join("out");
    let name: HfRef = "hf://org/repo".parse().unwrap();
    let fetched = node
        .fetch(FetchRequest::hf(name).with_output(&out))
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(fetched, Fetched::Model { .. }));
    for (path, data, _) in &files {
        assert_eq!(&std::fs::read(out.join(path)).unwrap(), data);
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
    let sha = p2pmodel_protocol::Sha256(sha2::Sha256::digest(&files[1].1).into());
    assert_eq!(
        node.store().alias(sha).unwrap(),
        Some(Hash::of(&files[1].1))
    );
}

#[tokio::test]
async fn a_file_whose_sha256_does_not_match_is_refused() {
    let cdn = TestMirror::start().await;
    let files = [("model.gguf", generate(1 << 20, 3), Some("ab".repeat(32)))];
    let hub = fake_hub(&cdn, &files).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let name: HfRef = "hf://org/repo/model.gguf".parse().unwrap();
    match node.fetch(FetchRequest::hf(name)).unwrap().await {
        Err(NodeError::Fetch(error)) => assert!(error.to_string().contains("SHA-256"), "{error}"),
        other => panic!("expected a SHA-256 mismatch, got {other:?}"),
    }
    assert!(
        !node.store().has(Hash::of(&files[0].1)).unwrap(),
        "nothing was published"
    );
}

#[tokio::test]
async fn a_single_file_known_by_its_sha256_is_not_downloaded_again() {
    let cdn = TestMirror::start().await;
    let files = [("weights/model.gguf", generate(1 << 20, 4), None)];
    let hub = fake_hub(&cdn, &files).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, &hub);
    let name: HfRef = "hf://org/repo/weights/model.gguf".parse().unwrap();
    let first = node
        .fetch(FetchRequest::hf(name.clone()))
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(first, Fetched::Blob { .. }));
    assert_eq!(first.hash(), Hash::of(&files[0].1));
    let before = cdn.requests();
    let again = node.fetch(FetchRequest::hf(name)).unwrap().await.unwrap();
    assert_eq!(again.hash(), first.hash());
    assert_eq!(cdn.requests(), before, "the CDN was not asked again");
}
