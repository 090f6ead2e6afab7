//! [`SqliteStore`]: the embedded default store, one SQLite file in WAL mode. Accounts and keys
//! live here; the usage path (batched inserts, debits, queries) is in [`usage`](self::usage).
//!
//! **A failed transaction never poisons the pool.** When a statement fails with `SQLITE_FULL`
//! (a full disk), SQLite may roll the whole transaction back by itself; sqlx's `ROLLBACK` on
//! drop then fails, so sqlx still counts the connection as inside a transaction, and its next
//! `BEGIN` becomes a `SAVEPOINT` and its `COMMIT` a `RELEASE` — which neither commits nor ends
//! the transaction SQLite opened. That connection went back to the pool holding the write lock:
//! every other writer waited out the busy timeout ("database is locked") until a restart, and
//! what it "committed" was lost. The pool now closes any connection returned inside a
//! transaction, and the next use opens a fresh one.

mod accounts;
mod payments;
mod usage;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use router_one_core::billing::{
    AdjustOutcome, CheckoutSession, ConfirmOutcome, LedgerKind, ManagementKey, Payment, PaymentConfirmation,
    PaymentReversal, Referral, ReferralRefusal, ReversalOutcome,
};
use router_one_core::checkout::FxRate;
use router_one_core::money::Usd;
use router_one_core::store::{
    Account, ApiKey, KeyPage, KeySettings, LedgerEntry, Store, StoreError, StoreResult, SummaryGroup, SummaryRow,
    UsageFilter,
};
use router_one_core::usage::UsageRecord;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

use crate::convert::{ACCOUNT_COLUMNS, AccountRow, KEY_COLUMNS, KeyRow, SettingsColumns, db_err, key_page};

/// How long a statement waits for another connection or process (the admin CLI) to release
/// the write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool of a file database: WAL lets readers run beside the one writer.
const MAX_CONNECTIONS: u32 = 8;

/// The SQLite store. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and brings its schema up to
    /// date. WAL journal, `synchronous = NORMAL` (a committed transaction survives a process
    /// kill; the last ones may be lost on power loss), a 5 s busy timeout so the admin CLI can
    /// write to the same file while the server runs, foreign keys enforced.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // See the module doc: a connection sqlx still counts inside a transaction is
            // closed, never reused.
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .connect_with(connect_options(path))
            .await
            .map_err(db_err)?;
        Self::migrated(pool).await
    }

    /// A private in-memory database (for tests): one connection that is never recycled, since
    /// the database lives only as long as its connection.
    pub async fn open_in_memory() -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db_err)?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db_err)?;
        Self::migrated(pool).await
    }

    /// Runs the embedded migrations on one connection of `pool`, with foreign keys off while
    /// they run (how SQLite rebuilds a table others reference; it ignores the pragma inside
    /// the transaction sqlx wraps each migration in), then reports what they could not keep.
    async fn migrated(pool: SqlitePool) -> StoreResult<SqliteStore> {
        let mut conn = pool.acquire().await.map_err(db_err)?;
        let set_foreign_keys = |on: bool| format!("PRAGMA foreign_keys = {}", if on { "ON" } else { "OFF" });
        sqlx::query(&set_foreign_keys(false))
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        let migrated = sqlx::migrate!("./migrations/sqlite").run(&mut *conn).await;
        sqlx::query(&set_foreign_keys(true))
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        migrated.map_err(|e| StoreError::Database(format!("migration failed: {e}")))?;
        report_broken_references(&mut conn).await?;
        report_quarantined_keys(&mut conn).await?;
        drop(conn);
        Ok(SqliteStore { pool })
    }

    /// The connection pool, for the admin CLI's own queries and for tests.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The options of the database file at `path`: WAL, `synchronous = NORMAL`, the busy timeout,
/// foreign keys, and a page cache sized for the usage writer.
fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        // The usage writer touches the same index pages batch after batch: keep them in
        // memory (32 MiB of page cache, reads through mmap) instead of a pread per page.
        .pragma("cache_size", "-32768")
        .pragma("mmap_size", "268435456")
}

/// Most rows named in one startup report: the count says how many more there are.
const REPORT_ROWS: i64 = 20;

/// Logs rows whose foreign key names a missing row (none, unless the file was edited by hand):
/// loudly, but the gateway still starts.
async fn report_broken_references(conn: &mut SqliteConnection) -> StoreResult<()> {
    let rows: Vec<(String, Option<i64>, String)> =
        sqlx::query_as("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check LIMIT $1")
            .bind(REPORT_ROWS)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
    for (table, rowid, parent) in rows {
        tracing::error!(table, rowid, parent, "stored row refers to a missing row");
    }
    Ok(())
}

/// Logs the keys migration 0003 moved to `quarantined_api_keys` (ids only, never a hash):
/// they break a constraint no repair could meet, so they are never loaded.
async fn report_quarantined_keys(conn: &mut SqliteConnection) -> StoreResult<()> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quarantined_api_keys")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    if count == 0 {
        return Ok(());
    }
    let keys: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT id, account_id FROM quarantined_api_keys LIMIT $1")
            .bind(REPORT_ROWS)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
    tracing::error!(
        count,
        ?keys,
        "inference keys quarantined (table quarantined_api_keys): they broke a storage constraint and are not served"
    );
    Ok(())
}

/// Inserts a management key inside the caller's transaction.
async fn insert_management_key(conn: &mut SqliteConnection, key: &ManagementKey) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO management_keys (id, account_id, secret_hash, created_at_us, revoked_at_us, hint, name) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&key.id)
    .bind(&key.account_id)
    .bind(&key.secret_hash)
    .bind(key.created_at_us)
    .bind(key.revoked_at_us)
    .bind(&key.hint)
    .bind(&key.name)
    .execute(conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Inserts a ledger entry inside the caller's transaction; returns its id. The caller keeps
/// `accounts.balance_units` in step in the same transaction.
async fn insert_ledger_entry(
    conn: &mut SqliteConnection,
    account_id: &str,
    at_us: i64,
    kind: LedgerKind,
    amount: Usd,
    reference: Option<&str>,
    reason: Option<&str>,
) -> StoreResult<i64> {
    let done = sqlx::query(
        "INSERT INTO ledger_entries (account_id, created_at_us, kind, amount_units, reference, reason) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(account_id)
    .bind(at_us)
    .bind(kind.as_str())
    .bind(amount.units())
    .bind(reference)
    .bind(reason)
    .execute(conn)
    .await
    .map_err(db_err)?;
    Ok(done.last_insert_rowid())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_account(
        &self,
        account: &Account,
        password_hash: Option<&str>,
        management_key: &ManagementKey,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO accounts (id, email, balance_units, created_at_us, password_hash, invite_code, referred_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&account.id)
        .bind(&account.email)
        .bind(account.balance.units())
        .bind(account.created_at_us)
        .bind(password_hash)
        .bind(&account.invite_code)
        .bind(&account.referred_by)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if account.balance != Usd::ZERO {
            let at = account.created_at_us;
            insert_ledger_entry(
                &mut tx,
                &account.id,
                at,
                LedgerKind::Adjustment,
                account.balance,
                None,
                Some("opening balance"),
            )
            .await?;
        }
        insert_management_key(&mut tx, management_key).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn account_by_management_key(&self, hash: &str) -> StoreResult<Option<Account>> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a JOIN management_keys m ON m.account_id = a.id \
             WHERE m.secret_hash = $1 AND m.revoked_at_us IS NULL"
        );
        let row: Option<AccountRow> = sqlx::query_as(&sql)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.map(Account::from))
    }

    async fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $1");
        let row: Option<AccountRow> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.map(Account::from))
    }

    async fn insert_key(&self, key: &ApiKey, max_live_keys: u32) -> StoreResult<bool> {
        let s = SettingsColumns::new(&key.settings)?;
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
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1");
        let row: Option<KeyRow> = sqlx::query_as(&sql)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn active_keys(&self, after: Option<&str>, limit: u32) -> StoreResult<KeyPage> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at_us IS NULL AND ($1 IS NULL OR id > $1) \
             ORDER BY id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(key_page(&rows, limit))
    }

    async fn keys(&self, account_id: &str, after: Option<&str>, limit: u32) -> StoreResult<KeyPage> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = $1 AND ($2 IS NULL OR (created_at_us, id) < \
             (SELECT c.created_at_us, c.id FROM api_keys c WHERE c.id = $2 AND c.account_id = $1)) \
             ORDER BY created_at_us DESC, id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(account_id)
            .bind(after)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(key_page(&rows, limit))
    }

    async fn key(&self, account_id: &str, key_id: &str) -> StoreResult<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND account_id = $2");
        let row: Option<KeyRow> = sqlx::query_as(&sql)
            .bind(key_id)
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn update_key(&self, account_id: &str, key_id: &str, settings: &KeySettings) -> StoreResult<Option<ApiKey>> {
        let s = SettingsColumns::new(settings)?;
        let sql = format!(
            "UPDATE api_keys SET name = $3, max_spend_units = $4, budget_period = $5, rpm_limit = $6, \
             tpm_limit = $7, max_concurrency = $8, models = $9, expires_at_us = $10, metadata = $11, \
             on_oversized_max_tokens = $12, always_include_usage = $13, router_headers = $14 \
             WHERE id = $1 AND account_id = $2 RETURNING {KEY_COLUMNS}"
        );
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
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn revoke_key(&self, account_id: &str, key_id: &str, at_us: i64) -> StoreResult<Option<ApiKey>> {
        // Revoking twice keeps the first revocation time.
        let sql = format!(
            "UPDATE api_keys SET revoked_at_us = COALESCE(revoked_at_us, $3) \
             WHERE id = $1 AND account_id = $2 RETURNING {KEY_COLUMNS}"
        );
        let row: Option<KeyRow> = sqlx::query_as(&sql)
            .bind(key_id)
            .bind(account_id)
            .bind(at_us)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn record_usage(&self, batch: &[UsageRecord]) -> StoreResult<()> {
        usage::record_usage(&self.pool, batch).await
    }

    async fn usage(&self, filter: &UsageFilter) -> StoreResult<Vec<UsageRecord>> {
        usage::usage(&self.pool, filter).await
    }

    async fn usage_summary(&self, filter: &UsageFilter, group: SummaryGroup) -> StoreResult<Vec<SummaryRow>> {
        usage::usage_summary(&self.pool, filter, group).await
    }

    async fn usage_record(&self, account_id: &str, request_id: &str) -> StoreResult<Option<UsageRecord>> {
        usage::usage_record(&self.pool, account_id, request_id).await
    }

    async fn request_recorded(&self, request_id: &str) -> StoreResult<bool> {
        usage::request_recorded(&self.pool, request_id).await
    }

    async fn account_spend(&self, account_id: &str) -> StoreResult<Usd> {
        usage::cost_sum(
            &self.pool,
            "account_id = $1 AND created_at_us >= $2",
            account_id,
            i64::MIN,
        )
        .await
    }

    async fn ledger(&self, account_id: &str, after: Option<i64>, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        accounts::ledger(&self.pool, account_id, after, limit).await
    }

    async fn key_spend_since(&self, key_id: &str, since_us: i64) -> StoreResult<Usd> {
        usage::cost_sum(&self.pool, "key_id = $1 AND created_at_us >= $2", key_id, since_us).await
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<(Account, Option<String>)>> {
        accounts::account_by_email(&self.pool, email).await
    }

    async fn account_by_invite_code(&self, code: &str) -> StoreResult<Option<Account>> {
        accounts::account_by_invite_code(&self.pool, code).await
    }

    async fn accounts(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<Account>> {
        accounts::accounts(&self.pool, after, limit).await
    }

    async fn set_referrer(&self, account_id: &str, referrer_id: &str) -> StoreResult<Result<(), ReferralRefusal>> {
        accounts::set_referrer(&self.pool, account_id, referrer_id).await
    }

    async fn referrals(&self, account_id: &str) -> StoreResult<Vec<Referral>> {
        accounts::referrals(&self.pool, account_id).await
    }

    async fn insert_management_key(&self, key: &ManagementKey) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        insert_management_key(&mut conn, key).await
    }

    async fn management_keys(&self, account_id: &str) -> StoreResult<Vec<ManagementKey>> {
        accounts::management_keys(&self.pool, account_id).await
    }

    async fn revoke_management_key(
        &self,
        account_id: &str,
        key_id: &str,
        at_us: i64,
    ) -> StoreResult<Option<ManagementKey>> {
        accounts::revoke_management_key(&self.pool, account_id, key_id, at_us).await
    }

    async fn adjust_balance(
        &self,
        account_id: &str,
        amount: Usd,
        reason: &str,
        at_us: i64,
    ) -> StoreResult<AdjustOutcome> {
        accounts::adjust_balance(&self.pool, account_id, amount, reason, at_us).await
    }

    async fn ledger_since(&self, after: i64, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        accounts::ledger_since(&self.pool, after, limit).await
    }

    async fn ledger_head(&self) -> StoreResult<i64> {
        accounts::ledger_head(&self.pool).await
    }

    async fn insert_checkout_session(&self, session: &CheckoutSession) -> StoreResult<()> {
        payments::insert_checkout_session(&self.pool, session).await
    }

    async fn checkout_session(&self, account_id: &str, id: &str) -> StoreResult<Option<CheckoutSession>> {
        payments::checkout_session(&self.pool, account_id, id).await
    }

    async fn confirm_payment(&self, confirmation: &PaymentConfirmation) -> StoreResult<ConfirmOutcome> {
        payments::confirm_payment(&self.pool, confirmation).await
    }

    async fn payment(&self, provider: &str, payment_id: &str) -> StoreResult<Option<Payment>> {
        payments::payment(&self.pool, provider, payment_id).await
    }

    async fn reverse_payment(&self, reversal: &PaymentReversal) -> StoreResult<ReversalOutcome> {
        payments::reverse_payment(&self.pool, reversal).await
    }

    async fn set_fx_rate(&self, currency: &str, rate: &FxRate) -> StoreResult<()> {
        accounts::set_fx_rate(&self.pool, currency, rate).await
    }

    async fn fx_rates(&self) -> StoreResult<std::collections::BTreeMap<String, FxRate>> {
        accounts::fx_rates(&self.pool).await
    }

    async fn publish_receipt_key(&self, kid: &str, jwk: &str) -> StoreResult<()> {
        usage::publish_receipt_key(&self.pool, kid, jwk).await
    }

    async fn receipt_keys(&self) -> StoreResult<Vec<String>> {
        usage::receipt_keys(&self.pool).await
    }
}
