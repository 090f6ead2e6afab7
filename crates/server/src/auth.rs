//! Authentication: an inference key is found in memory by the hash of its secret (a key made by
//! another process, e.g. the admin CLI, is loaded from the store on first sight); a management key
//! resolves to its account.
//!
//! Both run as extractors from the request head ([`InferenceKey`], [`ActiveInferenceKey`],
//! [`ManagementAccount`]), before the body extractor: a missing or wrong key is a 401 without a
//! byte of the body read. Management routes are also behind [`require_management_key`], a layer
//! on the whole management router (`lib.rs`), so a handler that forgets its extractor is still
//! not public: deny by default.
//!
//! The only routes without a key are listed once, in `lib.rs`: `/health`, `/openapi.json`,
//! `POST /v1/auth/signup`, `POST /v1/auth/login` (the caller has no key yet) and
//! `POST /v1/payments/webhooks/{provider}` (the provider signs its body instead); their bodies
//! are limited to [`crate::state::ServerConfig::max_public_body_bytes`].

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::request::Parts;

use router_one_core::secret::{self, INFERENCE_PREFIX, MANAGEMENT_PREFIX};
use router_one_core::store::ApiKey;
use router_one_core::{ApiError, ErrorKind};
use router_one_metering::KeyState;

use crate::error::{ErrorResponse, internal};
use crate::state::{AppState, budget_spent};

/// How long a management key is trusted from the cache before the store is asked again: a key
/// revoked through another node (or the store directly) stops working within this time; one
/// revoked through this node stops at once.
const MANAGEMENT_KEY_RECHECK_US: i64 = 30_000_000;

/// The bearer token of a request.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            ErrorKind::MissingApiKey,
            "You didn't provide an API key. Send it as `Authorization: Bearer sk-rk-…`.",
        )
    })?;
    let value = value.to_str().unwrap_or_default().trim();
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::new(
            ErrorKind::MissingApiKey,
            "The Authorization header must be `Bearer <key>`.",
        ));
    }
    Ok(token)
}

fn invalid_key() -> ApiError {
    ApiError::new(ErrorKind::InvalidApiKey, "Incorrect API key provided.")
}

/// The `x-api-key` header (Anthropic's way of sending a key), else the bearer token.
fn x_api_key_or_bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    match headers.get("x-api-key") {
        Some(value) => match value.to_str().unwrap_or_default().trim() {
            "" => Err(ApiError::new(
                ErrorKind::MissingApiKey,
                "The x-api-key header is empty.",
            )),
            token => Ok(token),
        },
        None if headers.contains_key(http::header::AUTHORIZATION) => bearer(headers),
        None => Err(ApiError::new(
            ErrorKind::MissingApiKey,
            "You didn't provide an API key. Send it as `x-api-key: sk-rk-…` or `Authorization: Bearer sk-rk-…`.",
        )),
    }
}

/// The live inference key presenting this request.
pub(crate) async fn inference_key(app: &AppState, headers: &HeaderMap) -> Result<Arc<KeyState>, ErrorResponse> {
    key_for_token(app, bearer(headers)?).await
}

/// The live inference key of `token`.
async fn key_for_token(app: &AppState, token: &str) -> Result<Arc<KeyState>, ErrorResponse> {
    if !token.starts_with(INFERENCE_PREFIX) {
        return Err(invalid_key().into());
    }
    let hash = secret::hash(token);
    if let Some(key) = app.keys.get(&hash) {
        return Ok(key);
    }
    // Not in memory: made by another process since start, or unknown.
    let key = app
        .store
        .key_by_hash(&hash)
        .await
        .map_err(internal)?
        .ok_or_else(invalid_key)?;
    load_key(app, &key).await
}

/// Puts a stored key into the in-memory index (with its account's stored balance, if the
/// account is not loaded yet).
pub(crate) async fn load_key(app: &AppState, key: &ApiKey) -> Result<Arc<KeyState>, ErrorResponse> {
    let account = app.store.account(&key.account_id).await.map_err(internal)?;
    let now_us = router_one_core::ids::now_us();
    let spent = budget_spent(app.store.as_ref(), key, now_us).await.map_err(internal)?;
    let (balance, head) = account.map(|a| (a.balance, a.ledger_head)).unwrap_or_default();
    Ok(app.keys.insert(key, balance, head, spent, now_us))
}

/// The account whose management key presents this request.
pub(crate) async fn management_account(app: &AppState, headers: &HeaderMap) -> Result<String, ErrorResponse> {
    management_account_of(app, bearer(headers)?).await
}

/// The account whose management key `token` is (the console's session cookie holds one).
pub(crate) async fn management_account_of(app: &AppState, token: &str) -> Result<String, ErrorResponse> {
    if !token.starts_with(MANAGEMENT_PREFIX) {
        return Err(ApiError::new(
            ErrorKind::InvalidApiKey,
            "This endpoint needs a management key (sk-rm-…).",
        )
        .into());
    }
    let hash = secret::hash(token);
    let now_us = router_one_core::ids::now_us();
    let cached = app.management_keys.get(&hash).map(|e| e.value().clone());
    match cached {
        Some(None) => return Err(invalid_key().into()),
        Some(Some((account, checked_at_us))) if now_us - checked_at_us < MANAGEMENT_KEY_RECHECK_US => {
            return Ok(account);
        }
        _ => {}
    }
    let Some(account) = app.store.account_by_management_key(&hash).await.map_err(internal)? else {
        // Unknown, or revoked (perhaps by another node): remember a known key's revocation.
        if let Some(mut entry) = app.management_keys.get_mut(&hash) {
            *entry = None;
        }
        return Err(invalid_key().into());
    };
    // A revocation that landed while this lookup ran left a tombstone, which wins.
    let mut entry = app.management_keys.entry(hash).or_insert(Some((account.id, now_us)));
    match entry.value_mut() {
        Some(cached) => {
            cached.1 = now_us;
            Ok(cached.0.clone())
        }
        None => Err(invalid_key().into()),
    }
}

/// Marks a revoked management key: the next call with it is refused, even one whose store
/// lookup started before the revocation.
pub(crate) fn forget_management_key(app: &AppState, hash: &str) {
    app.management_keys.insert(hash.to_owned(), None);
}

/// The inference key presenting the request, as found: it may be revoked or expired, which the
/// metered endpoints refuse themselves so that the refusal is recorded like any outcome.
pub(crate) struct InferenceKey(pub(crate) Arc<KeyState>);

impl FromRequestParts<Arc<AppState>> for InferenceKey {
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, ErrorResponse> {
        inference_key(app, &parts.headers).await.map(InferenceKey)
    }
}

/// The inference key of a request to the Anthropic-dialect routes (`/v1/messages…`), sent as
/// `x-api-key` (as Anthropic's SDKs do) or as a bearer token; `x-api-key` wins when both are
/// sent. As found: revoked and expired keys are refused by the handler.
pub(crate) struct AnthropicInferenceKey(pub(crate) Arc<KeyState>);

impl FromRequestParts<Arc<AppState>> for AnthropicInferenceKey {
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, ErrorResponse> {
        let token = x_api_key_or_bearer(&parts.headers)?;
        key_for_token(app, token).await.map(AnthropicInferenceKey)
    }
}

/// An inference key that may be used now: neither revoked nor expired (else the 401 inference
/// answers).
pub(crate) struct ActiveInferenceKey(pub(crate) Arc<KeyState>);

impl FromRequestParts<Arc<AppState>> for ActiveInferenceKey {
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, ErrorResponse> {
        let key = inference_key(app, &parts.headers).await?;
        key.check_active(router_one_core::ids::now_us())?;
        Ok(ActiveInferenceKey(key))
    }
}

/// The account whose management key presents the request (its id).
#[derive(Debug, Clone)]
pub(crate) struct ManagementAccount(pub(crate) String);

impl FromRequestParts<Arc<AppState>> for ManagementAccount {
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, ErrorResponse> {
        // Behind `require_management_key` the account is already known.
        if let Some(account) = parts.extensions.get::<ManagementAccount>() {
            return Ok(account.clone());
        }
        management_account(app, &parts.headers).await.map(ManagementAccount)
    }
}

/// The layer every management route sits behind: no valid management key, no handler (and no
/// body read).
pub(crate) async fn require_management_key(
    State(app): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    match management_account(&app, request.headers()).await {
        Ok(account) => {
            request.extensions_mut().insert(ManagementAccount(account));
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}
