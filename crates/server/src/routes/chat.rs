//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use router_one_core::usage::Endpoint;
use router_one_core::{ApiError, ModelKind};
use router_one_providers::estimate;
use router_one_providers::request::{TopLevel, chat_view};
use router_one_providers::{ChatRequest, Target};

use tracing::Instrument;

use crate::admission::{self, OutputRequest};
use crate::auth::InferenceKey;
use crate::record::RequestMeter;
use crate::routes::upstream::{self, Admitted, Fallbacks};
use crate::state::AppState;

/// Authenticate (the extractor, before the body is read) → read the body → admit (validate,
/// route, reserve, prepare) → respond (forward, settle, record).
pub(crate) async fn completions(
    State(app): State<Arc<AppState>>,
    InferenceKey(key): InferenceKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (mut meter, body) = match upstream::metered_request(&app, key, body, Endpoint::ChatCompletions) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let span = meter.admission_span();
    let admitted = admit(&app, &mut meter, &body).instrument(span).await;
    upstream::respond(app, meter, admitted).await
}

/// Admits an OpenAI chat body (the client's, or a dialect's rewritten into chat).
pub(crate) async fn admit(app: &AppState, meter: &mut RequestMeter, body: &Bytes) -> Result<Admitted, ApiError> {
    let top = TopLevel::parse(body)?;
    let view = chat_view(&top)?;
    meter.asked_for(&view.model, view.stream);
    meter.key().check(&view.model, meter.created_at_us())?;
    let routed = admission::route(app, &view.model, ModelKind::Chat)?;
    meter.routed_to(&routed.provider.name);
    let prompt_tokens = |tokenizer| estimate::prompt_tokens(&top, tokenizer);
    let output = OutputRequest {
        max_tokens: view.max_output(),
        choices: view.choices,
    };
    let output_limit = admission::reserve(app, meter, &routed, prompt_tokens, output).await?;
    let request = ChatRequest {
        body,
        top: &top,
        view: &view,
    };
    let target = Target {
        model: routed.model,
        upstream_id: routed.upstream_id,
        output_limit: Some(output_limit),
    };
    let prepared = routed.provider.api.prepare_chat(&request, target)?;
    Ok(Admitted {
        upstream_id: routed.upstream_id.to_owned(),
        provider: routed.provider,
        prepared,
        stream: view.stream,
        // A relay that never asks for usage still gets the exact counts, if its key says so.
        include_usage: view.include_usage || meter.key().settings().always_include_usage,
        fallbacks: Fallbacks::new(routed.fallbacks, body, routed.model, Some(output_limit)),
    })
}
