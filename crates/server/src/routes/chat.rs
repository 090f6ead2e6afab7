//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use bytes::Bytes;

use router_one_core::usage::Endpoint;
use router_one_core::{ApiError, ModelKind};
use router_one_providers::estimate;
use router_one_providers::request::{TopLevel, chat_view};
use router_one_providers::{ChatRequest, Target};

use crate::admission::{self, OutputRequest};
use crate::auth::InferenceKey;
use crate::record::RequestMeter;
use crate::routes::upstream::{Admitted, serve_inference};
use crate::state::AppState;

/// Authenticate → admit → route → forward (call, settle, record).
pub(crate) async fn completions(
    State(app): State<Arc<AppState>>,
    key: InferenceKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve_inference(app, key, body, Endpoint::ChatCompletions, admit).await
}

fn admit(app: &AppState, meter: &mut RequestMeter, body: &Bytes) -> Result<Admitted, ApiError> {
    let top = TopLevel::parse(body)?;
    let view = chat_view(&top)?;
    meter.requested_model = view.model.clone().into_owned();
    meter.streamed = view.stream;
    meter.key.check(&view.model, meter.created_at_us)?;
    let routed = admission::route(app, &view.model, ModelKind::Chat)?;
    meter.provider.clone_from(&routed.provider.name);
    let tokenizer = estimate::tokenizer_for(&routed.model.family);
    let prompt_tokens = || estimate::prompt_tokens(&top, tokenizer);
    let output = OutputRequest {
        max_tokens: view.max_output(),
        choices: view.choices,
    };
    let output_limit = admission::reserve(app, meter, routed.model, prompt_tokens, output)?;
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
        include_usage: view.include_usage,
    })
}
