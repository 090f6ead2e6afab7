//! One module per endpoint family; each handler reads top to bottom.

pub(crate) mod account;
pub(crate) mod billing;
pub(crate) mod chat;
pub(crate) mod checkout;
pub(crate) mod embeddings;
pub(crate) mod keys;
pub(crate) mod management_keys;
pub(crate) mod messages;
pub(crate) mod models;
pub(crate) mod payments;
pub(crate) mod receipts;
pub(crate) mod referrals;
pub(crate) mod responses;
pub(crate) mod signup;
pub(crate) mod upstream;
pub(crate) mod usage;

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use router_one_core::{ApiError, ErrorKind};

use crate::error::ErrorResponse;
use crate::state::AppState;

/// How long the database may go unanswered before `GET /health` says the node should not
/// serve: three of the follower's one-second polls.
const DATABASE_SILENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// `GET /health`: whether a load balancer should send this node traffic. 200 when the database
/// answered within the last few seconds and usage records can be journaled (every answer needs
/// its record: promise 5); else 503 with the same body saying which part is down. It asks
/// nothing itself (the ledger follower's last poll says whether the database answers), so it
/// is as cheap as the unauthenticated route it is.
pub(crate) async fn health(State(app): State<Arc<AppState>>) -> Response {
    let (ok, body) = health_report(&app);
    let status = if ok {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /ready`: whether a load balancer should send this node *new* traffic: healthy (as
/// `GET /health` says) and not shutting down. From the moment a SIGTERM arrives it answers 503
/// `{"status": "draining"}` while requests in flight finish (and, for `[http]
/// drain_grace_secs`, while new ones are still accepted), so the balancer takes the node out
/// before its listener closes.
pub(crate) async fn ready(State(app): State<Arc<AppState>>) -> Response {
    let (healthy, mut body) = health_report(&app);
    let draining = app.draining.load(std::sync::atomic::Ordering::Relaxed);
    if draining {
        body["status"] = serde_json::Value::from("draining");
    }
    body["draining"] = serde_json::Value::from(draining);
    let status = if healthy && !draining {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `provider:ENV_VAR` of every upstream key a provider rejected, sorted.
fn rejected_upstream_keys(app: &AppState) -> Vec<String> {
    let mut rejected: Vec<String> = app
        .providers
        .values()
        .flat_map(|p| p.keys.rejected().map(move |label| format!("{}:{label}", p.name)))
        .collect();
    rejected.sort_unstable();
    rejected
}

/// Whether the database answers and usage records can be journaled, and the body saying so.
fn health_report(app: &AppState) -> (bool, serde_json::Value) {
    let silence = app.follower.since_last_sync();
    let database = silence <= DATABASE_SILENCE;
    let journal = app.usage.is_durable();
    let ok = database && journal;
    let mut body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "database": {
            "reachable": database,
            "last_answer_ms_ago": u64::try_from(silence.as_millis()).unwrap_or(u64::MAX),
        },
        "usage_journal": {
            "durable": journal,
            "pending_records": app.usage.pending(),
        },
        // Routes failing over to others, and upstream keys the providers rejected (the
        // operator's to replace): informational, the node still serves.
        "open_breakers": app.health.open_routes(),
        "rejected_upstream_keys": rejected_upstream_keys(app),
    });
    // A cluster node without Redis still serves (each node admits its share of a shared limit,
    // docs/deploy.md), so Redis is reported, not required.
    if let Some(fence) = &app.fence {
        body["redis"] = serde_json::json!({ "reachable": fence.redis_reachable() });
    }
    (ok, body)
}

/// Any unknown path.
pub(crate) async fn not_found(uri: http::Uri) -> Response {
    ErrorResponse::from(ApiError::new(
        ErrorKind::NotFound,
        format!("Unknown path `{}`.", uri.path()),
    ))
    .into_response()
}

/// A known path with the wrong method.
pub(crate) async fn method_not_allowed(method: http::Method) -> Response {
    ErrorResponse::from(ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!("Method {method} is not allowed on this path."),
    ))
    .into_response()
}

/// A request body, or the OpenAI-style error saying why it could not be read.
pub(crate) fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorKind::BodyTooLarge,
                format!("The request body is larger than {limit} bytes."),
            )
        } else {
            ApiError::new(ErrorKind::InvalidRequest, "The request body could not be read.")
        }
    })
}
