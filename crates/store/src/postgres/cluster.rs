//! The node registry and budget leases on PostgreSQL ([`ClusterStore`] for [`PgStore`]): the
//! one place that grants, shrinks and closes leases, so the one place that keeps a key's
//! `spent + leased ≤ limit` and an account's `balance − leased ≥ 0` (promise 1 on several
//! nodes; design `scale-out.md` §4). The usage batch moves recorded costs out of the leases
//! ([`super::lease_draws`]); the tables, the invariants and the lock order are described in
//! `migrations/postgres/0002_cluster.sql`.
//!
//! A grant and a shrink are one call of a SQL function each (`grant_lease`, `shrink_lease`):
//! one round trip, the node row locked `FOR SHARE` (fencing) and the scope row locked before
//! the lease row. Every other path that touches leases locks in the same order, so none can
//! deadlock with another (PostgreSQL's 40P01 would still be retried, see [`super::retrying`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use router_one_core::cluster::{ClusterStore, KeyEvent, KeyEventKind, LeaseGrant, LeaseScope, Membership, NodeRun};
use router_one_core::money::Usd;
use router_one_core::store::{BudgetPeriod, StoreError, StoreResult};
use sqlx::{PgConnection, PgPool, Row};

use super::{PgStore, TxResult, numeric_sum, retrying};
use crate::convert::db_err;
use crate::usage_batch::clamped_sum;

/// How a scope is named in the `leases` table: kind (`'a'` or `'k'`), id, period start.
fn scope_columns(scope: &LeaseScope) -> (&'static str, &str, i64) {
    match scope {
        LeaseScope::Account { account_id } => ("a", account_id, 0),
        LeaseScope::Key {
            key_id,
            period_start_us,
        } => ("k", key_id, *period_start_us),
    }
}

/// Longest liveness window a heartbeat asks about (ten years): keeps the interval arithmetic
/// in range whatever the caller passes.
const MAX_LIVE_WITHIN_MS: u64 = 10 * 365 * 86_400_000;

#[async_trait]
impl ClusterStore for PgStore {
    async fn register_node(&self, node_id: &str) -> StoreResult<i64> {
        sqlx::query_scalar(
            "INSERT INTO gateway_nodes AS n (node_id, epoch, heartbeat_at) VALUES ($1, 1, now()) \
             ON CONFLICT (node_id) DO UPDATE \
             SET epoch = n.epoch + 1, heartbeat_at = now(), journal_pending = 0, forgotten_at = NULL \
             RETURNING epoch",
        )
        .bind(node_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)
    }

    async fn heartbeat(&self, node: &NodeRun, journal_pending: u64, live_within_ms: u64) -> StoreResult<Membership> {
        // One statement: the live list is read from the snapshot before this heartbeat, so
        // this node is added from the update's own result when it is current.
        let row = sqlx::query(
            "WITH beat AS (UPDATE gateway_nodes SET heartbeat_at = now(), journal_pending = $3 \
                 WHERE node_id = $1 AND epoch = $2 AND forgotten_at IS NULL RETURNING node_id) \
             SELECT EXISTS (SELECT 1 FROM beat) AS current, \
                 ARRAY(SELECT node_id FROM gateway_nodes WHERE forgotten_at IS NULL \
                       AND heartbeat_at >= now() - $4::double precision * interval '1 millisecond' \
                       UNION SELECT node_id FROM beat) AS live",
        )
        .bind(&node.node_id)
        .bind(node.epoch)
        .bind(i64::try_from(journal_pending).unwrap_or(i64::MAX))
        .bind(i64::try_from(live_within_ms.min(MAX_LIVE_WITHIN_MS)).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        let mut live: Vec<String> = row.try_get("live").map_err(db_err)?;
        live.sort();
        Ok(Membership {
            current: row.try_get("current").map_err(db_err)?,
            live,
        })
    }

    async fn grant_lease(&self, node: &NodeRun, scope: &LeaseScope, ask: Usd, min: Usd) -> StoreResult<LeaseGrant> {
        retrying("grant_lease", || grant(&self.pool, node, scope, ask, min)).await
    }

    async fn shrink_lease(&self, node: &NodeRun, scope: &LeaseScope, amount: Usd) -> StoreResult<Usd> {
        retrying("shrink_lease", || shrink(&self.pool, node, scope, amount)).await
    }

    async fn close_earlier_leases(&self, node: &NodeRun) -> StoreResult<Usd> {
        retrying("close_earlier_leases", || async {
            let mut tx = self.pool.begin().await?;
            let released = close_open_leases(&mut tx, &node.node_id, Some(node.epoch)).await?;
            tx.commit().await?;
            Ok(released)
        })
        .await
    }

    async fn close_own_leases(&self, node: &NodeRun) -> StoreResult<Usd> {
        retrying("close_own_leases", || async {
            let mut tx = self.pool.begin().await?;
            let released = close_open_leases(&mut tx, &node.node_id, Some(node.epoch.saturating_add(1))).await?;
            // Every record is committed: the row no longer shows the last heartbeat's backlog.
            sqlx::query("UPDATE gateway_nodes SET journal_pending = 0 WHERE node_id = $1 AND epoch = $2")
                .bind(&node.node_id)
                .bind(node.epoch)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(released)
        })
        .await
    }

    async fn key_events_since(&self, after: i64, limit: u32) -> StoreResult<Vec<KeyEvent>> {
        let rows: Vec<(i64, String, String, String)> =
            sqlx::query_as("SELECT seq, kind, id, account_id FROM key_events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        rows.into_iter()
            .map(|(seq, kind, id, account_id)| {
                let kind = match kind.as_str() {
                    "key" => KeyEventKind::Key,
                    "management_key" => KeyEventKind::ManagementKey,
                    other => return Err(StoreError::Database(format!("unknown key event kind `{other}`"))),
                };
                Ok(KeyEvent {
                    seq,
                    kind,
                    id,
                    account_id,
                })
            })
            .collect()
    }

    async fn key_events_head(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM key_events")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn forget_node(&self, node_id: &str) -> StoreResult<Option<Usd>> {
        retrying("forget_node", || async {
            let mut tx = self.pool.begin().await?;
            // Locks the node row before any scope: a grant in flight (which holds it FOR
            // SHARE) finishes first, and every later grant sees the node forgotten.
            let found: Option<String> = sqlx::query_scalar(
                "UPDATE gateway_nodes SET forgotten_at = COALESCE(forgotten_at, now()) WHERE node_id = $1 \
                 RETURNING node_id",
            )
            .bind(node_id)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_none() {
                return Ok(None);
            }
            let released = close_open_leases(&mut tx, node_id, None).await?;
            tx.commit().await?;
            Ok(Some(released))
        })
        .await
    }
}

/// One attempt at [`ClusterStore::grant_lease`]: the `grant_lease` function, and on the first
/// use of a key budget, the row's creation and the function again.
async fn grant(pool: &PgPool, node: &NodeRun, scope: &LeaseScope, ask: Usd, min: Usd) -> TxResult<LeaseGrant> {
    let (kind, scope_id, period) = scope_columns(scope);
    let mut created = false;
    loop {
        let row =
            sqlx::query("SELECT status, granted, available, holders FROM grant_lease($1, $2, $3, $4, $5, $6, $7)")
                .bind(kind)
                .bind(scope_id)
                .bind(period)
                .bind(&node.node_id)
                .bind(node.epoch)
                .bind(ask.units())
                .bind(min.units())
                .fetch_one(pool)
                .await?;
        let status: String = row.try_get("status")?;
        if status == "no_scope" {
            if kind == "k" && !created {
                create_key_budget(pool, scope_id, period).await?;
                created = true;
                continue;
            }
            let what = if kind == "k" { "key" } else { "account" };
            return Err(StoreError::Database(format!("no {what} `{scope_id}` to lease from")).into());
        }
        let holders: i64 = row.try_get("holders")?;
        return Ok(LeaseGrant {
            granted: Usd::from_units(row.try_get("granted")?),
            available: Usd::from_units(row.try_get("available")?),
            holders: u32::try_from(holders).unwrap_or(u32::MAX),
        });
    }
}

/// Creates the budget row of `key_id` for the period starting at `period_start_us` (0:
/// lifetime) if it does not exist: its limit is the key's current `max_spend`, its spend the
/// key's lifetime spend or the Σ cost of its records in `[period_start, end)`. Two nodes may
/// race to create it: the first insert wins, the other is a no-op. Errors for an unknown key,
/// a key without `max_spend`, or a period start that is not one of the key's periods.
///
/// Records of the period committed after the Σ is read and without a key lease (admitted when
/// the key had no `max_spend`, or by a node outside the cluster) are not in `spent`: a record
/// drawn on a key lease cannot be among them, as its lease needed this row first.
async fn create_key_budget(pool: &PgPool, key_id: &str, period_start_us: i64) -> TxResult<()> {
    let row = sqlx::query("SELECT max_spend_units, budget_period, spend_units FROM api_keys WHERE id = $1")
        .bind(key_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| StoreError::Database(format!("no key `{key_id}` to lease from")))?;
    let limit: Option<i64> = row.try_get("max_spend_units")?;
    let limit = limit.ok_or_else(|| StoreError::Database(format!("key `{key_id}` has no max_spend to lease")))?;
    let period_name: String = row.try_get("budget_period")?;
    let period = BudgetPeriod::parse(&period_name)
        .ok_or_else(|| StoreError::Database(format!("key `{key_id}`: unknown budget period `{period_name}`")))?;
    let mismatch = || {
        StoreError::Database(format!(
            "{period_start_us} does not start a {period_name} budget period of key `{key_id}`"
        ))
    };
    let spent: i64 = match (period, period_start_us) {
        (BudgetPeriod::None, 0) => row.try_get("spend_units")?,
        (BudgetPeriod::None, _) | (_, 0) => return Err(mismatch().into()),
        (period, start) => {
            let (_, end) = period.window(start).filter(|(s, _)| *s == start).ok_or_else(mismatch)?;
            let sum: String = sqlx::query_scalar(
                "SELECT COALESCE(SUM(cost_units), 0)::text FROM usage_records \
                 WHERE key_id = $1 AND created_at_us >= $2 AND created_at_us < $3",
            )
            .bind(key_id)
            .bind(start)
            .bind(end)
            .fetch_one(pool)
            .await?;
            numeric_sum(&sum, "a key's spend in its budget period")?
        }
    };
    sqlx::query(
        "INSERT INTO key_budgets (key_id, period_start_us, limit_units, spent_units) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(key_id)
    .bind(period_start_us)
    .bind(limit)
    .bind(spent)
    .execute(pool)
    .await?;
    Ok(())
}

/// One attempt at [`ClusterStore::shrink_lease`].
async fn shrink(pool: &PgPool, node: &NodeRun, scope: &LeaseScope, amount: Usd) -> TxResult<Usd> {
    let (kind, scope_id, period) = scope_columns(scope);
    let given: i64 = sqlx::query_scalar("SELECT shrink_lease($1, $2, $3, $4, $5, $6)")
        .bind(kind)
        .bind(scope_id)
        .bind(period)
        .bind(&node.node_id)
        .bind(node.epoch)
        .bind(amount.units())
        .fetch_one(pool)
        .await?;
    Ok(Usd::from_units(given))
}

/// Closes the open leases of `node_id` (of epochs below `below_epoch`, or all): each lease's
/// hold goes back to its scope, its amount becomes what it committed. Locks the scopes (key
/// budgets, then accounts, each in key order), then the leases, as every path does. Returns
/// the total released (saturated).
async fn close_open_leases(conn: &mut PgConnection, node_id: &str, below_epoch: Option<i64>) -> TxResult<Usd> {
    const OPEN: &str = "node_id = $1 AND ($2::bigint IS NULL OR node_epoch < $2) AND closed_at IS NULL";
    let scopes: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT DISTINCT scope_kind, scope_id, period_start_us FROM leases WHERE {OPEN}"
    ))
    .bind(node_id)
    .bind(below_epoch)
    .fetch_all(&mut *conn)
    .await?;
    if scopes.is_empty() {
        return Ok(Usd::ZERO);
    }
    let (keys, accounts): (Vec<_>, Vec<_>) = scopes.iter().partition(|(kind, _, _)| kind == "k");
    let key_ids: Vec<&str> = keys.iter().map(|(_, id, _)| id.as_str()).collect();
    let key_periods: Vec<i64> = keys.iter().map(|(_, _, period)| *period).collect();
    let account_ids: Vec<&str> = accounts.iter().map(|(_, id, _)| id.as_str()).collect();
    lock_key_budgets(conn, &key_ids, &key_periods).await?;
    sqlx::query("SELECT 1 FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&account_ids)
        .execute(&mut *conn)
        .await?;
    // amount and committed are ≥ 0: their difference cannot overflow.
    let closed: Vec<(String, String, i64, i64)> = sqlx::query_as(&format!(
        "UPDATE leases l SET amount_units = l.committed_units, closed_at = now() \
         FROM (SELECT lease_id, GREATEST(amount_units - committed_units, 0) AS hold FROM leases \
               WHERE {OPEN} ORDER BY lease_id FOR UPDATE) o \
         WHERE l.lease_id = o.lease_id \
         RETURNING l.scope_kind, l.scope_id, l.period_start_us, o.hold"
    ))
    .bind(node_id)
    .bind(below_epoch)
    .fetch_all(&mut *conn)
    .await?;
    let mut released: BTreeMap<(String, String, i64), i64> = BTreeMap::new();
    let mut total = 0_i64;
    for (kind, id, period, hold) in closed {
        let scope = released.entry((kind, id, period)).or_default();
        *scope = clamped_sum(*scope, hold, "a scope's released holds");
        total = clamped_sum(total, hold, "released holds");
    }
    release_holds(conn, &released).await?;
    Ok(Usd::from_units(total))
}

/// Locks the key budget rows named by `key_ids[i], periods[i]`, in key order, and returns them
/// by (key id, period start) as `(limit, spent, leased)`.
pub(super) async fn lock_key_budgets(
    conn: &mut PgConnection,
    key_ids: &[&str],
    periods: &[i64],
) -> TxResult<BTreeMap<(String, i64), KeyBudget>> {
    if key_ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT key_id, period_start_us, limit_units, spent_units, leased_units FROM key_budgets \
         WHERE (key_id, period_start_us) IN (SELECT * FROM unnest($1::text[], $2::bigint[])) \
         ORDER BY key_id, period_start_us FOR NO KEY UPDATE",
    )
    .bind(key_ids)
    .bind(periods)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, period, limit, spent, leased)| ((key, period), KeyBudget { limit, spent, leased }))
        .collect())
}

/// A key budget row as locked.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeyBudget {
    /// The key's `max_spend` for the period, units.
    pub(super) limit: i64,
    /// Σ cost recorded in the period, units.
    pub(super) spent: i64,
    /// Σ holds of the open leases on it, units.
    pub(super) leased: i64,
}

/// Takes `released` (per scope: kind, id, period) off the scopes' `leased_units`; the rows are
/// locked already. Non-negative from non-negative: no overflow.
async fn release_holds(conn: &mut PgConnection, released: &BTreeMap<(String, String, i64), i64>) -> TxResult<()> {
    let mut key = (Vec::new(), Vec::new(), Vec::new());
    let mut account = (Vec::new(), Vec::new());
    for ((kind, id, period), units) in released.iter().filter(|(_, units)| **units > 0) {
        if kind == "k" {
            key.0.push(id.as_str());
            key.1.push(*period);
            key.2.push(*units);
        } else {
            account.0.push(id.as_str());
            account.1.push(*units);
        }
    }
    sqlx::query(
        "UPDATE key_budgets b SET leased_units = b.leased_units - u.units \
         FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u (key_id, period, units) \
         WHERE b.key_id = u.key_id AND b.period_start_us = u.period",
    )
    .bind(&key.0)
    .bind(&key.1)
    .bind(&key.2)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE accounts a SET leased_units = a.leased_units - u.units \
         FROM unnest($1::text[], $2::bigint[]) AS u (id, units) WHERE a.id = u.id",
    )
    .bind(&account.0)
    .bind(&account.1)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
