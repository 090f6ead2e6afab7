//! Checkout sessions and payments on PostgreSQL: a payment is credited exactly once per
//! `(provider, payment_id)`, with its inviter's commission, and reversed at most once, never
//! taking a balance below zero. Both run in a [`LedgerTx`]: confirmations and reversals take
//! turns on the ledger lock, so each one's "already confirmed?" read sees every other that
//! committed before it (the `payments` primary key stays the last line of defence).

use router_one_core::billing::{
    CheckoutSession, ConfirmOutcome, LedgerKind, Payment, PaymentConfirmation, PaymentReversal, ReversalOutcome,
    SessionStatus,
};
use router_one_core::money::Usd;
use router_one_core::store::{StoreError, StoreResult};
use sqlx::{PgConnection, PgPool};

use super::accounts::LedgerTx;
use super::{TxError, TxResult, available_balance, lock_accounts};
use crate::convert::{PAYMENT_COLUMNS, PaymentRow, SESSION_COLUMNS, SessionRow, commission_of, db_err};

/// Stores a new checkout session.
pub(super) async fn insert_checkout_session(pool: &PgPool, session: &CheckoutSession) -> StoreResult<()> {
    let quote = serde_json::to_string(&session.quote).map_err(|e| StoreError::Database(format!("quote JSON: {e}")))?;
    sqlx::query(
        "INSERT INTO checkout_sessions (id, account_id, provider, provider_session_id, payment_url, quote, \
         token_line_units, currency, total, status, payment_id, created_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&session.id)
    .bind(&session.account_id)
    .bind(&session.provider)
    .bind(&session.provider_session_id)
    .bind(&session.payment_url)
    .bind(quote)
    .bind(session.quote.token_line_usd.units())
    .bind(&session.quote.currency)
    .bind(session.quote.total.to_string())
    .bind(session.status.as_str())
    .bind(&session.payment_id)
    .bind(session.created_at_us)
    .execute(pool)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// One checkout session of an account.
pub(super) async fn checkout_session(
    pool: &PgPool,
    account_id: &str,
    id: &str,
) -> StoreResult<Option<CheckoutSession>> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM checkout_sessions WHERE id = $1 AND account_id = $2");
    let row: Option<SessionRow> = sqlx::query_as(&sql)
        .bind(id)
        .bind(account_id)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.map(CheckoutSession::try_from).transpose()
}

/// A payment, on any connection.
async fn read_payment(conn: &mut PgConnection, provider: &str, payment_id: &str) -> TxResult<Option<Payment>> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider = $1 AND payment_id = $2");
    let row: Option<PaymentRow> = sqlx::query_as(&sql)
        .bind(provider)
        .bind(payment_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Payment::try_from).transpose()?)
}

/// A confirmed payment.
pub(super) async fn payment(pool: &PgPool, provider: &str, payment_id: &str) -> StoreResult<Option<Payment>> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    Ok(read_payment(&mut conn, provider, payment_id).await?)
}

/// An account's inviter (`Err` for an unknown account).
async fn referred_by(conn: &mut PgConnection, account_id: &str) -> TxResult<Option<String>> {
    let found: Option<Option<String>> = sqlx::query_scalar("SELECT referred_by FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(conn)
        .await?;
    Ok(found.ok_or_else(|| StoreError::Database(format!("unknown account `{account_id}`")))?)
}

/// Locks the payer's row and its inviter's (in id order) and returns the inviter as read once
/// the payer's row is locked: an inviter attached meanwhile is seen, and none can be attached
/// until this transaction ends (attaching one locks the payer's row too).
async fn lock_payer_and_inviter(conn: &mut PgConnection, payer: &str) -> TxResult<Option<String>> {
    let first_read = referred_by(conn, payer).await?;
    let mut ids = vec![payer];
    ids.extend(first_read.as_deref());
    lock_accounts(conn, &ids).await?;
    let inviter = referred_by(conn, payer).await?;
    if let Some(inviter) = inviter.as_deref().filter(|i| Some(*i) != first_read.as_deref()) {
        // Attached between the two reads: lock it too (out of order, but a deadlock is
        // retried, and this needs a referral to land within this very window).
        lock_accounts(conn, &[inviter]).await?;
    }
    Ok(inviter)
}

/// Applies a successful payment once: see [`router_one_core::store::Store::confirm_payment`].
pub(super) async fn confirm_payment(pool: &PgPool, c: &PaymentConfirmation) -> TxResult<ConfirmOutcome> {
    let mut tx = LedgerTx::begin(pool).await?;
    if let Some(existing) = read_payment(tx.conn(), &c.provider, &c.payment_id).await? {
        return Ok(ConfirmOutcome::Duplicate(existing));
    }
    let sql = format!("SELECT {SESSION_COLUMNS} FROM checkout_sessions WHERE id = $1 AND provider = $2");
    let row: Option<SessionRow> = sqlx::query_as(&sql)
        .bind(&c.session_id)
        .bind(&c.provider)
        .fetch_optional(tx.conn())
        .await?;
    let Some(session) = row.map(CheckoutSession::try_from).transpose()? else {
        return Ok(ConfirmOutcome::UnknownSession);
    };
    if let Some(mismatch) = mismatch(&session, c) {
        return Ok(ConfirmOutcome::Mismatch(mismatch));
    }
    let referrer_id = lock_payer_and_inviter(tx.conn(), &session.account_id).await?;
    let credited = session.quote.token_line_usd;
    let commission = match referrer_id {
        Some(_) => commission_of(credited, c.commission_percent)?,
        None => Usd::ZERO,
    };
    let inserted = sqlx::query(
        "INSERT INTO payments (provider, payment_id, session_id, account_id, credited_units, referrer_id, \
         commission_units, status, created_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&c.provider)
    .bind(&c.payment_id)
    .bind(&session.id)
    .bind(&session.account_id)
    .bind(credited.units())
    .bind(&referrer_id)
    .bind(commission.units())
    .bind(SessionStatus::Paid.as_str())
    .bind(c.at_us)
    .execute(tx.conn())
    .await;
    match inserted.map_err(TxError::from) {
        Ok(_) => {}
        Err(TxError::Fail(StoreError::Conflict(message))) => {
            // Another delivery won (the ledger lock makes this unreachable, but the primary
            // key is what guarantees it): report what it stored.
            drop(tx);
            return match payment(pool, &c.provider, &c.payment_id).await? {
                Some(existing) => Ok(ConfirmOutcome::Duplicate(existing)),
                None => Err(StoreError::Conflict(message).into()),
            };
        }
        Err(e) => return Err(e),
    }
    tx.post_entry(
        &session.account_id,
        c.at_us,
        LedgerKind::Topup,
        credited,
        Some(&c.payment_id),
        Some(&format!("checkout session {}", session.id)),
    )
    .await?;
    if let Some(referrer_id) = &referrer_id
        && commission != Usd::ZERO
    {
        tx.post_entry(
            referrer_id,
            c.at_us,
            LedgerKind::Commission,
            commission,
            Some(&c.payment_id),
            Some(&format!("commission on a top-up by {}", session.account_id)),
        )
        .await?;
    }
    sqlx::query("UPDATE checkout_sessions SET status = $1, payment_id = $2 WHERE id = $3")
        .bind(SessionStatus::Paid.as_str())
        .bind(&c.payment_id)
        .bind(&session.id)
        .execute(tx.conn())
        .await?;
    let stored = read_payment(tx.conn(), &c.provider, &c.payment_id)
        .await?
        .ok_or_else(|| StoreError::Database("the payment just inserted is missing".into()))?;
    tx.commit().await?;
    Ok(ConfirmOutcome::Applied(stored))
}

/// Why a confirmation does not match its session (`None`: it does).
fn mismatch(session: &CheckoutSession, c: &PaymentConfirmation) -> Option<String> {
    if session.status != SessionStatus::Open || session.payment_id.is_some() {
        return Some(format!(
            "checkout session `{}` is already {} under payment `{}`",
            session.id,
            session.status.as_str(),
            session.payment_id.as_deref().unwrap_or("?")
        ));
    }
    let quote = &session.quote;
    if !c.currency.eq_ignore_ascii_case(&quote.currency) {
        return Some(format!("charged in {} but quoted in {}", c.currency, quote.currency));
    }
    if c.amount != quote.total {
        return Some(format!(
            "charged {} {} but quoted {} {}",
            c.amount, c.currency, quote.total, quote.currency
        ));
    }
    None
}

/// What may be taken back from an account whose row is locked: the least of what was
/// credited, the caller's bound and the committed balance less what is leased to gateway
/// nodes (cluster mode: money leased is already promised to requests in flight, so a reversal
/// never makes `balance − leased` negative; without leases this is the balance), never below
/// zero.
async fn bounded_debit(conn: &mut PgConnection, account_id: &str, credited: Usd, bound: Usd) -> TxResult<Usd> {
    lock_accounts(conn, &[account_id]).await?;
    let available = available_balance(conn, account_id).await?;
    Ok(Usd::from_units(
        credited.units().min(bound.units()).min(available).max(0),
    ))
}

/// Reverses a confirmed payment once: see [`router_one_core::store::Store::reverse_payment`].
pub(super) async fn reverse_payment(pool: &PgPool, r: &PaymentReversal) -> TxResult<ReversalOutcome> {
    let status = match r.kind {
        LedgerKind::Refund => SessionStatus::Refunded,
        LedgerKind::Chargeback => SessionStatus::ChargedBack,
        other => {
            return Err(StoreError::Database(format!(
                "a payment reversal is a refund or a chargeback, not `{}`",
                other.as_str()
            ))
            .into());
        }
    };
    let mut tx = LedgerTx::begin(pool).await?;
    let Some(paid) = read_payment(tx.conn(), &r.provider, &r.payment_id).await? else {
        return Ok(ReversalOutcome::UnknownPayment);
    };
    if paid.status != SessionStatus::Paid {
        return Ok(ReversalOutcome::Duplicate(paid));
    }
    let mut ids = vec![paid.account_id.as_str()];
    ids.extend(paid.referrer_id.as_deref());
    lock_accounts(tx.conn(), &ids).await?;
    let debit = bounded_debit(tx.conn(), &paid.account_id, paid.credited, r.max_debit).await?;
    if debit != Usd::ZERO {
        tx.post_entry(
            &paid.account_id,
            r.at_us,
            r.kind,
            Usd::from_units(-debit.units()),
            Some(&r.payment_id),
            Some(&format!("{} of checkout session {}", r.kind.as_str(), paid.session_id)),
        )
        .await?;
    }
    let mut commission_debit = Usd::ZERO;
    if let Some(referrer_id) = &paid.referrer_id
        && paid.commission != Usd::ZERO
    {
        commission_debit = bounded_debit(tx.conn(), referrer_id, paid.commission, r.max_commission_debit).await?;
        if commission_debit != Usd::ZERO {
            tx.post_entry(
                referrer_id,
                r.at_us,
                LedgerKind::CommissionReversal,
                Usd::from_units(-commission_debit.units()),
                Some(&r.payment_id),
                Some(&format!(
                    "commission on a top-up by {} taken back ({})",
                    paid.account_id,
                    r.kind.as_str()
                )),
            )
            .await?;
        }
    }
    sqlx::query(
        "UPDATE payments SET status = $1, reversed_units = $2, commission_reversed_units = $3, reversed_at_us = $4 \
         WHERE provider = $5 AND payment_id = $6",
    )
    .bind(status.as_str())
    .bind(debit.units())
    .bind(commission_debit.units())
    .bind(r.at_us)
    .bind(&r.provider)
    .bind(&r.payment_id)
    .execute(tx.conn())
    .await?;
    sqlx::query("UPDATE checkout_sessions SET status = $1 WHERE id = $2")
        .bind(status.as_str())
        .bind(&paid.session_id)
        .execute(tx.conn())
        .await?;
    let stored = read_payment(tx.conn(), &r.provider, &r.payment_id)
        .await?
        .ok_or_else(|| StoreError::Database("the payment being reversed is missing".into()))?;
    tx.commit().await?;
    Ok(ReversalOutcome::Applied(stored))
}
