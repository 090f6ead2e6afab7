//! Budgets that never overshoot (promise 3). An account's prepaid balance and a key's
//! `max_spend` are each a [`Budget`]: a request first reserves its worst-case cost, which succeeds
//! only if what is left covers it, and later settles its real cost. Each budget has its own small
//! lock, held for a few instructions; there is no global lock.

use std::sync::Mutex;

use router_one_core::Usd;

/// Money that requests draw on: a limit, what was spent, and what is reserved in flight.
#[derive(Debug)]
pub struct Budget {
    state: Mutex<BudgetState>,
}

#[derive(Debug, Clone, Copy)]
struct BudgetState {
    /// What may be spent in all (an account: its balance when loaded plus credits since).
    limit: Option<Usd>,
    /// Settled spend since loaded.
    spent: Usd,
    /// Reserved by requests in flight.
    reserved: Usd,
}

/// A budget could not cover a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// What was left when the reservation was refused.
    pub available: Usd,
}

impl Budget {
    /// A budget of `limit` (`None`: unlimited) with `spent` already settled against it.
    pub fn new(limit: Option<Usd>, spent: Usd) -> Budget {
        Budget {
            state: Mutex::new(BudgetState {
                limit,
                spent,
                reserved: Usd::ZERO,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BudgetState) -> T) -> T {
        // A poisoned lock only means another thread panicked between two plain assignments;
        // the numbers are still consistent, so keep going.
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Reserves `amount` if what is left covers it.
    pub fn reserve(&self, amount: Usd) -> Result<(), Exhausted> {
        self.with(|s| {
            let available = s.available();
            if let Some(available) = available
                && amount > available
            {
                return Err(Exhausted { available });
            }
            s.reserved = s.reserved.saturating_add(amount);
            Ok(())
        })
    }

    /// Ends a reservation of `reserved`, spending `actual` (which may exceed it: the upstream's
    /// report is the truth, and it is recorded as such).
    pub fn settle(&self, reserved: Usd, actual: Usd) {
        self.with(|s| {
            s.reserved = s.reserved.saturating_sub(reserved);
            s.spent = s.spent.saturating_add(actual);
        });
    }

    /// What is left to reserve (`None`: unlimited).
    pub fn available(&self) -> Option<Usd> {
        self.with(|s| s.available())
    }

    /// What is reserved by requests in flight.
    pub fn reserved(&self) -> Usd {
        self.with(|s| s.reserved)
    }

    /// Settled spend since loaded.
    pub fn spent(&self) -> Usd {
        self.with(|s| s.spent)
    }

    /// Replaces the limit (a key's `max_spend` edited), keeping spend and reservations.
    pub fn set_limit(&self, limit: Option<Usd>) {
        self.with(|s| s.limit = limit);
    }
}

impl BudgetState {
    fn available(&self) -> Option<Usd> {
        self.limit
            .map(|l| l.saturating_sub(self.spent).saturating_sub(self.reserved))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reserves_only_what_is_left() {
        let b = Budget::new(Some(Usd::from_units(100)), Usd::from_units(30));
        assert!(b.reserve(Usd::from_units(70)).is_ok());
        assert_eq!(b.reserve(Usd::from_units(1)), Err(Exhausted { available: Usd::ZERO }));
        b.settle(Usd::from_units(70), Usd::from_units(20));
        assert_eq!(b.available(), Some(Usd::from_units(50)));
        assert_eq!(b.reserved(), Usd::ZERO);
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let b = Arc::new(Budget::new(Some(Usd::from_units(1_000)), Usd::ZERO));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1_000).filter(|_| b.reserve(Usd::from_units(3)).is_ok()).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 333);
        assert_eq!(b.available(), Some(Usd::from_units(1)));
    }
}
