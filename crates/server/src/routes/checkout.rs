//! `POST /v1/checkout/quote`: what a top-up costs in the builder's currency and payment channel,
//! line by line (the arithmetic and its rounding rule live in `core/src/checkout.rs`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use router_one_core::checkout::{self, QuoteError};
use router_one_core::{ApiError, ErrorKind};

use crate::auth;
use crate::error::{ErrorResponse, internal};
use crate::routes;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuoteRequest<'a> {
    /// A decimal string (`"25.50"`) or a JSON number, read from its text: never through a float.
    #[serde(borrow)]
    amount_usd: &'a RawValue,
    currency: String,
    channel: String,
}

/// `POST /v1/checkout/quote {amount_usd, currency, channel}`.
pub(crate) async fn quote(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ErrorResponse> {
    let body = routes::body(body, app.config.max_body_bytes)?;
    auth::management_account(&app, &headers).await?;
    let request: QuoteRequest<'_> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("The body must be {{\"amount_usd\", \"currency\", \"channel\"}}: {e}"),
        )
    })?;
    let text = request.amount_usd.get();
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    let quoted = checkout::parse_amount_usd(text)
        .and_then(|amount| checkout::quote(&app.config.checkout, amount, &request.currency, &request.channel));
    match quoted {
        Ok(quote) => {
            let mut json = serde_json::to_value(&quote).map_err(internal)?;
            if let Some(map) = json.as_object_mut() {
                map.insert("object".into(), "checkout.quote".into());
                map.insert(
                    "rounding".into(),
                    "Each line is rounded once to the currency's minor unit, half away from zero; \
                     total = converted + fx_cost + channel_fee exactly. Only token_line_usd is credited."
                        .into(),
                );
            }
            Ok(Json(json).into_response())
        }
        Err(e) => Err(quote_error(e)),
    }
}

fn quote_error(e: QuoteError) -> ErrorResponse {
    match e.field() {
        Some(field) => ApiError::new(ErrorKind::InvalidRequest, e.to_string())
            .with_param(field)
            .into(),
        // The operator's config is wrong: not the client's fault.
        None => internal(e),
    }
}
