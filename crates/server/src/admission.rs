//! Admission: which model and provider a request goes to, and the reservation of its worst-case
//! cost. A request that cannot be paid for in the worst case is refused before it is sent.

use std::sync::Arc;

use router_one_core::{ApiError, ErrorKind, Model, ModelKind, Usd};
use router_one_metering::Reservation;
use router_one_providers::Provider;

use crate::record::RequestMeter;
use crate::state::AppState;

/// The catalog model, its chosen provider channel and the upstream model id.
pub(crate) struct Routed<'a> {
    pub(crate) model: &'a Arc<Model>,
    pub(crate) provider: Arc<Provider>,
    pub(crate) upstream_id: &'a str,
}

/// Finds the model and the first configured provider channel serving it. Every route of a model
/// serves the same upstream model, so the choice never changes what is served (promise 1).
pub(crate) fn route<'a>(app: &'a AppState, model_id: &str, kind: ModelKind) -> Result<Routed<'a>, ApiError> {
    let model = app.catalog.get(model_id).ok_or_else(|| {
        ApiError::new(
            ErrorKind::ModelNotFound,
            format!("The model `{model_id}` does not exist. GET /v1/models lists them."),
        )
        .with_param("model")
    })?;
    if model.kind != kind {
        let wanted = match kind {
            ModelKind::Chat => "a chat model",
            ModelKind::Embedding => "an embedding model",
        };
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("The model `{model_id}` is not {wanted}."),
        )
        .with_param("model"));
    }
    model
        .routes
        .iter()
        .find_map(|r| {
            app.providers.get(&r.provider).map(|p| Routed {
                model,
                provider: p.clone(),
                upstream_id: &r.upstream_id,
            })
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::ProviderUnavailable,
                format!("No provider is configured for the model `{model_id}`."),
            )
        })
}

/// Reserves the worst case of a request whose body is `body_len` bytes and which may produce
/// up to `max_output` tokens (`None`: the model's maximum).
///
/// The prompt bound is the body's length in bytes: every text token is at least one byte of
/// the JSON that carries it. (Token-exact estimates arrive with the metering issue.)
pub(crate) fn reserve(
    meter: &mut RequestMeter,
    model: &Model,
    body_len: usize,
    max_output: Option<u64>,
) -> Result<(), ApiError> {
    let output = max_output.unwrap_or(model.max_output).min(model.max_output.max(1));
    let worst = model
        .rates()
        .worst_case(body_len as u64, output)
        .unwrap_or(Usd::from_units(i64::MAX));
    meter.reservation = Some(Reservation::new(meter.key.clone(), worst)?);
    meter.rates = Some(model.rates());
    Ok(())
}
