//! `serve` and `simulate` wiring (`admin` is in `admin.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::serve::ListenerExt;

use router_one_core::store::Store;
use router_one_providers::Provider;
use router_one_server::{AppState, ServerConfig};
use router_one_simulator::{PaymentSimConfig, SimConfig};
use router_one_store::{SqliteStore, UsageWriter};

use crate::cli::{ServeArgs, SimulateArgs};
use crate::config::Config;
use crate::demo;

/// Opens (creating if needed) the data directory's database.
pub(crate) async fn open_store(data_dir: &Path) -> Result<Arc<SqliteStore>> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let store = SqliteStore::open(&data_dir.join("router-one.db"))
        .await
        .context("opening the database")?;
    Ok(Arc::new(store))
}

pub(crate) fn data_dir(config: &Config, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| config.data_dir.clone())
}

/// `router-one serve`.
pub(crate) async fn run(args: ServeArgs) -> Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    let listen = args.listen.unwrap_or(config.listen);
    let data_dir = data_dir(&config, args.data);
    let catalog = config.catalog()?;
    let mut example_model = String::new();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let listen = listener.local_addr()?;

    let demo_upstream = if args.demo {
        Some(demo::start_simulator(&mut config).await?)
    } else {
        None
    };
    if demo_upstream.is_some() {
        example_model = demo::example_model(&catalog, &config);
    }
    let mut providers = HashMap::new();
    for (name, provider_config) in &config.providers {
        let mut provider = Provider::from_config(name, provider_config);
        if demo_upstream.is_some() {
            provider.set_api_key(demo::DEMO_UPSTREAM_KEY);
        }
        if !provider.has_api_key() && demo_upstream.is_none() {
            tracing::warn!(provider = %name, env = %provider_config.api_key_env, "no API key in the environment");
        }
        providers.insert(name.clone(), Arc::new(provider));
    }

    // One serving process per data directory, held until this process ends.
    let _data_dir_lock = router_one_store::DataDirLock::acquire(&data_dir)?;
    let store = open_store(&data_dir).await?;
    let store_dyn: Arc<dyn Store> = store.clone();
    let usage = UsageWriter::start(&data_dir, store_dyn.clone(), config.usage_batch)
        .await
        .context("starting the usage writer")?;
    // Benchmarks only (bench/run.sh): measure the gateway with metering switched off.
    let metering = std::env::var("ROUTER_ONE_BENCH_UNMETERED").map_or(true, |v| v != "1");
    if !metering {
        tracing::warn!(
            "ROUTER_ONE_BENCH_UNMETERED=1: requests are not limited, reserved or recorded (benchmarks only)"
        );
    }
    // Build the tokenizer now rather than in the first request.
    router_one_providers::estimate::warm_up();
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{listen}"));
    let server_config = ServerConfig {
        max_body_bytes: config.max_body_bytes,
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
    if let Some(upstream) = demo_upstream
        && !payments.contains_key(demo::PAYMENT_PROVIDER)
    {
        payments.insert(demo::PAYMENT_PROVIDER.to_owned(), demo::payment_provider(upstream));
    }
    let demo_credentials = match demo_upstream {
        Some(_) => Some(demo::ensure_account(&data_dir, store_dyn.as_ref(), listen).await?),
        None => None,
    };
    let state = AppState::new(server_config, catalog, providers, store_dyn, usage.clone(), payments)
        .await
        .map_err(|e| anyhow::anyhow!("loading keys: {e}"))?;
    let state = Arc::new(state);
    router_one_server::follower::spawn(state.clone());
    let app = router_one_server::app(state);

    tracing::info!(%listen, data_dir = %data_dir.display(), demo = args.demo, "Router One is serving");
    if let Some(credentials) = &demo_credentials {
        demo::print_welcome(credentials, &example_model);
    }
    let listener = listener.tap_io(|tcp| {
        // Small SSE frames must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    usage.flush().await;
    tracing::info!("stopped; every usage record is committed");
    Ok(())
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
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
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
