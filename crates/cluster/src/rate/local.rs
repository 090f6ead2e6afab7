//! One key's state on this node: the slice of its current window that Redis granted this node
//! (or, while Redis is unreachable, this node's safe share), the concurrency slots it leases, and
//! the admission logic over them. Pure: no I/O, every time is an argument, so it is unit-tested
//! without Redis. Dimension index 0 is requests, 1 tokens, 2 concurrency slots.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::Shared;
use router_one_metering::rate::{
    Counter, GrantBackend, OutputAsk, RateLimits, RateRefusal, RateSnapshot, RefillFuture, TokenAsk, Which,
};

use super::functions::{Grant, GrantArgs};

/// How long a client refused for concurrency is told to wait (as the in-process limiter does).
pub(crate) const CONCURRENCY_RETRY: Duration = Duration::from_secs(1);

/// The time constant of the rate estimates that size slices.
const RATE_TAU_SECS: f64 = 10.0;

/// A refill in flight, shared by every caller waiting for it.
pub(crate) type RefillShared = Shared<RefillFuture>;

/// Where the current window's capacity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// No live window: the next admission needs a grant (or, Redis unreachable, a safe window).
    None,
    /// A slice of Redis window `ws..we` (Redis ms); `end` is when it ends here, never later than
    /// in Redis.
    Redis { ws: i64, we: i64, end: Instant },
    /// Redis was unreachable when the window started: this node's share of the limit, locally.
    Safe { end: Instant },
}

/// The current local window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Changes with every new window, so a grant can tell whether its window is still current.
    pub(crate) seq: u64,
    pub(crate) source: Source,
    /// Granted by Redis in this window (unused for a safe window: there the share is the grant).
    pub(crate) granted: [u64; 2],
    /// Admitted locally: requests, and tokens counted (reserved, then settled).
    pub(crate) used: [u64; 2],
}

impl Window {
    fn end(&self) -> Option<Instant> {
        match self.source {
            Source::None => None,
            Source::Redis { end, .. } | Source::Safe { end } => Some(end),
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.end().is_some_and(|end| now < end)
    }
}

/// What callers waiting for a refill need, summed since the last refill call was sent.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Want {
    pub(crate) requests: u64,
    /// Tokens for every waiter's full ask (prompt plus the most output).
    pub(crate) tokens: u64,
    /// The smallest waiter's fewest tokens (0 when no one waits).
    pub(crate) min_tokens: u64,
}

/// A refusal from Redis: until `until`, requests short of limit `which` beyond `left` are
/// answered locally instead of asking again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) which: usize,
    pub(crate) until: Instant,
    /// When the refused limit has room again (window end; 1 s for slots).
    pub(crate) retry_at: Instant,
    pub(crate) left: i64,
}

/// Event-rate estimates (per second) of admissions and tokens, for slice sizes: exponentially
/// weighted (time constant 10 s) and corrected for the time since the first admission (at least
/// 1 s), so a key that just started at 500 requests/s is not taken for a slow one for 10 s.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Rate {
    requests: f64,
    tokens: f64,
    at: Option<Instant>,
    first: Option<Instant>,
}

impl Rate {
    /// `(requests, tokens)` per second at `now`.
    pub(crate) fn per_second(&self, now: Instant) -> (f64, f64) {
        let (Some(first), Some(at)) = (self.first, self.at) else {
            return (0.0, 0.0);
        };
        let seen = now.saturating_duration_since(first).as_secs_f64().max(1.0);
        let decay = (-now.saturating_duration_since(at).as_secs_f64() / RATE_TAU_SECS).exp();
        let scale = decay / (1.0 - (-seen / RATE_TAU_SECS).exp());
        (self.requests * scale, self.tokens * scale)
    }

    fn record(&mut self, now: Instant, tokens: u64) {
        let decay = self.at.map_or(1.0, |at| {
            (-now.saturating_duration_since(at).as_secs_f64() / RATE_TAU_SECS).exp()
        });
        self.requests = self.requests * decay + 1.0 / RATE_TAU_SECS;
        self.tokens = self.tokens * decay + tokens as f64 / RATE_TAU_SECS;
        self.at = Some(now);
        self.first.get_or_insert(now);
    }
}

/// What admission needs to know beyond the key's own state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub(crate) now: Instant,
    /// Whether the last Redis call succeeded.
    pub(crate) healthy: bool,
    /// Redis is learning what nodes hold after it lost its state: no new capacity until then.
    pub(crate) learning_until: Option<Instant>,
    /// `(live nodes, this node's rank)` for safe shares.
    pub(crate) nodes: (u32, u32),
    pub(crate) key_hash: u64,
    pub(crate) window: Duration,
}

impl Ctx {
    fn share(&self, limit: u64) -> u64 {
        let (count, rank) = (u64::from(self.nodes.0.max(1)), u64::from(self.nodes.1));
        let position = (rank % count + self.key_hash % count) % count;
        limit / count + u64::from(position < limit % count)
    }

    fn learning(&self) -> Option<Instant> {
        self.learning_until.filter(|&until| self.now < until)
    }
}

/// Slice sizing knobs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizing {
    /// A slice covers this much of the key's recent rate on this node.
    pub(crate) horizon: Duration,
    /// A node stops using leased slots this long after the call that last renewed them.
    pub(crate) fence: Duration,
    /// How long a refusal from Redis is trusted before asking again.
    pub(crate) backoff: Duration,
}

/// One key's state on this node.
#[derive(Debug)]
pub(crate) struct KeyState {
    pub(crate) limits: RateLimits,
    pub(crate) win: Window,
    pub(crate) in_flight: u64,
    /// Slots leased from Redis.
    pub(crate) slots: u64,
    /// The leased slots may be used until then.
    pub(crate) lease_until: Option<Instant>,
    /// Left in Redis after this node's last grant (-1 unlimited), for headers and backoff.
    pub(crate) redis_left: [i64; 3],
    pub(crate) want: Want,
    pub(crate) pending: Option<RefillShared>,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) rate: Rate,
    /// The last grant gave fewer tokens than asked: the window is nearly used up, so an
    /// `OutputAsk::UpTo` request takes what the slice has instead of waiting for more.
    pub(crate) tokens_short: bool,
    pub(crate) last_use: Instant,
}

/// An admission: the window it counts in, the output granted, the headers' snapshot.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) seq: u64,
    pub(crate) output: u64,
    pub(crate) snapshot: RateSnapshot,
}

fn limits_of(limits: &RateLimits) -> [Option<u64>; 3] {
    [limits.rpm, limits.tpm, limits.concurrency]
}

fn which(i: usize) -> Which {
    match i {
        0 => Which::Requests,
        1 => Which::Tokens,
        _ => Which::Concurrency,
    }
}

fn wide(n: u64) -> i128 {
    i128::from(n)
}

fn narrow(n: i128) -> u64 {
    u64::try_from(n.max(0)).unwrap_or(u64::MAX)
}

fn after(at: Instant, redis_from_ms: i64, redis_to_ms: i64) -> Instant {
    at + Duration::from_millis(u64::try_from(redis_to_ms.saturating_sub(redis_from_ms)).unwrap_or(0))
}

impl KeyState {
    pub(crate) fn new(now: Instant) -> KeyState {
        KeyState {
            limits: RateLimits::UNLIMITED,
            win: Window {
                seq: 0,
                source: Source::None,
                granted: [0; 2],
                used: [0; 2],
            },
            in_flight: 0,
            slots: 0,
            lease_until: None,
            redis_left: [-1; 3],
            want: Want::default(),
            pending: None,
            backoff: None,
            rate: Rate::default(),
            tokens_short: false,
            last_use: now,
        }
    }

    /// Ends a window that is over.
    pub(crate) fn roll(&mut self, now: Instant) {
        if self.win.source != Source::None && !self.win.live(now) {
            self.win = Window {
                seq: self.win.seq.wrapping_add(1),
                source: Source::None,
                granted: [0; 2],
                used: [0; 2],
            };
            self.tokens_short = false;
        }
    }

    /// Leased slots this node may use at `now` (none once the lease is older than the fence).
    pub(crate) fn usable_slots(&self, now: Instant) -> u64 {
        if self.lease_until.is_some_and(|until| now < until) {
            self.slots
        } else {
            0
        }
    }

    /// Whether capacity comes from Redis slices (refusals may be refilled), not a safe share.
    fn refills_from_redis(&self, ctx: &Ctx) -> bool {
        ctx.healthy && !matches!(self.win.source, Source::Safe { .. })
    }

    /// What is left locally of each limit (`None`: unlimited); may be negative after a settle
    /// above the reservation.
    pub(crate) fn available(&self, ctx: &Ctx) -> [Option<i128>; 3] {
        let limits = limits_of(&self.limits);
        let mut out = [None; 3];
        for (i, slot) in out.iter_mut().take(2).enumerate() {
            *slot = limits[i].map(|limit| {
                let granted = match self.win.source {
                    Source::Redis { .. } => self.win.granted[i],
                    Source::Safe { .. } => ctx.share(limit),
                    Source::None if ctx.healthy => 0,
                    Source::None => ctx.share(limit),
                };
                wide(granted) - wide(self.win.used[i])
            });
        }
        out[2] = limits[2].map(|limit| {
            let usable = self.usable_slots(ctx.now);
            let cap = if usable == 0 && !ctx.healthy {
                ctx.share(limit)
            } else {
                usable
            };
            wide(cap) - wide(self.in_flight)
        });
        out
    }

    /// Admits one request or says why not. Counts nothing when refusing.
    pub(crate) fn admit(&mut self, limits: &RateLimits, ask: TokenAsk, ctx: &Ctx) -> Result<Admitted, RateRefusal> {
        let now = ctx.now;
        self.limits = *limits;
        self.last_use = now;
        self.roll(now);
        if self.backoff.is_some_and(|b| now >= b.until) {
            self.backoff = None;
        }
        let needed = ask.min_tokens();
        let full = ask.prompt.saturating_add(ask.output.most());
        if let Some(tpm) = limits.tpm
            && needed > tpm
        {
            return Err(self.refusal(1, tpm, needed, false, ctx));
        }
        for (i, limit) in [(0, limits.rpm), (2, limits.concurrency)] {
            if limit == Some(0) {
                return Err(self.refusal(i, 0, 1, false, ctx));
            }
        }
        let avail = self.available(ctx);
        let needs = [1, needed, 1];
        for i in [0, 1, 2] {
            if let Some(a) = avail[i]
                && a < wide(needs[i])
            {
                return Err(self.short(i, needs[i], a, ctx));
            }
        }
        let output = match (ask.output, avail[1]) {
            (OutputAsk::Exactly(n), _) => n,
            (OutputAsk::UpTo { max, .. }, None) => max,
            (OutputAsk::UpTo { max, .. }, Some(a)) => {
                if a < wide(full) && self.refills_from_redis(ctx) && !self.tokens_short && ctx.learning().is_none() {
                    return Err(self.short(1, full, a, ctx));
                }
                narrow(a - wide(ask.prompt)).min(max)
            }
        };
        if self.win.source == Source::None && (limits.rpm.is_some() || limits.tpm.is_some()) {
            // Only reachable with Redis unreachable: a healthy node has no capacity without a grant.
            self.win = Window {
                seq: self.win.seq.wrapping_add(1),
                source: Source::Safe { end: now + ctx.window },
                granted: [0; 2],
                used: [0; 2],
            };
        }
        let counted = ask.prompt.saturating_add(output);
        self.win.used[0] = self.win.used[0].saturating_add(1);
        self.win.used[1] = self.win.used[1].saturating_add(counted);
        self.in_flight = self.in_flight.saturating_add(1);
        self.rate.record(now, counted);
        Ok(Admitted {
            seq: self.win.seq,
            output,
            snapshot: self.snapshot(ctx),
        })
    }

    /// A refusal for limit `i`, short locally by `needs` with `avail` left: refillable unless
    /// Redis is learning, refused recently, or unreachable.
    fn short(&self, i: usize, needs: u64, avail: i128, ctx: &Ctx) -> RateRefusal {
        let limit = limits_of(&self.limits)[i].unwrap_or(0);
        let requested = if i == 1 { needs } else { 1 };
        if let Some(until) = ctx.learning() {
            let mut r = self.refusal(i, limit, requested, false, ctx);
            r.retry_after = until.saturating_duration_since(ctx.now);
            return r;
        }
        if let Some(b) = self.backoff.filter(|b| b.which == i)
            && wide(needs) - avail > i128::from(b.left)
        {
            let mut r = self.refusal(i, limit, requested, false, ctx);
            r.retry_after = b.retry_at.saturating_duration_since(ctx.now);
            return r;
        }
        self.refusal(i, limit, requested, self.refills_from_redis(ctx), ctx)
    }

    fn refusal(&self, i: usize, allowed: u64, requested: u64, refillable: bool, ctx: &Ctx) -> RateRefusal {
        let retry_after = if i == 2 {
            CONCURRENCY_RETRY
        } else {
            self.win
                .end()
                .map_or(ctx.window, |end| end.saturating_duration_since(ctx.now))
        };
        RateRefusal {
            limit: which(i),
            retry_after,
            snapshot: self.snapshot(ctx),
            allowed,
            requested,
            refillable,
        }
    }

    /// The headers' view: what Redis had left at this node's last grant plus this node's unused
    /// slice (other nodes' unused slices are not seen; grants since then are not either).
    pub(crate) fn snapshot(&self, ctx: &Ctx) -> RateSnapshot {
        let live = self.win.live(ctx.now);
        let reset = self
            .win
            .end()
            .filter(|_| live)
            .map_or(Duration::ZERO, |end| end.saturating_duration_since(ctx.now));
        let limits = limits_of(&self.limits);
        let counter = |i: usize| {
            limits[i].map(|limit| {
                let remaining = match self.win.source {
                    _ if !live => limit,
                    Source::Redis { .. } => {
                        let mine = narrow(wide(self.win.granted[i]) - wide(self.win.used[i]));
                        narrow(i128::from(self.redis_left[i].max(0))).saturating_add(mine)
                    }
                    Source::Safe { .. } | Source::None => ctx.share(limit).saturating_sub(self.win.used[i]),
                };
                Counter {
                    limit,
                    remaining: remaining.min(limit),
                    reset,
                }
            })
        };
        RateSnapshot {
            requests: counter(0),
            tokens: counter(1),
        }
    }

    /// Whether a background refill should start now so a steady key never waits: the slice is
    /// below half of what the key uses on this node over the horizon.
    pub(crate) fn wants_prefetch(&self, ctx: &Ctx, sizing: &Sizing) -> bool {
        let Source::Redis { end, .. } = self.win.source else {
            return false;
        };
        if !ctx.healthy || self.pending.is_some() || self.backoff.is_some() || ctx.learning().is_some() {
            return false;
        }
        let horizon = sizing.horizon.min(end.saturating_duration_since(ctx.now)).as_secs_f64();
        let avail = self.available(ctx);
        let per_request = if self.rate.requests > 0.0 {
            self.rate.tokens / self.rate.requests
        } else {
            0.0
        };
        let low = [
            (self.rate.requests * horizon / 2.0).max(1.0),
            (self.rate.tokens * horizon / 2.0).max(per_request),
            1.0,
        ];
        avail
            .iter()
            .zip(low)
            .any(|(a, low)| a.is_some_and(|a| (a as f64) < low))
    }

    /// Takes what waiters want and sizes the next grant: what they need plus the key's rate on
    /// this node over the horizon (cut to what is left of the window), minus what is left
    /// locally. `min` is what the first waiter needs (all or nothing); a prefetch has `min` 0.
    /// Answers the args, whether requests wait, and the tokens asked.
    pub(crate) fn take_refill(&mut self, ctx: &Ctx, sizing: &Sizing) -> (GrantArgs, bool) {
        let want = std::mem::take(&mut self.want);
        self.pending = None;
        self.roll(ctx.now);
        let waiting = want.requests > 0;
        let left_in_window = self
            .win
            .end()
            .map_or(ctx.window, |end| end.saturating_duration_since(ctx.now));
        let horizon = sizing.horizon.min(left_in_window).as_secs_f64();
        let limits = limits_of(&self.limits);
        let healthy = Ctx { healthy: true, ..*ctx };
        let avail = self.available(&healthy);
        let (requests, tokens) = self.rate.per_second(ctx.now);
        let rate = [
            (requests * horizon).ceil(),
            (tokens * horizon).ceil(),
            (self.in_flight as f64 / 4.0).ceil().max(1.0),
        ];
        let wanted = [want.requests, want.tokens, want.requests];
        let first = [1, want.min_tokens, 1];
        let mut args = GrantArgs {
            limits: [-1; 3],
            ask: [0; 3],
            min: [0; 3],
        };
        for i in 0..3 {
            let (Some(limit), Some(a)) = (limits[i], avail[i]) else {
                continue;
            };
            args.limits[i] = i64::try_from(limit).unwrap_or(i64::MAX);
            let min = if waiting { wide(first[i]) - a } else { -a };
            let target = wide(wanted[i]) + rate[i] as i128 - a;
            args.min[i] = narrow(min);
            args.ask[i] = narrow(target.max(min)).min(limit);
            args.min[i] = args.min[i].min(args.ask[i]);
        }
        (args, waiting)
    }

    /// Adds a grant Redis answered to a call sent at `sent`.
    pub(crate) fn apply_grant(&mut self, g: &Grant, asked: &GrantArgs, sent: Instant, sizing: &Sizing) {
        let now = Instant::now();
        self.roll(now);
        if g.ws > 0 && g.we > g.now_ms {
            let end = after(sent, g.now_ms, g.we);
            match self.win.source {
                Source::Redis { ws, .. } if ws == g.ws => {}
                source => {
                    // A new Redis window. If the local one is still live (Redis lost its state, or
                    // this node ran a safe window), its admissions stay counted in the new one.
                    let carry = source != Source::None && self.win.live(now);
                    self.win = Window {
                        seq: if carry {
                            self.win.seq
                        } else {
                            self.win.seq.wrapping_add(1)
                        },
                        source: Source::Redis {
                            ws: g.ws,
                            we: g.we,
                            end,
                        },
                        granted: [0; 2],
                        used: if carry { self.win.used } else { [0; 2] },
                    };
                }
            }
            self.win.granted[0] = self.win.granted[0].saturating_add(g.granted[0]);
            self.win.granted[1] = self.win.granted[1].saturating_add(g.granted[1]);
            self.tokens_short = g.granted[1] < asked.ask[1];
        }
        if g.granted[2] > 0 {
            self.slots = self.usable_slots(now).saturating_add(g.granted[2]);
            self.lease_until = Some(sent + sizing.fence);
        }
        self.redis_left = g.left;
        self.backoff = None;
    }

    /// Records a refusal of limit `which` answered to a call sent at `sent`.
    pub(crate) fn apply_refusal(&mut self, which: usize, g: &Grant, sent: Instant, sizing: &Sizing) {
        let retry_at = if which != 2 && g.ws > 0 && g.we > g.now_ms {
            after(sent, g.now_ms, g.we)
        } else {
            sent + CONCURRENCY_RETRY
        };
        self.redis_left = g.left;
        self.backoff = Some(Backoff {
            which,
            until: Instant::now() + sizing.backoff,
            retry_at,
            left: g.left[which].max(0),
        });
    }

    /// Takes every unused request, token and slot out of the local slice, for giving back:
    /// `(ws, requests, tokens, slots)`; requests and tokens only of a live Redis window.
    pub(crate) fn take_unused(&mut self, now: Instant) -> Option<(i64, u64, u64, u64)> {
        self.roll(now);
        let (ws, rq, tk) = match self.win.source {
            Source::Redis { ws, .. } => {
                let rq = self.win.granted[0].saturating_sub(self.win.used[0]);
                let tk = self.win.granted[1].saturating_sub(self.win.used[1]);
                self.win.granted[0] -= rq;
                self.win.granted[1] -= tk;
                (ws, rq, tk)
            }
            _ => (0, 0, 0),
        };
        let spare = self.slots.saturating_sub(self.in_flight);
        self.slots -= spare;
        (rq > 0 || tk > 0 || spare > 0).then_some((ws, rq, tk, spare))
    }

    /// Whether the node holds nothing of this key and nothing is in flight (it can be forgotten).
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        self.in_flight == 0 && self.slots == 0 && self.pending.is_none() && !self.win.live(now)
    }
}

/// One key on this node: its state behind one small mutex, and the lock that keeps its Redis
/// calls one at a time (single flight).
#[derive(Debug)]
pub(crate) struct KeyCell {
    pub(crate) key_id: String,
    pub(crate) hash: u64,
    state: Mutex<KeyState>,
    pub(crate) flight: tokio::sync::Mutex<()>,
}

impl KeyCell {
    pub(crate) fn new(key_id: &str, now: Instant) -> Arc<KeyCell> {
        Arc::new(KeyCell {
            key_id: key_id.to_owned(),
            hash: key_hash(key_id),
            state: Mutex::new(KeyState::new(now)),
            flight: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A stable hash of a key id (FNV-1a), the same on every node and every build.
pub(crate) fn key_hash(key_id: &str) -> u64 {
    key_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl GrantBackend for KeyCell {
    fn adjust_tokens(&self, window: u64, from: u64, to: u64) -> bool {
        let mut state = self.lock();
        if state.win.seq != window || state.win.source == Source::None {
            return false;
        }
        // Freed tokens stay in this node's slice; they go back to Redis on recall or when idle.
        state.win.used[1] = state.win.used[1].saturating_sub(from).saturating_add(to);
        true
    }

    fn release_slot(&self) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
