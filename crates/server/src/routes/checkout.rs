//! `POST /v1/checkout/quote`: what a top-up costs in the builder's currency and payment channel,
//! line by line (the arithmetic and its rounding rule live in `core/src/checkout.rs`); and
//! `/v1/checkout/sessions`: a quote accepted, with a payment opened for it at a provider. The
//! credit itself comes only from the provider's webhook (`routes/payments.rs`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use router_one_core::billing::{CheckoutSession, SessionStatus};
use router_one_core::checkout::{self, Quote, QuoteError};
use router_one_core::{ApiError, ErrorKind, ids};
use router_one_payments::{OpenPayment, PaymentError, PaymentProvider};

use crate::auth::ManagementAccount;
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
    /// Sessions only: which payment provider (default: the only one configured).
    #[serde(default)]
    provider: Option<String>,
}

impl QuoteRequest<'_> {
    fn parse(body: &[u8]) -> Result<QuoteRequest<'_>, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidRequest,
                format!("The body must be {{\"amount_usd\", \"currency\", \"channel\"}}: {e}"),
            )
        })
    }

    fn quote(&self, app: &AppState) -> Result<Quote, ErrorResponse> {
        let text = self.amount_usd.get();
        let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        checkout::parse_amount_usd(text)
            .and_then(|amount| checkout::quote(&app.checkout.load(), amount, &self.currency, &self.channel))
            .map_err(quote_error)
    }
}

/// The quote as the API shows it, with the rounding rule spelled out.
fn quote_json(quote: &Quote) -> Result<Value, ErrorResponse> {
    let mut json = serde_json::to_value(quote).map_err(internal)?;
    if let Some(map) = json.as_object_mut() {
        map.insert("object".into(), "checkout.quote".into());
        map.insert(
            "rounding".into(),
            "Each line is rounded once to the currency's minor unit, half away from zero; \
             total = converted + fx_cost + channel_fee exactly. Only token_line_usd is credited."
                .into(),
        );
    }
    Ok(json)
}

/// `POST /v1/checkout/quote {amount_usd, currency, channel}`.
#[utoipa::path(
    post,
    path = "/v1/checkout/quote",
    operation_id = "checkout_quote",
    tag = "checkout",
    summary = "What a top-up costs, line by line",
    request_body(content = crate::openapi::schemas::QuoteRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The quote.", body = crate::openapi::schemas::Quote),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 413, response = crate::openapi::schemas::Error),
        (status = 500, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn quote(
    State(app): State<Arc<AppState>>,
    _account: ManagementAccount,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ErrorResponse> {
    let body = routes::body(body, app.config.max_body_bytes)?;
    let request = QuoteRequest::parse(&body)?;
    if request.provider.is_some() {
        return Err(ApiError::new(ErrorKind::InvalidRequest, "A quote takes no `provider`.")
            .with_param("provider")
            .into());
    }
    let quote = request.quote(&app)?;
    Ok(Json(quote_json(&quote)?).into_response())
}

/// `POST /v1/checkout/sessions {amount_usd, currency, channel, provider?}`: quotes, opens a
/// payment at the provider, and stores the session. Nothing is credited until the provider's
/// webhook confirms the payment.
#[utoipa::path(
    post,
    path = "/v1/checkout/sessions",
    operation_id = "checkout_create_session",
    tag = "checkout",
    summary = "Accept a quote and open a payment at a provider",
    request_body(content = crate::openapi::schemas::CheckoutSessionRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The session; pay at `payment_url`. Nothing is credited until the provider confirms.", body = crate::openapi::schemas::CheckoutSession),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 413, response = crate::openapi::schemas::Error),
        (status = 500, response = crate::openapi::schemas::Error),
        (status = 502, response = crate::openapi::schemas::Error),
        (status = 503, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn create_session(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ErrorResponse> {
    let body = routes::body(body, app.config.max_body_bytes)?;
    let request = QuoteRequest::parse(&body)?;
    let quote = request.quote(&app)?;
    let provider = pick_provider(&app, request.provider.as_deref())?;
    let session_id = ids::new_id("cs");
    let public_url = app.config.public_url.trim_end_matches('/');
    let webhook_url = format!("{public_url}/v1/payments/webhooks/{}", provider.name());
    // The payer comes back to the console's page of this session, which shows it paid.
    let return_url = format!("{public_url}/console/top-up/{session_id}");
    let opened = provider
        .open(&OpenPayment {
            session_id: &session_id,
            account_id: &account_id,
            amount: quote.total,
            currency: &quote.currency,
            minor_units: quote.minor_units,
            channel: &quote.channel,
            webhook_url: &webhook_url,
            return_url: Some(&return_url),
        })
        .await
        .map_err(provider_error)?;
    let session = CheckoutSession {
        id: session_id,
        account_id,
        provider: provider.name().to_owned(),
        provider_session_id: opened.provider_session_id,
        payment_url: opened.payment_url,
        quote,
        status: SessionStatus::Open,
        payment_id: None,
        created_at_us: ids::now_us(),
    };
    app.store.insert_checkout_session(&session).await.map_err(internal)?;
    Ok((StatusCode::CREATED, Json(session_json(&session)?)).into_response())
}

/// `GET /v1/checkout/sessions/{id}`: where a top-up is (`open`, `paid`, `refunded`,
/// `charged_back`).
#[utoipa::path(
    get,
    path = "/v1/checkout/sessions/{id}",
    operation_id = "checkout_get_session",
    tag = "checkout",
    summary = "Where a top-up is",
    params(("id" = String, Path, description = "The session id, `cs_…`.")),
    responses(
        (status = 200, description = "The session.", body = crate::openapi::schemas::CheckoutSession),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 404, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn get_session(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    Path(id): Path<String>,
) -> Result<Response, ErrorResponse> {
    let session = app
        .store
        .checkout_session(&account_id, &id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("No checkout session `{id}`.")))?;
    Ok(Json(session_json(&session)?).into_response())
}

fn session_json(session: &CheckoutSession) -> Result<Value, ErrorResponse> {
    Ok(json!({
        "object": "checkout.session",
        "id": session.id,
        "status": session.status.as_str(),
        "provider": session.provider,
        "payment_url": session.payment_url,
        "quote": quote_json(&session.quote)?,
        "payment_id": session.payment_id,
        "created_at": ids::rfc3339(session.created_at_us),
    }))
}

/// The payment channels a quote accepts, each with the currencies it takes (the checkout config
/// in force, sorted): what the console offers to choose from.
pub(crate) fn offered_channels(app: &AppState) -> Vec<(String, Vec<String>)> {
    app.checkout
        .load()
        .channels
        .iter()
        .map(|(channel, fee)| (channel.clone(), fee.currencies.iter().cloned().collect()))
        .collect()
}

/// The provider a session is opened with: the one named, or the only one configured.
fn pick_provider(app: &AppState, name: Option<&str>) -> Result<Arc<dyn PaymentProvider>, ApiError> {
    if app.payments.is_empty() {
        return Err(ApiError::new(
            ErrorKind::PaymentsUnavailable,
            "No payment provider is configured on this gateway.",
        ));
    }
    let found = match name {
        Some(name) => app.payments.get(name),
        None if app.payments.len() == 1 => app.payments.values().next(),
        None => {
            let mut names: Vec<_> = app.payments.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                format!("Choose a `provider`: one of {}.", names.join(", ")),
            )
            .with_param("provider"));
        }
    };
    found
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorKind::InvalidRequest, "Unknown payment `provider`.").with_param("provider"))
}

fn provider_error(e: PaymentError) -> ErrorResponse {
    tracing::warn!(error = %e, "payment provider could not open a payment");
    let kind = match e {
        PaymentError::NotConfigured(_) => ErrorKind::PaymentsUnavailable,
        _ => ErrorKind::PaymentProviderError,
    };
    ApiError::new(kind, "The payment provider could not open a payment; please retry.").into()
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
