//! `p2pmodel`: the command line face of p2pmodel.
//!
//! Exit codes: 0 success; 1 error (the message says what to do); 2 bad
//! arguments; 130 interrupted by Ctrl+C (a fetch is paused, not lost).

mod args;
mod commands;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("p2pmodel: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("p2pmodel: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    // libp2p's Kademlia tries to bootstrap whenever a node starts listening
    // with no peer yet, and warns when it knows none: the normal case for a
    // node without bootstrap peers, so it is not shown unless asked for.
    let default = match verbose {
        0 => "warn,libp2p_kad::behaviour=error",
        1 => "info,libp2p_kad::behaviour=error",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A closed stdout (`p2pmodel list | head`) is not an error.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
