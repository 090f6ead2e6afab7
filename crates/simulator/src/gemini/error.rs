//! Google's error object, `{"error":{"code","message","status"}}`, the table that maps an HTTP
//! status to its canonical `status` string, auth, and the injected faults in Gemini's shape.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::body::SimBody;
use crate::exchange::{self, FaultBodies};

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: u16,
    message: &'a str,
    status: &'a str,
}

/// Google's canonical status name for an HTTP status.
pub(super) fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

/// A Google-style error response for `status`.
pub(crate) fn response(status: StatusCode, message: &str) -> http::Response<SimBody> {
    let envelope = Envelope {
        error: ErrorObject {
            code: status.as_u16(),
            message,
            status: status_name(status),
        },
    };
    // Serialising strings and numbers cannot fail; the fallback keeps the status honest anyway.
    let body = serde_json::to_vec(&envelope).unwrap_or_else(|_| b"{}".to_vec());
    exchange::json(status, body)
}

/// 400 `INVALID_ARGUMENT`.
pub(super) fn invalid(message: &str) -> http::Response<SimBody> {
    response(StatusCode::BAD_REQUEST, message)
}

/// 400 for a body that is not JSON, or JSON of the wrong shape.
pub(super) fn bad_body(err: &serde_json::Error) -> http::Response<SimBody> {
    if err.is_data() {
        invalid(&format!("Invalid JSON payload received. {err}"))
    } else {
        invalid(&format!("Invalid JSON payload received. Unexpected token. {err}"))
    }
}

/// 400 for a body that could not be read (too large, or cut short).
pub(super) fn unreadable_body() -> http::Response<SimBody> {
    invalid("The request body could not be read or is too large.")
}

/// 403 for a request without an API key, as the Gemini API answers it.
pub(super) fn missing_api_key() -> http::Response<SimBody> {
    response(
        StatusCode::FORBIDDEN,
        "Method doesn't allow unregistered callers (callers without established identity). Please use \
         API Key or other form of API consumer identity to call this API.",
    )
}

/// 404 for any path under `/v1beta/` the simulator does not serve.
pub(crate) fn not_found(method: &Method, path: &str) -> http::Response<SimBody> {
    response(StatusCode::NOT_FOUND, &format!("Invalid URL ({method} {path})"))
}

/// Whether the request carries an API key: `x-goog-api-key`, a `key` query parameter, or a
/// bearer token (OAuth), each non-empty.
pub(super) fn has_key(request: &Request<Incoming>) -> bool {
    let header = request
        .headers()
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty());
    let query = request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.strip_prefix("key=").is_some_and(|k| !k.is_empty()))
    });
    header || query || exchange::has_bearer(request.headers())
}

/// Injected faults in Gemini's shape; `stream` picks the malformed body's flavour.
pub(super) struct GeminiFaults {
    /// `Some(true)` for an SSE stream, `Some(false)` for a JSON-array stream, `None` unary.
    pub(super) stream: Option<bool>,
}

impl FaultBodies for GeminiFaults {
    fn error(&self, status: StatusCode) -> http::Response<SimBody> {
        response(status, &format!("simulated error {}", status.as_u16()))
    }

    fn malformed(&self) -> http::Response<SimBody> {
        match self.stream {
            Some(true) => exchange::event_stream(SimBody::full(&b"data: {not json\n\n"[..])),
            Some(false) => exchange::json(StatusCode::OK, &b"[{not json"[..]),
            None => exchange::json(
                StatusCode::OK,
                &b"{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"te"[..],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_the_usual_statuses() {
        assert_eq!(status_name(StatusCode::TOO_MANY_REQUESTS), "RESOURCE_EXHAUSTED");
        assert_eq!(status_name(StatusCode::INTERNAL_SERVER_ERROR), "INTERNAL");
        assert_eq!(status_name(StatusCode::SERVICE_UNAVAILABLE), "UNAVAILABLE");
        assert_eq!(status_name(StatusCode::BAD_GATEWAY), "INTERNAL");
        assert_eq!(status_name(StatusCode::BAD_REQUEST), "INVALID_ARGUMENT");
        assert_eq!(status_name(StatusCode::FORBIDDEN), "PERMISSION_DENIED");
        assert_eq!(status_name(StatusCode::IM_A_TEAPOT), "INVALID_ARGUMENT");
    }
}
