//! One module per command; each takes its arguments and the store folder
//! and returns the process's exit code.

mod add;
mod client;
mod control;
mod daemon;
mod demo;
mod fetch;
mod jobs;
mod serve;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use p2pmodel_protocol::Hash;
use p2pmodel_store::Store;

use crate::args::{Cli, Command};

/// Runs the command the user typed.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let flag = cli.store.clone();
    let open = move || open_store(flag);
    match cli.command {
        Command::Add { path } => add::run(open()?, &path),
        Command::Fetch(args) => fetch::run(store_dir(cli.store)?, args).await,
        Command::Export { hash, output } => store::export(open()?, &hash, &output),
        Command::List { json } => store::list(open()?, json),
        Command::Remove { hash } => store::remove(open()?, &hash),
        Command::Gc { older_than } => store::gc(open()?, &older_than),
        Command::Verify => store::verify(open()?),
        Command::Publish { hash, dir } => store::publish(open()?, &hash, &dir),
        Command::ServeMirror { dir, listen, rate } => {
            serve::run(&dir, &listen, rate.as_deref()).await
        }
        Command::Daemon {
            listen,
            upload_limit,
            no_mdns,
            bootstrap,
            control,
        } => {
            daemon::run(
                store_dir(cli.store)?,
                &listen,
                upload_limit.as_deref(),
                !no_mdns,
                &bootstrap,
                &control,
            )
            .await
        }
        Command::Demo { size_mib, keep } => demo::run(size_mib, keep).await,
        Command::Jobs(command) => jobs::run(&store_dir(cli.store)?, command).await,
    }
}

/// The store folder: `--store`, `$P2PMODEL_STORE`, or the platform's data folder.
fn store_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    directories::ProjectDirs::from("", "", "p2pmodel")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .context("no home folder to put the store in; pass --store DIR or set P2PMODEL_STORE")
}

fn open_store(flag: Option<PathBuf>) -> anyhow::Result<Store> {
    let dir = store_dir(flag)?;
    Store::open(&dir).with_context(|| format!("opening the store at {}", dir.display()))
}

/// Parses a BLAKE3 hash typed by the user.
fn parse_hash(text: &str) -> anyhow::Result<Hash> {
    text.trim()
        .parse()
        .with_context(|| format!("{text:?} is not a BLAKE3 hash"))
}

/// `1536` -> `1.5 KiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses sizes like `50M`, `1.5G`, `4096`, `64K` (powers of 1024).
pub(crate) fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, factor) = match text.char_indices().last() {
        Some((at, 'K' | 'k')) => (&text[..at], 1u64 << 10),
        Some((at, 'M' | 'm')) => (&text[..at], 1 << 20),
        Some((at, 'G' | 'g')) => (&text[..at], 1 << 30),
        _ => (text, 1),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .with_context(|| {
            format!("{text:?} is not a size; use digits with an optional K, M or G, e.g. 50M")
        })?;
    Ok((value * factor as f64) as u64)
}

/// Parses durations like `7d`, `12h`, `30m`, `45s`, `0`.
fn parse_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let text = text.trim();
    let error = || format!("{text:?} is not a duration; use digits with d, h, m or s, e.g. 7d");
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => anyhow::bail!(error()),
    };
    let value: u64 = number.parse().ok().with_context(error)?;
    Ok(std::time::Duration::from_secs(value * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_as_documented() {
        assert_eq!(parse_size("50M").unwrap(), 50 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("fast").is_err());
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 7 * 86_400);
        assert_eq!(parse_duration("0").unwrap().as_secs(), 0);
        assert!(parse_duration("7w").is_err());
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10), "10 B");
    }
}
