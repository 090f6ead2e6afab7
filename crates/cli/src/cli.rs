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
    /// The Bearer key the simulated payment provider's merchant API requires.
    #[arg(long, env = "ROUTER_ONE_SIM_PAYMENT_API_KEY", default_value = "sim-pay-key")]
    pub(crate) payment_api_key: String,
    /// The secret the simulated payment provider signs its webhooks with.
    #[arg(
        long,
        env = "ROUTER_ONE_SIM_PAYMENT_WEBHOOK_SECRET",
        default_value = "whsec_router_one_simulated",
        hide_env_values = true
    )]
    pub(crate) payment_webhook_secret: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Create an account; prints its id and management key as JSON.
    CreateAccount(CreateAccountArgs),
    /// Credit an account (an `adjustment` ledger entry); prints the entry id and new balance.
    Credit(AdjustArgs),
    /// Debit an account (an `adjustment` ledger entry); refused if larger than the balance.
    Debit(AdjustArgs),
    /// List accounts: id, email, balance, inviter, creation time.
    ListAccounts(ListAccountsArgs),
    /// Print an account's ledger, oldest first, and check that its balance is their sum.
    Ledger(LedgerArgs),
    /// Set a currency's FX rate (overrides the config file; a running gateway reloads it).
    SetFx(SetFxArgs),
    /// List the FX rates set with `set-fx`.
    FxRates(FxRatesArgs),
}

/// Where the data lives: shared by every admin command.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Config file, for its data directory.
    #[arg(long, env = "ROUTER_ONE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory [default: ./data].
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CreateAccountArgs {
    /// The owner's email.
    #[arg(long)]
    pub(crate) email: String,
    /// Opening prepaid credit in USD (decimal, e.g. 25.50).
    #[arg(long, default_value = "0")]
    pub(crate) credit: String,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AdjustArgs {
    /// The account: its id (`acct_…`) or its email.
    #[arg(long)]
    pub(crate) account: String,
    /// Amount in USD, a positive decimal with at most 10 decimal places (e.g. 12.5).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) amount: String,
    /// Why (kept on the ledger entry).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ListAccountsArgs {
    /// List at most this many accounts [default: all].
    #[arg(long)]
    pub(crate) limit: Option<u64>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LedgerArgs {
    /// The account: its id (`acct_…`) or its email.
    #[arg(long)]
    pub(crate) account: String,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SetFxArgs {
    /// ISO 4217 code, three upper-case letters (e.g. EUR).
    #[arg(long)]
    pub(crate) currency: String,
    /// Units of the currency per 1 USD, a decimal > 0 (e.g. 0.9234).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) per_usd: String,
    /// The operator's FX cost, percent of the converted amount (decimal).
    #[arg(long, default_value = "0", allow_negative_numbers = true)]
    pub(crate) markup_percent: String,
    /// Decimal places of the currency's minor unit (JPY 0, KWD 3).
    #[arg(long, default_value_t = 2)]
    pub(crate) minor_units: u32,
    /// When the rate was fixed, RFC 3339 [default: now].
    #[arg(long)]
    pub(crate) as_of: Option<String>,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct FxRatesArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}
