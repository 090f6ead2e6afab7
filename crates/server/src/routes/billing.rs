//! `GET /v1/dashboard/billing/subscription` and `GET /v1/dashboard/billing/usage`: the probes
//! one-api / new-api relays send to an OpenAI-type channel to show its remaining budget, answered
//! for the calling inference key in the shape they read: `hard_limit_usd` (USD) and
//! `total_usage` (US cents); the relay shows `hard_limit_usd − total_usage / 100`, which here is
//! exactly what the key can still spend (its own budget and its account's balance, whichever is
//! less). Amounts are written as exact decimal literals, never through a float. A revoked or
//! expired key gets the 401 inference would give it.

use axum::response::{IntoResponse, Response};
use http::HeaderValue;

use router_one_core::Usd;
use router_one_metering::KeyState;

use crate::auth::ActiveInferenceKey;

/// What the key has spent (in its current period, if it has one) and can still spend.
fn standing(key: &KeyState) -> (Usd, Usd) {
    let now_us = router_one_core::ids::now_us();
    let budget = key.spend.snapshot(now_us);
    let account = key.account.snapshot(now_us);
    let left = match (budget.available, account.available) {
        (Some(k), Some(a)) => k.min(a),
        (Some(k), None) => k,
        (None, Some(a)) => a,
        (None, None) => Usd::ZERO,
    };
    (budget.spent, left.max(Usd::ZERO))
}

fn json(body: String) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `GET /v1/dashboard/billing/subscription`.
pub(crate) async fn subscription(ActiveInferenceKey(key): ActiveInferenceKey) -> Response {
    let (spent, left) = standing(&key);
    let hard = spent.saturating_add(left);
    let access_until = key.expires_at_us().map_or(0, |us| us / 1_000_000);
    json(format!(
        r#"{{"object":"billing_subscription","has_payment_method":true,"soft_limit_usd":{hard},"hard_limit_usd":{hard},"system_hard_limit_usd":{hard},"access_until":{access_until}}}"#
    ))
}

/// `GET /v1/dashboard/billing/usage` (its `start_date` / `end_date` are accepted and ignored:
/// the answer is the key's spend in its budget period, or in all, which is what the relay
/// subtracts from the hard limit).
pub(crate) async fn usage(ActiveInferenceKey(key): ActiveInferenceKey) -> Response {
    let (spent, _) = standing(&key);
    let cents = (spent.to_decimal() * rust_decimal::Decimal::ONE_HUNDRED).normalize();
    json(format!(r#"{{"object":"list","total_usage":{cents},"daily_costs":[]}}"#))
}
