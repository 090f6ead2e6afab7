//! `serve --demo`: every provider points at an in-process simulated upstream, and a demo account
//! with a key exists, so a newcomer sees the gateway work offline with one command.
//!
//! The demo's payment provider is the simulator too. Its webhook secret and merchant API key are
//! random per run (written to `demo.json` with the other demo credentials): a public default
//! would let anyone who reaches a demo gateway sign a "payment succeeded" webhook and be credited.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use router_one_core::secret::{self, INFERENCE_PREFIX};
use router_one_core::store::{ApiKey, KeySettings, Store};
use router_one_core::{Usd, ids};
use router_one_providers::ApiStyle;
use router_one_simulator::{PaymentSimConfig, SimConfig};

use crate::admin::new_account;
use crate::config::Config;

/// What `demo.json` in the data directory holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DemoCredentials {
    pub(crate) base_url: String,
    pub(crate) api_key: String,
    pub(crate) management_key: String,
    pub(crate) account_id: String,
    /// This run's payment-simulator secrets (an earlier run's are replaced).
    #[serde(default)]
    pub(crate) payment_api_key: String,
    #[serde(default)]
    pub(crate) payment_webhook_secret: String,
}

/// The payment simulator's secrets for this run, shared by the simulator (which signs webhooks)
/// and the gateway's `simulated` provider (which verifies them).
pub(crate) fn random_payment_secrets() -> PaymentSimConfig {
    PaymentSimConfig {
        api_key: secret::generate("sim-pay-").plaintext,
        webhook_secret: secret::generate("whsec_").plaintext,
    }
}

/// Starts the simulator and points every provider at it (it speaks all three wire formats).
pub(crate) async fn start_simulator(config: &mut Config, payments: &PaymentSimConfig) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the demo upstream")?;
    let addr = listener.local_addr()?;
    let sim = SimConfig {
        ttft: Duration::ZERO,
        tpot: Duration::ZERO,
        payments: payments.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = router_one_simulator::serve(listener, sim).await {
            tracing::error!(error = %e, "demo upstream stopped");
        }
    });
    for provider in config.providers.values_mut() {
        provider.base_url = match provider.api {
            ApiStyle::OpenAi | ApiStyle::Anthropic => format!("http://{addr}/v1"),
            ApiStyle::Gemini => format!("http://{addr}/v1beta"),
        };
    }
    Ok(addr)
}

/// The name of the demo's payment provider (the simulator's): webhooks arrive at
/// `/v1/payments/webhooks/simulated`.
pub(crate) const PAYMENT_PROVIDER: &str = "simulated";

/// The demo's payment provider: the in-process simulator, with this run's secrets (a real
/// deployment configures `[payments.<name>]` with its own).
pub(crate) fn payment_provider(
    simulator: SocketAddr,
    secrets: &PaymentSimConfig,
) -> std::sync::Arc<dyn router_one_payments::PaymentProvider> {
    std::sync::Arc::new(router_one_payments::SimulatedProvider::new(
        PAYMENT_PROVIDER,
        format!("http://{simulator}"),
        secrets.api_key.clone(),
        secrets.webhook_secret.clone(),
    ))
}

/// The key the gateway presents to the demo upstream (which accepts any).
pub(crate) const DEMO_UPSTREAM_KEY: &str = "router-one-demo";

/// A chat model the demo serves, for the welcome example.
pub(crate) fn example_model(catalog: &router_one_core::Catalog, config: &Config) -> String {
    catalog
        .models()
        .iter()
        .find(|m| {
            m.kind == router_one_core::ModelKind::Chat
                && m.routes.iter().any(|r| {
                    config
                        .providers
                        .get(&r.provider)
                        .is_some_and(|p| p.api == ApiStyle::OpenAi)
                })
        })
        .map(|m| m.id.clone())
        .unwrap_or_default()
}

/// Reuses the demo account of an earlier run, or creates one with $1000 and an inference key;
/// writes `demo.json` with this run's base URL and payment secrets.
pub(crate) async fn ensure_account(
    data_dir: &Path,
    store: &dyn Store,
    listen: SocketAddr,
    payments: &PaymentSimConfig,
) -> Result<DemoCredentials> {
    let path = data_dir.join("demo.json");
    let earlier = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str::<DemoCredentials>(&text).ok());
    let mut credentials = match earlier {
        Some(existing) => existing,
        None => new_demo_account(store).await?,
    };
    credentials.base_url = format!("http://{listen}/v1");
    credentials.payment_api_key.clone_from(&payments.api_key);
    credentials.payment_webhook_secret.clone_from(&payments.webhook_secret);
    std::fs::write(&path, serde_json::to_vec_pretty(&credentials)?).context("writing demo.json")?;
    Ok(credentials)
}

async fn new_demo_account(store: &dyn Store) -> Result<DemoCredentials> {
    let email = format!("demo-{}@router-one.local", ids::new_id("d"));
    let credit: Usd = "1000".parse().context("demo credit")?;
    let (account, management_key) = new_account(store, &email, credit).await?;
    let secret = secret::generate(INFERENCE_PREFIX);
    let key = ApiKey {
        id: ids::new_id("key"),
        account_id: account.id.clone(),
        secret_hash: secret.hash,
        hint: secret.hint,
        settings: KeySettings {
            name: Some("demo".into()),
            ..KeySettings::default()
        },
        created_at_us: ids::now_us(),
        revoked_at_us: None,
        spend: Usd::ZERO,
    };
    // A fresh account: its first key is within any cap.
    let inserted = store.insert_key(&key, 1).await.context("creating the demo key")?;
    anyhow::ensure!(inserted, "creating the demo key: the demo account already has one");
    Ok(DemoCredentials {
        base_url: String::new(),
        api_key: secret.plaintext,
        management_key,
        account_id: account.id,
        payment_api_key: String::new(),
        payment_webhook_secret: String::new(),
    })
}

/// Says loudly when the demo is reachable from other machines.
pub(crate) fn warn_if_exposed(listen: SocketAddr) {
    if !listen.ip().is_loopback() {
        tracing::warn!(
            %listen,
            "--demo is listening on a non-loopback address: anyone who can reach it can sign up, \
             use the simulated models and the demo's payment simulator. The demo is for one \
             machine; serve it on 127.0.0.1 (the default) unless you mean this."
        );
    }
}

/// The copy-paste commands a newcomer runs next.
pub(crate) fn print_welcome(c: &DemoCredentials, model: &str) {
    println!(
        "\nRouter One demo is running (every model is served by a simulated upstream).\n\
         Credentials are in demo.json in the data directory.\n\n\
         curl {base}/chat/completions \\\n  -H \"Authorization: Bearer {key}\" \\\n  -H \"Content-Type: application/json\" \\\n  \
         -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'\n\n\
         Usage records: curl {base}/usage -H \"Authorization: Bearer {mkey}\"\n",
        base = c.base_url,
        key = c.api_key,
        mkey = c.management_key,
    );
}
