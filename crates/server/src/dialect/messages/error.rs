//! Errors in Anthropic's shape: `{"type":"error","error":{"type","message"}}`, the `type` chosen
//! by the HTTP status as Anthropic documents it (its errors page), the status itself kept.

use std::borrow::Cow;

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    error: OpenAiError<'a>,
}

#[derive(Debug, Deserialize)]
struct OpenAiError<'a> {
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
}

/// Anthropic's error `type` for an HTTP status.
pub(super) fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// The Anthropic error body for the pipeline's OpenAI error `error` answered with `status`. A
/// mid-stream error comes with status 200: its type then follows the OpenAI error's own type.
pub(super) fn anthropic_error(status: StatusCode, error: &[u8]) -> Bytes {
    let parsed = serde_json::from_slice::<Envelope<'_>>(error).ok();
    let message = parsed
        .as_ref()
        .and_then(|e| e.error.message.as_deref())
        .unwrap_or("The request failed.");
    let kind = if status.is_success() || status == StatusCode::INTERNAL_SERVER_ERROR {
        match parsed.as_ref().and_then(|e| e.error.kind.as_deref()) {
            Some("rate_limit_error" | "rate_limit_exceeded") => "rate_limit_error",
            Some("overloaded_error" | "service_unavailable") => "overloaded_error",
            Some("invalid_request_error") => "invalid_request_error",
            _ => "api_error",
        }
    } else {
        error_type(status)
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    Bytes::from(body.to_string())
}
