//! Admission: which model and provider a request goes to, its key's rate limits, and the
//! reservation of its worst-case cost. A request over a limit, or that cannot be paid for in the
//! worst case, is refused before it is sent; one that names no `max_tokens` is clamped to what
//! remains, and so is one whose `max_tokens` cannot be paid for while a smaller limit can (or it
//! is refused with a 400 naming the limit that fits, as its key's `on_oversized_max_tokens` says).

use std::sync::Arc;

use std::time::Instant;

use router_one_core::store::{KeySettings, OversizedMaxTokens};
use router_one_core::{ApiError, ErrorKind, Model, ModelKind};
use router_one_metering::Reservation;
use router_one_metering::rate::{OutputAsk, RefillFuture, TokenAsk};
use router_one_metering::reservation::CostAsk;
use router_one_providers::Provider;
use router_one_providers::estimate::{self, Tokenizer};

use crate::leases::REFILL_WAIT;
use crate::record::RequestMeter;
use crate::routes::upstream::Fallbacks;
use crate::state::AppState;

/// The catalog model, its chosen provider channel and the upstream model id.
pub(crate) struct Routed<'a> {
    pub(crate) model: &'a Arc<Model>,
    pub(crate) provider: Arc<Provider>,
    pub(crate) upstream_id: &'a str,
    /// The model's other routes, in the order to try them (`failover`).
    pub(crate) fallbacks: Vec<Fallback>,
}

/// Another route of the same model.
pub(crate) struct Fallback {
    pub(crate) provider: Arc<Provider>,
    pub(crate) upstream_id: String,
}

/// The request prepared for a fallback route's wire format (only when that route is tried):
/// the body admission read, parsed again, for the same model and output limit.
pub(crate) fn prepare_for(
    fallbacks: &Fallbacks,
    endpoint: router_one_core::usage::Endpoint,
    route: &Fallback,
) -> Result<router_one_providers::PreparedRequest, ApiError> {
    use router_one_providers::request::{TopLevel, chat_view};
    let model = fallbacks
        .model
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorKind::Internal, "no model to fail over for"))?;
    let top = TopLevel::parse(&fallbacks.body)?;
    let target = router_one_providers::Target {
        model,
        upstream_id: &route.upstream_id,
        output_limit: fallbacks.output_limit,
    };
    match endpoint {
        router_one_core::usage::Endpoint::Embeddings => route.provider.api.prepare_embeddings(&top, target),
        _ => {
            let view = chat_view(&top)?;
            let request = router_one_providers::ChatRequest {
                body: &fallbacks.body,
                top: &top,
                view: &view,
            };
            route.provider.api.prepare_chat(&request, target)
        }
    }
}

/// Finds the model and the provider channels serving it: the first to try, and the rest in
/// the order to fail over to (`failover::Health::order`: configured order, routes with an open
/// breaker last). Every route of a model serves the same upstream model at the same posted
/// rate, so the choice never changes what is served or billed (promise 1).
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
    let unavailable = || {
        ApiError::new(
            ErrorKind::ProviderUnavailable,
            format!("No provider is configured for the model `{model_id}`."),
        )
    };
    // One route (the usual case): nothing to order, nothing allocated.
    if let [only] = model.routes.as_slice() {
        let provider = app.providers.get(&only.provider).ok_or_else(unavailable)?;
        return Ok(Routed {
            model,
            provider: provider.clone(),
            upstream_id: &only.upstream_id,
            fallbacks: Vec::new(),
        });
    }
    let mut routes: Vec<(&Arc<Provider>, &'a str)> = model
        .routes
        .iter()
        .filter_map(|r| app.providers.get(&r.provider).map(|p| (p, r.upstream_id.as_str())))
        .collect();
    app.health.order(&mut routes, |r| r.0);
    let mut routes = routes.into_iter();
    let (provider, upstream_id) = routes.next().ok_or_else(unavailable)?;
    Ok(Routed {
        model,
        provider: provider.clone(),
        upstream_id,
        fallbacks: routes
            .map(|(provider, upstream_id)| Fallback {
                provider: provider.clone(),
                upstream_id: upstream_id.to_owned(),
            })
            .collect(),
    })
}

/// The most grants one request waits for before it is answered from what the node holds.
const MAX_REFILLS: u8 = 4;

/// The fewest output tokens worth sending a request with when it names no `max_tokens` and its
/// output is clamped to what remains: below this, the request is refused instead.
pub(crate) const MIN_OUTPUT_TOKENS: u64 = 16;

/// On a cluster node a money refusal may not mean a used-up budget: while the database cannot
/// be reached for a grant it is a 503 `billing_unavailable` (nothing is used up; relays must not
/// disable the channel), and while other nodes hold money of the same budget (their requests in
/// flight, or shares they have not given back yet) it is transient, like money held by requests
/// in flight on one node: 429 with `Retry-After`, never a 402.
fn held_elsewhere(app: &AppState, meter: &RequestMeter, refusal: ApiError) -> ApiError {
    let Some(leases) = &app.leases else {
        return refusal;
    };
    if leases.unreachable(meter.key(), meter.created_at_us()) {
        return ApiError::new(
            ErrorKind::BillingUnavailable,
            "This gateway node cannot reach its billing database to cover this request; retry shortly.",
        )
        .with_retry_after(5);
    }
    if refusal.kind != ErrorKind::InsufficientQuota || !leases.held_elsewhere(meter.key(), meter.created_at_us()) {
        return refusal;
    }
    ApiError::new(
        ErrorKind::RateLimited,
        "Requests in flight on other gateway nodes hold what this request needs; retry when they finish.",
    )
    .with_retry_after(1)
    .refused_by(refusal.refusal.unwrap_or(router_one_core::error::REFUSED_BY_BUDGET))
}

/// A reservation clamped below the client's `max_tokens` (`asked`), kept or refused as the key's
/// `on_oversized_max_tokens` says. The refusal is a client error naming the fix, worded so that
/// no relay reads it as a dead channel (no "credit", "balance" or "quota").
fn oversized(settings: &KeySettings, asked: u64, reservation: Reservation) -> Result<Reservation, ApiError> {
    let fits = reservation.output_tokens();
    if fits >= asked || settings.on_oversized_max_tokens == OversizedMaxTokens::Clamp {
        return Ok(reservation);
    }
    Err(ApiError::new(
        ErrorKind::InvalidRequest,
        format!(
            "max_tokens is {asked}, but what is left to spend on this API key and its account pays for at most \
             {fits} output tokens with this prompt; lower max_tokens to {fits} or less, or leave it out."
        ),
    )
    .with_param("max_tokens"))
}

/// What a request may produce, as the client asked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputRequest {
    /// The client's output limit per choice (`None`: it named none, and the model's default
    /// applies, clamped to what can be paid for).
    pub(crate) max_tokens: Option<u64>,
    /// How many choices the upstream generates, each up to that limit (`n`).
    pub(crate) choices: u64,
}

/// Admits a request with an upper bound of its prompt's tokens (`count` counts them with the
/// tokenizer it is given; [`prompt_bound`] picks which): the key's rate limits first
/// (transient), then its money (promise 3, in `metering`). Returns the output limit per choice
/// that was reserved for, which is what the upstream must be sent: the client's limit within the
/// model's maximum (clamped to what the key and its account can still pay for, unless the key
/// refuses instead), or — when it named none — the model's default output, clamped to what the
/// key, its account and its TPM window can still pay for.
pub(crate) async fn reserve(
    app: &AppState,
    meter: &mut RequestMeter,
    routed: &Routed<'_>,
    count: impl Fn(Tokenizer) -> Result<u64, ApiError>,
    request: OutputRequest,
) -> Result<u64, ApiError> {
    let model: &Model = routed.model;
    let default_output = model
        .default_output
        .unwrap_or(app.config.default_output_tokens)
        .min(model.max_output);
    let output = match request.max_tokens {
        Some(n) => OutputAsk::Exactly(n.min(model.max_output)),
        None => OutputAsk::UpTo {
            max: default_output,
            min: MIN_OUTPUT_TOKENS.min(default_output),
        },
    };
    if !meter.is_metered() {
        return Ok(output.most());
    }
    // An isolated cluster node cannot know whether this key was revoked elsewhere.
    if let Some(fence) = &app.fence {
        fence.check()?;
    }
    let prompt_tokens = prompt_bound(meter, routed, count, output.most(), request.choices).await?;
    // A cluster node's shares of a shared budget or limit may run short: it waits for a grant
    // (its slow path, bounded), then tries again; after a few rounds a shortfall is a refusal.
    let mut refills: u8 = 0;
    loop {
        let waiting = refills < MAX_REFILLS;
        match try_reserve(app, meter, model, prompt_tokens, output, request, waiting) {
            Tried::Reserved(limit) => return Ok(limit),
            Tried::Refused(refusal) => return Err(refusal),
            Tried::Wait(refill) => {
                refills += 1;
                let _ = tokio::time::timeout(REFILL_WAIT, refill).await;
            }
        }
    }
}

/// The byte bound is used only when its worst case is at most this fraction of what the key and
/// its account each have left (see [`prompt_bound`]).
const BOUND_SHARE: i64 = 64;

/// The upper bound of the prompt's tokens that admission reserves for. For OpenAI models the
/// exact count needs `o200k_base`: about 46 MiB of tables, built on first use (~300 ms, off the
/// async workers), and ~1.5 ms per 16 KB of text. Its byte bound ([`Tokenizer::bound`]) needs
/// neither and is never below it. Admission takes the byte bound where the exact count could
/// change no outcome:
/// - neither the key nor any route's upstream keys have a tokens-per-minute limit (token
///   windows are charged the bound itself, so a looser one would fill them sooner);
/// - the bound is within the model's context window (settlement clamps a prompt report to the
///   larger of the two, so the clamp is the same);
/// - its worst case, with the whole output asked for, is at most 1/[`BOUND_SHARE`] of what the
///   key and its account each have left: the output would not have been clamped with the exact
///   count either, and what the request holds while in flight is a sliver of what is left.
///
/// What still differs: such a request holds a little more money while in flight, and a report
/// costing more than the exact count's reservation but no more than the bound's is billed as
/// reported instead of capped (never above what was reserved: promise 3 holds either way).
async fn prompt_bound(
    meter: &RequestMeter,
    routed: &Routed<'_>,
    count: impl Fn(Tokenizer) -> Result<u64, ApiError>,
    output: u64,
    choices: u64,
) -> Result<u64, ApiError> {
    let tokenizer = estimate::tokenizer_for(&routed.model.family);
    if !tokenizer.needs_tables() {
        return count(tokenizer);
    }
    // A token window needs the exact count whatever the bound: count once, exactly.
    if !counts_tokens(meter, routed) {
        let bound = count(tokenizer.bound())?;
        if bound_is_enough(meter, routed, bound, output, choices) {
            return Ok(bound);
        }
    }
    load_tables(tokenizer).await;
    count(tokenizer)
}

/// Whether a tokens-per-minute window (the key's, or an upstream key's on any route) is charged
/// the request's prompt bound.
fn counts_tokens(meter: &RequestMeter, routed: &Routed<'_>) -> bool {
    meter.key().rate_limits().tpm.is_some()
        || routed.provider.keys.counts_tokens()
        || routed.fallbacks.iter().any(|f| f.provider.keys.counts_tokens())
}

/// Whether the byte bound reserves what the exact count would (see [`prompt_bound`]): within the
/// context window, and its worst case a sliver of what the key and its account have left.
fn bound_is_enough(meter: &RequestMeter, routed: &Routed<'_>, bound: u64, output: u64, choices: u64) -> bool {
    let key = meter.key();
    if bound > routed.model.context_window {
        return false;
    }
    let Some(worst) = routed
        .model
        .rates()
        .worst_case(bound, output.saturating_mul(choices.max(1)))
    else {
        return false;
    };
    let now_us = meter.created_at_us();
    let roomy = |left: Option<router_one_core::Usd>| {
        left.is_none_or(|left| worst.units().saturating_mul(BOUND_SHARE) <= left.units())
    };
    roomy(key.spend.available_at(now_us)) && roomy(key.account.available_at(now_us))
}

/// Builds the tables `tokenizer` counts with, if it needs them and they are not built yet, on a
/// blocking thread: the first exact count must not stall an async worker for ~300 ms.
pub(crate) async fn load_tables(tokenizer: Tokenizer) {
    if tokenizer.needs_tables() && !estimate::is_loaded() {
        // Should the blocking pool be gone (shutdown), the count builds them inline instead.
        let _ = tokio::task::spawn_blocking(estimate::warm_up).await;
    }
}

/// One try at [`reserve`].
enum Tried {
    /// Admitted: the output limit per choice reserved for.
    Reserved(u64),
    Refused(ApiError),
    /// This node's share ran short: wait for this grant, then try again.
    Wait(RefillFuture),
}

fn try_reserve(
    app: &AppState,
    meter: &mut RequestMeter,
    model: &Model,
    prompt_tokens: u64,
    mut output: OutputAsk,
    request: OutputRequest,
    may_wait: bool,
) -> Tried {
    let choices = request.choices.max(1);
    let ask = |output| CostAsk {
        rates: model.rates(),
        prompt_tokens,
        output,
        choices,
        context_window: model.context_window,
    };
    // A cluster node reserves against its leased shares: if they cannot cover the worst case,
    // the request waits for a grant before anything is counted.
    if let Some(leases) = &app.leases
        && may_wait
        && let Some(need) = ask(output).worst_case()
        && leases.needs_refill(meter.key(), need, meter.created_at_us())
    {
        // The smallest answer it could still get (its output clamped) is enough to take.
        let least = ask(OutputAsk::Exactly(MIN_OUTPUT_TOKENS.min(output.most())))
            .worst_case()
            .unwrap_or(need);
        let (book, key) = (leases.clone(), meter.key().clone());
        return Tried::Wait(Box::pin(async move { book.refill(key, need, least).await }));
    }
    let limits = meter.key().rate_limits();
    if limits.is_limited() {
        // The window counts every choice's tokens; the grant is shared out per choice.
        let tokens = TokenAsk {
            prompt: prompt_tokens,
            output: output.times(choices),
        };
        match app.limiter.acquire(&meter.key().id, &limits, tokens, Instant::now()) {
            Ok(grant) => {
                if let OutputAsk::UpTo { min, .. } = output {
                    output = OutputAsk::UpTo {
                        max: grant.granted_output() / choices,
                        min,
                    };
                }
                meter.granted(grant);
            }
            Err(refusal) => {
                meter.rate_refused(refusal.snapshot);
                // Refused only because this node's slice of a shared limit ran short: one
                // refill, then the request is admitted or refused for good.
                if refusal.refillable
                    && may_wait
                    && let Some(refill) = app.limiter.refill(&meter.key().id, &limits, tokens)
                {
                    return Tried::Wait(refill);
                }
                return Tried::Refused(
                    ApiError::new(ErrorKind::RateLimited, refusal.message())
                        .with_retry_after(refusal.retry_after_secs())
                        .refused_by(router_one_core::error::REFUSED_BY_RATE_LIMIT),
                );
            }
        }
    }
    let reserved = match output {
        // The client's own limit: clamped to what can be paid for, never a 402 while a smaller
        // answer fits (relays disable a channel on a 402).
        OutputAsk::Exactly(asked) if request.max_tokens.is_some() => Reservation::new_or_smaller(
            meter.key().clone(),
            ask(output),
            MIN_OUTPUT_TOKENS,
            meter.created_at_us(),
        )
        .and_then(|reservation| oversized(&meter.key().settings(), asked, reservation)),
        _ => Reservation::new(meter.key().clone(), ask(output), meter.created_at_us()),
    };
    let reservation = match reserved {
        Ok(reservation) => reservation,
        Err(refusal) => return Tried::Refused(held_elsewhere(app, meter, refusal)),
    };
    if let Some(leases) = &app.leases {
        leases.prefetch(meter.key(), reservation.amount(), meter.created_at_us());
    }

    let granted = reservation.output_tokens();
    meter.shrink_rate_output(granted.saturating_mul(choices));
    meter.hold(reservation);
    Tried::Reserved(granted)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use router_one_core::store::ApiKey;
    use router_one_core::{PostedRates, Usd};
    use router_one_metering::KeyIndex;
    use router_one_metering::reservation::CostAsk;
    use rust_decimal::Decimal;

    /// A key with 30 output tokens left (at $10 per 1M output tokens), its option as given.
    fn clamped(option: OversizedMaxTokens, asked: u64) -> Result<Reservation, ApiError> {
        let settings = KeySettings {
            max_spend: Some(Usd::from_units(30 * 100_000)),
            on_oversized_max_tokens: option,
            ..KeySettings::default()
        };
        let key = ApiKey {
            id: "key_1".into(),
            account_id: "acct_1".into(),
            secret_hash: "h".into(),
            hint: String::new(),
            settings: settings.clone(),
            created_at_us: 0,
            revoked_at_us: None,
            spend: Usd::ZERO,
        };
        let key = KeyIndex::default().insert(&key, Usd::from_units(1_000_000_000), 0, Usd::ZERO, 0);
        let ask = CostAsk {
            rates: PostedRates {
                input_per_mtok: Decimal::ZERO,
                cached_input_per_mtok: Decimal::ZERO,
                cache_write_per_mtok: Decimal::ZERO,
                output_per_mtok: Decimal::from(10),
            },
            prompt_tokens: 0,
            output: OutputAsk::Exactly(asked),
            choices: 1,
            context_window: 1_000,
        };
        let reservation = Reservation::new_or_smaller(key, ask, MIN_OUTPUT_TOKENS, 0)?;
        oversized(&settings, asked, reservation)
    }

    #[test]
    fn an_oversized_max_tokens_is_clamped_or_refused_with_the_limit_that_fits() {
        assert_eq!(clamped(OversizedMaxTokens::Clamp, 100).unwrap().output_tokens(), 30);
        assert_eq!(clamped(OversizedMaxTokens::Refuse, 30).unwrap().output_tokens(), 30);
        let refusal = clamped(OversizedMaxTokens::Refuse, 100).err().unwrap();
        assert_eq!(
            (refusal.kind.status(), refusal.kind.code(), refusal.param.as_deref()),
            (400, "invalid_request", Some("max_tokens"))
        );
        assert!(
            refusal.message.contains("lower max_tokens to 30"),
            "{}",
            refusal.message
        );
        // one-api and new-api disable a channel whose message says these.
        for word in ["credit", "balance", "quota", "permission"] {
            assert!(!refusal.message.to_lowercase().contains(word), "{}", refusal.message);
        }
    }
}
