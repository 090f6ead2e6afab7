//! `POST /v1/payments/webhooks/{provider}`: a payment provider tells us a payment succeeded, was
//! refunded or was charged back. The provider's adapter verifies the signature over the raw
//! body and its timestamp; the store applies the event exactly once per payment id, in one
//! transaction (credit and commission, or their reversal); the ledger follower then makes the
//! change live before we answer, so the provider's retry policy never races our own state.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;
use serde_json::json;

use router_one_core::billing::{
    ConfirmOutcome, LedgerKind, PaymentConfirmation, PaymentEvent, PaymentEventKind, PaymentReversal, ReversalOutcome,
    SessionStatus,
};
use router_one_core::{ApiError, ErrorKind, Usd, ids};
use router_one_metering::Budget;
use router_one_payments::{PaymentProvider, WebhookError};

use crate::error::{ErrorResponse, internal};
use crate::log_throttle::Throttle;
use crate::state::AppState;
use crate::{follower, routes};

/// `POST /v1/payments/webhooks/{provider}`.
#[utoipa::path(
    post,
    path = "/v1/payments/webhooks/{provider}",
    operation_id = "payments_webhook",
    tag = "payments",
    summary = "A payment provider's signed event",
    params(("provider" = String, Path, description = "The payment provider's configured name.")),
    request_body(content = String, description = "The provider's own event format, signed; verified by its adapter.", content_type = "application/json"),
    responses(
        (status = 200, description = "Applied (at most once per payment id).", body = crate::openapi::schemas::WebhookAck),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 404, response = crate::openapi::schemas::Error),
        (status = 409, response = crate::openapi::schemas::Error),
        (status = 413, response = crate::openapi::schemas::Error),
        (status = 422, response = crate::openapi::schemas::Error),
        (status = 500, response = crate::openapi::schemas::Error)
    ),
)]
pub(crate) async fn webhook(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ErrorResponse> {
    let body = routes::body(body, app.config.max_public_body_bytes)?;
    let provider = app
        .payments
        .get(&name)
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("No payment provider `{name}`.")))?;
    let now_s = ids::now_us() / 1_000_000;
    let event = match provider.read_webhook(&headers, &body, now_s) {
        Ok(Some(event)) => event,
        Ok(None) => return Ok(answer("ignored")),
        Err(WebhookError::Signature(e)) => {
            // Anyone can send these: at most one warning a minute, with the count.
            static REFUSED: Throttle = Throttle::per_minute();
            match REFUSED.hit() {
                Some(count) => tracing::warn!(provider = %name, error = %e, count, "webhooks refused (bad signature)"),
                None => tracing::debug!(provider = %name, error = %e, "webhook refused"),
            }
            return Err(ApiError::new(ErrorKind::InvalidSignature, format!("Webhook refused: {e}.")).into());
        }
        Err(e @ WebhookError::Malformed(_)) => {
            return Err(ApiError::new(ErrorKind::InvalidRequest, e.to_string()).into());
        }
    };
    Ok(answer(apply(&app, provider.as_ref(), event).await?))
}

fn answer(outcome: &'static str) -> Response {
    Json(json!({ "received": true, "outcome": outcome })).into_response()
}

async fn apply(
    app: &AppState,
    provider: &dyn PaymentProvider,
    event: PaymentEvent,
) -> Result<&'static str, ErrorResponse> {
    let kind = match event.kind {
        PaymentEventKind::Succeeded {
            session_id,
            amount,
            currency,
        } => {
            let confirmation = PaymentConfirmation {
                provider: provider.name().to_owned(),
                payment_id: event.payment_id,
                session_id,
                amount,
                currency,
                commission_percent: app.config.commission_percent,
                at_us: ids::now_us(),
            };
            return match app.store.confirm_payment(&confirmation).await.map_err(internal)? {
                ConfirmOutcome::Applied(payment) => {
                    // The credit is live in the budgets before the provider hears back.
                    follower::sync(app).await.map_err(internal)?;
                    tracing::info!(
                        payment = %payment.payment_id,
                        account = %payment.account_id,
                        commission = payment.referrer_id.is_some(),
                        "top-up credited"
                    );
                    Ok("credited")
                }
                ConfirmOutcome::Duplicate(_) => Ok("duplicate"),
                ConfirmOutcome::UnknownSession => {
                    tracing::error!(payment = %confirmation.payment_id, "a paid payment names an unknown checkout session");
                    Err(ApiError::new(ErrorKind::NotFound, "No such checkout session for this provider.").into())
                }
                ConfirmOutcome::Mismatch(why) => {
                    tracing::error!(payment = %confirmation.payment_id, %why, "payment does not match its quote; not credited");
                    Err(ApiError::new(ErrorKind::PaymentMismatch, format!("Not credited: {why}.")).into())
                }
            };
        }
        PaymentEventKind::Refunded => LedgerKind::Refund,
        PaymentEventKind::ChargedBack => LedgerKind::Chargeback,
    };
    reverse(app, provider.name(), &event.payment_id, kind).await
}

/// Takes a payment's credit (and its commission) back. Each account's share is first held on its
/// live budget like a request's reservation, so that no request admitted meanwhile can spend
/// money that is about to leave: what is taken back is at most what the account can spare
/// beyond requests in flight, and no balance goes negative (promise 3).
async fn reverse(
    app: &AppState,
    provider: &str,
    payment_id: &str,
    kind: LedgerKind,
) -> Result<&'static str, ErrorResponse> {
    let payment = app
        .store
        .payment(provider, payment_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_confirmed(payment_id))?;
    if payment.status != SessionStatus::Paid {
        return Ok("already_reversed");
    }
    let payer = Hold::take(app, &payment.account_id, payment.credited).await?;
    let inviter = match &payment.referrer_id {
        Some(id) => Some(Hold::take(app, id, payment.commission).await?),
        None => None,
    };
    let reversal = PaymentReversal {
        provider: provider.to_owned(),
        payment_id: payment_id.to_owned(),
        kind,
        max_debit: payer.amount,
        max_commission_debit: inviter.as_ref().map_or(Usd::ZERO, |h| h.amount),
        at_us: ids::now_us(),
    };
    let outcome = app.store.reverse_payment(&reversal).await.map_err(internal)?;
    // The debits must be live before the holds are released.
    follower::sync(app).await.map_err(internal)?;
    drop((payer, inviter));
    match outcome {
        ReversalOutcome::Applied(p) => {
            if p.reversed < p.credited || p.commission_reversed < p.commission {
                tracing::warn!(payment = %p.payment_id, "reversal took back less than was credited: already spent");
            }
            Ok("reversed")
        }
        ReversalOutcome::Duplicate(_) => Ok("already_reversed"),
        ReversalOutcome::UnknownPayment => Err(not_confirmed(payment_id)),
    }
}

fn not_confirmed(payment_id: &str) -> ErrorResponse {
    ApiError::new(
        ErrorKind::PaymentNotConfirmed,
        format!("Payment `{payment_id}` is not confirmed here yet; retry later."),
    )
    .into()
}

/// Money held on an account's live budget while a reversal is posted; released when dropped.
struct Hold {
    budget: Arc<Budget>,
    amount: Usd,
}

impl Hold {
    /// Holds up to `wanted` of what the account has left.
    async fn take(app: &AppState, account_id: &str, wanted: Usd) -> Result<Hold, ErrorResponse> {
        let account = app
            .store
            .account(account_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| internal(format!("payment names a missing account {account_id}")))?;
        // Loading the account now (if no key of it is live) means a request that loads it during
        // the reversal shares this budget and sees the hold.
        let budget = app.keys.load_account(account_id, account.balance, account.ledger_head);
        let amount = budget
            .reserve_fit(ids::now_us(), |available| {
                Some(available.map_or(wanted, |a| wanted.min(a.max(Usd::ZERO))))
            })
            .unwrap_or(Usd::ZERO);
        Ok(Hold { budget, amount })
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget.settle(self.amount, Usd::ZERO);
    }
}
