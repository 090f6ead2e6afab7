//! The pooled HTTP client every provider shares (HTTP/1.1 keep-alive, TLS by rustls).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::provider::Provider;

/// Why an upstream call failed before a response head arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No response head within the timeout.
    #[error("upstream timed out")]
    Timeout,
    /// Connecting or sending failed (refused, reset, TLS, …).
    #[error("upstream connection failed: {0}")]
    Connection(String),
    /// The provider's URL or secret cannot form a request.
    #[error("provider is misconfigured: {0}")]
    Misconfigured(String),
}

/// A shared, pooled client for all upstream calls.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl UpstreamClient {
    /// Builds the client with the operating system's trusted roots.
    pub fn new() -> std::io::Result<UpstreamClient> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        Ok(UpstreamClient { client })
    }

    /// POSTs `body` to `provider`'s `path` with one of its keys, waiting at most `timeout` for
    /// the response head. A key with a token source sends its current access token; without
    /// one the call fails as `Misconfigured` (the provider is unavailable: a 503, not a 401).
    pub async fn post(
        &self,
        provider: &Provider,
        key: &crate::keys::UpstreamKey,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{}", provider.base_url, path))
            .header(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &key.headers {
            builder = builder.header(name, value);
        }
        if let Some(token) = &key.token {
            // No token (minting failed): the provider is unavailable (a 503), never a 401.
            let value = token
                .authorization(timeout)
                .await
                .map_err(UpstreamError::Misconfigured)?;
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Misconfigured(e.to_string()))?;
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => Err(UpstreamError::Connection(error_chain(&e))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// POSTs a form (`application/x-www-form-urlencoded`) to `url` and reads the whole answer
    /// (at most 64 KiB), all within `timeout`: for token endpoints.
    pub async fn post_form(
        &self,
        url: &str,
        form: String,
        timeout: Duration,
    ) -> Result<(http::StatusCode, Bytes), UpstreamError> {
        use http_body_util::BodyExt as _;
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| UpstreamError::Misconfigured(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| UpstreamError::Connection(error_chain(&e)))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await
                .map_err(|e| UpstreamError::Connection(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
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
