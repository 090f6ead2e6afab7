//! Signed receipts (docs/receipts.md): which responses get one and how it is signed
//! ([`signer_for`], [`seal`]), the public keys they verify against (`GET
//! /.well-known/jwks.json`, no key needed) and one request's receipt by id (`GET
//! /v1/requests/{id}/receipt`, scoped to the management key's account like the trace).
//!
//! Only `/v1/chat/completions` and `/v1/embeddings` answers are signed: `/v1/responses` and
//! `/v1/messages` rewrite the chat answer after the pipeline, so a receipt over the chat bytes
//! would not be a receipt of what their client received.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use serde_json::json;
use tokio::sync::oneshot;

use router_one_core::usage::{Endpoint, RecordReceipt, UsageRecord};
use router_one_core::{ApiError, ErrorKind};
use router_one_receipts::{BatchSigner, Claims, Jwk, Jwks};

use crate::auth::ManagementAccount;
use crate::error::ErrorResponse;
use crate::routes::usage::{Lookup, find_record, pending};
use crate::state::AppState;

/// What signs an answer of `endpoint`, if its answers are signed.
pub(crate) fn signer_for(app: &AppState, endpoint: Endpoint) -> Option<&BatchSigner> {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Embeddings => app.receipt_signer.as_ref(),
        Endpoint::Responses | Endpoint::Messages => None,
    }
}

/// Queues the receipt of `record`, whose client received a body hashing to `body_sha256`, for
/// the next signed batch; it arrives through the returned future.
pub(crate) fn seal(
    signer: &BatchSigner,
    record: &UsageRecord,
    upstream_response_id: Option<&str>,
    body_sha256: &[u8; 32],
) -> PendingReceipt {
    PendingReceipt {
        receipt: signer.seal(&Claims::of(record, upstream_response_id, body_sha256)),
        upstream_response_id: upstream_response_id.map(str::to_owned),
        body_sha256: *body_sha256,
    }
}

/// A receipt being sealed ([`seal`]); `None` if the signer went away.
pub(crate) struct PendingReceipt {
    receipt: oneshot::Receiver<String>,
    upstream_response_id: Option<String>,
    body_sha256: [u8; 32],
}

/// A sealed receipt: as the response carries it, and as its record keeps it.
pub(crate) struct Sealed {
    pub(crate) sent: String,
    pub(crate) kept: RecordReceipt,
}

impl Future for PendingReceipt {
    type Output = Option<Sealed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Sealed>> {
        let sent = std::task::ready!(Pin::new(&mut self.receipt).poll(cx)).ok();
        Poll::Ready(sent.map(|sent| Sealed {
            kept: RecordReceipt::Parts(router_one_receipts::parts_of(
                &sent,
                self.upstream_response_id.as_deref(),
                &self.body_sha256,
            )),
            sent,
        }))
    }
}

/// `GET /.well-known/jwks.json`: every public key receipts may be signed with — this node's
/// current and retired keys and those every node sharing the database published — as a JWKS
/// (RFC 7517, RFC 8037). No key needed: anyone a receipt is shown to must be able to check it.
/// Read from the database once per [`JWKS_TTL`] at most (a key another node publishes shows up
/// within it).
pub(crate) async fn jwks(State(app): State<Arc<AppState>>) -> Response {
    let cached = app.receipt_jwks.load_full().filter(|c| c.at.elapsed() < JWKS_TTL);
    let served = match cached {
        Some(served) => served,
        None => {
            let served = Arc::new(ServedJwks {
                at: Instant::now(),
                keys: current_jwks(&app).await,
            });
            app.receipt_jwks.store(Some(served.clone()));
            served
        }
    };
    let mut response = Json(&served.keys).into_response();
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

/// How long the JWKS served is reused before the database is read again.
const JWKS_TTL: Duration = Duration::from_secs(5);

/// A JWKS as served, and when it was read.
pub(crate) struct ServedJwks {
    at: Instant,
    keys: Jwks,
}

/// This node's keys and every key published in the database.
async fn current_jwks(app: &AppState) -> Jwks {
    let mut keys = app.receipts.as_ref().map(|ring| ring.jwks()).unwrap_or_default();
    match app.store.receipt_keys().await {
        Ok(published) => keys.merge(published.iter().filter_map(|jwk| serde_json::from_str::<Jwk>(jwk).ok())),
        // This node's own keys still verify what it signed.
        Err(e) => tracing::warn!(error = %e, "published receipt keys cannot be read; serving this node's own"),
    }
    keys
}

/// `GET /v1/requests/{id}/receipt`: the receipt of one of the account's requests, the same one
/// its response carried. Another account's request is the same 404 as an unknown id.
#[utoipa::path(
    get,
    path = "/v1/requests/{id}/receipt",
    operation_id = "request_receipt",
    tag = "usage",
    summary = "One request's signed receipt",
    description = "The receipt (its batch's EdDSA JWS, its claims, their Merkle path) the response carried in `x-router-one-receipt` or its \
        stream's `: receipt` line; verify it against `GET /.well-known/jwks.json` (docs/receipts.md).",
    params(("id" = String, Path, description = "The request id (`x-request-id`).")),
    responses(
        (status = 200, description = "The receipt.", body = crate::openapi::schemas::Receipt),
        (status = 202, description = "Not recorded yet (still running, or ended on another node moments ago): ask again after `Retry-After`.", body = crate::openapi::schemas::PendingRequest),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 404, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn receipt(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    Path(id): Path<String>,
) -> Result<Response, ErrorResponse> {
    // Read through what is journaled, like the trace: answered from the moment the response ended.
    let record = match find_record(&app, &account_id, &id).await? {
        Lookup::Found(record) => record,
        Lookup::Pending => return Ok(pending(&id)),
    };
    let receipt = router_one_receipts::rebuilt(&record)
        .map_err(|e| {
            tracing::error!(request_id = %id, error = %e, "a stored receipt cannot be rebuilt");
            ApiError::new(
                ErrorKind::Internal,
                format!("Request `{id}`'s receipt cannot be rebuilt from its record."),
            )
        })?
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                format!("Request `{id}` has no receipt: only answered chat completions and embeddings are signed."),
            )
        })?;
    Ok(Json(json!({ "object": "receipt", "request_id": record.request_id, "receipt": receipt })).into_response())
}
