//! Exact money: US dollars as decimals, never floating point (promise 4).
//!
//! **The rounding rule.** Every amount Router One stores or shows is a whole number of
//! *units*, one unit being 10⁻¹⁰ USD. A request's cost is computed exactly with
//! [`rust_decimal::Decimal`] and then rounded once, half away from zero, to a whole unit
//! ([`Usd::from_decimal_rounded`]). Because stored amounts are integers of units, sums in SQL
//! (`SUM(cost_units)`) are exact on SQLite and PostgreSQL alike, and Σ usage-record costs equals
//! Σ ledger debits to the unit.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Decimal places of one unit: amounts are stored as integers of 10⁻¹⁰ USD.
pub const UNIT_SCALE: u32 = 10;

/// An amount of US dollars, held as a whole number of 10⁻¹⁰ USD units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(i64);

/// Why a dollar amount was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    /// The text is not a decimal number.
    #[error("`{0}` is not a decimal number of US dollars")]
    NotDecimal(String),
    /// More than ten decimal places: it cannot be held exactly.
    #[error("`{0}` has more than {UNIT_SCALE} decimal places")]
    TooPrecise(String),
    /// Larger than the store can hold.
    #[error("`{0}` is out of range")]
    OutOfRange(String),
}

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd(0);
    /// The largest amount (`i64::MAX` units): "all of it" where an amount is an upper bound.
    pub const MAX: Usd = Usd(i64::MAX);

    /// An amount from a raw count of 10⁻¹⁰ USD units (as stored).
    pub const fn from_units(units: i64) -> Usd {
        Usd(units)
    }

    /// The raw count of 10⁻¹⁰ USD units (as stored).
    pub const fn units(self) -> i64 {
        self.0
    }

    /// Converts an exact decimal without rounding; refuses values that need rounding.
    pub fn from_decimal_exact(value: Decimal) -> Result<Usd, MoneyError> {
        if value.normalize().scale() > UNIT_SCALE {
            return Err(MoneyError::TooPrecise(value.to_string()));
        }
        Self::from_decimal_rounded(value).ok_or_else(|| MoneyError::OutOfRange(value.to_string()))
    }

    /// The one rounding rule: half away from zero, to a whole unit (10⁻¹⁰ USD).
    pub fn from_decimal_rounded(value: Decimal) -> Option<Usd> {
        let rounded = value.round_dp_with_strategy(UNIT_SCALE, RoundingStrategy::MidpointAwayFromZero);
        let units = rounded.checked_mul(Decimal::from(10_i64.pow(UNIT_SCALE)))?;
        i64::try_from(units).ok().map(Usd)
    }

    /// The amount as an exact decimal, trailing zeros removed.
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, UNIT_SCALE).normalize()
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).map(Usd)
    }

    /// `self - other`, or `None` on overflow.
    pub fn checked_sub(self, other: Usd) -> Option<Usd> {
        self.0.checked_sub(other.0).map(Usd)
    }

    /// `self - other`, saturating at the bounds of the type.
    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }

    /// `self + other`, saturating at the bounds of the type.
    pub fn saturating_add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.to_decimal();
        // `normalize` can leave "-0"; show plain zero.
        if d.is_zero() {
            f.write_str("0")
        } else {
            write!(f, "{d}")
        }
    }
}

impl FromStr for Usd {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Usd, MoneyError> {
        let d = Decimal::from_str_exact(s.trim()).map_err(|_| MoneyError::NotDecimal(s.to_owned()))?;
        Usd::from_decimal_exact(d)
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Usd, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        let u: Usd = "2.50".parse().unwrap();
        assert_eq!(u.units(), 25_000_000_000);
        assert_eq!(u.to_string(), "2.5");
        assert_eq!("0.0000000001".parse::<Usd>().unwrap().units(), 1);
        assert_eq!(Usd::ZERO.to_string(), "0");
    }

    #[test]
    fn refuses_what_it_cannot_hold() {
        assert!(matches!("0.00000000001".parse::<Usd>(), Err(MoneyError::TooPrecise(_))));
        assert!(matches!("abc".parse::<Usd>(), Err(MoneyError::NotDecimal(_))));
        assert!(matches!("1e400".parse::<Usd>(), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(
            "99999999999999".parse::<Usd>(),
            Err(MoneyError::OutOfRange(_))
        ));
    }

    #[test]
    fn rounds_half_away_from_zero() {
        let d = Decimal::from_str_exact("0.00000000005").unwrap();
        assert_eq!(Usd::from_decimal_rounded(d).unwrap().units(), 1);
        let d = Decimal::from_str_exact("0.000000000049").unwrap();
        assert_eq!(Usd::from_decimal_rounded(d).unwrap().units(), 0);
    }
}
