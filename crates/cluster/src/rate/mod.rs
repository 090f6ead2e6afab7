//! [`RedisRateLimiter`]: per-key RPM, TPM and concurrency limits shared by every gateway node
//! through Redis, admitted locally from slices (the protocol and its bounds are in the crate doc).

mod background;
mod functions;
mod local;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::FutureExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use router_one_metering::rate::{
    Counter, GrantBackend, OutputAsk, RateGrant, RateLimiter, RateLimits, RateRefusal, RateSnapshot, RefillFuture,
    TokenAsk,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::LiveNodes;
use functions::{CallCounter, CallError, Functions, GrantArgs, GrantReply, Holding};
use local::{Ctx, KeyCell, Sizing};

/// How a [`RedisRateLimiter`] is set up. [`RedisRateConfig::new`] has the production defaults;
/// tests shorten the window and periods.
#[derive(Debug, Clone)]
pub struct RedisRateConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// This node's stable id (the same across restarts).
    pub node_id: String,
    /// Incremented at every start of the node, so a restarted node never claims the slots of its
    /// previous life (those expire).
    pub epoch: u64,
    /// The live membership, read only in safe mode (Redis unreachable).
    pub live_nodes: LiveNodes,
    /// The length of a rate window (60 s; shorter only in tests).
    pub window: Duration,
    /// After Redis lost its state, nothing new is granted for this long while nodes re-announce
    /// what they hold.
    pub learning: Duration,
    /// A node's slot leases expire in Redis this long after its last renewal.
    pub slot_ttl: Duration,
    /// A node stops using its leased slots this long after the call that last renewed them
    /// (must be below `slot_ttl`, by more than the longest call).
    pub slot_fence: Duration,
    /// How often slot leases are renewed (several renewals must fit in `slot_fence`).
    pub renew_every: Duration,
    /// How often the background task checks Redis's generation and returns idle slices.
    pub tick: Duration,
    /// Every Redis call gives up after this long.
    pub call_timeout: Duration,
    /// A key with no admission on this node for this long gives its unused slice back.
    pub idle_return: Duration,
    /// A slice covers this much of the key's recent rate on this node.
    pub refill_horizon: Duration,
    /// After publishing a recall, the refused node waits this long before asking again.
    pub recall_wait: Duration,
    /// A refusal from Redis is trusted this long before asking again.
    pub backoff: Duration,
}

impl RedisRateConfig {
    /// The defaults: 60 s windows, 1 s learning, slots expiring 10 s after the last renewal
    /// (every 2 s) and unused after 8 s, 500 ms call timeout, 5 s idle return, 2 s horizon, 30 ms
    /// recall wait, 500 ms backoff, one live node.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>, epoch: u64) -> RedisRateConfig {
        RedisRateConfig {
            url: url.into(),
            node_id: node_id.into(),
            epoch,
            live_nodes: LiveNodes::single(),
            window: router_one_metering::rate::WINDOW,
            learning: Duration::from_secs(1),
            slot_ttl: Duration::from_secs(10),
            slot_fence: Duration::from_secs(8),
            renew_every: Duration::from_secs(2),
            tick: Duration::from_secs(1),
            call_timeout: Duration::from_millis(500),
            idle_return: Duration::from_secs(5),
            refill_horizon: Duration::from_secs(2),
            recall_wait: Duration::from_millis(30),
            backoff: Duration::from_millis(500),
        }
    }
}

/// Why [`RedisRateLimiter::connect`] failed: only a malformed URL. An unreachable Redis is not an
/// error: the limiter starts in safe mode and keeps trying.
#[derive(Debug)]
pub struct ConnectError(redis::RedisError);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limiter: bad Redis URL: {}", self.0)
    }
}

impl std::error::Error for ConnectError {}

/// Counters for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisRateStats {
    /// FCALLs sent (each call of a pipeline counts).
    pub fcalls: u64,
    /// `ro_rl_v1_grant` calls: the ones on a request's path (refills) or just ahead of it
    /// (prefetch).
    pub grant_calls: u64,
    /// Whether the last Redis call succeeded (otherwise new windows run in safe mode).
    pub healthy: bool,
    /// The generation of Redis's state this node is in, once known.
    pub generation: Option<String>,
    /// Keys with state on this node.
    pub keys: usize,
}

/// The shared per-key rate limiter. See the crate documentation for the protocol and bounds.
///
/// `acquire` is local and synchronous; a refusal marked `refillable` is followed by one awaited
/// [`RateLimiter::refill`] and a second `acquire` (see [`RateLimiter`]). Must be created inside a
/// Tokio runtime. Dropping it without [`shutdown`](RedisRateLimiter::shutdown) behaves like a
/// crash: nothing is returned, its slots expire in Redis after `slot_ttl`.
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

/// What Redis's state generation is, as this node last saw it.
#[derive(Debug, Default)]
struct GenState {
    id: Option<String>,
    learning_until: Option<Instant>,
}

/// What the background task is asked to do.
#[derive(Debug)]
enum Command {
    Shutdown(oneshot::Sender<()>),
}

struct Inner {
    cfg: RedisRateConfig,
    /// `<node_id>:<epoch>`, the node's name in Redis.
    node: String,
    fns: Functions,
    keys: DashMap<String, Arc<KeyCell>>,
    generation: Mutex<GenState>,
    /// Serializes generation changes (hello and the re-announcement after it).
    gen_change: tokio::sync::Mutex<()>,
    healthy: AtomicBool,
    counter: CallCounter,
    runtime: tokio::runtime::Handle,
    commands: mpsc::UnboundedSender<Command>,
}

impl RedisRateLimiter {
    /// Connects with the defaults of [`RedisRateConfig::new`] and `live_nodes`.
    pub async fn connect(
        url: &str,
        node_id: &str,
        epoch: u64,
        live_nodes: LiveNodes,
    ) -> Result<RedisRateLimiter, ConnectError> {
        let mut cfg = RedisRateConfig::new(url, node_id, epoch);
        cfg.live_nodes = live_nodes;
        RedisRateLimiter::connect_with(cfg).await
    }

    /// Connects with `cfg`: loads the functions and learns Redis's generation if Redis answers,
    /// and starts the background task (renewals, returns, recalls) either way.
    pub async fn connect_with(cfg: RedisRateConfig) -> Result<RedisRateLimiter, ConnectError> {
        let client = redis::Client::open(cfg.url.as_str()).map_err(ConnectError)?;
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.call_timeout))
            .set_response_timeout(Some(cfg.call_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg).map_err(ConnectError)?;
        let node = format!("{}:{}", cfg.node_id, cfg.epoch);
        let fns = Functions::new(conn, node.clone(), cfg.call_timeout, cfg.slot_ttl, cfg.window);
        let (commands, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            node,
            fns,
            keys: DashMap::new(),
            generation: Mutex::new(GenState::default()),
            gen_change: tokio::sync::Mutex::new(()),
            healthy: AtomicBool::new(true),
            counter: CallCounter::default(),
            runtime: tokio::runtime::Handle::current(),
            commands,
            cfg,
        });
        match inner.fns.load().await {
            Ok(()) => {
                let _ = inner.refresh_gen(None).await;
            }
            Err(e) => {
                inner.set_healthy(false, &e);
            }
        }
        let tasks = vec![
            tokio::spawn(background::run(Arc::downgrade(&inner), rx)),
            tokio::spawn(background::listen_recalls(client, Arc::downgrade(&inner))),
        ];
        Ok(RedisRateLimiter { inner, tasks })
    }

    /// Gives every unused slice and spare slot back to Redis and stops the background tasks.
    /// Call it after the server stopped admitting; grants still alive keep working locally.
    /// Takes `&self` so it can be called through the `Arc` the server shares.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(self.inner.cfg.call_timeout * 4, rx).await;
        }
        for task in &self.tasks {
            task.abort();
        }
    }

    /// Whether Redis answered this node's last call (one atomic load: cheap per request).
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Counters for metrics and tests.
    pub fn stats(&self) -> RedisRateStats {
        let generation = self.inner.generation.lock().unwrap_or_else(PoisonError::into_inner);
        RedisRateStats {
            fcalls: self.inner.counter.fcalls.load(Ordering::Relaxed),
            grant_calls: self.inner.counter.grants.load(Ordering::Relaxed),
            healthy: self.inner.healthy.load(Ordering::Relaxed),
            generation: generation.id.clone(),
            keys: self.inner.keys.len(),
        }
    }
}

impl Drop for RedisRateLimiter {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Inner {
    fn cell(&self, key_id: &str, now: Instant) -> Arc<KeyCell> {
        if let Some(cell) = self.keys.get(key_id) {
            return Arc::clone(cell.value());
        }
        Arc::clone(
            self.keys
                .entry(key_id.to_owned())
                .or_insert_with(|| KeyCell::new(key_id, now))
                .value(),
        )
    }

    fn ctx(&self, now: Instant, key_hash: u64) -> Ctx {
        let learning_until = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .learning_until;
        Ctx {
            now,
            healthy: self.healthy.load(Ordering::Relaxed),
            learning_until,
            nodes: self.cfg.live_nodes.get(),
            key_hash,
            window: self.cfg.window,
        }
    }

    fn sizing(&self) -> Sizing {
        Sizing {
            horizon: self.cfg.refill_horizon,
            fence: self.cfg.slot_fence,
            backoff: self.cfg.backoff,
        }
    }

    fn set_healthy(&self, healthy: bool, error: &CallError) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was && !healthy {
            tracing::warn!(node = %self.node, %error, "rate limiter: Redis unreachable; new windows run in safe mode");
        }
    }

    fn note<T>(&self, result: &Result<T, CallError>) {
        match result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(node = %self.node, "rate limiter: Redis reachable again");
                }
            }
            Err(e) => self.set_healthy(false, e),
        }
    }

    fn known_gen(&self) -> Option<String> {
        self.generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .id
            .clone()
    }

    /// Learns Redis's generation (creating one if Redis has none). If it is not the one this
    /// node knew (`stale`, or the one on record), re-announces everything the node holds in it.
    async fn refresh_gen(&self, stale: Option<&str>) -> Result<String, CallError> {
        let _change = self.gen_change.lock().await;
        let known = self.known_gen();
        if let Some(id) = &known
            && stale.is_some_and(|s| s != id)
        {
            return Ok(id.clone());
        }
        let candidate = format!("{}-{:016x}", self.node, rand::random::<u64>());
        let sent = Instant::now();
        let hello = self.fns.hello(&candidate, self.cfg.learning, &self.counter).await;
        self.note(&hello);
        let hello = hello?;
        let learning_until = (hello.learn_until_ms > hello.now_ms)
            .then(|| sent + Duration::from_millis(u64::try_from(hello.learn_until_ms - hello.now_ms).unwrap_or(0)));
        if known.as_deref() != Some(hello.id.as_str()) {
            if known.is_some() {
                tracing::warn!(node = %self.node, generation = %hello.id, "rate limiter: Redis lost its state; re-announcing what this node holds");
            }
            self.announce_all(&hello.id).await;
            let mut generation = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
            generation.id = Some(hello.id.clone());
            generation.learning_until = learning_until;
        }
        Ok(hello.id)
    }

    /// The generation to call with, learning it first if unknown.
    async fn current_gen(&self) -> Result<String, CallError> {
        match self.known_gen() {
            Some(id) => Ok(id),
            None => self.refresh_gen(None).await,
        }
    }

    /// One grant for `key_id`, re-learning the generation (and re-announcing) once if stale.
    async fn grant(&self, key_id: &str, args: &GrantArgs) -> Result<GrantReply, CallError> {
        let mut generation = self.current_gen().await?;
        for attempt in 0..2 {
            let reply = self.fns.grant(key_id, &generation, args, &self.counter).await;
            self.note(&reply);
            match reply? {
                GrantReply::Stale { .. } if attempt == 0 => generation = self.refresh_gen(Some(&generation)).await?,
                GrantReply::Learning { until_ms, now_ms } => {
                    let until = Instant::now() + Duration::from_millis(u64::try_from(until_ms - now_ms).unwrap_or(0));
                    self.generation
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .learning_until = Some(until);
                    return Ok(GrantReply::Learning { until_ms, now_ms });
                }
                other => return Ok(other),
            }
        }
        Ok(GrantReply::Stale { actual: String::new() })
    }

    /// What the node holds of every key, for re-announcement or renewal: live Redis windows and
    /// leased (or in-flight) slots. With `slots_only`, only keys holding slots.
    fn holdings(&self, slots_only: bool) -> Vec<(String, Holding)> {
        let now = Instant::now();
        let mut out = Vec::new();
        for cell in self.keys.iter() {
            let mut st = cell.lock();
            st.roll(now);
            let slots = st.usable_slots(now).max(st.in_flight);
            let (ws, we, rq, tk) = match st.win.source {
                local::Source::Redis { ws, we, .. } => (ws, we, st.win.granted[0], st.win.granted[1]),
                _ => (0, 0, 0, 0),
            };
            if slots > 0 || (!slots_only && ws > 0) {
                out.push((cell.key_id.clone(), Holding { ws, we, rq, tk, slots }));
            }
        }
        out
    }

    /// Announces (forced, idempotent `sync`) everything held in generation `generation`.
    async fn announce_all(&self, generation: &str) {
        let holdings = self.holdings(false);
        if holdings.is_empty() {
            return;
        }
        let sent = Instant::now();
        let reply = self.fns.sync(generation, &holdings, &self.counter).await;
        self.note(&reply);
        if let Ok(replies) = reply {
            self.renewed(&holdings, &replies, sent);
        }
        tracing::info!(node = %self.node, keys = holdings.len(), "rate limiter: announced held slices");
    }

    /// Records renewed slot leases: the slots Redis now counts for this node may be used until
    /// the fence.
    fn renewed(&self, holdings: &[(String, Holding)], replies: &[Option<u64>], sent: Instant) {
        for ((key_id, held), reply) in holdings.iter().zip(replies) {
            let (Some(slots), Some(cell)) = (reply, self.keys.get(key_id)) else {
                continue;
            };
            if held.slots == 0 {
                continue;
            }
            let mut st = cell.lock();
            st.slots = (*slots).min(held.slots.max(st.slots));
            st.lease_until = Some(sent + self.cfg.slot_fence);
        }
    }

    fn spawn_refill(self: &Arc<Inner>, cell: &Arc<KeyCell>) -> local::RefillShared {
        let handle = self.runtime.spawn(refill(Arc::clone(self), Arc::clone(cell)));
        let done: RefillFuture = Box::pin(async move {
            let _ = handle.await;
        });
        done.shared()
    }
}

/// One grant call for a key, for every caller waiting at the time it is sent (single flight):
/// sized in `take_refill`, answered into the key's state. A refusal while other nodes hold parts
/// of the key publishes a recall and asks once more after `recall_wait`.
async fn refill(inner: Arc<Inner>, cell: Arc<KeyCell>) {
    let _flight = cell.flight.lock().await;
    let sizing = inner.sizing();
    let (args, waiting) = {
        let ctx = inner.ctx(Instant::now(), cell.hash);
        cell.lock().take_refill(&ctx, &sizing)
    };
    if args.ask == [0; 3] && args.min == [0; 3] {
        return;
    }
    let mut recalled = false;
    loop {
        let sent = Instant::now();
        match inner.grant(&cell.key_id, &args).await {
            Ok(GrantReply::Granted(g)) => {
                cell.lock().apply_grant(&g, &args, sent, &sizing);
                return;
            }
            Ok(GrantReply::Refused { which, grant }) => {
                if waiting && !recalled && grant.others > 0 {
                    recalled = true;
                    if inner.fns.publish_recall(&cell.key_id).await.is_ok() {
                        tracing::debug!(key_id = %cell.key_id, "rate limiter: refused while others hold slices; recall");
                        tokio::time::sleep(inner.cfg.recall_wait).await;
                        continue;
                    }
                }
                cell.lock().apply_refusal(which, &grant, sent, &sizing);
                return;
            }
            Ok(GrantReply::Learning { .. }) | Ok(GrantReply::Stale { .. }) => return,
            Err(e) => {
                tracing::debug!(key_id = %cell.key_id, error = %e, "rate limiter: refill failed");
                return;
            }
        }
    }
}

impl RateLimiter for RedisRateLimiter {
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
        let cell = self.inner.cell(key_id, now);
        let ctx = self.inner.ctx(now, cell.hash);
        let mut st = cell.lock();
        let admitted = st.admit(limits, ask, &ctx)?;
        if st.wants_prefetch(&ctx, &self.inner.sizing()) {
            st.pending = Some(self.inner.spawn_refill(&cell));
        }
        drop(st);
        let backend: Arc<dyn GrantBackend> = cell;
        Ok(RateGrant::new(
            Some(backend),
            admitted.seq,
            ask.prompt,
            admitted.output,
            true,
            admitted.snapshot,
        ))
    }

    fn peek(&self, key_id: &str, limits: &RateLimits, now: Instant) -> RateSnapshot {
        let Some(cell) = self.inner.keys.get(key_id).map(|c| Arc::clone(c.value())) else {
            let full = |limit: u64| Counter {
                limit,
                remaining: limit,
                reset: Duration::ZERO,
            };
            return RateSnapshot {
                requests: limits.rpm.map(full),
                tokens: limits.tpm.map(full),
            };
        };
        let ctx = self.inner.ctx(now, cell.hash);
        let mut st = cell.lock();
        st.limits = *limits;
        st.roll(now);
        st.snapshot(&ctx)
    }

    fn refill(&self, key_id: &str, limits: &RateLimits, ask: TokenAsk) -> Option<RefillFuture> {
        if !limits.is_limited() {
            return None;
        }
        let cell = self.inner.cell(key_id, Instant::now());
        let mut st = cell.lock();
        st.limits = *limits;
        let full = ask.prompt.saturating_add(ask.output.most());
        let fewest = match ask.output {
            OutputAsk::Exactly(_) => full,
            OutputAsk::UpTo { .. } => ask.min_tokens(),
        };
        st.want.min_tokens = if st.want.requests == 0 {
            fewest
        } else {
            st.want.min_tokens.min(fewest)
        };
        st.want.requests = st.want.requests.saturating_add(1);
        st.want.tokens = st.want.tokens.saturating_add(full);
        let pending = match &st.pending {
            Some(pending) => pending.clone(),
            None => {
                let pending = self.inner.spawn_refill(&cell);
                st.pending = Some(pending.clone());
                pending
            }
        };
        Some(Box::pin(pending))
    }
}
