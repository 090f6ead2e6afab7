//! What a usage batch moves on budget leases (design `scale-out.md` §4.2 "record"): for each
//! newly inserted record drawn on a node run's leases, with cost c, each of its leases (the
//! account's, and the key's for its period if it has one) gets `committed += c`, its scope
//! `leased −= min(c, hold before)`, and the key budget `spent += c`. In the batch's
//! transaction, so a replayed record (not inserted again) moves nothing.
//!
//! **A record is never refused** (promise 5): a lease that is missing or closed (its node was
//! forgotten, then its journal came back) releases nothing, and a record may cost more than
//! its lease held (an upstream reporting past the worst case). Such a record is still
//! recorded and debited; if the scope's invariant is broken afterwards, an
//! `overshoot_events` row says by how much (alert material). As in the rest of the batch, every
//! sum is computed in Rust, saturating, never in SQL.

use std::collections::{BTreeMap, HashMap};

use router_one_core::usage::UsageRecord;
use sqlx::PgConnection;

use super::TxResult;
use super::cluster::{KeyBudget, lock_key_budgets};
use crate::usage_batch::{clamped_sum, stored_cost};

/// One lease, as the `leases` table's unique key names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct LeaseRef<'a> {
    /// `"a"` (account) or `"k"` (key budget).
    kind: &'static str,
    scope_id: &'a str,
    period_start_us: i64,
    node_id: &'a str,
    node_epoch: i64,
}

/// A lease's state when the batch locked it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseState {
    Open,
    Closed,
    Missing,
}

impl LeaseState {
    fn as_str(self) -> &'static str {
        match self {
            LeaseState::Open => "open",
            LeaseState::Closed => "closed",
            LeaseState::Missing => "missing",
        }
    }
}

/// What a batch's records draw on one lease.
#[derive(Debug)]
struct Draw<'a> {
    /// Σ cost, units (saturated).
    cost: i64,
    /// Taken off the scope's `leased`: at most the lease's hold.
    released: i64,
    state: LeaseState,
    /// The smallest and largest request ids among the records.
    first: &'a str,
    last: &'a str,
}

impl Draw<'_> {
    /// The cost its lease's hold did not cover.
    fn unheld(&self) -> i64 {
        self.cost - self.released
    }
}

/// What one batch's newly inserted records draw on leases, and the key budget rows they move.
#[derive(Default)]
pub(super) struct LeaseDraws<'a> {
    draws: BTreeMap<LeaseRef<'a>, Draw<'a>>,
    /// The key budget rows drawn on, as locked and then as updated.
    budgets: BTreeMap<(String, i64), KeyBudget>,
}

impl<'a> LeaseDraws<'a> {
    /// The draws of `records` (the batch's newly inserted ones): only records with a lease
    /// and a cost.
    pub(super) fn new(records: &[&'a UsageRecord]) -> LeaseDraws<'a> {
        let mut draws = LeaseDraws::default();
        for record in records {
            let (Some(lease), cost) = (&record.lease, stored_cost(record)) else {
                continue;
            };
            if cost == 0 {
                continue;
            }
            let mut add = |kind, scope_id, period_start_us| {
                let at = LeaseRef {
                    kind,
                    scope_id,
                    period_start_us,
                    node_id: &lease.node_id,
                    node_epoch: lease.node_epoch,
                };
                let id = record.request_id.as_str();
                let draw = draws.draws.entry(at).or_insert(Draw {
                    cost: 0,
                    released: 0,
                    state: LeaseState::Missing,
                    first: id,
                    last: id,
                });
                draw.cost = clamped_sum(draw.cost, cost, "a lease's batch draw");
                draw.first = draw.first.min(id);
                draw.last = draw.last.max(id);
            };
            add("a", &record.account_id, 0);
            if let Some(period) = lease.key_period_start_us {
                add("k", &record.key_id, period);
            }
        }
        draws
    }

    /// Locks the key budget rows drawn on (before the accounts: the lock order).
    pub(super) async fn lock_budgets(&mut self, conn: &mut PgConnection) -> TxResult<()> {
        let (ids, periods): (Vec<&str>, Vec<i64>) = self
            .draws
            .keys()
            .filter(|l| l.kind == "k")
            .map(|l| (l.scope_id, l.period_start_us))
            .unzip();
        self.budgets = lock_key_budgets(conn, &ids, &periods).await?;
        Ok(())
    }

    /// Locks the leases drawn on (after the accounts), adds the draws to what they committed
    /// and the key budgets' spend, takes what they release off the key budgets' `leased`, and
    /// returns what they release per account (for [`super::usage`] to take off the accounts'
    /// `leased` as it debits their balances).
    pub(super) async fn settle(&mut self, conn: &mut PgConnection) -> TxResult<BTreeMap<&'a str, i64>> {
        if self.draws.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.settle_leases(conn).await?;
        let mut accounts: BTreeMap<&'a str, i64> = BTreeMap::new();
        for (at, draw) in &self.draws {
            if at.kind == "a" {
                let released = accounts.entry(at.scope_id).or_default();
                *released = clamped_sum(*released, draw.released, "an account's released holds");
                continue;
            }
            let Some(budget) = self.budgets.get_mut(&(at.scope_id.to_owned(), at.period_start_us)) else {
                tracing::warn!(
                    key_id = at.scope_id,
                    period_start_us = at.period_start_us,
                    first = draw.first,
                    "usage drawn on a key budget that does not exist; only the key's lifetime spend counts it"
                );
                continue;
            };
            budget.spent = clamped_sum(budget.spent, draw.cost, "a key budget's spend");
            budget.leased = budget.leased.saturating_sub(draw.released);
        }
        let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((key_id, period), budget) in &self.budgets {
            columns.0.push(key_id.as_str());
            columns.1.push(*period);
            columns.2.push(budget.spent);
            columns.3.push(budget.leased);
        }
        sqlx::query(
            "UPDATE key_budgets b SET spent_units = u.spent, leased_units = u.leased \
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u (key_id, period, spent, leased) \
             WHERE b.key_id = u.key_id AND b.period_start_us = u.period",
        )
        .bind(&columns.0)
        .bind(&columns.1)
        .bind(&columns.2)
        .bind(&columns.3)
        .execute(&mut *conn)
        .await?;
        Ok(accounts)
    }

    /// Locks the leases drawn on in lease id order, computes each draw's release and writes
    /// the leases' new `committed_units`.
    async fn settle_leases(&mut self, conn: &mut PgConnection) -> TxResult<()> {
        let mut wanted = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for at in self.draws.keys() {
            wanted.0.push(at.kind);
            wanted.1.push(at.scope_id);
            wanted.2.push(at.period_start_us);
            wanted.3.push(at.node_id);
            wanted.4.push(at.node_epoch);
        }
        type LeaseRow = (i64, String, String, i64, String, i64, i64, i64, bool);
        let rows: Vec<LeaseRow> = sqlx::query_as(
            "SELECT lease_id, scope_kind, scope_id, period_start_us, node_id, node_epoch, amount_units, \
                 committed_units, closed_at IS NOT NULL FROM leases \
             WHERE (scope_kind, scope_id, period_start_us, node_id, node_epoch) IN \
                 (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])) \
             ORDER BY lease_id FOR UPDATE",
        )
        .bind(&wanted.0)
        .bind(&wanted.1)
        .bind(&wanted.2)
        .bind(&wanted.3)
        .bind(&wanted.4)
        .fetch_all(&mut *conn)
        .await?;
        let by_key: HashMap<(&str, &str, i64, &str, i64), LeaseRef<'a>> = self
            .draws
            .keys()
            .map(|at| {
                (
                    (at.kind, at.scope_id, at.period_start_us, at.node_id, at.node_epoch),
                    *at,
                )
            })
            .collect();
        let mut updated = (Vec::new(), Vec::new());
        for (lease_id, kind, scope_id, period, node_id, epoch, amount, committed, closed) in &rows {
            let Some(draw) = by_key
                .get(&(kind.as_str(), scope_id.as_str(), *period, node_id.as_str(), *epoch))
                .and_then(|at| self.draws.get_mut(at))
            else {
                continue;
            };
            let hold = amount.saturating_sub(*committed).max(0);
            draw.state = if *closed { LeaseState::Closed } else { LeaseState::Open };
            draw.released = if *closed { 0 } else { draw.cost.min(hold) };
            updated.0.push(*lease_id);
            updated
                .1
                .push(clamped_sum(*committed, draw.cost, "a lease's committed spend"));
        }
        sqlx::query(
            "UPDATE leases l SET committed_units = u.committed \
             FROM unnest($1::bigint[], $2::bigint[]) AS u (lease_id, committed) WHERE l.lease_id = u.lease_id",
        )
        .bind(&updated.0)
        .bind(&updated.1)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Writes an `overshoot_events` row for every draw whose cost its lease did not cover
    /// when its scope's invariant is broken after the batch: a key budget's
    /// `spent + leased > limit`, an account's `balance − leased < 0` (`accounts`: each
    /// account's balance and leased after the batch).
    pub(super) async fn record_overshoots(
        &self,
        conn: &mut PgConnection,
        accounts: &BTreeMap<&str, (i64, i64)>,
    ) -> TxResult<()> {
        let mut events = Overshoots::default();
        for (at, draw) in self.draws.iter().filter(|(_, d)| d.unheld() > 0) {
            let over = if at.kind == "a" {
                accounts
                    .get(at.scope_id)
                    .map(|(balance, leased)| i128::from(*leased) - i128::from(*balance))
            } else {
                self.budgets
                    .get(&(at.scope_id.to_owned(), at.period_start_us))
                    .map(|b| i128::from(b.spent) + i128::from(b.leased) - i128::from(b.limit))
            };
            if let Some(over) = over.filter(|over| *over > 0) {
                let over = i64::try_from(over).unwrap_or(i64::MAX);
                tracing::error!(
                    scope_kind = at.kind,
                    scope_id = at.scope_id,
                    period_start_us = at.period_start_us,
                    node_id = at.node_id,
                    node_epoch = at.node_epoch,
                    lease = draw.state.as_str(),
                    unheld = draw.unheld(),
                    over,
                    first = draw.first,
                    last = draw.last,
                    "usage spent past its lease and its scope's cap"
                );
                events.push(at, draw, over);
            }
        }
        if events.scope_kind.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO overshoot_events (scope_kind, scope_id, period_start_us, node_id, node_epoch, lease_state, \
                 unheld_units, over_units, first_request, last_request) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], \
                 $7::bigint[], $8::bigint[], $9::text[], $10::text[])",
        )
        .bind(&events.scope_kind)
        .bind(&events.scope_id)
        .bind(&events.period_start_us)
        .bind(&events.node_id)
        .bind(&events.node_epoch)
        .bind(&events.lease_state)
        .bind(&events.unheld)
        .bind(&events.over)
        .bind(&events.first)
        .bind(&events.last)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// `overshoot_events` rows, one array per column.
#[derive(Default)]
struct Overshoots<'a> {
    scope_kind: Vec<&'static str>,
    scope_id: Vec<&'a str>,
    period_start_us: Vec<i64>,
    node_id: Vec<&'a str>,
    node_epoch: Vec<i64>,
    lease_state: Vec<&'static str>,
    unheld: Vec<i64>,
    over: Vec<i64>,
    first: Vec<&'a str>,
    last: Vec<&'a str>,
}

impl<'a> Overshoots<'a> {
    fn push(&mut self, at: &LeaseRef<'a>, draw: &Draw<'a>, over: i64) {
        self.scope_kind.push(at.kind);
        self.scope_id.push(at.scope_id);
        self.period_start_us.push(at.period_start_us);
        self.node_id.push(at.node_id);
        self.node_epoch.push(at.node_epoch);
        self.lease_state.push(draw.state.as_str());
        self.unheld.push(draw.unheld());
        self.over.push(over);
        self.first.push(draw.first);
        self.last.push(draw.last);
    }
}
