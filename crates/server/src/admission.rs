//! Admission: which model and provider a request goes to, its key's rate limits, and the
//! reservation of its worst-case cost. A request over a limit, or that cannot be paid for in the
//! worst case, is refused before it is sent; one that names no `max_tokens` is clamped to what
//! remains.

use std::sync::Arc;

use std::time::Instant;

use router_one_core::{ApiError, ErrorKind, Model, ModelKind};
use router_one_metering::Reservation;
use router_one_metering::rate::{OutputAsk, TokenAsk};
use router_one_metering::reservation::CostAsk;
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

/// The fewest output tokens worth sending a request with when it names no `max_tokens` and its
/// output is clamped to what remains: below this, the request is refused instead.
pub(crate) const MIN_OUTPUT_TOKENS: u64 = 16;

/// What a request may produce, as the client asked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputRequest {
    /// The client's output limit per choice (`None`: it named none, and the model's default
    /// applies, clamped to what can be paid for).
    pub(crate) max_tokens: Option<u64>,
    /// How many choices the upstream generates, each up to that limit (`n`).
    pub(crate) choices: u64,
}

/// Admits a request with an upper bound of `prompt_tokens`: the key's rate limits first
/// (transient), then its money (promise 3, in `metering`). Returns the output limit per choice
/// that was reserved for, which is what the upstream must be sent: the client's limit within the
/// model's maximum, or — when it named none — the model's default output, clamped to what the
/// key, its account and its TPM window can still pay for.
pub(crate) fn reserve(
    app: &AppState,
    meter: &mut RequestMeter,
    model: &Model,
    prompt_tokens: impl FnOnce() -> Result<u64, ApiError>,
    request: OutputRequest,
) -> Result<u64, ApiError> {
    let default_output = model
        .default_output
        .unwrap_or(app.config.default_output_tokens)
        .min(model.max_output);
    let mut output = match request.max_tokens {
        Some(n) => OutputAsk::Exactly(n.min(model.max_output)),
        None => OutputAsk::UpTo {
            max: default_output,
            min: MIN_OUTPUT_TOKENS.min(default_output),
        },
    };
    if !meter.metering {
        return Ok(output.most());
    }
    let prompt_tokens = prompt_tokens()?;
    let choices = request.choices.max(1);
    let limits = meter.key.rate_limits();
    if limits.is_limited() {
        // The window counts every choice's tokens; the grant is shared out per choice.
        let ask = TokenAsk {
            prompt: prompt_tokens,
            output: output.times(choices),
        };
        match app.limiter.acquire(&meter.key.id, &limits, ask, Instant::now()) {
            Ok(grant) => {
                if let OutputAsk::UpTo { min, .. } = output {
                    output = OutputAsk::UpTo {
                        max: grant.granted_output() / choices,
                        min,
                    };
                }
                meter.rate_snapshot = Some(*grant.snapshot());
                meter.rate = Some(grant);
            }
            Err(refusal) => {
                meter.rate_snapshot = Some(refusal.snapshot);
                return Err(ApiError::new(ErrorKind::RateLimited, refusal.message())
                    .with_retry_after(refusal.retry_after_secs()));
            }
        }
    }
    let ask = CostAsk {
        rates: model.rates(),
        prompt_tokens,
        output,
        choices,
        context_window: model.context_window,
    };
    let reservation = Reservation::new(meter.key.clone(), ask, meter.created_at_us)?;
    let granted = reservation.output_tokens();
    if let Some(grant) = meter.rate.as_mut() {
        grant.shrink_output(granted.saturating_mul(choices));
        meter.rate_snapshot = Some(*grant.snapshot());
    }
    meter.reservation = Some(reservation);
    Ok(granted)
}
