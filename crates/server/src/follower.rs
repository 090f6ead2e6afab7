//! The ledger follower: how balance changes made off the inference path reach the in-memory
//! budgets that admission reserves against. A top-up confirmed by a webhook, a refund, a
//! commission, an operator's `admin credit` from another process, another node's webhook: each
//! is a ledger entry, and this one task applies every new non-usage entry to its account's live
//! budget, once (the account's own head skips what its loaded balance already holds). It also
//! reloads the FX rates the operator set. It polls every second; a handler that posted entries
//! itself (a webhook) calls [`sync`] and waits for it, so its effect is live when it answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use router_one_core::checkout::{CheckoutConfig, FxRate};
use router_one_core::store::StoreResult;

use crate::state::AppState;

/// How often the database is asked for entries posted elsewhere.
const POLL: Duration = Duration::from_secs(1);
/// Entries read per query.
const PAGE: u32 = 500;

/// The follower's position: the last ledger entry looked at (of any account). The lock makes
/// one sync at a time. It also remembers when the database last answered, which `GET /health`
/// reports: the follower asks every second, so that is the database's reachability for free.
#[derive(Debug)]
pub(crate) struct Follower {
    cursor: Mutex<i64>,
    origin: Instant,
    /// Milliseconds from `origin` to the end of the last successful sync.
    synced_ms: AtomicU64,
}

impl Follower {
    /// Starts at `ledger_head`, just read from the database (so it counts as reached now).
    pub(crate) fn new(ledger_head: i64) -> Follower {
        Follower {
            cursor: Mutex::new(ledger_head),
            origin: Instant::now(),
            synced_ms: AtomicU64::new(0),
        }
    }

    /// How long ago the database last answered the follower.
    pub(crate) fn since_last_sync(&self) -> Duration {
        let synced = Duration::from_millis(self.synced_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(synced)
    }

    fn mark_synced(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.synced_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

/// Applies every entry posted since the last sync; returns when they are all applied, so a
/// caller that just posted entries knows the live budgets include them.
pub(crate) async fn sync(app: &AppState) -> StoreResult<()> {
    let mut cursor = app.follower.cursor.lock().await;
    loop {
        let entries = app.store.ledger_since(*cursor, PAGE).await?;
        for entry in &entries {
            app.keys.apply_ledger_entry(&entry.account_id, entry.id, entry.amount);
            *cursor = entry.id;
        }
        if entries.len() < PAGE as usize {
            app.follower.mark_synced();
            return Ok(());
        }
    }
}

/// The config file's checkout settings with the operator's FX rates laid over them (a rate
/// that fails the config's own validation is skipped, loudly).
pub(crate) fn with_fx_overrides(base: &CheckoutConfig, overrides: BTreeMap<String, FxRate>) -> CheckoutConfig {
    let mut config = base.clone();
    for (currency, rate) in overrides {
        match rate.validate(&currency) {
            Ok(()) => {
                config.fx.insert(currency, rate);
            }
            Err(e) => tracing::error!(%currency, error = %e, "ignoring an invalid FX rate set by the operator"),
        }
    }
    config
}

/// Runs the follower until the process ends.
pub fn spawn(app: Arc<AppState>) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = sync(&app).await {
                tracing::warn!(error = %e, "ledger follower: reading the ledger failed; retrying");
            }
            match app.store.fx_rates().await {
                Ok(rates) => {
                    let config = with_fx_overrides(&app.config.checkout, rates);
                    if **app.checkout.load() != config {
                        tracing::info!("checkout: FX rates reloaded");
                        app.checkout.store(Arc::new(config));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ledger follower: reading FX rates failed"),
            }
            tokio::time::sleep(POLL).await;
        }
    });
}
