//! [`PgStore`]: the store for several gateway nodes sharing one PostgreSQL database. It keeps the
//! meaning of [`SqliteStore`](crate::SqliteStore) — same tables, same row conversions, same
//! test suite — and differs where PostgreSQL runs transactions side by side where SQLite runs
//! one writer at a time:
//!
//! * **Read, then write.** A transaction that decides on a balance locks the account rows first
//!   (`FOR NO KEY UPDATE`, always in account id order, see [`lock_accounts`]), where SQLite took
//!   its one write lock with `BEGIN IMMEDIATE`.
//! * **Cursors follow commit order.** An id drawn from a sequence is taken before commit, so a
//!   transaction can commit id 41 after a reader has read 42. Non-`usage` ledger entries are
//!   therefore inserted under one advisory lock ([`accounts::LedgerTx`]), and usage batches
//!   under another, so usage records page by their sequence number ([`usage`]).
//! * **Retries.** A transaction PostgreSQL rolls back for a deadlock or a serialization failure
//!   (SQLSTATE 40P01, 40001) is run again from the start, a few times ([`retrying`]).
//! * **Partitions.** `usage_records` has one partition per UTC month ([`partitions`]).
//! * **Cluster.** The node registry and budget leases ([`router_one_core::cluster::ClusterStore`],
//!   [`cluster`]); a usage batch moves each record's cost out of the leases that paid for it
//!   ([`lease_draws`]). Without cluster mode no lease exists and nothing of it runs.

mod accounts;
mod cluster;
mod keys;
mod lease_draws;
mod partitions;
mod payments;
mod usage;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use router_one_core::billing::{
    AdjustOutcome, CheckoutSession, ConfirmOutcome, ManagementKey, Payment, PaymentConfirmation, PaymentReversal,
    Referral, ReferralRefusal, ReversalOutcome,
};
use router_one_core::checkout::FxRate;
use router_one_core::ids::now_us;
use router_one_core::money::Usd;
use router_one_core::store::{
    Account, ApiKey, KeyPage, KeySettings, LedgerEntry, Store, StoreError, StoreResult, SummaryGroup, SummaryRow,
    UsageFilter,
};
use router_one_core::usage::UsageRecord;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};

use crate::convert::db_err;

/// Connections in a node's pool: the usage writer, the ledger follower and the API's reads.
const MAX_CONNECTIONS: u32 = 16;

/// How long a call waits for a connection (and so for an unreachable database to come back).
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a session may sit idle inside a transaction before PostgreSQL ends it (our
/// transactions never wait on anything but the database, so only a vanished client does).
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "30s";

/// The PostgreSQL store. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), brings its schema up
    /// to date (sqlx holds an advisory lock while migrating, so nodes starting together take
    /// turns) and creates the usage partitions of this month and the next two.
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(db_err)?
            // A node that vanishes mid-transaction (its network gone, no reset) would otherwise
            // hold its locks — the usage lock every node's writer takes — until TCP keepalive
            // gives up, two hours by default: PostgreSQL ends such a session after this.
            .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT)]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // A database that does not answer must fail a call within seconds, not hold it
            // for sqlx's default 30 s: a request waiting on a grant gets a clean 503, the
            // usage writer retries, the fence and /health see the outage.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(db_err)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))?;
        let store = PgStore { pool };
        store.ensure_partitions(now_us()).await?;
        Ok(store)
    }

    /// The connection pool, for the admin CLI's own queries and for tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Creates the monthly partitions of `usage_records` for the month containing `now_us` and
    /// the next two, where missing, moving into each the rows the DEFAULT partition caught for
    /// its month. Idempotent and safe to run from several nodes at once; `serve` runs it daily
    /// so a month's partition exists well before its first record.
    pub async fn ensure_partitions(&self, now_us: i64) -> StoreResult<()> {
        partitions::ensure(&self.pool, now_us).await
    }
}

/// A failure inside a transaction: one worth running the whole transaction again for, or a
/// final one.
#[derive(Debug)]
enum TxError {
    /// PostgreSQL rolled the transaction back for a deadlock or a serialization failure:
    /// nothing of it was kept, and running it again may well succeed.
    Retry(sqlx::Error),
    /// Anything else.
    Fail(StoreError),
}

/// Result of one attempt at a transaction.
type TxResult<T> = Result<T, TxError>;

impl From<sqlx::Error> for TxError {
    fn from(e: sqlx::Error) -> TxError {
        let retry = matches!(&e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40001" | "40P01")));
        if retry {
            TxError::Retry(e)
        } else {
            TxError::Fail(db_err(e))
        }
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> TxError {
        TxError::Fail(e)
    }
}

impl From<TxError> for StoreError {
    fn from(e: TxError) -> StoreError {
        match e {
            TxError::Retry(e) => db_err(e),
            TxError::Fail(e) => e,
        }
    }
}

/// Attempts at a transaction PostgreSQL keeps rolling back for deadlocks or serialization
/// failures before the error is returned.
const ATTEMPTS: u32 = 5;

/// Runs `attempt` (one whole transaction) until it succeeds, fails for good, or has been
/// rolled back [`ATTEMPTS`] times, waiting a little longer before each new attempt.
async fn retrying<T, F, Fut>(what: &str, mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = TxResult<T>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(TxError::Fail(e)) => return Err(e),
            Err(TxError::Retry(e)) if attempts >= ATTEMPTS => return Err(db_err(e)),
            Err(TxError::Retry(e)) => {
                tracing::warn!(what, attempts, error = %e, "transaction rolled back by PostgreSQL; running it again");
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempts))).await;
            }
        }
    }
}

/// The advisory locks of this schema (arbitrary constants, fixed forever: two releases must
/// agree on them).
mod lock {
    /// Held by every transaction that inserts a non-`usage` ledger entry.
    pub(super) const LEDGER: i64 = 0x526f_4f6e_654c_6467;
    /// Held by every usage batch, so usage records are numbered in commit order.
    pub(super) const USAGE: i64 = 0x526f_4f6e_6555_7367;
    /// Held while usage partitions are created.
    pub(super) const PARTITIONS: i64 = 0x526f_4f6e_6550_7274;
    /// Held while a referrer is attached (the loop check reads a chain of accounts).
    pub(super) const REFERRALS: i64 = 0x526f_4f6e_6552_6566;
}

/// Takes a transaction-scoped advisory lock (released at commit or rollback).
async fn advisory_lock(conn: &mut PgConnection, key: i64) -> TxResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks the rows of the accounts among `ids` that exist, in id order (so two transactions
/// locking overlapping sets cannot deadlock), and returns their balances by id. A row locked
/// `FOR NO KEY UPDATE` still lets others insert rows that refer to it.
async fn lock_accounts(conn: &mut PgConnection, ids: &[&str]) -> TxResult<std::collections::BTreeMap<String, i64>> {
    let rows = sqlx::query("SELECT id, balance_units FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(ids)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("balance_units")?)))
        .collect()
}

/// An account's balance less what is leased to gateway nodes (`balance − leased`, saturated;
/// the balance itself without cluster mode): what a debit other than usage may take. Read
/// with the account's row locked.
async fn available_balance(conn: &mut PgConnection, account_id: &str) -> TxResult<i64> {
    let (balance, leased): (i64, i64) =
        sqlx::query_as("SELECT balance_units, leased_units FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(conn)
            .await?
            .ok_or_else(|| StoreError::Database(format!("unknown account `{account_id}`")))?;
    Ok(balance.saturating_sub(leased))
}

/// Σ of BIGINTs as PostgreSQL returns it (NUMERIC, read as text so it is exact) as an `i64`,
/// saturated with an error in the log when it does not fit (SUM never overflows in PostgreSQL;
/// the result may still be too large for the i64 the core types hold).
fn numeric_sum(text: &str, what: &str) -> StoreResult<i64> {
    let sum: i128 = text
        .parse()
        .map_err(|_| StoreError::Database(format!("{what}: `{text}` is not a whole number")))?;
    Ok(i64::try_from(sum).unwrap_or_else(|_| {
        tracing::error!(what, %sum, "sum out of range; saturated");
        if sum < 0 { i64::MIN } else { i64::MAX }
    }))
}

#[async_trait]
impl Store for PgStore {
    async fn create_account(
        &self,
        account: &Account,
        password_hash: Option<&str>,
        management_key: &ManagementKey,
    ) -> StoreResult<()> {
        retrying("create_account", || {
            accounts::create_account(&self.pool, account, password_hash, management_key)
        })
        .await
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
        retrying("set_referrer", || {
            accounts::set_referrer(&self.pool, account_id, referrer_id)
        })
        .await
    }

    async fn referrals(&self, account_id: &str) -> StoreResult<Vec<Referral>> {
        accounts::referrals(&self.pool, account_id).await
    }

    async fn insert_management_key(&self, key: &ManagementKey) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        Ok(accounts::insert_management_key(&mut conn, key).await?)
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
        retrying("adjust_balance", || {
            accounts::adjust_balance(&self.pool, account_id, amount, reason, at_us)
        })
        .await
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
        retrying("confirm_payment", || {
            payments::confirm_payment(&self.pool, confirmation)
        })
        .await
    }

    async fn payment(&self, provider: &str, payment_id: &str) -> StoreResult<Option<Payment>> {
        payments::payment(&self.pool, provider, payment_id).await
    }

    async fn reverse_payment(&self, reversal: &PaymentReversal) -> StoreResult<ReversalOutcome> {
        retrying("reverse_payment", || payments::reverse_payment(&self.pool, reversal)).await
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

    async fn account_by_management_key(&self, hash: &str) -> StoreResult<Option<Account>> {
        accounts::account_by_management_key(&self.pool, hash).await
    }

    async fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        accounts::account(&self.pool, id).await
    }

    async fn insert_key(&self, key: &ApiKey, max_live_keys: u32) -> StoreResult<bool> {
        retrying("insert_key", || keys::insert_key(&self.pool, key, max_live_keys)).await
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        keys::key_by_hash(&self.pool, hash).await
    }

    async fn active_keys(&self, after: Option<&str>, limit: u32) -> StoreResult<KeyPage> {
        keys::active_keys(&self.pool, after, limit).await
    }

    async fn keys(&self, account_id: &str, after: Option<&str>, limit: u32) -> StoreResult<KeyPage> {
        keys::keys(&self.pool, account_id, after, limit).await
    }

    async fn key(&self, account_id: &str, key_id: &str) -> StoreResult<Option<ApiKey>> {
        keys::key(&self.pool, account_id, key_id).await
    }

    async fn update_key(&self, account_id: &str, key_id: &str, settings: &KeySettings) -> StoreResult<Option<ApiKey>> {
        retrying("update_key", || {
            keys::update_key(&self.pool, account_id, key_id, settings)
        })
        .await
    }

    async fn revoke_key(&self, account_id: &str, key_id: &str, at_us: i64) -> StoreResult<Option<ApiKey>> {
        keys::revoke_key(&self.pool, account_id, key_id, at_us).await
    }

    async fn record_usage(&self, batch: &[UsageRecord]) -> StoreResult<()> {
        retrying("record_usage", || usage::record_usage(&self.pool, batch)).await
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

    async fn key_spend_since(&self, key_id: &str, since_us: i64) -> StoreResult<Usd> {
        usage::cost_sum(&self.pool, "key_id = $1 AND created_at_us >= $2", key_id, since_us).await
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
}
