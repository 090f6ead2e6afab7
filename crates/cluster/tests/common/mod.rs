//! Test rig: a private `redis-server` per test (killed and restarted at will, never the shared
//! one on 6379), limiter nodes with short periods, and the caller's acquire → refill → acquire.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use router_one_cluster::{LiveNodes, RedisRateConfig, RedisRateLimiter};
use router_one_metering::rate::{OutputAsk, RateGrant, RateLimiter, RateLimits, RateRefusal, TokenAsk};

/// A private Redis without persistence: a restart loses everything.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// On a free port below the ephemeral range (a port the kernel may hand to a client socket
    /// can make a readiness probe connect to itself).
    pub fn start() -> RedisServer {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let base = 20_000 + (std::process::id() % 500) as u16 * 16;
        for _ in 0..200 {
            let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 8000;
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let mut server = RedisServer { port, child: None };
            if server.try_start() {
                return server;
            }
        }
        panic!("no free port for redis-server");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (again) on the same port, empty.
    pub fn restart(&mut self) {
        assert!(self.try_start(), "redis-server did not start on {}", self.port);
    }

    fn try_start(&mut self) -> bool {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("/usr/bin/redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            {
                self.child = None;
                return false;
            }
            if let Ok(mut conn) = self.client().get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    /// Kills it (SIGKILL): connections drop, state is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A node's config with periods short enough for tests.
pub fn config(redis: &RedisServer, node: &str, live: LiveNodes) -> RedisRateConfig {
    let mut cfg = RedisRateConfig::new(redis.url(), node, 1);
    cfg.live_nodes = live;
    cfg.learning = Duration::from_millis(300);
    cfg.tick = Duration::from_millis(100);
    cfg.renew_every = Duration::from_millis(300);
    cfg.slot_ttl = Duration::from_millis(1500);
    cfg.slot_fence = Duration::from_millis(1200);
    cfg.idle_return = Duration::from_millis(500);
    cfg.backoff = Duration::from_millis(100);
    cfg
}

/// `count` nodes n0.. on one Redis, ranked in id order.
pub async fn nodes(redis: &RedisServer, count: u32, window: Duration) -> Vec<RedisRateLimiter> {
    let mut out = Vec::new();
    for i in 0..count {
        let mut cfg = config(redis, &format!("n{i}"), LiveNodes::new(count, i));
        cfg.window = window;
        out.push(RedisRateLimiter::connect_with(cfg).await.unwrap());
    }
    // The first node created the generation and its learning period: let it pass.
    tokio::time::sleep(Duration::from_millis(350)).await;
    out
}

/// The caller's protocol: acquire; on a refillable refusal await one refill (bounded), acquire
/// again and take that answer.
pub async fn admit(
    limiter: &RedisRateLimiter,
    key: &str,
    limits: &RateLimits,
    ask: TokenAsk,
) -> Result<RateGrant, RateRefusal> {
    match limiter.acquire(key, limits, ask, Instant::now()) {
        Err(refusal) if refusal.refillable => {
            if let Some(refill) = limiter.refill(key, limits, ask) {
                let _ = tokio::time::timeout(Duration::from_millis(500), refill).await;
            }
            limiter.acquire(key, limits, ask, Instant::now())
        }
        other => other,
    }
}

pub fn exactly(prompt: u64, output: u64) -> TokenAsk {
    TokenAsk {
        prompt,
        output: OutputAsk::Exactly(output),
    }
}

/// One admission as seen by a test: which node, when, the (local) end of its window, tokens.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub node: usize,
    pub at: Instant,
    pub window_end: Instant,
    pub tokens: u64,
}

/// Groups admissions into windows: ends within `tolerance` of each other are one window (nodes
/// see the same Redis window end up to a round trip apart; windows are far longer than that).
pub fn windows(mut admissions: Vec<Admission>, tolerance: Duration) -> Vec<Vec<Admission>> {
    admissions.sort_by_key(|a| a.window_end);
    let mut out: Vec<Vec<Admission>> = Vec::new();
    for a in admissions {
        match out.last_mut() {
            Some(w) if a.window_end.saturating_duration_since(w[0].window_end) <= tolerance => w.push(a),
            _ => out.push(vec![a]),
        }
    }
    out
}
