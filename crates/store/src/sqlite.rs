//! [`SqliteStore`]: the embedded default store, one SQLite file in WAL mode. Accounts and keys
//! live here; the usage path (batched inserts, debits, queries) is in [`usage`](self::usage).

mod usage;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use router_one_core::ids::new_id;
use router_one_core::money::Usd;
use router_one_core::store::{
    Account, ApiKey, KeySettings, LedgerEntry, Store, StoreError, StoreResult, SummaryGroup, SummaryRow, UsageFilter,
};
use router_one_core::usage::UsageRecord;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection};

use crate::convert::{KEY_COLUMNS, KeyRow, SettingsColumns, db_err};

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
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // The usage writer touches the same index pages batch after batch: keep them in
            // memory (32 MiB of page cache, reads through mmap) instead of a pread per page.
            .pragma("cache_size", "-32768")
            .pragma("mmap_size", "268435456");
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
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

    /// Runs the embedded migrations on `pool`.
    async fn migrated(pool: SqlitePool) -> StoreResult<SqliteStore> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))?;
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

/// The `accounts` columns, in [`account_from_row`] order.
const ACCOUNT_COLUMNS: &str = "a.id, a.email, a.balance_units, a.created_at_us";

/// Reads an account selected with [`ACCOUNT_COLUMNS`].
fn account_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Account> {
    Ok(Account {
        id: row.try_get("id").map_err(db_err)?,
        email: row.try_get("email").map_err(db_err)?,
        balance: Usd::from_units(row.try_get("balance_units").map_err(db_err)?),
        created_at_us: row.try_get("created_at_us").map_err(db_err)?,
    })
}

/// Inserts a ledger entry inside the caller's transaction.
async fn insert_ledger_entry(
    conn: &mut SqliteConnection,
    account_id: &str,
    at_us: i64,
    kind: &str,
    amount: Usd,
    reference: Option<&str>,
    reason: Option<&str>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO ledger_entries (account_id, created_at_us, kind, amount_units, reference, reason) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(account_id)
    .bind(at_us)
    .bind(kind)
    .bind(amount.units())
    .bind(reference)
    .bind(reason)
    .execute(conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_account(&self, account: &Account, management_key_hash: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("INSERT INTO accounts (id, email, balance_units, created_at_us) VALUES ($1, $2, $3, $4)")
            .bind(&account.id)
            .bind(&account.email)
            .bind(account.balance.units())
            .bind(account.created_at_us)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if account.balance != Usd::ZERO {
            let at = account.created_at_us;
            insert_ledger_entry(
                &mut tx,
                &account.id,
                at,
                "credit",
                account.balance,
                None,
                Some("opening balance"),
            )
            .await?;
        }
        sqlx::query(
            "INSERT INTO management_keys (id, account_id, secret_hash, created_at_us, revoked_at_us) \
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(new_id("mkey"))
        .bind(&account.id)
        .bind(management_key_hash)
        .bind(account.created_at_us)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn account_by_management_key(&self, hash: &str) -> StoreResult<Option<Account>> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a JOIN management_keys m ON m.account_id = a.id \
             WHERE m.secret_hash = $1 AND m.revoked_at_us IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn insert_key(&self, key: &ApiKey) -> StoreResult<()> {
        let s = SettingsColumns::new(&key.settings)?;
        sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
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
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
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

    async fn active_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at_us IS NULL ORDER BY id");
        let rows: Vec<KeyRow> = sqlx::query_as(&sql).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    async fn keys(&self, account_id: &str) -> StoreResult<Vec<ApiKey>> {
        let sql =
            format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = $1 ORDER BY created_at_us DESC, id DESC");
        let rows: Vec<KeyRow> = sqlx::query_as(&sql)
            .bind(account_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.into_iter().map(ApiKey::try_from).collect()
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
             tpm_limit = $7, max_concurrency = $8, models = $9, expires_at_us = $10, metadata = $11 \
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

    async fn account_spend(&self, account_id: &str) -> StoreResult<Usd> {
        let units: i64 =
            sqlx::query_scalar("SELECT COALESCE(SUM(cost_units), 0) FROM usage_records WHERE account_id = $1")
                .bind(account_id)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(Usd::from_units(units))
    }

    async fn ledger(&self, account_id: &str, after: Option<i64>, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        let rows = sqlx::query(
            "SELECT id, created_at_us, kind, amount_units, reference, reason FROM ledger_entries \
             WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(account_id)
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                Ok(LedgerEntry {
                    id: row.try_get("id").map_err(db_err)?,
                    created_at_us: row.try_get("created_at_us").map_err(db_err)?,
                    kind: row.try_get("kind").map_err(db_err)?,
                    amount: Usd::from_units(row.try_get("amount_units").map_err(db_err)?),
                    reference: row.try_get("reference").map_err(db_err)?,
                    reason: row.try_get("reason").map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn key_spend_since(&self, key_id: &str, since_us: i64) -> StoreResult<Usd> {
        let units: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(cost_units), 0) FROM usage_records WHERE key_id = $1 AND created_at_us >= $2",
        )
        .bind(key_id)
        .bind(since_us)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(Usd::from_units(units))
    }
}
