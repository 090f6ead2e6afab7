//! Budgets that never overshoot (promise 3). An account's prepaid balance and a key's
//! `max_spend` are each a [`Budget`]: a request first reserves its worst-case cost, which succeeds
//! only if what is left covers it, and later settles its real cost. Each budget has its own small
//! lock, held for a few instructions; there is no global lock.
//!
//! A key's budget may reset with a calendar period (daily, weekly, monthly, UTC): when a request
//! arrives after the period's end, the spend starts again from zero. Reservations in flight stay
//! held across the boundary.

use std::sync::Mutex;

use router_one_core::Usd;
use router_one_core::store::BudgetPeriod;

/// Money that requests draw on: a limit, what was spent, and what is reserved in flight.
#[derive(Debug)]
pub struct Budget {
    state: Mutex<BudgetState>,
}

#[derive(Debug, Clone, Copy)]
struct BudgetState {
    /// What may be spent in all, or per period (an account: its balance when loaded plus credits
    /// since).
    limit: Option<Usd>,
    /// Settled spend since loaded, or in the current period.
    spent: Usd,
    /// Reserved by requests in flight.
    reserved: Usd,
    /// When the spend resets.
    period: BudgetPeriod,
    /// End of the current period, µs (`i64::MAX` without one).
    period_end_us: i64,
}

/// A budget could not cover a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// What was left when the reservation was refused.
    pub available: Usd,
    /// What requests in flight held then: released (or spent) when they finish, so a request
    /// that fits in `available + held` may fit shortly.
    pub held: Usd,
    /// When a periodic budget starts again (`None`: a lifetime budget, used up for good).
    pub resets_at_us: Option<i64>,
}

/// A budget's state at one moment, for read-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// The limit (`None`: unlimited).
    pub limit: Option<Usd>,
    /// Spend since loaded, or in the current period.
    pub spent: Usd,
    /// Held by requests in flight.
    pub reserved: Usd,
    /// What is left to reserve (`None`: unlimited).
    pub available: Option<Usd>,
    /// The current period `[start, end)`, µs, for a periodic budget.
    pub window_us: Option<(i64, i64)>,
}

impl Budget {
    /// A lifetime budget of `limit` (`None`: unlimited) with `spent` already settled against it.
    pub fn new(limit: Option<Usd>, spent: Usd) -> Budget {
        Budget::periodic(limit, BudgetPeriod::None, spent, 0)
    }

    /// A budget of `limit` per `period`, with `spent` settled in the period containing `now_us`.
    pub fn periodic(limit: Option<Usd>, period: BudgetPeriod, spent: Usd, now_us: i64) -> Budget {
        Budget {
            state: Mutex::new(BudgetState {
                limit,
                spent,
                reserved: Usd::ZERO,
                period,
                period_end_us: period.window(now_us).map_or(i64::MAX, |(_, end)| end),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BudgetState) -> T) -> T {
        // A poisoned lock only means another thread panicked between two plain assignments;
        // the numbers are still consistent, so keep going.
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Reserves the amount `fit` picks given what is left (`None`: unlimited); `fit` returning
    /// `None` refuses. Atomic: what `fit` sees is what is reserved against.
    pub fn reserve_fit(&self, now_us: i64, fit: impl FnOnce(Option<Usd>) -> Option<Usd>) -> Result<Usd, Exhausted> {
        self.with(|s| {
            s.roll(now_us);
            let available = s.available();
            let refused = Exhausted {
                available: available.unwrap_or(Usd::ZERO),
                held: s.reserved,
                resets_at_us: (s.period != BudgetPeriod::None).then_some(s.period_end_us),
            };
            match fit(available) {
                Some(amount) if available.is_none_or(|a| amount <= a) => {
                    s.reserved = s.reserved.saturating_add(amount);
                    Ok(amount)
                }
                _ => Err(refused),
            }
        })
    }

    /// Reserves exactly `amount` if what is left covers it.
    pub fn reserve(&self, amount: Usd, now_us: i64) -> Result<(), Exhausted> {
        self.reserve_fit(now_us, |_| Some(amount)).map(|_| ())
    }

    /// Ends a reservation of `reserved`, spending `actual` (which may exceed it: the upstream's
    /// report is the truth, and it is recorded as such).
    pub fn settle(&self, reserved: Usd, actual: Usd) {
        self.with(|s| {
            s.reserved = s.reserved.saturating_sub(reserved);
            s.spent = s.spent.saturating_add(actual);
        });
    }

    /// The budget now.
    pub fn snapshot(&self, now_us: i64) -> BudgetSnapshot {
        self.with(|s| {
            s.roll(now_us);
            BudgetSnapshot {
                limit: s.limit,
                spent: s.spent,
                reserved: s.reserved,
                available: s.available(),
                window_us: s.period.window(now_us),
            }
        })
    }

    /// What is left to reserve (`None`: unlimited).
    pub fn available(&self) -> Option<Usd> {
        self.with(|s| s.available())
    }

    /// What is reserved by requests in flight.
    pub fn reserved(&self) -> Usd {
        self.with(|s| s.reserved)
    }

    /// Settled spend since loaded (or in the current period).
    pub fn spent(&self) -> Usd {
        self.with(|s| s.spent)
    }

    /// Moves the limit by `delta` (an account credited or debited elsewhere: a top-up, a refund,
    /// an operator adjustment). An unlimited budget stays unlimited.
    pub fn add_to_limit(&self, delta: Usd) {
        self.with(|s| s.limit = s.limit.map(|l| l.saturating_add(delta)));
    }

    /// Replaces the limit (a key's `max_spend` edited), keeping spend and reservations.
    pub fn set_limit(&self, limit: Option<Usd>) {
        self.with(|s| s.limit = limit);
    }

    /// Replaces limit and period, with `spent` the spend already settled in the period containing
    /// `now_us` (a key's `budget_period` edited). Reservations in flight stay held.
    pub fn reset(&self, limit: Option<Usd>, period: BudgetPeriod, spent: Usd, now_us: i64) {
        self.with(|s| {
            s.limit = limit;
            s.period = period;
            s.spent = spent;
            s.period_end_us = period.window(now_us).map_or(i64::MAX, |(_, end)| end);
        });
    }
}

impl BudgetState {
    fn available(&self) -> Option<Usd> {
        self.limit
            .map(|l| l.saturating_sub(self.spent).saturating_sub(self.reserved))
    }

    /// Starts a new period if `now_us` is past the current one.
    fn roll(&mut self, now_us: i64) {
        if now_us >= self.period_end_us {
            self.spent = Usd::ZERO;
            self.period_end_us = self.period.window(now_us).map_or(i64::MAX, |(_, end)| end);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const DAY_US: i64 = 86_400_000_000;

    #[test]
    fn reserves_only_what_is_left() {
        let b = Budget::new(Some(Usd::from_units(100)), Usd::from_units(30));
        assert!(b.reserve(Usd::from_units(70), 0).is_ok());
        assert_eq!(
            b.reserve(Usd::from_units(1), 0),
            Err(Exhausted {
                available: Usd::ZERO,
                held: Usd::from_units(70),
                resets_at_us: None
            })
        );
        b.settle(Usd::from_units(70), Usd::from_units(20));
        assert_eq!(b.available(), Some(Usd::from_units(50)));
        assert_eq!(b.reserved(), Usd::ZERO);
    }

    #[test]
    fn fit_reserves_what_it_picks_from_what_is_left() {
        let b = Budget::new(Some(Usd::from_units(100)), Usd::ZERO);
        let got = b.reserve_fit(0, |left| left.map(|l| l.saturating_sub(Usd::from_units(10))));
        assert_eq!(got, Ok(Usd::from_units(90)));
        assert_eq!(b.available(), Some(Usd::from_units(10)));
        assert!(b.reserve_fit(0, |_| None).is_err());
        assert!(b.reserve_fit(0, |_| Some(Usd::from_units(11))).is_err());
        assert_eq!(b.reserved(), Usd::from_units(90));
    }

    #[test]
    fn a_daily_budget_starts_again_each_utc_day() {
        let day = 20_000 * DAY_US;
        let b = Budget::periodic(
            Some(Usd::from_units(100)),
            BudgetPeriod::Daily,
            Usd::from_units(90),
            day + 5,
        );
        let e = b.reserve(Usd::from_units(20), day + 10).unwrap_err();
        assert_eq!(e.resets_at_us, Some(day + DAY_US));
        b.reserve(Usd::from_units(5), day + 10).unwrap();
        // Next day: spend starts again; the reservation in flight is still held.
        assert!(b.reserve(Usd::from_units(96), day + DAY_US).is_err());
        b.reserve(Usd::from_units(95), day + DAY_US).unwrap();
        let snap = b.snapshot(day + DAY_US + 1);
        assert_eq!((snap.spent, snap.reserved), (Usd::ZERO, Usd::from_units(100)));
        assert_eq!(snap.window_us, Some((day + DAY_US, day + 2 * DAY_US)));
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let b = Arc::new(Budget::new(Some(Usd::from_units(1_000)), Usd::ZERO));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1_000).filter(|_| b.reserve(Usd::from_units(3), 0).is_ok()).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 333);
        assert_eq!(b.available(), Some(Usd::from_units(1)));
    }
}
