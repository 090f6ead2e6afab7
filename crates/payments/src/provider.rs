//! The [`PaymentProvider`] trait and the operator's per-provider config.

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::Deserialize;

use router_one_core::billing::PaymentEvent;
use router_one_core::webhook::SignatureError;

/// A payment provider: opens payments and reads its own webhooks.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// The name in config and in the webhook URL (`/v1/payments/webhooks/{name}`).
    fn name(&self) -> &str;

    /// Opens a payment for a checkout session with the provider: its session id and the URL
    /// the payer follows. Called off the inference path, once per session.
    async fn open(&self, payment: &OpenPayment<'_>) -> Result<OpenedPayment, PaymentError>;

    /// Verifies one webhook delivery (signature over the raw `body`, timestamp within the
    /// tolerance of `now_s`, Unix seconds) and reads its event. `Ok(None)`: authentic, but of a
    /// type that changes no balance (acknowledged and ignored).
    fn read_webhook(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now_s: i64,
    ) -> Result<Option<PaymentEvent>, WebhookError>;
}

/// What to charge for a checkout session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPayment<'a> {
    /// Our `cs_…` id: the provider carries it and sends it back in its webhooks.
    pub session_id: &'a str,
    /// The account paying (for the provider's own records).
    pub account_id: &'a str,
    /// The quote's total, in major units of `currency`.
    pub amount: Decimal,
    /// ISO 4217, upper case.
    pub currency: &'a str,
    /// Decimal places of the currency's minor unit (JPY 0, USD 2, KWD 3).
    pub minor_units: u32,
    /// The payment channel chosen (`card`, `alipay`).
    pub channel: &'a str,
    /// Where the provider sends its webhooks for this payment (providers that take it per
    /// payment; others are configured in the provider's dashboard).
    pub webhook_url: &'a str,
    /// Where the payer's browser goes back to once it has paid or given up (the console's page
    /// of this checkout session); `None` leaves it to the provider (or the operator's
    /// configured `success_url`).
    pub return_url: Option<&'a str>,
}

/// A payment opened with the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedPayment {
    /// The provider's id for it.
    pub provider_session_id: String,
    /// Where the payer goes to pay.
    pub payment_url: String,
}

/// The provider could not open a payment.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The provider could not be reached or did not answer in time.
    #[error("payment provider unreachable: {0}")]
    Unreachable(String),
    /// The provider answered with an error.
    #[error("payment provider refused ({status}): {message}")]
    Refused {
        /// Its HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The provider is not configured (its secret is missing from the environment).
    #[error("payment provider not configured: {0}")]
    NotConfigured(String),
}

/// A webhook delivery that must be refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Missing, forged or stale signature.
    #[error("{0}")]
    Signature(#[from] SignatureError),
    /// Authentic but unreadable.
    #[error("malformed webhook payload: {0}")]
    Malformed(String),
}

/// Which adapter a configured provider uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The project's simulated provider (`router-one simulate`, and `--demo`).
    Simulated,
    /// Stripe Checkout.
    Stripe,
}

/// One `[payments.<name>]` section of the operator's config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentProviderConfig {
    /// The adapter.
    pub kind: ProviderKind,
    /// The provider's API base URL (`https://api.stripe.com`).
    pub base_url: String,
    /// Environment variable holding the API secret key.
    pub api_key_env: String,
    /// Environment variable holding the webhook signing secret.
    pub webhook_secret_env: String,
    /// Where the payer lands after paying (providers with hosted pages).
    #[serde(default)]
    pub success_url: Option<String>,
}
