//! Warnings that an outsider can trigger at will (forged webhooks, a connection flood) are
//! logged at most once a minute, each line saying how many occurrences it stands for, so that
//! nobody can flood the operator's log.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counts occurrences of one event and says when a line may be logged.
#[derive(Debug)]
pub(crate) struct Throttle {
    interval_s: i64,
    /// When the last line was logged, Unix seconds (`i64::MIN`: never).
    last_s: AtomicI64,
    /// Occurrences since the last line.
    count: AtomicU64,
}

impl Throttle {
    /// At most one line a minute.
    pub(crate) const fn per_minute() -> Throttle {
        Throttle {
            interval_s: 60,
            last_s: AtomicI64::new(i64::MIN),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence now.
    pub(crate) fn hit(&self) -> Option<u64> {
        self.hit_at(router_one_core::ids::now_us() / 1_000_000)
    }

    /// Counts one occurrence at `now_s`; `Some(n)` when a line should be logged, `n` being the
    /// occurrences it stands for (this one and those held back since the last line).
    pub(crate) fn hit_at(&self, now_s: i64) -> Option<u64> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let last = self.last_s.load(Ordering::Relaxed);
        let due = last == i64::MIN || now_s.saturating_sub(last) >= self.interval_s;
        if due
            && self
                .last_s
                .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.count.swap(0, Ordering::Relaxed));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_minute_counting_what_it_held_back() {
        let t = Throttle::per_minute();
        assert_eq!(t.hit_at(1_000), Some(1), "the first occurrence is logged at once");
        for s in 1_001..1_060 {
            assert_eq!(t.hit_at(s), None);
        }
        assert_eq!(t.hit_at(1_060), Some(60), "59 held back, and this one");
        assert_eq!(t.hit_at(1_061), None);
    }
}
