//! The usage tables on SQLite: the batched, idempotent insert that debits accounts and keys
//! and writes the ledger (the one place that keeps "Σ usage-record costs = Σ ledger debits",
//! promise 4), and the filtered, cursor-paginated and summarised reads.

use std::collections::{BTreeMap, HashSet};

use router_one_core::ids::now_us;
use router_one_core::money::Usd;
use router_one_core::store::{StoreError, StoreResult, SummaryGroup, SummaryRow, UsageFilter};
use router_one_core::usage::UsageRecord;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::insert_ledger_entry;
use crate::convert::{DAY_US, USAGE_COLUMNS, UsageRow, day_name, db_err, from_i64};

/// What one batch debits from one account.
#[derive(Default)]
struct AccountDebit<'a> {
    cost: i64,
    requests: u64,
    first: Option<&'a str>,
    last: Option<&'a str>,
}

impl<'a> AccountDebit<'a> {
    /// Adds one newly inserted record.
    fn add(&mut self, record: &'a UsageRecord) -> StoreResult<()> {
        self.cost = checked_sum(self.cost, record.cost.units())?;
        self.requests += 1;
        let id = record.request_id.as_str();
        self.first = Some(self.first.map_or(id, |f| f.min(id)));
        self.last = Some(self.last.map_or(id, |l| l.max(id)));
        Ok(())
    }
}

/// `a + b`, or an error instead of an overflow.
fn checked_sum(a: i64, b: i64) -> StoreResult<i64> {
    a.checked_add(b)
        .ok_or_else(|| StoreError::Database("usage cost sum out of range".into()))
}

/// Inserts `batch` in one transaction. Records whose request id is already stored are skipped
/// (journal replay); for the rest, each key's `spend_units` grows by its cost and each
/// account's balance drops by its cost, with one `usage` ledger entry per account per batch.
///
/// A record for an account that does not exist is still stored (it must never block the
/// writer) but debits nothing; it is logged.
pub(super) async fn record_usage(pool: &SqlitePool, batch: &[UsageRecord]) -> StoreResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(db_err)?;
    let mut accounts: BTreeMap<&str, AccountDebit<'_>> = BTreeMap::new();
    let mut keys: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for chunk in batch.chunks(ROWS_PER_INSERT) {
        let mut inserted = insert_records(&mut tx, chunk).await?;
        // `remove`: a request id repeated within the batch was inserted (and is debited) once.
        for record in chunk.iter().filter(|r| inserted.remove(r.request_id.as_str())) {
            accounts.entry(&record.account_id).or_default().add(record)?;
            let spend = keys.entry((&record.account_id, &record.key_id)).or_default();
            *spend = checked_sum(*spend, record.cost.units())?;
        }
    }
    for ((account_id, key_id), spend) in keys {
        if spend != 0 {
            sqlx::query("UPDATE api_keys SET spend_units = spend_units + $1 WHERE id = $2 AND account_id = $3")
                .bind(spend)
                .bind(key_id)
                .bind(account_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
    }
    let at = now_us();
    for (account_id, debit) in accounts {
        debit_account(&mut tx, account_id, &debit, at).await?;
    }
    tx.commit().await.map_err(db_err)
}

/// Rows per multi-row `INSERT`: one statement (one round trip to SQLite's worker thread)
/// carries many records; 19 parameters each stays far below SQLite's parameter limit.
const ROWS_PER_INSERT: usize = 64;

/// A count as a BIGINT, saturating: a usage record is never refused for an absurd count,
/// since one refused record would stall the writer's whole batch.
fn saturating(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Inserts the records whose request id is not stored yet, in one statement; returns the ids
/// it inserted.
async fn insert_records(conn: &mut SqliteConnection, records: &[UsageRecord]) -> StoreResult<HashSet<String>> {
    let mut query: QueryBuilder<'_, Sqlite> =
        QueryBuilder::new(format!("INSERT INTO usage_records ({USAGE_COLUMNS}) "));
    query.push_values(records, |mut row, r| {
        row.push_bind(&r.request_id)
            .push_bind(&r.account_id)
            .push_bind(&r.key_id)
            .push_bind(r.created_at_us)
            .push_bind(r.endpoint.as_str())
            .push_bind(&r.requested_model)
            .push_bind(&r.served_model)
            .push_bind(&r.provider)
            .push_bind(saturating(r.usage.prompt_tokens))
            .push_bind(saturating(r.usage.cached_tokens))
            .push_bind(saturating(r.usage.completion_tokens))
            .push_bind(saturating(r.usage.reasoning_tokens))
            .push_bind(r.cost.units())
            .push_bind(saturating(r.latency_us))
            .push_bind(r.upstream_sent_us.map(saturating))
            .push_bind(r.ttft_us.map(saturating))
            .push_bind(i64::from(r.status))
            .push_bind(&r.error_code)
            .push_bind(r.streamed);
    });
    query.push(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
    let rows = query.build().fetch_all(&mut *conn).await.map_err(db_err)?;
    rows.iter()
        .map(|row| row.try_get::<String, _>(0).map_err(db_err))
        .collect()
}

/// Debits one account's balance and writes the matching ledger entry.
async fn debit_account(
    conn: &mut SqliteConnection,
    account_id: &str,
    debit: &AccountDebit<'_>,
    at: i64,
) -> StoreResult<()> {
    if debit.cost == 0 {
        return Ok(());
    }
    let amount = debit
        .cost
        .checked_neg()
        .ok_or_else(|| StoreError::Database("usage cost out of range".into()))?;
    let done = sqlx::query("UPDATE accounts SET balance_units = balance_units + $1 WHERE id = $2")
        .bind(amount)
        .bind(account_id)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    if done.rows_affected() == 0 {
        tracing::error!(
            account_id,
            cost_units = debit.cost,
            "usage recorded for an unknown account; not debited"
        );
        return Ok(());
    }
    let reference = format!(
        "{}..{}",
        debit.first.unwrap_or_default(),
        debit.last.unwrap_or_default()
    );
    let reason = format!("{} requests", debit.requests);
    insert_ledger_entry(
        conn,
        account_id,
        at,
        router_one_core::billing::LedgerKind::Usage,
        Usd::from_units(amount),
        Some(&reference),
        Some(&reason),
    )
    .await
    .map(|_| ())
}

/// Appends the `WHERE` conditions of `filter` except the cursor (the account always first).
fn push_conditions(qb: &mut QueryBuilder<'_, Sqlite>, filter: &UsageFilter) {
    qb.push(" WHERE account_id = ").push_bind(filter.account_id.clone());
    if let Some(key_id) = &filter.key_id {
        qb.push(" AND key_id = ").push_bind(key_id.clone());
    }
    if let Some(model) = &filter.model {
        qb.push(" AND (requested_model = ").push_bind(model.clone());
        qb.push(" OR served_model = ").push_bind(model.clone()).push(")");
    }
    match filter.success {
        Some(true) => qb.push(" AND status >= 200 AND status < 300"),
        Some(false) => qb.push(" AND (status < 200 OR status >= 300)"),
        None => qb,
    };
    if let Some(status) = filter.status {
        qb.push(" AND status = ").push_bind(i64::from(status));
    }
    if let Some(from) = filter.from_us {
        qb.push(" AND created_at_us >= ").push_bind(from);
    }
    if let Some(to) = filter.to_us {
        qb.push(" AND created_at_us < ").push_bind(to);
    }
}

/// Records matching `filter` in commit order, after the cursor's record, at most `limit`. A cursor
/// naming no record of the account yields nothing (rather than everything again).
pub(super) async fn usage(pool: &SqlitePool, filter: &UsageFilter) -> StoreResult<Vec<UsageRecord>> {
    let mut qb = QueryBuilder::new(format!("SELECT {USAGE_COLUMNS} FROM usage_records"));
    push_conditions(&mut qb, filter);
    if let Some(after) = &filter.after {
        qb.push(" AND seq > (SELECT c.seq FROM usage_records c WHERE c.request_id = ")
            .push_bind(after.clone())
            .push(" AND c.account_id = ")
            .push_bind(filter.account_id.clone())
            .push(")");
    }
    qb.push(" ORDER BY seq LIMIT ").push_bind(i64::from(filter.limit));
    let rows: Vec<UsageRow> = qb.build_query_as().fetch_all(pool).await.map_err(db_err)?;
    rows.into_iter().map(UsageRecord::try_from).collect()
}

/// Σ of the records matching `filter` (cursor and limit ignored), one row per group, ordered.
pub(super) async fn usage_summary(
    pool: &SqlitePool,
    filter: &UsageFilter,
    group: SummaryGroup,
) -> StoreResult<Vec<SummaryRow>> {
    // The UTC day index is floor(created_at_us / DAY_US), written with truncating division
    // so that it means the same on SQLite and PostgreSQL; Rust names the day.
    let day = format!(
        "CASE WHEN created_at_us >= 0 THEN created_at_us / {DAY_US} ELSE (created_at_us + 1) / {DAY_US} - 1 END"
    );
    let group_expr = match group {
        SummaryGroup::Key => "key_id",
        SummaryGroup::Model => "requested_model",
        SummaryGroup::Day => day.as_str(),
    };
    let mut qb = QueryBuilder::new(format!(
        "SELECT {group_expr} AS grp, COUNT(*) AS requests, \
         CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, \
         CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
         CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens, CAST(SUM(cost_units) AS BIGINT) AS cost_units \
         FROM usage_records"
    ));
    push_conditions(&mut qb, filter);
    qb.push(" GROUP BY grp ORDER BY grp");
    let rows = qb.build().fetch_all(pool).await.map_err(db_err)?;
    rows.iter().map(|row| summary_row(row, group)).collect()
}

/// Reads one summary row.
fn summary_row(row: &SqliteRow, group: SummaryGroup) -> StoreResult<SummaryRow> {
    let get = |name: &str| row.try_get::<i64, _>(name).map_err(db_err);
    let group = match group {
        SummaryGroup::Day => day_name(get("grp")?)?,
        SummaryGroup::Key | SummaryGroup::Model => row.try_get("grp").map_err(db_err)?,
    };
    Ok(SummaryRow {
        group,
        requests: from_i64(get("requests")?, "requests")?,
        prompt_tokens: from_i64(get("prompt_tokens")?, "prompt_tokens")?,
        cached_tokens: from_i64(get("cached_tokens")?, "cached_tokens")?,
        completion_tokens: from_i64(get("completion_tokens")?, "completion_tokens")?,
        reasoning_tokens: from_i64(get("reasoning_tokens")?, "reasoning_tokens")?,
        cost: Usd::from_units(get("cost_units")?),
    })
}

/// One record, only if it belongs to `account_id`.
pub(super) async fn usage_record(
    pool: &SqlitePool,
    account_id: &str,
    request_id: &str,
) -> StoreResult<Option<UsageRecord>> {
    let sql = format!("SELECT {USAGE_COLUMNS} FROM usage_records WHERE request_id = $1 AND account_id = $2");
    let row: Option<UsageRow> = sqlx::query_as(&sql)
        .bind(request_id)
        .bind(account_id)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.map(UsageRecord::try_from).transpose()
}
