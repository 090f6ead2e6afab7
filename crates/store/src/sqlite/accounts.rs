//! Accounts beyond creation on SQLite: lookups and the operator's listing, referrals, management
//! keys, operator adjustments, the ledger's readers and the operator's FX rates.
//!
//! Every balance change goes through [`post_entry`], which writes the ledger entry and moves
//! `accounts.balance_units` in the caller's transaction, so that balance = Σ entries at every
//! moment. Transactions that read a balance before writing begin with `BEGIN IMMEDIATE`: they
//! take the write lock first, so two of them never decide on the same stale balance.

use std::collections::BTreeMap;

use router_one_core::billing::{AdjustOutcome, LedgerKind, ManagementKey, Referral, ReferralRefusal};
use router_one_core::checkout::FxRate;
use router_one_core::ids::now_us;
use router_one_core::money::Usd;
use router_one_core::store::{Account, LedgerEntry, StoreError, StoreResult};
use sqlx::{FromRow, Row, SqliteConnection, SqlitePool};

use super::insert_ledger_entry;
use crate::convert::{
    ACCOUNT_COLUMNS, AccountRow, LEDGER_COLUMNS, LedgerRow, MANAGEMENT_KEY_COLUMNS, ManagementKeyRow, db_err, from_i64,
};

/// The statement that begins a transaction which reads balances and then writes: the write
/// lock is taken at once (waiting out the busy timeout), never upgraded from a stale snapshot.
pub(super) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// An account's committed balance, in units, inside the caller's transaction (`None`: no such
/// account).
pub(super) async fn balance_units(conn: &mut SqliteConnection, account_id: &str) -> StoreResult<Option<i64>> {
    sqlx::query_scalar("SELECT balance_units FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(conn)
        .await
        .map_err(db_err)
}

/// Posts `amount` to an account inside the caller's transaction: one ledger entry and the same
/// change of `accounts.balance_units`. Returns the entry's id and the new balance. A debit that
/// would take the balance below zero, an overflow or an unknown account is an error (callers
/// bound their debits first, so this is a last line of defence, never a normal outcome).
pub(super) async fn post_entry(
    conn: &mut SqliteConnection,
    account_id: &str,
    at_us: i64,
    kind: LedgerKind,
    amount: Usd,
    reference: Option<&str>,
    reason: Option<&str>,
) -> StoreResult<(i64, Usd)> {
    let balance = balance_units(conn, account_id)
        .await?
        .ok_or_else(|| StoreError::Database(format!("unknown account `{account_id}`")))?;
    let new = balance
        .checked_add(amount.units())
        .ok_or_else(|| StoreError::Database("balance out of range".into()))?;
    if amount.units() < 0 && new < 0 {
        return Err(StoreError::Database(format!(
            "refused: a {} debit would take `{account_id}` below zero",
            kind.as_str()
        )));
    }
    set_balance_units(conn, account_id, new).await?;
    let id = insert_ledger_entry(conn, account_id, at_us, kind, amount, reference, reason).await?;
    Ok((id, Usd::from_units(new)))
}

/// Sets an account's balance inside the caller's transaction, which posts the matching ledger
/// entry: the sum is always computed in Rust, never in SQL (where an overflow becomes a REAL).
pub(super) async fn set_balance_units(conn: &mut SqliteConnection, account_id: &str, units: i64) -> StoreResult<()> {
    sqlx::query("UPDATE accounts SET balance_units = $1 WHERE id = $2")
        .bind(units)
        .bind(account_id)
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// An account's ledger entries after `after`, oldest first, at most `limit`.
pub(super) async fn ledger(
    pool: &SqlitePool,
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

/// Every account's entries after `after` except `usage` debits, oldest first, at most `limit`.
pub(super) async fn ledger_since(pool: &SqlitePool, after: i64, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
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

/// The id of the last ledger entry [`ledger_since`] returns (0: none): `usage` debits are not
/// counted, as on PostgreSQL (see [`crate::convert::ACCOUNT_COLUMNS`]).
pub(super) async fn ledger_head(pool: &SqlitePool) -> StoreResult<i64> {
    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM ledger_entries WHERE kind <> 'usage'")
        .fetch_one(pool)
        .await
        .map_err(db_err)
}

/// An account and its password hash, by (lower-case) email.
pub(super) async fn account_by_email(pool: &SqlitePool, email: &str) -> StoreResult<Option<(Account, Option<String>)>> {
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
pub(super) async fn account_by_invite_code(pool: &SqlitePool, code: &str) -> StoreResult<Option<Account>> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.invite_code = $1");
    let row: Option<AccountRow> = sqlx::query_as(&sql)
        .bind(code)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    Ok(row.map(Account::from))
}

/// Accounts in id order after `after`, at most `limit`.
pub(super) async fn accounts(pool: &SqlitePool, after: Option<&str>, limit: u32) -> StoreResult<Vec<Account>> {
    let sql =
        format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE ($1 IS NULL OR a.id > $1) ORDER BY a.id LIMIT $2");
    let rows: Vec<AccountRow> = sqlx::query_as(&sql)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    Ok(rows.into_iter().map(Account::from).collect())
}

/// Attaches `referrer_id` as `account_id`'s inviter, in one write transaction. Refusals, in
/// order: self-referral, a referrer already attached, an account that has paid, a loop.
pub(super) async fn set_referrer(
    pool: &SqlitePool,
    account_id: &str,
    referrer_id: &str,
) -> StoreResult<Result<(), ReferralRefusal>> {
    if account_id == referrer_id {
        return Ok(Err(ReferralRefusal::SelfReferral));
    }
    let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
    let current: Option<Option<String>> = sqlx::query_scalar("SELECT referred_by FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
    match current {
        None => return Err(StoreError::Database(format!("unknown account `{account_id}`"))),
        Some(Some(_)) => return Ok(Err(ReferralRefusal::AlreadyReferred)),
        Some(None) => {}
    }
    let referrer_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)")
        .bind(referrer_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
    if !referrer_exists {
        return Err(StoreError::Database(format!("unknown account `{referrer_id}`")));
    }
    let paid: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM payments WHERE account_id = $1)")
        .bind(account_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
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
    .await
    .map_err(db_err)?;
    if looped {
        return Ok(Err(ReferralRefusal::Loop));
    }
    sqlx::query("UPDATE accounts SET referred_by = $2 WHERE id = $1 AND referred_by IS NULL")
        .bind(account_id)
        .bind(referrer_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(Ok(()))
}

/// The accounts `account_id` referred, oldest first, with their payments and net commission.
pub(super) async fn referrals(pool: &SqlitePool, account_id: &str) -> StoreResult<Vec<Referral>> {
    let rows = sqlx::query(
        "SELECT a.id, a.email, a.created_at_us, \
             (SELECT COUNT(*) FROM payments p WHERE p.account_id = a.id AND p.referrer_id = $1) AS payments, \
             (SELECT COALESCE(SUM(p.commission_units - p.commission_reversed_units), 0) FROM payments p \
              WHERE p.account_id = a.id AND p.referrer_id = $1) AS commission \
         FROM accounts a WHERE a.referred_by = $1 ORDER BY a.created_at_us, a.id",
    )
    .bind(account_id)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|row| {
            Ok(Referral {
                account_id: row.try_get("id").map_err(db_err)?,
                email: row.try_get("email").map_err(db_err)?,
                joined_at_us: row.try_get("created_at_us").map_err(db_err)?,
                payments: from_i64(row.try_get("payments").map_err(db_err)?, "payments")?,
                commission: Usd::from_units(row.try_get("commission").map_err(db_err)?),
            })
        })
        .collect()
}

/// An account's management keys, revoked ones included, newest first.
pub(super) async fn management_keys(pool: &SqlitePool, account_id: &str) -> StoreResult<Vec<ManagementKey>> {
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
    pool: &SqlitePool,
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
    pool: &SqlitePool,
    account_id: &str,
    amount: Usd,
    reason: &str,
    at_us: i64,
) -> StoreResult<AdjustOutcome> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
    let Some(balance) = balance_units(&mut tx, account_id).await? else {
        return Ok(AdjustOutcome::UnknownAccount);
    };
    if amount.units() < 0 && balance.checked_add(amount.units()).is_none_or(|after| after < 0) {
        return Ok(AdjustOutcome::InsufficientBalance {
            balance: Usd::from_units(balance),
        });
    }
    let (entry_id, balance) = post_entry(
        &mut tx,
        account_id,
        at_us,
        LedgerKind::Adjustment,
        amount,
        None,
        Some(reason),
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(AdjustOutcome::Applied { entry_id, balance })
}

/// A stored JSON column that does not parse, or a value that does not serialise.
fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Database(format!("FX rate JSON: {e}"))
}

/// Sets (or replaces) a currency's FX rate.
pub(super) async fn set_fx_rate(pool: &SqlitePool, currency: &str, rate: &FxRate) -> StoreResult<()> {
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
pub(super) async fn fx_rates(pool: &SqlitePool) -> StoreResult<BTreeMap<String, FxRate>> {
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
