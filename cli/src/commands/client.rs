//! `p2pmodel fetch` as a client of the daemon running on the same store:
//! the fetch becomes (or joins) one of the daemon's jobs, its progress
//! comes over Server-Sent Events, and Ctrl+C pauses the job on the daemon.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use p2pmodel_control::{Client, JobProgress, JobRequest, JobSpec, JobState, Lifecycle, Target};
use p2pmodel_node::{Phase, Progress};
use tokio::sync::watch;

use super::{human_bytes, parse_hash};
use crate::args::FetchArgs;
use crate::progress::{self, Display};

/// Exit status of an interrupted (paused) fetch, as shells report SIGINT.
const INTERRUPTED: u8 = 130;

/// How long Ctrl+C waits for the daemon to acknowledge the pause.
const PAUSE_ACK: Duration = Duration::from_secs(5);

/// The daemon serving the store folder `store_dir`, if one answers.
///
/// # Errors
/// When its address or token file exists but cannot be used.
pub async fn daemon(store_dir: &Path) -> anyhow::Result<Option<Client>> {
    let Some(client) = Client::for_store(store_dir)? else {
        return Ok(None);
    };
    // Files left by a daemon killed with SIGKILL lead nowhere.
    match tokio::time::timeout(Duration::from_secs(3), client.health()).await {
        Ok(Ok(_)) => Ok(Some(client)),
        _ => Ok(None),
    }
}

/// Runs `fetch` through the daemon: creates or joins the job (smart
/// queue), follows it, and pauses it on Ctrl+C (exit 130).
pub async fn fetch(daemon: &Client, args: &FetchArgs) -> anyhow::Result<ExitCode> {
    let request = job_request(args)?;
    let prints_hash = matches!(request.spec.target, Target::Url { .. });
    let label = label(&request.spec.target);
    let job = daemon
        .create(&request)
        .await
        .context("queueing the fetch on the daemon")?;
    if let Ok(state) = daemon.lifecycle(Lifecycle::State).await
        && state != "active"
    {
        eprintln!(
            "p2pmodel: the daemon is {state}; job {} waits for `p2pmodel resume`",
            job.id
        );
    }
    let display = Display::choose(args.json);
    let (progress, shown_progress) = watch::channel(node_progress(&job.progress));
    let shown = tokio::spawn(progress::show(display, label, shown_progress));
    let mut events = daemon.events(&job.id).await?;
    let mut last = job;
    let outcome = loop {
        tokio::select! {
            next = events.next() => match next? {
                Some(job) => {
                    progress.send_replace(node_progress(&job.progress));
                    last = job;
                }
                None => break None,
            },
            _ = tokio::signal::ctrl_c() => {
                let paused = tokio::time::timeout(PAUSE_ACK, daemon.cancel(&last.id, false)).await;
                break Some(paused);
            }
        }
    };
    shown.abort();
    let _ = shown.await;
    if let Some(paused) = outcome {
        match paused {
            Ok(Ok(job)) => last = job,
            Ok(Err(error)) => eprintln!(
                "p2pmodel: the daemon did not pause job {}: {error}",
                last.id
            ),
            Err(_) => eprintln!(
                "p2pmodel: the daemon did not acknowledge the pause of job {}",
                last.id
            ),
        }
        eprintln!(
            "p2pmodel: paused job {} at {} of {}; run the same command again to resume",
            last.id,
            human_bytes(last.progress.done),
            human_bytes(last.progress.total)
        );
        return Ok(ExitCode::from(INTERRUPTED));
    }
    let last = daemon.job(&last.id).await.unwrap_or(last);
    progress::finish(display, &node_progress(&last.progress));
    match (last.state, &last.result) {
        (JobState::Completed, Some(result)) => {
            if args.json {
                let line =
                    serde_json::json!({"event": "done", "hash": result.hash, "path": result.path});
                println!("{line}");
            } else if prints_hash {
                println!("{}", result.hash);
            } else {
                println!("{}", result.path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        (JobState::Failed, _) => bail!(
            "job {} failed: {}",
            last.id,
            last.error.as_deref().unwrap_or("no reason given")
        ),
        (state, _) => bail!(
            "job {} was {state} on the daemon (by `p2pmodel cancel` or another client); run the same command again to resume",
            last.id
        ),
    }
}

/// The job for the typed arguments: smart, so that the same fetch joins
/// (or resumes) the job already there.
fn job_request(args: &FetchArgs) -> anyhow::Result<JobRequest> {
    let target = if args.target.starts_with("hf://") {
        Target::Hf {
            name: args.target.clone(),
        }
    } else if args.target.starts_with("http://") || args.target.starts_with("https://") {
        Target::Url {
            url: args.target.clone(),
            sha256: args.sha256.clone(),
        }
    } else {
        Target::Hash {
            hash: parse_hash(&args.target)?.to_hex(),
        }
    };
    // The daemon's working folder is not ours.
    let output = args
        .output
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .context("resolving --output")?;
    let request = JobRequest {
        spec: JobSpec {
            target,
            mirrors: args.mirrors.clone(),
            peers: args.peers.clone(),
            output,
            group: None,
        },
        start: true,
        smart: true,
    };
    // Checked here too, so that bad arguments fail the same way with or
    // without a daemon (exit 1 with the reason).
    p2pmodel_control::decode_job_request(&request.encode())?;
    Ok(request)
}

fn label(target: &Target) -> String {
    match target {
        Target::Hash { hash } => hash.chars().take(8).collect(),
        Target::Url { url, .. } => url.rsplit('/').next().unwrap_or("download").to_owned(),
        Target::Hf { name } => name.rsplit('/').next().unwrap_or(name).to_owned(),
    }
}

/// The daemon's progress, as the progress display shows a local one.
fn node_progress(progress: &JobProgress) -> Progress {
    let phase = match progress.phase.as_str() {
        "queued" => Phase::Queued,
        "paused" => Phase::Paused,
        "downloading" => Phase::Downloading,
        "verifying" => Phase::Verifying,
        "complete" => Phase::Complete,
        _ => Phase::Probing,
    };
    Progress {
        phase,
        done: progress.done,
        total: progress.total,
        resumed: progress.resumed,
        bytes_per_second: progress.bytes_per_second,
        sources: Vec::new(),
    }
}
