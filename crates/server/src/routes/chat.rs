//! `POST /v1/chat/completions`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;

use router_one_core::usage::Endpoint;
use router_one_core::{ApiError, ModelKind};
use router_one_providers::request::{TopLevel, chat_view};
use router_one_providers::{ChatRequest, PreparedRequest, Provider};

use crate::admission;
use crate::auth;
use crate::error::ErrorResponse;
use crate::record::RequestMeter;
use crate::routes;
use crate::routes::upstream::{fail, forward};
use crate::state::AppState;

/// Authenticate → admit → route → forward (call, settle, record).
pub(crate) async fn completions(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match routes::body(body, app.config.max_body_bytes) {
        Ok(body) => body,
        Err(e) => return ErrorResponse::from(e).into_response(),
    };
    let key = match auth::inference_key(&app, &headers).await {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let mut meter = RequestMeter::new(key, Endpoint::ChatCompletions, started);
    match admit(&app, &mut meter, &body) {
        Ok(Admitted {
            provider,
            prepared,
            stream,
            include_usage,
        }) => forward(&app, meter, provider, prepared, stream, include_usage).await,
        Err(e) => fail(&app, meter, e),
    }
}

struct Admitted {
    provider: Arc<Provider>,
    prepared: PreparedRequest,
    stream: bool,
    include_usage: bool,
}

fn admit(app: &AppState, meter: &mut RequestMeter, body: &Bytes) -> Result<Admitted, ApiError> {
    let top = TopLevel::parse(body)?;
    let view = chat_view(&top)?;
    meter.requested_model = view.model.clone().into_owned();
    meter.streamed = view.stream;
    meter.key.check(&view.model, meter.created_at_us)?;
    let routed = admission::route(app, &view.model, ModelKind::Chat)?;
    meter.provider.clone_from(&routed.provider.name);
    admission::reserve(meter, routed.model, body.len(), view.max_output)?;
    let request = ChatRequest {
        body,
        top: &top,
        view: &view,
    };
    let prepared = routed.provider.api.prepare_chat(&request, routed.upstream_id)?;
    Ok(Admitted {
        provider: routed.provider,
        prepared,
        stream: view.stream,
        include_usage: view.include_usage,
    })
}
