//! Command-line arguments, and nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Router One: a metered, multi-model, OpenAI-compatible LLM gateway.
#[derive(Debug, Parser)]
#[command(name = "router-one", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Run the simulated upstream (OpenAI wire format) on its own, e.g. for benchmarks.
    Simulate(SimulateArgs),
    /// Operator commands on the data directory (safe while a server runs on it).
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Config file (TOML); only the keys it sets override the defaults.
    #[arg(long, env = "ROUTER_ONE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub(crate) listen: Option<SocketAddr>,
    /// Data directory (SQLite database and usage journal) [default: ./data].
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Serve every model from an in-process simulated upstream, with a demo account and key.
    #[arg(long)]
    pub(crate) demo: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub(crate) listen: SocketAddr,
    /// Time to first token, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) ttft_ms: u64,
    /// Time per output token when streaming, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) tpot_ms: u64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Create an account; prints its id and management key as JSON.
    CreateAccount(CreateAccountArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CreateAccountArgs {
    /// The owner's email.
    #[arg(long)]
    pub(crate) email: String,
    /// Opening prepaid credit in USD (decimal, e.g. 25.50).
    #[arg(long, default_value = "0")]
    pub(crate) credit: String,
    /// Config file, for its data directory.
    #[arg(long, env = "ROUTER_ONE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory [default: ./data].
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
}
