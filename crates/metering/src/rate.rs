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
//! A limiter shared by several nodes admits from a local slice and may refuse only because that
//! slice is short ([`RateRefusal::refillable`]); the caller then awaits [`RateLimiter::refill`] once
//! and asks again (see there). [`InProcessLimiter`] never refuses that way.
//!
//! Responses carry OpenAI's `x-ratelimit-*` headers ([`RateSnapshot::headers`]) because relays
//! (one-api, new-api) read them, and a 429 carries `Retry-After` ([`RateRefusal::headers`]).
//! Every function takes the time as an argument so tests control the clock.

use std::fmt::{self, Write as _};
use std::future::Future;
use std::pin::Pin;
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

impl OutputAsk {
    /// The most output tokens this ask can be granted.
    pub fn most(self) -> u64 {
        match self {
            OutputAsk::Exactly(n) | OutputAsk::UpTo { max: n, .. } => n,
        }
    }

    /// The same ask for `choices` outputs at once (`n` choices, each up to this ask).
    pub fn times(self, choices: u64) -> OutputAsk {
        match self {
            OutputAsk::Exactly(n) => OutputAsk::Exactly(n.saturating_mul(choices)),
            OutputAsk::UpTo { max, min } => OutputAsk::UpTo {
                max: max.saturating_mul(choices),
                min: min.saturating_mul(choices),
            },
        }
    }
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
    /// Refused only because this node's local share of the limit is short: the limit itself may
    /// still have room, and awaiting [`RateLimiter::refill`] once before asking again may admit
    /// the request. Always `false` for [`InProcessLimiter`] and for a final answer.
    pub refillable: bool,
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

/// A refill in progress (see [`RateLimiter::refill`]): owns everything it needs, so the caller can
/// await it under its own timeout and drop it early without harm.
pub type RefillFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Admission by rate, per key id. Implementations: [`InProcessLimiter`] (one node) and a
/// Redis-backed one for several nodes (`router-one-cluster`), which admits from local slices.
///
/// The caller's protocol, the same for every implementation:
///
/// 1. `acquire`. Admitted, or refused with `refillable == false`: that is the answer.
/// 2. Refused with `refillable == true`: await `refill(key_id, limits, ask)` once (if it returns
///    `Some`), bounded by a timeout of the caller's choice (a few hundred ms), then `acquire`
///    again and answer whatever that second call says, even if it is refillable again.
///
/// `acquire` never blocks on the network, so it stays synchronous; only `refill` does I/O.
pub trait RateLimiter: Send + Sync + fmt::Debug {
    /// Admits one request of key `key_id` under `limits` at time `now`, counting one request and
    /// reserving its tokens and a concurrency slot in the returned grant, or refuses it, counting
    /// nothing.
    fn acquire(&self, key_id: &str, limits: &RateLimits, ask: TokenAsk, now: Instant)
    -> Result<RateGrant, RateRefusal>;

    /// The key's windowed limits at `now`, without counting anything.
    fn peek(&self, key_id: &str, limits: &RateLimits, now: Instant) -> RateSnapshot;

    /// After a refusal with [`RateRefusal::refillable`], fetches more of key `key_id`'s limits
    /// for this node, enough for `ask` if the limit has room. The future completes when the
    /// refill has been answered (granted or refused); concurrent callers for one key may share
    /// one refill. `None` means there is nothing to wait for: answer the refusal. The default
    /// returns `None`, which is right for a limiter that never refuses refillably.
    fn refill(&self, key_id: &str, limits: &RateLimits, ask: TokenAsk) -> Option<RefillFuture> {
        let _ = (key_id, limits, ask);
        None
    }
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
            refillable: false,
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
mod tests;
