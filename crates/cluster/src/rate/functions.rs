//! The Redis side of the rate limiter: the `ro_rl_v1` Functions library (`rate_limit.lua`), how it
//! is loaded, and typed calls to its four functions. Nothing here keeps state but the connection
//! and a call counter; the generation a call believes in is passed by the caller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Pipeline, RedisError, Value};

/// The Functions library, loaded with `FUNCTION LOAD REPLACE`.
pub(crate) const LIBRARY: &str = include_str!("../rate_limit.lua");

/// The key holding the generation of Redis's rate state and its learning period.
pub(crate) const GEN_KEY: &str = "ro:rl:gen";

/// The pub/sub channel on which a refused node asks the others to give back unused slices.
pub(crate) const RECALL_CHANNEL: &str = "ro:rl:recall";

/// A key's hash: hash-tagged on the key id, so Redis Cluster keeps it in one slot.
pub(crate) fn state_key(key_id: &str) -> String {
    format!("ro:rl:{{{key_id}}}")
}

/// What a call failed with.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Redis did not answer (down, unreachable, timed out) or answered with an error.
    Redis(RedisError),
    /// No answer within the call timeout.
    Timeout,
    /// The answer did not have the expected shape (a library mismatch).
    Shape(&'static str),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Redis(e) => write!(f, "redis: {e}"),
            CallError::Timeout => f.write_str("redis: no answer within the call timeout"),
            CallError::Shape(what) => write!(f, "redis: unexpected reply to {what}"),
        }
    }
}

/// The generation Redis's state is in, from `hello`.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    pub(crate) id: String,
    /// Redis time (ms) until which no new capacity is granted.
    pub(crate) learn_until_ms: i64,
    pub(crate) now_ms: i64,
}

/// What the node asks of one key in one `grant`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GrantArgs {
    /// rpm, tpm, concurrency; -1 for none.
    pub(crate) limits: [i64; 3],
    /// Requests, tokens, slots wanted.
    pub(crate) ask: [u64; 3],
    /// The fewest of each worth taking (all or nothing).
    pub(crate) min: [u64; 3],
}

/// The answer to a `grant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GrantReply {
    /// Granted `granted` (requests, tokens, slots) in window `ws..we` (Redis ms).
    Granted(Grant),
    /// Nothing granted: limit `which` (0 requests, 1 tokens, 2 slots) has less than `min` left.
    Refused { which: usize, grant: Grant },
    /// The node's generation is not Redis's (`actual`, empty if Redis has none: state was lost).
    Stale { actual: String },
    /// Redis's state is new and still learning what nodes hold, until `until_ms` (Redis ms).
    Learning { until_ms: i64, now_ms: i64 },
}

/// The numbers of a grant or refusal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) granted: [u64; 3],
    pub(crate) ws: i64,
    pub(crate) we: i64,
    pub(crate) now_ms: i64,
    /// Left after this grant, -1 for an unlimited one.
    pub(crate) left: [i64; 3],
    /// Other nodes holding something of this key.
    pub(crate) others: u64,
}

/// What a node holds of one key, for `sync` (slot renewal and re-announcement).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Holding {
    pub(crate) ws: i64,
    pub(crate) we: i64,
    pub(crate) rq: u64,
    pub(crate) tk: u64,
    pub(crate) slots: u64,
}

/// The result of one `sync`: `Some(slots Redis counts for the node)`, or `None` when stale.
pub(crate) type SyncReply = Option<u64>;

/// A connection to Redis that speaks `ro_rl_v1`.
#[derive(Clone)]
pub(crate) struct Functions {
    conn: ConnectionManager,
    node: String,
    timeout: Duration,
    slot_ttl_ms: u64,
    window_ms: u64,
}

impl std::fmt::Debug for Functions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Functions")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Counts FCALLs (each call in a pipeline counts), for tests and metrics.
#[derive(Debug, Default)]
pub(crate) struct CallCounter {
    pub(crate) fcalls: AtomicU64,
    pub(crate) grants: AtomicU64,
}

impl Functions {
    pub(crate) fn new(
        conn: ConnectionManager,
        node: String,
        timeout: Duration,
        slot_ttl: Duration,
        window: Duration,
    ) -> Functions {
        Functions {
            conn,
            node,
            timeout,
            slot_ttl_ms: millis(slot_ttl),
            window_ms: millis(window),
        }
    }

    /// Loads (or replaces) the library.
    pub(crate) async fn load(&self) -> Result<(), CallError> {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg("REPLACE").arg(LIBRARY);
        let mut conn = self.conn.clone();
        let _: String = self.bounded(cmd.query_async(&mut conn)).await?;
        Ok(())
    }

    async fn bounded<T>(&self, call: impl Future<Output = Result<T, RedisError>>) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Redis(e)),
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// Runs a pipeline of FCALLs; on "function not found" (Redis restarted without the library)
    /// loads the library and runs it once more.
    async fn run(&self, pipe: &Pipeline, counter: &CallCounter, calls: u64) -> Result<Vec<Value>, CallError> {
        for attempt in 0..2 {
            counter.fcalls.fetch_add(calls, Ordering::Relaxed);
            let mut conn = self.conn.clone();
            match self.bounded(pipe.query_async::<Vec<Value>>(&mut conn)).await {
                Err(CallError::Redis(e)) if attempt == 0 && is_missing_function(&e) => {
                    tracing::info!(node = %self.node, "rate limiter: Redis has no ro_rl_v1 functions; loading them");
                    self.load().await?;
                }
                other => return other,
            }
        }
        Err(CallError::Shape("function load"))
    }

    /// `ro_rl_v1_hello`: Redis's generation, created as `candidate` (learning for `learn`) if missing.
    pub(crate) async fn hello(
        &self,
        candidate: &str,
        learn: Duration,
        counter: &CallCounter,
    ) -> Result<Hello, CallError> {
        let mut pipe = redis::pipe();
        pipe.cmd("FCALL")
            .arg("ro_rl_v1_hello")
            .arg(1)
            .arg(GEN_KEY)
            .arg(candidate)
            .arg(millis(learn));
        let reply = self.run(&pipe, counter, 1).await?;
        let v = items(first(&reply)?, 3, "hello")?;
        Ok(Hello {
            id: string(&v[0]),
            learn_until_ms: int(&v[1]),
            now_ms: int(&v[2]),
        })
    }

    /// `ro_rl_v1_grant` for one key.
    pub(crate) async fn grant(
        &self,
        key_id: &str,
        generation: &str,
        args: &GrantArgs,
        counter: &CallCounter,
    ) -> Result<GrantReply, CallError> {
        counter.grants.fetch_add(1, Ordering::Relaxed);
        let mut pipe = redis::pipe();
        pipe.cmd("FCALL")
            .arg("ro_rl_v1_grant")
            .arg(2)
            .arg(state_key(key_id))
            .arg(GEN_KEY)
            .arg(&self.node)
            .arg(generation)
            .arg(&args.limits[..])
            .arg(&args.ask[..])
            .arg(&args.min[..])
            .arg(self.window_ms)
            .arg(self.slot_ttl_ms);
        let reply = self.run(&pipe, counter, 1).await?;
        parse_grant(first(&reply)?)
    }

    /// `ro_rl_v1_return` for several keys in one pipeline: `(key_id, ws, rq, tk, slots)`.
    /// Answers, per key, whether the generation matched.
    pub(crate) async fn give_back(
        &self,
        generation: &str,
        returns: &[(String, i64, u64, u64, u64)],
        counter: &CallCounter,
    ) -> Result<Vec<bool>, CallError> {
        if returns.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (key_id, ws, rq, tk, slots) in returns {
            pipe.cmd("FCALL")
                .arg("ro_rl_v1_return")
                .arg(2)
                .arg(state_key(key_id))
                .arg(GEN_KEY)
                .arg(&self.node)
                .arg(generation)
                .arg(*ws)
                .arg(*rq)
                .arg(*tk)
                .arg(*slots);
        }
        let reply = self.run(&pipe, counter, returns.len() as u64).await?;
        reply
            .iter()
            .map(|v| items(v, 5, "return").map(|v| int(&v[0]) == 1))
            .collect()
    }

    /// `ro_rl_v1_sync` for several keys in one pipeline: renews slot leases and (re-)announces
    /// what the node holds.
    pub(crate) async fn sync(
        &self,
        generation: &str,
        holdings: &[(String, Holding)],
        counter: &CallCounter,
    ) -> Result<Vec<SyncReply>, CallError> {
        if holdings.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (key_id, h) in holdings {
            pipe.cmd("FCALL")
                .arg("ro_rl_v1_sync")
                .arg(2)
                .arg(state_key(key_id))
                .arg(GEN_KEY)
                .arg(&self.node)
                .arg(generation)
                .arg(h.ws)
                .arg(h.we)
                .arg(h.rq)
                .arg(h.tk)
                .arg(h.slots)
                .arg(self.slot_ttl_ms);
        }
        let reply = self.run(&pipe, counter, holdings.len() as u64).await?;
        reply
            .iter()
            .map(|v| items(v, 5, "sync").map(|v| (int(&v[0]) == 1).then(|| u64::try_from(int(&v[1])).unwrap_or(0))))
            .collect()
    }

    /// Asks every node to give back its unused slices of `key_id`.
    pub(crate) async fn publish_recall(&self, key_id: &str) -> Result<(), CallError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(RECALL_CHANNEL).arg(recall_message(&self.node, key_id));
        let mut conn = self.conn.clone();
        let _: i64 = self.bounded(cmd.query_async(&mut conn)).await?;
        Ok(())
    }
}

/// A recall message: the asking node, a newline, the key id.
pub(crate) fn recall_message(node: &str, key_id: &str) -> String {
    format!("{node}\n{key_id}")
}

/// The (asking node, key id) of a recall message.
pub(crate) fn parse_recall(message: &str) -> Option<(&str, &str)> {
    message.split_once('\n')
}

fn is_missing_function(e: &RedisError) -> bool {
    let text = e.to_string();
    text.contains("Function not found") || text.contains("NOSCRIPT")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn first(reply: &[Value]) -> Result<&Value, CallError> {
    reply.first().ok_or(CallError::Shape("an empty pipeline"))
}

fn items<'a>(v: &'a Value, n: usize, what: &'static str) -> Result<&'a [Value], CallError> {
    match v {
        Value::Array(items) if items.len() >= n => Ok(items),
        _ => Err(CallError::Shape(what)),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        Value::SimpleString(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn uint(v: &Value) -> u64 {
    u64::try_from(int(v)).unwrap_or(0)
}

fn string(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

/// Parses `{code, which, g_rq, g_tk, g_sl, ws, we, now, left_rq, left_tk, left_sl, others, generation}`.
pub(crate) fn parse_grant(v: &Value) -> Result<GrantReply, CallError> {
    let v = items(v, 13, "grant")?;
    let grant = Grant {
        granted: [uint(&v[2]), uint(&v[3]), uint(&v[4])],
        ws: int(&v[5]),
        we: int(&v[6]),
        now_ms: int(&v[7]),
        left: [int(&v[8]), int(&v[9]), int(&v[10])],
        others: uint(&v[11]),
    };
    Ok(match int(&v[0]) {
        1 => GrantReply::Granted(grant),
        0 => GrantReply::Refused {
            which: usize::try_from(int(&v[1]).saturating_sub(1)).unwrap_or(0).min(2),
            grant,
        },
        -1 => GrantReply::Stale { actual: string(&v[12]) },
        -2 => GrantReply::Learning {
            until_ms: grant.we,
            now_ms: grant.now_ms,
        },
        _ => return Err(CallError::Shape("grant code")),
    })
}
