//! `POST /v1/auth/signup` and `POST /v1/auth/login`: the only routes that take no key. A
//! password is hashed with argon2id (see `password.rs`); what comes back is a management key.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use router_one_core::billing::{self, ManagementKey};
use router_one_core::store::{Account, StoreError};
use router_one_core::{ApiError, ErrorKind, Usd, ids};

use crate::error::{ErrorResponse, internal};
use crate::routes::referrals;
use crate::source::ClientSource;
use crate::state::AppState;
use crate::{password, routes};

/// Tries at minting a unique invite code before giving up (a collision is ~10⁻¹² per try).
const INVITE_CODE_TRIES: usize = 4;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Signup {
    email: String,
    password: String,
    #[serde(default)]
    invite_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, format!("The body must be {shape}: {e}")))
}

fn email(raw: &str) -> Result<String, ApiError> {
    billing::normalize_email(raw)
        .ok_or_else(|| ApiError::new(ErrorKind::InvalidRequest, "`email` is not an email address.").with_param("email"))
}

/// The invite link of a code.
pub(crate) fn invite_link(app: &AppState, code: &str) -> String {
    format!("{}/signup?invite={code}", app.config.public_url.trim_end_matches('/'))
}

/// `POST /v1/auth/signup {email, password, invite_code?}`.
#[utoipa::path(
    post,
    path = "/v1/auth/signup",
    operation_id = "auth_signup",
    tag = "auth",
    summary = "Create an account; answers its first management key",
    request_body(content = crate::openapi::schemas::SignupRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The account and its management key.", body = crate::openapi::schemas::Signup),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 409, response = crate::openapi::schemas::Error),
        (status = 413, response = crate::openapi::schemas::Error)
    ),
)]
pub(crate) async fn signup(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ErrorResponse> {
    let body = routes::body(body, app.config.max_public_body_bytes)?;
    let request: Signup = parse(&body, r#"{"email", "password", "invite_code"?}"#)?;
    let email = email(&request.email)?;
    password::check_rule(&request.password)?;
    let referrer = match request.invite_code.as_deref() {
        Some(code) => Some(referrals::inviter(&app, code, &email).await?.id),
        None => None,
    };
    let password_hash = password::hash(&app, request.password).await?;
    let now = ids::now_us();
    let account_id = ids::new_id("acct");
    let (key, plaintext) = ManagementKey::generate(&account_id, Some("signup".into()), now);
    for _ in 0..INVITE_CODE_TRIES {
        let account = Account {
            id: account_id.clone(),
            email: email.clone(),
            balance: Usd::ZERO,
            created_at_us: now,
            invite_code: billing::new_invite_code(),
            referred_by: referrer.clone(),
            ledger_head: 0,
        };
        match app.store.create_account(&account, Some(&password_hash), &key).await {
            Ok(()) => {
                tracing::info!(account = %account.id, referred = account.referred_by.is_some(), "account signed up");
                return Ok((
                    StatusCode::CREATED,
                    Json(json!({
                        "object": "signup",
                        "account_id": account.id,
                        "email": account.email,
                        "management_key": plaintext,
                        "management_key_id": key.id,
                        "invite_code": account.invite_code,
                        "invite_link": invite_link(&app, &account.invite_code),
                        "referred_by": account.referred_by,
                    })),
                )
                    .into_response());
            }
            Err(StoreError::Conflict(what)) if what.contains("email") => {
                return Err(
                    ApiError::new(ErrorKind::EmailTaken, "An account with this email already exists.")
                        .with_param("email")
                        .into(),
                );
            }
            Err(StoreError::Conflict(what)) if what.contains("invite_code") => continue,
            Err(e) => return Err(internal(e)),
        }
    }
    Err(internal("could not mint a unique invite code"))
}

/// `POST /v1/auth/login {email, password}`: a new management key. A wrong email and a wrong
/// password get the same answer, after the same work.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    operation_id = "auth_login",
    tag = "auth",
    summary = "A new management key for an account",
    request_body(content = crate::openapi::schemas::LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A new management key.", body = crate::openapi::schemas::Login),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 413, response = crate::openapi::schemas::Error),
        (status = 429, response = crate::openapi::schemas::Error)
    ),
)]
pub(crate) async fn login(
    State(app): State<Arc<AppState>>,
    ClientSource(source): ClientSource,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ErrorResponse> {
    let body = routes::body(body, app.config.max_public_body_bytes)?;
    let request: Login = parse(&body, r#"{"email", "password"}"#)?;
    let email = billing::normalize_email(&request.email);
    // Counted before the password is checked, so concurrent guesses cannot overtake the count.
    let attempt = app
        .login_limits
        .begin(email.as_deref().unwrap_or_default(), source, ids::now_us() / 1_000_000)?;
    let found = match &email {
        Some(email) => app.store.account_by_email(email).await.map_err(internal)?,
        None => None,
    };
    let (account, stored) = match found {
        Some((account, hash)) => (Some(account), hash),
        None => (None, None),
    };
    let matches = password::verify(&app, request.password, stored).await?;
    // A wrong password leaves the attempt counted.
    let Some(account) = account.filter(|_| matches) else {
        return Err(ApiError::new(ErrorKind::InvalidCredentials, "Incorrect email or password.").into());
    };
    attempt.succeeded(ids::now_us() / 1_000_000);
    let now = ids::now_us();
    let name = format!("login {}", &ids::rfc3339(now).get(..10).unwrap_or_default());
    let (key, plaintext) = ManagementKey::generate(&account.id, Some(name), now);
    app.store.insert_management_key(&key).await.map_err(internal)?;
    Ok(Json(json!({
        "object": "login",
        "account_id": account.id,
        "management_key": plaintext,
        "management_key_id": key.id,
    }))
    .into_response())
}
