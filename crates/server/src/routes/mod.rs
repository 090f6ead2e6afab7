//! One module per endpoint family; each handler reads top to bottom.

pub(crate) mod account;
pub(crate) mod billing;
pub(crate) mod chat;
pub(crate) mod checkout;
pub(crate) mod embeddings;
pub(crate) mod keys;
pub(crate) mod management_keys;
pub(crate) mod models;
pub(crate) mod payments;
pub(crate) mod referrals;
pub(crate) mod signup;
pub(crate) mod upstream;
pub(crate) mod usage;

use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use router_one_core::{ApiError, ErrorKind};

use crate::error::ErrorResponse;

/// `GET /health`: the process is up and serving.
pub(crate) async fn health() -> &'static str {
    "ok"
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
