//! Checkout sessions and payments on SQLite: a payment is credited exactly once per
//! `(provider, payment_id)` (the `payments` primary key), with its inviter's commission, and
//! reversed at most once, never taking a balance below zero.

use router_one_core::billing::{
    CheckoutSession, ConfirmOutcome, LedgerKind, Payment, PaymentConfirmation, PaymentReversal, ReversalOutcome,
    SessionStatus,
};
use router_one_core::money::Usd;
use router_one_core::store::{StoreError, StoreResult};
use sqlx::{SqliteConnection, SqlitePool};

use super::accounts::{BEGIN_WRITE, balance_units, post_entry};
use crate::convert::{PAYMENT_COLUMNS, PaymentRow, SESSION_COLUMNS, SessionRow, commission_of, db_err};

/// Stores a new checkout session.
pub(super) async fn insert_checkout_session(pool: &SqlitePool, session: &CheckoutSession) -> StoreResult<()> {
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
    pool: &SqlitePool,
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
async fn read_payment(conn: &mut SqliteConnection, provider: &str, payment_id: &str) -> StoreResult<Option<Payment>> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider = $1 AND payment_id = $2");
    let row: Option<PaymentRow> = sqlx::query_as(&sql)
        .bind(provider)
        .bind(payment_id)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.map(Payment::try_from).transpose()
}

/// A confirmed payment.
pub(super) async fn payment(pool: &SqlitePool, provider: &str, payment_id: &str) -> StoreResult<Option<Payment>> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    read_payment(&mut conn, provider, payment_id).await
}

/// Applies a successful payment once: see [`router_one_core::store::Store::confirm_payment`].
pub(super) async fn confirm_payment(pool: &SqlitePool, c: &PaymentConfirmation) -> StoreResult<ConfirmOutcome> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
    if let Some(existing) = read_payment(&mut tx, &c.provider, &c.payment_id).await? {
        return Ok(ConfirmOutcome::Duplicate(existing));
    }
    let sql = format!("SELECT {SESSION_COLUMNS} FROM checkout_sessions WHERE id = $1 AND provider = $2");
    let row: Option<SessionRow> = sqlx::query_as(&sql)
        .bind(&c.session_id)
        .bind(&c.provider)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
    let Some(session) = row.map(CheckoutSession::try_from).transpose()? else {
        return Ok(ConfirmOutcome::UnknownSession);
    };
    if session.status != SessionStatus::Open || session.payment_id.is_some() {
        return Ok(ConfirmOutcome::Mismatch(format!(
            "checkout session `{}` is already {} under payment `{}`",
            session.id,
            session.status.as_str(),
            session.payment_id.as_deref().unwrap_or("?")
        )));
    }
    let quote = &session.quote;
    if !c.currency.eq_ignore_ascii_case(&quote.currency) {
        return Ok(ConfirmOutcome::Mismatch(format!(
            "charged in {} but quoted in {}",
            c.currency, quote.currency
        )));
    }
    if c.amount != quote.total {
        return Ok(ConfirmOutcome::Mismatch(format!(
            "charged {} {} but quoted {} {}",
            c.amount, c.currency, quote.total, quote.currency
        )));
    }
    let referrer_id: Option<String> = sqlx::query_scalar("SELECT referred_by FROM accounts WHERE id = $1")
        .bind(&session.account_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?
        .ok_or_else(|| StoreError::Database(format!("unknown account `{}`", session.account_id)))?;
    let credited = quote.token_line_usd;
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
    .execute(&mut *tx)
    .await
    .map_err(db_err);
    match inserted {
        Ok(_) => {}
        Err(StoreError::Conflict(message)) => {
            // Another delivery won the race: report what it stored.
            drop(tx);
            return match payment(pool, &c.provider, &c.payment_id).await? {
                Some(existing) => Ok(ConfirmOutcome::Duplicate(existing)),
                None => Err(StoreError::Conflict(message)),
            };
        }
        Err(e) => return Err(e),
    }
    post_entry(
        &mut tx,
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
        post_entry(
            &mut tx,
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
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    let stored = read_payment(&mut tx, &c.provider, &c.payment_id)
        .await?
        .ok_or_else(|| StoreError::Database("the payment just inserted is missing".into()))?;
    tx.commit().await.map_err(db_err)?;
    Ok(ConfirmOutcome::Applied(stored))
}

/// What may be taken back from an account: the least of what was credited, the caller's bound and
/// the committed balance, never below zero.
async fn bounded_debit(conn: &mut SqliteConnection, account_id: &str, credited: Usd, bound: Usd) -> StoreResult<Usd> {
    let balance = balance_units(conn, account_id)
        .await?
        .ok_or_else(|| StoreError::Database(format!("unknown account `{account_id}`")))?;
    Ok(Usd::from_units(credited.units().min(bound.units()).min(balance).max(0)))
}

/// Reverses a confirmed payment once: see [`router_one_core::store::Store::reverse_payment`].
pub(super) async fn reverse_payment(pool: &SqlitePool, r: &PaymentReversal) -> StoreResult<ReversalOutcome> {
    let status = match r.kind {
        LedgerKind::Refund => SessionStatus::Refunded,
        LedgerKind::Chargeback => SessionStatus::ChargedBack,
        other => {
            return Err(StoreError::Database(format!(
                "a payment reversal is a refund or a chargeback, not `{}`",
                other.as_str()
            )));
        }
    };
    let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
    let Some(paid) = read_payment(&mut tx, &r.provider, &r.payment_id).await? else {
        return Ok(ReversalOutcome::UnknownPayment);
    };
    if paid.status != SessionStatus::Paid {
        return Ok(ReversalOutcome::Duplicate(paid));
    }
    let debit = bounded_debit(&mut tx, &paid.account_id, paid.credited, r.max_debit).await?;
    if debit != Usd::ZERO {
        post_entry(
            &mut tx,
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
        commission_debit = bounded_debit(&mut tx, referrer_id, paid.commission, r.max_commission_debit).await?;
        if commission_debit != Usd::ZERO {
            post_entry(
                &mut tx,
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
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    sqlx::query("UPDATE checkout_sessions SET status = $1 WHERE id = $2")
        .bind(status.as_str())
        .bind(&paid.session_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    let stored = read_payment(&mut tx, &r.provider, &r.payment_id)
        .await?
        .ok_or_else(|| StoreError::Database("the payment being reversed is missing".into()))?;
    tx.commit().await.map_err(db_err)?;
    Ok(ReversalOutcome::Applied(stored))
}
