//! `p2pmodel-simnet`: plays scenarios with many real nodes over a
//! simulated network and prints how the swarm did beside the fluid bound
//! and plain HTTP. See the crate docs and BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use p2pmodel_simnet::net::{LinkSpec, megabits};
use p2pmodel_simnet::report::{Summary, svg, table};
use p2pmodel_simnet::run::run;
use p2pmodel_simnet::scenario::{Base, Kind, Scenario};

/// Runs real p2pmodel nodes over a simulated network, in virtual time.
#[derive(Debug, Parser)]
#[command(name = "p2pmodel-simnet", version)]
struct Args {
    /// Scenarios to play, in order.
    #[arg(long = "scenario", value_enum, default_values = ["flash-crowd", "http-only"])]
    scenarios: Vec<Kind>,
    /// Leechers (the seed comes on top).
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// The blob's size in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
    /// Every link's rate, both ways, in Mbit/s.
    #[arg(long, default_value_t = 100.0)]
    mbit: f64,
    /// One-way latency from each host to the core, in milliseconds.
    #[arg(long, default_value_t = 5)]
    latency_ms: u64,
    /// Other leechers each leecher is told to dial.
    #[arg(long, default_value_t = 8)]
    peers_per_node: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// KiB per request to a source (a piece; the node's default when not
    /// given), rounded to 16 KiB chunks.
    #[arg(long)]
    piece_kib: Option<u64>,
    /// Folder for the nodes' stores (a temporary one when not given;
    /// emptied after each scenario either way).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Writes report.json and report.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// In the heterogeneous scenario, the slow leechers serve peers at
    /// most this many Mbit/s (unlimited when not given).
    #[arg(long, value_name = "MBIT")]
    slow_upload_mbit: Option<f64>,
    /// Prints how far the leechers are every this many seconds of
    /// virtual time (to stderr).
    #[arg(long, value_name = "SECONDS")]
    watch: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.nodes > 0, "--nodes must be at least 1");
    anyhow::ensure!(args.size_mib > 0, "--size-mib must be at least 1");
    anyhow::ensure!(
        args.mbit.is_finite() && args.mbit > 0.0,
        "--mbit must be a positive number"
    );
    if let Some(mbit) = args.slow_upload_mbit {
        anyhow::ensure!(
            mbit.is_finite() && mbit > 0.0,
            "--slow-upload-mbit must be a positive number"
        );
    }
    let watch = match args.watch {
        Some(seconds) => {
            anyhow::ensure!(
                seconds.is_finite() && seconds > 0.0,
                "--watch must be a positive number of seconds"
            );
            Some(Duration::from_secs_f64(seconds))
        }
        None => None,
    };
    let base = Base {
        leechers: args.nodes,
        blob_size: args.size_mib << 20,
        link: LinkSpec::symmetric(args.mbit, Duration::from_millis(args.latency_ms)),
        peers_per_node: args.peers_per_node,
        seed: args.seed,
        piece_chunks: args.piece_kib.map(|kib| kib.div_ceil(16).max(1)),
        slow_upload_limit: args.slow_upload_mbit.map(megabits),
    };
    let mut runs = Vec::new();
    let mut summaries = Vec::new();
    for kind in args.scenarios {
        let scenario = Scenario::preset(kind, base);
        let work = match &args.work {
            Some(dir) => tempfile::tempdir_in(dir),
            None => tempfile::tempdir(),
        }
        .context("cannot make a work folder")?;
        eprintln!(
            "{}: {} leechers, {} MiB, {} Mbit/s, bound {:.1} s ...",
            scenario.name,
            scenario.leechers,
            args.size_mib,
            args.mbit,
            scenario.fluid_bound().as_secs_f64()
        );
        let result = run(&scenario, work.path(), watch)
            .with_context(|| format!("scenario {}", scenario.name))?;
        let summary = Summary::of(&result);
        eprint!("{}", table(std::slice::from_ref(&summary)));
        summaries.push(summary);
        runs.push(result);
    }
    println!("{}", table(&summaries));
    if let Some(out) = args.out {
        std::fs::create_dir_all(&out).with_context(|| format!("cannot make {}", out.display()))?;
        let json = serde_json::json!({ "summaries": summaries, "runs": runs });
        std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&json)?)
            .context("cannot write report.json")?;
        std::fs::write(out.join("report.svg"), svg(&runs)).context("cannot write report.svg")?;
        println!("wrote {}/report.json and report.svg", out.display());
    }
    Ok(())
}
