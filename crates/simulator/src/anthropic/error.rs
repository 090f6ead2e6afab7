//! Anthropic's error object, `{"type":"error","error":{"type","message"}}`, and the table that maps
//! a status to its error `type`.

use http::{HeaderMap, Response, StatusCode};
use serde::Serialize;

use crate::body::SimBody;
use crate::exchange::{self, FaultBodies};

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// Anthropic's error `type` for a status.
fn kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An Anthropic-style error response.
fn response(status: StatusCode, kind: &str, message: &str) -> Response<SimBody> {
    let envelope = Envelope {
        kind: "error",
        error: ErrorObject { kind, message },
    };
    // Serialising strings cannot fail; the fallback keeps the status honest anyway.
    let body = serde_json::to_vec(&envelope).unwrap_or_else(|_| b"{}".to_vec());
    exchange::json(status, body)
}

/// The error for `status` with the type of the table above.
pub(super) fn for_status(status: StatusCode, message: &str) -> Response<SimBody> {
    response(status, kind(status), message)
}

/// 400 with `type` `invalid_request_error`.
pub(super) fn invalid_request(message: &str) -> Response<SimBody> {
    response(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// Whether the request carries a non-empty `x-api-key` and an `anthropic-version`.
pub(super) fn is_authenticated(headers: &HeaderMap) -> bool {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty());
    key && headers.contains_key("anthropic-version")
}

/// 401 for a missing or empty `x-api-key` (or a missing `anthropic-version`).
pub(super) fn authentication() -> Response<SimBody> {
    response(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid x-api-key (both x-api-key and anthropic-version headers are required)",
    )
}

/// 400 for a body that is not JSON, or JSON of the wrong shape.
pub(super) fn bad_body(err: &serde_json::Error) -> Response<SimBody> {
    if err.is_data() {
        invalid_request(&format!("Invalid request body: {err}"))
    } else {
        invalid_request("There was an error parsing the body of your request: it is not valid JSON.")
    }
}

/// Injected faults in Anthropic's shape; `stream` picks the malformed body's flavour.
pub(super) struct AnthropicFaults {
    /// Whether the request asked for a stream.
    pub(super) stream: bool,
}

impl FaultBodies for AnthropicFaults {
    fn error(&self, status: StatusCode) -> Response<SimBody> {
        for_status(status, &format!("simulated error {}", status.as_u16()))
    }

    fn malformed(&self) -> Response<SimBody> {
        if self.stream {
            exchange::event_stream(SimBody::full(&b"event: message_start\ndata: {not json\n\n"[..]))
        } else {
            exchange::json(
                StatusCode::OK,
                &b"{\"id\":\"msg_sim_0\",\"type\":\"message\",\"role\":\"assis"[..],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn table_covers_the_usual_statuses() {
        assert_eq!(kind(StatusCode::TOO_MANY_REQUESTS), "rate_limit_error");
        assert_eq!(kind(StatusCode::INTERNAL_SERVER_ERROR), "api_error");
        assert_eq!(kind(StatusCode::BAD_GATEWAY), "api_error");
        assert_eq!(kind(StatusCode::UNAUTHORIZED), "authentication_error");
        assert_eq!(kind(StatusCode::BAD_REQUEST), "invalid_request_error");
        let overloaded = StatusCode::from_u16(529).unwrap_or(StatusCode::OK);
        assert_eq!(kind(overloaded), "overloaded_error");
    }

    #[test]
    fn auth_needs_key_and_version() {
        let mut headers = HeaderMap::new();
        assert!(!is_authenticated(&headers));
        headers.insert("x-api-key", HeaderValue::from_static("sk-ant"));
        assert!(!is_authenticated(&headers));
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        assert!(is_authenticated(&headers));
        headers.insert("x-api-key", HeaderValue::from_static("  "));
        assert!(!is_authenticated(&headers));
    }
}
