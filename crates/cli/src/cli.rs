//! Command-line arguments, and nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Router One: a metered, multi-model, OpenAI-compatible LLM gateway.
///
/// One OpenAI-compatible base URL for many models, with prepaid accounts, keys with hard budgets
/// and rate limits, exact per-request usage records and a web console (docs/promises.md).
#[derive(Debug, Parser)]
#[command(
    name = "router-one",
    version,
    after_help = "Examples:\n  router-one serve --demo                 # try it offline: simulated models and payments\n  router-one serve --config router-one.toml\n  router-one admin create-account --email owner@example.com --credit 25\n  router-one verify receipt.jws --body response.json --jwks https://router.example.com/.well-known/jwks.json"
)]
pub(crate) struct Cli {
    /// Log lines as text, or as one JSON object per line (with `serve`, one line per request
    /// too: see `--access-log`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ROUTER_ONE_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the gateway: the OpenAI- and Anthropic-compatible API, the management API and the
    /// web console on one address.
    #[command(
        after_help = "Examples:\n  router-one serve --demo                          # offline: every model simulated, a demo account\n  router-one serve --listen 0.0.0.0:8080 --data /var/lib/router-one\n  router-one serve --config /etc/router-one.toml --metrics-listen 127.0.0.1:9100\n  router-one serve --database postgres://router@db/router --redis redis://cache:6379 --node-id node-a"
    )]
    Serve(ServeArgs),
    /// Run the simulated upstream (OpenAI, Anthropic and Gemini wire formats, and a payment
    /// provider) on its own, e.g. for benchmarks.
    #[command(after_help = "Example:\n  router-one simulate --listen 127.0.0.1:9090 --ttft-ms 20 --tpot-ms 5")]
    Simulate(SimulateArgs),
    /// Operator commands on the database (safe while gateways run on it).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Check a response's signed receipt offline: its signature against a JWKS and, with
    /// --body, the hash of the body received; prints the payload. Exit code 0 if valid.
    #[command(
        after_help = "Examples:\n  router-one verify \"$RECEIPT\" --body response.json --jwks https://router.example.com/.well-known/jwks.json\n  router-one verify receipt.jws --data /var/lib/router-one   # the keys of this gateway's data directory"
    )]
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The receipt (from `x-router-one-receipt`, the stream's `: receipt` line
    /// or `GET /v1/requests/{id}/receipt`), or a file holding it.
    pub(crate) receipt: String,
    /// The response body as received (a stream: every byte before the `: receipt` line); its
    /// SHA-256 must be the receipt's `response_sha256`.
    #[arg(long, value_name = "FILE")]
    pub(crate) body: Option<PathBuf>,
    /// The gateway's public keys: a JWKS file, or its URL (`https://…/.well-known/jwks.json`)
    /// [default: the keys in --data's receipt key file].
    #[arg(long, value_name = "FILE_OR_URL")]
    pub(crate) jwks: Option<String>,
    /// Data directory whose receipt key file to use without --jwks [default: ./data].
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
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
    /// A PostgreSQL URL to keep accounts, keys, the ledger and usage in, instead of the data
    /// directory's SQLite file [env: ROUTER_ONE_DATABASE_URL; config: database.url].
    #[arg(long, value_name = "URL")]
    pub(crate) database: Option<String>,
    /// Run as one node of a cluster sharing the PostgreSQL database: this node's stable name
    /// (needs --database and --redis) [env: ROUTER_ONE_NODE_ID; config: cluster.node_id].
    #[arg(long, value_name = "ID")]
    pub(crate) node_id: Option<String>,
    /// Redis URL through which cluster nodes share rate limits
    /// [env: ROUTER_ONE_REDIS_URL; config: redis.url].
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// Serve every model from an in-process simulated upstream, with a demo account and key.
    #[arg(long)]
    pub(crate) demo: bool,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, apart from the public port
    /// [config: metrics.listen].
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Export a trace of every request (spans for admission, each upstream attempt and the
    /// usage write; ids and metadata, never a body) to this OTLP/HTTP collector, e.g.
    /// `http://127.0.0.1:4318` (`/v1/traces` is added). Needs the `otel` cargo feature (on by
    /// default) [config: telemetry.otlp_endpoint].
    #[arg(long, value_name = "URL", env = "ROUTER_ONE_OTLP_ENDPOINT")]
    pub(crate) otlp_endpoint: Option<String>,
    /// One log line per request (target `router_one::access`: request id, key, model, route,
    /// status, tokens, cost, latency; never a body), written as records commit, off the
    /// request path [default: on with --log-format json, else off].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub(crate) access_log: Option<bool>,
    /// Sign every chat and embeddings answer with a verifiable receipt (docs/receipts.md). Off
    /// by default until they cost under 5 % of the throughput at concurrency 64
    /// (bench/RESULTS.md).
    #[arg(
        long,
        env = "ROUTER_ONE_RECEIPTS",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub(crate) receipts: bool,
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
    #[command(after_help = "Example:\n  router-one admin create-account --email owner@example.com --credit 25.50")]
    CreateAccount(CreateAccountArgs),
    /// Credit an account (an `adjustment` ledger entry); prints the entry id and new balance.
    #[command(
        after_help = "Example:\n  router-one admin credit --account owner@example.com --amount 10 --reason \"bank transfer 2026-11-28\""
    )]
    Credit(AdjustArgs),
    /// Debit an account (an `adjustment` ledger entry); refused if larger than the balance.
    #[command(
        after_help = "Example:\n  router-one admin debit --account owner@example.com --amount 2.5 --reason \"invoice error\""
    )]
    Debit(AdjustArgs),
    /// List accounts: id, email, balance, inviter, creation time.
    #[command(after_help = "Example:\n  router-one admin list-accounts --limit 20")]
    ListAccounts(ListAccountsArgs),
    /// Print an account's ledger, oldest first, and check that its balance is their sum.
    #[command(after_help = "Example:\n  router-one admin ledger --account owner@example.com --json")]
    Ledger(LedgerArgs),
    /// Release what a cluster node that will never come back holds (its budget leases); its
    /// id can no longer be granted anything until a node starts with it again.
    #[command(after_help = "Example:\n  router-one admin forget-node node-b --database postgres://router@db/router")]
    ForgetNode(ForgetNodeArgs),
    /// Set a currency's FX rate (overrides the config file; a running gateway reloads it).
    #[command(after_help = "Example:\n  router-one admin set-fx --currency EUR --per-usd 0.9234 --markup-percent 1.5")]
    SetFx(SetFxArgs),
    /// List the FX rates set with `set-fx`.
    #[command(after_help = "Example:\n  router-one admin fx-rates")]
    FxRates(FxRatesArgs),
    /// Replace the receipt signing key in the data directory with a fresh one; the old public
    /// key stays in the JWKS so its receipts still verify. A gateway signs with the new key
    /// from its next start.
    #[command(after_help = "Example:\n  router-one admin rotate-receipt-key --data /var/lib/router-one")]
    RotateReceiptKey(RotateReceiptKeyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RotateReceiptKeyArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

/// Where the data lives: shared by every admin command.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Config file, for its data directory or database URL.
    #[arg(long, env = "ROUTER_ONE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory [default: ./data].
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// The PostgreSQL URL the gateway uses, if it does not use the data directory's SQLite file
    /// [env: ROUTER_ONE_DATABASE_URL; config: database.url].
    #[arg(long, value_name = "URL")]
    pub(crate) database: Option<String>,
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
pub(crate) struct ForgetNodeArgs {
    /// The node id (`[cluster] node_id` of the lost node).
    pub(crate) node_id: String,
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
