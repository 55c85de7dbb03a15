//! Commands that look after the store: export, list, remove, gc, verify,
//! publish.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use p2pmodel_store::{BlobState, Store};

use super::{human_bytes, parse_duration, parse_hash};

pub fn export(store: Store, hash: &str, output: &Path) -> anyhow::Result<ExitCode> {
    let hash = parse_hash(hash)?;
    if store.manifest(hash)?.is_some() {
        for path in store.export_model(hash, output)? {
            println!("{}", path.display());
        }
    } else {
        store
            .export(hash, output)
            .with_context(|| format!("exporting {hash}"))?;
        println!("{}", output.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(store: Store, json: bool) -> anyhow::Result<ExitCode> {
    for info in store.list()? {
        let (state, present) = match info.state {
            BlobState::Complete => ("complete", info.size),
            BlobState::Partial { present } => ("partial", present),
        };
        let kind = if info.is_model { "model" } else { "blob" };
        if json {
            let line = serde_json::json!({
                "hash": info.hash, "size": info.size, "present": present, "state": state, "kind": kind,
            });
            println!("{line}");
        } else {
            let detail = match info.state {
                BlobState::Complete => String::new(),
                BlobState::Partial { present } => format!(" ({} present)", human_bytes(present)),
            };
            println!(
                "{}  {:>10}  {kind:<5}  {state}{detail}",
                info.hash,
                human_bytes(info.size)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn remove(store: Store, hash: &str) -> anyhow::Result<ExitCode> {
    store.remove(parse_hash(hash)?)?;
    Ok(ExitCode::SUCCESS)
}

pub fn gc(store: Store, older_than: &str) -> anyhow::Result<ExitCode> {
    let report = store.gc(parse_duration(older_than)?)?;
    println!(
        "removed {} abandoned partial download(s) and {} stray file(s), freed {}",
        report.partials_removed,
        report.stray_files_removed,
        human_bytes(report.bytes_freed)
    );
    Ok(ExitCode::SUCCESS)
}

/// Exit 0 when everything matched, 1 when something had to be repaired.
pub fn verify(store: Store) -> anyhow::Result<ExitCode> {
    let report = store.verify()?;
    println!("{} complete blob(s) verified", report.blobs_ok);
    for hash in &report.blobs_damaged {
        println!("damaged: {hash} (kept its good chunks; fetch it again to repair)");
    }
    for hash in &report.blobs_missing {
        println!("missing: {hash} (its file was gone; forgotten)");
    }
    println!(
        "{} partial download(s) checked: {} chunk(s) dropped as wrong, {} recovered",
        report.partials_checked, report.chunks_dropped, report.chunks_recovered
    );
    if report.partials_unverifiable > 0 {
        println!(
            "{} partial download(s) without an outboard are checked when they complete",
            report.partials_unverifiable
        );
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn publish(store: Store, hash: &str, dir: &Path) -> anyhow::Result<ExitCode> {
    let hash = parse_hash(hash)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let entry = store
        .export_mirror(hash, dir)
        .with_context(|| format!("publishing {hash}"))?;
    println!("{entry}");
    Ok(ExitCode::SUCCESS)
}
