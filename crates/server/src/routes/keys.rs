//! Management of inference keys: `POST/GET /v1/keys`, `GET/PATCH/DELETE /v1/keys/{id}`.
//! A key's secret is shown once, at creation; only its hash is stored.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use router_one_core::ids::rfc3339;
use router_one_core::secret::{self, INFERENCE_PREFIX};
use router_one_core::store::{ApiKey, BudgetPeriod, KeySettings};
use router_one_core::{ApiError, ErrorKind, Usd};

use crate::auth::{self, ManagementAccount};
use crate::error::{ErrorResponse, internal};
use crate::routes;
use crate::state::{AppState, budget_spent};

/// The settings a client sends; every field optional. Unknown fields are refused.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KeyFields {
    name: Option<String>,
    max_spend: Option<String>,
    budget_period: Option<String>,
    rpm_limit: Option<u32>,
    tpm_limit: Option<u64>,
    max_concurrency: Option<u32>,
    models: Option<Vec<String>>,
    expires_at: Option<String>,
    metadata: Option<Map<String, Value>>,
}

fn bad(param: &'static str, message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message).with_param(param)
}

impl KeyFields {
    fn parse(body: &[u8]) -> Result<KeyFields, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(KeyFields::default());
        }
        serde_json::from_slice(body)
            .map_err(|e| ApiError::new(ErrorKind::InvalidJson, format!("Invalid key settings: {e}")))
    }

    fn into_settings(self, app: &AppState) -> Result<KeySettings, ApiError> {
        let max_spend = match self.max_spend {
            None => None,
            Some(s) => {
                let usd: Usd = s
                    .parse()
                    .map_err(|e| bad("max_spend", format!("Invalid max_spend: {e}")))?;
                if usd < Usd::ZERO {
                    return Err(bad("max_spend", "max_spend must not be negative.".into()));
                }
                Some(usd)
            }
        };
        let budget_period = match self.budget_period.as_deref() {
            None => BudgetPeriod::None,
            Some(p) => BudgetPeriod::parse(p).ok_or_else(|| {
                bad(
                    "budget_period",
                    format!("Invalid budget_period `{p}`: use none, daily, weekly or monthly."),
                )
            })?,
        };
        if let Some(models) = &self.models
            && let Some(unknown) = models.iter().find(|m| app.catalog.get(m).is_none())
        {
            return Err(bad("models", format!("Unknown model `{unknown}` in models.")));
        }
        let expires_at_us = match self.expires_at.as_deref() {
            None => None,
            Some(t) => {
                let at = OffsetDateTime::parse(t, &Rfc3339).map_err(|_| {
                    bad(
                        "expires_at",
                        format!("Invalid expires_at `{t}`: use RFC 3339, e.g. 2030-01-01T00:00:00Z."),
                    )
                })?;
                Some((at.unix_timestamp_nanos() / 1_000) as i64)
            }
        };
        Ok(KeySettings {
            name: self.name,
            max_spend,
            budget_period,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            max_concurrency: self.max_concurrency,
            models: self.models,
            expires_at_us,
            metadata: self.metadata.unwrap_or_default(),
        })
    }

    fn from_settings(s: &KeySettings) -> KeyFields {
        KeyFields {
            name: s.name.clone(),
            max_spend: s.max_spend.map(|u| u.to_string()),
            budget_period: Some(s.budget_period.as_str().to_owned()),
            rpm_limit: s.rpm_limit,
            tpm_limit: s.tpm_limit,
            max_concurrency: s.max_concurrency,
            models: s.models.clone(),
            expires_at: s.expires_at_us.map(rfc3339),
            metadata: Some(s.metadata.clone()),
        }
    }
}

/// The key as the API shows it: settings, spend so far, spend in the current budget period,
/// what is reserved and left, and where its rate limits stand (live), never the secret.
fn key_json(app: &AppState, key: &ApiKey) -> Value {
    let s = &key.settings;
    let now_us = router_one_core::ids::now_us();
    let live = app.keys.by_id(&key.id);
    let budget = live.as_ref().map(|k| k.spend.snapshot(now_us));
    let period = s.budget_period.window(now_us);
    // A lifetime budget started from the stored spend and has settled every request since; a
    // periodic one counts only its period, so the lifetime figure is the stored one.
    let spend = match (&budget, period) {
        (Some(b), None) => b.spent,
        _ => key.spend,
    };
    let rate = live.as_ref().map(|k| {
        let limits = k.rate_limits();
        let snapshot = app.limiter.peek(&k.id, &limits, std::time::Instant::now());
        let counter = |c: Option<router_one_metering::rate::Counter>| {
            c.map(|c| {
                serde_json::json!({
                    "limit": c.limit,
                    "remaining": c.remaining,
                    "reset": router_one_metering::rate::format_duration(c.reset),
                })
            })
        };
        serde_json::json!({ "requests": counter(snapshot.requests), "tokens": counter(snapshot.tokens) })
    });
    serde_json::json!({
        "id": key.id,
        "object": "api_key",
        "name": s.name,
        "hint": key.hint,
        "max_spend": s.max_spend,
        "budget_period": s.budget_period,
        "rpm_limit": s.rpm_limit,
        "tpm_limit": s.tpm_limit,
        "max_concurrency": s.max_concurrency,
        "models": s.models,
        "expires_at": s.expires_at_us.map(rfc3339),
        "metadata": s.metadata,
        "created_at": rfc3339(key.created_at_us),
        "revoked_at": key.revoked_at_us.map(rfc3339),
        "spend": spend,
        "period": period.map(|(start, end)| serde_json::json!({
            "start": rfc3339(start),
            "end": rfc3339(end),
            "spend": budget.map(|b| b.spent),
        })),
        "reserved": budget.map_or(Usd::ZERO, |b| b.reserved),
        "remaining": budget.map_or_else(
            || s.max_spend.map(|m| m.saturating_sub(spend).max(Usd::ZERO)),
            |b| b.available,
        ),
        "rate_limits": rate,
    })
}

/// The account's key with this id, or a 404 that does not reveal whether another account has it.
async fn owned_key(app: &AppState, account_id: &str, id: &str) -> Result<ApiKey, ErrorResponse> {
    app.store
        .key(account_id, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| no_such_key(id))
}

fn no_such_key(id: &str) -> ErrorResponse {
    ApiError::new(ErrorKind::NotFound, format!("No API key `{id}` in this account.")).into()
}

/// `POST /v1/keys`: creates a key; the response carries its secret, once.
#[utoipa::path(
    post,
    path = "/v1/keys",
    operation_id = "keys_create",
    tag = "keys",
    summary = "Create an inference key; its secret is in this answer only",
    request_body(content = crate::openapi::schemas::KeySettings, description = "Settings; the body may be empty.", content_type = "application/json"),
    responses(
        (status = 201, description = "The key, with its secret.", body = crate::openapi::schemas::CreatedApiKey),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 413, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn create(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ErrorResponse> {
    let body = routes::body(body, app.config.max_body_bytes)?;
    let settings = KeyFields::parse(&body)?.into_settings(&app)?;
    let secret = secret::generate(INFERENCE_PREFIX);
    let key = ApiKey {
        id: router_one_core::ids::new_id("key"),
        account_id,
        secret_hash: secret.hash,
        hint: secret.hint,
        settings,
        created_at_us: router_one_core::ids::now_us(),
        revoked_at_us: None,
        spend: Usd::ZERO,
    };
    app.store.insert_key(&key).await.map_err(internal)?;
    auth::load_key(&app, &key).await?;
    let mut json = key_json(&app, &key);
    json["key"] = Value::String(secret.plaintext);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// `GET /v1/keys`.
#[utoipa::path(
    get,
    path = "/v1/keys",
    operation_id = "keys_list",
    tag = "keys",
    summary = "List the account's inference keys",
    responses(
        (status = 200, description = "The keys, revoked ones included.", body = crate::openapi::schemas::ApiKeyList),
        (status = 401, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn list(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
) -> Result<Response, ErrorResponse> {
    let keys = app.store.keys(&account_id).await.map_err(internal)?;
    let data: Vec<Value> = keys.iter().map(|k| key_json(&app, k)).collect();
    Ok(Json(serde_json::json!({ "object": "list", "data": data })).into_response())
}

/// `GET /v1/keys/{id}`.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}",
    operation_id = "keys_get",
    tag = "keys",
    summary = "One inference key",
    params(("id" = String, Path, description = "The key id, `key_…`.")),
    responses(
        (status = 200, description = "The key.", body = crate::openapi::schemas::ApiKey),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 404, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn get(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    Path(id): Path<String>,
) -> Result<Response, ErrorResponse> {
    let key = owned_key(&app, &account_id, &id).await?;
    Ok(Json(key_json(&app, &key)).into_response())
}

/// `PATCH /v1/keys/{id}`: fields present replace the current ones; `null` clears one.
#[utoipa::path(
    patch,
    path = "/v1/keys/{id}",
    operation_id = "keys_update",
    tag = "keys",
    summary = "Change a key's settings",
    params(("id" = String, Path, description = "The key id, `key_…`.")),
    request_body(content = crate::openapi::schemas::KeySettings, description = "Fields present replace the current ones; `null` clears one.", content_type = "application/json"),
    responses(
        (status = 200, description = "The key as updated.", body = crate::openapi::schemas::ApiKey),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 404, response = crate::openapi::schemas::Error),
        (status = 413, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn update(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ErrorResponse> {
    let body = routes::body(body, app.config.max_body_bytes)?;
    let key = owned_key(&app, &account_id, &id).await?;
    let patch: Map<String, Value> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidJson, format!("The body must be a JSON object: {e}")))?;
    let mut current = match serde_json::to_value(KeyFields::from_settings(&key.settings)) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    current.extend(patch);
    let fields: KeyFields = serde_json::from_value(Value::Object(current))
        .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, format!("Invalid key settings: {e}")))?;
    let settings = fields.into_settings(&app)?;
    let updated = app
        .store
        .update_key(&account_id, &id, &settings)
        .await
        .map_err(internal)?
        .ok_or_else(|| no_such_key(&id))?;
    // A new budget period counts from the spend already recorded in it.
    let now_us = router_one_core::ids::now_us();
    let spent = if settings.budget_period == key.settings.budget_period {
        None
    } else {
        Some(
            budget_spent(app.store.as_ref(), &updated, now_us)
                .await
                .map_err(internal)?,
        )
    };
    app.keys.update(&id, &settings, spent, now_us);
    Ok(Json(key_json(&app, &updated)).into_response())
}

/// `DELETE /v1/keys/{id}`: revokes the key; its next request is refused.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    operation_id = "keys_revoke",
    tag = "keys",
    summary = "Revoke a key; its next request is refused",
    params(("id" = String, Path, description = "The key id, `key_…`.")),
    responses(
        (status = 200, description = "The key, revoked.", body = crate::openapi::schemas::ApiKey),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 404, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn revoke(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    Path(id): Path<String>,
) -> Result<Response, ErrorResponse> {
    let now = router_one_core::ids::now_us();
    let key = app
        .store
        .revoke_key(&account_id, &id, now)
        .await
        .map_err(internal)?
        .ok_or_else(|| no_such_key(&id))?;
    app.keys.revoke(&id);
    Ok(Json(key_json(&app, &key)).into_response())
}
