//! Management of inference keys: `POST/GET /v1/keys`, `GET/PATCH/DELETE /v1/keys/{id}`.
//! A key's secret is shown once, at creation; only its hash is stored.
//!
//! Everything a client stores with a key is bounded, so no account can make the store, a
//! listing or the gateway's start-up grow without limit: the [`MAX_NAME_CHARS`],
//! [`MAX_METADATA_BYTES`] and [`MAX_MODELS`] bounds, a range for every numeric limit, at most
//! `max_keys_per_account` live keys, and listings in cursor pages of at most [`MAX_LIMIT`]. A
//! value out of bounds is a 400 naming its field.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use router_one_core::ids::rfc3339;
use router_one_core::secret::{self, INFERENCE_PREFIX};
use router_one_core::store::{ApiKey, BudgetPeriod, KeySettings, OversizedMaxTokens};
use router_one_core::{ApiError, ErrorKind, Usd};

use crate::auth::{self, ManagementAccount};
use crate::error::{ErrorResponse, internal};
use crate::routes;
use crate::state::{AppState, budget_spent};

/// Longest key `name`, in characters (the same as a management key's).
pub(crate) const MAX_NAME_CHARS: usize = 200;
/// Largest `metadata`, in bytes of its compact JSON: room for dozens of ids and labels, any
/// JSON values (nested ones too), and a bound on what one key costs to store, list and load.
pub(crate) const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Most entries in a key's `models` allow-list (each must be a catalog model).
pub(crate) const MAX_MODELS: usize = 256;
/// `rpm_limit`: requests per minute, from 1 (`null`: unlimited).
const RPM_LIMIT: (u64, u64) = (1, 1_000_000_000);
/// `tpm_limit`: tokens per minute, from 1 (`null`: unlimited); the top keeps every sum of
/// tokens far inside 64 bits.
const TPM_LIMIT: (u64, u64) = (1, 1_000_000_000_000_000_000);
/// `max_concurrency`: requests in flight at once, from 1 (`null`: unlimited).
const MAX_CONCURRENCY: (u64, u64) = (1, 1_000_000);
/// Keys per page of `GET /v1/keys` when the client names no `limit`.
const DEFAULT_LIMIT: u32 = 100;
/// Most keys per page of `GET /v1/keys`.
pub(crate) const MAX_LIMIT: u32 = 1000;

/// The settings a client sends; every field optional.
#[derive(Debug, Default, Serialize)]
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
    on_oversized_max_tokens: Option<String>,
    always_include_usage: Option<bool>,
    router_headers: Option<bool>,
}

fn bad(param: impl Into<std::borrow::Cow<'static, str>>, message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message).with_param(param)
}

/// A string field.
fn text(field: &'static str, value: Value) -> Result<String, ApiError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(bad(field, format!("`{field}` must be a string."))),
    }
}

/// A boolean option.
fn flag(field: &'static str, value: &Value) -> Result<bool, ApiError> {
    value.as_bool().ok_or_else(|| {
        bad(
            field,
            format!("`{field}` must be true or false (or null for the default)."),
        )
    })
}

/// A numeric limit: a whole number within `(min, max)`.
fn limit<T: TryFrom<u64>>(field: &'static str, value: &Value, (min, max): (u64, u64)) -> Result<T, ApiError> {
    value
        .as_u64()
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            bad(
                field,
                format!("`{field}` must be a whole number from {min} to {max} (or null for no limit)."),
            )
        })
}

/// The `models` allow-list: at most [`MAX_MODELS`] strings (checked against the catalog later).
fn models(value: Value) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = value else {
        return Err(bad("models", "`models` must be an array of model ids.".into()));
    };
    if items.len() > MAX_MODELS {
        return Err(bad(
            "models",
            format!(
                "`models` lists {} models; at most {MAX_MODELS} are allowed.",
                items.len()
            ),
        ));
    }
    items.into_iter().map(|item| text("models", item)).collect()
}

/// `metadata`: a JSON object of at most [`MAX_METADATA_BYTES`] as compact JSON.
fn metadata(value: Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(map) = value else {
        return Err(bad("metadata", "`metadata` must be a JSON object.".into()));
    };
    let size = serde_json::to_vec(&map).map_or(usize::MAX, |json| json.len());
    if size > MAX_METADATA_BYTES {
        return Err(bad(
            "metadata",
            format!("`metadata` is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed."),
        ));
    }
    Ok(map)
}

impl KeyFields {
    /// Reads a body: empty, or a JSON object of settings.
    fn parse(body: &[u8]) -> Result<KeyFields, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(KeyFields::default());
        }
        let object: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(ErrorKind::InvalidJson, format!("Invalid key settings: {e}")))?;
        KeyFields::from_object(object)
    }

    /// Reads settings from a JSON object, naming the field at fault in every refusal; `null`
    /// is the same as an absent field.
    fn from_object(object: Map<String, Value>) -> Result<KeyFields, ApiError> {
        let mut fields = KeyFields::default();
        for (field, value) in object {
            if value.is_null() {
                continue;
            }
            match field.as_str() {
                "name" => fields.name = Some(text("name", value)?),
                "max_spend" => fields.max_spend = Some(text("max_spend", value)?),
                "budget_period" => fields.budget_period = Some(text("budget_period", value)?),
                "expires_at" => fields.expires_at = Some(text("expires_at", value)?),
                "rpm_limit" => fields.rpm_limit = Some(limit("rpm_limit", &value, RPM_LIMIT)?),
                "tpm_limit" => fields.tpm_limit = Some(limit("tpm_limit", &value, TPM_LIMIT)?),
                "max_concurrency" => {
                    fields.max_concurrency = Some(limit("max_concurrency", &value, MAX_CONCURRENCY)?);
                }
                "models" => fields.models = Some(models(value)?),
                "metadata" => fields.metadata = Some(metadata(value)?),
                "on_oversized_max_tokens" => {
                    fields.on_oversized_max_tokens = Some(text("on_oversized_max_tokens", value)?);
                }
                "always_include_usage" => fields.always_include_usage = Some(flag("always_include_usage", &value)?),
                "router_headers" => fields.router_headers = Some(flag("router_headers", &value)?),
                _ => return Err(bad(field.clone(), format!("Unknown field `{field}`."))),
            }
        }
        Ok(fields)
    }

    fn into_settings(self, app: &AppState) -> Result<KeySettings, ApiError> {
        if let Some(name) = &self.name
            && name.chars().count() > MAX_NAME_CHARS
        {
            return Err(bad(
                "name",
                format!("`name` is longer than {MAX_NAME_CHARS} characters."),
            ));
        }
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
        let on_oversized_max_tokens = match self.on_oversized_max_tokens.as_deref() {
            None => OversizedMaxTokens::default(),
            Some(o) => OversizedMaxTokens::parse(o).ok_or_else(|| {
                bad(
                    "on_oversized_max_tokens",
                    format!("Invalid on_oversized_max_tokens `{o}`: use clamp or refuse."),
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
            on_oversized_max_tokens,
            always_include_usage: self.always_include_usage.unwrap_or(false),
            router_headers: self.router_headers.unwrap_or(true),
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
            on_oversized_max_tokens: Some(s.on_oversized_max_tokens.as_str().to_owned()),
            always_include_usage: Some(s.always_include_usage),
            router_headers: Some(s.router_headers),
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
        "on_oversized_max_tokens": s.on_oversized_max_tokens,
        "always_include_usage": s.always_include_usage,
        "router_headers": s.router_headers,
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
    let max_keys = app.config.max_keys_per_account;
    if !app.store.insert_key(&key, max_keys).await.map_err(internal)? {
        return Err(ApiError::new(
            ErrorKind::KeyLimitReached,
            format!(
                "This account already has {max_keys} live keys, the most it may hold; revoke one to create another."
            ),
        )
        .into());
    }
    auth::load_key(&app, &key).await?;
    let mut json = key_json(&app, &key);
    json["key"] = Value::String(secret.plaintext);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// Query parameters of `GET /v1/keys`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct KeyListQuery {
    /// Page cursor: the previous page's `next_cursor` (a key id).
    after: Option<String>,
    /// Keys per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// `GET /v1/keys`: newest first, in cursor pages.
#[utoipa::path(
    get,
    path = "/v1/keys",
    operation_id = "keys_list",
    tag = "keys",
    summary = "List the account's inference keys, newest first, in cursor pages",
    params(KeyListQuery),
    responses(
        (status = 200, description = "One page of keys, revoked ones included; `x-next-cursor` carries the next cursor when there is one.", body = crate::openapi::schemas::ApiKeyList),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 401, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn list(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    query: Result<Query<KeyListQuery>, QueryRejection>,
) -> Result<Response, ErrorResponse> {
    let Query(query) = query.map_err(|e| bad("query", e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad("limit", format!("limit must be between 1 and {MAX_LIMIT}.")).into());
    }
    let page = app
        .store
        .keys(&account_id, query.after.as_deref(), limit)
        .await
        .map_err(internal)?;
    let data: Vec<Value> = page.keys.iter().map(|k| key_json(&app, k)).collect();
    let cursor = page.next.as_deref().and_then(|c| HeaderValue::from_str(c).ok());
    let mut response = Json(serde_json::json!({
        "object": "list",
        "data": data,
        "has_more": page.next.is_some(),
        "next_cursor": page.next,
    }))
    .into_response();
    if let Some(cursor) = cursor {
        response.headers_mut().insert("x-next-cursor", cursor);
    }
    Ok(response)
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
    let settings = KeyFields::from_object(current)?.into_settings(&app)?;
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
