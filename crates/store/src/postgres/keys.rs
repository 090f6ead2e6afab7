//! Inference keys on PostgreSQL: the capped insert, lookups, pages, settings and revocation.
//! The statements are SQLite's; the cap is the difference (see [`insert_key`]).

use router_one_core::ids::now_us;
use router_one_core::store::{ApiKey, KeyPage, KeySettings, StoreResult};
use sqlx::PgPool;

use super::{TxResult, lock_accounts};
use crate::convert::{KEY_COLUMNS, KeyRow, SettingsColumns, db_err, key_page};

/// Stores a key unless its account already has `max_live_keys` unrevoked keys. SQLite's single
/// `INSERT … SELECT … WHERE (count) < cap` is atomic there because SQLite has one writer; here
/// two such statements could both count `cap - 1` and both insert. So the account's row is
/// locked first, and the count is read by a later statement, whose snapshot sees every key
/// inserted by whoever held the lock before.
pub(super) async fn insert_key(pool: &PgPool, key: &ApiKey, max_live_keys: u32) -> TxResult<bool> {
    let s = SettingsColumns::new(&key.settings)?;
    let mut tx = pool.begin().await?;
    lock_accounts(&mut tx, &[key.account_id.as_str()]).await?;
    let done = sqlx::query(&format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19 \
         WHERE (SELECT COUNT(*) FROM api_keys WHERE account_id = $2 AND revoked_at_us IS NULL) < $20"
    ))
    .bind(&key.id)
    .bind(&key.account_id)
    .bind(&key.secret_hash)
    .bind(&key.hint)
    .bind(s.name)
    .bind(s.max_spend_units)
    .bind(s.budget_period)
    .bind(s.rpm_limit)
    .bind(s.tpm_limit)
    .bind(s.max_concurrency)
    .bind(s.models)
    .bind(s.expires_at_us)
    .bind(s.metadata)
    .bind(key.created_at_us)
    .bind(key.revoked_at_us)
    .bind(key.spend.units())
    .bind(s.on_oversized_max_tokens)
    .bind(s.always_include_usage)
    .bind(s.router_headers)
    .bind(i64::from(max_live_keys))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// A key by the hash of its secret, revoked or not.
pub(super) async fn key_by_hash(pool: &PgPool, hash: &str) -> StoreResult<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1");
    let row: Option<KeyRow> = sqlx::query_as(&sql)
        .bind(hash)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.map(ApiKey::try_from).transpose()
}

/// Unrevoked keys in id order after `after`, at most `limit`.
pub(super) async fn active_keys(pool: &PgPool, after: Option<&str>, limit: u32) -> StoreResult<KeyPage> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at_us IS NULL AND ($1::text IS NULL OR id > $1) \
         ORDER BY id LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    Ok(key_page(&rows, limit))
}

/// An account's keys, newest first, after key `after`, at most `limit`.
pub(super) async fn keys(pool: &PgPool, account_id: &str, after: Option<&str>, limit: u32) -> StoreResult<KeyPage> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = $1 AND ($2::text IS NULL OR (created_at_us, id) < \
         (SELECT c.created_at_us, c.id FROM api_keys c WHERE c.id = $2 AND c.account_id = $1)) \
         ORDER BY created_at_us DESC, id DESC LIMIT $3"
    );
    let rows = sqlx::query(&sql)
        .bind(account_id)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    Ok(key_page(&rows, limit))
}

/// One key of an account.
pub(super) async fn key(pool: &PgPool, account_id: &str, key_id: &str) -> StoreResult<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND account_id = $2");
    let row: Option<KeyRow> = sqlx::query_as(&sql)
        .bind(key_id)
        .bind(account_id)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.map(ApiKey::try_from).transpose()
}

/// Replaces a key's settings. A key with a `max_spend` also gets it as the limit of its
/// budget rows (`key_budgets`, cluster mode) of the current period and any later one, in the
/// same transaction, so no grant after the edit uses the old limit. A limit lowered below
/// `spent + leased` is kept as is: no grant succeeds until the holds drain (nodes shrink to
/// what is in flight on the edit's event). Removing `max_spend` leaves the rows alone: nodes no
/// longer lease on the key.
pub(super) async fn update_key(
    pool: &PgPool,
    account_id: &str,
    key_id: &str,
    settings: &KeySettings,
) -> TxResult<Option<ApiKey>> {
    let s = SettingsColumns::new(settings)?;
    let sql = format!(
        "UPDATE api_keys SET name = $3, max_spend_units = $4, budget_period = $5, rpm_limit = $6, \
         tpm_limit = $7, max_concurrency = $8, models = $9, expires_at_us = $10, metadata = $11, \
             on_oversized_max_tokens = $12, always_include_usage = $13, router_headers = $14 \
         WHERE id = $1 AND account_id = $2 RETURNING {KEY_COLUMNS}"
    );
    let mut tx = pool.begin().await?;
    let row: Option<KeyRow> = sqlx::query_as(&sql)
        .bind(key_id)
        .bind(account_id)
        .bind(s.name)
        .bind(s.max_spend_units)
        .bind(s.budget_period)
        .bind(s.rpm_limit)
        .bind(s.tpm_limit)
        .bind(s.max_concurrency)
        .bind(s.models)
        .bind(s.expires_at_us)
        .bind(s.metadata)
        .bind(s.on_oversized_max_tokens)
        .bind(s.always_include_usage)
        .bind(s.router_headers)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(key) = row.map(ApiKey::try_from).transpose()? else {
        return Ok(None);
    };
    if let Some(limit) = settings.max_spend {
        // Lifetime: the row of period 0 only; periodic: the current period and any later one
        // (a node whose clock runs ahead may have opened the next).
        let (current, lifetime) = match settings.budget_period.window(now_us()) {
            Some((start, _)) => (start, false),
            None => (0, true),
        };
        sqlx::query(
            "UPDATE key_budgets SET limit_units = $3 \
             WHERE key_id = $1 AND (period_start_us = $2 OR (NOT $4 AND period_start_us > $2))",
        )
        .bind(key_id)
        .bind(current)
        .bind(limit.units())
        .bind(lifetime)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some(key))
}

/// Revokes a key, keeping the first revocation time.
pub(super) async fn revoke_key(
    pool: &PgPool,
    account_id: &str,
    key_id: &str,
    at_us: i64,
) -> StoreResult<Option<ApiKey>> {
    let sql = format!(
        "UPDATE api_keys SET revoked_at_us = COALESCE(revoked_at_us, $3) \
         WHERE id = $1 AND account_id = $2 RETURNING {KEY_COLUMNS}"
    );
    let row: Option<KeyRow> = sqlx::query_as(&sql)
        .bind(key_id)
        .bind(account_id)
        .bind(at_us)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.map(ApiKey::try_from).transpose()
}
