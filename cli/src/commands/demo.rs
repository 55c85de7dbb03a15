//! `p2pmodel demo`: the whole path on one machine, with no outside network.
//!
//! 1. Generates a small model (a config, a tokenizer, two weight shards).
//! 2. Adds it to two seed stores and publishes it into a mirror folder.
//! 3. Serves that folder on 127.0.0.1 and starts the two seeds as swarm
//!    nodes on 127.0.0.1 (mDNS off: they are dialed directly), all paced
//!    so the transfer is visible.
//! 4. Fetches the model by its hash into a fresh store from the mirror and
//!    both seeds at once, with a progress bar, interrupts the fetch at
//!    about 40% as Ctrl+C would, then fetches again: only the missing
//!    chunks move. Prints how many bytes each source gave.
//! 5. Exports the model, checks every file's BLAKE3, and verifies the store.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use p2pmodel_node::mirror::server::{self, ServeOptions};
use p2pmodel_node::swarm::{Multiaddr, SwarmConfig};
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

    let model = publish(&root.join("seed-store"), &model_dir, &files)?;
    ensure!(
        publish(&root.join("seed-store-2"), &model_dir, &files)? == model,
        "both seeds name the model alike"
    );
    Store::open(root.join("seed-store"))?.export_mirror(model, &root.join("mirror"))?;
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

    // Each seed uploads about as fast as the mirror serves.
    let seed_rate = (total as f64 / TARGET_SECONDS) as u64;
    let mut seeds = Vec::new();
    for (name, label) in [("seed-store", "seed 1"), ("seed-store-2", "seed 2")] {
        let (seed, addr) = start_seed(&root.join(name), seed_rate).await?;
        say(&format!("{label}: {addr}"));
        seeds.push((seed, addr, label));
    }
    let peers: Vec<Multiaddr> = seeds.iter().map(|(_, addr, _)| addr.clone()).collect();
    let names: Vec<(String, &str)> = seeds
        .iter()
        .map(|(seed, _, label)| {
            let id = seed.swarm().expect("seeds join the swarm").peer_id();
            (format!("peer {id}"), *label)
        })
        .collect();

    let node = NodeBuilder::new(root.join("client-store"))
        .swarm(SwarmConfig::default())
        .spawn()?;
    let display = Display::choose(false);

    say("fetch 1: starts, and is interrupted at about 40% (as Ctrl+C would)");
    let request = FetchRequest::hash(model)
        .with_mirror(manifest_url.clone())
        .with_peers(peers);
    let (first, outcome) = fetch_once(&node, &request, display, Some(total * 2 / 5)).await?;
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
    let (second, outcome) = fetch_once(&node, &request, display, None).await?;
    outcome.context("the resumed fetch failed")?;
    say(&format!(
        "  done in {:.1} s: {} resumed from disk, {} moved over the network:",
        started.elapsed().as_secs_f64(),
        human_bytes(second.resumed),
        human_bytes(second.done - second.resumed)
    ));
    for source in &second.sources {
        let name = names
            .iter()
            .find(|(id, _)| *id == source.source)
            .map_or(source.source.as_str(), |(_, label)| label);
        say(&format!(
            "    {:>10} from {name}",
            human_bytes(source.bytes)
        ));
    }
    server.abort();
    for (seed, _, _) in seeds {
        seed.shutdown().await;
    }

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

/// Adds the files to the seed store at `dir` and describes them in a
/// manifest; returns the model's hash.
fn publish(dir: &Path, model_dir: &Path, files: &[(String, u64)]) -> anyhow::Result<Hash> {
    let seed = Store::open(dir)?;
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
    Ok(seed.put_manifest(&Manifest::new(entries)?)?)
}

/// A seed node on the store at `dir`, serving on 127.0.0.1 at `rate`
/// bytes per second; returns it and its address.
async fn start_seed(dir: &Path, rate: u64) -> anyhow::Result<(Node, Multiaddr)> {
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    let seed = NodeBuilder::new(dir)
        .swarm(SwarmConfig::listen([listen]).with_upload_limit(rate))
        .spawn()?;
    let swarm = seed.swarm().expect("the seed joined the swarm").clone();
    for _ in 0..500 {
        if let Some(addr) = swarm.listen_addrs().await.into_iter().next() {
            return Ok((seed, addr));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("a demo seed did not start listening")
}

/// One fetch by the client node; with `pause_at`, the request is
/// cancelled (a pause) once that many bytes are present.
async fn fetch_once(
    node: &Node,
    request: &FetchRequest,
    display: Display,
    pause_at: Option<u64>,
) -> anyhow::Result<(Progress, Result<Fetched, NodeError>)> {
    let handle = node.fetch(request.clone())?;
    let progress = handle.progress();
    let shown = tokio::spawn(progress::show(display, "model".into(), progress.clone()));
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
