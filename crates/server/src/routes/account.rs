//! `GET /v1/account` and `GET /v1/account/ledger`: the calling account's balance, spend and
//! ledger (append-only: the balance is the sum of its entries).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use router_one_core::ids::rfc3339;
use router_one_core::{ApiError, ErrorKind};

use crate::auth::ManagementAccount;
use crate::error::{ErrorResponse, internal};
use crate::state::AppState;

/// Entries per page unless `limit` says otherwise, and the most a page may hold.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// `GET /v1/account`: the committed balance (Σ ledger) and spend (Σ usage records), and what
/// requests in flight hold right now.
#[utoipa::path(
    get,
    path = "/v1/account",
    operation_id = "account_get",
    tag = "account",
    summary = "The account's balance, spend and what requests in flight hold",
    responses(
        (status = 200, description = "The account.", body = crate::openapi::schemas::Account),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 404, response = crate::openapi::schemas::Error)
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
        .ok_or_else(|| ErrorResponse::from(ApiError::new(ErrorKind::NotFound, "No such account.")))?;
    let spend = app.store.account_spend(&account_id).await.map_err(internal)?;
    let reserved = app.keys.account(&account_id).map(|b| b.reserved());
    Ok(Json(json!({
        "object": "account",
        "id": account.id,
        "email": account.email,
        "balance": account.balance,
        "spend": spend,
        "reserved": reserved.unwrap_or_default(),
        "invite_code": account.invite_code,
        "referred_by": account.referred_by,
        "created_at": rfc3339(account.created_at_us),
    }))
    .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LedgerQuery {
    /// Page cursor: the previous page's `next_cursor` (an entry id).
    after: Option<i64>,
    /// Entries per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// `GET /v1/account/ledger?after=<entry id>&limit=N`: entries oldest first, cursor pages.
#[utoipa::path(
    get,
    path = "/v1/account/ledger",
    operation_id = "account_ledger",
    tag = "account",
    summary = "The account's ledger, oldest first, in cursor pages",
    params(LedgerQuery),
    responses(
        (status = 200, description = "One page.", body = crate::openapi::schemas::LedgerPage),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 401, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn ledger(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    query: Result<Query<LedgerQuery>, QueryRejection>,
) -> Result<Response, ErrorResponse> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorKind::InvalidRequest, e.body_text()).with_param("query"))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("limit must be between 1 and {MAX_LIMIT}."),
        )
        .with_param("limit")
        .into());
    }
    // One extra entry tells whether another page exists.
    let mut entries = app
        .store
        .ledger(&account_id, query.after, limit + 1)
        .await
        .map_err(internal)?;
    let has_more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let data: Vec<_> = entries
        .iter()
        .map(|e| {
            json!({
                "object": "ledger_entry",
                "id": e.id,
                "created_at": rfc3339(e.created_at_us),
                "kind": e.kind.as_str(),
                "amount": e.amount,
                "reference": e.reference,
                "reason": e.reason,
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "has_more": has_more,
        "next_cursor": if has_more { entries.last().map(|e| e.id) } else { None },
    }))
    .into_response())
}
