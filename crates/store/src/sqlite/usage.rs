//! The usage tables on SQLite: the batched, idempotent insert that debits accounts and keys
//! and writes the ledger (the one place that keeps "Σ usage-record costs = Σ ledger debits",
//! promise 4), and the filtered, cursor-paginated and summarised reads.

use std::collections::BTreeMap;

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
    let insert = insert_sql();
    let mut tx = pool.begin().await.map_err(db_err)?;
    let mut accounts: BTreeMap<&str, AccountDebit<'_>> = BTreeMap::new();
    let mut keys: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for record in batch {
        if !insert_record(&mut tx, &insert, record).await? {
            continue;
        }
        accounts.entry(&record.account_id).or_default().add(record)?;
        let spend = keys.entry((&record.account_id, &record.key_id)).or_default();
        *spend = checked_sum(*spend, record.cost.units())?;
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

/// The insert of one usage record that skips a stored request id (the same text every time,
/// so each connection prepares it once and reuses it).
fn insert_sql() -> String {
    format!(
        "INSERT INTO usage_records ({USAGE_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
         ON CONFLICT (request_id) DO NOTHING"
    )
}

/// A count as a BIGINT, saturating: a usage record is never refused for an absurd count,
/// since one refused record would stall the writer's whole batch.
fn saturating(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Inserts one record unless its request id is stored; `true` if it was inserted.
async fn insert_record(conn: &mut SqliteConnection, sql: &str, r: &UsageRecord) -> StoreResult<bool> {
    let done = sqlx::query(sql)
        .bind(&r.request_id)
        .bind(&r.account_id)
        .bind(&r.key_id)
        .bind(r.created_at_us)
        .bind(r.endpoint.as_str())
        .bind(&r.requested_model)
        .bind(&r.served_model)
        .bind(&r.provider)
        .bind(saturating(r.usage.prompt_tokens))
        .bind(saturating(r.usage.cached_tokens))
        .bind(saturating(r.usage.completion_tokens))
        .bind(saturating(r.usage.reasoning_tokens))
        .bind(r.cost.units())
        .bind(saturating(r.latency_us))
        .bind(r.upstream_sent_us.map(saturating))
        .bind(r.ttft_us.map(saturating))
        .bind(i64::from(r.status))
        .bind(&r.error_code)
        .bind(r.streamed)
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected() == 1)
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
        "usage",
        Usd::from_units(amount),
        Some(&reference),
        Some(&reason),
    )
    .await
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

/// Records matching `filter`, by request id (= time order), after the cursor, at most `limit`.
pub(super) async fn usage(pool: &SqlitePool, filter: &UsageFilter) -> StoreResult<Vec<UsageRecord>> {
    let mut qb = QueryBuilder::new(format!("SELECT {USAGE_COLUMNS} FROM usage_records"));
    push_conditions(&mut qb, filter);
    if let Some(after) = &filter.after {
        qb.push(" AND request_id > ").push_bind(after.clone());
    }
    qb.push(" ORDER BY request_id LIMIT ")
        .push_bind(i64::from(filter.limit));
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
