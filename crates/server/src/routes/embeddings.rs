//! `POST /v1/embeddings`.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use router_one_core::usage::Endpoint;
use router_one_core::{ApiError, ErrorKind, ModelKind};
use router_one_providers::Target;
use router_one_providers::estimate;
use router_one_providers::request::{TopLevel, model_field};

use tracing::Instrument;

use crate::admission::{self, OutputRequest};
use crate::auth::InferenceKey;
use crate::record::RequestMeter;
use crate::routes::upstream::{self, Admitted, Fallbacks};
use crate::state::AppState;

/// Authenticate (the extractor, before the body is read) → read the body → admit (validate,
/// route, reserve, prepare) → respond (forward, settle, record).
pub(crate) async fn create(
    State(app): State<Arc<AppState>>,
    InferenceKey(key): InferenceKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (mut meter, body) = match upstream::metered_request(&app, key, body, Endpoint::Embeddings) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let span = meter.admission_span();
    let admitted = admit(&app, &mut meter, &body).instrument(span).await;
    upstream::respond(app, meter, admitted).await
}

async fn admit(app: &AppState, meter: &mut RequestMeter, body: &Bytes) -> Result<Admitted, ApiError> {
    let top = TopLevel::parse(body)?;
    let model = model_field(&top)?;
    meter.asked_for(&model, false);
    if top.get("input").is_none() {
        return Err(
            ApiError::new(ErrorKind::InvalidRequest, "Missing required parameter: 'input'.").with_param("input"),
        );
    }
    meter.key().check(&model, meter.created_at_us())?;
    let routed = admission::route(app, &model, ModelKind::Embedding)?;
    meter.routed_to(&routed.provider.name);
    admission::reserve(
        app,
        meter,
        &routed,
        |tokenizer| estimate::embedding_tokens(&top, tokenizer),
        OutputRequest {
            max_tokens: Some(0),
            choices: 1,
        },
    )
    .await?;
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
        fallbacks: Fallbacks::new(routed.fallbacks, body, routed.model, None),
    })
}
