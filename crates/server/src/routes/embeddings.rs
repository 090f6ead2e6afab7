//! `POST /v1/embeddings`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;

use router_one_core::usage::Endpoint;
use router_one_core::{ApiError, ErrorKind, ModelKind};
use router_one_providers::request::{TopLevel, model_field};
use router_one_providers::{PreparedRequest, Provider};

use crate::admission;
use crate::auth;
use crate::error::ErrorResponse;
use crate::record::RequestMeter;
use crate::routes;
use crate::routes::upstream::{fail, forward};
use crate::state::AppState;

/// Authenticate → admit → route → forward (call, settle, record).
pub(crate) async fn create(
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
    let mut meter = RequestMeter::new(key, Endpoint::Embeddings, started);
    match admit(&app, &mut meter, &body) {
        Ok((provider, prepared)) => forward(&app, meter, provider, prepared, false, false).await,
        Err(e) => fail(&app, meter, e),
    }
}

fn admit(app: &AppState, meter: &mut RequestMeter, body: &Bytes) -> Result<(Arc<Provider>, PreparedRequest), ApiError> {
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
    admission::reserve(meter, routed.model, body.len(), Some(0))?;
    let prepared = routed.provider.api.prepare_embeddings(&top, routed.upstream_id)?;
    Ok((routed.provider, prepared))
}
