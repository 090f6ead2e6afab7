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

use router_one_core::billing::ManagementKey;
use router_one_core::secret::{self, INFERENCE_PREFIX};
use router_one_core::store::{ApiKey, KeySettings, Store};
use router_one_core::{Catalog, Usd, ids};
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

/// The demo's two simulated routes of every model, in the order tried: `sim-a` first, `sim-b` when
/// it fails. The simulator targets one with a directive (`[[sim:route=sim-a,status=503]]`), so
/// anyone can watch a failover with one command.
pub(crate) const ROUTES: [&str; 2] = ["sim-a", "sim-b"];

/// Every provider `p` becomes `p.sim-a` and `p.sim-b` (the simulator under `/sim-a/…` and
/// `/sim-b/…`), and every model's route through `p` becomes the two: the same upstream model
/// at the same rates over two routes (promise 1 holds: failover never changes the model).
pub(crate) fn two_routes(catalog: &Catalog, config: &mut Config) -> Result<Catalog> {
    let providers = std::mem::take(&mut config.providers);
    for (name, provider) in providers {
        for route in ROUTES {
            let mut copy = provider.clone();
            copy.base_url = under_route(&provider.base_url, route);
            config.providers.insert(format!("{name}.{route}"), copy);
        }
    }
    let models = catalog
        .models()
        .iter()
        .map(|model| {
            let mut model = (**model).clone();
            model.routes = model
                .routes
                .iter()
                .flat_map(|r| {
                    ROUTES.map(|route| router_one_core::catalog::Route {
                        provider: format!("{}.{route}", r.provider),
                        upstream_id: r.upstream_id.clone(),
                    })
                })
                .collect();
            model
        })
        .collect();
    Catalog::new(models).context("the demo's two routes per model")
}

/// `http://host:port/rest` → `http://host:port/{route}/rest`: the simulator strips the prefix
/// and knows which route a request came by.
fn under_route(base_url: &str, route: &str) -> String {
    let authority_end = base_url
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| base_url[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base_url.len());
    format!("{}/{route}{}", &base_url[..authority_end], &base_url[authority_end..])
}

/// Starts the simulator and points every provider at it (it speaks all three wire formats).
pub(crate) async fn start_simulator(config: &mut Config, payments: &PaymentSimConfig) -> Result<SocketAddr> {
    let listener = router_one_server::listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
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
            // Azure's paths start at the resource: `/openai/deployments/…`; Vertex AI's at
            // the host: `/v1/projects/…`.
            ApiStyle::Azure | ApiStyle::VertexAnthropic | ApiStyle::VertexGemini => format!("http://{addr}"),
        };
        // Vertex AI's access tokens come from the simulator's token endpoint too (a key file's
        // `token_uri` cannot know this run's address).
        if provider.api.is_vertex() {
            provider.token_url = Some(format!("http://{addr}/token"));
        }
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

/// The demo account's email: one demo account per database, however many gateways (or data
/// directories) serve it.
const DEMO_EMAIL: &str = "demo@router-one.local";

/// Reuses the demo credentials of an earlier run in this data directory, or gives this data
/// directory its own inference and management keys on the database's demo account (created
/// with $1000 if the database has none); writes `demo.json` with this run's base URL and
/// payment secrets. A secret cannot be read back from the database (only its hash is kept), so
/// a new data directory gets new keys rather than another account.
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
    let earlier = match earlier {
        Some(existing) if store.account(&existing.account_id).await?.is_some() => Some(existing),
        _ => None,
    };
    let mut credentials = match earlier {
        Some(existing) => existing,
        None => demo_keys(store).await?,
    };
    credentials.base_url = format!("http://{listen}/v1");
    credentials.payment_api_key.clone_from(&payments.api_key);
    credentials.payment_webhook_secret.clone_from(&payments.webhook_secret);
    std::fs::write(&path, serde_json::to_vec_pretty(&credentials)?).context("writing demo.json")?;
    Ok(credentials)
}

/// New keys on the demo account, creating the account first if the database has none (two
/// gateways starting at once: one creates it, the other finds it).
async fn demo_keys(store: &dyn Store) -> Result<DemoCredentials> {
    let (account, management_key) = match store.account_by_email(DEMO_EMAIL).await? {
        Some((account, _)) => (account.clone(), new_management_key(store, &account.id).await?),
        None => {
            let credit: Usd = "1000".parse().context("demo credit")?;
            match new_account(store, DEMO_EMAIL, credit).await {
                Ok(created) => created,
                Err(e) => match store.account_by_email(DEMO_EMAIL).await? {
                    Some((account, _)) => (account.clone(), new_management_key(store, &account.id).await?),
                    None => return Err(e),
                },
            }
        }
    };
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
    let inserted = store
        .insert_key(&key, u32::MAX)
        .await
        .context("creating the demo key")?;
    anyhow::ensure!(inserted, "creating the demo key: refused");
    Ok(DemoCredentials {
        base_url: String::new(),
        api_key: secret.plaintext,
        management_key,
        account_id: account.id,
        payment_api_key: String::new(),
        payment_webhook_secret: String::new(),
    })
}

/// A new management key on `account_id`; returns its plaintext.
async fn new_management_key(store: &dyn Store, account_id: &str) -> Result<String> {
    let (key, plaintext) = ManagementKey::generate(account_id, Some("demo".into()), ids::now_us());
    store
        .insert_management_key(&key)
        .await
        .context("creating the demo management key")?;
    Ok(plaintext)
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_route_prefix_goes_right_after_the_authority() {
        assert_eq!(
            super::under_route("http://127.0.0.1:9/v1", "sim-a"),
            "http://127.0.0.1:9/sim-a/v1"
        );
        assert_eq!(
            super::under_route("http://127.0.0.1:9/v1beta", "sim-b"),
            "http://127.0.0.1:9/sim-b/v1beta"
        );
        assert_eq!(
            super::under_route("http://127.0.0.1:9", "sim-a"),
            "http://127.0.0.1:9/sim-a"
        );
    }
}
