//! A reservation: the worst-case cost of one request, held against the key's `max_spend` and the
//! account's balance until settled. Dropping it unsettled releases it, so an early return or a
//! panic never leaks reserved money.

use std::sync::Arc;

use router_one_core::{ApiError, ErrorKind, Usd};

use crate::index::KeyState;

/// Money held for one request in flight.
#[derive(Debug)]
pub struct Reservation {
    key: Arc<KeyState>,
    amount: Usd,
    settled: bool,
}

impl Reservation {
    /// Reserves `amount` against the key's budget, then the account's; refuses if either
    /// cannot cover it.
    pub fn new(key: Arc<KeyState>, amount: Usd) -> Result<Reservation, ApiError> {
        if let Err(e) = key.spend.reserve(amount) {
            return Err(ApiError::new(
                ErrorKind::InsufficientQuota,
                format!(
                    "This API key's spending limit is used up: the request may cost up to ${amount} and ${} is left. \
                     Raise the key's max_spend or lower max_tokens.",
                    e.available
                ),
            ));
        }
        if let Err(e) = key.account.reserve(amount) {
            key.spend.settle(amount, Usd::ZERO);
            return Err(ApiError::new(
                ErrorKind::InsufficientQuota,
                format!(
                    "Your prepaid balance cannot cover this request: it may cost up to ${amount} and ${} is available. \
                     Top up or lower max_tokens.",
                    e.available
                ),
            ));
        }
        Ok(Reservation {
            key,
            amount,
            settled: false,
        })
    }

    /// Ends the reservation, spending `actual`.
    pub fn settle(mut self, actual: Usd) {
        self.finish(actual);
    }

    fn finish(&mut self, actual: Usd) {
        if !self.settled {
            self.settled = true;
            self.key.spend.settle(self.amount, actual);
            self.key.account.settle(self.amount, actual);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.finish(Usd::ZERO);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::index::KeyIndex;
    use router_one_core::store::{ApiKey, KeySettings};

    fn index_with(balance: i64, max_spend: Option<i64>) -> Arc<KeyState> {
        let index = KeyIndex::default();
        let key = ApiKey {
            id: "key_1".into(),
            account_id: "acct_1".into(),
            secret_hash: "h".into(),
            hint: String::new(),
            settings: KeySettings {
                max_spend: max_spend.map(Usd::from_units),
                ..Default::default()
            },
            created_at_us: 0,
            revoked_at_us: None,
            spend: Usd::ZERO,
        };
        index.insert(&key, Usd::from_units(balance))
    }

    #[test]
    fn drop_releases_and_settle_spends() {
        let key = index_with(100, None);
        drop(Reservation::new(key.clone(), Usd::from_units(60)).unwrap());
        assert_eq!(key.account.available(), Some(Usd::from_units(100)));
        Reservation::new(key.clone(), Usd::from_units(60))
            .unwrap()
            .settle(Usd::from_units(10));
        assert_eq!(key.account.available(), Some(Usd::from_units(90)));
    }

    #[test]
    fn refused_by_key_or_account_and_leaks_nothing() {
        let key = index_with(100, Some(50));
        let e = Reservation::new(key.clone(), Usd::from_units(60)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InsufficientQuota);
        let key = index_with(40, Some(50));
        assert!(Reservation::new(key.clone(), Usd::from_units(45)).is_err());
        assert_eq!(key.spend.reserved(), Usd::ZERO);
        assert_eq!(key.account.reserved(), Usd::ZERO);
    }
}
