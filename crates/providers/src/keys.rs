//! A provider's pool of upstream API keys: requests spread over them in turn, each key within
//! its own requests- and tokens-per-minute (when the operator set them), and a key the provider
//! rejects (401 / 403) leaves the rotation for good (until a restart) and is reported, never
//! tried again in a loop. Lock-free: one atomic cursor, and per key a dead flag and two packed
//! minute counters.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

/// One key as the operator configures it (`[[providers.NAME.keys]]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The environment variable holding the secret (never the secret itself).
    pub env: String,
    /// Requests per minute this key may carry (unset: no limit of ours).
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute this key may carry, counted on each request's worst case.
    #[serde(default)]
    pub tpm: Option<u64>,
}

/// One usable key.
#[derive(Debug)]
pub struct UpstreamKey {
    /// Where its secret came from (the environment variable): what logs and `/health` name.
    pub label: String,
    /// The headers that authenticate with it.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A service account whose current access token is sent as `Authorization: Bearer …`
    /// (Vertex AI), besides `headers`.
    pub token: Option<std::sync::Arc<crate::vertex::TokenSource>>,
    rpm: Option<u32>,
    tpm: Option<u64>,
    /// The provider rejected it.
    dead: AtomicBool,
    /// `minute << 32 | requests` of the current minute.
    requests: AtomicU64,
    /// `minute << 40 | tokens` of the current minute.
    tokens: AtomicU64,
}

/// Why no key could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKey {
    /// Every key was rejected by the provider (or none is configured).
    AllRejected,
    /// Every live key is at its own per-minute limit.
    AllBusy,
}

impl UpstreamKey {
    /// A key with its authentication headers.
    pub fn new(label: impl Into<String>, headers: Vec<(HeaderName, HeaderValue)>, config: Option<&KeyConfig>) -> Self {
        UpstreamKey {
            label: label.into(),
            headers,
            token: None,
            rpm: config.and_then(|c| c.rpm),
            tpm: config.and_then(|c| c.tpm),
            dead: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
        }
    }

    /// A key that authenticates with a service account's access tokens.
    pub fn with_token(label: impl Into<String>, token: crate::vertex::TokenSource) -> Self {
        UpstreamKey {
            token: Some(std::sync::Arc::new(token)),
            ..UpstreamKey::new(label, Vec::new(), None)
        }
    }

    /// Whether the provider rejected it.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// Takes it out of the rotation; `true` the first time (the caller reports it once).
    pub fn reject(&self) -> bool {
        !self.dead.swap(true, Ordering::Relaxed)
    }

    /// Counts one request of `tokens` against this minute's limits, if it fits.
    fn take(&self, tokens: u64, minute: u64) -> bool {
        if !within(&self.requests, 32, self.rpm.map(u64::from), 1, minute) {
            return false;
        }
        within(&self.tokens, 40, self.tpm, tokens, minute)
    }
}

/// Adds `amount` to a packed `minute << shift | used` counter if `used + amount` stays within
/// `limit` (a new minute starts from zero; no limit: always fits, nothing counted).
fn within(counter: &AtomicU64, shift: u32, limit: Option<u64>, amount: u64, minute: u64) -> bool {
    let Some(limit) = limit else { return true };
    let mask = (1u64 << shift) - 1;
    let mut current = counter.load(Ordering::Relaxed);
    loop {
        let used = if current >> shift == minute & (u64::MAX >> shift) {
            current & mask
        } else {
            0
        };
        let next = used.saturating_add(amount);
        // A request bigger than the whole limit still goes alone into an empty minute.
        if next > limit && used > 0 {
            return false;
        }
        let packed = (minute << shift) | next.min(mask);
        match counter.compare_exchange_weak(current, packed, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(seen) => current = seen,
        }
    }
}

/// A provider's keys.
#[derive(Debug, Default)]
pub struct KeyPool {
    keys: Vec<UpstreamKey>,
    next: AtomicUsize,
}

impl KeyPool {
    /// A pool of these keys, in the order given.
    pub fn new(keys: Vec<UpstreamKey>) -> KeyPool {
        KeyPool {
            keys,
            next: AtomicUsize::new(0),
        }
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether any key has a tokens-per-minute limit (requests are then counted against it by
    /// their worst case in tokens, so that worst case had better be tight).
    pub fn counts_tokens(&self) -> bool {
        self.keys.iter().any(|key| key.tpm.is_some())
    }

    /// The next key in turn that is alive and has room for a request of `tokens`.
    pub fn pick(&self, tokens: u64) -> Result<&UpstreamKey, NoKey> {
        let n = self.keys.len();
        if n == 1 && self.keys[0].rpm.is_none() && self.keys[0].tpm.is_none() {
            // The usual case: one key, no limits of ours.
            return if self.keys[0].is_dead() {
                Err(NoKey::AllRejected)
            } else {
                Ok(&self.keys[0])
            };
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let minute = current_minute();
        let mut alive = false;
        for i in 0..n {
            let key = &self.keys[(start + i) % n];
            if key.is_dead() {
                continue;
            }
            alive = true;
            if key.take(tokens, minute) {
                return Ok(key);
            }
        }
        Err(if alive { NoKey::AllBusy } else { NoKey::AllRejected })
    }

    /// The keys the provider rejected, by label.
    pub fn rejected(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter(|k| k.is_dead()).map(|k| k.label.as_str())
    }
}

fn current_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(label: &str, rpm: Option<u32>, tpm: Option<u64>) -> UpstreamKey {
        let config = KeyConfig {
            env: label.into(),
            rpm,
            tpm,
        };
        UpstreamKey::new(label, Vec::new(), Some(&config))
    }

    #[test]
    fn requests_spread_over_the_keys_in_turn() {
        let pool = KeyPool::new(vec![key("a", None, None), key("b", None, None), key("c", None, None)]);
        let picked: Vec<_> = (0..6).map(|_| pool.pick(1).unwrap().label.clone()).collect();
        assert_eq!(picked, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn a_rejected_key_leaves_the_rotation_and_is_reported_once() {
        let pool = KeyPool::new(vec![key("a", None, None), key("b", None, None)]);
        assert!(pool.keys[0].reject());
        assert!(!pool.keys[0].reject(), "reported once");
        assert!((0..5).all(|_| pool.pick(1).unwrap().label == "b"));
        assert_eq!(pool.rejected().collect::<Vec<_>>(), ["a"]);
        assert!(pool.keys[1].reject());
        assert_eq!(pool.pick(1).unwrap_err(), NoKey::AllRejected);
        let one = KeyPool::new(vec![key("x", None, None)]);
        one.keys[0].reject();
        assert_eq!(one.pick(1).unwrap_err(), NoKey::AllRejected);
    }

    #[test]
    fn each_key_keeps_within_its_own_minute() {
        let pool = KeyPool::new(vec![key("a", Some(2), None), key("b", None, Some(100))]);
        let picked: Vec<_> = (0..3).map(|_| pool.pick(60).unwrap().label.clone()).collect();
        // b takes one 60-token request a minute; a two requests; then both are busy.
        assert_eq!(picked.iter().filter(|l| *l == "a").count(), 2, "{picked:?}");
        assert_eq!(picked.iter().filter(|l| *l == "b").count(), 1, "{picked:?}");
        assert_eq!(pool.pick(60).unwrap_err(), NoKey::AllBusy);
        // A new minute starts from zero.
        let counter = AtomicU64::new(0);
        assert!(within(&counter, 32, Some(1), 1, 7));
        assert!(!within(&counter, 32, Some(1), 1, 7));
        assert!(within(&counter, 32, Some(1), 1, 8));
    }
}
