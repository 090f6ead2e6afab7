//! How many password guesses a login may cost us, counted *before* the password is verified: each
//! attempt reserves its place in three windows under one lock, so concurrent guesses cannot all
//! slip past a check made before any of them failed. A login that succeeds gives its place back.
//!
//! The limits, per 15-minute window (a window starts with its first attempt):
//!
//! | counted per | attempts | why this number |
//! | --- | --- | --- |
//! | email and source address | [`PER_PAIR`] = 10 | a person who forgot their password tries a handful; a guesser from one place gets 960 a day per email |
//! | source address (any email) | [`PER_SOURCE`] = 50 | bounds credential stuffing and argon2 work from one address (4,800 a day) while a shared office NAT keeps room for many people's typos |
//! | email (any source) | [`PER_EMAIL`] = 30 | 3 × the pair limit: one source can never reach it, so no one can lock an email out from one place; a distributed guesser gets 2,880 a day per email |
//!
//! The email limit does not apply to a source that signed in to that email within the last
//! [`TRUST_S`] (30 days): a distributed guesser who uses it up slows down only addresses the owner
//! never used, and the owner keeps signing in from home or office. A source is an IPv4 address or
//! an IPv6 /64 (one host's usual allocation), from [`crate::source`].
//!
//! Memory is bounded: each map holds at most [`MAX_TRACKED`] entries; ended windows are dropped
//! first, then windows below their limit (a small loss of count, never an unlock); if it is still
//! full, the new attempt is refused (a transient 429), never admitted untracked.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use router_one_core::{ApiError, ErrorKind};

/// Attempts per (email, source) in a window.
pub(crate) const PER_PAIR: u32 = 10;
/// Attempts per source in a window, whatever the email.
pub(crate) const PER_SOURCE: u32 = 50;
/// Attempts per email in a window from sources it does not trust.
pub(crate) const PER_EMAIL: u32 = 30;
/// The window, seconds.
pub(crate) const WINDOW_S: i64 = 900;
/// How long a successful login makes its source trusted for its email, seconds.
pub(crate) const TRUST_S: i64 = 30 * 24 * 3600;
/// Entries per map at most.
pub(crate) const MAX_TRACKED: usize = 100_000;

/// Attempts in one window: failed, or being verified right now.
#[derive(Debug, Clone, Copy)]
struct Window {
    start_s: i64,
    attempts: u32,
}

impl Window {
    fn ended(&self, now_s: i64) -> bool {
        now_s >= self.start_s.saturating_add(WINDOW_S)
    }

    fn retry_after(&self, now_s: i64) -> u64 {
        u64::try_from(self.start_s.saturating_add(WINDOW_S).saturating_sub(now_s)).unwrap_or(1)
    }
}

type Pair = (String, IpAddr);

#[derive(Debug, Default)]
struct Windows {
    by_pair: HashMap<Pair, Window>,
    by_source: HashMap<IpAddr, Window>,
    by_email: HashMap<String, Window>,
    /// (email, source) → when it last signed in, Unix seconds.
    trusted: HashMap<Pair, i64>,
}

/// The login limits of this process.
#[derive(Debug)]
pub(crate) struct LoginLimits {
    windows: Mutex<Windows>,
    max_tracked: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits::with_capacity(MAX_TRACKED)
    }
}

/// A reserved attempt: it counts as failed unless [`Attempt::succeeded`] is called.
#[must_use = "an attempt counts as failed unless it is marked as succeeded"]
#[derive(Debug)]
pub(crate) struct Attempt<'a> {
    limits: &'a LoginLimits,
    pair: Pair,
    /// The window starts it was counted in (pair, source, email), to give it back to the same.
    starts: [i64; 3],
}

impl LoginLimits {
    /// Limits whose maps hold at most `max_tracked` entries each.
    pub(crate) fn with_capacity(max_tracked: usize) -> LoginLimits {
        LoginLimits {
            windows: Mutex::new(Windows::default()),
            max_tracked,
        }
    }

    /// Reserves an attempt to sign in as `email` from `source` at `now_s`, or refuses it (429 with
    /// `Retry-After`) when a limit is used up. Call before verifying the password.
    pub(crate) fn begin(&self, email: &str, source: IpAddr, now_s: i64) -> Result<Attempt<'_>, ApiError> {
        let mut w = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let pair = (email.to_owned(), source);
        let trusted = w
            .trusted
            .get(&pair)
            .is_some_and(|&at| now_s < at.saturating_add(TRUST_S));
        let pair_window = current(&w.by_pair, &pair, now_s);
        let source_window = current(&w.by_source, &source, now_s);
        let email_window = current(&w.by_email, email, now_s);
        if pair_window.attempts >= PER_PAIR {
            return Err(refusal(
                "Too many failed logins for this email from your address",
                pair_window.retry_after(now_s),
            ));
        }
        if source_window.attempts >= PER_SOURCE {
            return Err(refusal(
                "Too many failed logins from your address",
                source_window.retry_after(now_s),
            ));
        }
        if !trusted && email_window.attempts >= PER_EMAIL {
            return Err(refusal(
                "Too many failed logins for this email; an address that signed in to it before is not limited",
                email_window.retry_after(now_s),
            ));
        }
        let max = self.max_tracked;
        let room = make_room(&mut w.by_pair, &pair, now_s, PER_PAIR, max)
            && make_room(&mut w.by_source, &source, now_s, PER_SOURCE, max)
            && make_room(&mut w.by_email, email, now_s, PER_EMAIL, max);
        if !room {
            return Err(refusal("Too many logins are being tried right now", 60));
        }
        w.by_pair.insert(pair.clone(), counted(pair_window));
        w.by_source.insert(source, counted(source_window));
        w.by_email.insert(email.to_owned(), counted(email_window));
        Ok(Attempt {
            limits: self,
            pair,
            starts: [pair_window.start_s, source_window.start_s, email_window.start_s],
        })
    }
}

impl Attempt<'_> {
    /// The password was right: the attempt is given back, the source's own failures for this
    /// email are forgiven, and the source is trusted for this email.
    pub(crate) fn succeeded(self, now_s: i64) {
        let mut w = self.limits.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let (email, source) = &self.pair;
        w.by_pair.remove(&self.pair);
        give_back(&mut w.by_source, source, self.starts[1]);
        give_back(&mut w.by_email, email.as_str(), self.starts[2]);
        if w.trusted.len() >= self.limits.max_tracked {
            w.trusted.retain(|_, at| now_s < at.saturating_add(TRUST_S));
        }
        // Full of live trust: this source is simply not remembered (the email limit applies).
        if w.trusted.len() < self.limits.max_tracked || w.trusted.contains_key(&self.pair) {
            w.trusted.insert(self.pair.clone(), now_s);
        }
    }
}

/// The window in force for `key` at `now_s` (a fresh one if none, or if it ended).
fn current<K, Q>(map: &HashMap<K, Window>, key: &Q, now_s: i64) -> Window
where
    K: std::borrow::Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    match map.get(key) {
        Some(w) if !w.ended(now_s) => *w,
        _ => Window {
            start_s: now_s,
            attempts: 0,
        },
    }
}

fn counted(w: Window) -> Window {
    Window {
        attempts: w.attempts.saturating_add(1),
        ..w
    }
}

fn give_back<K, Q>(map: &mut HashMap<K, Window>, key: &Q, start_s: i64)
where
    K: std::borrow::Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    if let Some(w) = map.get_mut(key)
        && w.start_s == start_s
    {
        w.attempts = w.attempts.saturating_sub(1);
    }
}

/// Whether `map` can take `key` (present already, or room made for it).
fn make_room<K, Q>(map: &mut HashMap<K, Window>, key: &Q, now_s: i64, limit: u32, max: usize) -> bool
where
    K: std::borrow::Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    if map.len() < max || map.contains_key(key) {
        return true;
    }
    map.retain(|_, w| !w.ended(now_s));
    if map.len() >= max {
        map.retain(|_, w| w.attempts >= limit);
    }
    map.len() < max
}

fn refusal(why: &str, wait_s: u64) -> ApiError {
    ApiError::new(ErrorKind::RateLimited, format!("{why}; retry in {wait_s} s.")).with_retry_after(wait_s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
