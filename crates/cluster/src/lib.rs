//! Router One cluster: what ties gateway nodes together. For now, per-key rate limits (RPM, TPM,
//! concurrency) shared by every node through Redis: [`RedisRateLimiter`], an implementation of
//! `router_one_metering::rate::RateLimiter`. Redis coordinates; it never holds money.
//!
//! # Protocol
//!
//! **Redis state.** One hash per key, `ro:rl:{<key_id>}` (hash-tagged: one cluster slot): the
//! current window `ws`/`we` (ms of Redis `TIME`, the only clock for windows), `rq`/`tk` granted
//! to nodes in it, a slot high-water mark `hwm`, and per node (`<node_id>:<epoch>`) what it holds:
//! window, requests, tokens, slots and the slots' expiry. A Functions library `ro_rl_v1`
//! (`src/rate_limit.lua`, loaded with `FUNCTION LOAD REPLACE` at start and again on "function not
//! found"; a change of meaning gets new names, `ro_rl_v2_*`, so a rolling deploy never calls an
//! incompatible version) has four functions:
//! - `grant`: all or nothing over the three limits, each granting `min(ask, left, fair)` where
//!   `fair = max(min, left / (2 × (other holders + 1)))`, or nothing if any limit has less than
//!   `min` left. A window starts at the first grant of requests or tokens after the previous one
//!   ended (the in-process limiter's semantics, Redis time).
//! - `return`: unused requests/tokens of the same window, and slots.
//! - `sync`: "this is what I hold" — renews the node's slot leases (expiry `slot_ttl`, 10 s) and
//!   re-announces its window after Redis lost its state. Idempotent and forced: it takes the max
//!   of what Redis has and what the node says, so a race with a grant or a return can over-count
//!   for a moment, never under-count.
//! - `hello`: the generation of Redis's state (`ro:rl:gen`), created with a learning period if
//!   missing. Every other function names the generation it believes in and changes nothing if it
//!   is not Redis's.
//!
//! **Hot path.** `acquire` is synchronous and local: one small mutex per key, the in-process
//! limiter's logic against what Redis granted this node for the current window (its *slice*).
//! A slice ends locally at `send time + (we − Redis now)`, never after Redis's window ends. When
//! the slice is short the refusal is `refillable`; the caller awaits `refill` once (bounded by
//! its own timeout) and calls `acquire` again. `refill` is single-flight per key: every caller
//! waiting when the call is sent shares one FCALL, sized for all of them plus ~2 s of the key's
//! recent rate on this node (an EWMA, τ 10 s). After an admission that leaves the slice under
//! half of that, a background prefetch refills it, so a steady key never waits and pays about one
//! FCALL per few seconds (test: 8 grants for 1,000 requests). Near the limit the fair cap shrinks
//! grants to the one request's need ("exact mode"), so little is stranded on idle nodes.
//!
//! **Settlement.** `RateGrant::settle` and `shrink_output` adjust the node's slice only (freed
//! tokens stay with the node); releasing a slot is local. Nothing on a grant's path touches the
//! network. Unused slices and spare slots go back to Redis when the key has been idle on the node
//! for 5 s, when another node publishes a recall, and at [`RedisRateLimiter::shutdown`].
//!
//! **Recall.** A refill refused while other nodes hold parts of the key publishes the key on
//! `ro:rl:recall`; every other node gives back its unused slice and spare slots of that key; the
//! refused node asks once more after 30 ms. A refusal from Redis is then trusted for 500 ms
//! (requests short of that limit are refused locally, with `Retry-After` = window end).
//!
//! # Bounds
//!
//! Redis reachable, every node up:
//! - per window, Σ requests admitted ≤ `rpm` and Σ tokens counted at admission (prompt + reserved
//!   output) ≤ `tpm`, exactly: a node admits only from its granted slice, and Redis grants no more
//!   than the limit. A settlement above the reservation (the upstream reported more than
//!   `max_tokens`) puts the node's slice in deficit, paid by its next grant.
//! - slots usable by nodes ≤ `max_concurrency` at every instant: a node uses leased slots only
//!   until `slot_fence` (8 s) after the call that last renewed them, and Redis frees them only
//!   `slot_ttl` (10 s) after that call's Redis time. A node cut off from Redis for longer than
//!   `slot_ttl` keeps running what it already admitted; those requests (at most its leased slots)
//!   are then not counted in Redis. A dead node has none.
//! - under-admission: a request is refused while another node holds an unused slice only until
//!   the recall answers (30 ms, one retry); tests fill every window to the exact limit.
//!   A node that dies keeps its requests/tokens counted until the window ends and its slots until
//!   they expire (≤ 10 s).
//!
//! Redis unreachable ("safe mode", Doorman): a node keeps using its live slices until they end;
//! for a new window it admits at most its share `floor(limit / n) + (1 if (rank + hash(key))
//! mod n < limit mod n)`, and for concurrency its share of `max_concurrency` once its lease is
//! past the fence; `n` and `rank` come from [`LiveNodes`] (the membership). If every node has
//! the same view and none reaches Redis, Σ shares = limit exactly per window of each node. Bound
//! otherwise: the excess is at most the shares of the nodes in safe mode while others still
//! reach Redis (a partial partition), or that disagree on `n`. A node's safe window runs to its
//! end after Redis is back, so the first Redis window after an outage may see up to
//! Σ safe shares (≤ the limit) more.
//!
//! Redis lost its state (restart without persistence, failover to an async replica): the next
//! call of every node finds a missing or different generation (the background checks every
//! second); the node creates or learns the new one and re-announces (`sync`) every live window
//! and slot it holds. For `learning` (1 s) after a generation starts nothing new is granted (the
//! node answers 429 with `Retry-After` = the rest of it); nodes keep serving from their slices.
//! Exact afterwards, except that the admissions, in that window, of nodes that died or could not
//! reach Redis during the learning period are not counted again: the excess is bounded by those
//! nodes' slices in that window.
//!
//! # Headers
//!
//! `x-ratelimit-remaining-*` = what Redis had left at this node's last grant + this node's unused
//! slice. Exact on one node; with several, it misses other nodes' unused slices (obtainable
//! through a recall) and over-estimates by what others were granted since this node's last call.
//! A 429 has `Retry-After` = time to the window end (concurrency: 1 s).
//!
//! # Where this differs from the design (`scale-out.md` §5) and why
//!
//! - The fair-share cap and exact mode are computed inside `grant`, where `left` and the number
//!   of holders are exact, instead of by each node from a stale `left`.
//! - Renewal and re-announcement are one idempotent `sync`, so there is no separate announce path
//!   to get wrong; an outage or a lost state heals with the same call.
//! - A slice ends locally at *send* time + (we − Redis now), not receive time: receive time would
//!   let a slice outlive Redis's window by a round trip and double-count across windows.
//! - Every function checks the generation, so a lost state is detected by the first call after
//!   it, not only through dropped connections.
//!
//! # Limits of this version
//!
//! The generation key `ro:rl:gen` is one key: on Redis Cluster it must become one per shard
//! (the functions would touch two slots). `LiveNodes` must be fed by the membership.
//!
//! # Use
//!
//! ```no_run
//! # async fn run() -> Result<(), router_one_cluster::ConnectError> {
//! use router_one_cluster::{LiveNodes, RedisRateLimiter};
//! let live = LiveNodes::new(3, 0); // the membership updates it with `live.set(count, rank)`
//! let limiter = RedisRateLimiter::connect("redis://127.0.0.1:6379/", "n1", 7, live).await?;
//! // … serve: acquire; on a refillable refusal await refill once, acquire again …
//! limiter.shutdown().await;
//! # Ok(()) }
//! ```

mod live_nodes;
mod rate;

pub use live_nodes::LiveNodes;
pub use rate::{ConnectError, RedisRateConfig, RedisRateLimiter, RedisRateStats};
