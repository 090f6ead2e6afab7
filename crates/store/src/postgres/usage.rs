//! The usage tables on PostgreSQL: the batched, idempotent insert that debits accounts and keys
//! and writes the ledger (the one place that keeps "Σ usage-record costs = Σ ledger debits",
//! promise 4, on this backend), and the filtered, cursor-paginated and summarised reads.
//!
//! **A batch never fails for its content** (it would stall the usage writer and every record
//! behind it, promise 5): values are clamped as on SQLite ([`crate::usage_batch`]), and no
//! amount is added in SQL — PostgreSQL raises an error where SQLite made a REAL — so running
//! totals are read under a row lock, added in Rust and written back. Sums are read as NUMERIC
//! text, exact, and saturated to `i64`.
//!
//! **Pages follow commit order.** Rows are numbered by a sequence (`seq`) and listed in its
//! order. A sequence value is drawn before commit, so two batches numbered side by side could
//! commit in the other order, and a reader that paged past the later numbers would skip the
//! earlier ones for good. So every batch takes one advisory lock ([`lock::USAGE`]) before it
//! draws a number and keeps it until it commits, as the ledger's postings do (the proof is in
//! [`super::accounts`]): batches draw their numbers in commit order, and every record not yet
//! visible has a higher `seq` than every visible one. The lock is taken by nothing else, first
//! in a batch, and batches are one per node every few milliseconds, so it costs the writer
//! only the wait for another node's commit. (The previous design compared each row's
//! transaction id with the snapshot's xmin; that horizon is the whole server's, and any open
//! transaction anywhere — a backup, an idle session — held back every listing.)

use std::collections::{BTreeMap, HashSet};

use router_one_core::billing::LedgerKind;
use router_one_core::ids::now_us;
use router_one_core::money::Usd;
use router_one_core::store::{StoreResult, SummaryGroup, SummaryRow, UsageFilter};
use router_one_core::usage::UsageRecord;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};

use super::lease_draws::LeaseDraws;
use super::{TxResult, advisory_lock, lock, numeric_sum};
use crate::convert::{
    DAY_US, RECEIPT_BATCH_JWS, ReceiptColumns, USAGE_COLUMNS, UsageRow, day_name, db_err, failed_attempts_text,
    from_i64, receipt_batches,
};
use crate::usage_batch::{AccountDebit, BatchDebits, bounded_text, clamped_sum, saturating, stored_cost};

/// Inserts `batch` in one transaction. Records already stored (same request id and creation
/// time) are skipped; for the rest, each key's `spend_units` grows by its cost and each
/// account's balance drops by its cost, with one `usage` ledger entry per account per batch,
/// and a record drawn on a node run's leases moves its cost out of them ([`LeaseDraws`]).
/// A record for an unknown account or key is stored but debits nothing (logged).
///
/// The usage lock comes first (module doc), then rows in the schema's one order
/// (`0002_cluster.sql`): api_keys, key_budgets, accounts, leases.
pub(super) async fn record_usage(pool: &PgPool, batch: &[UsageRecord]) -> TxResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    advisory_lock(&mut tx, lock::USAGE).await?;
    insert_receipt_batches(&mut tx, batch).await?;
    let mut inserted = insert_records(&mut tx, batch).await?;
    // A request id repeated within the batch was inserted (and is debited) once.
    let records: Vec<&UsageRecord> = batch
        .iter()
        .filter(|r| inserted.remove(r.request_id.as_str()))
        .collect();
    let mut debits = BatchDebits::default();
    debits.add_records(&records);
    add_key_spends(&mut tx, &debits.keys).await?;
    let mut draws = LeaseDraws::new(&records);
    draws.lock_budgets(&mut tx).await?;
    let accounts = lock_debited_accounts(&mut tx, &debits.accounts).await?;
    let released = draws.settle(&mut tx).await?;
    let after = debit_accounts(&mut tx, &debits.accounts, &accounts, &released, now_us()).await?;
    draws.record_overshoots(&mut tx, &after).await?;
    tx.commit().await?;
    Ok(())
}

/// The columns of one batch, one array each, for `unnest`.
#[derive(Default)]
struct RecordColumns<'a> {
    request_id: Vec<&'a str>,
    account_id: Vec<&'a str>,
    key_id: Vec<&'a str>,
    created_at_us: Vec<i64>,
    endpoint: Vec<&'static str>,
    requested_model: Vec<&'a str>,
    served_model: Vec<Option<&'a str>>,
    provider: Vec<&'a str>,
    prompt_tokens: Vec<i64>,
    cached_tokens: Vec<i64>,
    completion_tokens: Vec<i64>,
    reasoning_tokens: Vec<i64>,
    cost_units: Vec<i64>,
    latency_us: Vec<i64>,
    upstream_sent_us: Vec<Option<i64>>,
    ttft_us: Vec<Option<i64>>,
    status: Vec<i64>,
    error_code: Vec<Option<&'a str>>,
    streamed: Vec<bool>,
    cache_write_tokens: Vec<i64>,
    failed_attempts: Vec<Option<String>>,
    receipt: Vec<Option<&'a str>>,
    receipt_batch: Vec<Option<&'a str>>,
    receipt_path: Vec<Option<&'a str>>,
    response_sha256: Vec<Option<&'a str>>,
    upstream_response_id: Vec<Option<&'a str>>,
    node_id: Vec<Option<&'a str>>,
    node_epoch: Vec<Option<i64>>,
    key_period_start_us: Vec<Option<i64>>,
}

impl<'a> RecordColumns<'a> {
    /// The stored values of `records`, column by column.
    fn new(records: &'a [UsageRecord]) -> RecordColumns<'a> {
        let mut c = RecordColumns::default();
        for r in records {
            c.request_id.push(&r.request_id);
            c.account_id.push(&r.account_id);
            c.key_id.push(&r.key_id);
            c.created_at_us.push(r.created_at_us);
            c.endpoint.push(r.endpoint.as_str());
            c.requested_model
                .push(bounded_text(&r.requested_model, "requested_model", &r.request_id));
            c.served_model.push(
                r.served_model
                    .as_deref()
                    .map(|m| bounded_text(m, "served_model", &r.request_id)),
            );
            c.provider.push(&r.provider);
            c.prompt_tokens.push(saturating(r.usage.prompt_tokens));
            c.cached_tokens.push(saturating(r.usage.cached_tokens));
            c.completion_tokens.push(saturating(r.usage.completion_tokens));
            c.reasoning_tokens.push(saturating(r.usage.reasoning_tokens));
            c.cost_units.push(stored_cost(r));
            c.latency_us.push(saturating(r.latency_us));
            c.upstream_sent_us.push(r.upstream_sent_us.map(saturating));
            c.ttft_us.push(r.ttft_us.map(saturating));
            c.status.push(i64::from(r.status));
            c.error_code.push(r.error_code.as_deref());
            c.streamed.push(r.streamed);
            c.cache_write_tokens.push(saturating(r.usage.cache_write_tokens));
            c.failed_attempts.push(failed_attempts_text(r));
            let receipt = ReceiptColumns::of(r);
            c.receipt.push(receipt.whole);
            c.receipt_batch.push(receipt.batch);
            c.receipt_path.push(receipt.path);
            c.response_sha256.push(receipt.response_sha256);
            c.upstream_response_id.push(receipt.upstream_response_id);
            c.node_id.push(r.lease.as_ref().map(|l| l.node_id.as_str()));
            c.node_epoch.push(r.lease.as_ref().map(|l| l.node_epoch));
            c.key_period_start_us
                .push(r.lease.as_ref().and_then(|l| l.key_period_start_us));
        }
        c
    }
}

/// Stores the receipt batches `records` name that are not stored yet (a batch's receipts may
/// span two usage batches), in one statement.
async fn insert_receipt_batches(conn: &mut PgConnection, records: &[UsageRecord]) -> TxResult<()> {
    let batches = receipt_batches(records);
    if batches.is_empty() {
        return Ok(());
    }
    let (ids, jws): (Vec<&str>, Vec<&str>) = batches.into_iter().unzip();
    sqlx::query(
        "INSERT INTO receipt_batches (id, jws) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&jws)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts the records not stored yet, in one statement whatever the batch size (one array
/// per column); returns the request ids it inserted. Rows keep the batch's order, so `seq`
/// numbers them in it.
async fn insert_records(conn: &mut PgConnection, records: &[UsageRecord]) -> TxResult<HashSet<String>> {
    let c = RecordColumns::new(records);
    let sql = format!(
        "INSERT INTO usage_records ({USAGE_COLUMNS}, node_id, node_epoch, key_period_start_us) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], \
             $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::text[], $19::boolean[], \
             $20::bigint[], $21::text[], $22::text[], $23::text[], $24::text[], $25::text[], $26::text[], \
             $27::text[], $28::bigint[], $29::bigint[]) \
         ON CONFLICT DO NOTHING RETURNING request_id"
    );
    let ids: Vec<String> = sqlx::query_scalar(&sql)
        .bind(&c.request_id)
        .bind(&c.account_id)
        .bind(&c.key_id)
        .bind(&c.created_at_us)
        .bind(&c.endpoint)
        .bind(&c.requested_model)
        .bind(&c.served_model)
        .bind(&c.provider)
        .bind(&c.prompt_tokens)
        .bind(&c.cached_tokens)
        .bind(&c.completion_tokens)
        .bind(&c.reasoning_tokens)
        .bind(&c.cost_units)
        .bind(&c.latency_us)
        .bind(&c.upstream_sent_us)
        .bind(&c.ttft_us)
        .bind(&c.status)
        .bind(&c.error_code)
        .bind(&c.streamed)
        .bind(&c.cache_write_tokens)
        .bind(&c.failed_attempts)
        .bind(&c.receipt)
        .bind(&c.receipt_batch)
        .bind(&c.receipt_path)
        .bind(&c.response_sha256)
        .bind(&c.upstream_response_id)
        .bind(&c.node_id)
        .bind(&c.node_epoch)
        .bind(&c.key_period_start_us)
        .fetch_all(&mut *conn)
        .await?;
    Ok(ids.into_iter().collect())
}

/// Adds each key's batch spend to its lifetime spend: the keys' rows are locked in id order,
/// the sums done in Rust (saturating), and written back in one statement. A key that does not
/// exist, or belongs to another account than its records say, is skipped: its records are
/// kept, as for an unknown account.
async fn add_key_spends(conn: &mut PgConnection, spends: &BTreeMap<(&str, &str), i64>) -> TxResult<()> {
    let ids: Vec<&str> = spends
        .iter()
        .filter(|(_, spend)| **spend != 0)
        .map(|((_, key_id), _)| *key_id)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let rows =
        sqlx::query("SELECT id, account_id, spend_units FROM api_keys WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
    let mut updated_ids = Vec::new();
    let mut updated_spends = Vec::new();
    for row in &rows {
        let (id, account_id, current): (String, String, i64) = (
            row.try_get("id")?,
            row.try_get("account_id")?,
            row.try_get("spend_units")?,
        );
        if let Some(spend) = spends.get(&(account_id.as_str(), id.as_str())) {
            updated_spends.push(clamped_sum(current, *spend, "a key's lifetime spend"));
            updated_ids.push(id);
        }
    }
    sqlx::query(
        "UPDATE api_keys k SET spend_units = u.spend \
         FROM unnest($1::text[], $2::bigint[]) AS u (id, spend) WHERE k.id = u.id",
    )
    .bind(&updated_ids)
    .bind(&updated_spends)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Locks the rows of the accounts the batch debits, in id order, and returns their
/// `(balance, leased)` by id.
async fn lock_debited_accounts(
    conn: &mut PgConnection,
    debits: &BTreeMap<&str, AccountDebit<'_>>,
) -> TxResult<BTreeMap<String, (i64, i64)>> {
    let ids: Vec<&str> = debits.iter().filter(|(_, d)| d.cost != 0).map(|(id, _)| *id).collect();
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT id, balance_units, leased_units FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, balance, leased)| (id, (balance, leased)))
        .collect())
}

/// Debits each account's balance, takes what its leases released off its `leased`, and writes
/// the matching `usage` entries: the accounts' rows are locked (`locked`: balance and leased
/// by id), the new values computed in Rust (saturating), and each entry holds the amount its
/// balance really moved, so balance = Σ entries holds even if a debit saturated. These entries
/// take no ledger lock: the follower never reads them. Returns each account's balance and
/// leased after the batch.
async fn debit_accounts<'a>(
    conn: &mut PgConnection,
    debits: &BTreeMap<&'a str, AccountDebit<'_>>,
    locked: &BTreeMap<String, (i64, i64)>,
    released: &BTreeMap<&str, i64>,
    at: i64,
) -> TxResult<BTreeMap<&'a str, (i64, i64)>> {
    let mut entries = UsageEntries::default();
    let mut after = BTreeMap::new();
    for (&id, debit) in debits.iter().filter(|(_, d)| d.cost != 0) {
        let Some(&(balance, leased)) = locked.get(id) else {
            tracing::error!(account_id = id, "usage recorded for an unknown account; not debited");
            continue;
        };
        // `cost` ≥ 0, so its negation cannot overflow.
        let new = clamped_sum(balance, -debit.cost, "an account's balance");
        let leased = leased.saturating_sub(released.get(id).copied().unwrap_or(0));
        entries.push(id, new, leased, new - balance, debit);
        after.insert(id, (new, leased));
    }
    if after.is_empty() {
        return Ok(after);
    }
    sqlx::query(
        "UPDATE accounts a SET balance_units = u.balance, leased_units = u.leased \
         FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u (id, balance, leased) WHERE a.id = u.id",
    )
    .bind(&entries.account_id)
    .bind(&entries.balance)
    .bind(&entries.leased)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO ledger_entries (account_id, created_at_us, kind, amount_units, reference, reason) \
         SELECT u.account_id, $2, $3, u.amount, u.reference, u.reason \
         FROM unnest($1::text[], $4::bigint[], $5::text[], $6::text[]) AS u (account_id, amount, reference, reason)",
    )
    .bind(&entries.account_id)
    .bind(at)
    .bind(LedgerKind::Usage.as_str())
    .bind(&entries.amount)
    .bind(&entries.reference)
    .bind(&entries.reason)
    .execute(&mut *conn)
    .await?;
    Ok(after)
}

/// A batch's account debits, one array per column.
#[derive(Default)]
struct UsageEntries<'a> {
    account_id: Vec<&'a str>,
    balance: Vec<i64>,
    leased: Vec<i64>,
    amount: Vec<i64>,
    reference: Vec<String>,
    reason: Vec<String>,
}

impl<'a> UsageEntries<'a> {
    /// One account's new balance and leased, and its entry.
    fn push(&mut self, account_id: &'a str, balance: i64, leased: i64, amount: i64, debit: &AccountDebit<'_>) {
        self.account_id.push(account_id);
        self.balance.push(balance);
        self.leased.push(leased);
        self.amount.push(amount);
        self.reference.push(debit.reference());
        self.reason.push(debit.reason());
    }
}

/// The exact sum of a BIGINT column as text (PostgreSQL sums BIGINTs as NUMERIC), named
/// `{column}_sum`; read it with [`sum_of`].
fn sum_sql(column: &str) -> String {
    format!("COALESCE(SUM({column}), 0)::text AS {column}_sum")
}

/// The sum selected with [`sum_sql`], saturated to `i64`.
fn sum_of(row: &PgRow, column: &str) -> StoreResult<i64> {
    let text: String = row.try_get(format!("{column}_sum").as_str()).map_err(db_err)?;
    numeric_sum(&text, column)
}

/// Σ `cost_units` of the usage records matching `condition` (bound to `id` and `since_us`).
pub(super) async fn cost_sum(pool: &PgPool, condition: &str, id: &str, since_us: i64) -> StoreResult<Usd> {
    let sql = format!("SELECT {} FROM usage_records WHERE {condition}", sum_sql("cost_units"));
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(since_us)
        .fetch_one(pool)
        .await
        .map_err(db_err)?;
    sum_of(&row, "cost_units").map(Usd::from_units)
}

/// Appends the `WHERE` conditions of `filter` except the cursor (the account always first).
fn push_conditions(qb: &mut QueryBuilder<'_, Postgres>, filter: &UsageFilter) {
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

/// Records matching `filter` in commit order (see the module doc), after the cursor's record,
/// at most `limit`. A cursor naming no record of the account yields nothing (rather than
/// everything again).
pub(super) async fn usage(pool: &PgPool, filter: &UsageFilter) -> StoreResult<Vec<UsageRecord>> {
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
    pool: &PgPool,
    filter: &UsageFilter,
    group: SummaryGroup,
) -> StoreResult<Vec<SummaryRow>> {
    // The UTC day index, floor(created_at_us / DAY_US), written as on SQLite.
    let day = format!(
        "CASE WHEN created_at_us >= 0 THEN created_at_us / {DAY_US} ELSE (created_at_us + 1) / {DAY_US} - 1 END"
    );
    let group_expr = match group {
        SummaryGroup::Key => "key_id",
        SummaryGroup::Model => "requested_model",
        SummaryGroup::Day => day.as_str(),
    };
    let sums: Vec<String> = SUMMED.iter().map(|column| sum_sql(column)).collect();
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
fn summary_row(row: &PgRow, group: SummaryGroup) -> StoreResult<SummaryRow> {
    let count = |name: &str| from_i64(sum_of(row, name)?, name);
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
        cost: Usd::from_units(sum_of(row, "cost_units")?),
    })
}

/// One record, only if it belongs to `account_id`.
pub(super) async fn usage_record(
    pool: &PgPool,
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
pub(super) async fn request_recorded(pool: &PgPool, request_id: &str) -> StoreResult<bool> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM usage_records WHERE request_id = $1 LIMIT 1")
        .bind(request_id)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    Ok(found.is_some())
}

/// Publishes a receipt-signing public key once (a kid already there is left as it was).
pub(super) async fn publish_receipt_key(pool: &PgPool, kid: &str, jwk: &str) -> StoreResult<()> {
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
pub(super) async fn receipt_keys(pool: &PgPool) -> StoreResult<Vec<String>> {
    sqlx::query_scalar("SELECT jwk FROM receipt_keys ORDER BY published_at_us, kid")
        .fetch_all(pool)
        .await
        .map_err(db_err)
}
