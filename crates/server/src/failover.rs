//! Failover within one model: which of a model's routes to try, in what order, and whether a
//! failed attempt may be tried again on the next. Every route of a model serves the same
//! upstream model at the same posted rate (the catalog guarantees it), so choosing among them
//! never changes what is served or billed: this is where "no swapping" (promise 1) meets
//! availability, and the only place that decides a retry.
//!
//! - **Order.** The model's routes in their configured order (the first is the primary), with
//!   those whose breaker is open moved to the end: traffic returns to the primary as soon as
//!   its breaker closes.
//! - **Breaker** (per route, lock-free): [`OPEN_AFTER`] failures in a row open it for
//!   [`COOL_DOWN`] (or for the upstream's `Retry-After`, if longer); after that one request may
//!   probe it (half-open); a success closes it, a failure opens it again for twice as long, up to
//!   [`MAX_COOL_DOWN`].
//! - **Retry.** Only before any byte reached the client, only for the upstream's own trouble (a
//!   connection failure, a timeout before the head, 429, 5xx, a broken or malformed answer),
//!   never for a refusal that is the client's fault, and within [`MAX_ATTEMPTS`] and the
//!   request's upstream deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use router_one_core::{ApiError, ErrorKind};
use router_one_providers::Provider;

/// Consecutive failures that open a route's breaker.
pub(crate) const OPEN_AFTER: u32 = 5;
/// How long an opened breaker keeps its route out of the first place.
pub(crate) const COOL_DOWN: Duration = Duration::from_secs(5);
/// The longest a breaker stays open before a probe.
pub(crate) const MAX_COOL_DOWN: Duration = Duration::from_secs(60);
/// The most attempts one request makes, over all routes of its model.
pub(crate) const MAX_ATTEMPTS: usize = 3;

/// Whether a failed attempt may be tried again on another route (only ever before the client
/// received a byte): the upstream's own trouble, never the client's mistake or a refusal of
/// ours.
pub(crate) fn retryable(error: &ApiError) -> bool {
    matches!(
        error.kind,
        ErrorKind::UpstreamError
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamOverloaded
            | ErrorKind::ProviderUnavailable
            | ErrorKind::RateLimited
    )
}

/// The health of every route (provider channel), by provider name.
#[derive(Debug, Default)]
pub(crate) struct Health {
    routes: HashMap<String, Breaker>,
}

impl Health {
    /// One breaker per configured provider.
    pub(crate) fn new<'a>(providers: impl IntoIterator<Item = &'a String>) -> Health {
        Health {
            routes: providers
                .into_iter()
                .map(|name| (name.clone(), Breaker::default()))
                .collect(),
        }
    }

    /// The routes whose breaker is open now, by name (for `GET /health`).
    pub(crate) fn open_routes(&self) -> Vec<&str> {
        let mut open: Vec<&str> = self
            .routes
            .iter()
            .filter(|(_, b)| b.is_open())
            .map(|(name, _)| name.as_str())
            .collect();
        open.sort_unstable();
        open
    }

    /// The breaker of `provider` (a provider configured after start has a fresh one).
    pub(crate) fn of(&self, provider: &str) -> &Breaker {
        static CLOSED: LazyLock<Breaker> = LazyLock::new(Breaker::default);
        self.routes.get(provider).unwrap_or(&CLOSED)
    }

    /// `routes` (in configured order) reordered for an attempt: the usable first, keeping their
    /// order, then those whose breaker is open.
    pub(crate) fn order<T>(&self, routes: &mut [T], provider: impl Fn(&T) -> &Arc<Provider>) {
        let now = now_ms();
        // A stable sort: a breaker's state is read once per route.
        routes.sort_by_cached_key(|r| !self.of(&provider(r).name).usable(now));
    }
}

/// One route's breaker (module doc).
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    /// Failures in a row.
    failures: AtomicU32,
    /// While open: until when (ms since [`EPOCH`]); 0 when closed.
    open_until_ms: AtomicU64,
    /// The cool-down of the last opening (doubles on a failed probe).
    cool_down_ms: AtomicU64,
    /// A probe is on its way (half-open): others keep away until it reports.
    probing: AtomicBool,
}

impl Breaker {
    /// Whether a request should try this route first: closed, or open but due a probe that
    /// nobody has taken yet.
    fn usable(&self, now: u64) -> bool {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        until == 0 || (now >= until && !self.probing.load(Ordering::Relaxed))
    }

    /// Notes an attempt starting on this route: when its breaker is open and due, this attempt
    /// is the probe.
    pub(crate) fn attempt(&self) {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        if until != 0 && now_ms() >= until {
            self.probing.store(true, Ordering::Relaxed);
        }
    }

    /// The route answered: the breaker closes.
    pub(crate) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 || self.open_until_ms.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.open_until_ms.store(0, Ordering::Relaxed);
            self.cool_down_ms.store(0, Ordering::Relaxed);
            self.probing.store(false, Ordering::Relaxed);
        }
    }

    /// The route failed with the upstream's own trouble; `retry_after` is what it asked for.
    pub(crate) fn failed(&self, retry_after: Option<Duration>) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let probe_failed = self.probing.swap(false, Ordering::Relaxed);
        if failures < OPEN_AFTER && !probe_failed && retry_after.is_none() {
            return;
        }
        let last = self.cool_down_ms.load(Ordering::Relaxed);
        let cool_down = if probe_failed && last > 0 {
            (last.saturating_mul(2)).min(millis(MAX_COOL_DOWN))
        } else {
            millis(COOL_DOWN)
        };
        let wait = cool_down.max(retry_after.map_or(0, millis));
        self.cool_down_ms.store(cool_down, Ordering::Relaxed);
        self.open_until_ms
            .store(now_ms().saturating_add(wait).max(1), Ordering::Relaxed);
    }

    /// Whether the breaker is open (or half-open, awaiting its probe).
    pub(crate) fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Relaxed) != 0
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A process-wide clock origin, so a breaker's deadline fits one atomic.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    millis(EPOCH.elapsed())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_and_a_success_closes_it() {
        let b = Breaker::default();
        for _ in 0..OPEN_AFTER - 1 {
            b.failed(None);
        }
        assert!(!b.is_open());
        b.succeeded();
        for _ in 0..OPEN_AFTER - 1 {
            b.failed(None);
        }
        assert!(!b.is_open(), "a success in between resets the count");
        b.failed(None);
        assert!(b.is_open());
        assert!(!b.usable(now_ms()));
        b.succeeded();
        assert!(!b.is_open() && b.usable(now_ms()));
    }

    #[test]
    fn a_retry_after_opens_it_at_once_for_at_least_that_long() {
        let b = Breaker::default();
        b.failed(Some(Duration::from_secs(30)));
        assert!(b.is_open());
        let until = b.open_until_ms.load(Ordering::Relaxed);
        assert!(until >= now_ms() + 29_000, "{until}");
    }

    #[test]
    fn one_probe_when_due_and_a_failed_probe_doubles_the_cool_down() {
        let b = Breaker::default();
        for _ in 0..OPEN_AFTER {
            b.failed(None);
        }
        // Due now (the clock starts at the first reading: make sure it has passed 1 ms).
        b.open_until_ms.store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        let _ = now_ms();
        std::thread::sleep(Duration::from_millis(2));
        assert!(b.usable(now_ms()));
        b.attempt();
        assert!(!b.usable(now_ms()), "one probe at a time");
        b.failed(None);
        assert_eq!(b.cool_down_ms.load(Ordering::Relaxed), 2 * millis(COOL_DOWN));
        assert!(!b.usable(now_ms()));
    }

    #[test]
    fn only_the_upstreams_trouble_is_retried() {
        for kind in [
            ErrorKind::UpstreamError,
            ErrorKind::UpstreamTimeout,
            ErrorKind::UpstreamOverloaded,
            ErrorKind::ProviderUnavailable,
            ErrorKind::RateLimited,
        ] {
            assert!(retryable(&ApiError::new(kind, "x")), "{kind:?}");
        }
        for kind in [
            ErrorKind::InvalidRequest,
            ErrorKind::InvalidJson,
            ErrorKind::BodyTooLarge,
            ErrorKind::ModelNotFound,
            ErrorKind::InsufficientQuota,
            ErrorKind::UsageUnavailable,
        ] {
            assert!(!retryable(&ApiError::new(kind, "x")), "{kind:?}");
        }
    }
}
