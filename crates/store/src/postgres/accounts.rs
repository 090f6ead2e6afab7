//! Accounts on PostgreSQL: creation, lookups and the operator's listing, referrals, management
//! keys, operator adjustments, the ledger's readers and the operator's FX rates.
//!
//! **The ledger follower never skips an entry.** A running gateway learns of top-ups, refunds,
//! commissions and adjustments by reading the non-`usage` entries with an id above the last one
//! it saw ([`ledger_since`]), and skips those already in a balance it loaded by the account's
//! `ledger_head`. Ids come from an identity sequence, drawn before commit; were two posting
//! transactions to overlap, the later id could commit first, a follower would move past it,
//! and the earlier one would never be applied. So every non-`usage` entry is inserted through a
//! [`LedgerTx`], which takes one advisory lock before it draws any id and keeps it until it
//! commits or rolls back. Why that is enough:
//!
//! 1. The lock periods of two `LedgerTx` never overlap, and PostgreSQL makes a commit visible
//!    before it releases the transaction's locks. So if `A` held the lock before `B`, `A`'s
//!    entries were all drawn before `B`'s (smaller ids) and were visible before `B` drew any.
//! 2. Take a reader's snapshot and a non-`usage` entry `e` it does not see, of transaction `B`.
//!    Any visible non-`usage` entry `v` belongs to a committed `A ≠ B` (or to `B` itself, but
//!    `B`'s entries are all invisible together). Had `B` held the lock before `A`, `B` would
//!    have been visible before `A` drew `v`, hence before `A` committed, hence in the snapshot
//!    that sees `A`: a contradiction. So `A` came first, and `v.id < e.id`.
//! 3. Hence every non-`usage` entry not yet visible has a higher id than every visible one:
//!    `ledger_head` (the largest visible) and a page of [`ledger_since`] never pass an entry
//!    that will commit later.
//!
//! `usage` debits (one per account per usage batch, [`super::usage`]) take no ledger lock —
//! the follower never applies them — which is why `ledger_head` counts non-`usage` entries
//! only. The lock serialises only the rare postings (top-ups, refunds, commissions,
//! adjustments). Usage records are numbered in commit order the same way, under a lock of
//! their own.
//!
//! **Lock order.** A `LedgerTx` takes the ledger lock first, then account rows in id order
//! ([`super::lock_accounts`]); the usage writer takes the usage lock, then key rows, then
//! account rows in id order. No transaction takes both advisory locks, and none waits for a
//! lock while holding one that comes later in that order.

use std::collections::BTreeMap;

use router_one_core::billing::{AdjustOutcome, LedgerKind, ManagementKey, Referral, ReferralRefusal};
use router_one_core::checkout::FxRate;
use router_one_core::ids::now_us;
use router_one_core::money::Usd;
use router_one_core::store::{Account, LedgerEntry, StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgPool, Postgres, Row, Transaction};

use super::{TxResult, advisory_lock, available_balance, lock, lock_accounts, numeric_sum};
use crate::convert::{
    ACCOUNT_COLUMNS, AccountRow, LEDGER_COLUMNS, LedgerRow, MANAGEMENT_KEY_COLUMNS, ManagementKeyRow, db_err, from_i64,
};

/// A transaction that may post non-`usage` ledger entries: it holds the ledger lock from its
/// first statement to its end (see the module doc), and is the only way to post one.
pub(super) struct LedgerTx {
    tx: Transaction<'static, Postgres>,
}

impl LedgerTx {
    /// Begins a transaction and takes the ledger lock, waiting for the one holding it.
    pub(super) async fn begin(pool: &PgPool) -> TxResult<LedgerTx> {
        let mut tx = pool.begin().await?;
        advisory_lock(&mut tx, lock::LEDGER).await?;
        Ok(LedgerTx { tx })
    }

    /// The transaction's connection, for its other statements.
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Commits (releasing the ledger lock).
    pub(super) async fn commit(self) -> TxResult<()> {
        Ok(self.tx.commit().await?)
    }

    /// Posts `amount` to an account: one ledger entry and the same change of
    /// `accounts.balance_units`, the sum computed in Rust. Returns the entry's id and the new
    /// balance. The account's row is locked (the caller has usually locked it already, with
    /// the other rows of the transaction in id order). A debit that would take the balance
    /// below zero, an overflow or an unknown account is an error: callers bound their debits
    /// first, so this is a last line of defence, never a normal outcome.
    pub(super) async fn post_entry(
        &mut self,
        account_id: &str,
        at_us: i64,
        kind: LedgerKind,
        amount: Usd,
        reference: Option<&str>,
        reason: Option<&str>,
    ) -> TxResult<(i64, Usd)> {
        if kind == LedgerKind::Usage {
            return Err(StoreError::Database("usage debits are posted by the usage writer".into()).into());
        }
        let balance = *lock_accounts(&mut self.tx, &[account_id])
            .await?
            .get(account_id)
            .ok_or_else(|| StoreError::Database(format!("unknown account `{account_id}`")))?;
        let new = balance
            .checked_add(amount.units())
            .ok_or_else(|| StoreError::Database("balance out of range".into()))?;
        if amount.units() < 0 && new < 0 {
            return Err(StoreError::Database(format!(
                "refused: a {} debit would take `{account_id}` below zero",
                kind.as_str()
            ))
            .into());
        }
        sqlx::query("UPDATE accounts SET balance_units = $1 WHERE id = $2")
            .bind(new)
            .bind(account_id)
            .execute(&mut *self.tx)
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO ledger_entries (account_id, created_at_us, kind, amount_units, reference, reason) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(account_id)
        .bind(at_us)
        .bind(kind.as_str())
        .bind(amount.units())
        .bind(reference)
        .bind(reason)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok((id, Usd::from_units(new)))
    }
}

/// Inserts an account row and its first management key, inside the caller's transaction.
async fn insert_account(
    conn: &mut PgConnection,
    account: &Account,
    password_hash: Option<&str>,
    management_key: &ManagementKey,
) -> TxResult<()> {
    sqlx::query(
        "INSERT INTO accounts (id, email, balance_units, created_at_us, password_hash, invite_code, referred_by) \
         VALUES ($1, $2, 0, $3, $4, $5, $6)",
    )
    .bind(&account.id)
    .bind(&account.email)
    .bind(account.created_at_us)
    .bind(password_hash)
    .bind(&account.invite_code)
    .bind(&account.referred_by)
    .execute(&mut *conn)
    .await?;
    insert_management_key(conn, management_key).await
}

/// Creates an account, its first management key and its opening `adjustment` entry (if its
/// balance is not zero), in one transaction. The balance starts at zero and the opening entry
/// moves it, so balance = Σ entries from the first moment.
pub(super) async fn create_account(
    pool: &PgPool,
    account: &Account,
    password_hash: Option<&str>,
    management_key: &ManagementKey,
) -> TxResult<()> {
    if account.balance == Usd::ZERO {
        let mut tx = pool.begin().await?;
        insert_account(&mut tx, account, password_hash, management_key).await?;
        return Ok(tx.commit().await?);
    }
    let mut tx = LedgerTx::begin(pool).await?;
    insert_account(tx.conn(), account, password_hash, management_key).await?;
    tx.post_entry(
        &account.id,
        account.created_at_us,
        LedgerKind::Adjustment,
        account.balance,
        None,
        Some("opening balance"),
    )
    .await?;
    tx.commit().await
}

/// Inserts a management key, on any connection.
pub(super) async fn insert_management_key(conn: &mut PgConnection, key: &ManagementKey) -> TxResult<()> {
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
    .await?;
    Ok(())
}

/// The account with an unrevoked management key whose secret hashes to `hash`.
pub(super) async fn account_by_management_key(pool: &PgPool, hash: &str) -> StoreResult<Option<Account>> {
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts a JOIN management_keys m ON m.account_id = a.id \
         WHERE m.secret_hash = $1 AND m.revoked_at_us IS NULL"
    );
    let row: Option<AccountRow> = sqlx::query_as(&sql)
        .bind(hash)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    Ok(row.map(Account::from))
}

/// One account.
pub(super) async fn account(pool: &PgPool, id: &str) -> StoreResult<Option<Account>> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $1");
    let row: Option<AccountRow> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    Ok(row.map(Account::from))
}

/// An account's ledger entries after `after`, oldest first, at most `limit`.
pub(super) async fn ledger(
    pool: &PgPool,
    account_id: &str,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<LedgerEntry>> {
    let sql =
        format!("SELECT {LEDGER_COLUMNS} FROM ledger_entries WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT $3");
    let rows: Vec<LedgerRow> = sqlx::query_as(&sql)
        .bind(account_id)
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    rows.into_iter().map(LedgerEntry::try_from).collect()
}

/// Every account's entries after `after` except `usage` debits, oldest first, at most `limit`
/// (they commit in id order: see the module doc).
pub(super) async fn ledger_since(pool: &PgPool, after: i64, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
    let sql =
        format!("SELECT {LEDGER_COLUMNS} FROM ledger_entries WHERE id > $1 AND kind <> 'usage' ORDER BY id LIMIT $2");
    let rows: Vec<LedgerRow> = sqlx::query_as(&sql)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    rows.into_iter().map(LedgerEntry::try_from).collect()
}

/// The id of the last non-`usage` entry (0: none).
pub(super) async fn ledger_head(pool: &PgPool) -> StoreResult<i64> {
    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM ledger_entries WHERE kind <> 'usage'")
        .fetch_one(pool)
        .await
        .map_err(db_err)
}

/// An account and its password hash, by (lower-case) email.
pub(super) async fn account_by_email(pool: &PgPool, email: &str) -> StoreResult<Option<(Account, Option<String>)>> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS}, a.password_hash FROM accounts a WHERE a.email = $1");
    let row = sqlx::query(&sql)
        .bind(email)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.map(|row| {
        let hash: Option<String> = row.try_get("password_hash").map_err(db_err)?;
        Ok((AccountRow::from_row(&row).map_err(db_err)?.into(), hash))
    })
    .transpose()
}

/// The account with this invite code.
pub(super) async fn account_by_invite_code(pool: &PgPool, code: &str) -> StoreResult<Option<Account>> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.invite_code = $1");
    let row: Option<AccountRow> = sqlx::query_as(&sql)
        .bind(code)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    Ok(row.map(Account::from))
}

/// Accounts in id order after `after`, at most `limit`.
pub(super) async fn accounts(pool: &PgPool, after: Option<&str>, limit: u32) -> StoreResult<Vec<Account>> {
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE ($1::text IS NULL OR a.id > $1) ORDER BY a.id LIMIT $2"
    );
    let rows: Vec<AccountRow> = sqlx::query_as(&sql)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    Ok(rows.into_iter().map(Account::from).collect())
}

/// Attaches `referrer_id` as `account_id`'s inviter. Refusals, in order: self-referral, a
/// referrer already attached, an account that has paid, a loop. Two attachments at once could
/// each pass the loop check and together close a loop, so they take turns (an advisory lock);
/// the account's row is locked too, so a payment confirmed meanwhile is seen (a confirmation
/// locks the payer's row before it reads its inviter).
pub(super) async fn set_referrer(
    pool: &PgPool,
    account_id: &str,
    referrer_id: &str,
) -> TxResult<Result<(), ReferralRefusal>> {
    if account_id == referrer_id {
        return Ok(Err(ReferralRefusal::SelfReferral));
    }
    let mut tx = pool.begin().await?;
    advisory_lock(&mut tx, lock::REFERRALS).await?;
    let current: Option<Option<String>> =
        sqlx::query_scalar("SELECT referred_by FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
    match current {
        None => return Err(StoreError::Database(format!("unknown account `{account_id}`")).into()),
        Some(Some(_)) => return Ok(Err(ReferralRefusal::AlreadyReferred)),
        Some(None) => {}
    }
    let referrer_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)")
        .bind(referrer_id)
        .fetch_one(&mut *tx)
        .await?;
    if !referrer_exists {
        return Err(StoreError::Database(format!("unknown account `{referrer_id}`")).into());
    }
    let paid: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM payments WHERE account_id = $1)")
        .bind(account_id)
        .fetch_one(&mut *tx)
        .await?;
    if paid {
        return Ok(Err(ReferralRefusal::AlreadyPaid));
    }
    // The referrer's inviters, upward (UNION stops on a cycle already in the data).
    let looped: bool = sqlx::query_scalar(
        "WITH RECURSIVE chain (id) AS ( \
             SELECT referred_by FROM accounts WHERE id = $1 \
             UNION SELECT a.referred_by FROM accounts a JOIN chain c ON a.id = c.id \
         ) SELECT EXISTS (SELECT 1 FROM chain WHERE id = $2)",
    )
    .bind(referrer_id)
    .bind(account_id)
    .fetch_one(&mut *tx)
    .await?;
    if looped {
        return Ok(Err(ReferralRefusal::Loop));
    }
    sqlx::query("UPDATE accounts SET referred_by = $2 WHERE id = $1 AND referred_by IS NULL")
        .bind(account_id)
        .bind(referrer_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// Reads one row of [`referrals`].
fn referral_from_row(row: &PgRow) -> StoreResult<Referral> {
    let commission: String = row.try_get("commission").map_err(db_err)?;
    Ok(Referral {
        account_id: row.try_get("id").map_err(db_err)?,
        email: row.try_get("email").map_err(db_err)?,
        joined_at_us: row.try_get("created_at_us").map_err(db_err)?,
        payments: from_i64(row.try_get("payments").map_err(db_err)?, "payments")?,
        commission: Usd::from_units(numeric_sum(&commission, "commission")?),
    })
}

/// The accounts `account_id` referred, oldest first, with their payments and net commission.
pub(super) async fn referrals(pool: &PgPool, account_id: &str) -> StoreResult<Vec<Referral>> {
    let rows = sqlx::query(
        "SELECT a.id, a.email, a.created_at_us, \
             (SELECT COUNT(*) FROM payments p WHERE p.account_id = a.id AND p.referrer_id = $1) AS payments, \
             (SELECT COALESCE(SUM(p.commission_units - p.commission_reversed_units), 0) FROM payments p \
              WHERE p.account_id = a.id AND p.referrer_id = $1)::text AS commission \
         FROM accounts a WHERE a.referred_by = $1 ORDER BY a.created_at_us, a.id",
    )
    .bind(account_id)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(referral_from_row).collect()
}

/// An account's management keys, revoked ones included, newest first.
pub(super) async fn management_keys(pool: &PgPool, account_id: &str) -> StoreResult<Vec<ManagementKey>> {
    let sql = format!(
        "SELECT {MANAGEMENT_KEY_COLUMNS} FROM management_keys WHERE account_id = $1 \
         ORDER BY created_at_us DESC, id DESC"
    );
    let rows: Vec<ManagementKeyRow> = sqlx::query_as(&sql)
        .bind(account_id)
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    Ok(rows.into_iter().map(ManagementKey::from).collect())
}

/// Revokes a management key of the account, keeping the first revocation time.
pub(super) async fn revoke_management_key(
    pool: &PgPool,
    account_id: &str,
    key_id: &str,
    at_us: i64,
) -> StoreResult<Option<ManagementKey>> {
    let sql = format!(
        "UPDATE management_keys SET revoked_at_us = COALESCE(revoked_at_us, $3) \
         WHERE id = $1 AND account_id = $2 RETURNING {MANAGEMENT_KEY_COLUMNS}"
    );
    let row: Option<ManagementKeyRow> = sqlx::query_as(&sql)
        .bind(key_id)
        .bind(account_id)
        .bind(at_us)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    Ok(row.map(ManagementKey::from))
}

/// Posts an operator's adjustment; a debit larger than the committed balance is refused.
pub(super) async fn adjust_balance(
    pool: &PgPool,
    account_id: &str,
    amount: Usd,
    reason: &str,
    at_us: i64,
) -> TxResult<AdjustOutcome> {
    let mut tx = LedgerTx::begin(pool).await?;
    if !lock_accounts(tx.conn(), &[account_id]).await?.contains_key(account_id) {
        return Ok(AdjustOutcome::UnknownAccount);
    }
    // Money leased to gateway nodes (cluster mode) is promised already: a debit may take only
    // the rest, and a refusal reports only the rest.
    let available = available_balance(tx.conn(), account_id).await?;
    if amount.units() < 0 && available.checked_add(amount.units()).is_none_or(|after| after < 0) {
        return Ok(AdjustOutcome::InsufficientBalance {
            balance: Usd::from_units(available),
        });
    }
    let (entry_id, balance) = tx
        .post_entry(account_id, at_us, LedgerKind::Adjustment, amount, None, Some(reason))
        .await?;
    tx.commit().await?;
    Ok(AdjustOutcome::Applied { entry_id, balance })
}

/// A stored JSON column that does not parse, or a value that does not serialise.
fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Database(format!("FX rate JSON: {e}"))
}

/// Sets (or replaces) a currency's FX rate.
pub(super) async fn set_fx_rate(pool: &PgPool, currency: &str, rate: &FxRate) -> StoreResult<()> {
    let json = serde_json::to_string(rate).map_err(json_err)?;
    sqlx::query(
        "INSERT INTO fx_rates (currency, rate, updated_at_us) VALUES ($1, $2, $3) \
         ON CONFLICT (currency) DO UPDATE SET rate = excluded.rate, updated_at_us = excluded.updated_at_us",
    )
    .bind(currency)
    .bind(json)
    .bind(now_us())
    .execute(pool)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// The stored FX rates, by currency. A rate that does not parse is left out with an error in
/// the log (the config file's rate for that currency stays in force): one bad row must not
/// stop the gateway from starting.
pub(super) async fn fx_rates(pool: &PgPool) -> StoreResult<BTreeMap<String, FxRate>> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT currency, rate FROM fx_rates ORDER BY currency")
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .filter_map(|(currency, rate)| match serde_json::from_str(&rate) {
            Ok(rate) => Some((currency, rate)),
            Err(e) => {
                tracing::error!(currency, error = %e, "stored FX rate cannot be read; ignored");
                None
            }
        })
        .collect())
}
