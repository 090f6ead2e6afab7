//! Turning an [`ApiError`] into an OpenAI-style HTTP response. Errors are logged once, here,
//! where they leave the system — by code only, never with a body.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use router_one_core::ApiError;

/// An [`ApiError`] on its way to the client, with the request id when there is one.
pub(crate) struct ErrorResponse {
    pub(crate) error: ApiError,
    pub(crate) request_id: Option<String>,
}

impl From<ApiError> for ErrorResponse {
    fn from(error: ApiError) -> Self {
        ErrorResponse {
            error,
            request_id: None,
        }
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(
                code = self.error.kind.code(),
                request_id = self.request_id.as_deref(),
                "request failed"
            );
        } else {
            tracing::debug!(
                code = self.error.kind.code(),
                request_id = self.request_id.as_deref(),
                "request refused"
            );
        }
        let mut response = (status, Bytes::from(self.error.to_json())).into_response();
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(id) = self.request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
            headers.insert("x-request-id", id);
        }
        if let Some(seconds) = self.error.retry_after_s {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A storage failure seen by a handler: logged, and shown to the client only as a transient
/// 503 `database_unavailable` with `Retry-After` (nothing of the failure itself): the database
/// being down or restarting is the usual cause, and a relay must retry, not disable the channel.
pub(crate) fn internal(e: impl std::fmt::Display) -> ErrorResponse {
    tracing::error!(error = %e, "storage failure");
    ApiError::new(
        router_one_core::ErrorKind::DatabaseUnavailable,
        "The gateway's database is unavailable; please retry shortly.",
    )
    .with_retry_after(1)
    .into()
}
