//! What every handler shares: the catalog, providers, key index, store and usage writer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use rust_decimal::Decimal;

use router_one_core::Catalog;
use router_one_core::Usd;
use router_one_core::checkout::CheckoutConfig;
use router_one_core::store::{ApiKey, Store, StoreResult};
use router_one_metering::KeyIndex;
use router_one_metering::rate::{InProcessLimiter, RateLimiter};
use router_one_payments::PaymentProvider;
use router_one_providers::{Provider, UpstreamClient};
use router_one_store::UsageWriter;

/// Server settings from the operator's config.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// Largest body accepted on the routes that take no key (sign-up, login, payment webhooks):
    /// whoever sends it is not authenticated yet.
    pub max_public_body_bytes: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client, for limits counted per source
    /// address (logins); any other peer is the source itself.
    pub trusted_proxies: Vec<IpAddr>,
    /// How long to wait for an upstream's response head, and between stream events.
    pub upstream_timeout: Duration,
    /// `false` only to measure what metering costs (`bench/run.sh`): requests are then neither
    /// estimated, limited, reserved nor recorded. Never in production: it suspends promises 3
    /// and 5.
    pub metering: bool,
    /// FX rates and payment-channel fees for checkout quotes (FX rates the operator set with
    /// `router-one admin set-fx` override these).
    pub checkout: CheckoutConfig,
    /// The gateway's public base URL (`https://router.example.com`): invite links and the
    /// webhook URL given to payment providers are built on it.
    pub public_url: String,
    /// The inviter's share of a referred account's top-up (its token line), in percent.
    pub commission_percent: Decimal,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 32 * 1024 * 1024,
            max_public_body_bytes: 64 * 1024,
            trusted_proxies: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
            upstream_timeout: Duration::from_secs(600),
            metering: true,
            checkout: CheckoutConfig::default(),
            public_url: "http://127.0.0.1:8080".into(),
            commission_percent: Decimal::new(5, 0),
        }
    }
}

/// Shared state of the running gateway.
pub struct AppState {
    /// Operator settings.
    pub config: ServerConfig,
    /// The model catalog.
    pub catalog: Catalog,
    /// Configured provider channels by name.
    pub providers: HashMap<String, Arc<Provider>>,
    /// The pooled upstream client.
    pub client: UpstreamClient,
    /// Live inference keys and account budgets.
    pub keys: KeyIndex,
    /// Per-key request, token and concurrency limits (in-process; a Redis-backed limiter
    /// slots in behind the same trait for several nodes).
    pub limiter: Arc<dyn RateLimiter>,
    /// Management-key hash → (account id, when the store last vouched for it, µs), filled on
    /// first use; `None` marks a revoked key.
    pub management_keys: DashMap<String, Option<(String, i64)>>,
    /// Login attempts per email and source, counted before a password is verified.
    pub(crate) login_limits: crate::login_limit::LoginLimits,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// The crash-safe usage path.
    pub usage: UsageWriter,
    /// Configured payment providers by name.
    pub payments: HashMap<String, Arc<dyn PaymentProvider>>,
    /// The checkout config in force: the config file's, with the operator's FX rates over it
    /// (reloaded by the follower).
    pub checkout: ArcSwap<CheckoutConfig>,
    /// Where the ledger follower is.
    pub(crate) follower: crate::follower::Follower,
    /// Password hashing is deliberately slow: at most this many at once, on the blocking pool,
    /// so sign-ups and logins cannot starve inference.
    pub(crate) password_hashing: tokio::sync::Semaphore,
}

impl AppState {
    /// Builds the state and warms the key index from the store.
    pub async fn new(
        config: ServerConfig,
        catalog: Catalog,
        providers: HashMap<String, Arc<Provider>>,
        store: Arc<dyn Store>,
        usage: UsageWriter,
        payments: HashMap<String, Arc<dyn PaymentProvider>>,
    ) -> Result<AppState, Box<dyn std::error::Error + Send + Sync>> {
        // Read the ledger's head before any balance: an entry posted in between is then applied
        // by the follower, or skipped by the account's own head if its balance already has it.
        let ledger_head = store.ledger_head().await?;
        let checkout = crate::follower::with_fx_overrides(&config.checkout, store.fx_rates().await?);
        let state = AppState {
            checkout: ArcSwap::from_pointee(checkout),
            follower: crate::follower::Follower::new(ledger_head),
            password_hashing: tokio::sync::Semaphore::new(2),
            payments,
            config,
            catalog,
            providers,
            client: UpstreamClient::new()?,
            keys: KeyIndex::default(),
            limiter: Arc::new(InProcessLimiter::default()),
            management_keys: DashMap::new(),
            login_limits: crate::login_limit::LoginLimits::default(),
            store,
            usage,
        };
        let now_us = router_one_core::ids::now_us();
        for key in state.store.active_keys().await? {
            let (balance, head) = state
                .store
                .account(&key.account_id)
                .await?
                .map(|a| (a.balance, a.ledger_head))
                .unwrap_or_default();
            let spent = budget_spent(state.store.as_ref(), &key, now_us).await?;
            state.keys.insert(&key, balance, head, spent, now_us);
        }
        Ok(state)
    }
}

/// What a key's budget has spent at `now_us`: its lifetime spend, or its spend in the current
/// period when it has a `budget_period` (summed from its usage records once, when loaded).
pub(crate) async fn budget_spent(store: &dyn Store, key: &ApiKey, now_us: i64) -> StoreResult<Usd> {
    match key.settings.budget_period.window(now_us) {
        Some((start, _)) => store.key_spend_since(&key.id, start).await,
        None => Ok(key.spend),
    }
}
