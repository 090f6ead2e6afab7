//! OpenAI's error object, `{"error":{"message","type","param","code"}}`, and the one table that
//! maps a status to its `type` and `code`.

use http::{Method, StatusCode};
use serde::Serialize;

use crate::body::SimBody;
use crate::exchange::{self, FaultBodies};

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// The OpenAI `type` and `code` for an error status.
fn kind_and_code(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        401 => ("invalid_request_error", "invalid_api_key"),
        403 => ("invalid_request_error", "permission_denied"),
        404 => ("invalid_request_error", "not_found"),
        429 => ("requests", "rate_limit_exceeded"),
        500..=599 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "invalid_request_error"),
    }
}

/// An OpenAI-style error response.
pub(super) fn response(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> http::Response<SimBody> {
    let envelope = Envelope {
        error: ErrorObject {
            message,
            kind,
            param,
            code,
        },
    };
    // Serialising strings and options cannot fail; the fallback keeps the status honest anyway.
    let body = serde_json::to_vec(&envelope).unwrap_or_else(|_| b"{}".to_vec());
    exchange::json(status, body)
}

/// The error for `status` with the type and code of the table above.
pub(super) fn for_status(status: StatusCode, message: &str) -> http::Response<SimBody> {
    let (kind, code) = kind_and_code(status);
    response(status, message, kind, None, Some(code))
}

/// 400 with `type` `invalid_request_error`.
pub(super) fn invalid_request(message: &str, param: Option<&str>, code: Option<&str>) -> http::Response<SimBody> {
    response(StatusCode::BAD_REQUEST, message, "invalid_request_error", param, code)
}

/// 401 for a missing or empty bearer token.
pub(super) fn missing_api_key() -> http::Response<SimBody> {
    response(
        StatusCode::UNAUTHORIZED,
        "You didn't provide an API key. You need to provide your API key in an Authorization \
         header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        "invalid_request_error",
        None,
        Some("invalid_api_key"),
    )
}

/// 400 for a body that is not JSON, or JSON of the wrong shape.
pub(super) fn bad_body(err: &serde_json::Error) -> http::Response<SimBody> {
    if err.is_data() {
        invalid_request(&format!("Invalid request body: {err}"), None, None)
    } else {
        invalid_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but \
             what was sent was not valid JSON.)",
            None,
            None,
        )
    }
}

/// 400 for a body that could not be read (too large, or cut short).
pub(super) fn unreadable_body() -> http::Response<SimBody> {
    invalid_request("The request body could not be read or is too large.", None, None)
}

/// 400 for a missing required parameter.
pub(super) fn missing(param: &str) -> http::Response<SimBody> {
    let message = format!("Missing required parameter: '{param}'.");
    invalid_request(&message, Some(param), Some("missing_required_parameter"))
}

/// 404 for any route the simulator does not serve.
pub(crate) fn not_found(method: &Method, path: &str) -> http::Response<SimBody> {
    let message = format!("Invalid URL ({method} {path})");
    response(StatusCode::NOT_FOUND, &message, "invalid_request_error", None, None)
}

/// Injected faults in OpenAI's shape; `stream` picks the malformed body's flavour.
pub(super) struct OpenAiFaults {
    /// Whether the request asked for a stream.
    pub(super) stream: bool,
}

impl FaultBodies for OpenAiFaults {
    fn error(&self, status: StatusCode) -> http::Response<SimBody> {
        for_status(status, &format!("simulated error {}", status.as_u16()))
    }

    fn malformed(&self) -> http::Response<SimBody> {
        if self.stream {
            exchange::event_stream(SimBody::full(&b"data: {not json\n\ndata: [DONE]\n\n"[..]))
        } else {
            exchange::json(StatusCode::OK, &b"{\"id\":\"chatcmpl-sim-0\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assis"[..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_the_usual_statuses() {
        assert_eq!(
            kind_and_code(StatusCode::TOO_MANY_REQUESTS),
            ("requests", "rate_limit_exceeded")
        );
        assert_eq!(kind_and_code(StatusCode::BAD_GATEWAY), ("server_error", "server_error"));
        assert_eq!(kind_and_code(StatusCode::UNAUTHORIZED).1, "invalid_api_key");
        assert_eq!(kind_and_code(StatusCode::BAD_REQUEST).1, "invalid_request_error");
    }
}
