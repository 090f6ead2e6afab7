//! Router One's HTTP surface. [`app`] builds the whole router and its middleware stack in one
//! place; each endpoint is one short async function in [`routes`] that reads top to bottom:
//! authenticate → admit (reserve) → route → call the provider → settle → record.

pub mod access_log;
mod admission;
mod auth;
mod body_timeout;
mod console;
mod dialect;
mod error;
mod failover;
pub mod follower;
pub mod key_events;
pub mod leases;
pub mod listener;
mod log_throttle;
mod login_limit;
mod metered;
pub mod metrics;
mod openapi;
mod password;
mod record;
mod routes;
mod run_to_completion;
mod source;
mod state;

pub use state::{AppState, Coordination, ServerConfig};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};

/// How long a management call (or sign-up, login, webhook) may take: they touch the database,
/// and none may hang a client.
const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The metrics listener's application: `GET /metrics` (Prometheus text) and nothing else. It is
/// served on an address of its own, so the public port never exposes it.
pub fn metrics_app(state: Arc<AppState>, metrics: Arc<metrics::Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (state, metrics) = (state.clone(), metrics.clone());
            async move {
                let readings = metrics::Readings {
                    usage_pending: state.usage.pending(),
                    journal_bytes: state.usage.journal_bytes(),
                    open_streams: state.open_streams.load(std::sync::atomic::Ordering::Relaxed),
                    tokenizer_loaded: router_one_providers::estimate::is_loaded(),
                };
                let body = metrics.render(readings, &state.health.open_routes());
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    )
}

/// The whole HTTP application.
///
/// Authentication is deny-by-default: a route is public only if it is in [`public_routes`];
/// inference routes take the caller's inference key as their first extractor; every route in
/// [`management_routes`] is behind the management-key layer, whatever its handler extracts.
/// Keys are checked from the request head, before any body is read. The tower layers carry only
/// HTTP-generic concerns; business steps live in the handlers.
pub fn app(state: Arc<AppState>) -> Router {
    let max_body = state.config.max_body_bytes;
    // The console calls this same API in-process (console/api.rs).
    let api = Router::new()
        .merge(public_routes(state.config.max_public_body_bytes))
        .merge(inference_routes())
        .merge(management_routes(&state))
        .with_state(state.clone());
    Router::new()
        .merge(public_routes(state.config.max_public_body_bytes))
        .merge(inference_routes())
        .merge(management_routes(&state))
        .merge(console_routes(
            console::Api::new(api),
            state.config.max_public_body_bytes,
        ))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        // Every response carries a request id: inference responses the id of their usage record,
        // anything else (a refusal before metering, a management call) a fresh one.
        .layer(axum::middleware::map_response(ensure_request_id))
        // Bodies above the limit are refused with 413 before they are read in full, and a client
        // that stops sending its body mid-way cannot hold a connection forever.
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower::util::MapRequestLayer::new(body_timeout::limit_idle))
        .with_state(state)
}

/// The only routes without a key. Their bodies are small: nobody is authenticated yet.
fn public_routes(max_public_body: usize) -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        // The management API's OpenAPI document.
        .route("/openapi.json", get(openapi::serve))
        // Receipts' public keys: whoever is shown a receipt must be able to check it.
        .route("/.well-known/jwks.json", get(routes::receipts::jwks))
        // The caller has no key yet.
        .route("/v1/auth/signup", post(routes::signup::signup))
        .route("/v1/auth/login", post(routes::signup::login))
        // A payment provider signs its body instead.
        .route("/v1/payments/webhooks/{provider}", post(routes::payments::webhook))
        .layer(DefaultBodyLimit::max(max_public_body))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            http::StatusCode::GATEWAY_TIMEOUT,
            MANAGEMENT_TIMEOUT,
        ))
}

/// Routes for an inference key (`sk-rk-…`): each handler extracts it (`auth::InferenceKey` or
/// `auth::ActiveInferenceKey`) from the request head. No layer here: this is the hot path.
fn inference_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/chat/completions", post(routes::chat::completions))
        .route("/v1/responses", post(routes::responses::create))
        .route("/v1/messages", post(routes::messages::create))
        .route("/v1/messages/count_tokens", post(routes::messages::count_tokens))
        .route("/v1/embeddings", post(routes::embeddings::create))
        .route("/v1/models", get(routes::models::list))
        .route("/v1/dashboard/billing/subscription", get(routes::billing::subscription))
        .route("/v1/dashboard/billing/usage", get(routes::billing::usage))
}

/// Routes for a management key (`sk-rm-…`), all behind `auth::require_management_key`.
fn management_routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/keys", post(routes::keys::create).get(routes::keys::list))
        .route(
            "/v1/keys/{id}",
            get(routes::keys::get)
                .patch(routes::keys::update)
                .delete(routes::keys::revoke),
        )
        .route("/v1/usage", get(routes::usage::list))
        .route("/v1/usage/summary", get(routes::usage::summary))
        .route("/v1/requests/{id}", get(routes::usage::trace))
        .route("/v1/requests/{id}/receipt", get(routes::receipts::receipt))
        .route("/v1/checkout/quote", post(routes::checkout::quote))
        .route("/v1/checkout/sessions", post(routes::checkout::create_session))
        .route("/v1/checkout/sessions/{id}", get(routes::checkout::get_session))
        .route("/v1/account", get(routes::account::get))
        .route("/v1/account/ledger", get(routes::account::ledger))
        .route(
            "/v1/management-keys",
            post(routes::management_keys::create).get(routes::management_keys::list),
        )
        .route("/v1/management-keys/{id}", delete(routes::management_keys::revoke))
        .route("/v1/referrals", get(routes::referrals::get))
        .route("/v1/referrals/claim", post(routes::referrals::claim))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_management_key,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            http::StatusCode::GATEWAY_TIMEOUT,
            MANAGEMENT_TIMEOUT,
        ))
}

/// The console's pages (`/`, `/signup`, `/login`, `/console/…`): each page checks its session
/// cookie itself (`console::session`), and each form its token (`console::form`).
fn console_routes(api: console::Api, max_public_body: usize) -> Router<Arc<AppState>> {
    console::routes(api)
        .layer(DefaultBodyLimit::max(max_public_body))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            http::StatusCode::GATEWAY_TIMEOUT,
            MANAGEMENT_TIMEOUT,
        ))
}

async fn ensure_request_id(mut response: axum::response::Response) -> axum::response::Response {
    if !response.headers().contains_key("x-request-id")
        && let Ok(id) = http::HeaderValue::from_str(&router_one_core::ids::new_id("req"))
    {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}
