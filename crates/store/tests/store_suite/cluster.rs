//! PostgreSQL only: the node registry and budget leases (`ClusterStore for PgStore`) and the
//! usage batch that draws on leases. Every step is followed by a check of the invariants on the
//! whole database ([`assert_invariants`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use router_one_core::cluster::{ClusterStore, KeyEventKind, LeaseGrant, LeaseScope, NodeRun};
use router_one_core::ids::now_us;
use router_one_core::usage::RecordLease;
use sqlx::Row;

use super::*;

fn run(node_id: &str, epoch: i64) -> NodeRun {
    NodeRun {
        node_id: node_id.into(),
        epoch,
    }
}

fn acct(account_id: &str) -> LeaseScope {
    LeaseScope::Account {
        account_id: account_id.into(),
    }
}

fn kscope(key_id: &str, period_start_us: i64) -> LeaseScope {
    LeaseScope::Key {
        key_id: key_id.into(),
        period_start_us,
    }
}

fn grant_of(granted: i64, available: i64, holders: u32) -> LeaseGrant {
    LeaseGrant {
        granted: Usd::from_units(granted),
        available: Usd::from_units(available),
        holders,
    }
}

async fn grant(store: &PgStore, node: &NodeRun, scope: &LeaseScope, ask: i64, min: i64) -> LeaseGrant {
    store
        .grant_lease(node, scope, Usd::from_units(ask), Usd::from_units(min))
        .await
        .unwrap()
}

async fn shrink(store: &PgStore, node: &NodeRun, scope: &LeaseScope, amount: i64) -> i64 {
    store
        .shrink_lease(node, scope, Usd::from_units(amount))
        .await
        .unwrap()
        .units()
}

/// A record of `key_id` (of `account_id`) at `at`, drawn on `node`'s leases (the key's for
/// `period` if any); `n` makes the request id.
fn drawn(
    n: u32,
    account_id: &str,
    key_id: &str,
    at: i64,
    cost: i64,
    node: &NodeRun,
    period: Option<i64>,
) -> UsageRecord {
    UsageRecord {
        lease: Some(RecordLease {
            node_id: node.node_id.clone(),
            node_epoch: node.epoch,
            key_period_start_us: period,
        }),
        ..record(n, account_id, key_id, "m", at, cost, 200)
    }
}

/// A key of `account_id` with `max_spend` (units) per `period`.
async fn budget_key(store: &PgStore, id: &str, account_id: &str, max_spend: Option<i64>, period: BudgetPeriod) {
    let mut k = key(id, account_id, &format!("h_{id}"), JAN_1);
    k.settings.max_spend = max_spend.map(Usd::from_units);
    k.settings.budget_period = period;
    assert!(store.insert_key(&k, 100).await.unwrap());
}

/// `(limit, spent, leased)` of a key budget row.
async fn key_budget(store: &PgStore, key_id: &str, period: i64) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT limit_units, spent_units, leased_units FROM key_budgets WHERE key_id = $1 AND period_start_us = $2",
    )
    .bind(key_id)
    .bind(period)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// `(balance, leased)` of an account.
async fn account_money(store: &PgStore, account_id: &str) -> (i64, i64) {
    sqlx::query_as("SELECT balance_units, leased_units FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn overshoots(store: &PgStore) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM overshoot_events")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Every row of the money tables, as text: equal before and after a no-op.
async fn money_state(store: &PgStore) -> Vec<String> {
    let mut state = Vec::new();
    for sql in [
        "SELECT id, balance_units, leased_units FROM accounts ORDER BY id",
        "SELECT id, spend_units FROM api_keys ORDER BY id",
        "SELECT * FROM key_budgets ORDER BY key_id, period_start_us",
        "SELECT lease_id, amount_units, committed_units, closed_at FROM leases ORDER BY lease_id",
        "SELECT id, amount_units FROM ledger_entries ORDER BY id",
        "SELECT COUNT(*), SUM(cost_units) FROM usage_records",
        "SELECT COUNT(*) FROM overshoot_events",
    ] {
        let rows = sqlx::query(&format!("SELECT row_to_json(t)::text FROM ({sql}) t"))
            .fetch_all(store.pool())
            .await
            .unwrap();
        state.extend(rows.iter().map(|r| r.get::<String, _>(0)));
    }
    state
}

/// The invariants, on the whole database:
/// * per scope, `leased = Σ holds of its open leases` (hold = max(amount − committed, 0));
/// * per key budget, `spent + leased ≤ limit` (except the keys of `over_ok`, whose limit was
///   lowered on purpose), and `spent` = Σ cost of the key's records in the period (lifetime:
///   the key's `spend_units`);
/// * per account, `balance − leased ≥ 0`, `balance = Σ ledger`, Σ `usage` entries = −Σ costs;
/// * per lease, `committed` = Σ cost of the records drawn on it (the audit columns);
/// * no record names a node run without an account lease, except those of `orphans`.
async fn assert_invariants(store: &PgStore, over_ok: &[&str], orphans: &[&str]) {
    let pool = store.pool();
    let holds = |kind: &str, id_column: &str, period_column: &str| {
        format!(
            "COALESCE((SELECT SUM(GREATEST(l.amount_units - l.committed_units, 0)) FROM leases l \
             WHERE l.scope_kind = '{kind}' AND l.scope_id = {id_column} AND l.period_start_us = {period_column} \
             AND l.closed_at IS NULL), 0)::bigint"
        )
    };
    let budgets: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT key_id, period_start_us, limit_units, spent_units, leased_units, {} FROM key_budgets b",
        holds("k", "b.key_id", "b.period_start_us")
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    for (key_id, period, limit, spent, leased, holds) in budgets {
        assert_eq!(leased, holds, "key {key_id}/{period}: leased = Σ holds");
        if !over_ok.contains(&key_id.as_str()) {
            assert!(
                spent + leased <= limit,
                "key {key_id}/{period}: {spent} + {leased} > {limit}"
            );
        }
        let (period_name, lifetime_spend): (String, i64) =
            sqlx::query_as("SELECT budget_period, spend_units FROM api_keys WHERE id = $1")
                .bind(&key_id)
                .fetch_one(pool)
                .await
                .unwrap();
        let expected = match BudgetPeriod::parse(&period_name).unwrap().window(period) {
            None => lifetime_spend,
            Some((start, end)) => sqlx::query_scalar::<_, i64>(
                "SELECT COALESCE(SUM(cost_units), 0)::bigint FROM usage_records \
                     WHERE key_id = $1 AND created_at_us >= $2 AND created_at_us < $3",
            )
            .bind(&key_id)
            .bind(start)
            .bind(end)
            .fetch_one(pool)
            .await
            .unwrap(),
        };
        assert_eq!(spent, expected, "key {key_id}/{period}: spent = Σ its records' cost");
    }
    let accounts: Vec<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT a.id, a.balance_units, a.leased_units, {}, \
             (SELECT COALESCE(SUM(amount_units), 0)::bigint FROM ledger_entries e WHERE e.account_id = a.id), \
             (SELECT COALESCE(SUM(amount_units), 0)::bigint FROM ledger_entries e \
                 WHERE e.account_id = a.id AND kind = 'usage'), \
             (SELECT COALESCE(SUM(cost_units), 0)::bigint FROM usage_records r WHERE r.account_id = a.id) \
         FROM accounts a",
        holds("a", "a.id", "0")
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    for (id, balance, leased, holds, ledger, usage_debits, costs) in accounts {
        assert_eq!(leased, holds, "account {id}: leased = Σ holds");
        assert!(
            balance - leased >= 0,
            "account {id}: balance {balance} − leased {leased} < 0"
        );
        assert_eq!(balance, ledger, "account {id}: balance = Σ ledger");
        assert_eq!(-usage_debits, costs, "account {id}: Σ usage debits = Σ record costs");
    }
    let audit: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT l.lease_id, l.committed_units, COALESCE(SUM(r.cost_units), 0)::bigint FROM leases l \
         LEFT JOIN usage_records r ON r.node_id = l.node_id AND r.node_epoch = l.node_epoch \
             AND ((l.scope_kind = 'a' AND r.account_id = l.scope_id) \
               OR (l.scope_kind = 'k' AND r.key_id = l.scope_id AND r.key_period_start_us = l.period_start_us)) \
         GROUP BY l.lease_id, l.committed_units",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (lease_id, committed, costs) in audit {
        assert_eq!(committed, costs, "lease {lease_id}: committed = Σ its records' cost");
    }
    let found: Vec<String> = sqlx::query_scalar(
        "SELECT request_id FROM usage_records r WHERE r.node_id IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM leases l WHERE l.scope_kind = 'a' AND l.scope_id = r.account_id \
          AND l.node_id = r.node_id AND l.node_epoch = r.node_epoch) ORDER BY request_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(found, orphans, "records whose account lease does not exist");
}

/// The whole protocol, step by step, by three node runs on one key (daily budget of 1,000
/// units) and its account (10,000 units), with the invariants checked after every step.
#[tokio::test]
async fn leases_scripted_scenario_keeps_the_invariants() {
    let (store, _db) = postgres_db().await;
    let now = now_us();
    let (p, next) = BudgetPeriod::Daily.window(now).unwrap();
    create(&store, &account("acct_c", "c@example.com", 10_000), "mk_c")
        .await
        .unwrap();
    budget_key(&store, "key_c", "acct_c", Some(1_000), BudgetPeriod::Daily).await;
    budget_key(&store, "key_l", "acct_c", Some(500), BudgetPeriod::None).await;
    budget_key(&store, "key_n", "acct_c", None, BudgetPeriod::Daily).await;
    // Spend before the cluster: counted when the key budgets are created.
    store
        .record_usage(&[
            record(1, "acct_c", "key_c", "m", now, 100, 200),
            record(2, "acct_c", "key_l", "m", now, 40, 200),
            record(3, "acct_c", "key_c", "m", p - 1, 1_000, 200), // yesterday: not this period
        ])
        .await
        .unwrap();
    let check = || assert_invariants(&store, &[], &[]);
    let [n1, n2, n3] = ["n1", "n2", "n3"].map(|id| run(id, 1));
    for n in [&n1, &n2, &n3] {
        assert_eq!(store.register_node(&n.node_id).await.unwrap(), 1);
    }
    let (kc, ac) = (kscope("key_c", p), acct("acct_c"));

    // Grants: in full, fit to what is left, refused below min.
    assert_eq!(grant(&store, &n1, &kc, 600, 1).await, grant_of(600, 300, 0));
    check().await;
    assert_eq!(grant(&store, &n2, &kc, 600, 1).await, grant_of(300, 0, 1), "fit");
    assert_eq!(
        grant(&store, &n3, &kc, 100, 50).await,
        grant_of(0, 0, 2),
        "refused at min"
    );
    assert_eq!(key_budget(&store, "key_c", p).await, (1_000, 100, 900));
    check().await;
    assert_eq!(grant(&store, &n1, &ac, 5_000, 1).await, grant_of(5_000, 3_860, 0));
    assert_eq!(grant(&store, &n2, &ac, 5_000, 1).await, grant_of(3_860, 0, 1));
    assert_eq!(grant(&store, &n3, &ac, 10, 10).await, grant_of(0, 0, 2));
    check().await;

    // A batch draws on n1's leases; its replay changes nothing.
    let batch = [
        drawn(10, "acct_c", "key_c", now, 200, &n1, Some(p)),
        drawn(11, "acct_c", "key_c", now, 50, &n1, Some(p)),
    ];
    store.record_usage(&batch).await.unwrap();
    assert_eq!(key_budget(&store, "key_c", p).await, (1_000, 350, 650));
    assert_eq!(account_money(&store, "acct_c").await, (8_610, 8_610));
    check().await;
    let before = money_state(&store).await;
    store.record_usage(&batch).await.unwrap();
    store.record_usage(&batch[1..]).await.unwrap();
    assert_eq!(money_state(&store).await, before, "a replay changes nothing");

    // Shrinks give back at most the hold.
    assert_eq!(shrink(&store, &n1, &kc, 9_999).await, 350, "n1's key hold: 600 − 250");
    assert_eq!(shrink(&store, &n1, &ac, 100).await, 100);
    assert_eq!(shrink(&store, &n3, &kc, 100).await, 0, "n3 holds nothing");
    assert_eq!(key_budget(&store, "key_c", p).await, (1_000, 350, 300));
    check().await;
    assert_eq!(grant(&store, &n3, &kc, 100, 50).await, grant_of(100, 250, 1));
    check().await;

    // n2 restarts: its old run is fenced, its journal replayed, its old leases closed.
    let n2b = run("n2", store.register_node("n2").await.unwrap());
    assert_eq!(n2b.epoch, 2);
    assert_eq!(
        grant(&store, &n2, &kc, 10, 1).await,
        grant_of(0, 250, 1),
        "old epoch fenced"
    );
    store
        .record_usage(&[drawn(20, "acct_c", "key_c", now, 120, &n2, Some(p))])
        .await
        .unwrap();
    check().await;
    assert_eq!(
        store.close_earlier_leases(&n2b).await.unwrap().units(),
        180 + 3_740,
        "key hold 300 − 120, account hold 3,860 − 120"
    );
    assert_eq!(store.close_earlier_leases(&n2b).await.unwrap(), Usd::ZERO, "once");
    assert_eq!(key_budget(&store, "key_c", p).await, (1_000, 470, 100));
    assert_eq!(account_money(&store, "acct_c").await, (8_490, 4_650));
    check().await;

    // Membership, then n3 is forgotten: its leases close, its runs are refused.
    let m = store.heartbeat(&n1, 3, 60_000).await.unwrap();
    assert!(m.current);
    assert_eq!(m.live, ["n1", "n2", "n3"]);
    assert!(!store.heartbeat(&n2, 0, 60_000).await.unwrap().current, "n2's old run");
    assert_eq!(store.forget_node("n3").await.unwrap(), Some(Usd::from_units(100)));
    assert_eq!(store.forget_node("n9").await.unwrap(), None);
    assert_eq!(grant(&store, &n3, &kc, 10, 1).await.granted, Usd::ZERO, "forgotten");
    let m = store.heartbeat(&n3, 0, 60_000).await.unwrap();
    assert_eq!((m.current, m.live), (false, vec!["n1".to_string(), "n2".to_string()]));
    check().await;
    // n3's disk comes back: its record (lease closed, no account lease) is still debited.
    store
        .record_usage(&[drawn(30, "acct_c", "key_c", now, 30, &n3, Some(p))])
        .await
        .unwrap();
    assert_eq!(key_budget(&store, "key_c", p).await, (1_000, 500, 0));
    assert_eq!(account_money(&store, "acct_c").await, (8_460, 4_650));
    assert_eq!(overshoots(&store).await, 0, "no invariant broken");
    // The one record whose account lease never existed (n3 was granted none).
    let check = || assert_invariants(&store, &[], &["req_00030"]);
    check().await;
    let n3b = run("n3", store.register_node("n3").await.unwrap());
    assert_eq!(n3b.epoch, 2);
    assert!(store.heartbeat(&n3b, 0, 60_000).await.unwrap().current, "live again");

    // The limit is lowered below spent + leased: allowed until the holds drain, no grant.
    assert_eq!(grant(&store, &n1, &kc, 300, 1).await, grant_of(300, 200, 0));
    let mut settings = store.key("acct_c", "key_c").await.unwrap().unwrap().settings;
    settings.max_spend = Some(Usd::from_units(600));
    store.update_key("acct_c", "key_c", &settings).await.unwrap().unwrap();
    assert_eq!(key_budget(&store, "key_c", p).await, (600, 500, 300));
    assert_invariants(&store, &["key_c"], &["req_00030"]).await;
    assert_eq!(grant(&store, &n2b, &kc, 10, 1).await, grant_of(0, 0, 1));
    assert_eq!(shrink(&store, &n1, &kc, 300).await, 300);
    assert_eq!(
        grant(&store, &n2b, &kc, 200, 1).await,
        grant_of(100, 0, 0),
        "fit to the new limit"
    );
    check().await;

    // The next period: a new row, from the key's current limit and that period's records.
    store
        .record_usage(&[record(40, "acct_c", "key_c", "m", next, 70, 200)])
        .await
        .unwrap();
    assert_eq!(
        grant(&store, &n1, &kscope("key_c", next), 1_000, 1).await,
        grant_of(530, 0, 0)
    );
    assert_eq!(key_budget(&store, "key_c", next).await, (600, 70, 530));
    // A lifetime budget starts from the key's lifetime spend.
    assert_eq!(
        grant(&store, &n1, &kscope("key_l", 0), 1_000, 1).await,
        grant_of(460, 0, 0)
    );
    check().await;

    // Scopes that cannot be leased.
    for scope in [
        kscope("key_l", p),
        kscope("key_c", 0),
        kscope("key_c", p + 1),
        kscope("key_n", p),
        kscope("key_zz", 0),
        acct("acct_zz"),
    ] {
        let refused = store.grant_lease(&n1, &scope, Usd::from_units(1), Usd::ZERO).await;
        assert!(refused.is_err(), "{scope:?}: {refused:?}");
    }

    // Money leased to nodes is promised: debits and reversals take only balance − leased.
    let (balance, leased) = account_money(&store, "acct_c").await;
    assert_eq!((balance, leased), (8_390, 4_650));
    let refused = store
        .adjust_balance("acct_c", Usd::from_units(-3_800), "too much", JAN_1)
        .await
        .unwrap();
    assert_eq!(
        refused,
        AdjustOutcome::InsufficientBalance {
            balance: Usd::from_units(3_740)
        }
    );
    pay(&store, "acct_c", "cs_c", "pay_c", 1_000, "1.00").await;
    let all = grant(&store, &n1, &ac, i64::MAX, 1).await;
    assert_eq!(all, grant_of(4_740, 0, 0));
    let ReversalOutcome::Applied(reversed) = store
        .reverse_payment(&reversal("pay_c", LedgerKind::Refund, 1_000, 0))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(reversed.reversed, Usd::ZERO, "everything left is leased");
    check().await;
    assert_eq!(overshoots(&store).await, 0);
}

/// A record is never refused: one that spends past its lease's hold, or draws on a lease that
/// does not exist, is stored and debited, and an `overshoot_events` row says which scope went
/// past its cap and by how much.
#[tokio::test]
async fn overshoots_are_recorded_never_refused() {
    let (store, _db) = postgres_db().await;
    let now = now_us();
    let (p, _) = BudgetPeriod::Daily.window(now).unwrap();
    create(&store, &account("acct_o", "o@example.com", 1_000), "mk_o")
        .await
        .unwrap();
    budget_key(&store, "key_o", "acct_o", Some(100), BudgetPeriod::Daily).await;
    let n1 = run("n1", store.register_node("n1").await.unwrap());
    assert_eq!(
        grant(&store, &n1, &kscope("key_o", p), 100, 1).await.granted.units(),
        100
    );
    assert_eq!(
        grant(&store, &n1, &acct("acct_o"), 1_000, 1).await.granted.units(),
        1_000
    );
    // The upstream reported more than the worst case reserved: 130 on a hold of 100.
    let over = [drawn(1, "acct_o", "key_o", now, 130, &n1, Some(p))];
    store.record_usage(&over).await.unwrap();
    assert_eq!(key_budget(&store, "key_o", p).await, (100, 130, 0));
    assert_eq!(account_money(&store, "acct_o").await, (870, 870));
    // A node that never registered (its leases missing), spending the account's last units.
    let ghost = run("n9", 7);
    store
        .record_usage(&[drawn(2, "acct_o", "key_o", now, 900, &ghost, Some(p))])
        .await
        .unwrap();
    assert_eq!(account_money(&store, "acct_o").await, (-30, 870));
    let events: Vec<(String, String, String, i64, i64, String)> = sqlx::query_as(
        "SELECT scope_kind, node_id, lease_state, unheld_units, over_units, first_request \
         FROM overshoot_events ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let event = |kind: &str, node: &str, state: &str, unheld, over, first: &str| {
        (
            kind.to_string(),
            node.to_string(),
            state.to_string(),
            unheld,
            over,
            first.to_string(),
        )
    };
    assert_eq!(
        events,
        [
            event("k", "n1", "open", 30, 30, "req_00001"),
            event("a", "n9", "missing", 900, 900, "req_00002"),
            event("k", "n9", "missing", 900, 930, "req_00002"),
        ]
    );
    assert_eq!(balance(&store, "acct_o").await, -30, "debited in full");
    assert_eq!(store.account_spend("acct_o").await.unwrap().units(), 1_030);
    // A replay records nothing twice.
    store.record_usage(&over).await.unwrap();
    assert_eq!(overshoots(&store).await, 3);
    // The invariant holds again once the holds drain: nothing more can be granted meanwhile.
    assert_eq!(grant(&store, &n1, &acct("acct_o"), 1, 1).await.granted, Usd::ZERO);
    assert_eq!(store.close_earlier_leases(&run("n1", 2)).await.unwrap().units(), 870);
    assert_eq!(account_money(&store, "acct_o").await, (-30, 0));
}

/// xorshift64*: a reproducible stream of numbers for the randomized tests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> i64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        i64::try_from(self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n).unwrap()
    }
}

/// What one node has been granted and not reserved, per scope: its local slice (the node's
/// `LeaseBook` in miniature).
#[derive(Default)]
struct Book {
    key: i64,
    account: i64,
}

/// The hold (amount − committed) of `node`'s lease on a scope.
async fn hold(store: &PgStore, node: &NodeRun, kind: &str, scope_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(amount_units - committed_units), 0)::bigint FROM leases \
         WHERE scope_kind = $1 AND scope_id = $2 AND node_id = $3 AND node_epoch = $4 AND closed_at IS NULL",
    )
    .bind(kind)
    .bind(scope_id)
    .bind(&node.node_id)
    .bind(node.epoch)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Three store handles (three nodes) × four tasks each grant, reserve locally, record and shrink
/// against one key (10,000 units a day) and its account (12,000 units) at once, asking for far
/// more than there is. Afterwards: the invariants hold exactly, the key spent at most its
/// limit, and each node's holds equal what its book says is unreserved (so every shrink gave
/// back exactly what was asked: never less than the node's free slice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_grants_shrinks_and_batches_never_pass_the_cap() {
    let (first, db) = postgres_db().await;
    let now = now_us();
    let (p, _) = BudgetPeriod::Daily.window(now).unwrap();
    create(&first, &account("acct_x", "x@example.com", 12_000), "mk_x")
        .await
        .unwrap();
    budget_key(&first, "key_x", "acct_x", Some(10_000), BudgetPeriod::Daily).await;
    let mut nodes = Vec::new();
    for i in 0..3_u32 {
        let store = if i == 0 {
            first.clone()
        } else {
            PgStore::connect(&db.url).await.unwrap()
        };
        let node = run(&format!("n{i}"), store.register_node(&format!("n{i}")).await.unwrap());
        nodes.push((store, node, Arc::new(tokio::sync::Mutex::new(Book::default()))));
    }
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (i, (store, node, book)) in nodes.iter().enumerate() {
        for t in 0..4_u32 {
            let (store, node, book) = (store.clone(), node.clone(), book.clone());
            let seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (u64::try_from(i).unwrap() << 8 | u64::from(t));
            let n0 = u32::try_from(i).unwrap() * 10_000 + t * 1_000;
            tasks.push(tokio::spawn(worker(store, node, book, Rng(seed), n0, p, now)));
        }
    }
    let mut recorded = 0;
    for task in tasks {
        recorded += task.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert_invariants(&first, &[], &[]).await;
    let (limit, spent, leased) = key_budget(&first, "key_x", p).await;
    assert_eq!(spent, recorded, "every recorded unit is spent, once");
    assert!(
        spent + leased <= limit && spent <= 10_000,
        "{spent} + {leased} ≤ {limit}"
    );
    assert!(spent > 5_000, "the tasks did contend near the cap: spent {spent}");
    let mut key_books = 0;
    for (store, node, book) in &nodes {
        let book = book.lock().await;
        assert_eq!(
            hold(store, node, "k", "key_x").await,
            book.key,
            "{}: key hold = its book",
            node.node_id
        );
        assert_eq!(
            hold(store, node, "a", "acct_x").await,
            book.account,
            "{}: account hold",
            node.node_id
        );
        key_books += book.key;
    }
    assert_eq!(leased, key_books);
    let (balance, _) = account_money(&first, "acct_x").await;
    assert_eq!(balance, 12_000 - recorded);
    eprintln!("concurrent leases: {recorded} units recorded in {elapsed:?}");
}

/// One task of one node: 30 requests, each reserving a random cost on the node's slices
/// (granting more, at least the cost, when short; giving up after three refusals), recording
/// a random actual cost ≤ the reservation, and now and then shrinking half of what is free.
/// Returns the units it recorded.
async fn worker(
    store: PgStore,
    node: NodeRun,
    book: Arc<tokio::sync::Mutex<Book>>,
    mut rng: Rng,
    n0: u32,
    p: i64,
    now: i64,
) -> i64 {
    let (ks, acs) = (kscope("key_x", p), acct("acct_x"));
    let mut recorded = 0;
    for n in n0..n0 + 30 {
        let cost = 1 + rng.below(200);
        let mut reserved = false;
        for _ in 0..3 {
            let (key_short, account_short) = {
                let mut b = book.lock().await;
                if b.key >= cost && b.account >= cost {
                    b.key -= cost;
                    b.account -= cost;
                    reserved = true;
                    break;
                }
                (b.key < cost, b.account < cost)
            };
            let ask = cost + rng.below(600);
            if key_short {
                let g = grant(&store, &node, &ks, ask, cost).await.granted.units();
                book.lock().await.key += g;
            }
            if account_short {
                let g = grant(&store, &node, &acs, ask, cost).await.granted.units();
                book.lock().await.account += g;
            }
        }
        if reserved {
            let actual = cost - rng.below(u64::try_from(cost / 2 + 1).unwrap());
            let record = drawn(n, "acct_x", "key_x", now, actual, &node, Some(p));
            store.record_usage(&[record]).await.unwrap();
            recorded += actual;
            let mut b = book.lock().await;
            b.key += cost - actual;
            b.account += cost - actual;
        }
        if rng.below(4) == 0 {
            let (k, a) = {
                let mut b = book.lock().await;
                let (k, a) = (b.key / 2, b.account / 2);
                b.key -= k;
                b.account -= a;
                (k, a)
            };
            assert_eq!(shrink(&store, &node, &ks, k).await, k);
            assert_eq!(shrink(&store, &node, &acs, a).await, a);
        }
    }
    recorded
}

/// What the database should hold, for [`random_lease_operations_match_a_model`]: one key budget
/// and one account, three node ids.
#[derive(Default)]
struct Model {
    limit: i64,
    spent: i64,
    key_leased: i64,
    balance: i64,
    account_leased: i64,
    budget_created: bool,
    /// Per (scope kind, node index, epoch): amount, committed, open.
    leases: BTreeMap<(&'static str, usize, i64), (i64, i64, bool)>,
    epochs: [i64; 3],
    forgotten: [bool; 3],
}

impl Model {
    fn hold(&self, kind: &'static str, node: usize, epoch: i64) -> i64 {
        match self.leases.get(&(kind, node, epoch)) {
            Some((amount, committed, true)) => (amount - committed).max(0),
            _ => 0,
        }
    }

    fn leased(&mut self, kind: &str) -> &mut i64 {
        if kind == "k" {
            &mut self.key_leased
        } else {
            &mut self.account_leased
        }
    }

    fn available(&self, kind: &str) -> i64 {
        if kind == "k" {
            (self.limit - self.spent - self.key_leased).max(0)
        } else {
            (self.balance - self.account_leased).max(0)
        }
    }

    /// Other runs whose open lease on the scope still holds money.
    fn holders(&self, kind: &str, node: usize, epoch: i64) -> u32 {
        let holding = self.leases.iter().filter(|((k, n, e), (amount, committed, open))| {
            *k == kind && *open && amount > committed && (*n, *e) != (node, epoch)
        });
        u32::try_from(holding.count()).unwrap()
    }

    fn grant(&mut self, kind: &'static str, node: usize, epoch: i64, ask: i64, min: i64) -> LeaseGrant {
        let current = self.epochs[node] == epoch && !self.forgotten[node];
        let available = self.available(kind);
        let granted = ask.min(available);
        if !current || granted < min.max(1) {
            return grant_of(0, available, self.holders(kind, node, epoch));
        }
        *self.leased(kind) += granted;
        self.leases.entry((kind, node, epoch)).or_insert((0, 0, true)).0 += granted;
        grant_of(granted, available - granted, self.holders(kind, node, epoch))
    }

    fn shrink(&mut self, kind: &'static str, node: usize, epoch: i64, amount: i64) -> i64 {
        let given = amount.min(self.hold(kind, node, epoch));
        if given > 0 {
            *self.leased(kind) -= given;
            if let Some(lease) = self.leases.get_mut(&(kind, node, epoch)) {
                lease.0 -= given;
            }
        }
        given
    }

    fn record(&mut self, node: usize, epoch: i64, cost: i64) {
        for kind in ["k", "a"] {
            let release = cost.min(self.hold(kind, node, epoch));
            *self.leased(kind) -= release;
            if let Some(lease) = self.leases.get_mut(&(kind, node, epoch)) {
                lease.1 += cost;
            }
        }
        self.spent += cost;
        self.balance -= cost;
    }

    /// Closes node's open leases of epochs below `below` (all if `None`); returns the total.
    fn close(&mut self, node: usize, below: Option<i64>) -> i64 {
        let mut total = 0;
        let closing: Vec<_> = self
            .leases
            .iter()
            .filter(|((_, n, e), (_, _, open))| *n == node && *open && below.is_none_or(|b| *e < b))
            .map(|(at, _)| *at)
            .collect();
        for at in closing {
            let hold = self.hold(at.0, at.1, at.2);
            *self.leased(at.0) -= hold;
            total += hold;
            let lease = self.leases.get_mut(&at).unwrap();
            lease.0 = lease.1;
            lease.2 = false;
        }
        total
    }
}

/// Random sequences of grants (current and stale runs), shrinks, records, restarts with
/// close, forgets and limit edits on one key budget and its account, each checked against a
/// model of what the database must hold, and followed by the invariants.
#[tokio::test]
async fn random_lease_operations_match_a_model() {
    for seed in [1_u64, 0xdead_beef] {
        random_sequence(seed, 300).await;
    }
}

async fn random_sequence(seed: u64, steps: u32) {
    let (store, _db) = postgres_db().await;
    let now = now_us();
    let (p, _) = BudgetPeriod::Daily.window(now).unwrap();
    create(&store, &account("acct_m", "m@example.com", 5_000), "mk_m")
        .await
        .unwrap();
    budget_key(&store, "key_m", "acct_m", Some(2_000), BudgetPeriod::Daily).await;
    let mut m = Model {
        limit: 2_000,
        balance: 5_000,
        ..Model::default()
    };
    let names = ["n0", "n1", "n2"];
    for (i, name) in names.iter().enumerate() {
        m.epochs[i] = store.register_node(name).await.unwrap();
    }
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let scope = |kind: &str| {
        if kind == "k" {
            kscope("key_m", p)
        } else {
            acct("acct_m")
        }
    };
    let mut n = 0;
    let mut done = [0_u32; 5]; // grants given, shrinks giving, records, restarts, forgets
    for step in 0..steps {
        let node = usize::try_from(rng.below(3)).unwrap();
        let epoch = (m.epochs[node] - i64::from(rng.below(4) == 0)).max(1);
        let nr = run(names[node], epoch);
        let kind = if rng.below(2) == 0 { "k" } else { "a" };
        let op = rng.below(30);
        match op {
            0..=9 => {
                let (ask, min) = (rng.below(1_500), rng.below(300));
                let got = grant(&store, &nr, &scope(kind), ask, min).await;
                m.budget_created |= kind == "k";
                assert_eq!(got, m.grant(kind, node, epoch, ask, min), "step {step}: grant");
                done[0] += u32::from(got.granted > Usd::ZERO);
            }
            10..=13 => {
                let amount = rng.below(800);
                let got = shrink(&store, &nr, &scope(kind), amount).await;
                assert_eq!(got, m.shrink(kind, node, epoch, amount), "step {step}: shrink");
                done[1] += u32::from(got > 0);
            }
            14..=25 => {
                // Only within what the run holds (or, its leases closed, what the scopes have
                // left): the invariants must keep holding.
                let exists = |kind| m.leases.contains_key(&(kind, node, epoch));
                if !(exists("k") && exists("a")) {
                    continue;
                }
                let room = |kind: &'static str| match m.leases[&(kind, node, epoch)] {
                    (_, _, true) => m.hold(kind, node, epoch),
                    _ => m.available(kind),
                };
                let bound = room("k").min(room("a"));
                if bound < 1 {
                    continue;
                }
                let cost = 1 + rng.below(u64::try_from(bound).unwrap());
                n += 1;
                let batch = [drawn(n, "acct_m", "key_m", now, cost, &nr, Some(p))];
                store.record_usage(&batch).await.unwrap();
                store.record_usage(&batch).await.unwrap(); // a replay: no-op
                m.record(node, epoch, cost);
                done[2] += 1;
            }
            26 => {
                let epoch = store.register_node(names[node]).await.unwrap();
                assert_eq!(epoch, m.epochs[node] + 1, "step {step}: register");
                m.epochs[node] = epoch;
                m.forgotten[node] = false;
                let released = store.close_earlier_leases(&run(names[node], epoch)).await.unwrap();
                assert_eq!(released.units(), m.close(node, Some(epoch)), "step {step}: close");
                done[3] += 1;
            }
            27 => {
                let released = store.forget_node(names[node]).await.unwrap();
                m.forgotten[node] = true;
                assert_eq!(
                    released,
                    Some(Usd::from_units(m.close(node, None))),
                    "step {step}: forget"
                );
                done[4] += 1;
            }
            _ => {
                let limit = 500 + rng.below(2_000);
                let mut settings = store.key("acct_m", "key_m").await.unwrap().unwrap().settings;
                settings.max_spend = Some(Usd::from_units(limit));
                store.update_key("acct_m", "key_m", &settings).await.unwrap();
                m.limit = limit;
            }
        }
        if m.budget_created {
            assert_eq!(
                key_budget(&store, "key_m", p).await,
                (m.limit, m.spent, m.key_leased),
                "step {step}"
            );
        }
        assert_eq!(
            account_money(&store, "acct_m").await,
            (m.balance, m.account_leased),
            "step {step}"
        );
        let over_ok: &[&str] = if m.spent + m.key_leased > m.limit {
            &["key_m"]
        } else {
            &[]
        };
        assert_invariants(&store, over_ok, &[]).await;
    }
    assert_eq!(overshoots(&store).await, 0);
    eprintln!("seed {seed}: grants, shrinks, records, restarts, forgets = {done:?}");
    assert!(done.iter().all(|d| *d > 0), "every kind of step ran: {done:?}");
}

#[tokio::test]
async fn key_changes_are_events_and_a_clean_stop_gives_its_leases_back() {
    let (store, _db) = postgres_db().await;
    create(&store, &account("acct_e", "e@example.com", 1_000), "mk_e")
        .await
        .unwrap();
    budget_key(&store, "key_e", "acct_e", Some(100), BudgetPeriod::None).await;
    let head = store.key_events_head().await.unwrap();
    // A usage batch moves the key's spend: not a change nodes must apply.
    store
        .record_usage(&[record(1, "acct_e", "key_e", "m", now_us(), 10, 200)])
        .await
        .unwrap();
    assert!(store.key_events_since(head, 10).await.unwrap().is_empty());
    let mut settings = store.key("acct_e", "key_e").await.unwrap().unwrap().settings;
    settings.rpm_limit = Some(5);
    store.update_key("acct_e", "key_e", &settings).await.unwrap().unwrap();
    settings.name = Some("a label only".into());
    store.update_key("acct_e", "key_e", &settings).await.unwrap().unwrap();
    // Relay options change what every node answers: an event.
    settings.router_headers = false;
    store.update_key("acct_e", "key_e", &settings).await.unwrap().unwrap();
    store.revoke_key("acct_e", "key_e", JAN_1).await.unwrap().unwrap();
    store
        .revoke_management_key("acct_e", "mkey_mk_e", JAN_1)
        .await
        .unwrap()
        .unwrap();
    let events = store.key_events_since(head, 10).await.unwrap();
    let seen: Vec<(KeyEventKind, &str, &str)> = events
        .iter()
        .map(|e| (e.kind, e.id.as_str(), e.account_id.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (KeyEventKind::Key, "key_e", "acct_e"),
            (KeyEventKind::Key, "key_e", "acct_e"),
            (KeyEventKind::Key, "key_e", "acct_e"),
            (KeyEventKind::ManagementKey, "mkey_mk_e", "acct_e"),
        ],
        "the limit edit, the relay option edit and the revocations, not the label"
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.key_events_head().await.unwrap(), events[3].seq);
    assert_eq!(store.key_events_since(events[1].seq, 10).await.unwrap(), events[2..]);

    // A node stopped on purpose, its records committed, gives back what its leases hold.
    let n1 = run("n1", store.register_node("n1").await.unwrap());
    assert_eq!(grant(&store, &n1, &acct("acct_e"), 500, 1).await.granted.units(), 500);
    // Its last heartbeat saw a backlog, committed since.
    store.heartbeat(&n1, 14, 5_000).await.unwrap();
    store
        .record_usage(&[drawn(2, "acct_e", "key_e", now_us(), 40, &n1, None)])
        .await
        .unwrap();
    assert_eq!(store.close_own_leases(&n1).await.unwrap().units(), 460);
    let backlog: i64 = sqlx::query_scalar("SELECT journal_pending FROM gateway_nodes WHERE node_id = 'n1'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(backlog, 0, "a node stopped with everything committed shows no backlog");
    assert_eq!(account_money(&store, "acct_e").await, (950, 0));
    assert_eq!(store.close_own_leases(&n1).await.unwrap(), Usd::ZERO, "once");
}
