//! `GET /v1/models`: OpenAI's list format, each model with its posted pricing and limits; only
//! the models the calling key may use (a relay fills its channel's model list from it).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use router_one_core::Model;
use serde_json::{Value, json};

use crate::auth::ActiveInferenceKey;
use crate::state::AppState;

/// Lists every catalog model the key may use, with its rates (USD per 1M tokens, decimal strings).
pub(crate) async fn list(State(app): State<Arc<AppState>>, ActiveInferenceKey(key): ActiveInferenceKey) -> Response {
    let settings = key.settings();
    let data: Vec<_> = app
        .catalog
        .models()
        .iter()
        .filter(|m| settings.allows_model(&m.id))
        .map(|m| model_json(m))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// One model as `GET /v1/models` shows it (and the console's models page): its posted rates
/// (USD per 1M tokens, decimal strings), limits, capabilities and providers.
pub(crate) fn model_json(m: &Model) -> Value {
    json!({
        "id": m.id,
        "object": "model",
        "created": 0,
        "owned_by": m.family,
        "kind": m.kind,
        "context_window": m.context_window,
        "max_output": m.max_output,
        "pricing": {
            "currency": "USD",
            "unit": "1M tokens",
            "input_per_mtok": m.input_per_mtok.normalize().to_string(),
            "cached_input_per_mtok": m.cached_input_per_mtok.normalize().to_string(),
            "cache_write_per_mtok": m.cache_write_rate().normalize().to_string(),
            "output_per_mtok": m.output_per_mtok.normalize().to_string(),
        },
        "capabilities": { "tools": m.tools, "vision": m.vision, "reasoning": m.reasoning },
        "providers": m.routes.iter().map(|r| r.provider.as_str()).collect::<Vec<_>>(),
    })
}
