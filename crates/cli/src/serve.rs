//! `serve` and `simulate` wiring (`admin` is in `admin.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use router_one_core::store::Store;
use router_one_providers::Provider;
use router_one_server::listener::{self, EdgeConfig};
use router_one_server::metrics::Metrics;
use router_one_server::{AppState, ServerConfig};
use router_one_simulator::{PaymentSimConfig, SimConfig};
use router_one_store::UsageWriter;
use tokio_util::task::TaskTracker;

use crate::cli::{LogFormat, ServeArgs, SimulateArgs};
use crate::config::Config;
use crate::database::{self, Database};
use crate::demo;
use crate::node::{self, Node};

pub(crate) fn data_dir(config: &Config, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| config.data_dir.clone())
}

/// Where `serve` exports its traces: the flag (or its environment variable), else the config
/// file's `[telemetry] otlp_endpoint`. Read before the runtime starts, with the logging; a
/// config file that cannot be read is reported by [`run`].
pub(crate) fn otlp_endpoint(args: &ServeArgs) -> Option<String> {
    args.otlp_endpoint.clone().or_else(|| {
        Config::load(args.config.as_deref())
            .ok()
            .and_then(|config| config.telemetry.otlp_endpoint)
    })
}

/// `router-one serve`.
pub(crate) async fn run(args: ServeArgs, log_format: LogFormat) -> Result<()> {
    let metering = metering_switch()?;
    let mut config = Config::load(args.config.as_deref())?;
    let mut edge = edge_config(&config);
    let listen = args.listen.unwrap_or(config.listen);
    let data_dir = data_dir(&config, args.data);
    let database_url = database::url(&config, args.database)?;
    let node_config = node::config(&config, args.node_id, args.redis, database_url.as_deref())?;
    let mut catalog = config.catalog()?;
    let mut example_model = String::new();
    let listener = router_one_server::listener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let listen = listener.local_addr()?;

    let demo_payments = args.demo.then(demo::random_payment_secrets);
    let demo_upstream = match &demo_payments {
        Some(secrets) => {
            demo::warn_if_exposed(listen);
            let upstream = demo::start_simulator(&mut config, secrets).await?;
            catalog = demo::two_routes(&catalog, &mut config)?;
            Some(upstream)
        }
        None => None,
    };
    if demo_upstream.is_some() {
        example_model = demo::example_model(&catalog, &config);
    }
    let mut providers = HashMap::new();
    for (name, provider_config) in &config.providers {
        let mut provider = Provider::from_config(name, provider_config);
        // The demo's upstream takes any key: one the environment gives is kept (so a test can
        // give a provider a pool of keys), else the demo's own.
        if demo_upstream.is_some() && !provider.has_api_key() {
            provider.set_api_key(demo::DEMO_UPSTREAM_KEY);
        }
        if !provider.has_api_key() && demo_upstream.is_none() {
            tracing::warn!(provider = %name, env = %provider_config.api_key_env, "no API key in the environment");
        }
        providers.insert(name.clone(), Arc::new(provider));
    }

    // One serving process per data directory, held until this process ends.
    let _data_dir_lock = router_one_store::DataDirLock::acquire(&data_dir)?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let database = Database::open(database_url.as_deref(), &data_dir).await?;
    // A single node on PostgreSQL keeps budgets in its memory: it must be the only one. A
    // cluster node shares them through leases instead.
    let _serving = match &node_config {
        None => database.claim_serving().await?,
        Some(_) => None,
    };
    let node = match &node_config {
        Some(node_config) => Some(Node::start(node_config, &database).await?),
        None => None,
    };
    database.spawn_maintenance();
    let store_dyn: Arc<dyn Store> = database.store();
    // Fed from the usage records as they commit (nothing per request on the hot path).
    let metrics = Metrics::new(catalog.models().iter().map(|m| m.id.clone()), providers.keys().cloned());
    let access_log = args.access_log.unwrap_or(log_format == LogFormat::Json);
    let observer: router_one_store::CommitObserver = {
        let metrics = metrics.clone();
        Arc::new(move |records: &[router_one_core::UsageRecord]| {
            metrics.observe(records);
            if access_log {
                router_one_server::access_log::write(records);
            }
        })
    };
    // Replays what an earlier run journaled and did not commit, before anything else.
    let usage = UsageWriter::start_observed(&data_dir, store_dyn.clone(), config.usage_batch, observer)
        .await
        .context("starting the usage writer")?;
    let coordination = match &node {
        Some(node) => {
            node.close_earlier_runs().await?;
            node.spawn_heartbeat(usage.clone());
            Some(node.coordination())
        }
        None => None,
    };
    let (coordination, lease_book) = match coordination {
        Some((coordination, book)) => (coordination, Some(book)),
        None => (router_one_server::Coordination::default(), None),
    };
    // `o200k_base` is not built here: admission builds it the first time an exact count
    // matters (`admission::prompt_bound`), and a gateway that never needs one saves its 46 MiB.
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{listen}"));
    let server_config = ServerConfig {
        max_body_bytes: config.max_body_bytes,
        max_public_body_bytes: config.http.max_public_body_bytes,
        trusted_proxies: config.http.trusted_proxies.clone(),
        upstream_timeout: Duration::from_secs(config.upstream_timeout_secs),
        default_output_tokens: config.default_output_tokens,
        metering,
        checkout: config.checkout.clone(),
        public_url,
        commission_percent: config.referrals.commission_percent,
        max_keys_per_account: config.max_keys_per_account,
    };
    let mut payments = HashMap::new();
    for (name, payment_config) in &config.payments {
        match router_one_payments::from_config(name, payment_config) {
            Ok(provider) => {
                payments.insert(name.clone(), provider);
            }
            // Inference works without payments: say so loudly and go on.
            Err(e) => tracing::error!(provider = %name, error = %e, "payment provider disabled"),
        }
    }
    if let (Some(upstream), Some(secrets)) = (demo_upstream, &demo_payments)
        && !payments.contains_key(demo::PAYMENT_PROVIDER)
    {
        payments.insert(
            demo::PAYMENT_PROVIDER.to_owned(),
            demo::payment_provider(upstream, secrets),
        );
    }
    let demo_credentials = match &demo_payments {
        Some(secrets) => Some(demo::ensure_account(&data_dir, store_dyn.as_ref(), listen, secrets).await?),
        None => None,
    };
    let state = AppState::new(
        server_config,
        catalog,
        providers,
        store_dyn,
        usage.clone(),
        payments,
        coordination,
    )
    .await
    .map_err(|e| anyhow::anyhow!("loading keys: {e}"))?;
    // Receipts (`--receipts`): the data directory's signing key, created at the first start; its
    // public keys published so every node sharing the database serves them in its JWKS.
    let state = if args.receipts {
        let receipt_keys = router_one_receipts::KeyRing::load_or_create(&data_dir)?;
        publish_receipt_keys(database.store().as_ref(), &receipt_keys).await?;
        state.with_receipts(receipt_keys)
    } else {
        state
    };
    let state = Arc::new(state);
    router_one_server::follower::spawn(state.clone());
    if let Some(book) = lease_book {
        router_one_server::leases::spawn_sweeper(book, state.clone());
    }
    if let Some(node) = &node {
        node.spawn_key_events(state.clone());
    }
    let detached = state.tasks.clone();
    // At the shutdown deadline, streams still running end themselves cleanly.
    edge.stopping = state.stopping.clone();
    let drain_grace = Duration::from_secs(config.http.drain_grace_secs);
    let shutdown = draining(state.clone(), drain_grace);
    if let Some(address) = args.metrics_listen.or(config.metrics.listen) {
        serve_metrics(address, router_one_server::metrics_app(state.clone(), metrics)).await?;
    }
    let app = router_one_server::app(state);

    tracing::info!(
        %listen,
        data_dir = %data_dir.display(),
        database = %database.describe(database_url.as_deref(), &data_dir),
        demo = args.demo,
        "Router One is serving"
    );
    if let Some(credentials) = &demo_credentials {
        demo::print_welcome(credentials, &example_model);
    }
    let flush_deadline = Duration::from_secs(config.http.usage_flush_timeout_secs);
    serve_until_stopped(listener, app, edge, shutdown, &detached, &usage, flush_deadline).await;
    if let Some(node) = &node {
        node.stop(&usage).await;
    }
    database.close().await;
    Ok(())
}

/// Publishes a key ring's public keys (current and retired) in the database, once each.
pub(crate) async fn publish_receipt_keys(store: &dyn Store, ring: &router_one_receipts::KeyRing) -> Result<()> {
    for jwk in ring.jwks().keys {
        let text = serde_json::to_string(&jwk)?;
        store
            .publish_receipt_key(&jwk.kid, &text)
            .await
            .context("publishing the receipt signing key")?;
    }
    Ok(())
}

/// Serves until SIGTERM or Ctrl-C, drains the connections within the edge's deadline, lets the
/// exchanges whose clients left (`detached`: still metered, still recorded) finish within
/// `flush_deadline`, then gives the usage writer `flush_deadline` to commit what the journal
/// holds. An exchange still running after that is recorded as it is dropped with the runtime.
async fn serve_until_stopped(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    edge: EdgeConfig,
    shutdown: impl std::future::Future<Output = ()>,
    detached: &TaskTracker,
    usage: &UsageWriter,
    flush_deadline: Duration,
) {
    let stopped = listener::serve(listener, app, edge, shutdown).await;
    if stopped.forced > 0 {
        tracing::warn!(
            connections = stopped.forced,
            "shutdown deadline passed: closed connections with requests in flight"
        );
    }
    detached.close();
    if tokio::time::timeout(flush_deadline, detached.wait()).await.is_err() {
        tracing::warn!(
            exchanges = detached.len(),
            "shutdown: exchanges whose clients left are still running; they are recorded as they stop"
        );
    }
    match tokio::time::timeout(flush_deadline, usage.flush()).await {
        Ok(()) => tracing::info!("stopped; every usage record is committed"),
        Err(_) => tracing::error!(
            pending = usage.pending(),
            "stopped before the usage writer committed everything; the journal keeps the rest for the next start"
        ),
    }
}

/// The edge settings, with the connection cap derived from the file-descriptor limit (raised to
/// its hard limit first) unless the config sets one.
fn edge_config(config: &Config) -> EdgeConfig {
    let http = &config.http;
    let fd_limit = match listener::raise_fd_limit() {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the file-descriptor limit");
            None
        }
    };
    let max_connections = match (http.max_connections, fd_limit) {
        (0, Some(limit)) => listener::default_max_connections(limit),
        (0, None) => listener::default_max_connections(1024),
        (set, _) => set,
    };
    tracing::info!(fd_limit, max_connections, "file-descriptor limit and connection cap");
    EdgeConfig {
        header_read_timeout: Duration::from_secs(http.header_read_timeout_secs),
        keep_alive_timeout: Duration::from_secs(http.keep_alive_timeout_secs),
        max_connections,
        shutdown_timeout: Duration::from_secs(http.shutdown_timeout_secs),
        stopping: tokio_util::sync::CancellationToken::new(),
    }
}

/// Whether requests are metered: always, unless a `bench-unmetered` build is told otherwise by
/// `ROUTER_ONE_BENCH_UNMETERED=1` (`bench/run.sh` measures what metering costs that way). A
/// normal build refuses to start with that variable rather than ignore a request to suspend
/// billing, or honour it.
fn metering_switch() -> Result<bool> {
    if std::env::var("ROUTER_ONE_BENCH_UNMETERED").is_ok_and(|v| v == "1") {
        if cfg!(feature = "bench-unmetered") {
            tracing::warn!(
                "ROUTER_ONE_BENCH_UNMETERED=1: requests are not limited, reserved or recorded (benchmarks only)"
            );
            return Ok(false);
        }
        anyhow::bail!(
            "ROUTER_ONE_BENCH_UNMETERED=1 switches billing off, which only a benchmark build \
             (cargo build --features bench-unmetered) allows; unset it"
        );
    }
    Ok(true)
}

/// Completes when the listener should stop accepting: SIGTERM or Ctrl-C marks the node as
/// draining (`GET /ready` answers 503 from that moment), then `grace` passes with new requests
/// still served, so a load balancer polling readiness moves traffic away first.
async fn draining(state: Arc<router_one_server::AppState>, grace: Duration) {
    shutdown_signal().await;
    state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: /ready answers 503; draining"
    );
    tokio::time::sleep(grace).await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// `router-one simulate`.
pub(crate) async fn simulate(args: SimulateArgs) -> Result<()> {
    let listener =
        router_one_server::listener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "simulated upstream is serving");
    let config = SimConfig {
        ttft: Duration::from_millis(args.ttft_ms),
        tpot: Duration::from_millis(args.tpot_ms),
        payments: PaymentSimConfig {
            api_key: args.payment_api_key,
            webhook_secret: args.payment_webhook_secret,
        },
    };
    router_one_simulator::serve(listener, config)
        .await
        .context("simulator failed")
}

/// Serves the metrics listener in the background for as long as the process runs.
async fn serve_metrics(address: SocketAddr, app: axum::Router) -> anyhow::Result<()> {
    let listener = router_one_server::listener::bind(address)
        .with_context(|| format!("binding the metrics listener {address}"))?;
    tracing::info!(metrics = %listener.local_addr()?, "Prometheus metrics at GET /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}
