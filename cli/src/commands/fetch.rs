//! `p2pmodel fetch HASH [--mirror URL] [--peer ADDR]` and `p2pmodel fetch
//! URL`, run by an in-process [`Node`](p2pmodel_node::Node). With `--peer`,
//! `--listen`, `--mdns` or `--bootstrap` the node joins the swarm: it
//! fetches from every connected peer (and, with `--bootstrap`, every
//! provider the DHT names) and mirror at once and serves what it has
//! verified meanwhile.
//!
//! Ctrl+C pauses: the request is cancelled, the node commits what was
//! verified, a one-line message says so, and the exit status is 130. The
//! same command later resumes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use p2pmodel_node::download::DownloadConfig;
use p2pmodel_node::hf::{HfRef, Hub, Quant, cache};
use p2pmodel_node::swarm::{SwarmConfig, dht};
use p2pmodel_node::{FetchRequest, Fetched, FetcherConfig, NodeBuilder, NodeError};
use p2pmodel_protocol::Sha256;
use url::Url;

use super::{human_bytes, parse_hash, parse_size};
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
    let mut builder = NodeBuilder::new(&store_dir).fetcher_config(config);
    let joins = !args.peers.is_empty() || !args.listen.is_empty() || !args.bootstrap.is_empty();
    if joins || args.mdns {
        let config = swarm_config(
            &args.listen,
            args.upload_limit.as_deref(),
            args.mdns,
            &args.bootstrap,
        )?;
        builder = builder.swarm(config);
    }
    if let Some(dir) = hf_cache(&args)? {
        builder = builder.hub(Hub::from_env()?.with_cache(dir));
    }
    let node = builder
        .spawn()
        .with_context(|| format!("starting a node on the store at {}", store_dir.display()))?;
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

/// The node request for the typed arguments, a label for the progress
/// bar, and whether the result is announced by its hash (a URL) rather
/// than its path.
fn request(args: &FetchArgs) -> anyhow::Result<(FetchRequest, String, bool)> {
    let mirrors = args
        .mirrors
        .iter()
        .map(|text| http_url(text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let is_hf = args.target.starts_with("hf://");
    if !is_hf && (args.quant.is_some() || !args.include.is_empty() || args.hf_cache.is_some()) {
        bail!("--quant, --include and --hf-cache go with hf:// names");
    }
    let (mut request, label, prints_hash) = if is_hf {
        if !mirrors.is_empty() || args.sha256.is_some() {
            bail!("--mirror and --sha256 do not go with hf:// names (the Hub lists both)");
        }
        let name = hf_name(args)?;
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
    if !args.peers.is_empty() {
        if parse_hash(&args.target).is_err() {
            bail!("--peer goes with a blob or model hash");
        }
        request = request.with_peers(multiaddrs(&args.peers)?);
    }
    if let Some(output) = &args.output {
        request = request.with_output(output);
    }
    Ok((request, label, prints_hash))
}

/// The swarm settings typed: where to listen, how fast to upload, which
/// peers to join the DHT through (each must name its peer id).
pub fn swarm_config(
    listen: &[String],
    upload_limit: Option<&str>,
    mdns: bool,
    bootstrap: &[String],
) -> anyhow::Result<SwarmConfig> {
    let bootstrap = multiaddrs(bootstrap)?;
    // Checked before the store is opened, to name the flag.
    dht::bootstrap_peers(&bootstrap).context("--bootstrap")?;
    let mut config = SwarmConfig::listen(multiaddrs(listen)?)
        .with_mdns(mdns)
        .with_bootstrap(bootstrap);
    if let Some(limit) = upload_limit {
        config = config.with_upload_limit(parse_size(limit).context("--upload-limit")?);
    }
    Ok(config)
}

/// Parses multiaddrs as typed.
pub fn multiaddrs(texts: &[String]) -> anyhow::Result<Vec<libp2p::Multiaddr>> {
    texts
        .iter()
        .map(|text| {
            text.parse()
                .with_context(|| format!("{text:?} is not a multiaddr"))
        })
        .collect()
}

/// The hf:// name with `--quant` and `--include` applied.
fn hf_name(args: &FetchArgs) -> anyhow::Result<HfRef> {
    let mut name: HfRef = args.target.parse()?;
    if let Some(text) = &args.quant {
        let quant: Quant = text.parse()?;
        if name.quant.as_ref().is_some_and(|named| *named != quant) {
            bail!(
                "{} names one quantization and --quant {text} another",
                args.target
            );
        }
        name = name.with_quant(quant);
    }
    for glob in &args.include {
        name = name.with_include(glob);
    }
    Ok(name)
}

/// The Hugging Face cache folder to export into, if `--hf-cache` was given.
fn hf_cache(args: &FetchArgs) -> anyhow::Result<Option<PathBuf>> {
    match &args.hf_cache {
        None => Ok(None),
        Some(Some(dir)) => Ok(Some(dir.clone())),
        Some(None) => cache::default_dir()
            .map(Some)
            .context("no Hugging Face cache folder: HOME is not set; pass --hf-cache=DIR"),
    }
}

fn http_url(text: &str) -> anyhow::Result<Url> {
    let url = Url::parse(text).with_context(|| format!("{text:?} is not a URL"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("{text:?} is not an http:// or https:// URL");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn fetch_args(line: &[&str]) -> FetchArgs {
        let cli = Cli::try_parse_from([&["p2pmodel", "fetch"], line].concat()).unwrap();
        match cli.command {
            Command::Fetch(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn quant_and_include_options_refine_the_name() {
        let args = fetch_args(&["hf://org/repo", "--quant", "q8_0", "--include", "*.json"]);
        let name = hf_name(&args).unwrap();
        assert_eq!(name.quant.map(|q| q.to_string()).as_deref(), Some("Q8_0"));
        assert_eq!(name.include, ["*.json"]);
        let same = fetch_args(&["hf://org/repo:Q8_0", "--quant", "Q8_0"]);
        assert!(hf_name(&same).is_ok());
        let clash = fetch_args(&["hf://org/repo:Q8_0", "--quant", "Q4_K_M"]);
        assert!(hf_name(&clash).is_err());
    }

    #[test]
    fn the_hf_cache_folder_is_given_after_an_equals_sign_or_defaulted() {
        let given = fetch_args(&["hf://org/repo", "--hf-cache=/c"]);
        assert_eq!(hf_cache(&given).unwrap(), Some(PathBuf::from("/c")));
        let bare = fetch_args(&["--hf-cache", "hf://org/repo"]);
        assert_eq!(bare.target, "hf://org/repo");
        assert_eq!(bare.hf_cache, Some(None));
        assert_eq!(hf_cache(&fetch_args(&["hf://org/repo"])).unwrap(), None);
    }

    #[test]
    fn hugging_face_options_need_an_hf_name() {
        for line in [
            &["0".repeat(64).as_str(), "--quant", "Q8_0"][..],
            &["https://h/x", "--include", "*"],
            &["https://h/x", "--hf-cache"],
        ] {
            assert!(request(&fetch_args(line)).is_err(), "{line:?} accepted");
        }
    }
}
