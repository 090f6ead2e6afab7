//! The `router-one` binary: parses arguments and wires the crates together.

mod admin;
mod cli;
mod config;
mod database;
mod demo;
mod node;
mod serve;
mod verify;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command, LogFormat};

/// mimalloc: the gateway allocates many small, short-lived buffers per request, which glibc's
/// allocator serves markedly slower under concurrency (measured with `bench/run.sh`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
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
    result
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`). HTTP libraries are held at `info`
/// whatever `RUST_LOG` says: their trace output could describe headers, and nothing that could
/// carry a secret or a body may reach a log line.
/// `--log-format json`: one JSON object per line (`timestamp`, `level`, `target`, the fields
/// flattened beside `message`).
fn init_logging(format: LogFormat) {
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let filter = format!("{wanted},hyper=info,hyper_util=info,h2=info,rustls=info,sqlx=warn");
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
}
