//! The format-neutral steps of every exchange: routing, auth, reading the body, directives,
//! injected faults, pacing and building responses.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::SimState;
use crate::body::SimBody;
use crate::conn::ConnControl;
use crate::directives::{ARRIVED_HEADER, Directives, Fault, MAX_DELAY, route_hash};
use crate::openai;

/// The largest request body read; anything bigger is refused with a 400.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Dispatches one request to its endpoint; every outcome is a response (or a dropped connection).
pub(crate) async fn route(
    request: Request<Incoming>,
    state: &SimState,
    control: &ConnControl,
) -> Result<Response<SimBody>, Infallible> {
    let request = arrived_via(request);
    let response = match (request.method() == Method::POST, request.uri().path()) {
        (true, "/v1/chat/completions") => openai::chat(request, state, control).await,
        (true, "/v1/embeddings") => openai::embeddings(request, state, control).await,
        (true, "/v1/messages") => crate::anthropic::messages(request, state, control).await,
        // Google Cloud Vertex AI: Claude and Gemini on a project's paths, and its token endpoint.
        (true, path) if path.starts_with(crate::vertex::PROJECTS) => {
            crate::vertex::handle(request, state, control).await
        }
        (true, "/token") => crate::vertex::token(request, state).await,
        // Azure OpenAI: OpenAI's bodies on a deployment's URL, with a required `api-version`.
        (true, path) if azure(&request, path, "/chat/completions") => openai::chat(request, state, control).await,
        (true, path) if azure(&request, path, "/embeddings") => openai::embeddings(request, state, control).await,
        (_, path) if path.starts_with("/v1beta/") => crate::gemini::handle(request, state, control).await,
        (_, path) if path.starts_with("/payments/") => crate::payments::handle(request, state).await,
        _ => openai::not_found(request.method(), request.uri().path()),
    };
    Ok(response)
}

/// Whether `path` is Azure OpenAI's `/openai/deployments/{name}{operation}` with an
/// `api-version` in the query (Azure answers 404 without one).
fn azure(request: &Request<Incoming>, path: &str, operation: &str) -> bool {
    path.strip_prefix("/openai/deployments/")
        .and_then(|rest| rest.strip_suffix(operation))
        .is_some_and(|deployment| !deployment.is_empty() && !deployment.contains('/'))
        && request.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.starts_with("api-version=") && pair.len() > 12)
        })
}

/// A request under a route prefix (`/sim-a/v1/...`): the prefix is stripped, and named to the
/// handler in [`ARRIVED_HEADER`] so `route=` directives can target it. Any other request loses
/// a client-sent [`ARRIVED_HEADER`].
fn arrived_via(request: Request<Incoming>) -> Request<Incoming> {
    let (mut parts, body) = request.into_parts();
    parts.headers.remove(ARRIVED_HEADER);
    let path = parts.uri.path();
    let known = ["/v1/", "/v1beta/", "/payments/", "/openai/"];
    if !known.iter().any(|p| path.starts_with(p))
        && let Some((route, rest)) = path.trim_start_matches('/').split_once('/')
        && !route.is_empty()
        && let Ok(name) = http::HeaderValue::from_str(route)
    {
        let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        if let Ok(uri) = format!("/{rest}{query}").parse() {
            parts.uri = uri;
            parts.headers.insert(ARRIVED_HEADER, name);
        }
    }
    Request::from_parts(parts, body)
}

/// Directives from the `x-sim` header, if any, and the route the request arrived through.
pub(crate) fn header_directives(headers: &HeaderMap) -> Directives {
    let mut directives = Directives {
        arrived: headers
            .get(ARRIVED_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(route_hash),
        ..Directives::default()
    };
    for value in headers.get_all("x-sim") {
        if let Ok(list) = value.to_str() {
            directives.apply_list(list);
        }
    }
    directives
}

/// Whether the request carries `authorization: Bearer <non-empty>` (or Azure's `api-key`) with
/// a key the simulated provider accepts: any, except one containing `rejected` (a key the
/// provider revoked, for tests of upstream key pools), which gets the 401 a missing key gets.
pub(crate) fn has_bearer(headers: &HeaderMap) -> bool {
    if let Some(key) = headers.get("api-key").and_then(|v| v.to_str().ok()) {
        return !key.trim().is_empty() && !key.contains("rejected");
    }
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| &v[7..])
        })
        .is_some_and(|token| !token.trim().is_empty() && !token.contains("rejected"))
}

/// The whole request body, or `None` if it is too large or the client went away.
pub(crate) async fn read_body(body: Incoming) -> Option<Bytes> {
    Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

/// How a wire format writes the faults whose body it owns.
pub(crate) trait FaultBodies {
    /// The error response for a `status=NNN` directive (or a `timeout` that ran out).
    fn error(&self, status: StatusCode) -> Response<SimBody>;
    /// The 200 response with an invalid body for `malformed`.
    fn malformed(&self) -> Response<SimBody>;
}

/// Carries out `fault`: resets the connection, hangs, or builds the faulty response.
pub(crate) async fn inject(fault: Fault, control: &ConnControl, bodies: &impl FaultBodies) -> Response<SimBody> {
    match fault {
        Fault::Reset => control.reset().await,
        Fault::Timeout => {
            tokio::time::sleep(MAX_DELAY).await;
            bodies.error(StatusCode::GATEWAY_TIMEOUT)
        }
        Fault::Status(status) => bodies.error(status),
        Fault::Malformed => bodies.malformed(),
    }
}

/// Waits `delay`, without touching the timer wheel when it is zero.
pub(crate) async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// A whole JSON response.
pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<SimBody> {
    with_type(status, SimBody::full(body), "application/json")
}

/// A server-sent-events response.
pub(crate) fn event_stream(body: SimBody) -> Response<SimBody> {
    let mut response = with_type(StatusCode::OK, body, "text/event-stream");
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn with_type(status: StatusCode, body: SimBody, content_type: &'static str) -> Response<SimBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Seconds since the Unix epoch, for `created` fields.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_must_be_present_and_non_empty() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            has_bearer(&headers)
        };
        assert!(with("Bearer sk-1"));
        assert!(with("bearer x"));
        assert!(!with("Bearer "));
        assert!(!with("Bearer    "));
        assert!(!with("Basic abc"));
        assert!(!with("Bear"));
        assert!(!has_bearer(&HeaderMap::new()));
    }
}
