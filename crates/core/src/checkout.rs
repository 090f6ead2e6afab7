//! Checkout quotes: what a builder pays, in the currency and payment channel they choose, to top up
//! their prepaid USD balance. Pure arithmetic and the operator's config types; no I/O.
//!
//! A quote has these lines, each on its own:
//!
//! * the **token line** ([`Quote::token_line_usd`]): the credit bought, in USD, exactly the amount
//!   asked. This, and only this, is what the account's balance is credited. The FX cost and the
//!   channel fee are charged to the builder's card or wallet but **never touch the balance**;
//! * the **FX rate** ([`Quote::fx_rate`], units of the currency per 1 USD) and its timestamp
//!   ([`Quote::fx_as_of`]);
//! * **converted** = `amount_usd × fx_rate`: the token line in the chosen currency;
//! * **FX cost** = `converted × markup_percent / 100`: the operator's FX cost;
//! * **channel fee** = `(converted + fx_cost) × percent / 100 + fixed`: the payment channel's fee;
//! * **total** = `converted + fx_cost + channel_fee`: what is charged, in the chosen currency.
//!
//! **The rounding rule.** Every line is computed exactly with [`Decimal`] from the already rounded
//! lines above it, then rounded **once**, to the currency's minor unit (`minor_units` decimal
//! places: 2 for USD, EUR and CNY, 0 for JPY, 3 for KWD), **half away from zero** — the same rule as
//! [`crate::money`]. The total is *not* rounded: it is the exact sum of the three rounded lines, so
//! the lines always add up to the total, to the minor unit. Every money line is shown with exactly
//! `minor_units` decimals (`"92.00"`, `"3176"`, `"4.086"`).
//!
//! Config values are bounded (see the `MAX_*` constants and [`CheckoutConfig::validate`]) so that
//! every intermediate product fits a [`Decimal`] without any hidden rounding.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::money::Usd;

/// The smallest top-up, in USD.
pub const MIN_AMOUNT_USD: Decimal = Decimal::from_parts(1, 0, 0, false, 0);
/// The largest top-up, in USD.
pub const MAX_AMOUNT_USD: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);
/// Decimal places allowed in `amount_usd` (whole cents).
pub const AMOUNT_DECIMALS: u32 = 2;
/// The largest `minor_units` a currency may have.
pub const MAX_MINOR_UNITS: u32 = 4;
/// The largest `per_usd` rate (units of a currency per 1 USD).
pub const MAX_PER_USD: Decimal = Decimal::from_parts(10_000_000, 0, 0, false, 0);
/// Decimal places allowed in a rate or a percentage.
pub const MAX_RATE_DECIMALS: u32 = 10;
/// The largest percentage (FX markup or channel fee).
pub const MAX_PERCENT: Decimal = Decimal::from_parts(100, 0, 0, false, 0);
/// The largest fixed channel fee, in units of its currency.
pub const MAX_FIXED_FEE: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// The code of the balance's own currency.
pub const USD: &str = "USD";

/// One currency's exchange rate, from the operator's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxRate {
    /// Units of this currency per 1 USD (a decimal string, e.g. `"0.9234"`); must be > 0.
    #[serde(deserialize_with = "decimal_string")]
    pub per_usd: Decimal,
    /// When the rate was fixed, RFC 3339 (e.g. `"2026-11-25T12:00:00Z"`).
    pub as_of: String,
    /// The operator's FX cost: a percentage of the converted amount (a decimal string, `"1.5"`).
    #[serde(deserialize_with = "decimal_string")]
    pub markup_percent: Decimal,
    /// Decimal places of the currency's minor unit: USD/EUR/CNY 2, JPY 0, KWD 3.
    pub minor_units: u32,
}

/// One payment channel's fee, from the operator's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFee {
    /// The percentage fee on `converted + fx_cost` (a decimal string, `"2.9"`).
    #[serde(deserialize_with = "decimal_string")]
    pub percent: Decimal,
    /// A fixed fee per payment, per currency, in units of that currency (decimal strings). A
    /// currency the channel accepts but that is absent here has no fixed fee.
    #[serde(default, deserialize_with = "decimal_string_map")]
    pub fixed: BTreeMap<String, Decimal>,
    /// The currency codes the channel accepts.
    pub currencies: BTreeSet<String>,
}

/// The operator's checkout config: FX rates per currency code and fees per channel name.
///
/// USD needs no entry: absent, it is the identity (`per_usd` 1, markup 0, 2 minor units, as of the
/// Unix epoch since it never changes). If configured, its `per_usd` must be 1 and its
/// `minor_units` 2; a markup may be set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutConfig {
    /// Exchange rates by ISO 4217 code (`"EUR"`).
    #[serde(default)]
    pub fx: BTreeMap<String, FxRate>,
    /// Fees by channel name (`"card"`, `"alipay"`).
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelFee>,
}

/// Why a checkout config was refused. `field` is a dotted path such as `fx.EUR.per_usd` or
/// `channels.card.fixed.EUR`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckoutConfigError {
    /// The TOML did not parse or did not match the expected shape.
    #[error("checkout config: {0}")]
    Parse(String),
    /// A currency code is not three upper-case ASCII letters.
    #[error("`{field}`: `{code}` is not an ISO 4217 currency code (three upper-case letters)")]
    BadCurrencyCode {
        /// Where the code appears.
        field: String,
        /// The offending code.
        code: String,
    },
    /// A rate, percentage or fee is negative.
    #[error("`{field}` is negative ({value})")]
    Negative {
        /// The offending field.
        field: String,
        /// Its value.
        value: Decimal,
    },
    /// `per_usd` is zero.
    #[error("`{field}` must be greater than zero")]
    RateNotPositive {
        /// The offending field.
        field: String,
    },
    /// A value is above its bound.
    #[error("`{field}` is {value}, above the maximum {max}")]
    TooLarge {
        /// The offending field.
        field: String,
        /// Its value.
        value: Decimal,
        /// The bound.
        max: Decimal,
    },
    /// A value has more decimal places than allowed (for a fixed fee: than its currency's minor unit).
    #[error("`{field}` ({value}) has more than {max} decimal places")]
    TooPrecise {
        /// The offending field.
        field: String,
        /// Its value.
        value: Decimal,
        /// The allowed number of decimal places.
        max: u32,
    },
    /// `minor_units` is above [`MAX_MINOR_UNITS`].
    #[error("`fx.{currency}.minor_units` is {minor_units}, above the maximum {MAX_MINOR_UNITS}")]
    MinorUnitsTooLarge {
        /// The currency.
        currency: String,
        /// Its configured minor units.
        minor_units: u32,
    },
    /// USD is configured with a `per_usd` other than 1 or `minor_units` other than 2.
    #[error("`fx.USD.{field}` must be {expected}, not {value}")]
    UsdNotIdentity {
        /// `per_usd` or `minor_units`.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it is.
        value: String,
    },
    /// `as_of` is not an RFC 3339 timestamp.
    #[error("`fx.{currency}.as_of` (`{value}`) is not an RFC 3339 timestamp")]
    BadTimestamp {
        /// The currency.
        currency: String,
        /// The configured text.
        value: String,
    },
    /// A channel accepts no currency.
    #[error("`channels.{channel}.currencies` is empty")]
    ChannelAcceptsNothing {
        /// The channel.
        channel: String,
    },
    /// A channel accepts a currency that has no FX rate.
    #[error("`channels.{channel}.currencies` lists `{currency}`, which has no `fx.{currency}` rate")]
    ChannelCurrencyWithoutRate {
        /// The channel.
        channel: String,
        /// The currency.
        currency: String,
    },
    /// A channel has a fixed fee in a currency it does not accept.
    #[error("`channels.{channel}.fixed.{currency}`: the channel does not accept `{currency}`")]
    FixedFeeForUnacceptedCurrency {
        /// The channel.
        channel: String,
        /// The currency.
        currency: String,
    },
}

/// A checkout quote: see the module documentation for the lines and the rounding rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The credit bought: exactly `amount_usd`. The only line credited to the balance.
    pub token_line_usd: Usd,
    /// The currency charged (ISO 4217 code, upper case).
    pub currency: String,
    /// The payment channel.
    pub channel: String,
    /// Units of `currency` per 1 USD, as configured.
    pub fx_rate: Decimal,
    /// When `fx_rate` was fixed (RFC 3339, as configured).
    pub fx_as_of: String,
    /// Decimal places of every money line below.
    pub minor_units: u32,
    /// `amount_usd × fx_rate`, rounded to the minor unit.
    pub converted: Decimal,
    /// `converted × markup_percent / 100`, rounded to the minor unit.
    pub fx_cost: Decimal,
    /// `(converted + fx_cost) × percent / 100 + fixed`, rounded to the minor unit.
    pub channel_fee: Decimal,
    /// `converted + fx_cost + channel_fee`, exactly (not rounded again).
    pub total: Decimal,
}

/// Why a quote was refused. [`QuoteError::field`] names the request field to blame in a 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuoteError {
    /// `amount_usd` is not a decimal number.
    #[error("`amount_usd`: `{0}` is not a decimal number")]
    AmountNotDecimal(String),
    /// `amount_usd` has fractions of a cent.
    #[error("`amount_usd`: {0} has more than {AMOUNT_DECIMALS} decimal places")]
    AmountTooPrecise(Decimal),
    /// `amount_usd` is outside [`MIN_AMOUNT_USD`]..=[`MAX_AMOUNT_USD`] (this includes zero and
    /// negative amounts).
    #[error("`amount_usd`: {0} is outside {MIN_AMOUNT_USD}..={MAX_AMOUNT_USD}")]
    AmountOutOfRange(Decimal),
    /// No FX rate is configured for the currency.
    #[error("`currency`: `{0}` is not offered")]
    UnknownCurrency(String),
    /// No such payment channel.
    #[error("`channel`: `{0}` is not offered")]
    UnknownChannel(String),
    /// The channel exists but does not take this currency.
    #[error("`currency`: channel `{channel}` does not accept `{currency}` (it accepts {accepted:?})")]
    CurrencyNotAccepted {
        /// The requested currency.
        currency: String,
        /// The requested channel.
        channel: String,
        /// What the channel accepts.
        accepted: Vec<String>,
    },
    /// The operator's config is invalid for this currency or channel (a server error, not the
    /// client's).
    #[error("checkout config: {0}")]
    Config(#[from] CheckoutConfigError),
    /// An amount overflowed [`Decimal`]; impossible with a validated config.
    #[error("checkout arithmetic overflowed")]
    Overflow,
}

impl QuoteError {
    /// The request field to name in a 400 response, or `None` for a server-side error.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            QuoteError::AmountNotDecimal(_) | QuoteError::AmountTooPrecise(_) | QuoteError::AmountOutOfRange(_) => {
                Some("amount_usd")
            }
            QuoteError::UnknownCurrency(_) | QuoteError::CurrencyNotAccepted { .. } => Some("currency"),
            QuoteError::UnknownChannel(_) => Some("channel"),
            QuoteError::Config(_) | QuoteError::Overflow => None,
        }
    }
}

impl FxRate {
    /// The identity rate used for USD when the config has no `fx.USD` entry.
    pub fn usd_identity() -> FxRate {
        FxRate {
            per_usd: Decimal::ONE,
            as_of: "1970-01-01T00:00:00Z".to_owned(),
            markup_percent: Decimal::ZERO,
            minor_units: 2,
        }
    }

    /// Checks this rate, configured for `currency`.
    pub fn validate(&self, currency: &str) -> Result<(), CheckoutConfigError> {
        check_code(&format!("fx.{currency}"), currency)?;
        let field = |name: &str| format!("fx.{currency}.{name}");
        check_decimal(&field("per_usd"), self.per_usd, MAX_RATE_DECIMALS, MAX_PER_USD)?;
        if self.per_usd.is_zero() {
            return Err(CheckoutConfigError::RateNotPositive {
                field: field("per_usd"),
            });
        }
        check_decimal(
            &field("markup_percent"),
            self.markup_percent,
            MAX_RATE_DECIMALS,
            MAX_PERCENT,
        )?;
        if self.minor_units > MAX_MINOR_UNITS {
            return Err(CheckoutConfigError::MinorUnitsTooLarge {
                currency: currency.to_owned(),
                minor_units: self.minor_units,
            });
        }
        if OffsetDateTime::parse(&self.as_of, &Rfc3339).is_err() {
            return Err(CheckoutConfigError::BadTimestamp {
                currency: currency.to_owned(),
                value: self.as_of.clone(),
            });
        }
        if currency == USD {
            if self.per_usd != Decimal::ONE {
                return Err(CheckoutConfigError::UsdNotIdentity {
                    field: "per_usd",
                    expected: "1",
                    value: self.per_usd.to_string(),
                });
            }
            if self.minor_units != 2 {
                return Err(CheckoutConfigError::UsdNotIdentity {
                    field: "minor_units",
                    expected: "2",
                    value: self.minor_units.to_string(),
                });
            }
        }
        Ok(())
    }
}

impl ChannelFee {
    /// Checks this channel's fees, configured as `channel`, against the currencies of `config`.
    pub fn validate(&self, channel: &str, config: &CheckoutConfig) -> Result<(), CheckoutConfigError> {
        check_decimal(
            &format!("channels.{channel}.percent"),
            self.percent,
            MAX_RATE_DECIMALS,
            MAX_PERCENT,
        )?;
        if self.currencies.is_empty() {
            return Err(CheckoutConfigError::ChannelAcceptsNothing {
                channel: channel.to_owned(),
            });
        }
        for currency in &self.currencies {
            check_code(&format!("channels.{channel}.currencies"), currency)?;
            if config.fx_rate(currency).is_none() {
                return Err(CheckoutConfigError::ChannelCurrencyWithoutRate {
                    channel: channel.to_owned(),
                    currency: currency.clone(),
                });
            }
        }
        for (currency, &fee) in &self.fixed {
            let field = format!("channels.{channel}.fixed.{currency}");
            check_code(&field, currency)?;
            if !self.currencies.contains(currency) {
                return Err(CheckoutConfigError::FixedFeeForUnacceptedCurrency {
                    channel: channel.to_owned(),
                    currency: currency.clone(),
                });
            }
            let minor_units = config.fx_rate(currency).map_or(0, |fx| fx.minor_units);
            check_decimal(&field, fee, minor_units, MAX_FIXED_FEE)?;
        }
        Ok(())
    }
}

impl CheckoutConfig {
    /// Parses and validates checkout config TOML (`[fx.EUR]` and `[channels.card]` tables).
    pub fn from_toml(text: &str) -> Result<CheckoutConfig, CheckoutConfigError> {
        let config: CheckoutConfig = toml::from_str(text).map_err(|e| CheckoutConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rate and channel; the first problem found is returned.
    pub fn validate(&self) -> Result<(), CheckoutConfigError> {
        for (currency, fx) in &self.fx {
            fx.validate(currency)?;
        }
        for (channel, fee) in &self.channels {
            fee.validate(channel, self)?;
        }
        Ok(())
    }

    /// The rate for a currency code (exact, upper case); USD falls back to
    /// [`FxRate::usd_identity`].
    pub fn fx_rate(&self, currency: &str) -> Option<Cow<'_, FxRate>> {
        match self.fx.get(currency) {
            Some(fx) => Some(Cow::Borrowed(fx)),
            None if currency == USD => Some(Cow::Owned(FxRate::usd_identity())),
            None => None,
        }
    }
}

/// Parses the request's `amount_usd` text (a decimal string such as `"25.50"`) and checks it as
/// [`quote`] does.
pub fn parse_amount_usd(text: &str) -> Result<Decimal, QuoteError> {
    let amount = Decimal::from_str_exact(text.trim()).map_err(|_| QuoteError::AmountNotDecimal(text.to_owned()))?;
    check_amount(amount)?;
    Ok(amount)
}

/// Quotes a top-up of `amount_usd` paid in `currency` (case-insensitive ISO 4217 code) through
/// `channel`. Checks, in order: the amount, the currency, the channel, that the channel accepts the
/// currency, then the config entries used.
pub fn quote(config: &CheckoutConfig, amount_usd: Decimal, currency: &str, channel: &str) -> Result<Quote, QuoteError> {
    check_amount(amount_usd)?;
    let token_line_usd = Usd::from_decimal_exact(amount_usd).map_err(|_| QuoteError::Overflow)?;
    let code = currency.trim().to_ascii_uppercase();
    let fx = config
        .fx_rate(&code)
        .ok_or_else(|| QuoteError::UnknownCurrency(currency.to_owned()))?;
    let fee = config
        .channels
        .get(channel)
        .ok_or_else(|| QuoteError::UnknownChannel(channel.to_owned()))?;
    if !fee.currencies.contains(&code) {
        return Err(QuoteError::CurrencyNotAccepted {
            currency: code,
            channel: channel.to_owned(),
            accepted: fee.currencies.iter().cloned().collect(),
        });
    }
    fx.validate(&code)?;
    fee.validate(channel, config)?;

    let mu = fx.minor_units;
    let hundred = Decimal::ONE_HUNDRED;
    let converted = round_line(amount_usd.checked_mul(fx.per_usd), mu)?;
    let fx_cost = round_line(
        converted
            .checked_mul(fx.markup_percent)
            .and_then(|x| x.checked_div(hundred)),
        mu,
    )?;
    let fixed = fee.fixed.get(&code).copied().unwrap_or(Decimal::ZERO);
    let channel_fee = round_line(
        converted
            .checked_add(fx_cost)
            .and_then(|base| base.checked_mul(fee.percent))
            .and_then(|x| x.checked_div(hundred))
            .and_then(|x| x.checked_add(fixed)),
        mu,
    )?;
    let total = converted
        .checked_add(fx_cost)
        .and_then(|x| x.checked_add(channel_fee))
        .ok_or(QuoteError::Overflow)?;

    Ok(Quote {
        token_line_usd,
        currency: code,
        channel: channel.to_owned(),
        fx_rate: fx.per_usd,
        fx_as_of: fx.as_of.clone(),
        minor_units: mu,
        converted,
        fx_cost,
        channel_fee,
        total,
    })
}

/// THE rounding rule: once, to `minor_units` decimals, half away from zero; shown with exactly
/// `minor_units` decimals.
fn round_line(exact: Option<Decimal>, minor_units: u32) -> Result<Decimal, QuoteError> {
    let mut line = exact
        .ok_or(QuoteError::Overflow)?
        .round_dp_with_strategy(minor_units, RoundingStrategy::MidpointAwayFromZero);
    line.rescale(minor_units);
    Ok(line)
}

fn check_amount(amount: Decimal) -> Result<(), QuoteError> {
    if amount.normalize().scale() > AMOUNT_DECIMALS {
        return Err(QuoteError::AmountTooPrecise(amount));
    }
    if amount < MIN_AMOUNT_USD || amount > MAX_AMOUNT_USD {
        return Err(QuoteError::AmountOutOfRange(amount));
    }
    Ok(())
}

fn check_code(field: &str, code: &str) -> Result<(), CheckoutConfigError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(CheckoutConfigError::BadCurrencyCode {
            field: field.to_owned(),
            code: code.to_owned(),
        })
    }
}

fn check_decimal(field: &str, value: Decimal, max_decimals: u32, max: Decimal) -> Result<(), CheckoutConfigError> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(CheckoutConfigError::Negative {
            field: field.to_owned(),
            value,
        });
    }
    if value > max {
        return Err(CheckoutConfigError::TooLarge {
            field: field.to_owned(),
            value,
            max,
        });
    }
    if value.normalize().scale() > max_decimals {
        return Err(CheckoutConfigError::TooPrecise {
            field: field.to_owned(),
            value,
            max: max_decimals,
        });
    }
    Ok(())
}

/// A rate must be a decimal *string*: a TOML float has already lost exactness when parsed.
fn decimal_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let s = String::deserialize(deserializer)?;
    parse_decimal(&s).map_err(serde::de::Error::custom)
}

/// A map of decimal *strings*, as [`decimal_string`].
fn decimal_string_map<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Decimal>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(k, v)| parse_decimal(&v).map(|d| (k, d)).map_err(serde::de::Error::custom))
        .collect()
}

fn parse_decimal(s: &str) -> Result<Decimal, String> {
    Decimal::from_str_exact(s.trim()).map_err(|_| format!("`{s}` is not a decimal number"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CONFIG: &str = r#"
        [fx.EUR]
        per_usd = "0.9234"
        as_of = "2026-11-25T12:00:00Z"
        markup_percent = "1.5"
        minor_units = 2

        [fx.CNY]
        per_usd = "7.1234"
        as_of = "2026-11-25T12:00:00+08:00"
        markup_percent = "0.8"
        minor_units = 2

        [fx.JPY]
        per_usd = "151.37"
        as_of = "2026-11-25T12:00:00Z"
        markup_percent = "1"
        minor_units = 0

        [fx.KWD]
        per_usd = "0.3075"
        as_of = "2026-11-25T12:00:00Z"
        markup_percent = "2"
        minor_units = 3

        [channels.card]
        percent = "2.9"
        currencies = ["USD", "EUR", "JPY", "KWD"]
        fixed = { USD = "0.30", EUR = "0.25", JPY = "30", KWD = "0.100" }

        [channels.alipay]
        percent = "1.2"
        currencies = ["CNY"]
    "#;

    fn config() -> CheckoutConfig {
        CheckoutConfig::from_toml(CONFIG).unwrap()
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    /// (converted, fx_cost, channel_fee, total) as strings.
    fn lines(q: &Quote) -> [String; 4] {
        [q.converted, q.fx_cost, q.channel_fee, q.total].map(|x| x.to_string())
    }

    #[test]
    fn usd_card_rounds_the_half_cent_away_from_zero() {
        // USD is implicit: rate 1, no markup.
        // converted = 5.00 × 1 = 5.00; fx_cost = 5.00 × 0% = 0.00
        // fee = 5.00 × 2.9% + 0.30 = 0.145 + 0.30 = 0.445 → 0.45 (half away from zero; banker's would give 0.44)
        // total = 5.00 + 0.00 + 0.45 = 5.45
        let q = quote(&config(), d("5.00"), "USD", "card").unwrap();
        assert_eq!(q.token_line_usd, "5".parse::<Usd>().unwrap());
        assert_eq!(q.fx_rate, Decimal::ONE);
        assert_eq!(lines(&q), ["5.00", "0.00", "0.45", "5.45"]);
    }

    #[test]
    fn eur_card_with_a_fixed_fee_in_eur() {
        // converted = 25.55 × 0.9234 = 23.592870 → 23.59
        // fx_cost = 23.59 × 1.5% = 0.35385 → 0.35
        // fee = (23.59 + 0.35) × 2.9% + 0.25 = 23.94 × 0.029 + 0.25 = 0.69426 + 0.25 = 0.94426 → 0.94
        // total = 23.59 + 0.35 + 0.94 = 24.88
        let q = quote(&config(), d("25.55"), "eur", "card").unwrap();
        assert_eq!(q.currency, "EUR");
        assert_eq!(q.fx_rate.to_string(), "0.9234");
        assert_eq!(q.fx_as_of, "2026-11-25T12:00:00Z");
        assert_eq!(q.token_line_usd.to_string(), "25.55");
        assert_eq!(lines(&q), ["23.59", "0.35", "0.94", "24.88"]);
    }

    #[test]
    fn cny_alipay_with_a_four_decimal_rate_and_markup() {
        // converted = 33.33 × 7.1234 = 237.422922 → 237.42
        // fx_cost = 237.42 × 0.8% = 1.89936 → 1.90
        // fee = (237.42 + 1.90) × 1.2% + 0 = 239.32 × 0.012 = 2.87184 → 2.87 (alipay has no fixed fee)
        // total = 237.42 + 1.90 + 2.87 = 242.19
        let q = quote(&config(), d("33.33"), "CNY", "alipay").unwrap();
        assert_eq!(q.fx_as_of, "2026-11-25T12:00:00+08:00");
        assert_eq!(lines(&q), ["237.42", "1.90", "2.87", "242.19"]);
    }

    #[test]
    fn jpy_card_has_no_minor_unit() {
        // converted = 20 × 151.37 = 3027.40 → 3027
        // fx_cost = 3027 × 1% = 30.27 → 30
        // fee = (3027 + 30) × 2.9% + 30 = 3057 × 0.029 + 30 = 88.653 + 30 = 118.653 → 119
        // total = 3027 + 30 + 119 = 3176
        let q = quote(&config(), d("20"), "JPY", "card").unwrap();
        assert_eq!(q.minor_units, 0);
        assert_eq!(lines(&q), ["3027", "30", "119", "3176"]);
    }

    #[test]
    fn kwd_card_has_three_minor_units() {
        // converted = 12.35 × 0.3075 = 3.797625 → 3.798
        // fx_cost = 3.798 × 2% = 0.07596 → 0.076
        // fee = (3.798 + 0.076) × 2.9% + 0.100 = 3.874 × 0.029 + 0.100 = 0.112346 + 0.100 = 0.212346 → 0.212
        // total = 3.798 + 0.076 + 0.212 = 4.086
        let q = quote(&config(), d("12.35"), "KWD", "card").unwrap();
        assert_eq!(lines(&q), ["3.798", "0.076", "0.212", "4.086"]);
    }

    #[test]
    fn amount_errors_name_amount_usd() {
        let c = config();
        for (amount, want) in [
            ("0", QuoteError::AmountOutOfRange(d("0"))),
            ("-5", QuoteError::AmountOutOfRange(d("-5"))),
            ("0.99", QuoteError::AmountOutOfRange(d("0.99"))),
            ("10000.01", QuoteError::AmountOutOfRange(d("10000.01"))),
            ("1.005", QuoteError::AmountTooPrecise(d("1.005"))),
        ] {
            let err = quote(&c, d(amount), "USD", "card").unwrap_err();
            assert_eq!(err, want, "{amount}");
            assert_eq!(err.field(), Some("amount_usd"));
        }
        // Trailing zeros are not extra precision; the bounds are inclusive.
        assert!(quote(&c, d("1.000"), "USD", "card").is_ok());
        assert!(quote(&c, d("10000"), "USD", "card").is_ok());
        assert_eq!(parse_amount_usd(" 25.50 ").unwrap(), d("25.50"));
        let err = parse_amount_usd("ten").unwrap_err();
        assert_eq!(err, QuoteError::AmountNotDecimal("ten".to_owned()));
        assert_eq!(err.field(), Some("amount_usd"));
        assert_eq!(
            parse_amount_usd("0.5").unwrap_err(),
            QuoteError::AmountOutOfRange(d("0.5"))
        );
    }

    #[test]
    fn currency_and_channel_errors_name_their_field() {
        let c = config();
        let err = quote(&c, d("10"), "GBP", "card").unwrap_err();
        assert_eq!(err, QuoteError::UnknownCurrency("GBP".to_owned()));
        assert_eq!(err.field(), Some("currency"));

        let err = quote(&c, d("10"), "EUR", "paypal").unwrap_err();
        assert_eq!(err, QuoteError::UnknownChannel("paypal".to_owned()));
        assert_eq!(err.field(), Some("channel"));

        let err = quote(&c, d("10"), "CNY", "card").unwrap_err();
        assert_eq!(
            err,
            QuoteError::CurrencyNotAccepted {
                currency: "CNY".to_owned(),
                channel: "card".to_owned(),
                accepted: vec!["EUR".into(), "JPY".into(), "KWD".into(), "USD".into()],
            }
        );
        assert_eq!(err.field(), Some("currency"));
    }

    #[test]
    fn an_invalid_config_entry_is_a_server_error() {
        let mut c = config();
        c.fx.get_mut("EUR").unwrap().per_usd = d("-1");
        let err = quote(&c, d("10"), "EUR", "card").unwrap_err();
        assert!(
            matches!(err, QuoteError::Config(CheckoutConfigError::Negative { .. })),
            "{err:?}"
        );
        assert_eq!(err.field(), None);
        assert_eq!(QuoteError::Overflow.field(), None);
    }

    fn refused(toml: &str) -> CheckoutConfigError {
        CheckoutConfig::from_toml(toml).unwrap_err()
    }

    const EUR_OK: &str =
        "[fx.EUR]\nper_usd = \"0.9\"\nas_of = \"2026-11-25T12:00:00Z\"\nmarkup_percent = \"1\"\nminor_units = 2\n";

    #[test]
    fn config_validation_errors_are_precise() {
        assert!(CheckoutConfig::from_toml(EUR_OK).is_ok());
        assert!(CheckoutConfig::from_toml("").is_ok());
        assert!(matches!(
            refused(&EUR_OK.replace("\"0.9\"", "0.9")),
            CheckoutConfigError::Parse(_)
        ));
        assert!(matches!(
            refused(&format!("{EUR_OK}extra = 1\n")),
            CheckoutConfigError::Parse(_)
        ));
        assert_eq!(
            refused(&EUR_OK.replace("\"0.9\"", "\"-0.9\"")),
            CheckoutConfigError::Negative {
                field: "fx.EUR.per_usd".into(),
                value: d("-0.9")
            }
        );
        assert_eq!(
            refused(&EUR_OK.replace("\"0.9\"", "\"0\"")),
            CheckoutConfigError::RateNotPositive {
                field: "fx.EUR.per_usd".into()
            }
        );
        assert_eq!(
            refused(&EUR_OK.replace("markup_percent = \"1\"", "markup_percent = \"-1\"")),
            CheckoutConfigError::Negative {
                field: "fx.EUR.markup_percent".into(),
                value: d("-1")
            }
        );
        assert_eq!(
            refused(&EUR_OK.replace("markup_percent = \"1\"", "markup_percent = \"101\"")),
            CheckoutConfigError::TooLarge {
                field: "fx.EUR.markup_percent".into(),
                value: d("101"),
                max: MAX_PERCENT
            }
        );
        assert_eq!(
            refused(&EUR_OK.replace("\"0.9\"", "\"0.12345678901\"")),
            CheckoutConfigError::TooPrecise {
                field: "fx.EUR.per_usd".into(),
                value: d("0.12345678901"),
                max: MAX_RATE_DECIMALS
            }
        );
        assert_eq!(
            refused(&EUR_OK.replace("minor_units = 2", "minor_units = 5")),
            CheckoutConfigError::MinorUnitsTooLarge {
                currency: "EUR".into(),
                minor_units: 5
            }
        );
        assert_eq!(
            refused(&EUR_OK.replace("2026-11-25T12:00:00Z", "yesterday")),
            CheckoutConfigError::BadTimestamp {
                currency: "EUR".into(),
                value: "yesterday".into()
            }
        );
        assert_eq!(
            refused(&EUR_OK.replace("fx.EUR", "fx.eur")),
            CheckoutConfigError::BadCurrencyCode {
                field: "fx.eur".into(),
                code: "eur".into()
            }
        );
        assert_eq!(
            refused(&EUR_OK.replace("EUR", "USD")),
            CheckoutConfigError::UsdNotIdentity {
                field: "per_usd",
                expected: "1",
                value: "0.9".into()
            }
        );
        let usd = EUR_OK.replace("EUR", "USD").replace("\"0.9\"", "\"1.000\"");
        assert!(CheckoutConfig::from_toml(&usd).is_ok(), "USD with a markup is allowed");
        assert_eq!(
            refused(&usd.replace("minor_units = 2", "minor_units = 3")),
            CheckoutConfigError::UsdNotIdentity {
                field: "minor_units",
                expected: "2",
                value: "3".into()
            }
        );
    }

    #[test]
    fn channel_validation_errors_are_precise() {
        let channel = |body: &str| format!("{EUR_OK}[channels.card]\n{body}\n");
        assert!(CheckoutConfig::from_toml(&channel("percent = \"2.9\"\ncurrencies = [\"EUR\", \"USD\"]")).is_ok());
        assert_eq!(
            refused(&channel("percent = \"2.9\"\ncurrencies = []")),
            CheckoutConfigError::ChannelAcceptsNothing { channel: "card".into() }
        );
        assert_eq!(
            refused(&channel("percent = \"-2.9\"\ncurrencies = [\"EUR\"]")),
            CheckoutConfigError::Negative {
                field: "channels.card.percent".into(),
                value: d("-2.9")
            }
        );
        assert_eq!(
            refused(&channel("percent = \"2.9\"\ncurrencies = [\"GBP\"]")),
            CheckoutConfigError::ChannelCurrencyWithoutRate {
                channel: "card".into(),
                currency: "GBP".into()
            }
        );
        assert_eq!(
            refused(&channel(
                "percent = \"2.9\"\ncurrencies = [\"EUR\"]\nfixed = { USD = \"0.30\" }"
            )),
            CheckoutConfigError::FixedFeeForUnacceptedCurrency {
                channel: "card".into(),
                currency: "USD".into()
            }
        );
        assert_eq!(
            refused(&channel(
                "percent = \"2.9\"\ncurrencies = [\"EUR\"]\nfixed = { EUR = \"-0.30\" }"
            )),
            CheckoutConfigError::Negative {
                field: "channels.card.fixed.EUR".into(),
                value: d("-0.30")
            }
        );
        assert_eq!(
            refused(&channel(
                "percent = \"2.9\"\ncurrencies = [\"EUR\"]\nfixed = { EUR = \"0.255\" }"
            )),
            CheckoutConfigError::TooPrecise {
                field: "channels.card.fixed.EUR".into(),
                value: d("0.255"),
                max: 2
            }
        );
        assert!(matches!(
            refused(&channel(
                "percent = \"2.9\"\ncurrencies = [\"EUR\"]\nfixed = { EUR = 0.25 }"
            )),
            CheckoutConfigError::Parse(_)
        ));
    }

    /// A decimal with up to `max_decimals` places in `0..=max` (`max` whole).
    fn decimal(max: i64, max_decimals: u32) -> impl Strategy<Value = Decimal> {
        (0..=max_decimals).prop_flat_map(move |scale| {
            let top = max * 10_i64.pow(scale);
            (0..=top).prop_map(move |m| Decimal::new(m, scale))
        })
    }

    fn random_case() -> impl Strategy<Value = (CheckoutConfig, Decimal)> {
        (
            (1_i64..=1_000_000_000_i64, 0_u32..=10).prop_map(|(m, s)| Decimal::new(m, s)),
            decimal(100, 6),
            0_u32..=MAX_MINOR_UNITS,
            decimal(100, 6),
            (100_i64..=1_000_000_i64).prop_map(|cents| Decimal::new(cents, 2)),
        )
            .prop_flat_map(|(per_usd, markup, mu, percent, amount)| {
                (decimal(1_000, mu), Just((per_usd, markup, mu, percent, amount)))
            })
            .prop_map(|(fixed, (per_usd, markup, mu, percent, amount))| {
                let mut config = CheckoutConfig::default();
                config.fx.insert(
                    "XTS".into(),
                    FxRate {
                        per_usd: per_usd.min(MAX_PER_USD),
                        as_of: "2026-11-25T12:00:00Z".into(),
                        markup_percent: markup,
                        minor_units: mu,
                    },
                );
                config.channels.insert(
                    "pay".into(),
                    ChannelFee {
                        percent,
                        fixed: [("XTS".to_owned(), fixed)].into(),
                        currencies: ["XTS".to_owned()].into(),
                    },
                );
                (config, amount)
            })
    }

    proptest! {
        #[test]
        fn lines_add_up_exactly((config, amount) in random_case()) {
            prop_assert_eq!(config.validate(), Ok(()));
            let q = quote(&config, amount, "XTS", "pay").unwrap();
            let fx = &config.fx["XTS"];
            let fee = &config.channels["pay"];
            prop_assert_eq!(q.token_line_usd.to_decimal(), amount.normalize());
            prop_assert_eq!(q.converted + q.fx_cost + q.channel_fee, q.total);
            for line in [q.converted, q.fx_cost, q.channel_fee, q.total] {
                prop_assert_eq!(line.scale(), fx.minor_units);
                prop_assert!(!line.is_sign_negative() || line.is_zero());
            }
            // Each line is within half a minor unit of its exact value (computed independently).
            let half = Decimal::new(5, fx.minor_units + 1);
            let hundred = Decimal::ONE_HUNDRED;
            prop_assert!((q.converted - amount * fx.per_usd).abs() <= half);
            prop_assert!((q.fx_cost - q.converted * fx.markup_percent / hundred).abs() <= half);
            let exact_fee = (q.converted + q.fx_cost) * fee.percent / hundred + fee.fixed["XTS"];
            prop_assert!((q.channel_fee - exact_fee).abs() <= half);
        }
    }
}
