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
use router_one_metering::{KeyState, Reservation};
use router_one_providers::openai::with_cost;
use router_one_providers::{NoKey, PreparedRequest, Provider, ReadContext, Refusal, UpstreamError};

use router_one_core::telemetry::SPAN_TARGET;
use tracing::Instrument;

use crate::error::ErrorResponse;
use crate::failover::{self, MAX_ATTEMPTS};
use crate::metered::MeteredStream;
use crate::record::{Outcome, RequestMeter};
use crate::routes;
use crate::routes::receipts;
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
    /// The model's other routes, in the order to try them should this one fail before the
    /// client received a byte, with what preparing the request for them needs.
    pub(crate) fallbacks: Fallbacks,
}

/// What trying a request on another route of its model needs: the routes, and the request as
/// admission read it (its body, its model and the output limit reserved for), to prepare it for
/// each route's wire format only if that route is tried.
#[derive(Default)]
pub(crate) struct Fallbacks {
    pub(crate) routes: Vec<crate::admission::Fallback>,
    pub(crate) body: Bytes,
    pub(crate) model: Option<Arc<router_one_core::Model>>,
    pub(crate) output_limit: Option<u64>,
}

impl Fallbacks {
    /// With no other route nothing is kept (the one-route case costs nothing).
    pub(crate) fn new(
        routes: Vec<crate::admission::Fallback>,
        body: &Bytes,
        model: &Arc<router_one_core::Model>,
        output_limit: Option<u64>,
    ) -> Fallbacks {
        if routes.is_empty() {
            return Fallbacks::default();
        }
        Fallbacks {
            routes,
            body: body.clone(),
            model: Some(model.clone()),
            output_limit,
        }
    }
}

/// The start of every inference endpoint, after its key was checked (before the body was
/// read): the body, within the limit, and the request's meter, whose clock starts now. A body
/// too large or cut is refused here, before anything is metered.
pub(crate) fn metered_request(
    app: &AppState,
    key: Arc<KeyState>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<(RequestMeter, Bytes), ErrorResponse> {
    let started = Instant::now();
    let body = routes::body(body, app.config.max_body_bytes)?;
    let mut meter = RequestMeter::new(key, endpoint, started, app.config.metering, &app.usage);
    meter.drawn_on(app.leases.clone());
    if let Some(signer) = receipts::signer_for(app, endpoint) {
        meter.expect_receipt(signer.in_flight());
    }
    Ok((meter, body))
}

/// The end of every inference endpoint: an admitted request goes to its upstream (and is
/// metered and recorded even if the client hangs up first); a refusal is recorded like any
/// outcome. Either way the response carries the key's rate-limit headers.
pub(crate) async fn respond(
    app: Arc<AppState>,
    mut meter: RequestMeter,
    admitted: Result<Admitted, ApiError>,
) -> Response {
    let router_headers = meter.key().settings().router_headers;
    let rate = meter.take_rate_snapshot();
    let mut response = match admitted {
        Ok(admitted) => {
            let hung_up = meter.hung_up();
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
    if !router_headers {
        without_router_headers(response.headers_mut());
    }
    response
}

/// Drops the `x-router-one-*` headers, for a key that asked not to send them (relays copy them
/// to their own customers, naming their upstream); `x-request-id` stays, and with it the record.
fn without_router_headers(headers: &mut http::HeaderMap) {
    let ours: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(ROUTER_HEADER_PREFIX))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

/// The prefix of Router One's own response headers.
const ROUTER_HEADER_PREFIX: &str = "x-router-one-";

/// Sends an admitted request and turns the upstream's answer into the client's response. An
/// attempt that fails before the client received a byte, for the upstream's own trouble, is
/// tried again on the model's next route ([`failover`] decides, and keeps each route's health).
async fn forward(app: Arc<AppState>, mut meter: RequestMeter, admitted: Admitted) -> Response {
    let app = &app;
    let Admitted {
        provider,
        upstream_id,
        prepared,
        stream,
        include_usage,
        fallbacks,
    } = admitted;
    // Never spend upstream money on an answer whose usage record could not be kept.
    if !app.usage.is_durable() {
        return fail(meter, crate::record::usage_unavailable());
    }
    let deadline = Instant::now() + app.config.upstream_timeout;
    let mut next_routes = fallbacks.routes.iter();
    let mut route = (provider, upstream_id, prepared);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (provider, upstream_id, prepared) = route;
        // Admission named the first route already; a failover names the next.
        if attempts > 1 {
            meter.routed_to(&provider.name);
        }
        let breaker = app.health.of(&provider.name);
        breaker.attempt();
        // The time left is shared by the routes left to try: a route that hangs before its
        // head cannot use up the next route's chance.
        let routes_left = (fallbacks.routes.len() + 1)
            .min(MAX_ATTEMPTS)
            .saturating_sub(attempts - 1)
            .max(1);
        let attempt_started = Instant::now();
        let left = deadline.saturating_duration_since(attempt_started);
        let attempt = Attempt {
            provider: &provider,
            upstream_id: &upstream_id,
            prepared,
            stream,
            include_usage,
            head_deadline: attempt_started + left / u32::try_from(routes_left).unwrap_or(1),
            deadline,
        };
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            parent: meter.span(),
            "upstream_attempt",
            route = %provider.name,
            attempt = i64::try_from(attempts).unwrap_or(i64::MAX),
            "error.type" = tracing::field::Empty,
        );
        let failed = match attempt.send(app, meter).instrument(span.clone()).await {
            Ok(response) => {
                breaker.succeeded();
                return response;
            }
            Err(failed) => failed,
        };
        let Failed {
            meter: back,
            error,
            retry_after,
            cause,
        } = failed;
        meter = back;
        span.record("error.type", error.kind.code());
        drop(span);
        let retry = failover::retryable(&error);
        if retry {
            breaker.failed(retry_after.as_ref().and_then(seconds));
        }
        // The cause (connection refused, TLS, reset, a timeout, a status) is the operator's to
        // see; the client gets the error table's words only. Never a body.
        tracing::warn!(
            request_id = %meter.request_id(),
            route = %provider.name,
            attempt = attempts,
            code = error.kind.code(),
            cause = cause.as_deref().unwrap_or(&error.message),
            "upstream attempt failed"
        );
        if retry && attempts < MAX_ATTEMPTS && Instant::now() < deadline {
            // The next route this request can be prepared for (a route whose wire format
            // cannot carry it is passed over).
            let next = next_routes.by_ref().find_map(|r| {
                crate::admission::prepare_for(&fallbacks, meter.endpoint(), r)
                    .ok()
                    .map(|p| (r.provider.clone(), r.upstream_id.clone(), p))
            });
            if let Some(next) = next {
                meter.failed_over(router_one_core::usage::FailedAttempt {
                    route: provider.name.clone(),
                    error: error.kind.code().to_owned(),
                    status: error.kind.status(),
                    latency_us: u64::try_from(attempt_started.elapsed().as_micros()).unwrap_or(u64::MAX),
                });
                tracing::debug!(code = error.kind.code(), from = %provider.name, to = %next.0.name, "failing over");
                route = next;
                continue;
            }
        }
        return refused(meter, error, retry_after);
    }
}

/// A route none of whose keys can carry the request: every key rejected (the operator's to fix;
/// another route may serve), or every key at its own per-minute limit (transient).
fn no_usable_key(meter: RequestMeter, no_key: NoKey) -> Failed {
    let (error, cause) = match no_key {
        NoKey::AllRejected => (
            ApiError::new(
                ErrorKind::ProviderUnavailable,
                "The upstream provider for this model is unavailable right now; retry shortly.",
            ),
            "no upstream key: every key was rejected by the provider, or none is configured",
        ),
        NoKey::AllBusy => (
            ApiError::new(
                ErrorKind::RateLimited,
                "The upstream provider's capacity for this model is in use; retry shortly.",
            )
            .with_retry_after(1),
            "every upstream key is at its own per-minute limit",
        ),
    };
    Failed {
        cause: Some(cause.to_owned()),
        ..Failed::new(meter, error)
    }
}

/// `Retry-After` in seconds, as a duration.
fn seconds(value: &HeaderValue) -> Option<std::time::Duration> {
    let s: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(std::time::Duration::from_secs(s))
}

/// The final refusal of a request whose attempts all failed: recorded, with the upstream's
/// `Retry-After` on a rate limit.
fn refused(meter: RequestMeter, error: ApiError, retry_after: Option<HeaderValue>) -> Response {
    let rate_limited = error.kind == ErrorKind::RateLimited;
    let mut response = fail(meter, error);
    if rate_limited {
        let retry = retry_after.unwrap_or(HeaderValue::from_static("1"));
        response.headers_mut().insert(http::header::RETRY_AFTER, retry);
    }
    response
}

/// One attempt of a request on one route.
struct Attempt<'a> {
    provider: &'a Arc<Provider>,
    upstream_id: &'a str,
    prepared: PreparedRequest,
    stream: bool,
    include_usage: bool,
    /// When this attempt must have the upstream's response head.
    head_deadline: Instant,
    /// When the whole request must be done.
    deadline: Instant,
}

/// An attempt that failed before the client received anything: the meter comes back.
struct Failed {
    meter: RequestMeter,
    error: ApiError,
    retry_after: Option<HeaderValue>,
    /// What went wrong, for the log (the client sees `error` only).
    cause: Option<String>,
}

impl Failed {
    fn new(mut meter: RequestMeter, error: ApiError) -> Failed {
        // Nothing reached the client: a later attempt's first byte is the request's.
        meter.forget_first_byte();
        Failed {
            meter,
            error,
            retry_after: None,
            cause: None,
        }
    }
}

impl Attempt<'_> {
    /// Sends the request and reads or starts streaming the answer. `Ok`: the client's response
    /// (the meter is finished, or travels with the stream); `Err`: nothing reached the client.
    async fn send(self, app: &Arc<AppState>, mut meter: RequestMeter) -> Result<Response, Failed> {
        let Attempt {
            provider,
            upstream_id,
            prepared,
            stream,
            include_usage,
            head_deadline,
            deadline,
        } = self;
        let tokens = meter.reservation().map_or(0, Reservation::worst_tokens);
        let key = match provider.keys.pick(tokens) {
            Ok(key) => key,
            Err(no_key) => return Err(no_usable_key(meter, no_key)),
        };
        meter.mark_sent();
        let timeout = head_deadline.saturating_duration_since(Instant::now());
        let response = match app
            .client
            .post(provider, key, &prepared.path, prepared.body, timeout)
            .await
        {
            Ok(response) => response,
            Err(e) => {
                return Err(Failed {
                    cause: Some(e.to_string()),
                    ..Failed::new(meter, connection_error(&e))
                });
            }
        };
        if !response.status().is_success() {
            let status = response.status();
            // The provider refused this key itself: out of the rotation, reported once.
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) && key.reject() {
                tracing::error!(
                    route = %provider.name,
                    key = %key.label,
                    status = status.as_u16(),
                    "upstream key rejected by the provider: taken out of rotation until restart"
                );
            }
            return upstream_refused(provider, meter, response, deadline).await;
        }
        let context = ReadContext {
            upstream_id,
            created: u64::try_from(meter.created_at_us() / 1_000_000).unwrap_or_default(),
            hints: prepared.hints,
        };
        if stream {
            let decoder = provider.api.stream_decoder(context);
            return MeteredStream::start(app.clone(), meter, decoder, response.into_body(), include_usage)
                .await
                .map_err(|(meter, error)| Failed::new(meter, error));
        }
        meter.mark_first_byte();
        let body = match read_body(response.into_body(), deadline).await {
            Ok(body) => body,
            Err(e) => return Err(Failed::new(meter, e)),
        };
        let read = match meter.endpoint() {
            Endpoint::Embeddings => provider.api.read_embeddings(body, context),
            _ => provider.api.read_chat(body, context),
        };
        let read = match read {
            Ok(read) => read,
            Err(e) => return Err(Failed::new(meter, e)),
        };
        Ok(answered(app, meter, read).await)
    }
}

/// A complete answer read: settle, record, and the client's response with its cost and its
/// receipt (signed over the body as sent, cost included, so after the splice). The record is
/// written once the receipt is sealed, so it keeps it; a client gone meanwhile still gets its
/// record, without one (`RequestMeter`'s drop).
async fn answered(app: &AppState, mut meter: RequestMeter, read: router_one_providers::ReadResponse) -> Response {
    let request_id = meter.request_id().to_owned();
    let provider_name = meter.provider().to_owned();
    let signer = receipts::signer_for(app, meter.endpoint());
    let outcome = Outcome {
        status: 200,
        error_code: if read.usage.is_none() {
            Some("upstream_usage_missing")
        } else {
            None
        },
        served_model: read.served_model.clone(),
        usage: read.usage.unwrap_or_default(),
        refusal: None,
    };
    let record = meter.settle(outcome);
    let body = with_cost(read.body, read.usage_end, &record.cost.to_string());
    let sealing = signer.map(|signer| {
        let sha256 = router_one_receipts::body_sha256(&body);
        receipts::seal(signer, record, read.upstream_response_id.as_deref(), &sha256)
    });
    let receipt = match sealing {
        Some(sealing) => sealing.await,
        None => None,
    };
    let receipt_header = receipt.as_ref().and_then(|r| HeaderValue::from_str(&r.sent).ok());
    let sealed = meter.write(receipt.map(|r| r.kept));
    match sealed {
        Ok(_) => {
            let mut response = success(
                StatusCode::OK,
                body,
                "application/json",
                &request_id,
                read.served_model.as_deref(),
                &provider_name,
            );
            // An `x-router-one-*` header: gone with the others for a key that hides them.
            if let Some(receipt) = receipt_header {
                response
                    .headers_mut()
                    .insert(router_one_receipts::RECEIPT_HEADER, receipt);
            }
            response
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
    let request_id = meter.request_id().to_owned();
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
/// (`Refusal`): an OpenAI-format client mistake passes through with its status and body (the
/// route is up: `Ok`); anything else is our error — rate limits a neutral 429 with the
/// upstream's `Retry-After` — for [`forward`] to retry on another route or refuse.
async fn upstream_refused(
    provider: &Provider,
    meter: RequestMeter,
    response: hyper::Response<Incoming>,
    deadline: Instant,
) -> Result<Response, Failed> {
    let status = response.status();
    let retry_after = response.headers().get(http::header::RETRY_AFTER).cloned();
    let body = read_body(response.into_body(), deadline).await.unwrap_or_default();
    match provider.api.read_error(status.as_u16(), &body) {
        Refusal::PassThrough => {
            let request_id = meter.request_id().to_owned();
            let provider = meter.provider().to_owned();
            let outcome = Outcome {
                status: status.as_u16(),
                error_code: Some("upstream_rejected"),
                ..Outcome::default()
            };
            if let Err(e) = meter.finish(outcome) {
                return Ok(ErrorResponse {
                    error: e,
                    request_id: Some(request_id),
                }
                .into_response());
            }
            Ok(success(status, body, "application/json", &request_id, None, &provider))
        }
        Refusal::Error(error) => Err(Failed {
            retry_after,
            cause: Some(format!("status {}", status.as_u16())),
            ..Failed::new(meter, error)
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_router_headers_are_dropped() {
        let mut response = success(StatusCode::OK, "{}", "application/json", "req_1", Some("m-1"), "openai");
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-remaining-requests", HeaderValue::from_static("5"));
        without_router_headers(headers);
        let mut names: Vec<_> = headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["content-type", "x-ratelimit-remaining-requests", "x-request-id"]
        );
    }
}
