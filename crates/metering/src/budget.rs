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
    /// A cluster node is topping this share up in the background (one at a time).
    refilling: std::sync::atomic::AtomicBool,
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
    /// A cluster node's budget: `limit` is what its leases on the scope hold for the current
    /// period (granted by the database), not the scope's cap; a new period starts at zero until
    /// a lease on it is granted.
    leased: bool,
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
        Budget::with_state(limit, period, spent, now_us, false)
    }

    /// A cluster node's share of a scope (an account's balance, or a key's `max_spend` per
    /// `period`): nothing to spend until [`Budget::grant`] adds what a lease granted, and back
    /// to nothing when a new period starts (its money is leased per period).
    pub fn leased(period: BudgetPeriod, now_us: i64) -> Budget {
        Budget::with_state(Some(Usd::ZERO), period, Usd::ZERO, now_us, true)
    }

    fn with_state(limit: Option<Usd>, period: BudgetPeriod, spent: Usd, now_us: i64, leased: bool) -> Budget {
        Budget {
            state: Mutex::new(BudgetState {
                limit,
                spent,
                reserved: Usd::ZERO,
                period,
                period_end_us: period.window(now_us).map_or(i64::MAX, |(_, end)| end),
                leased,
            }),
            refilling: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Adds what a lease granted for the period containing `now_us` (nothing, if a new period
    /// started since the grant was asked for: that money belongs to the old period's lease).
    pub fn grant(&self, amount: Usd, period_start_us: i64, now_us: i64) {
        self.with(|s| {
            s.roll(now_us);
            let current = s.period.window(now_us).map_or(0, |(start, _)| start);
            if current == period_start_us {
                s.limit = s.limit.map(|l| l.saturating_add(amount));
            }
        });
    }

    /// Takes back up to `most` of what is neither spent nor reserved (to return to the
    /// database), lowering the limit by as much; returns what was taken.
    pub fn take_unused(&self, most: Usd, now_us: i64) -> Usd {
        self.with(|s| {
            s.roll(now_us);
            let Some(available) = s.available() else {
                return Usd::ZERO;
            };
            let taken = available.min(most);
            s.limit = s.limit.map(|l| l.saturating_sub(taken));
            taken
        })
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

    /// What is left to reserve at `now_us` (a periodic budget past its period starts over).
    pub fn available_at(&self, now_us: i64) -> Option<Usd> {
        self.with(|s| {
            s.roll(now_us);
            s.available()
        })
    }

    /// The start of the budget period containing `now_us`, µs (0: a lifetime budget).
    pub fn period_start_at(&self, now_us: i64) -> i64 {
        self.with(|s| s.period.window(now_us).map_or(0, |(start, _)| start))
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

    /// A leased share whose key was edited: `limit` is `Some(0)` (a fresh, empty share of the
    /// new cap) or `None` (the key no longer has a cap); spend restarts at zero, reservations in
    /// flight stay held.
    pub fn reset_leased(&self, limit: Option<Usd>, period: BudgetPeriod, now_us: i64) {
        self.with(|s| {
            s.limit = limit;
            s.period = period;
            s.spent = Usd::ZERO;
            s.leased = limit.is_some();
            s.period_end_us = period.window(now_us).map_or(i64::MAX, |(_, end)| end);
        });
    }

    /// Claims the right to top this share up in the background: true for one caller until
    /// [`Budget::end_refill`] (so a busy share starts one refill, not one per request).
    pub fn begin_refill(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.refilling
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Ends a background refill claimed with [`Budget::begin_refill`].
    pub fn end_refill(&self) {
        self.refilling.store(false, std::sync::atomic::Ordering::Release);
    }

    /// Whether this is a cluster node's leased share ([`Budget::leased`]).
    pub fn is_leased(&self) -> bool {
        self.with(|s| s.leased)
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
            if self.leased {
                self.limit = Some(Usd::ZERO);
            }
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

    #[test]
    fn a_leased_share_spends_only_what_was_granted_and_gives_back_only_what_is_unused() {
        let b = Budget::leased(BudgetPeriod::None, 0);
        assert_eq!(b.available(), Some(Usd::ZERO), "nothing before a grant");
        assert!(b.reserve(Usd::from_units(1), 0).is_err());
        b.grant(Usd::from_units(100), 0, 0);
        b.reserve(Usd::from_units(60), 0).unwrap();
        // In flight money is never given back; what is unused is, once.
        assert_eq!(b.take_unused(Usd::MAX, 0), Usd::from_units(40));
        assert_eq!(b.take_unused(Usd::MAX, 0), Usd::ZERO);
        b.settle(Usd::from_units(60), Usd::from_units(25));
        assert_eq!(b.take_unused(Usd::from_units(10), 0), Usd::from_units(10));
        assert_eq!(b.available(), Some(Usd::from_units(25)));
    }

    #[test]
    fn a_leased_periodic_share_starts_empty_in_each_period_and_ignores_late_grants() {
        let b = Budget::leased(BudgetPeriod::Daily, DAY_US + 5);
        b.grant(Usd::from_units(100), DAY_US, DAY_US + 5);
        assert_eq!(b.available_at(DAY_US + 6), Some(Usd::from_units(100)));
        // The next day: the old day's lease money is not this day's.
        assert_eq!(b.available_at(2 * DAY_US), Some(Usd::ZERO));
        b.grant(Usd::from_units(70), DAY_US, 2 * DAY_US);
        assert_eq!(
            b.available_at(2 * DAY_US),
            Some(Usd::ZERO),
            "a grant for the past period"
        );
        b.grant(Usd::from_units(70), 2 * DAY_US, 2 * DAY_US);
        assert_eq!(b.available_at(2 * DAY_US + 1), Some(Usd::from_units(70)));
        assert_eq!(b.period_start_at(2 * DAY_US + 1), 2 * DAY_US);
    }
}
