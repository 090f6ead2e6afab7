//! `GET /v1/referrals` (the caller's code, link, referred accounts and commissions) and
//! `POST /v1/referrals/claim` (attach an inviter after signing up without one). The commission
//! itself is posted with the referred account's top-up, in the same transaction (the store's
//! `confirm_payment`), and reversed with its refund.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use router_one_core::billing::{self, ReferralRefusal};
use router_one_core::ids::rfc3339;
use router_one_core::store::Account;
use router_one_core::{ApiError, ErrorKind, Usd};

use crate::auth::ManagementAccount;
use crate::error::{ErrorResponse, internal};
use crate::routes;
use crate::routes::signup::invite_link;
use crate::state::AppState;

/// `GET /v1/referrals`.
#[utoipa::path(
    get,
    path = "/v1/referrals",
    operation_id = "referrals_get",
    tag = "referrals",
    summary = "The caller's invite code, link, referred accounts and commissions",
    responses(
        (status = 200, description = "The referrals.", body = crate::openapi::schemas::Referrals),
        (status = 401, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn get(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
) -> Result<Response, ErrorResponse> {
    let account = app
        .store
        .account(&account_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| internal("management key of a missing account"))?;
    let referrals = app.store.referrals(&account_id).await.map_err(internal)?;
    let total = referrals
        .iter()
        .fold(Usd::ZERO, |sum, r| sum.saturating_add(r.commission));
    let referred: Vec<_> = referrals
        .iter()
        .map(|r| {
            json!({
                "account_id": r.account_id,
                "email": billing::mask_email(&r.email),
                "joined_at": rfc3339(r.joined_at_us),
                "payments": r.payments,
                "commission": r.commission,
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "referrals",
        "code": account.invite_code,
        "link": invite_link(&app, &account.invite_code),
        "commission_percent": app.config.commission_percent.normalize().to_string(),
        "referred": referred,
        "commission_total": total,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Claim {
    invite_code: String,
}

/// `POST /v1/referrals/claim {invite_code}`: once, and only before the first top-up.
#[utoipa::path(
    post,
    path = "/v1/referrals/claim",
    operation_id = "referrals_claim",
    tag = "referrals",
    summary = "Attach an inviter: once, before the first top-up",
    request_body(content = crate::openapi::schemas::ReferralClaimRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The inviter attached.", body = crate::openapi::schemas::ReferralClaim),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 413, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn claim(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ErrorResponse> {
    let body = routes::body(body, app.config.max_body_bytes)?;
    let request: Claim = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("The body must be {{\"invite_code\"}}: {e}"),
        )
    })?;
    let me = app
        .store
        .account(&account_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| internal("management key of a missing account"))?;
    let inviter = inviter(&app, &request.invite_code, &me.email).await?;
    match app
        .store
        .set_referrer(&account_id, &inviter.id)
        .await
        .map_err(internal)?
    {
        Ok(()) => Ok(Json(json!({ "object": "referral.claim", "referred_by": inviter.id })).into_response()),
        Err(ReferralRefusal::SelfReferral) => Err(refused("Self-referral: this is your own invite code.")),
        Err(ReferralRefusal::Loop) => Err(refused(
            "Referral loop: the owner of this code was referred, directly or not, by you.",
        )),
        Err(ReferralRefusal::AlreadyReferred) => {
            Err(refused("This account already has an inviter; referral is forever."))
        }
        Err(ReferralRefusal::AlreadyPaid) => Err(refused("An inviter can only be added before the first top-up.")),
    }
}

/// The account behind an invite code, as the inviter of an account with `email` (signing up or
/// claiming): an unknown code is 400, and so is one of the same mailbox, `+tag` aliases included
/// (self-referral).
pub(crate) async fn inviter(app: &AppState, code: &str, email: &str) -> Result<Account, ErrorResponse> {
    let inviter = app
        .store
        .account_by_invite_code(&billing::normalize_invite_code(code))
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            ApiError::new(ErrorKind::InvalidRequest, "No account has this invite code.").with_param("invite_code")
        })?;
    if billing::same_mailbox(&inviter.email, email) {
        return Err(refused("Self-referral: this invite code belongs to the same mailbox."));
    }
    Ok(inviter)
}

fn refused(message: &'static str) -> ErrorResponse {
    ApiError::new(ErrorKind::ReferralRefused, message)
        .with_param("invite_code")
        .into()
}
