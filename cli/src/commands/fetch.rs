//! `p2pmodel fetch HASH --mirror URL` and `p2pmodel fetch URL`.
//!
//! Ctrl+C cancels the fetch: what was verified is committed to the store,
//! a one-line message says so, and the exit status is 130. The same
//! command later resumes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use p2pmodel_node::mirror::DownloadConfig;
use p2pmodel_node::{
    CancellationToken, FetchError, Fetched, Fetcher, FetcherConfig, ProgressTracker,
};
use p2pmodel_protocol::Sha256;
use p2pmodel_store::Store;
use url::Url;

use super::{human_bytes, parse_hash};
use crate::args::FetchArgs;
use crate::progress::{self, Display};

/// Exit status of an interrupted (paused) fetch, as shells report SIGINT.
const INTERRUPTED: u8 = 130;

pub async fn run(store: Store, args: FetchArgs) -> anyhow::Result<ExitCode> {
    let target = Target::parse(&args)?;
    let display = Display::choose(args.json);
    let config = FetcherConfig::default()
        .with_download(DownloadConfig::default().with_parallel(args.parallel));
    let fetcher = Fetcher::new(store, config);
    let progress = ProgressTracker::new();
    let cancel = CancellationToken::new();
    let started = std::time::Instant::now();
    let shown = tokio::spawn(progress::show(
        display,
        target.label(),
        progress.subscribe(),
    ));
    let interrupt = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        }
    });
    let result = match &target {
        Target::Hash { hash, mirrors } => fetcher
            .fetch(*hash, mirrors, &progress, cancel)
            .await
            .map(Outcome::Fetched),
        Target::Url { url, sha256 } => fetcher
            .fetch_url(url, *sha256, &progress, cancel)
            .await
            .map(Outcome::Url),
    };
    interrupt.abort();
    shown.abort();
    let _ = shown.await;
    progress::finish(display, &progress.snapshot(), started);
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(FetchError::Cancelled) => {
            let snapshot = progress.snapshot();
            eprintln!(
                "p2pmodel: paused at {} of {}; run the same command again to resume",
                human_bytes(snapshot.done),
                human_bytes(snapshot.total)
            );
            return Ok(ExitCode::from(INTERRUPTED));
        }
        Err(error) => return Err(error.into()),
    };
    let (hash, path) = match outcome {
        Outcome::Url(hash) => {
            let path = match &args.output {
                Some(output) => export(fetcher.store(), hash, output, false)?,
                None => fetcher.store().blob_path(hash),
            };
            (hash, path)
        }
        Outcome::Fetched(fetched) => {
            let is_model = matches!(fetched, Fetched::Model { .. });
            let path = match &args.output {
                Some(output) => export(fetcher.store(), fetched.hash(), output, is_model)?,
                None if is_model => {
                    let dir = fetcher
                        .store()
                        .root()
                        .join("models")
                        .join(fetched.hash().to_hex());
                    export(fetcher.store(), fetched.hash(), &dir, true)?
                }
                None => fetched.path().to_path_buf(),
            };
            (fetched.hash(), path)
        }
    };
    if args.json {
        let line = serde_json::json!({"event": "done", "hash": hash, "path": path});
        println!("{line}");
    } else if matches!(target, Target::Url { .. }) {
        println!("{hash}");
    } else {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

enum Target {
    Hash {
        hash: p2pmodel_protocol::Hash,
        mirrors: Vec<Url>,
    },
    Url {
        url: Url,
        sha256: Option<Sha256>,
    },
}

enum Outcome {
    Fetched(Fetched),
    Url(p2pmodel_protocol::Hash),
}

impl Target {
    fn parse(args: &FetchArgs) -> anyhow::Result<Self> {
        let mirrors = args
            .mirrors
            .iter()
            .map(|text| http_url(text))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if args.target.starts_with("http://") || args.target.starts_with("https://") {
            if !mirrors.is_empty() {
                bail!("--mirror goes with a hash; to fetch a URL, give only the URL");
            }
            let sha256 = match &args.sha256 {
                Some(text) => Some(
                    text.parse::<Sha256>()
                        .with_context(|| format!("--sha256 {text:?}"))?,
                ),
                None => None,
            };
            return Ok(Target::Url {
                url: http_url(&args.target)?,
                sha256,
            });
        }
        if args.sha256.is_some() {
            bail!("--sha256 goes with a URL; a hash already names exact bytes");
        }
        Ok(Target::Hash {
            hash: parse_hash(&args.target)?,
            mirrors,
        })
    }

    fn label(&self) -> String {
        match self {
            Target::Hash { hash, .. } => hash.short(),
            Target::Url { url, .. } => url
                .path_segments()
                .and_then(|mut s| s.next_back())
                .unwrap_or("download")
                .to_owned(),
        }
    }
}

fn http_url(text: &str) -> anyhow::Result<Url> {
    let url = Url::parse(text).with_context(|| format!("{text:?} is not a URL"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("{text:?} is not an http:// or https:// URL");
    }
    Ok(url)
}

/// Exports to `output` (a file for a blob, a folder for a model).
fn export(
    store: &Store,
    hash: p2pmodel_protocol::Hash,
    output: &std::path::Path,
    model: bool,
) -> anyhow::Result<PathBuf> {
    if model {
        store
            .export_model(hash, output)
            .with_context(|| format!("exporting to {}", output.display()))?;
    } else {
        store
            .export(hash, output)
            .with_context(|| format!("exporting to {}", output.display()))?;
    }
    Ok(output.to_path_buf())
}
