//! The usage tables on SQLite: the batched, idempotent insert that debits accounts and keys
//! and writes the ledger (the one place that keeps "Σ usage-record costs = Σ ledger debits",
//! promise 4), and the filtered, cursor-paginated and summarised reads.
//!
//! **No amount is added in SQL.** SQLite turns an integer sum that overflows into a REAL (a
//! spend that then refuses to load); every running total is read, added in Rust with checked
//! arithmetic and written back, and every sum is read as two halves that cannot overflow
//! ([`split_sum_sql`]). A batch must never fail for its content — it would stall the usage
//! writer and every record behind it (promise 5) — so a value out of range is clamped, with an
//! error in the log, instead of refused.

use std::collections::HashSet;

use router_one_core::ids::now_us;
use router_one_core::money::Usd;
use router_one_core::store::{StoreResult, SummaryGroup, SummaryRow, UsageFilter};
use router_one_core::usage::UsageRecord;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::accounts::{balance_units, set_balance_units};
use super::insert_ledger_entry;
use crate::convert::{
    DAY_US, RECEIPT_BATCH_JWS, ReceiptColumns, USAGE_COLUMNS, UsageRow, day_name, db_err, failed_attempts_text,
    from_i64, receipt_batches,
};
use crate::usage_batch::{AccountDebit, BatchDebits, bounded_text, clamped_sum, saturating, stored_cost};

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
    insert_receipt_batches(&mut tx, batch).await?;
    let mut debits = BatchDebits::default();
    for chunk in batch.chunks(ROWS_PER_INSERT) {
        let mut inserted = insert_records(&mut tx, chunk).await?;
        debits.add_inserted(chunk, &mut inserted);
    }
    for ((account_id, key_id), spend) in debits.keys {
        add_key_spend(&mut tx, account_id, key_id, spend).await?;
    }
    let at = now_us();
    for (account_id, debit) in debits.accounts {
        debit_account(&mut tx, account_id, &debit, at).await?;
    }
    tx.commit().await.map_err(db_err)
}

/// Adds `spend` to a key's lifetime spend, in Rust (see the module doc). An unknown key is
/// skipped: its records are kept, as for an unknown account.
async fn add_key_spend(conn: &mut SqliteConnection, account_id: &str, key_id: &str, spend: i64) -> StoreResult<()> {
    if spend == 0 {
        return Ok(());
    }
    let current: Option<i64> = sqlx::query_scalar("SELECT spend_units FROM api_keys WHERE id = $1 AND account_id = $2")
        .bind(key_id)
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    let Some(current) = current else {
        return Ok(());
    };
    sqlx::query("UPDATE api_keys SET spend_units = $1 WHERE id = $2 AND account_id = $3")
        .bind(clamped_sum(current, spend, "a key's lifetime spend"))
        .bind(key_id)
        .bind(account_id)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Rows per multi-row `INSERT`: one statement (one round trip to SQLite's worker thread)
/// carries many records; 26 parameters each stays far below SQLite's parameter limit.
const ROWS_PER_INSERT: usize = 64;

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
            .push_bind(bounded_text(&r.requested_model, "requested_model", &r.request_id))
            .push_bind(
                r.served_model
                    .as_deref()
                    .map(|m| bounded_text(m, "served_model", &r.request_id)),
            )
            .push_bind(&r.provider)
            .push_bind(saturating(r.usage.prompt_tokens))
            .push_bind(saturating(r.usage.cached_tokens))
            .push_bind(saturating(r.usage.completion_tokens))
            .push_bind(saturating(r.usage.reasoning_tokens))
            .push_bind(stored_cost(r))
            .push_bind(saturating(r.latency_us))
            .push_bind(r.upstream_sent_us.map(saturating))
            .push_bind(r.ttft_us.map(saturating))
            .push_bind(i64::from(r.status))
            .push_bind(&r.error_code)
            .push_bind(r.streamed)
            .push_bind(saturating(r.usage.cache_write_tokens))
            .push_bind(failed_attempts_text(r));
        let receipt = ReceiptColumns::of(r);
        row.push_bind(receipt.whole)
            .push_bind(receipt.batch)
            .push_bind(receipt.path)
            .push_bind(receipt.response_sha256)
            .push_bind(receipt.upstream_response_id);
    });
    query.push(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
    let rows = query.build().fetch_all(&mut *conn).await.map_err(db_err)?;
    rows.iter()
        .map(|row| row.try_get::<String, _>(0).map_err(db_err))
        .collect()
}

/// Stores the receipt batches `records` name that are not stored yet (a batch's receipts may
/// span two usage batches).
async fn insert_receipt_batches(conn: &mut SqliteConnection, records: &[UsageRecord]) -> StoreResult<()> {
    for chunk in receipt_batches(records).chunks(ROWS_PER_INSERT) {
        let mut query: QueryBuilder<'_, Sqlite> = QueryBuilder::new("INSERT INTO receipt_batches (id, jws) ");
        query.push_values(chunk, |mut row, (id, jws)| {
            row.push_bind(*id).push_bind(*jws);
        });
        query.push(" ON CONFLICT (id) DO NOTHING");
        query.build().execute(&mut *conn).await.map_err(db_err)?;
    }
    Ok(())
}

/// Debits one account's balance and writes the matching ledger entry: the amount the balance
/// really moved, so balance = Σ entries holds even if the debit had to saturate.
async fn debit_account(
    conn: &mut SqliteConnection,
    account_id: &str,
    debit: &AccountDebit<'_>,
    at: i64,
) -> StoreResult<()> {
    if debit.cost == 0 {
        return Ok(());
    }
    let Some(balance) = balance_units(conn, account_id).await? else {
        tracing::error!(
            account_id,
            cost_units = debit.cost,
            "usage recorded for an unknown account; not debited"
        );
        return Ok(());
    };
    // `cost` ≥ 0, so its negation cannot overflow.
    let new = clamped_sum(balance, -debit.cost, "an account's balance");
    set_balance_units(conn, account_id, new).await?;
    let reference = debit.reference();
    let reason = debit.reason();
    insert_ledger_entry(
        conn,
        account_id,
        at,
        router_one_core::billing::LedgerKind::Usage,
        Usd::from_units(new - balance),
        Some(&reference),
        Some(&reason),
    )
    .await
    .map(|_| ())
}

/// The select-list of an exact sum of a BIGINT column that can neither overflow nor turn
/// into a REAL: its high and low 32-bit halves summed apart (`{column}_hi`, `{column}_lo`;
/// neither sum can overflow below 2³¹ rows), joined in 128 bits by [`split_sum`].
pub(super) fn split_sum_sql(column: &str) -> String {
    format!("COALESCE(SUM({column} >> 32), 0) AS {column}_hi, COALESCE(SUM({column} & 4294967295), 0) AS {column}_lo")
}

/// The sum selected with [`split_sum_sql`], saturated to `i64` (with an error in the log) when
/// it does not fit.
pub(super) fn split_sum(row: &SqliteRow, column: &str) -> StoreResult<i64> {
    let hi: i64 = row.try_get(format!("{column}_hi").as_str()).map_err(db_err)?;
    let lo: i64 = row.try_get(format!("{column}_lo").as_str()).map_err(db_err)?;
    let sum = i128::from(hi) * (1 << 32) + i128::from(lo);
    Ok(i64::try_from(sum).unwrap_or_else(|_| {
        tracing::error!(column, %sum, "sum out of range; saturated");
        if sum < 0 { i64::MIN } else { i64::MAX }
    }))
}

/// Σ `cost_units` of the usage records matching `condition` (bound to `id` and `since_us`).
pub(super) async fn cost_sum(pool: &SqlitePool, condition: &str, id: &str, since_us: i64) -> StoreResult<Usd> {
    let sql = format!(
        "SELECT {} FROM usage_records WHERE {condition}",
        split_sum_sql("cost_units")
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(since_us)
        .fetch_one(pool)
        .await
        .map_err(db_err)?;
    split_sum(&row, "cost_units").map(Usd::from_units)
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
    let mut qb = QueryBuilder::new(format!(
        "SELECT {USAGE_COLUMNS}, {RECEIPT_BATCH_JWS} FROM usage_records"
    ));
    push_conditions(&mut qb, filter);
    let (beyond, order) = if filter.newest_first { ("<", "DESC") } else { (">", "") };
    if let Some(after) = &filter.after {
        qb.push(format!(
            " AND seq {beyond} (SELECT c.seq FROM usage_records c WHERE c.request_id = "
        ))
        .push_bind(after.clone())
        .push(" AND c.account_id = ")
        .push_bind(filter.account_id.clone())
        .push(")");
    }
    qb.push(format!(" ORDER BY seq {order} LIMIT "))
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
    let sums: Vec<String> = SUMMED.iter().map(|column| split_sum_sql(column)).collect();
    let mut qb = QueryBuilder::new(format!(
        "SELECT {group_expr} AS grp, COUNT(*) AS requests, {} FROM usage_records",
        sums.join(", ")
    ));
    push_conditions(&mut qb, filter);
    qb.push(" GROUP BY grp ORDER BY grp");
    let rows = qb.build().fetch_all(pool).await.map_err(db_err)?;
    rows.iter().map(|row| summary_row(row, group)).collect()
}

/// The columns a summary adds up.
const SUMMED: [&str; 5] = [
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cost_units",
];

/// Reads one summary row.
fn summary_row(row: &SqliteRow, group: SummaryGroup) -> StoreResult<SummaryRow> {
    let count = |name: &str| from_i64(split_sum(row, name)?, name);
    let group = match group {
        SummaryGroup::Day => day_name(row.try_get("grp").map_err(db_err)?)?,
        SummaryGroup::Key | SummaryGroup::Model => row.try_get("grp").map_err(db_err)?,
    };
    Ok(SummaryRow {
        group,
        requests: from_i64(row.try_get("requests").map_err(db_err)?, "requests")?,
        prompt_tokens: count("prompt_tokens")?,
        cached_tokens: count("cached_tokens")?,
        completion_tokens: count("completion_tokens")?,
        reasoning_tokens: count("reasoning_tokens")?,
        cost: Usd::from_units(split_sum(row, "cost_units")?),
    })
}

/// One record, only if it belongs to `account_id`.
pub(super) async fn usage_record(
    pool: &SqlitePool,
    account_id: &str,
    request_id: &str,
) -> StoreResult<Option<UsageRecord>> {
    let sql = format!(
        "SELECT {USAGE_COLUMNS}, {RECEIPT_BATCH_JWS} FROM usage_records WHERE request_id = $1 AND account_id = $2"
    );
    let row: Option<UsageRow> = sqlx::query_as(&sql)
        .bind(request_id)
        .bind(account_id)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.map(UsageRecord::try_from).transpose()
}

/// Whether any account has a record of `request_id`.
pub(super) async fn request_recorded(pool: &SqlitePool, request_id: &str) -> StoreResult<bool> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM usage_records WHERE request_id = $1 LIMIT 1")
        .bind(request_id)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    Ok(found.is_some())
}

/// Publishes a receipt-signing public key once (a kid already there is left as it was).
pub(super) async fn publish_receipt_key(pool: &SqlitePool, kid: &str, jwk: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO receipt_keys (kid, jwk, published_at_us) VALUES ($1, $2, $3) ON CONFLICT (kid) DO NOTHING",
    )
    .bind(kid)
    .bind(jwk)
    .bind(router_one_core::ids::now_us())
    .execute(pool)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// The published receipt-signing public keys, oldest first.
pub(super) async fn receipt_keys(pool: &SqlitePool) -> StoreResult<Vec<String>> {
    sqlx::query_scalar("SELECT jwk FROM receipt_keys ORDER BY published_at_us, kid")
        .fetch_all(pool)
        .await
        .map_err(db_err)
}
