//! The in-memory key index: a request's key is found by the hash of its secret without touching
//! the database, and a revoked key is refused by the very next request.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use router_one_core::store::{ApiKey, KeySettings};
use router_one_core::{ApiError, ErrorKind, Usd};

use crate::budget::Budget;
use crate::rate::RateLimits;

/// A live inference key.
#[derive(Debug)]
pub struct KeyState {
    /// `key_…`.
    pub id: String,
    /// The owning account.
    pub account_id: String,
    settings: ArcSwap<KeySettings>,
    revoked: AtomicBool,
    /// The account's prepaid balance.
    pub account: Arc<Budget>,
    /// The key's `max_spend`, per `budget_period`.
    pub spend: Budget,
}

impl KeyState {
    /// Whether the key was revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// The key's limits and allowed models (without its label and metadata), borrowed: no
    /// reference count is taken, so reading a field per request is an atomic load, not an
    /// `Arc` clone.
    pub fn settings(&self) -> arc_swap::Guard<Arc<KeySettings>> {
        self.settings.load()
    }

    /// When the key expires, µs since the epoch.
    pub fn expires_at_us(&self) -> Option<i64> {
        self.settings.load().expires_at_us
    }

    /// The key's request, token and concurrency limits.
    pub fn rate_limits(&self) -> RateLimits {
        let s = self.settings.load();
        RateLimits {
            rpm: s.rpm_limit.map(u64::from),
            tpm: s.tpm_limit,
            concurrency: s.max_concurrency.map(u64::from),
        }
    }

    /// Refuses a revoked or expired key.
    pub fn check_active(&self, now_us: i64) -> Result<(), ApiError> {
        if self.is_revoked() {
            return Err(ApiError::new(
                ErrorKind::InvalidApiKey,
                "This API key has been revoked.",
            ));
        }
        if self.expires_at_us().is_some_and(|at| at <= now_us) {
            return Err(ApiError::new(ErrorKind::ExpiredApiKey, "This API key has expired."));
        }
        Ok(())
    }

    /// Refuses a revoked or expired key, or a model it may not use.
    pub fn check(&self, model: &str, now_us: i64) -> Result<(), ApiError> {
        self.check_active(now_us)?;
        if !self.settings.load().allows_model(model) {
            // The shape of an unknown model's refusal (a 404): relays disable a channel on a 403.
            return Err(ApiError::new(
                ErrorKind::ModelNotAllowed,
                format!(
                    "The model `{model}` is not available to this API key. GET /v1/models lists the ones it may use."
                ),
            )
            .with_param("model"));
        }
        Ok(())
    }
}

/// What the index keeps of a key's settings: what admission and responses read, without the label and the
/// builder's metadata, so the memory of every live key stays small whatever clients store.
fn limits_only(settings: &KeySettings) -> KeySettings {
    KeySettings {
        name: None,
        max_spend: settings.max_spend,
        budget_period: settings.budget_period,
        rpm_limit: settings.rpm_limit,
        tpm_limit: settings.tpm_limit,
        max_concurrency: settings.max_concurrency,
        models: settings.models.clone(),
        expires_at_us: settings.expires_at_us,
        metadata: Default::default(),
        on_oversized_max_tokens: settings.on_oversized_max_tokens,
        always_include_usage: settings.always_include_usage,
        router_headers: settings.router_headers,
    }
}

/// Every live key, by secret hash and by id, and every loaded account budget.
#[derive(Debug, Default)]
pub struct KeyIndex {
    by_hash: DashMap<String, Arc<KeyState>>,
    by_id: DashMap<String, Arc<KeyState>>,
    accounts: DashMap<String, LiveAccount>,
    /// A cluster node: budgets hold what this node's leases were granted, not the balances
    /// and caps themselves (those live in the database, shared by every node).
    leased: bool,
}

/// A loaded account: its budget, and the last ledger entry its limit includes.
#[derive(Debug, Clone)]
struct LiveAccount {
    budget: Arc<Budget>,
    /// Entries up to this id are in the budget's limit; later ones are applied once each by
    /// [`KeyIndex::apply_ledger_entry`]. The lock orders two appliers of the same account.
    ledger_head: Arc<Mutex<i64>>,
}

impl KeyIndex {
    /// The index of a cluster node: every account budget, and every key budget with a
    /// `max_spend`, is a [`Budget::leased`] share that starts empty and grows only by leases
    /// granted by the database (`metering` never asks for them itself: the server's lease book
    /// does, off the hot path). Ledger entries are not applied to it.
    pub fn leased() -> KeyIndex {
        KeyIndex {
            leased: true,
            ..KeyIndex::default()
        }
    }

    /// Whether budgets are lease shares ([`KeyIndex::leased`]).
    pub fn is_leased(&self) -> bool {
        self.leased
    }

    /// A new key budget: its cap per period on a single node, a leased share on a cluster node.
    fn key_budget(&self, settings: &KeySettings, spent: Usd, now_us: i64) -> Budget {
        match settings.max_spend {
            Some(_) if self.leased => Budget::leased(settings.budget_period, now_us),
            _ => Budget::periodic(settings.max_spend, settings.budget_period, spent, now_us),
        }
    }

    /// Adds a key, or returns it if already loaded (two requests may race to load the same key;
    /// both must share one budget). `balance` is the account's stored balance including its
    /// ledger entries up to `ledger_head`, used only if the account is not loaded yet: once
    /// loaded, the in-memory budget is the truth, moved by [`KeyIndex::apply_ledger_entry`].
    /// `spent` is what the key's budget has already spent: its lifetime spend, or its spend in
    /// the period containing `now_us` when it has a `budget_period`.
    pub fn insert(&self, key: &ApiKey, balance: Usd, ledger_head: i64, spent: Usd, now_us: i64) -> Arc<KeyState> {
        if let Some(existing) = self.get(&key.secret_hash) {
            return existing;
        }
        let account = self.load_account(&key.account_id, balance, ledger_head);
        let state = Arc::new(KeyState {
            id: key.id.clone(),
            account_id: key.account_id.clone(),
            settings: ArcSwap::from_pointee(limits_only(&key.settings)),
            revoked: AtomicBool::new(key.revoked_at_us.is_some()),
            account,
            spend: self.key_budget(&key.settings, spent, now_us),
        });
        let state = self.by_hash.entry(key.secret_hash.clone()).or_insert(state).clone();
        self.by_id.insert(key.id.clone(), state.clone());
        state
    }

    /// The key whose secret hashes to `hash`.
    pub fn get(&self, hash: &str) -> Option<Arc<KeyState>> {
        self.by_hash.get(hash).map(|e| e.value().clone())
    }

    /// The account's live budget, loaded with `balance` (its stored balance including its ledger
    /// entries up to `ledger_head`) if it is not live yet.
    pub fn load_account(&self, account_id: &str, balance: Usd, ledger_head: i64) -> Arc<Budget> {
        self.accounts
            .entry(account_id.to_owned())
            .or_insert_with(|| LiveAccount {
                budget: Arc::new(if self.leased {
                    Budget::leased(router_one_core::store::BudgetPeriod::None, 0)
                } else {
                    Budget::new(Some(balance), Usd::ZERO)
                }),
                ledger_head: Arc::new(Mutex::new(ledger_head)),
            })
            .budget
            .clone()
    }

    /// The account's live budget, if it is loaded.
    pub fn account(&self, account_id: &str) -> Option<Arc<Budget>> {
        self.accounts.get(account_id).map(|e| e.value().budget.clone())
    }

    /// Applies a ledger entry posted outside the usage path (a top-up, a refund, an operator's
    /// adjustment) to the account's live budget, once: an entry at or below what the budget
    /// already includes is skipped, and so is an account that is not loaded (it will read its
    /// balance when it is). Returns whether the budget moved.
    pub fn apply_ledger_entry(&self, account_id: &str, entry_id: i64, amount: Usd) -> bool {
        if self.leased {
            // The balance lives in the database; leases are granted against it as it is.
            return false;
        }
        let Some(account) = self.accounts.get(account_id).map(|e| e.value().clone()) else {
            return false;
        };
        let mut head = account
            .ledger_head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entry_id <= *head {
            return false;
        }
        *head = entry_id;
        account.budget.add_to_limit(amount);
        true
    }

    /// The key with this id.
    pub fn by_id(&self, id: &str) -> Option<Arc<KeyState>> {
        self.by_id.get(id).map(|e| e.value().clone())
    }

    /// Replaces a key's settings (its `max_spend` takes effect at once). When its
    /// `budget_period` changed, `spent` is its spend in the new period containing `now_us`.
    /// On a cluster node a key whose cap or period changed starts a fresh share (what its old
    /// share held goes back to the database through the lease book).
    pub fn update(&self, id: &str, settings: &KeySettings, spent: Option<Usd>, now_us: i64) {
        if let Some(state) = self.by_id(id) {
            if self.leased {
                // The share stays while the key keeps a cap on the same period (a new cap is
                // the database's to enforce, on the next grant); a cap added, removed or moved
                // to another period starts a fresh share.
                let old = state.settings.load();
                if old.max_spend.is_some() != settings.max_spend.is_some()
                    || old.budget_period != settings.budget_period
                {
                    let limit = settings.max_spend.map(|_| Usd::ZERO);
                    state.spend.reset_leased(limit, settings.budget_period, now_us);
                }
                state.settings.store(Arc::new(limits_only(settings)));
                return;
            }
            match spent {
                Some(spent) => state
                    .spend
                    .reset(settings.max_spend, settings.budget_period, spent, now_us),
                None => state.spend.set_limit(settings.max_spend),
            }
            state.settings.store(Arc::new(limits_only(settings)));
        }
    }

    /// Revokes a key: the next request with it is refused.
    pub fn revoke(&self, id: &str) {
        if let Some(state) = self.by_id(id) {
            state.revoked.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use router_one_core::store::OversizedMaxTokens;

    fn key(models: Option<Vec<String>>, expires: Option<i64>) -> ApiKey {
        ApiKey {
            id: "key_1".into(),
            account_id: "acct_1".into(),
            secret_hash: "h".into(),
            hint: "sk-rk-ab…".into(),
            settings: KeySettings {
                models,
                expires_at_us: expires,
                ..Default::default()
            },
            created_at_us: 0,
            revoked_at_us: None,
            spend: Usd::ZERO,
        }
    }

    #[test]
    fn checks_revocation_expiry_and_models() {
        let index = KeyIndex::default();
        let k = index.insert(&key(Some(vec!["a".into()]), Some(100)), Usd::ZERO, 0, Usd::ZERO, 0);
        assert!(k.check("a", 99).is_ok());
        let refusal = k.check("b", 99).unwrap_err();
        assert_eq!(refusal.kind, ErrorKind::ModelNotAllowed);
        assert_eq!(
            (refusal.kind.status(), refusal.kind.code(), refusal.param.as_deref()),
            (404, "model_not_found", Some("model"))
        );
        // one-api and new-api disable a channel whose message says these.
        for word in ["permission", "credit", "balance", "quota"] {
            assert!(!refusal.message.to_lowercase().contains(word), "{}", refusal.message);
        }
        assert_eq!(k.check("a", 100).unwrap_err().kind, ErrorKind::ExpiredApiKey);
        index.revoke("key_1");
        assert_eq!(
            index.get("h").unwrap().check("a", 0).unwrap_err().kind,
            ErrorKind::InvalidApiKey
        );
    }

    #[test]
    fn relay_options_are_kept_and_follow_edits() {
        let index = KeyIndex::default();
        let k = index.insert(&key(None, None), Usd::ZERO, 0, Usd::ZERO, 0);
        let s = k.settings();
        assert!(s.router_headers && !s.always_include_usage);
        assert_eq!(s.on_oversized_max_tokens, OversizedMaxTokens::Clamp);
        let edited = KeySettings {
            on_oversized_max_tokens: OversizedMaxTokens::Refuse,
            always_include_usage: true,
            router_headers: false,
            ..KeySettings::default()
        };
        index.update("key_1", &edited, None, 0);
        let s = k.settings();
        assert!(!s.router_headers && s.always_include_usage);
        assert_eq!(s.on_oversized_max_tokens, OversizedMaxTokens::Refuse);
    }

    #[test]
    fn keys_of_one_account_share_its_budget() {
        let index = KeyIndex::default();
        let a = index.insert(&key(None, None), Usd::from_units(10), 7, Usd::ZERO, 0);
        let mut other = key(None, None);
        other.id = "key_2".into();
        other.secret_hash = "h2".into();
        let b = index.insert(&other, Usd::from_units(999), 9, Usd::ZERO, 0);
        assert!(Arc::ptr_eq(&a.account, &b.account));
        assert_eq!(b.account.available(), Some(Usd::from_units(10)));
    }

    #[test]
    fn ledger_entries_apply_once_and_only_after_the_loaded_head() {
        let index = KeyIndex::default();
        let k = index.insert(&key(None, None), Usd::from_units(100), 7, Usd::ZERO, 0);
        // Entry 7 is already in the loaded balance; an unknown account is skipped.
        assert!(!index.apply_ledger_entry("acct_1", 7, Usd::from_units(50)));
        assert!(!index.apply_ledger_entry("acct_other", 8, Usd::from_units(50)));
        assert!(index.apply_ledger_entry("acct_1", 8, Usd::from_units(50)));
        assert!(!index.apply_ledger_entry("acct_1", 8, Usd::from_units(50)));
        assert!(index.apply_ledger_entry("acct_1", 9, Usd::from_units(-30)));
        assert_eq!(k.account.available(), Some(Usd::from_units(120)));
    }
}
