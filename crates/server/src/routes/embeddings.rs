//! `POST /v1/embeddings`.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use bytes::Bytes;

use router_one_core::usage::Endpoint;
use router_one_core::{ApiError, ErrorKind, ModelKind};
use router_one_providers::Target;
use router_one_providers::estimate;
use router_one_providers::request::{TopLevel, model_field};

use crate::admission::{self, OutputRequest};
use crate::auth::InferenceKey;
use crate::record::RequestMeter;
use crate::routes::upstream::{Admitted, serve_inference};
use crate::state::AppState;

/// Authenticate → admit → route → forward (call, settle, record).
pub(crate) async fn create(
    State(app): State<Arc<AppState>>,
    key: InferenceKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve_inference(app, key, body, Endpoint::Embeddings, admit).await
}

fn admit(app: &AppState, meter: &mut RequestMeter, body: &Bytes) -> Result<Admitted, ApiError> {
    let top = TopLevel::parse(body)?;
    let model = model_field(&top)?;
    meter.requested_model = model.clone().into_owned();
    if top.get("input").is_none() {
        return Err(
            ApiError::new(ErrorKind::InvalidRequest, "Missing required parameter: 'input'.").with_param("input"),
        );
    }
    meter.key.check(&model, meter.created_at_us)?;
    let routed = admission::route(app, &model, ModelKind::Embedding)?;
    meter.provider.clone_from(&routed.provider.name);
    let tokenizer = estimate::tokenizer_for(&routed.model.family);
    admission::reserve(
        app,
        meter,
        routed.model,
        || estimate::embedding_tokens(&top, tokenizer),
        OutputRequest {
            max_tokens: Some(0),
            choices: 1,
        },
    )?;
    let target = Target {
        model: routed.model,
        upstream_id: routed.upstream_id,
        output_limit: None,
    };
    let prepared = routed.provider.api.prepare_embeddings(&top, target)?;
    Ok(Admitted {
        upstream_id: routed.upstream_id.to_owned(),
        provider: routed.provider,
        prepared,
        stream: false,
        include_usage: false,
    })
}
