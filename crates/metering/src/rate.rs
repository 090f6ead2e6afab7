//! Per-key rate limits: requests per minute (RPM), tokens per minute (TPM) and concurrent requests.
//!
//! This module owns admission by *rate*, not by money: a request is admitted only if the key's
//! current 60-second window still has a request and enough tokens left (the prompt plus the
//! output tokens it may produce, reserved up front and replaced by the actual count after), and a
//! concurrency slot is free. Nothing is counted for a refused request, so limits cannot overshoot
//! and a refusal costs the client nothing.
//!
//! Windows are fixed: a key's window starts at the first admitted request after the previous one
//! ended and lasts [`WINDOW`], so a burst of `N + k` requests against `rpm = N` admits exactly `N`
//! and `reset` is the honest time until the window ends.
//!
//! The interface is the [`RateLimiter`] trait, keyed by the key's id string, so that a
//! Redis-backed implementation (for several gateway nodes sharing one key's limits) slots in
//! behind it later; [`RateGrant`] talks back to its limiter through [`GrantBackend`], which such
//! an implementation provides too. [`InProcessLimiter`] is the single-node implementation: one
//! small mutex per key in a sharded map, no global lock.
//!
//! Responses carry OpenAI's `x-ratelimit-*` headers ([`RateSnapshot::headers`]) because relays
//! (one-api, new-api) read them, and a 429 carries `Retry-After` ([`RateRefusal::headers`]).
//! Every function takes the time as an argument so tests control the clock.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// The length of one rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How long a client refused for concurrency is told to wait: a slot frees when some request in
/// flight finishes, which the limiter cannot foresee, and `Retry-After` counts whole seconds.
const CONCURRENCY_RETRY: Duration = Duration::from_secs(1);

/// Every this many new keys, windows that are over and unused are pruned from the map.
const PRUNE_EVERY: u64 = 1024;

/// A key's rate limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    /// Requests admitted per window.
    pub rpm: Option<u64>,
    /// Tokens (prompt plus reserved output) per window.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub concurrency: Option<u64>,
}

impl RateLimits {
    /// No limit at all.
    pub const UNLIMITED: RateLimits = RateLimits {
        rpm: None,
        tpm: None,
        concurrency: None,
    };

    /// Whether any limit is set (an unlimited key never touches the limiter's state).
    pub fn is_limited(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.concurrency.is_some()
    }
}

/// How many output tokens a request asks to be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputAsk {
    /// The client named `max_tokens`: the request needs the prompt plus exactly this many tokens.
    Exactly(u64),
    /// The client named no `max_tokens`: grant as many output tokens as the window has left after
    /// the prompt, at most `max`; refuse if fewer than `min` are left (`min` above `max` counts as
    /// `max`).
    UpTo {
        /// The most output tokens worth reserving (the model's output limit).
        max: u64,
        /// The fewest output tokens worth sending the request with.
        min: u64,
    },
}

/// The tokens a request asks for at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenAsk {
    /// Prompt tokens (an estimate is fine; [`RateGrant::settle`] corrects it).
    pub prompt: u64,
    /// Output tokens to reserve.
    pub output: OutputAsk,
}

impl TokenAsk {
    /// The fewest tokens this request can be admitted with.
    pub fn min_tokens(&self) -> u64 {
        match self.output {
            OutputAsk::Exactly(n) => self.prompt.saturating_add(n),
            OutputAsk::UpTo { max, min } => self.prompt.saturating_add(min.min(max)),
        }
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Concurrent requests.
    Concurrency,
}

/// One windowed limit as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// The limit per window.
    pub limit: u64,
    /// What is left of it in the current window.
    pub remaining: u64,
    /// Time until the current window ends and `remaining` is back to `limit`.
    pub reset: Duration,
}

/// The windowed limits of a key at one moment, for the `x-ratelimit-*` response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateSnapshot {
    /// Requests per minute, if limited.
    pub requests: Option<Counter>,
    /// Tokens per minute, if limited.
    pub tokens: Option<Counter>,
}

impl RateSnapshot {
    fn new(limits: &RateLimits, requests: u64, tokens: u64, reset: Duration) -> RateSnapshot {
        let counter = |limit: u64, used: u64| Counter {
            limit,
            remaining: limit.saturating_sub(used),
            reset,
        };
        RateSnapshot {
            requests: limits.rpm.map(|l| counter(l, requests)),
            tokens: limits.tpm.map(|l| counter(l, tokens)),
        }
    }

    /// OpenAI's rate-limit headers for the limits that are set: `x-ratelimit-limit-*`,
    /// `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` (a Go-style duration such as `6m0s`).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(6);
        if let Some(c) = &self.requests {
            out.push(("x-ratelimit-limit-requests", c.limit.to_string()));
            out.push(("x-ratelimit-remaining-requests", c.remaining.to_string()));
            out.push(("x-ratelimit-reset-requests", format_duration(c.reset)));
        }
        if let Some(c) = &self.tokens {
            out.push(("x-ratelimit-limit-tokens", c.limit.to_string()));
            out.push(("x-ratelimit-remaining-tokens", c.remaining.to_string()));
            out.push(("x-ratelimit-reset-tokens", format_duration(c.reset)));
        }
        out
    }
}

/// Formats a duration the way OpenAI's `x-ratelimit-reset-*` headers do (Go's
/// `time.Duration` format) at millisecond precision, rounding up so a client never retries
/// early: `0s`, `20ms`, `1s`, `1.5s`, `59s`, `6m0s`, `1h2m3s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = ms / 60_000 % 60;
    let seconds = ms / 1000 % 60;
    let millis = ms % 1000;
    let mut out = String::new();
    // Writing to a String cannot fail.
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{seconds}");
    if millis > 0 {
        let frac = format!("{millis:03}");
        let _ = write!(out, ".{}", frac.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0)).max(1)
}

/// Why a request was not admitted. Nothing was counted for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRefusal {
    /// The limit that refused it.
    pub limit: Which,
    /// How long until retrying can succeed (for [`Which::Concurrency`], a short guess: a slot
    /// frees whenever a request in flight finishes).
    pub retry_after: Duration,
    /// The key's windowed limits at refusal, unchanged by it.
    pub snapshot: RateSnapshot,
    /// The value of the refusing limit (requests or tokens per minute, or concurrent requests).
    pub allowed: u64,
    /// What the request needed of it: 1 request or slot, or the fewest tokens it could pass with.
    pub requested: u64,
}

impl RateRefusal {
    /// Whether the request can never pass however long the client waits (its tokens alone exceed
    /// the TPM limit, or a limit is 0). A caller may answer 400 instead of 429 for it.
    pub fn never_fits(&self) -> bool {
        self.requested > self.allowed
    }

    /// `Retry-After` in whole seconds (rounded up, at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        retry_after_secs(self.retry_after)
    }

    /// The headers of the 429: the `x-ratelimit-*` headers and `retry-after`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = self.snapshot.headers();
        out.push(("retry-after", self.retry_after_secs().to_string()));
        out
    }

    /// A message for the client saying which limit refused the request and when to retry.
    /// It avoids words that make relays disable a channel (those about money).
    pub fn message(&self) -> String {
        let wait = format_duration(Duration::from_secs(self.retry_after_secs()));
        match self.limit {
            Which::Tokens if self.never_fits() => format!(
                "Request too large for this API key's rate limit: it needs {} tokens (prompt plus max_tokens), more \
                 than the limit of {} tokens per minute, so it can never be admitted; lower max_tokens or shorten the \
                 prompt.",
                self.requested, self.allowed
            ),
            Which::Tokens => {
                let left = self.snapshot.tokens.map_or(0, |c| c.remaining);
                format!(
                    "Rate limit reached for this API key: {} tokens per minute, {left} left in this window and this \
                     request needs {}. Try again in {wait}, or lower max_tokens.",
                    self.allowed, self.requested
                )
            }
            Which::Requests if self.never_fits() => {
                "This API key's rate limit allows 0 requests per minute; no request can be admitted.".to_owned()
            }
            Which::Requests => format!(
                "Rate limit reached for this API key: {} requests per minute. Try again in {wait}.",
                self.allowed
            ),
            Which::Concurrency if self.never_fits() => {
                "This API key's rate limit allows 0 concurrent requests; no request can be admitted.".to_owned()
            }
            Which::Concurrency => format!(
                "Too many concurrent requests for this API key: at most {} at a time. Try again in {wait}, when one \
                 has finished.",
                self.allowed
            ),
        }
    }
}

impl fmt::Display for RateRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for RateRefusal {}

/// Admission by rate, per key id. Implementations: [`InProcessLimiter`] now, a Redis-backed one
/// for several nodes later.
pub trait RateLimiter: Send + Sync + fmt::Debug {
    /// Admits one request of key `key_id` under `limits` at time `now`, counting one request and
    /// reserving its tokens and a concurrency slot in the returned grant, or refuses it, counting
    /// nothing.
    fn acquire(&self, key_id: &str, limits: &RateLimits, ask: TokenAsk, now: Instant)
    -> Result<RateGrant, RateRefusal>;

    /// The key's windowed limits at `now`, without counting anything.
    fn peek(&self, key_id: &str, limits: &RateLimits, now: Instant) -> RateSnapshot;
}

/// What a [`RateGrant`] needs from the limiter that issued it; each [`RateLimiter`]
/// implementation provides one.
pub trait GrantBackend: Send + Sync + fmt::Debug {
    /// Replaces `from` counted tokens by `to` in window `window` if it is still the key's current
    /// window; returns whether it was (in a later window there is nothing to adjust).
    fn adjust_tokens(&self, window: u64, from: u64, to: u64) -> bool;

    /// Gives back one concurrency slot.
    fn release_slot(&self);
}

/// An admitted request: one request counted, its tokens reserved and (for a limited key) a
/// concurrency slot held. The slot is released when the grant is dropped, settled or not, so an
/// early return or a panic never leaks it. Dropped unsettled, the token reservation stays counted
/// in its window (the request may have run upstream) and ends with the window; call
/// [`settle`](RateGrant::settle) with `0` if the request was never sent.
#[derive(Debug)]
#[must_use = "dropping a grant releases its concurrency slot"]
pub struct RateGrant {
    backend: Option<Arc<dyn GrantBackend>>,
    window: u64,
    prompt: u64,
    output: u64,
    counted: u64,
    holds_slot: bool,
    snapshot: RateSnapshot,
}

impl RateGrant {
    /// A grant issued by a [`RateLimiter`] implementation: `window` is the backend's id of the
    /// window the tokens (`prompt + output`) were counted in; `holds_slot` whether a concurrency
    /// slot was taken (released through `backend` on drop).
    pub fn new(
        backend: Option<Arc<dyn GrantBackend>>,
        window: u64,
        prompt: u64,
        output: u64,
        holds_slot: bool,
        snapshot: RateSnapshot,
    ) -> RateGrant {
        RateGrant {
            backend,
            window,
            prompt,
            output,
            counted: prompt.saturating_add(output),
            holds_slot,
            snapshot,
        }
    }

    /// A grant for a key without limits: nothing counted, the output asked for granted in full.
    pub fn unlimited(ask: TokenAsk) -> RateGrant {
        let output = match ask.output {
            OutputAsk::Exactly(n) => n,
            OutputAsk::UpTo { max, .. } => max,
        };
        RateGrant::new(None, 0, ask.prompt, output, false, RateSnapshot::default())
    }

    /// Output tokens granted (for [`OutputAsk::UpTo`], what the window had left, at most `max`).
    pub fn granted_output(&self) -> u64 {
        self.output
    }

    /// Prompt tokens counted at admission.
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt
    }

    /// Tokens this grant currently counts against its window.
    pub fn counted_tokens(&self) -> u64 {
        self.counted
    }

    /// The key's windowed limits right after admission (this request counted), for the
    /// `x-ratelimit-*` headers of the response.
    pub fn snapshot(&self) -> &RateSnapshot {
        &self.snapshot
    }

    /// Lowers the granted output to `output` (no-op if it is not lower), giving the difference
    /// back to the window if it is still current. Use it after clamping `max_tokens` for other
    /// reasons (money), before sending the request.
    pub fn shrink_output(&mut self, output: u64) {
        let Some(give_back) = self.output.checked_sub(output).filter(|&d| d > 0) else {
            return;
        };
        let counted = self.counted.saturating_sub(give_back);
        let current = self
            .backend
            .as_ref()
            .is_some_and(|b| b.adjust_tokens(self.window, self.counted, counted));
        if current && let Some(tokens) = &mut self.snapshot.tokens {
            tokens.remaining = tokens.remaining.saturating_add(give_back).min(tokens.limit);
        }
        self.counted = counted;
        self.output = output;
    }

    /// Ends the grant with the request's actual token count (prompt plus output): it replaces
    /// the reservation if the grant's window is still current, and the slot is released.
    pub fn settle(mut self, actual_tokens: u64) {
        if let Some(b) = &self.backend {
            b.adjust_tokens(self.window, self.counted, actual_tokens);
        }
        self.counted = actual_tokens;
    }
}

impl Drop for RateGrant {
    fn drop(&mut self) {
        if self.holds_slot
            && let Some(b) = &self.backend
        {
            self.holds_slot = false;
            b.release_slot();
        }
    }
}

/// One key's current window and slots.
#[derive(Debug, Default)]
struct KeyWindow {
    state: Mutex<WindowState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct WindowState {
    /// When the current window started; `None` before the first admission.
    start: Option<Instant>,
    /// Counts windows, so a grant can tell whether its window is still the current one.
    epoch: u64,
    /// Requests admitted in the current window.
    requests: u64,
    /// Tokens counted in the current window.
    tokens: u64,
    /// Grants alive (slots held).
    in_flight: u64,
}

impl WindowState {
    /// The start of the current window if it has not ended at `now`.
    fn live_start(&self, now: Instant) -> Option<Instant> {
        self.start.filter(|&s| now.saturating_duration_since(s) < WINDOW)
    }
}

impl KeyWindow {
    fn lock(&self) -> MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the window is over and no slot is held (then forgetting it changes nothing).
    fn is_idle(&self, now: Instant) -> bool {
        let state = match self.state.try_lock() {
            Ok(guard) => *guard,
            Err(TryLockError::Poisoned(p)) => *p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        state.in_flight == 0 && state.live_start(now).is_none()
    }
}

impl GrantBackend for KeyWindow {
    fn adjust_tokens(&self, window: u64, from: u64, to: u64) -> bool {
        let mut state = self.lock();
        if state.epoch != window {
            return false;
        }
        state.tokens = state.tokens.saturating_sub(from).saturating_add(to);
        true
    }

    fn release_slot(&self) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

/// The single-node [`RateLimiter`]: a sharded map from key id to a small per-key mutex. Admission
/// costs a hash lookup and a few instructions under that key's mutex; no global lock. Windows
/// that are over and hold no slot are pruned lazily as new keys arrive.
#[derive(Debug, Default)]
pub struct InProcessLimiter {
    keys: DashMap<String, Arc<KeyWindow>>,
    inserted: AtomicU64,
}

impl InProcessLimiter {
    /// An empty limiter.
    pub fn new() -> InProcessLimiter {
        InProcessLimiter::default()
    }

    /// How many keys have state (for metrics).
    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    /// Forgets every key whose window is over at `now` and that holds no slot and no grant.
    pub fn prune(&self, now: Instant) {
        // Under the shard's write lock no one can clone a window out of the map, so a strong
        // count of 1 means no grant and no admission in progress refers to it.
        self.keys.retain(|_, w| !(Arc::strong_count(w) == 1 && w.is_idle(now)));
    }

    fn window_for(&self, key_id: &str, now: Instant) -> Arc<KeyWindow> {
        if let Some(w) = self.keys.get(key_id) {
            return Arc::clone(w.value());
        }
        if self.inserted.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune(now);
        }
        Arc::clone(self.keys.entry(key_id.to_owned()).or_default().value())
    }
}

impl RateLimiter for InProcessLimiter {
    fn acquire(
        &self,
        key_id: &str,
        limits: &RateLimits,
        ask: TokenAsk,
        now: Instant,
    ) -> Result<RateGrant, RateRefusal> {
        if !limits.is_limited() {
            return Ok(RateGrant::unlimited(ask));
        }
        let window = self.window_for(key_id, now);
        let mut state = window.lock();
        let live = state.live_start(now);
        let (requests, tokens, reset) = match live {
            Some(start) => (
                state.requests,
                state.tokens,
                WINDOW.saturating_sub(now.saturating_duration_since(start)),
            ),
            None => (0, 0, WINDOW),
        };
        let refuse = |limit: Which, allowed: u64, requested: u64, retry_after: Duration| RateRefusal {
            limit,
            retry_after,
            snapshot: RateSnapshot::new(limits, requests, tokens, reset),
            allowed,
            requested,
        };
        let needed = ask.min_tokens();
        if let Some(tpm) = limits.tpm
            && needed > tpm
        {
            return Err(refuse(Which::Tokens, tpm, needed, reset));
        }
        if let Some(rpm) = limits.rpm
            && requests >= rpm
        {
            return Err(refuse(Which::Requests, rpm, 1, reset));
        }
        let available = limits.tpm.map(|tpm| tpm.saturating_sub(tokens));
        if let (Some(tpm), Some(available)) = (limits.tpm, available)
            && needed > available
        {
            return Err(refuse(Which::Tokens, tpm, needed, reset));
        }
        if let Some(max) = limits.concurrency
            && state.in_flight >= max
        {
            return Err(refuse(Which::Concurrency, max, 1, CONCURRENCY_RETRY));
        }
        let output = match ask.output {
            OutputAsk::Exactly(n) => n,
            OutputAsk::UpTo { max, .. } => available.map_or(max, |a| a.saturating_sub(ask.prompt).min(max)),
        };
        if live.is_none() {
            *state = WindowState {
                start: Some(now),
                epoch: state.epoch.wrapping_add(1),
                requests: 0,
                tokens: 0,
                in_flight: state.in_flight,
            };
        }
        let counted = ask.prompt.saturating_add(output);
        state.requests = state.requests.saturating_add(1);
        state.tokens = state.tokens.saturating_add(counted);
        state.in_flight = state.in_flight.saturating_add(1);
        let snapshot = RateSnapshot::new(limits, state.requests, state.tokens, reset);
        let epoch = state.epoch;
        drop(state);
        let backend: Arc<dyn GrantBackend> = window;
        Ok(RateGrant::new(Some(backend), epoch, ask.prompt, output, true, snapshot))
    }

    fn peek(&self, key_id: &str, limits: &RateLimits, now: Instant) -> RateSnapshot {
        let state = self.keys.get(key_id).map(|w| *w.value().lock());
        match state.and_then(|s| s.live_start(now).map(|start| (s, start))) {
            Some((s, start)) => RateSnapshot::new(
                limits,
                s.requests,
                s.tokens,
                WINDOW.saturating_sub(now.saturating_duration_since(start)),
            ),
            None => RateSnapshot::new(limits, 0, 0, Duration::ZERO),
        }
    }
}

#[cfg(test)]
impl InProcessLimiter {
    fn state(&self, key_id: &str) -> Option<WindowState> {
        self.keys.get(key_id).map(|w| *w.value().lock())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;

    use proptest::prelude::*;

    use super::*;

    const KEY: &str = "key_1";

    fn rpm(n: u64) -> RateLimits {
        RateLimits {
            rpm: Some(n),
            ..RateLimits::UNLIMITED
        }
    }

    fn tpm(n: u64) -> RateLimits {
        RateLimits {
            tpm: Some(n),
            ..RateLimits::UNLIMITED
        }
    }

    fn conc(n: u64) -> RateLimits {
        RateLimits {
            concurrency: Some(n),
            ..RateLimits::UNLIMITED
        }
    }

    fn exactly(prompt: u64, n: u64) -> TokenAsk {
        TokenAsk {
            prompt,
            output: OutputAsk::Exactly(n),
        }
    }

    fn up_to(prompt: u64, max: u64, min: u64) -> TokenAsk {
        TokenAsk {
            prompt,
            output: OutputAsk::UpTo { max, min },
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn a_burst_of_n_plus_k_admits_exactly_n_and_the_next_window_admits_again() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = rpm(5);
        let mut grants = Vec::new();
        let mut refused = Vec::new();
        for i in 0..8 {
            match limiter.acquire(KEY, &limits, exactly(10, 10), t0 + ms(i)) {
                Ok(g) => grants.push(g),
                Err(r) => refused.push(r),
            }
        }
        assert_eq!(grants.len(), 5);
        assert_eq!(refused.len(), 3);
        // The window started at t0, the first refusal came at t0 + 5ms.
        let r = &refused[0];
        assert_eq!(r.limit, Which::Requests);
        assert_eq!((r.allowed, r.requested), (5, 1));
        assert!(!r.never_fits());
        assert_eq!(r.retry_after, Duration::from_secs(60) - ms(5));
        assert_eq!(r.retry_after_secs(), 60);
        assert_eq!(r.snapshot.requests.unwrap().remaining, 0);
        // Dropping the grants frees slots, not requests.
        drop(grants);
        let r = limiter
            .acquire(KEY, &limits, exactly(1, 1), t0 + ms(59_500))
            .unwrap_err();
        assert_eq!(r.retry_after, ms(500));
        assert_eq!(r.retry_after_secs(), 1);
        assert_eq!(header(&r.headers(), "retry-after"), "1");
        assert_eq!(header(&r.headers(), "x-ratelimit-reset-requests"), "500ms");
        let r = limiter
            .acquire(KEY, &limits, exactly(1, 1), t0 + ms(59_999))
            .unwrap_err();
        assert_eq!(r.retry_after, ms(1));
        // The next window admits again, and starts at its first request.
        let t1 = t0 + ms(60_000);
        let g = limiter.acquire(KEY, &limits, exactly(1, 1), t1).unwrap();
        assert_eq!(g.snapshot().requests.unwrap().reset, WINDOW);
        assert_eq!(g.snapshot().requests.unwrap().remaining, 4);
        let g = limiter.acquire(KEY, &limits, exactly(1, 1), t1 + ms(15_500)).unwrap();
        assert_eq!(g.snapshot().requests.unwrap().reset, ms(44_500));
        assert_eq!(header(&g.snapshot().headers(), "x-ratelimit-reset-requests"), "44.5s");
    }

    #[test]
    fn a_window_starts_at_the_first_request_after_the_previous_one_ended() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = rpm(1);
        drop(limiter.acquire(KEY, &limits, exactly(0, 0), t0).unwrap());
        // Long idle: the next window starts at t0 + 100s, not at t0 + 60s or t0 + 120s.
        let t1 = t0 + Duration::from_secs(100);
        drop(limiter.acquire(KEY, &limits, exactly(0, 0), t1).unwrap());
        let r = limiter
            .acquire(KEY, &limits, exactly(0, 0), t0 + Duration::from_secs(121))
            .unwrap_err();
        assert_eq!(r.retry_after, Duration::from_secs(39));
        assert!(
            limiter
                .acquire(KEY, &limits, exactly(0, 0), t0 + Duration::from_secs(160))
                .is_ok()
        );
    }

    #[test]
    fn a_refused_request_consumes_nothing_and_does_not_start_a_window() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = RateLimits {
            rpm: Some(2),
            tpm: Some(100),
            concurrency: Some(1),
        };
        let g = limiter.acquire(KEY, &limits, exactly(10, 10), t0).unwrap();
        let before = limiter.state(KEY).unwrap();
        // Refused for concurrency, for tokens (never fits), for tokens (window): nothing moves.
        assert_eq!(
            limiter.acquire(KEY, &limits, exactly(10, 10), t0).unwrap_err().limit,
            Which::Concurrency
        );
        assert!(
            limiter
                .acquire(KEY, &limits, exactly(100, 1), t0)
                .unwrap_err()
                .never_fits()
        );
        assert_eq!(
            limiter.acquire(KEY, &limits, exactly(50, 31), t0).unwrap_err().limit,
            Which::Tokens
        );
        let after = limiter.state(KEY).unwrap();
        assert_eq!(
            (before.requests, before.tokens, before.in_flight, before.epoch),
            (after.requests, after.tokens, after.in_flight, after.epoch)
        );
        // After the window ended, a refusal does not start a new one.
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(
            limiter.acquire(KEY, &limits, exactly(10, 10), t1).unwrap_err().limit,
            Which::Concurrency
        );
        assert_eq!(limiter.state(KEY).unwrap().start, Some(t0));
        drop(g);
        let g = limiter.acquire(KEY, &limits, exactly(10, 10), t1 + ms(5)).unwrap();
        assert_eq!(limiter.state(KEY).unwrap().start, Some(t1 + ms(5)));
        assert_eq!(g.snapshot().requests.unwrap().remaining, 1);
        assert_eq!(g.snapshot().tokens.unwrap().remaining, 80);
    }

    #[test]
    fn tpm_counts_exactly_with_a_named_max_tokens() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = tpm(1000);
        let g1 = limiter.acquire(KEY, &limits, exactly(300, 200), t0).unwrap();
        assert_eq!(g1.granted_output(), 200);
        assert_eq!(g1.counted_tokens(), 500);
        assert_eq!(g1.snapshot().tokens.unwrap().remaining, 500);
        assert_eq!(g1.snapshot().requests, None);
        let g2 = limiter.acquire(KEY, &limits, exactly(300, 200), t0 + ms(1000)).unwrap();
        assert_eq!(g2.snapshot().tokens.unwrap().remaining, 0);
        let r = limiter.acquire(KEY, &limits, exactly(1, 0), t0 + ms(2000)).unwrap_err();
        assert_eq!(r.limit, Which::Tokens);
        assert_eq!((r.allowed, r.requested), (1000, 1));
        assert!(!r.never_fits());
        assert_eq!(r.retry_after, ms(58_000));
        assert!(r.message().contains("Try again in 58s"), "{}", r.message());
        // A request that fits the window exactly is admitted.
        let limiter = InProcessLimiter::new();
        assert!(limiter.acquire(KEY, &limits, exactly(999, 1), t0).is_ok());
    }

    #[test]
    fn a_request_larger_than_the_whole_tpm_limit_is_refused_precisely() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = RateLimits {
            rpm: Some(10),
            tpm: Some(1000),
            concurrency: None,
        };
        let r = limiter.acquire(KEY, &limits, exactly(900, 200), t0).unwrap_err();
        assert_eq!(r.limit, Which::Tokens);
        assert!(r.never_fits());
        assert_eq!((r.requested, r.allowed), (1100, 1000));
        let m = r.message();
        assert!(
            m.contains("1100") && m.contains("1000") && m.contains("lower max_tokens"),
            "{m}"
        );
        // Also without max_tokens, when the prompt plus the minimum output cannot fit.
        let r = limiter.acquire(KEY, &limits, up_to(990, 4096, 20), t0).unwrap_err();
        assert!(r.never_fits());
        assert_eq!(r.requested, 1010);
        assert_eq!(limiter.state(KEY).map(|s| s.requests).unwrap_or(0), 0);
    }

    #[test]
    fn tpm_clamps_output_without_max_tokens() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = tpm(1000);
        let g = limiter.acquire(KEY, &limits, up_to(200, 300, 10), t0).unwrap();
        assert_eq!(g.granted_output(), 300);
        assert_eq!(g.snapshot().tokens.unwrap().remaining, 500);
        // 500 left, prompt 100: at most 400 output; asking at least 401 is refused, 400 is granted.
        let r = limiter.acquire(KEY, &limits, up_to(100, 4096, 401), t0).unwrap_err();
        assert_eq!((r.limit, r.requested), (Which::Tokens, 501));
        assert!(!r.never_fits());
        let g2 = limiter.acquire(KEY, &limits, up_to(100, 4096, 400), t0).unwrap();
        assert_eq!(g2.granted_output(), 400);
        assert_eq!(g2.snapshot().tokens.unwrap().remaining, 0);
        // min above max counts as max.
        let limiter = InProcessLimiter::new();
        let g = limiter.acquire(KEY, &limits, up_to(100, 50, 5000), t0).unwrap();
        assert_eq!(g.granted_output(), 50);
        // The prompt alone larger than what is left.
        let limiter = InProcessLimiter::new();
        let _g = limiter.acquire(KEY, &limits, exactly(900, 0), t0).unwrap();
        assert_eq!(
            limiter.acquire(KEY, &limits, up_to(200, 100, 0), t0).unwrap_err().limit,
            Which::Tokens
        );
        // Without a TPM limit the whole max is granted.
        let g = limiter.acquire("other", &rpm(1), up_to(100, 4096, 1), t0).unwrap();
        assert_eq!(g.granted_output(), 4096);
    }

    #[test]
    fn settle_lowers_and_raises_usage_in_the_current_window_only() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = tpm(1000);
        let g = limiter.acquire(KEY, &limits, exactly(100, 400), t0).unwrap();
        g.settle(200);
        assert_eq!(limiter.peek(KEY, &limits, t0).tokens.unwrap().remaining, 800);
        let g = limiter.acquire(KEY, &limits, exactly(100, 100), t0).unwrap();
        assert_eq!(g.snapshot().tokens.unwrap().remaining, 600);
        g.settle(700);
        assert_eq!(limiter.peek(KEY, &limits, t0).tokens.unwrap().remaining, 100);
        assert_eq!(limiter.state(KEY).unwrap().tokens, 900);
        // Over the limit after an honest settle: remaining saturates at 0, admission refuses.
        let g = limiter.acquire(KEY, &limits, exactly(50, 50), t0).unwrap();
        g.settle(500);
        assert_eq!(limiter.state(KEY).unwrap().tokens, 1400);
        assert_eq!(limiter.peek(KEY, &limits, t0).tokens.unwrap().remaining, 0);
        assert!(limiter.acquire(KEY, &limits, exactly(1, 0), t0).is_err());
        assert!(
            limiter.acquire(KEY, &limits, exactly(0, 0), t0).is_ok(),
            "a request of no tokens still fits"
        );
        // A grant from an earlier window settles without touching the current one.
        let t1 = t0 + WINDOW;
        let old = limiter.acquire("k2", &limits, exactly(100, 100), t0).unwrap();
        let new = limiter.acquire("k2", &limits, exactly(10, 10), t1).unwrap();
        old.settle(0);
        assert_eq!(limiter.state("k2").unwrap().tokens, 20);
        new.settle(5);
        assert_eq!(limiter.state("k2").unwrap().tokens, 5);
    }

    #[test]
    fn dropping_unsettled_keeps_the_reservation_until_the_window_ends() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = tpm(1000);
        drop(limiter.acquire(KEY, &limits, exactly(100, 400), t0).unwrap());
        assert_eq!(limiter.state(KEY).unwrap().tokens, 500);
        assert_eq!(limiter.state(KEY).unwrap().in_flight, 0);
        assert_eq!(limiter.peek(KEY, &limits, t0 + WINDOW).tokens.unwrap().remaining, 1000);
    }

    #[test]
    fn shrink_output_gives_tokens_back() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = tpm(1000);
        let mut g = limiter.acquire(KEY, &limits, up_to(100, 4096, 1), t0).unwrap();
        assert_eq!(g.granted_output(), 900);
        g.shrink_output(2000); // not lower: no-op
        assert_eq!(g.granted_output(), 900);
        g.shrink_output(100);
        assert_eq!(g.granted_output(), 100);
        assert_eq!(g.counted_tokens(), 200);
        assert_eq!(g.snapshot().tokens.unwrap().remaining, 800);
        assert_eq!(limiter.peek(KEY, &limits, t0).tokens.unwrap().remaining, 800);
        g.settle(150);
        assert_eq!(limiter.state(KEY).unwrap().tokens, 150);
    }

    #[test]
    fn concurrency_slots_are_released_on_drop_settled_or_not() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = conc(2);
        let g1 = limiter.acquire(KEY, &limits, exactly(1, 1), t0).unwrap();
        let g2 = limiter.acquire(KEY, &limits, exactly(1, 1), t0).unwrap();
        let r = limiter.acquire(KEY, &limits, exactly(1, 1), t0).unwrap_err();
        assert_eq!((r.limit, r.allowed), (Which::Concurrency, 2));
        assert_eq!(r.retry_after_secs(), 1);
        assert!(r.message().contains("at most 2 at a time"), "{}", r.message());
        // Concurrency is not windowed: no x-ratelimit headers, only retry-after.
        assert_eq!(r.headers(), vec![("retry-after", "1".to_owned())]);
        drop(g1); // unsettled
        let g3 = limiter.acquire(KEY, &limits, exactly(1, 1), t0).unwrap();
        g2.settle(2);
        let g4 = limiter.acquire(KEY, &limits, exactly(1, 1), t0).unwrap();
        assert_eq!(limiter.state(KEY).unwrap().in_flight, 2);
        // A panic while a grant is held releases its slot too.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _g = limiter.acquire(KEY, &limits, exactly(1, 1), t0);
            drop(g3);
            let _g5 = limiter.acquire(KEY, &limits, exactly(1, 1), t0).unwrap();
            panic!("handler failed");
        }));
        assert!(caught.is_err());
        assert_eq!(limiter.state(KEY).unwrap().in_flight, 1);
        drop(g4);
        assert_eq!(limiter.state(KEY).unwrap().in_flight, 0);
    }

    #[test]
    fn headers_count_down_and_name_all_six() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = RateLimits {
            rpm: Some(3),
            tpm: Some(1000),
            concurrency: Some(10),
        };
        let mut grants = Vec::new();
        let mut seen = Vec::new();
        for i in 0..3 {
            let g = limiter
                .acquire(KEY, &limits, exactly(100, 50), t0 + ms(i * 1500))
                .unwrap();
            let h = g.snapshot().headers();
            seen.push((
                header(&h, "x-ratelimit-remaining-requests").to_owned(),
                header(&h, "x-ratelimit-remaining-tokens").to_owned(),
                header(&h, "x-ratelimit-reset-requests").to_owned(),
                header(&h, "x-ratelimit-reset-tokens").to_owned(),
            ));
            grants.push(g);
        }
        let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned(), c.to_owned());
        assert_eq!(
            seen,
            vec![s("2", "850", "1m0s"), s("1", "700", "58.5s"), s("0", "550", "57s")]
        );
        let h = grants[0].snapshot().headers();
        let names: Vec<&str> = h.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ]
        );
        assert_eq!(header(&h, "x-ratelimit-limit-requests"), "3");
        assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "1000");
        // Only the limits that are set.
        let g = limiter.acquire("k2", &rpm(7), exactly(1, 1), t0).unwrap();
        assert_eq!(g.snapshot().headers().len(), 3);
        let r = limiter
            .acquire(KEY, &limits, exactly(1, 1), t0 + ms(20_000))
            .unwrap_err();
        let h = r.headers();
        assert_eq!(h.len(), 7);
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "0");
        assert_eq!(header(&h, "x-ratelimit-reset-requests"), "40s");
        assert_eq!(header(&h, "retry-after"), "40");
    }

    #[test]
    fn durations_are_formatted_like_openai() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ms"),
            (ms(20), "20ms"),
            (Duration::from_micros(19_001), "20ms"),
            (ms(999), "999ms"),
            (ms(1000), "1s"),
            (ms(1500), "1.5s"),
            (ms(1020), "1.02s"),
            (ms(59_000), "59s"),
            (ms(59_500), "59.5s"),
            (ms(60_000), "1m0s"),
            (ms(60_500), "1m0.5s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want, "{d:?}");
        }
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(ms(1)), 1);
        assert_eq!(retry_after_secs(ms(1000)), 1);
        assert_eq!(retry_after_secs(ms(1001)), 2);
        assert_eq!(retry_after_secs(ms(59_999)), 60);
    }

    #[test]
    fn messages_say_which_limit_and_avoid_money_words() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = RateLimits {
            rpm: Some(1),
            tpm: Some(100),
            concurrency: Some(1),
        };
        let _g = limiter.acquire(KEY, &limits, exactly(10, 10), t0).unwrap();
        let refusals = [
            limiter.acquire(KEY, &limits, exactly(10, 10), t0).unwrap_err(),
            limiter.acquire(KEY, &limits, exactly(100, 10), t0).unwrap_err(),
            limiter
                .acquire("k2", &tpm(100), exactly(50, 10), t0)
                .and_then(|_g| limiter.acquire("k2", &tpm(100), exactly(50, 10), t0))
                .unwrap_err(),
            limiter
                .acquire("k3", &conc(1), exactly(1, 1), t0)
                .and_then(|_g| limiter.acquire("k3", &conc(1), exactly(1, 1), t0))
                .unwrap_err(),
            limiter.acquire("k4", &rpm(0), exactly(1, 1), t0).unwrap_err(),
            limiter.acquire("k5", &conc(0), exactly(1, 1), t0).unwrap_err(),
        ];
        let words = [
            "requests per minute",
            "can never be admitted",
            "tokens per minute",
            "concurrent",
            "0 requests",
            "0 concurrent",
        ];
        for (r, word) in refusals.iter().zip(words) {
            let m = r.message().to_lowercase();
            assert!(m.contains(word), "{m}");
            for bad in ["credit", "balance", "quota"] {
                assert!(!m.contains(bad), "{m}");
            }
            assert_eq!(r.to_string(), r.message());
        }
    }

    #[test]
    fn unlimited_keys_touch_no_state() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        assert!(!RateLimits::UNLIMITED.is_limited());
        assert!(rpm(1).is_limited() && tpm(1).is_limited() && conc(1).is_limited());
        for _ in 0..10 {
            let g = limiter
                .acquire(KEY, &RateLimits::UNLIMITED, up_to(5, 4096, 1), t0)
                .unwrap();
            assert_eq!(g.granted_output(), 4096);
            assert!(g.snapshot().headers().is_empty());
        }
        assert_eq!(limiter.tracked_keys(), 0);
        assert_eq!(limiter.peek(KEY, &RateLimits::UNLIMITED, t0), RateSnapshot::default());
    }

    #[test]
    fn peek_counts_nothing() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = RateLimits {
            rpm: Some(2),
            tpm: Some(100),
            concurrency: None,
        };
        let full = limiter.peek(KEY, &limits, t0);
        assert_eq!(full.requests.unwrap().remaining, 2);
        assert_eq!(full.requests.unwrap().reset, Duration::ZERO);
        let _g = limiter.acquire(KEY, &limits, exactly(30, 30), t0).unwrap();
        let p = limiter.peek(KEY, &limits, t0 + ms(10_000));
        assert_eq!(
            p.requests.unwrap(),
            Counter {
                limit: 2,
                remaining: 1,
                reset: ms(50_000)
            }
        );
        assert_eq!(p.tokens.unwrap().remaining, 40);
        assert_eq!(limiter.peek(KEY, &limits, t0 + ms(10_000)), p);
    }

    #[test]
    fn stale_windows_are_pruned_only_when_unused() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let held = limiter.acquire("held", &rpm(5), exactly(1, 1), t0).unwrap();
        drop(limiter.acquire("done", &rpm(5), exactly(1, 1), t0).unwrap());
        drop(
            limiter
                .acquire("fresh", &rpm(5), exactly(1, 1), t0 + ms(30_000))
                .unwrap(),
        );
        limiter.prune(t0 + ms(61_000));
        assert_eq!(limiter.tracked_keys(), 2);
        assert!(limiter.state("done").is_none());
        drop(held);
        limiter.prune(t0 + ms(91_000));
        assert_eq!(limiter.tracked_keys(), 0);
        // Many new keys trigger pruning on their own.
        for i in 0..(2 * PRUNE_EVERY) {
            drop(
                limiter
                    .acquire(&format!("k{i}"), &rpm(5), exactly(1, 1), t0 + ms(i * 100))
                    .unwrap(),
            );
        }
        assert!(limiter.tracked_keys() < 2 * PRUNE_EVERY as usize);
    }

    #[test]
    fn eight_threads_hammering_one_key_admit_exactly_rpm() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = rpm(100);
        let admitted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for i in 0..200 {
                        if limiter.acquire(KEY, &limits, exactly(1, 1), t0 + ms(i)).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 100);
        assert_eq!(limiter.state(KEY).unwrap().requests, 100);
        assert_eq!(limiter.state(KEY).unwrap().in_flight, 0);
    }

    #[test]
    fn concurrency_is_never_exceeded_under_contention() {
        let limiter = InProcessLimiter::new();
        let t0 = Instant::now();
        let limits = conc(3);
        let in_flight = AtomicU64::new(0);
        let max_seen = AtomicU64::new(0);
        let admitted = AtomicU64::new(0);
        let refused = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        match limiter.acquire(KEY, &limits, exactly(1, 1), t0) {
                            Ok(g) => {
                                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                max_seen.fetch_max(now, Ordering::SeqCst);
                                admitted.fetch_add(1, Ordering::Relaxed);
                                std::thread::yield_now();
                                in_flight.fetch_sub(1, Ordering::SeqCst);
                                drop(g);
                            }
                            Err(r) => {
                                assert_eq!(r.limit, Which::Concurrency);
                                refused.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        assert!(
            max_seen.load(Ordering::SeqCst) <= 3,
            "{}",
            max_seen.load(Ordering::SeqCst)
        );
        assert!(admitted.load(Ordering::Relaxed) > 0);
        assert_eq!(limiter.state(KEY).unwrap().in_flight, 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire { prompt: u64, output: OutputAsk },
        Settle { pick: usize, actual: u64 },
        Shrink { pick: usize, to: u64 },
        Drop { pick: usize },
        Advance { ms: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        let output = prop_oneof![
            (0u64..300).prop_map(OutputAsk::Exactly),
            (0u64..400, 0u64..100).prop_map(|(max, min)| OutputAsk::UpTo { max, min }),
        ];
        prop_oneof![
            4 => (0u64..200, output).prop_map(|(prompt, output)| Op::Acquire { prompt, output }),
            2 => (any::<usize>(), 0u64..600).prop_map(|(pick, actual)| Op::Settle { pick, actual }),
            1 => (any::<usize>(), 0u64..300).prop_map(|(pick, to)| Op::Shrink { pick, to }),
            2 => any::<usize>().prop_map(|pick| Op::Drop { pick }),
            2 => (0u64..40_000).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    fn limits() -> impl Strategy<Value = RateLimits> {
        (
            proptest::option::weighted(0.8, 1u64..10),
            proptest::option::weighted(0.8, 100u64..1000),
            proptest::option::weighted(0.8, 1u64..5),
        )
            .prop_map(|(rpm, tpm, concurrency)| RateLimits { rpm, tpm, concurrency })
    }

    proptest! {
        #[test]
        fn limits_hold_for_any_sequence(limits in limits(), ops in proptest::collection::vec(op(), 1..120)) {
            prop_assume!(limits.is_limited());
            let limiter = InProcessLimiter::new();
            let mut now = Instant::now();
            let mut grants: Vec<RateGrant> = Vec::new();
            // Per window id: requests admitted, and tokens as the model counts them.
            let mut admitted: HashMap<u64, u64> = HashMap::new();
            let mut tokens: HashMap<u64, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Acquire { prompt, output } => {
                        let ask = TokenAsk { prompt, output };
                        match limiter.acquire(KEY, &limits, ask, now) {
                            Ok(g) => {
                                let state = limiter.state(KEY).unwrap();
                                prop_assert_eq!(g.window, state.epoch);
                                let n = admitted.entry(g.window).or_default();
                                *n += 1;
                                if let Some(rpm) = limits.rpm { prop_assert!(*n <= rpm); }
                                *tokens.entry(g.window).or_default() += g.counted_tokens();
                                if let Some(tpm) = limits.tpm { prop_assert!(state.tokens <= tpm); }
                                if let OutputAsk::UpTo { max, min } = output {
                                    prop_assert!(g.granted_output() <= max && g.granted_output() >= min.min(max));
                                }
                                if let OutputAsk::Exactly(n) = output { prop_assert_eq!(g.granted_output(), n); }
                                grants.push(g);
                            }
                            Err(r) => {
                                let state = limiter.state(KEY);
                                let live = state.and_then(|s| s.live_start(now).map(|_| s));
                                let (used_requests, used_tokens) = live.map_or((0, 0), |s| (s.requests, s.tokens));
                                match r.limit {
                                    Which::Requests => prop_assert_eq!(Some(used_requests), limits.rpm),
                                    Which::Tokens => {
                                        let tpm = limits.tpm.unwrap();
                                        prop_assert!(ask.min_tokens() > tpm.saturating_sub(used_tokens));
                                    }
                                    Which::Concurrency => {
                                        prop_assert_eq!(Some(grants.len() as u64), limits.concurrency);
                                    }
                                }
                                prop_assert!(r.retry_after > Duration::ZERO && r.retry_after <= WINDOW);
                            }
                        }
                    }
                    Op::Settle { pick, actual } => {
                        if !grants.is_empty() {
                            let g = grants.swap_remove(pick % grants.len());
                            let t = tokens.entry(g.window).or_default();
                            *t = *t - g.counted_tokens() + actual;
                            g.settle(actual);
                        }
                    }
                    Op::Shrink { pick, to } => {
                        if !grants.is_empty() {
                            let i = pick % grants.len();
                            let g = &mut grants[i];
                            let before = g.counted_tokens();
                            g.shrink_output(to);
                            let t = tokens.entry(g.window).or_default();
                            *t = *t - before + g.counted_tokens();
                        }
                    }
                    Op::Drop { pick } => {
                        if !grants.is_empty() {
                            drop(grants.swap_remove(pick % grants.len()));
                        }
                    }
                    Op::Advance { ms } => now += Duration::from_millis(ms),
                }
                if let Some(state) = limiter.state(KEY) {
                    prop_assert_eq!(state.in_flight, grants.len() as u64);
                    if let Some(c) = limits.concurrency { prop_assert!(state.in_flight <= c); }
                    prop_assert_eq!(state.tokens, tokens.get(&state.epoch).copied().unwrap_or(0));
                    if let Some(rpm) = limits.rpm { prop_assert!(state.requests <= rpm); }
                }
            }
            grants.clear();
            prop_assert_eq!(limiter.state(KEY).map_or(0, |s| s.in_flight), 0);
        }
    }
}
