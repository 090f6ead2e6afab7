//! Payment providers behind one trait, [`PaymentProvider`]: one adapter per file. The server
//! opens a payment for a checkout session through it and hands it every webhook delivery to
//! verify (HMAC over the raw body and a timestamp) and read as a [`PaymentEvent`]; crediting,
//! exactly once per payment id, happens in the store, never here.
//!
//! * [`SimulatedProvider`]: the simulator's payment API (`kind = "simulated"`).
//! * [`StripeProvider`]: Stripe Checkout (`kind = "stripe"`).
//!
//! [`from_config`] builds the adapter a `[payments.<name>]` section names, reading its two
//! secrets from the environment; each adapter's `new` takes them directly (tests, the demo).

mod client;
mod provider;
mod simulated;
mod stripe;

use std::sync::Arc;

pub use provider::{
    OpenPayment, OpenedPayment, PaymentError, PaymentProvider, PaymentProviderConfig, ProviderKind, WebhookError,
};
pub use router_one_core::billing::{PaymentEvent, PaymentEventKind};
pub use simulated::SimulatedProvider;
pub use stripe::{STRIPE_SIGNATURE_HEADER, StripeProvider, minor_units as stripe_minor_units};

use router_one_core::webhook::SignatureError;

/// Builds the adapter for the `[payments.<name>]` section `config`, reading the API key and the
/// webhook secret from the environment variables it names.
///
/// # Errors
///
/// [`PaymentError::NotConfigured`] naming the variable that is unset, empty or not Unicode.
pub fn from_config(name: &str, config: &PaymentProviderConfig) -> Result<Arc<dyn PaymentProvider>, PaymentError> {
    from_config_with(name, config, |var| std::env::var(var).ok())
}

/// [`from_config`] with the environment given as a lookup function.
fn from_config_with(
    name: &str,
    config: &PaymentProviderConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn PaymentProvider>, PaymentError> {
    let secret = |var: &str| {
        env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            PaymentError::NotConfigured(format!(
                "payment provider `{name}`: environment variable {var} is not set"
            ))
        })
    };
    let api_key = secret(&config.api_key_env)?;
    let webhook_secret = secret(&config.webhook_secret_env)?;
    Ok(match config.kind {
        ProviderKind::Simulated => Arc::new(SimulatedProvider::new(
            name,
            config.base_url.as_str(),
            api_key,
            webhook_secret,
        )),
        ProviderKind::Stripe => {
            let mut stripe = StripeProvider::new(name, config.base_url.as_str(), api_key, webhook_secret);
            if let Some(url) = &config.success_url {
                stripe = stripe.with_success_url(url.as_str());
            }
            Arc::new(stripe)
        }
    })
}

/// The value of a signature header: missing or empty is [`SignatureError::MissingHeader`], not
/// text is [`SignatureError::MalformedHeader`].
fn signature_header<'h>(headers: &'h http::HeaderMap, name: &str) -> Result<&'h str, SignatureError> {
    let value = headers.get(name).ok_or(SignatureError::MissingHeader)?;
    value.to_str().map_err(|_| SignatureError::MalformedHeader)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn config(kind: ProviderKind) -> PaymentProviderConfig {
        PaymentProviderConfig {
            kind,
            base_url: "http://127.0.0.1:9".into(),
            api_key_env: "PAY_KEY".into(),
            webhook_secret_env: "PAY_WHSEC".into(),
            success_url: Some("https://example.com/done".into()),
        }
    }

    #[test]
    fn from_config_reads_both_secrets() {
        let env = |var: &str| match var {
            "PAY_KEY" => Some("k".to_owned()),
            "PAY_WHSEC" => Some("s".to_owned()),
            _ => None,
        };
        for kind in [ProviderKind::Simulated, ProviderKind::Stripe] {
            let provider = from_config_with("main", &config(kind), env).unwrap();
            assert_eq!(provider.name(), "main");
        }
    }

    #[test]
    fn from_config_names_the_missing_variable() {
        let only_key = |var: &str| (var == "PAY_KEY").then(|| "k".to_owned());
        let err = from_config_with("sim", &config(ProviderKind::Simulated), only_key)
            .err()
            .unwrap();
        assert!(
            matches!(&err, PaymentError::NotConfigured(m) if m.contains("PAY_WHSEC")),
            "{err}"
        );
        let empty = |_: &str| Some("  ".to_owned());
        let err = from_config_with("sim", &config(ProviderKind::Stripe), empty)
            .err()
            .unwrap();
        assert!(
            matches!(&err, PaymentError::NotConfigured(m) if m.contains("PAY_KEY")),
            "{err}"
        );
        // The real environment: these names are not set.
        let mut unset = config(ProviderKind::Simulated);
        unset.api_key_env = "ROUTER_ONE_TEST_SURELY_UNSET_PAY_KEY".into();
        let err = from_config("sim", &unset).err().unwrap();
        assert!(err.to_string().contains("ROUTER_ONE_TEST_SURELY_UNSET_PAY_KEY"));
    }
}
