//! Local admission without Redis: slices, safe shares, refillable refusals, backoff.

use super::*;

fn ctx(now: Instant, healthy: bool, nodes: (u32, u32)) -> Ctx {
    Ctx {
        now,
        healthy,
        learning_until: None,
        nodes,
        key_hash: 0,
        window: Duration::from_secs(60),
    }
}

fn ask(prompt: u64, output: u64) -> TokenAsk {
    TokenAsk {
        prompt,
        output: OutputAsk::Exactly(output),
    }
}

const RPM: RateLimits = RateLimits {
    rpm: Some(10),
    tpm: Some(1000),
    concurrency: Some(2),
};

fn grant(granted: [u64; 3], now_ms: i64) -> Grant {
    Grant {
        granted,
        ws: now_ms,
        we: now_ms + 60_000,
        now_ms,
        left: [5, 500, 0],
        others: 0,
    }
}

fn sizing() -> Sizing {
    Sizing {
        horizon: Duration::from_secs(2),
        fence: Duration::from_secs(8),
        backoff: Duration::from_millis(500),
    }
}

#[test]
fn a_healthy_node_without_a_slice_refuses_refillably_and_counts_nothing() {
    let now = Instant::now();
    let mut st = KeyState::new(now);
    let refusal = st.admit(&RPM, ask(10, 10), &ctx(now, true, (3, 0))).unwrap_err();
    assert!(refusal.refillable);
    assert_eq!(st.win.used, [0, 0]);
    assert_eq!(st.in_flight, 0);
}

#[test]
fn a_slice_admits_locally_up_to_what_was_granted() {
    let now = Instant::now();
    let mut st = KeyState::new(now);
    st.limits = RPM;
    let args = GrantArgs::default();
    st.apply_grant(&grant([2, 100, 2], 1_000), &args, now, &sizing());
    let c = ctx(Instant::now(), true, (3, 0));
    assert!(st.admit(&RPM, ask(10, 40), &c).is_ok());
    assert!(st.admit(&RPM, ask(10, 40), &c).is_ok());
    let refusal = st.admit(&RPM, ask(1, 1), &c).unwrap_err();
    assert_eq!(refusal.limit, Which::Requests);
    assert!(refusal.refillable);
    // Remaining = Redis's left (5) + this node's unused (0).
    assert_eq!(st.snapshot(&c).requests.unwrap().remaining, 5);
}

#[test]
fn a_refusal_from_redis_is_final_for_the_backoff() {
    let now = Instant::now();
    let mut st = KeyState::new(now);
    st.limits = RPM;
    let mut refused = grant([0, 0, 0], 1_000);
    refused.left = [0, 500, 2];
    st.apply_refusal(0, &refused, now, &sizing());
    let refusal = st
        .admit(&RPM, ask(1, 1), &ctx(Instant::now(), true, (1, 0)))
        .unwrap_err();
    assert!(!refusal.refillable);
    assert!(refusal.retry_after > Duration::from_secs(59));
}

#[test]
fn redis_unreachable_admits_this_nodes_share_in_a_safe_window() {
    let now = Instant::now();
    let mut st = KeyState::new(now);
    // rpm 10 over 3 nodes: 4, 3, 3 (rank 0 with key hash 0 takes the extra one).
    let c = ctx(now, false, (3, 0));
    let admitted = (0..10).filter_map(|_| st.admit(&RPM, ask(1, 1), &c).ok()).count();
    assert_eq!(
        admitted, 1,
        "concurrency 2 over 3 nodes: this node's share is 1, and it binds first"
    );
    st.in_flight = 0;
    let admitted = 1
        + (0..10)
            .filter_map(|_| {
                let r = st.admit(&RPM, ask(1, 1), &c).ok();
                st.in_flight = 0;
                r
            })
            .count();
    assert_eq!(admitted, 4, "the request share");
    let refusal = st.admit(&RPM, ask(1, 1), &c).unwrap_err();
    assert!(!refusal.refillable);
    assert!(matches!(st.win.source, Source::Safe { .. }));
}
