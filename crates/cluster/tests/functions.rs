//! The `ro_rl_v1` Functions with direct FCALLs: window start and end, all or nothing, min/ask
//! and the fair-share cap, returns, sync, generation and learning.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::RedisServer;
use redis::aio::MultiplexedConnection;

const LIBRARY: &str = include_str!("../src/rate_limit.lua");
const KEY: &str = "ro:rl:{k1}";
const GEN: &str = "ro:rl:gen";

async fn setup(redis: &RedisServer) -> MultiplexedConnection {
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .query_async(&mut conn)
        .await
        .unwrap();
    let hello: (String, i64, i64) = fcall(&mut conn, "ro_rl_v1_hello", &[GEN], &["g1", "0"]).await;
    assert_eq!(hello.0, "g1");
    conn
}

async fn fcall<T: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    name: &str,
    keys: &[&str],
    args: &[&str],
) -> T {
    redis::cmd("FCALL")
        .arg(name)
        .arg(keys.len())
        .arg(keys)
        .arg(args)
        .query_async(conn)
        .await
        .unwrap()
}

/// {code, which, g_rq, g_tk, g_sl, ws, we, now, left_rq, left_tk, left_sl, others} (gen dropped).
async fn grant(
    conn: &mut MultiplexedConnection,
    node: &str,
    limits: [i64; 3],
    ask: [u64; 3],
    min: [u64; 3],
    window_ms: u64,
) -> Vec<i64> {
    grant_in(conn, "g1", node, limits, ask, min, window_ms).await
}

async fn grant_in(
    conn: &mut MultiplexedConnection,
    generation: &str,
    node: &str,
    limits: [i64; 3],
    ask: [u64; 3],
    min: [u64; 3],
    window_ms: u64,
) -> Vec<i64> {
    let mut args: Vec<String> = vec![node.into(), generation.into()];
    args.extend(limits.iter().map(|v| v.to_string()));
    args.extend(ask.iter().map(|v| v.to_string()));
    args.extend(min.iter().map(|v| v.to_string()));
    args.push(window_ms.to_string());
    args.push("10000".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reply: Vec<redis::Value> = fcall(conn, "ro_rl_v1_grant", &[KEY, GEN], &args).await;
    reply[..12]
        .iter()
        .map(|v| redis::from_redis_value_ref::<i64>(v).unwrap())
        .collect()
}

async fn hash_field(conn: &mut MultiplexedConnection, field: &str) -> Option<i64> {
    redis::cmd("HGET").arg(KEY).arg(field).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn a_window_starts_at_the_first_grant_and_a_new_one_after_it_ends() {
    let redis = RedisServer::start();
    let mut conn = setup(&redis).await;
    assert_eq!(hash_field(&mut conn, "ws").await, None, "no window before a grant");
    let g = grant(&mut conn, "a:1", [10, -1, -1], [3, 0, 0], [1, 0, 0], 300).await;
    assert_eq!(
        &g[..5],
        &[1, 0, 3, 0, 0],
        "granted 3 requests, unlimited tokens and slots grant 0"
    );
    let (ws, we, now) = (g[5], g[6], g[7]);
    assert_eq!(ws, now, "window starts at the grant (Redis TIME)");
    assert_eq!(we - ws, 300);
    assert_eq!(g[8], 7, "7 requests left");
    // Same window: counts add up.
    let g = grant(&mut conn, "a:1", [10, -1, -1], [7, 0, 0], [7, 0, 0], 300).await;
    assert_eq!((g[0], g[2], g[5], g[8]), (1, 7, ws, 0));
    // Full: refused, nothing counted.
    let g = grant(&mut conn, "b:1", [10, -1, -1], [1, 0, 0], [1, 0, 0], 300).await;
    assert_eq!((g[0], g[1]), (0, 1), "refused by requests");
    assert_eq!(hash_field(&mut conn, "rq").await, Some(10));
    // After the end, the next grant starts a new window at its own time.
    tokio::time::sleep(Duration::from_millis(320)).await;
    let g = grant(&mut conn, "b:1", [10, -1, -1], [2, 0, 0], [1, 0, 0], 300).await;
    assert_eq!(g[0], 1);
    assert!(g[5] >= we, "new window starts after the old one ended");
    assert_eq!(g[5], g[7]);
    assert_eq!(hash_field(&mut conn, "rq").await, Some(2), "counts restarted");
}

#[tokio::test]
async fn grants_are_all_or_nothing_and_take_min_of_ask_and_left() {
    let redis = RedisServer::start();
    let mut conn = setup(&redis).await;
    // Tokens cannot cover min: nothing is granted, not even the requests that had room.
    let g = grant(&mut conn, "a:1", [10, 100, 3], [1, 200, 1], [1, 150, 1], 60_000).await;
    assert_eq!((g[0], g[1]), (0, 2), "refused by tokens");
    assert_eq!(hash_field(&mut conn, "ws").await, None, "a refusal starts no window");
    // min <= left < ask: a single holder gets at most half of what is left, but never below min.
    let g = grant(&mut conn, "a:1", [10, 100, 3], [8, 90, 2], [1, 60, 1], 60_000).await;
    assert_eq!(g[0], 1);
    assert_eq!((g[2], g[3], g[4]), (5, 60, 1), "min(ask, max(min, left/2)) per limit");
    assert_eq!((g[8], g[9], g[10]), (5, 40, 2));
    // A second holder: the fair cap is left / (2 * (others + 1)).
    let g = grant(&mut conn, "b:1", [10, 100, 3], [5, 40, 2], [1, 1, 1], 60_000).await;
    assert_eq!((g[0], g[11]), (1, 1), "one other holder");
    assert_eq!((g[2], g[3], g[4]), (1, 10, 1));
    // Slots run out: all or nothing again.
    let g = grant(&mut conn, "b:1", [10, 100, 3], [1, 1, 2], [1, 1, 2], 60_000).await;
    assert_eq!((g[0], g[1]), (0, 3), "refused by slots");
    assert_eq!(hash_field(&mut conn, "rq").await, Some(6));
    assert_eq!(hash_field(&mut conn, "hwm").await, Some(2));
}

#[tokio::test]
async fn returns_sync_generation_and_learning() {
    let redis = RedisServer::start();
    let mut conn = setup(&redis).await;
    let g = grant(&mut conn, "a:1", [10, 100, 4], [4, 40, 2], [1, 1, 1], 60_000).await;
    let ws = g[5].to_string();
    // Give back 3 requests, 100 tokens (capped at the 40 held) and 1 slot.
    let back: Vec<redis::Value> = fcall(
        &mut conn,
        "ro_rl_v1_return",
        &[KEY, GEN],
        &["a:1", "g1", &ws, "3", "100", "1"],
    )
    .await;
    let back: Vec<i64> = back[..4]
        .iter()
        .map(|v| redis::from_redis_value_ref(v).unwrap())
        .collect();
    assert_eq!(back, vec![1, 3, 40, 1]);
    assert_eq!(hash_field(&mut conn, "rq").await, Some(1));
    assert_eq!(hash_field(&mut conn, "tk").await, Some(0));
    // Sync never lowers a count and renews slots: announcing 1 request, 0 tokens, 3 slots.
    let we = g[6].to_string();
    let s: Vec<redis::Value> = fcall(
        &mut conn,
        "ro_rl_v1_sync",
        &[KEY, GEN],
        &["a:1", "g1", &ws, &we, "1", "0", "3", "10000"],
    )
    .await;
    assert_eq!(redis::from_redis_value_ref::<i64>(&s[1]).unwrap(), 3);
    assert_eq!(hash_field(&mut conn, "rq").await, Some(1));
    // A wrong generation changes nothing and names the right one.
    let stale: Vec<redis::Value> = fcall(
        &mut conn,
        "ro_rl_v1_return",
        &[KEY, GEN],
        &["a:1", "g0", &ws, "1", "0", "3"],
    )
    .await;
    assert_eq!(redis::from_redis_value_ref::<i64>(&stale[0]).unwrap(), -1);
    assert_eq!(redis::from_redis_value_ref::<String>(&stale[4]).unwrap(), "g1");
    // State lost: a new generation learns for its period; sync re-announces, grants wait.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let hello: (String, i64, i64) = fcall(&mut conn, "ro_rl_v1_hello", &[GEN], &["g2", "300"]).await;
    assert_eq!(hello.0, "g2");
    assert_eq!(hello.1 - hello.2, 300);
    let s: Vec<redis::Value> = fcall(
        &mut conn,
        "ro_rl_v1_sync",
        &[KEY, GEN],
        &["a:1", "g2", &ws, &we, "1", "0", "3", "10000"],
    )
    .await;
    assert_eq!(redis::from_redis_value_ref::<i64>(&s[0]).unwrap(), 1);
    assert_eq!(
        hash_field(&mut conn, "rq").await,
        Some(1),
        "the announced request counts again"
    );
    assert_eq!(hash_field(&mut conn, "ws").await, Some(g[5]), "in the announced window");
    let old = grant_in(&mut conn, "g1", "b:1", [10, 100, 4], [1, 1, 1], [1, 1, 1], 60_000).await;
    assert_eq!(old[0], -1, "a node still in the old generation is told it is stale");
    let learning = grant_in(&mut conn, "g2", "b:1", [10, 100, 4], [1, 1, 1], [1, 1, 1], 60_000).await;
    assert_eq!(learning[0], -2, "nothing new during learning");
    tokio::time::sleep(Duration::from_millis(310)).await;
    let after = grant_in(&mut conn, "g2", "b:1", [10, 100, 4], [10, 1, 1], [10, 1, 1], 60_000).await;
    assert_eq!(
        (after[0], after[1]),
        (0, 1),
        "10 requests do not fit beside the announced one"
    );
    let after = grant_in(&mut conn, "g2", "b:1", [10, 100, 4], [9, 1, 1], [9, 1, 1], 60_000).await;
    assert_eq!((after[0], after[2]), (1, 9), "9 do");
    assert_eq!(after[5], g[5], "the announced window goes on");
}
