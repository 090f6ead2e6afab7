//! The lease book of a cluster node: how the node's share of each budget (an account's balance,
//! a key's `max_spend` per period) is topped up from the database and given back.
//!
//! On a cluster node every account budget, and every key budget with a cap, is a leased share
//! (`metering::Budget::leased`): admission reserves locally against what this node's leases hold,
//! exactly as a single node reserves against the whole balance, so the hot path never waits for
//! the database. The database grants a lease only from what no other node holds and nobody has
//! spent (`ClusterStore::grant_lease`), so the cap holds on any number of nodes.
//!
//! - **Refill** (a request's slow path): when a share cannot cover a request's worst case, the
//!   request waits for one grant of at least the shortfall ([`LeaseBook::refill`]). Concurrent
//!   requests short on the same scope share one call at a time (single flight). Slices double
//!   while a scope keeps asking within [`BURST`], so a busy key asks rarely; a slice is never
//!   more than half of what the scope has left per holder, so one node cannot starve the others.
//! - **Prefetch**: after a reservation leaves a share with fewer than [`PREFETCH_WORST_CASES`]
//!   worst cases, a background task tops it up (one at a time per account), so a steady key
//!   finds money waiting and never pays for a grant on its hot path.
//! - **Exact mode**: once a grant reply shows the scope nearly used up (less than
//!   [`EXACT_HEADROOM`] worst cases per holder), this node asks for exactly what each request
//!   needs and gives back what it did not use as soon as the request settles, so nothing sits on
//!   an idle node while another is refused.
//! - **Idle return**: a share unused for [`IDLE`] goes back to the database.
//! - A node killed while holding leases freezes their money in the database (never re-granted,
//!   never lost) until it restarts with the same node id, replays its journal and closes its old
//!   runs' leases ([`ClusterStore::close_earlier_leases`]), or an operator forgets it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use router_one_core::Usd;
use router_one_core::cluster::{ClusterStore, LeaseScope, NodeRun};
use router_one_core::store::StoreResult;
use router_one_metering::{Budget, KeyIndex, KeyState};

/// A scope's requests within this long of its last grant ask for twice the last slice.
const BURST: Duration = Duration::from_secs(2);
/// The first slice of a scope, in worst cases of the request that asked.
const FIRST_SLICE: i64 = 8;
/// Exact mode when the scope has less than this many worst cases left per holder.
const EXACT_HEADROOM: i64 = 4;
/// A share nobody reserved from for this long goes back to the database.
const IDLE: Duration = Duration::from_secs(3);
/// How often idle shares and exact-mode leftovers are given back.
const SWEEP: Duration = Duration::from_millis(250);
/// A share with fewer than this many worst cases of the last request left is topped up in the
/// background, so a steady key never waits for the database.
const PREFETCH_WORST_CASES: i64 = 16;
/// How long a request waits for a grant before it is answered from what the node holds.
pub(crate) const REFILL_WAIT: Duration = Duration::from_secs(5);

/// What the node knows of one scope.
#[derive(Debug)]
struct ScopeLease {
    /// One grant call at a time per scope; requests short at once share it.
    single_flight: tokio::sync::Mutex<()>,
    /// Requests waiting for this scope's refill: the call asks for all of them at once.
    waiting: AtomicI64,
    /// Near the cap: ask for exactly one request's need and give back leftovers at once.
    exact: AtomicBool,
    /// The last grant reply named holders other than this node.
    others_hold: AtomicBool,
    /// The last grant call failed (the database did not answer).
    unreachable: AtomicBool,
    /// µs since when the share's spend and reservations have not moved (idle return), and
    /// what they were then: the sweep watches the budget, so requests pay nothing for it.
    unchanged_since_us: AtomicI64,
    seen: std::sync::Mutex<(Usd, Usd)>,
    /// µs of the last grant call, and the slice it asked for (slices double within a burst).
    last_grant_us: AtomicI64,
    last_ask_units: AtomicI64,
    /// What the scope had left and how many others held money at the last grant (fair share).
    last_available_units: AtomicI64,
    last_holders: std::sync::atomic::AtomicU32,
}

impl ScopeLease {
    fn new() -> ScopeLease {
        ScopeLease {
            single_flight: tokio::sync::Mutex::new(()),
            waiting: AtomicI64::new(0),
            exact: AtomicBool::new(false),
            others_hold: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
            unchanged_since_us: AtomicI64::new(0),
            seen: std::sync::Mutex::new((Usd::ZERO, Usd::ZERO)),
            last_grant_us: AtomicI64::new(i64::MIN / 2),
            last_ask_units: AtomicI64::new(0),
            last_available_units: AtomicI64::new(i64::MAX),
            last_holders: std::sync::atomic::AtomicU32::new(0),
        }
    }
}

/// The node's leases, by scope.
pub struct LeaseBook {
    store: Arc<dyn ClusterStore>,
    node: NodeRun,
    scopes: DashMap<LeaseScope, Arc<ScopeLease>>,
}

impl std::fmt::Debug for LeaseBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseBook")
            .field("node", &self.node)
            .field("scopes", &self.scopes.len())
            .finish()
    }
}

impl LeaseBook {
    /// The lease book of node run `node`.
    pub fn new(store: Arc<dyn ClusterStore>, node: NodeRun) -> LeaseBook {
        LeaseBook {
            store,
            node,
            scopes: DashMap::new(),
        }
    }

    /// This node run.
    pub fn node(&self) -> &NodeRun {
        &self.node
    }

    /// The start of the key's budget period containing `now_us`, µs (0: a lifetime cap);
    /// `None` if the key has no cap, only the account's balance applies.
    pub(crate) fn key_period_start(key: &KeyState, now_us: i64) -> Option<i64> {
        let settings = key.settings();
        settings.max_spend?;
        Some(settings.budget_period.window(now_us).map_or(0, |(start, _)| start))
    }

    /// The key's budget scope for a request arriving at `now_us` (`None`: no cap).
    pub(crate) fn key_scope(key: &KeyState, now_us: i64) -> Option<LeaseScope> {
        Some(LeaseScope::Key {
            key_id: key.id.clone(),
            period_start_us: Self::key_period_start(key, now_us)?,
        })
    }

    fn scope(&self, scope: &LeaseScope) -> Arc<ScopeLease> {
        if let Some(found) = self.scopes.get(scope) {
            return found.clone();
        }
        self.scopes
            .entry(scope.clone())
            .or_insert_with(|| Arc::new(ScopeLease::new()))
            .clone()
    }

    /// The scopes whose share cannot cover `need` now, with their budgets.
    fn short<'a>(&self, key: &'a KeyState, need: Usd, now_us: i64) -> Vec<(LeaseScope, &'a Budget)> {
        let mut short = Vec::with_capacity(2);
        if let Some(scope) = Self::key_scope(key, now_us)
            && key.spend.available_at(now_us).is_some_and(|a| a < need)
        {
            short.push((scope, &key.spend));
        }
        if key.account.available_at(now_us).is_some_and(|a| a < need) {
            short.push((
                LeaseScope::Account {
                    account_id: key.account_id.clone(),
                },
                key.account.as_ref(),
            ));
        }
        short
    }

    /// Whether a request whose worst case is `need` must wait for a grant first. On the hot
    /// path: two budget reads, nothing allocated.
    pub(crate) fn needs_refill(&self, key: &KeyState, need: Usd, now_us: i64) -> bool {
        let short = |budget: &Budget| budget.available_at(now_us).is_some_and(|a| a < need);
        (key.spend.is_leased() && short(&key.spend)) || short(&key.account)
    }

    /// Tops up every share of `key` that cannot cover `need` with one grant each (see the
    /// module doc). A refusal or a database failure leaves the share as it is: the request is
    /// then answered from what the node holds.
    /// `least` is the worst case of the smallest answer the request could still be served
    /// with (its output clamped): a grant of less than `need` but enough for `least` is taken.
    pub(crate) async fn refill(&self, key: Arc<KeyState>, need: Usd, least: Usd) {
        self.top_up(key, need, least.min(need), false).await;
    }

    /// After a reservation: if the key's shares are running low (fewer than
    /// [`PREFETCH_WORST_CASES`] of `need` left), tops them up in a background task, one at a
    /// time per account, so the next requests find money waiting. Nothing near a cap (exact
    /// mode asks per request). On the hot path: two budget reads.
    pub(crate) fn prefetch(self: &Arc<Self>, key: &Arc<KeyState>, need: Usd, now_us: i64) {
        let target = Usd::from_units(need.units().saturating_mul(PREFETCH_WORST_CASES));
        if !self.needs_refill(key, target, now_us) || !key.account.begin_refill() {
            return;
        }
        let (book, key) = (self.clone(), key.clone());
        tokio::spawn(async move {
            book.top_up(key.clone(), target, target, true).await;
            key.account.end_refill();
        });
    }

    async fn top_up(&self, key: Arc<KeyState>, need: Usd, least: Usd, prefetch: bool) {
        let now_us = router_one_core::ids::now_us();
        for (scope, budget) in self.short(&key, need, now_us) {
            let lease = self.scope(&scope);
            if prefetch && lease.exact.load(Ordering::Relaxed) {
                continue;
            }
            lease.waiting.fetch_add(1, Ordering::Relaxed);
            let _one_at_a_time = lease.single_flight.lock().await;
            let waiting = lease.waiting.fetch_sub(1, Ordering::Relaxed).max(1);
            let now_us = router_one_core::ids::now_us();
            let Some(available) = budget.available_at(now_us) else {
                continue;
            };
            if available >= need {
                continue; // another request's grant covered this one too
            }
            // Ask for every request waiting now (they queued behind this call), at least this one.
            let wanted = Usd::from_units(need.units().saturating_mul(waiting));
            let min = least.saturating_sub(available);
            let ask = self
                .ask(&lease, need, min, now_us)
                .max(wanted.saturating_sub(available));
            match self.store.grant_lease(&self.node, &scope, ask, min).await {
                Ok(grant) => {
                    lease.unreachable.store(false, Ordering::Relaxed);
                    let period_start_us = match &scope {
                        LeaseScope::Key { period_start_us, .. } => *period_start_us,
                        LeaseScope::Account { .. } => 0,
                    };
                    budget.grant(grant.granted, period_start_us, now_us);
                    lease.others_hold.store(grant.holders > 0, Ordering::Relaxed);
                    lease
                        .last_available_units
                        .store(grant.available.units(), Ordering::Relaxed);
                    lease.last_holders.store(grant.holders, Ordering::Relaxed);
                    let headroom = need
                        .units()
                        .saturating_mul(EXACT_HEADROOM)
                        .saturating_mul(i64::from(grant.holders.saturating_add(1)));
                    lease.exact.store(grant.available.units() < headroom, Ordering::Relaxed);
                    lease.unchanged_since_us.store(now_us, Ordering::Relaxed);
                    tracing::debug!(?scope, granted = %grant.granted, available = %grant.available, holders = grant.holders, "lease grant");
                }
                Err(e) => {
                    lease.unreachable.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %e, "lease grant failed; serving from what this node holds");
                }
            }
        }
    }

    /// The slice to ask for: `min` at least; exactly `min` in exact mode; else a first slice of
    /// [`FIRST_SLICE`] worst cases, doubling while the scope keeps asking within [`BURST`], and
    /// never more than half of what the scope had left per holder at the last grant.
    fn ask(&self, lease: &ScopeLease, need: Usd, min: Usd, now_us: i64) -> Usd {
        if lease.exact.load(Ordering::Relaxed) {
            return min;
        }
        let last = lease.last_grant_us.swap(now_us, Ordering::Relaxed);
        let burst = now_us.saturating_sub(last) < i64::try_from(BURST.as_micros()).unwrap_or(i64::MAX);
        let previous = lease.last_ask_units.load(Ordering::Relaxed);
        let units = if burst && previous > 0 {
            previous.saturating_mul(2)
        } else {
            need.units().saturating_mul(FIRST_SLICE)
        };
        // Fair share: at most half of what was left per holder (others and this node), so the
        // first node to ask cannot take what the others will need.
        let holders = i64::from(lease.last_holders.load(Ordering::Relaxed)).saturating_add(1);
        let fair = lease.last_available_units.load(Ordering::Relaxed) / holders.saturating_mul(2);
        let units = units.min(fair.max(need.units())).max(min.units());
        lease.last_ask_units.store(units, Ordering::Relaxed);
        Usd::from_units(units)
    }

    /// Whether the last grant asked for one of the key's scopes failed because the database
    /// did not answer: a shortfall then is not a used-up budget.
    pub(crate) fn unreachable(&self, key: &KeyState, now_us: i64) -> bool {
        self.any_scope(key, now_us, |lease| &lease.unreachable)
    }

    /// Whether money this node could not get is held by other nodes (their requests in flight
    /// or their unused shares): a refusal then is transient, not a used-up budget.
    pub(crate) fn held_elsewhere(&self, key: &KeyState, now_us: i64) -> bool {
        self.any_scope(key, now_us, |lease| &lease.others_hold)
    }

    /// Whether `flag` is set on the key's account scope or its current key scope (refusal
    /// paths only: it builds the scope names).
    fn any_scope(&self, key: &KeyState, now_us: i64, flag: impl Fn(&ScopeLease) -> &AtomicBool) -> bool {
        let account = LeaseScope::Account {
            account_id: key.account_id.clone(),
        };
        [Some(account), Self::key_scope(key, now_us)].iter().flatten().any(|s| {
            self.scopes
                .get(s)
                .is_some_and(|l| flag(l.value()).load(Ordering::Relaxed))
        })
    }

    /// Gives back what idle shares and exact-mode shares hold unused. Runs every [`SWEEP`].
    async fn sweep(&self, keys: &KeyIndex) {
        let now_us = router_one_core::ids::now_us();
        let idle_us = i64::try_from(IDLE.as_micros()).unwrap_or(i64::MAX);
        let due: Vec<(LeaseScope, Arc<ScopeLease>)> = self
            .scopes
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (scope, lease) in due {
            let Ok(_one_at_a_time) = lease.single_flight.try_lock() else {
                continue; // a grant is in flight: next sweep
            };
            let key;
            let account;
            let budget: &Budget = match &scope {
                LeaseScope::Account { account_id } => match keys.account(account_id) {
                    Some(found) => {
                        account = found;
                        &account
                    }
                    None => continue,
                },
                LeaseScope::Key { key_id, .. } => match keys.by_id(key_id) {
                    Some(found) => {
                        key = found;
                        &key.spend
                    }
                    None => continue,
                },
            };
            let period_start_us = match &scope {
                LeaseScope::Key { period_start_us, .. } => *period_start_us,
                LeaseScope::Account { .. } => 0,
            };
            let current = match &scope {
                LeaseScope::Key { .. } => budget.period_start_at(now_us) == period_start_us,
                LeaseScope::Account { .. } => true,
            };
            // Idle: spend and reservations have not moved for IDLE (requests in flight keep a
            // share busy; exact mode gives back after every request).
            let snapshot = budget.snapshot(now_us);
            let moved = {
                let mut seen = lease.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now_seen = (snapshot.spent, snapshot.reserved);
                let moved = *seen != now_seen;
                *seen = now_seen;
                moved
            };
            if moved {
                lease.unchanged_since_us.store(now_us, Ordering::Relaxed);
            }
            let idle = snapshot.reserved == Usd::ZERO
                && now_us.saturating_sub(lease.unchanged_since_us.load(Ordering::Relaxed)) >= idle_us;
            if current && !idle && !lease.exact.load(Ordering::Relaxed) {
                continue;
            }
            // A past period's share is all given back; the current one keeps nothing unused.
            let taken = if current {
                budget.take_unused(Usd::MAX, now_us)
            } else {
                Usd::ZERO
            };
            if current && taken == Usd::ZERO {
                continue;
            }
            let returned = self.shrink(&scope, if current { taken } else { Usd::MAX }).await;
            if current && returned.is_err() {
                // The database did not take it back: the share keeps it, to return later.
                budget.grant(taken, period_start_us, now_us);
            }
            if !current && returned.is_ok() {
                drop(_one_at_a_time);
                self.scopes.remove(&scope);
            }
        }
    }

    /// Gives back at once what this node's share of the key's cap holds unused (its cap was
    /// lowered elsewhere: the database grants nothing more past the new cap, and what the
    /// node holds unused must not be spent past it either). Money of requests in flight stays.
    pub(crate) async fn give_back_key_share(&self, key: &KeyState) {
        let now_us = router_one_core::ids::now_us();
        let Some(scope) = Self::key_scope(key, now_us) else {
            return;
        };
        let lease = self.scope(&scope);
        let _one_at_a_time = lease.single_flight.lock().await;
        let taken = key.spend.take_unused(Usd::MAX, now_us);
        if taken > Usd::ZERO && self.shrink(&scope, taken).await.is_err() {
            let period_start_us = Self::key_period_start(key, now_us).unwrap_or(0);
            key.spend.grant(taken, period_start_us, now_us);
        }
    }

    async fn shrink(&self, scope: &LeaseScope, amount: Usd) -> StoreResult<Usd> {
        let result = self.store.shrink_lease(&self.node, scope, amount).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "giving a lease back failed; retrying later");
        }
        result
    }
}

/// Runs the lease book's sweep until the process ends.
pub fn spawn_sweeper(book: Arc<LeaseBook>, state: Arc<crate::AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            book.sweep(&state.keys).await;
        }
    });
}
