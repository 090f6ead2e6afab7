//! The `router-one` binary: parses arguments and wires the crates together.

mod admin;
mod cli;
mod config;
mod database;
mod demo;
mod node;
mod serve;
mod telemetry;
mod verify;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command};

/// mimalloc: the gateway allocates many small, short-lived buffers per request, which glibc's
/// allocator serves markedly slower under concurrency (measured with `bench/run.sh`). Built
/// without transparent huge pages (`no_thp`): with them every arena it commits is backed by
/// 2 MiB pages, which took the gateway from 60 to 84 MiB at rest and from 44 to 63 KiB per
/// open stream (`bench/many-streams.sh`), for no throughput we could measure.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let cli = Cli::parse();
    let otlp_endpoint = match &cli.command {
        Command::Serve(args) => serve::otlp_endpoint(args),
        _ => None,
    };
    let telemetry = telemetry::init(cli.log_format, otlp_endpoint.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args, cli.log_format).await,
            Command::Simulate(args) => serve::simulate(args).await,
            Command::Admin(command) => admin::run(command).await,
            Command::Verify(args) => verify::run(args).await,
        }
    });
    // Whatever is still running (a blocking task, a background drain) may not hold up exit:
    // `serve` has already drained connections and flushed the usage writer within its deadlines.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    telemetry.shut_down();
    result
}
