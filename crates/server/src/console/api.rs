//! The console's way into the management and inference API: a request built in-process and
//! handed to the same router a socket would reach, answered by the same handlers. What the API
//! refuses, the console shows with the API's own words.

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::console::session::Session;

/// Largest answer the console reads from the API (a usage page of 1000 records, a CSV export).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The API, as one in-process service.
#[derive(Clone)]
pub(crate) struct Api {
    router: Router,
}

/// What the API answered when it said no: its status and its message (and the field it names).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) param: Option<String>,
}

impl Failure {
    /// The message, if the API named `field` as what was wrong (to mark that form field).
    pub(crate) fn about(&self, field: &str) -> Option<&str> {
        (self.param.as_deref() == Some(field)).then_some(self.message.as_str())
    }

    fn internal(message: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            param: None,
        }
    }
}

/// A successful answer.
pub(crate) struct Answer {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn json(&self) -> Result<Value, Failure> {
        serde_json::from_slice(&self.body).map_err(|e| Failure::internal(format!("the API answered no JSON: {e}")))
    }
}

/// One request to the API.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) path: &'a str,
    pub(crate) bearer: Option<&'a str>,
    pub(crate) body: Option<&'a Value>,
    /// `X-Forwarded-For` of the console request, passed on so that per-source limits (logins)
    /// count the browser's address as they would a direct call's.
    pub(crate) forwarded_for: Option<&'a HeaderValue>,
}

impl Api {
    pub(crate) fn new(router: Router) -> Api {
        Api { router }
    }

    /// Sends `call`; a 2xx answer is `Ok`, anything else the API's error.
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Answer, Failure> {
        let mut request = Request::builder().method(call.method).uri(call.path);
        if let Some(token) = call.bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(forwarded) = call.forwarded_for {
            request = request.header("x-forwarded-for", forwarded.clone());
        }
        let body = match call.body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let request = request
            .body(body)
            .map_err(|e| Failure::internal(format!("building an API request: {e}")))?;
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| Failure::internal(format!("the API failed: {e}")))?;
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| Failure::internal(format!("reading the API's answer: {e}")))?
            .to_bytes();
        if parts.status.is_success() {
            return Ok(Answer {
                headers: parts.headers,
                body,
            });
        }
        Err(failure(parts.status, &body))
    }
}

/// The API's OpenAI-style error object as a [`Failure`].
fn failure(status: StatusCode, body: &[u8]) -> Failure {
    let error = serde_json::from_slice::<Value>(body).ok();
    let error = error.as_ref().and_then(|e| e.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("The request failed ({status})."), str::to_owned);
    let param = error
        .and_then(|e| e.get("param"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Failure { status, message, param }
}

impl Api {
    /// `GET path` as the signed-in visitor, its JSON answer.
    pub(crate) async fn get(&self, session: &Session, path: &str) -> Result<Value, Failure> {
        self.as_visitor(session, Method::GET, path, None).await?.json()
    }

    /// `POST path` with a JSON body as the signed-in visitor, its JSON answer.
    pub(crate) async fn post(&self, session: &Session, path: &str, body: &Value) -> Result<Value, Failure> {
        self.as_visitor(session, Method::POST, path, Some(body)).await?.json()
    }

    /// `PATCH path` with a JSON body as the signed-in visitor, its JSON answer.
    pub(crate) async fn patch(&self, session: &Session, path: &str, body: &Value) -> Result<Value, Failure> {
        self.as_visitor(session, Method::PATCH, path, Some(body)).await?.json()
    }

    /// `DELETE path` as the signed-in visitor.
    pub(crate) async fn delete(&self, session: &Session, path: &str) -> Result<Answer, Failure> {
        self.as_visitor(session, Method::DELETE, path, None).await
    }

    /// Any call as the signed-in visitor (a download reads the raw answer).
    pub(crate) async fn as_visitor(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Failure> {
        self.send(Call {
            method,
            path,
            bearer: Some(&session.secret),
            body,
            forwarded_for: session.forwarded_for.as_ref(),
        })
        .await
    }
}

/// A string field of an API object ("" when absent or not a string).
pub(crate) fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// `text` as one query-string value.
pub(crate) fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
