//! `p2pmodel jobs`, `job`, `cancel`, `retry`, `queue ...`, `suspend`,
//! `resume` and `state`: the daemon's queue and node, through its control
//! API. Each needs a daemon running on the same store.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use p2pmodel_control::{Client, Job, JobId, JobState, Lifecycle, Limits};

use super::human_bytes;
use crate::args::{JobsCommand, QueueCommand};

/// Runs one of the daemon commands.
pub async fn run(store_dir: &Path, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let daemon = super::client::daemon(store_dir).await?.with_context(|| {
        format!(
            "no daemon answers on the store at {} (start one with `p2pmodel daemon`)",
            store_dir.display()
        )
    })?;
    match command {
        JobsCommand::List { json } => list(&daemon, json).await?,
        JobsCommand::Job { id } => {
            let job = daemon.job(&JobId::from(id.as_str())).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobsCommand::Cancel { id, clear } => {
            let job = daemon.cancel(&JobId::from(id.as_str()), clear).await?;
            println!("{} {}", job.id, job.state);
        }
        JobsCommand::Retry { id } => {
            let position = daemon.retry(&JobId::from(id.as_str())).await?;
            println!("{id} queued at position {position}");
        }
        JobsCommand::Queue(command) => queue(&daemon, command).await?,
        JobsCommand::Suspend => println!("{}", daemon.lifecycle(Lifecycle::Suspend).await?),
        JobsCommand::Resume => println!("{}", daemon.lifecycle(Lifecycle::Resume).await?),
        JobsCommand::State => println!("{}", daemon.lifecycle(Lifecycle::State).await?),
    }
    Ok(ExitCode::SUCCESS)
}

async fn queue(daemon: &Client, command: QueueCommand) -> anyhow::Result<()> {
    match command {
        QueueCommand::Move { id, position } => {
            let taken = daemon.reorder(&JobId::from(id.as_str()), position).await?;
            println!("{id} is at position {taken}");
        }
        QueueCommand::Remove { id } => {
            let job = daemon.remove(&JobId::from(id.as_str())).await?;
            println!("{} removed", job.id);
        }
        QueueCommand::ClearFailed => {
            println!("{} failed jobs cleared", daemon.clear_failed().await?)
        }
        QueueCommand::CancelAll => println!("{} jobs paused", daemon.cancel_all().await?),
        QueueCommand::CancelGroup { name } => {
            println!("{} jobs paused", daemon.cancel_group(&name).await?);
        }
        QueueCommand::Start => {
            let counts = daemon.process().await?;
            println!(
                "processing: {} running, {} queued",
                counts.active, counts.pending
            );
        }
        QueueCommand::Counts { json } => {
            let counts = daemon.counts().await?;
            if json {
                println!("{}", serde_json::to_string(&counts)?);
            } else {
                println!(
                    "running {} of at most {}, queued {} of at most {}{}",
                    counts.active,
                    counts.max_concurrent,
                    counts.pending,
                    counts.max_queued,
                    if counts.processing {
                        ""
                    } else {
                        " (not started)"
                    }
                );
            }
        }
        QueueCommand::Limits {
            max_queued,
            max_concurrent,
        } => {
            let counts = daemon
                .set_limits(Limits {
                    max_queued,
                    max_concurrent,
                })
                .await?;
            println!(
                "at most {} running, {} queued",
                counts.max_concurrent, counts.max_queued
            );
        }
    }
    Ok(())
}

async fn list(daemon: &Client, json: bool) -> anyhow::Result<()> {
    let snapshot = daemon.jobs().await?;
    if json {
        println!("{}", serde_json::to_string(&snapshot)?);
        return Ok(());
    }
    let groups = [
        &snapshot.active,
        &snapshot.queued,
        &snapshot.paused,
        &snapshot.failed,
        &snapshot.cancelled,
        &snapshot.completed,
    ];
    for job in groups.into_iter().flatten() {
        println!("{}", line(job));
    }
    Ok(())
}

/// `job-3  running  12.0 MiB/1.0 GiB  HASH  [group]`.
fn line(job: &Job) -> String {
    let progress = match job.state {
        JobState::Failed => job.error.clone().unwrap_or_default(),
        _ if job.progress.total > 0 => format!(
            "{}/{}",
            human_bytes(job.progress.done),
            human_bytes(job.progress.total)
        ),
        _ => "-".into(),
    };
    let group = job
        .spec
        .group
        .as_deref()
        .map(|group| format!("  [{group}]"))
        .unwrap_or_default();
    format!(
        "{:<8} {:<9} {:<22} {}{group}",
        job.id.as_str(),
        job.state.as_str(),
        progress,
        job.spec.target
    )
}
