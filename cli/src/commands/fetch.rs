//! `p2pmodel fetch HASH --mirror URL` and `p2pmodel fetch URL`, run by an
//! in-process [`Node`](p2pmodel_node::Node).
//!
//! Ctrl+C pauses: the request is cancelled, the node commits what was
//! verified, a one-line message says so, and the exit status is 130. The
//! same command later resumes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use p2pmodel_node::hf::HfRef;
use p2pmodel_node::mirror::DownloadConfig;
use p2pmodel_node::swarm::{Swarm, getter};
use p2pmodel_node::{
    CancellationToken, FetchError, FetchRequest, Fetched, FetcherConfig, Node, NodeBuilder,
    NodeError, ProgressTracker,
};
use p2pmodel_protocol::{Hash, Sha256};
use url::Url;

use super::{human_bytes, parse_hash};
use crate::args::FetchArgs;
use crate::progress::{self, Display};

/// Exit status of an interrupted (paused) fetch, as shells report SIGINT.
const INTERRUPTED: u8 = 130;

pub async fn run(store_dir: PathBuf, args: FetchArgs) -> anyhow::Result<ExitCode> {
    // A daemon on this store holds it: the fetch becomes one of its jobs.
    if let Some(daemon) = super::client::daemon(&store_dir).await? {
        return super::client::fetch(&daemon, &args).await;
    }
    let (request, label, prints_hash) = request(&args)?;
    let display = Display::choose(args.json);
    let config = FetcherConfig::default()
        .with_download(DownloadConfig::default().with_parallel(args.parallel));
    let node = NodeBuilder::new(&store_dir)
        .fetcher_config(config)
        .spawn()
        .with_context(|| format!("opening the store at {}", store_dir.display()))?;
    if !args.peers.is_empty() {
        let hash = parse_hash(&args.target).context("--peer goes with a blob hash")?;
        match from_peers(&node, hash, &args.peers, display).await? {
            PeerOutcome::Fetched(path) => {
                let path = match &args.output {
                    Some(output) => {
                        node.store().export(hash, output)?;
                        output.clone()
                    }
                    None => path,
                };
                node.shutdown().await;
                println!("{}", path.display());
                return Ok(ExitCode::SUCCESS);
            }
            PeerOutcome::Interrupted => {
                node.shutdown().await;
                eprintln!("p2pmodel: paused; run the same command again to resume");
                return Ok(ExitCode::from(INTERRUPTED));
            }
            PeerOutcome::Failed if args.mirrors.is_empty() => {
                node.shutdown().await;
                bail!("no peer could deliver {hash}, and no mirror was given");
            }
            PeerOutcome::Failed => {}
        }
    }
    let mut handle = node.fetch(request)?;
    let progress = handle.progress();
    let shown = tokio::spawn(progress::show(display, label, progress.clone()));
    let result = tokio::select! {
        result = &mut handle => result,
        _ = tokio::signal::ctrl_c() => {
            node.cancel(handle.id())?;
            handle.await
        }
    };
    // Waits for the transfer to commit what it verified.
    node.shutdown().await;
    shown.abort();
    let _ = shown.await;
    let snapshot = progress.borrow().clone();
    progress::finish(display, &snapshot);
    let fetched = match result {
        Ok(fetched) => fetched,
        Err(NodeError::Cancelled) => {
            eprintln!(
                "p2pmodel: paused at {} of {}; run the same command again to resume",
                human_bytes(snapshot.done),
                human_bytes(snapshot.total)
            );
            return Ok(ExitCode::from(INTERRUPTED));
        }
        Err(error) => return Err(error.into()),
    };
    if args.json {
        let line =
            serde_json::json!({"event": "done", "hash": fetched.hash(), "path": fetched.path()});
        println!("{line}");
    } else if prints_hash {
        println!("{}", fetched.hash());
    } else {
        println!("{}", fetched.path().display());
    }
    if let Fetched::Model { manifest, .. } = &fetched {
        tracing::info!(files = manifest.files().len(), "model fetched");
    }
    Ok(ExitCode::SUCCESS)
}

enum PeerOutcome {
    Fetched(PathBuf),
    Interrupted,
    Failed,
}

/// Tries each peer in turn for the blob `hash`; Ctrl+C pauses.
async fn from_peers(
    node: &Node,
    hash: Hash,
    peers: &[String],
    display: Display,
) -> anyhow::Result<PeerOutcome> {
    let swarm = Swarm::spawn(node.store().clone(), &[])
        .await
        .context("starting the swarm")?;
    let cancel = CancellationToken::new();
    let interrupt = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        }
    });
    let mut outcome = PeerOutcome::Failed;
    for text in peers {
        let addr: libp2p::Multiaddr = text
            .parse()
            .with_context(|| format!("{text:?} is not a multiaddr"))?;
        let peer = match swarm.dial(addr).await {
            Ok(peer) => peer,
            Err(error) => {
                eprintln!("p2pmodel: peer {text}: {error}");
                continue;
            }
        };
        let progress = ProgressTracker::new();
        let shown = tokio::spawn(progress::show(display, hash.short(), progress.subscribe()));
        let result =
            getter::fetch_blob(node.store(), &swarm, peer, hash, &progress, cancel.clone()).await;
        shown.abort();
        let _ = shown.await;
        progress::finish(display, &progress.snapshot());
        match result {
            Ok(path) => {
                outcome = PeerOutcome::Fetched(path);
                break;
            }
            Err(FetchError::Cancelled) => {
                outcome = PeerOutcome::Interrupted;
                break;
            }
            Err(error) => eprintln!("p2pmodel: {error:#}"),
        }
    }
    interrupt.abort();
    Ok(outcome)
}

/// The node request for the typed arguments, a label for the progress
/// bar, and whether the result is announced by its hash (a URL) rather
/// than its path.
fn request(args: &FetchArgs) -> anyhow::Result<(FetchRequest, String, bool)> {
    let mirrors = args
        .mirrors
        .iter()
        .map(|text| http_url(text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (mut request, label, prints_hash) = if args.target.starts_with("hf://") {
        if !mirrors.is_empty() || args.sha256.is_some() {
            bail!("--mirror and --sha256 do not go with hf:// names (the Hub lists both)");
        }
        let name: HfRef = args.target.parse()?;
        let label = name.path.clone().unwrap_or_else(|| name.repo.clone());
        (FetchRequest::hf(name), label, false)
    } else if args.target.starts_with("http://") || args.target.starts_with("https://") {
        if !mirrors.is_empty() {
            bail!("--mirror goes with a hash; to fetch a URL, give only the URL");
        }
        let url = http_url(&args.target)?;
        let label = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or("download")
            .to_owned();
        let mut request = FetchRequest::url(url);
        if let Some(text) = &args.sha256 {
            request = request.with_sha256(
                text.parse::<Sha256>()
                    .with_context(|| format!("--sha256 {text:?}"))?,
            );
        }
        (request, label, true)
    } else {
        if args.sha256.is_some() {
            bail!("--sha256 goes with a URL; a hash already names exact bytes");
        }
        let hash = parse_hash(&args.target)?;
        (
            FetchRequest::hash(hash).with_mirrors(mirrors),
            hash.short(),
            false,
        )
    };
    if let Some(output) = &args.output {
        request = request.with_output(output);
    }
    Ok((request, label, prints_hash))
}

fn http_url(text: &str) -> anyhow::Result<Url> {
    let url = Url::parse(text).with_context(|| format!("{text:?} is not a URL"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("{text:?} is not an http:// or https:// URL");
    }
    Ok(url)
}
