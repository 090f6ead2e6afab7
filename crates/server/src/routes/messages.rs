//! `POST /v1/messages` and `POST /v1/messages/count_tokens` (Anthropic's Messages API).
//!
//! The key comes as `x-api-key` or a bearer token. `anthropic-version` is not required: any
//! value (or none) is accepted, since the answer's shape is the one the SDKs of every dated
//! version read. Every refusal, the key's included, is in Anthropic's error shape.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use router_one_core::usage::Endpoint;
use router_one_core::{ApiError, ModelKind};
use router_one_providers::estimate;
use router_one_providers::request::{TopLevel, chat_view};

use crate::admission;
use crate::auth::{AnthropicInferenceKey, InferenceKey};
use crate::dialect;
use crate::dialect::messages::{self, MESSAGES};
use crate::error::ErrorResponse;
use crate::state::AppState;

/// `POST /v1/messages`: the chat pipeline, in the Messages dialect.
pub(crate) async fn create(
    State(app): State<Arc<AppState>>,
    key: Result<AnthropicInferenceKey, ErrorResponse>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match key {
        Ok(AnthropicInferenceKey(key)) => {
            dialect::serve(app, InferenceKey(key), body, Endpoint::Messages, &MESSAGES).await
        }
        Err(refusal) => dialect::refusal(refusal, &MESSAGES),
    }
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, the gateway's own estimate of the
/// prompt for the model named (the one admission reserves for: exact for OpenAI models, an
/// upper bound for the others). No upstream call, no usage record, no charge; refused exactly
/// where `/v1/messages` would refuse the model (unknown, not allowed for the key, not chat).
pub(crate) async fn count_tokens(
    State(app): State<Arc<AppState>>,
    key: Result<AnthropicInferenceKey, ErrorResponse>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let counted = match key {
        Ok(AnthropicInferenceKey(key)) => count(&app, &key, body).await,
        Err(refusal) => return dialect::refusal(refusal, &MESSAGES),
    };
    match counted {
        Ok(tokens) => axum::Json(serde_json::json!({ "input_tokens": tokens })).into_response(),
        Err(error) => dialect::refusal(ErrorResponse::from(error), &MESSAGES),
    }
}

async fn count(
    app: &AppState,
    key: &router_one_metering::KeyState,
    body: Result<Bytes, BytesRejection>,
) -> Result<u64, ApiError> {
    let body = super::body(body, app.config.max_body_bytes)?;
    let chat = messages::count_body(&body, &app.catalog)?;
    let top = TopLevel::parse(&chat)?;
    let view = chat_view(&top)?;
    key.check(&view.model, router_one_core::ids::now_us())?;
    let routed = admission::route(app, &view.model, ModelKind::Chat)?;
    let tokenizer = estimate::tokenizer_for(&routed.model.family);
    admission::load_tables(tokenizer).await;
    estimate::prompt_tokens(&top, tokenizer)
}
