//! The part of every inference endpoint after admission: send to the provider, read or stream
//! the answer, settle and record, and build the client's response.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use router_one_core::usage::Endpoint;
use router_one_core::{ApiError, ErrorKind};
use router_one_providers::openai::with_cost;
use router_one_providers::{PreparedRequest, Provider, ReadContext, Refusal, UpstreamError};

use crate::auth::InferenceKey;
use crate::error::ErrorResponse;
use crate::metered::MeteredStream;
use crate::record::{Outcome, RequestMeter};
use crate::routes;
use crate::run_to_completion::RunToCompletion;
use crate::state::AppState;

/// The most of an upstream's complete answer the gateway will hold.
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;

/// A request that passed admission, ready to send.
pub(crate) struct Admitted {
    pub(crate) provider: Arc<Provider>,
    /// The model id at the provider.
    pub(crate) upstream_id: String,
    pub(crate) prepared: PreparedRequest,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
}

/// Every inference endpoint: authenticate → `admit` (validate, route, reserve, prepare) →
/// forward. `admit` is the endpoint's own part; a refusal is recorded like any outcome.
pub(crate) async fn serve_inference(
    app: Arc<AppState>,
    InferenceKey(key): InferenceKey,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
    admit: impl FnOnce(&AppState, &mut RequestMeter, &Bytes) -> Result<Admitted, ApiError>,
) -> Response {
    let started = Instant::now();
    let body = match routes::body(body, app.config.max_body_bytes) {
        Ok(body) => body,
        Err(e) => return ErrorResponse::from(e).into_response(),
    };
    let mut meter = RequestMeter::new(key, endpoint, started, app.config.metering, &app.usage);
    let admitted = admit(&app, &mut meter, &body);
    let rate = meter.rate_snapshot.take();
    let mut response = match admitted {
        // Once sent, the exchange is metered and recorded even if the client hangs up first.
        Ok(admitted) => {
            let hung_up = meter.hung_up.clone();
            RunToCompletion::new(forward(app.clone(), meter, admitted), &app.tasks, hung_up).await
        }
        Err(e) => fail(meter, e),
    };
    // Every response of a limited key says where its limits stand (OpenAI's headers, which
    // relays read).
    if let Some(rate) = rate {
        let headers = response.headers_mut();
        for (name, value) in rate.headers() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    response
}

/// Sends an admitted request and turns the upstream's answer into the client's response.
async fn forward(app: Arc<AppState>, mut meter: RequestMeter, admitted: Admitted) -> Response {
    let app = &app;
    let Admitted {
        provider,
        upstream_id,
        prepared,
        stream,
        include_usage,
    } = admitted;
    // Never spend upstream money on an answer whose usage record could not be kept.
    if !app.usage.is_durable() {
        return fail(meter, crate::record::usage_unavailable());
    }
    let deadline = Instant::now() + app.config.upstream_timeout;
    meter.mark_sent();
    let response = match app
        .client
        .post(&provider, &prepared.path, prepared.body, app.config.upstream_timeout)
        .await
    {
        Ok(response) => response,
        Err(e) => return fail(meter, connection_error(&e)),
    };
    if !response.status().is_success() {
        return upstream_refused(&provider, meter, response, deadline).await;
    }
    let context = ReadContext {
        upstream_id: &upstream_id,
        created: u64::try_from(meter.created_at_us / 1_000_000).unwrap_or_default(),
        hints: prepared.hints,
    };
    if stream {
        let decoder = provider.api.stream_decoder(context);
        return MeteredStream::start(app.clone(), meter, decoder, response.into_body(), include_usage).await;
    }
    meter.mark_first_byte();
    let body = match read_body(response.into_body(), deadline).await {
        Ok(body) => body,
        Err(e) => return fail(meter, e),
    };
    let read = match meter.endpoint {
        Endpoint::Embeddings => provider.api.read_embeddings(body, context),
        _ => provider.api.read_chat(body, context),
    };
    let read = match read {
        Ok(read) => read,
        Err(e) => return fail(meter, e),
    };
    let request_id = meter.request_id.clone();
    let provider_name = meter.provider.clone();
    let outcome = Outcome {
        status: 200,
        error_code: if read.usage.is_none() {
            Some("upstream_usage_missing")
        } else {
            None
        },
        served_model: read.served_model.clone(),
        usage: read.usage.unwrap_or_default(),
    };
    match meter.finish(outcome) {
        Ok(cost) => {
            let body = with_cost(read.body, read.usage_end, &cost.to_string());
            success(
                StatusCode::OK,
                body,
                "application/json",
                &request_id,
                read.served_model.as_deref(),
                &provider_name,
            )
        }
        Err(e) => ErrorResponse {
            error: e,
            request_id: Some(request_id),
        }
        .into_response(),
    }
}

/// A response with the headers every successful inference response carries.
pub(crate) fn success(
    status: StatusCode,
    body: impl Into<Body>,
    content_type: &'static str,
    request_id: &str,
    served_model: Option<&str>,
    provider: &str,
) -> Response {
    let mut response = (status, body.into()).into_response();
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    if let Some(v) = served_model.and_then(|m| HeaderValue::from_str(m).ok()) {
        headers.insert("x-router-one-served-model", v);
    }
    if let Ok(v) = HeaderValue::from_str(provider) {
        headers.insert("x-router-one-provider", v);
    }
    response
}

/// Records a failed request and answers with its error.
pub(crate) fn fail(meter: RequestMeter, error: ApiError) -> Response {
    let request_id = meter.request_id.clone();
    meter.refuse(&error);
    ErrorResponse {
        error,
        request_id: Some(request_id),
    }
    .into_response()
}

fn connection_error(e: &UpstreamError) -> ApiError {
    match e {
        UpstreamError::Timeout => ApiError::new(
            ErrorKind::UpstreamTimeout,
            "The upstream provider did not answer in time.",
        ),
        UpstreamError::Connection(_) => {
            ApiError::new(ErrorKind::UpstreamError, "Could not reach the upstream provider.")
        }
        UpstreamError::Misconfigured(_) => ApiError::new(
            ErrorKind::ProviderUnavailable,
            "The provider for this model is misconfigured.",
        ),
    }
}

/// Reads a complete upstream body within the deadline and size limit.
pub(crate) async fn read_body(body: Incoming, deadline: Instant) -> Result<Bytes, ApiError> {
    let limited = Limited::new(body, MAX_UPSTREAM_BODY);
    match tokio::time::timeout_at(deadline.into(), limited.collect()).await {
        Err(_) => Err(ApiError::new(
            ErrorKind::UpstreamTimeout,
            "The upstream provider did not finish in time.",
        )),
        Ok(Err(_)) => Err(ApiError::new(
            ErrorKind::UpstreamError,
            "The upstream provider's response was cut off.",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The upstream answered with an error status. Its adapter says what that means to the client
/// (`Refusal`): an OpenAI-format client mistake passes through with its status and body;
/// anything else becomes our error — rate limits a neutral 429 with `Retry-After`.
async fn upstream_refused(
    provider: &Provider,
    meter: RequestMeter,
    response: hyper::Response<Incoming>,
    deadline: Instant,
) -> Response {
    let status = response.status();
    let retry_after = response.headers().get(http::header::RETRY_AFTER).cloned();
    let body = read_body(response.into_body(), deadline).await.unwrap_or_default();
    match provider.api.read_error(status.as_u16(), &body) {
        Refusal::PassThrough => {
            let request_id = meter.request_id.clone();
            let provider = meter.provider.clone();
            let outcome = Outcome {
                status: status.as_u16(),
                error_code: Some("upstream_rejected"),
                ..Outcome::default()
            };
            if let Err(e) = meter.finish(outcome) {
                return ErrorResponse {
                    error: e,
                    request_id: Some(request_id),
                }
                .into_response();
            }
            success(status, body, "application/json", &request_id, None, &provider)
        }
        Refusal::Error(error) => {
            let rate_limited = error.kind == ErrorKind::RateLimited;
            let mut response = fail(meter, error);
            if rate_limited {
                let retry = retry_after.unwrap_or(HeaderValue::from_static("1"));
                response.headers_mut().insert(http::header::RETRY_AFTER, retry);
            }
            response
        }
    }
}
