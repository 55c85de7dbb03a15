//! `p2pmodel demo`: the whole path on one machine, with no outside network.
//!
//! 1. Generates a small model (a config, a tokenizer, two weight shards).
//! 2. Adds it to a seed store and publishes it into a mirror folder.
//! 3. Serves that folder on 127.0.0.1, paced so the transfer is visible.
//! 4. Fetches the model by its hash into a fresh store with a progress bar,
//!    interrupts the fetch at about 40% as Ctrl+C would, then fetches again:
//!    only the missing chunks move.
//! 5. Exports the model, checks every file's BLAKE3, and verifies the store.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use p2pmodel_node::mirror::server::{self, ServeOptions};
use p2pmodel_node::{FetchRequest, Fetched, Node, NodeBuilder, NodeError, Progress};
use p2pmodel_protocol::{Hash, Manifest, ManifestEntry};
use p2pmodel_store::Store;
use url::Url;

use super::human_bytes;
use crate::progress::{self, Display};

/// How long the first, interrupted run should take before its pause.
const TARGET_SECONDS: f64 = 8.0;

pub async fn run(size_mib: u64, keep: bool) -> anyhow::Result<ExitCode> {
    ensure!(size_mib >= 1, "--size-mib must be at least 1");
    let work = tempfile::Builder::new()
        .prefix("p2pmodel-demo-")
        .tempdir()
        .context("creating a work folder")?;
    let root = work.path().to_path_buf();
    say(&format!("work folder: {}", root.display()));

    let model_dir = root.join("generated-model");
    let files = generate_model(&model_dir, size_mib << 20)?;
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    say(&format!(
        "generated a {} model of {} files",
        human_bytes(total),
        files.len()
    ));

    let model = publish(&root, &model_dir, &files)?;
    say(&format!("model hash: {model}"));

    let mirror_dir = root.join("mirror");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the demo mirror")?;
    let addr = listener.local_addr()?;
    // The two shards carry the bytes, four requests each at once; pace them so
    // the whole model takes about TARGET_SECONDS.
    let rate = ((total as f64 / TARGET_SECONDS / 8.0) as u64).max(256 << 10);
    let options = ServeOptions::default().with_rate(Some(rate));
    let server = server::spawn(listener, server::router_with(&mirror_dir, options));
    let manifest_url: Url = format!("http://{addr}/{}", p2pmodel_store::MIRROR_MANIFEST).parse()?;
    say(&format!("local mirror: {manifest_url}"));

    let node = NodeBuilder::new(root.join("client-store")).spawn()?;
    let display = Display::choose(false);

    say("fetch 1: starts, and is interrupted at about 40% (as Ctrl+C would)");
    let (first, outcome) =
        fetch_once(&node, model, &manifest_url, display, Some(total * 2 / 5)).await?;
    ensure!(
        matches!(outcome, Err(NodeError::Cancelled)),
        "the first fetch was meant to be interrupted"
    );
    say(&format!(
        "  paused with {} of {} verified and kept",
        human_bytes(first.done),
        human_bytes(first.total)
    ));

    say("fetch 2: the same command again resumes");
    let started = Instant::now();
    let (second, outcome) = fetch_once(&node, model, &manifest_url, display, None).await?;
    outcome.context("the resumed fetch failed")?;
    say(&format!(
        "  done in {:.1} s: {} resumed from disk, {} moved over the network",
        started.elapsed().as_secs_f64(),
        human_bytes(second.resumed),
        human_bytes(second.done - second.resumed)
    ));
    server.abort();

    let store = node.store().clone();
    let out = root.join("fetched-model");
    store.export_model(model, &out)?;
    for (path, _) in &files {
        let expected = hash_file(&model_dir.join(path))?;
        let got = hash_file(&out.join(path))?;
        ensure!(
            expected == got,
            "{path}: fetched copy hashes to {got}, expected {expected}"
        );
        say(&format!("  {got}  {path}"));
    }
    let report = store.verify()?;
    ensure!(
        report.is_clean(),
        "the client store did not verify: {report:?}"
    );
    say("every file matches its BLAKE3 hash (check with b3sum); the store verifies clean");
    if keep {
        say(&format!("kept {}", work.keep().display()));
    }
    Ok(ExitCode::SUCCESS)
}

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}

/// Writes the model's files; returns their relative paths and sizes.
fn generate_model(dir: &Path, weights: u64) -> anyhow::Result<Vec<(String, u64)>> {
    let config = br#"{"architecture": "demo", "layers": 2, "hidden": 64}"#;
    let files = [
        ("config.json".to_owned(), config.len() as u64),
        ("tokenizer.json".to_owned(), 1 << 20),
        ("model-00001-of-00002.safetensors".to_owned(), weights / 2),
        (
            "model-00002-of-00002.safetensors".to_owned(),
            weights - weights / 2,
        ),
    ];
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(&files[0].0), config)?;
    for (seed, (name, size)) in files.iter().enumerate().skip(1) {
        let mut writer = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&(seed as u64).to_le_bytes());
        let mut xof = hasher.finalize_xof();
        let mut block = vec![0u8; 1 << 20];
        let mut left = *size;
        while left > 0 {
            let n = block.len().min(left as usize);
            xof.fill(&mut block[..n]);
            writer.write_all(&block[..n])?;
            left -= n as u64;
        }
        writer.flush()?;
    }
    Ok(files.into_iter().collect())
}

/// Adds the files to a seed store, describes them in a manifest and
/// writes the mirror folder; returns the model's hash.
fn publish(root: &Path, model_dir: &Path, files: &[(String, u64)]) -> anyhow::Result<Hash> {
    let seed = Store::open(root.join("seed-store"))?;
    let mut entries = Vec::new();
    for (path, size) in files {
        let hash = seed.import_file(&model_dir.join(path))?;
        entries.push(ManifestEntry {
            path: path.clone(),
            size: *size,
            hash,
            sha256: None,
            mirrors: Vec::new(),
        });
    }
    let model = seed.put_manifest(&Manifest::new(entries)?)?;
    seed.export_mirror(model, &root.join("mirror"))?;
    Ok(model)
}

/// One fetch by the client node; with `pause_at`, the request is
/// cancelled (a pause) once that many bytes are present.
async fn fetch_once(
    node: &Node,
    model: Hash,
    url: &Url,
    display: Display,
    pause_at: Option<u64>,
) -> anyhow::Result<(Progress, Result<Fetched, NodeError>)> {
    let handle = node.fetch(FetchRequest::hash(model).with_mirror(url.clone()))?;
    let progress = handle.progress();
    let shown = tokio::spawn(progress::show(display, model.short(), progress.clone()));
    let watcher = pause_at.map(|bytes| {
        let (mut updates, node, id) = (progress.clone(), node.clone(), handle.id());
        tokio::spawn(async move {
            if updates.wait_for(|now| now.done >= bytes).await.is_ok() {
                // The fetch may have finished first; then there is nothing to pause.
                let _ = node.cancel(id);
            }
        })
    });
    let outcome = tokio::select! {
        outcome = handle => outcome,
        () = tokio::time::sleep(Duration::from_secs(600)) => anyhow::bail!("the demo fetch took over 10 minutes"),
    };
    shown.abort();
    let _ = shown.await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let snapshot = progress.borrow().clone();
    Ok((snapshot, outcome))
}

fn hash_file(path: &Path) -> anyhow::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    Ok(hasher.finalize().into())
}
