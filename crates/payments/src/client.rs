//! The HTTP client every adapter shares: hyper-util's pooled legacy client, TLS by rustls with
//! the operating system's roots (plain HTTP only if none can be loaded), one timeout per call.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::PaymentError;

/// How long one call to a provider may take, answer included.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The most of a provider's answer read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A pooled client for provider calls.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
    /// No trusted roots could be loaded: `https` URLs fail with a clear error.
    Plain(Client<HttpConnector, Full<Bytes>>, String),
}

impl HttpClient {
    /// Builds the client.
    pub(crate) fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(90));
            b
        };
        let inner = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(tls) => Inner::Tls(builder().build(tls.https_or_http().enable_http1().wrap_connector(http))),
            Err(e) => Inner::Plain(builder().build(http), e.to_string()),
        };
        HttpClient { inner }
    }

    /// POSTs `body` to `url` with `headers`, and returns the status and the whole answer, all
    /// within [`CALL_TIMEOUT`].
    pub(crate) async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), PaymentError> {
        let mut builder = Request::builder().method(Method::POST).uri(url);
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| PaymentError::NotConfigured(format!("invalid `{name}` header value")))?;
            builder = builder.header(*name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PaymentError::NotConfigured(format!("invalid provider URL {url:?}: {e}")))?;
        let call = async {
            let response = match &self.inner {
                Inner::Tls(client) => client.request(request).await,
                Inner::Plain(client, why) => {
                    if request.uri().scheme_str() == Some("https") {
                        return Err(PaymentError::Unreachable(format!("no TLS roots: {why}")));
                    }
                    client.request(request).await
                }
            }
            .map_err(|e| PaymentError::Unreachable(error_chain(&e)))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| PaymentError::Unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| PaymentError::Unreachable(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))?
    }
}

/// An error and its causes on one line (they never contain bodies).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A refusal from a non-2xx answer: the provider's own message when its error body has one
/// (`{"error": {"message"}}` or `{"error": "…"}`), else the start of the body.
pub(crate) fn refused(status: StatusCode, body: &[u8]) -> PaymentError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("error"))
                .or_else(|| v.get("message"))
        })
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.chars().take(200).collect()
        });
    PaymentError::Refused {
        status: status.as_u16(),
        message,
    }
}

/// The Bearer header value for `secret`.
pub(crate) fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}
