//! What every handler shares: the catalog, providers, key index, store and usage writer.
//! Building it warms the key index from the store, a page at a time; a stored key that cannot
//! be read is left out (loudly), never allowed to stop the gateway from starting.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
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
    /// Output tokens reserved for (and sent upstream with) a request that names no `max_tokens`,
    /// unless its catalog entry sets `default_output`.
    pub default_output_tokens: u64,
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
    /// Most unrevoked inference keys one account may hold (`POST /v1/keys` refuses more).
    pub max_keys_per_account: u32,
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
            default_output_tokens: 8192,
            metering: true,
            checkout: CheckoutConfig::default(),
            public_url: "http://127.0.0.1:8080".into(),
            commission_percent: Decimal::new(5, 0),
            max_keys_per_account: 10_000,
        }
    }
}

/// How this node shares budgets and rate limits with others: not at all on a single node (the
/// default: budgets and limits in this process's memory), or through database leases and a
/// shared rate limiter on a cluster node.
pub struct Coordination {
    /// The node's budget leases (`None`: a single node, budgets are the balances themselves).
    pub leases: Option<Arc<crate::leases::LeaseBook>>,
    /// Per-key request, token and concurrency limits.
    pub limiter: Arc<dyn RateLimiter>,
    /// A cluster node's fence: it refuses requests while isolated (`None` on a single node).
    pub fence: Option<Arc<crate::key_events::Fence>>,
}

impl Default for Coordination {
    fn default() -> Self {
        Coordination {
            fence: None,
            leases: None,
            limiter: Arc::new(InProcessLimiter::default()),
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
    /// Per-key request, token and concurrency limits (in this process on a single node; shared
    /// through Redis on a cluster node).
    pub limiter: Arc<dyn RateLimiter>,
    /// A cluster node's budget leases (`None` on a single node).
    pub leases: Option<Arc<crate::leases::LeaseBook>>,
    /// A cluster node's fence (`None` on a single node).
    pub fence: Option<Arc<crate::key_events::Fence>>,
    /// Management-key hash → (account id, when the store last vouched for it, µs), filled on
    /// first use; `None` marks a revoked key.
    pub management_keys: DashMap<String, Option<(String, i64)>>,
    /// Login attempts per email and source, counted before a password is verified.
    pub(crate) login_limits: crate::login_limit::LoginLimits,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// The crash-safe usage path.
    pub usage: UsageWriter,
    /// Work that outlives its request: the rest of an exchange whose client hung up, draining it
    /// so it is still metered and recorded. Shutdown closes it and waits for it.
    pub tasks: tokio_util::task::TaskTracker,
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
    /// Set the moment a shutdown begins: `GET /ready` answers 503 from then on, so a load
    /// balancer stops sending before the listener closes.
    pub draining: std::sync::atomic::AtomicBool,
    /// Cancelled when the shutdown deadline passes: streams still running end with a clean
    /// error event and their record (`gateway_shutdown`) instead of a cut connection.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Each route's breaker (`failover`).
    pub(crate) health: crate::failover::Health,
    /// The keys receipts are signed with (`None`: responses carry no receipt, as in tests
    /// that build a state without a data directory).
    pub receipts: Option<Arc<router_one_receipts::KeyRing>>,
    /// What signs receipts in batches, with the ring's current key.
    pub(crate) receipt_signer: Option<router_one_receipts::BatchSigner>,
    /// The JWKS last served, for a few seconds: anyone may ask for it, and a keyless route must
    /// not cost a database read per call.
    pub(crate) receipt_jwks: arc_swap::ArcSwapOption<crate::routes::receipts::ServedJwks>,
    /// Streams between their first upstream event and their end (the metrics' gauge).
    pub open_streams: std::sync::atomic::AtomicUsize,
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
        coordination: Coordination,
    ) -> Result<AppState, Box<dyn std::error::Error + Send + Sync>> {
        // Read the ledger's head before any balance: an entry posted in between is then applied
        // by the follower, or skipped by the account's own head if its balance already has it.
        let ledger_head = store.ledger_head().await?;
        let checkout = crate::follower::with_fx_overrides(&config.checkout, store.fx_rates().await?);
        let health = crate::failover::Health::new(providers.keys());
        let state = AppState {
            checkout: ArcSwap::from_pointee(checkout),
            follower: crate::follower::Follower::new(ledger_head),
            password_hashing: tokio::sync::Semaphore::new(2),
            payments,
            config,
            catalog,
            providers,
            client: UpstreamClient::new()?,
            keys: if coordination.leases.is_some() {
                KeyIndex::leased()
            } else {
                KeyIndex::default()
            },
            limiter: coordination.limiter,
            leases: coordination.leases,
            fence: coordination.fence,
            management_keys: DashMap::new(),
            login_limits: crate::login_limit::LoginLimits::default(),
            store,
            usage,
            tasks: tokio_util::task::TaskTracker::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            health,
            stopping: tokio_util::sync::CancellationToken::new(),
            receipts: None,
            receipt_signer: None,
            receipt_jwks: arc_swap::ArcSwapOption::empty(),
            open_streams: std::sync::atomic::AtomicUsize::new(0),
        };
        state.warm_keys().await?;
        Ok(state)
    }

    /// Signs every chat and embeddings response's receipt with `keys` (docs/receipts.md).
    pub fn with_receipts(mut self, keys: router_one_receipts::KeyRing) -> AppState {
        self.receipt_signer = Some(router_one_receipts::BatchSigner::new(keys.signer.clone()));
        self.receipts = Some(Arc::new(keys));
        self
    }

    /// Loads every unrevoked key into the index, [`WARM_PAGE`] at a time, reading each account
    /// once. A key whose row, account or period spend cannot be read is left out with an error
    /// in the log (ids only): it cannot be used until the operator repairs it, and every other
    /// key is served.
    async fn warm_keys(&self) -> StoreResult<()> {
        let now_us = router_one_core::ids::now_us();
        let mut accounts = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.active_keys(after.as_deref(), WARM_PAGE).await?;
            for key in &page.keys {
                self.warm_key(key, &mut accounts, now_us).await;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// Loads one key; `accounts` holds the balance and ledger head of each account read so far
    /// (`None`: it cannot be read, and neither can its keys be served).
    async fn warm_key(&self, key: &ApiKey, accounts: &mut HashMap<String, Option<(Usd, i64)>>, now_us: i64) {
        let account = match accounts.entry(key.account_id.clone()) {
            Entry::Occupied(known) => *known.get(),
            Entry::Vacant(new) => *new.insert(match self.store.account(&key.account_id).await {
                Ok(account) => Some(account.map(|a| (a.balance, a.ledger_head)).unwrap_or_default()),
                Err(e) => {
                    tracing::error!(account_id = %key.account_id, error = %e, "stored account cannot be read; its keys are not served");
                    None
                }
            }),
        };
        let Some((balance, head)) = account else {
            return;
        };
        match budget_spent(self.store.as_ref(), key, now_us).await {
            Ok(spent) => {
                self.keys.insert(key, balance, head, spent, now_us);
            }
            Err(e) => {
                tracing::error!(key_id = %key.id, account_id = %key.account_id, error = %e, "key's spend cannot be read; it is not served");
            }
        }
    }
}

/// Keys read per store call when the index is warmed at start: what start-up holds at once.
const WARM_PAGE: u32 = 1_000;

/// What a key's budget has spent at `now_us`: its lifetime spend, or its spend in the current
/// period when it has a `budget_period` (summed from its usage records once, when loaded).
pub(crate) async fn budget_spent(store: &dyn Store, key: &ApiKey, now_us: i64) -> StoreResult<Usd> {
    match key.settings.budget_period.window(now_us) {
        Some((start, _)) => store.key_spend_since(&key.id, start).await,
        None => Ok(key.spend),
    }
}
