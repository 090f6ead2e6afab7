//! `POST /v1/responses`: the OpenAI Responses API, served as a chat completion underneath
//! (`dialect::responses`).

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use bytes::Bytes;

use router_one_core::usage::Endpoint;

use crate::auth::InferenceKey;
use crate::dialect::{self, responses::RESPONSES};
use crate::state::AppState;

/// Authenticate → rewrite into chat → the chat pipeline → rewrite the answer.
pub(crate) async fn create(
    State(app): State<Arc<AppState>>,
    key: InferenceKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    dialect::serve(app, key, body, Endpoint::Responses, &RESPONSES).await
}
