//! `/v1/management-keys`: an account's management keys (`sk-rm-…`), created, listed and
//! revoked. A revoked key is refused by the very next call, including the call that revoked it.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use router_one_core::billing::ManagementKey;
use router_one_core::{ApiError, ErrorKind, ids};

use crate::auth::{self, ManagementAccount};
use crate::error::{ErrorResponse, internal};
use crate::routes;
use crate::state::AppState;

/// Longest key name, characters.
const MAX_NAME_CHARS: usize = 200;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    name: Option<String>,
}

fn key_json(key: &ManagementKey) -> Value {
    json!({
        "object": "management_key",
        "id": key.id,
        "name": key.name,
        "hint": key.hint,
        "created_at": ids::rfc3339(key.created_at_us),
        "revoked_at": key.revoked_at_us.map(ids::rfc3339),
    })
}

/// `POST /v1/management-keys {name?}`: the secret is in the answer, once.
#[utoipa::path(
    post,
    path = "/v1/management-keys",
    operation_id = "management_keys_create",
    tag = "management-keys",
    summary = "Create a management key; its secret is in this answer only",
    request_body(content = crate::openapi::schemas::ManagementKeyRequest, description = "The body may be empty.", content_type = "application/json"),
    responses(
        (status = 201, description = "The key, with its secret.", body = crate::openapi::schemas::CreatedManagementKey),
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
    let request: NewKey = if body.iter().all(u8::is_ascii_whitespace) {
        NewKey::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidRequest,
                format!("The body must be {{\"name\"?}}: {e}"),
            )
        })?
    };
    if request
        .name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
    {
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("`name` is longer than {MAX_NAME_CHARS} characters."),
        )
        .with_param("name")
        .into());
    }
    let (key, plaintext) = ManagementKey::generate(&account_id, request.name, ids::now_us());
    app.store.insert_management_key(&key).await.map_err(internal)?;
    let mut json = key_json(&key);
    json["key"] = Value::String(plaintext);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// `GET /v1/management-keys`: newest first, revoked ones included, never a secret.
#[utoipa::path(
    get,
    path = "/v1/management-keys",
    operation_id = "management_keys_list",
    tag = "management-keys",
    summary = "List management keys, newest first",
    responses(
        (status = 200, description = "The keys, revoked ones included, never a secret.", body = crate::openapi::schemas::ManagementKeyList),
        (status = 401, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn list(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
) -> Result<Response, ErrorResponse> {
    let keys = app.store.management_keys(&account_id).await.map_err(internal)?;
    let data: Vec<Value> = keys.iter().map(key_json).collect();
    Ok(Json(json!({ "object": "list", "data": data })).into_response())
}

/// `DELETE /v1/management-keys/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/management-keys/{id}",
    operation_id = "management_keys_revoke",
    tag = "management-keys",
    summary = "Revoke a management key",
    params(("id" = String, Path, description = "The key id, `mkey_…`.")),
    responses(
        (status = 200, description = "The key, revoked.", body = crate::openapi::schemas::ManagementKey),
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
    let key = app
        .store
        .revoke_management_key(&account_id, &id, ids::now_us())
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("No management key `{id}`.")))?;
    auth::forget_management_key(&app, &key.secret_hash);
    Ok(Json(key_json(&key)).into_response())
}
