//! The store behaviour suite, written against `&dyn Store` so every backend runs the same
//! checks: SQLite here; PostgreSQL adds one `store_suite!` line with its own constructor.
//! The SQLite-only checks at the end (ledger invariant, pragmas) read the database directly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashSet;

use router_one_core::money::Usd;
use router_one_core::pricing::TokenUsage;
use router_one_core::store::{
    Account, ApiKey, BudgetPeriod, KeySettings, Store, StoreError, SummaryGroup, SummaryRow, UsageFilter,
};
use router_one_core::usage::{Endpoint, UsageRecord};
use router_one_store::SqliteStore;

/// 2024-01-01T00:00:00Z in µs.
const JAN_1: i64 = 1_704_067_200_000_000;
const DAY: i64 = 86_400_000_000;

fn account(id: &str, email: &str, balance: i64) -> Account {
    Account {
        id: id.into(),
        email: email.into(),
        balance: Usd::from_units(balance),
        created_at_us: JAN_1,
    }
}

fn key(id: &str, account_id: &str, hash: &str, created_at_us: i64) -> ApiKey {
    ApiKey {
        id: id.into(),
        account_id: account_id.into(),
        secret_hash: hash.into(),
        hint: "sk-rk-ab…".into(),
        settings: KeySettings::default(),
        created_at_us,
        revoked_at_us: None,
        spend: Usd::ZERO,
    }
}

fn full_settings() -> KeySettings {
    let mut metadata = serde_json::Map::new();
    metadata.insert("customer".into(), serde_json::json!("cus_42"));
    metadata.insert("tier".into(), serde_json::json!({"level": 3}));
    KeySettings {
        name: Some("production".into()),
        max_spend: Some("12.3456789012".parse().unwrap()),
        budget_period: BudgetPeriod::Monthly,
        rpm_limit: Some(600),
        tpm_limit: Some(5_000_000_000),
        max_concurrency: Some(8),
        models: Some(vec!["gpt-4o".into(), "claude-sonnet-4".into()]),
        expires_at_us: Some(JAN_1 + 30 * DAY),
        metadata,
    }
}

/// A record; `n` makes the (sortable) request id.
fn record(
    n: u32,
    account_id: &str,
    key_id: &str,
    model: &str,
    created_at_us: i64,
    cost: i64,
    status: u16,
) -> UsageRecord {
    UsageRecord {
        request_id: format!("req_{n:05}"),
        account_id: account_id.into(),
        key_id: key_id.into(),
        created_at_us,
        endpoint: if n.is_multiple_of(5) {
            Endpoint::Embeddings
        } else {
            Endpoint::ChatCompletions
        },
        requested_model: model.into(),
        served_model: if status == 200 {
            Some(format!("{model}-2024-08-06"))
        } else {
            None
        },
        provider: "openai".into(),
        usage: TokenUsage {
            prompt_tokens: 100 + u64::from(n),
            cached_tokens: u64::from(n % 3),
            completion_tokens: 50 + u64::from(n),
            reasoning_tokens: u64::from(n % 2),
        },
        cost: Usd::from_units(cost),
        latency_us: 1_000 + u64::from(n),
        upstream_sent_us: Some(100),
        ttft_us: if n.is_multiple_of(2) { Some(500) } else { None },
        status,
        error_code: if status == 200 {
            None
        } else {
            Some("upstream_error".into())
        },
        streamed: n.is_multiple_of(2),
    }
}

fn filter(account_id: &str) -> UsageFilter {
    UsageFilter {
        account_id: account_id.into(),
        limit: 1_000,
        ..UsageFilter::default()
    }
}

/// Two accounts, `acct_a` with keys `key_a1`, `key_a2` and `acct_b` with `key_b1`.
async fn two_accounts(store: &dyn Store) {
    store
        .create_account(&account("acct_a", "a@example.com", 1_000_000), "mk_a")
        .await
        .unwrap();
    store
        .create_account(&account("acct_b", "b@example.com", 500), "mk_b")
        .await
        .unwrap();
    store.insert_key(&key("key_a1", "acct_a", "h_a1", JAN_1)).await.unwrap();
    store
        .insert_key(&key("key_a2", "acct_a", "h_a2", JAN_1 + 1))
        .await
        .unwrap();
    store.insert_key(&key("key_b1", "acct_b", "h_b1", JAN_1)).await.unwrap();
}

async fn balance(store: &dyn Store, account_id: &str) -> i64 {
    store.account(account_id).await.unwrap().unwrap().balance.units()
}

async fn spend(store: &dyn Store, account_id: &str, key_id: &str) -> i64 {
    store.key(account_id, key_id).await.unwrap().unwrap().spend.units()
}

async fn accounts_and_email_conflict(store: &dyn Store) {
    let a = account("acct_a", "a@example.com", 25_000_000_000);
    store.create_account(&a, "mk_a").await.unwrap();
    assert_eq!(store.account("acct_a").await.unwrap(), Some(a));
    assert_eq!(store.account("acct_missing").await.unwrap(), None);

    let taken = store
        .create_account(&account("acct_b", "a@example.com", 0), "mk_b")
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    assert_eq!(
        store.account("acct_b").await.unwrap(),
        None,
        "nothing of the refused account is kept"
    );
    assert_eq!(store.account_by_management_key("mk_b").await.unwrap(), None);

    let zero = account("acct_c", "c@example.com", 0);
    store.create_account(&zero, "mk_c").await.unwrap();
    assert_eq!(store.account("acct_c").await.unwrap(), Some(zero));
}

async fn management_key_lookup(store: &dyn Store) {
    let a = account("acct_a", "a@example.com", 7);
    store.create_account(&a, "mk_a").await.unwrap();
    assert_eq!(store.account_by_management_key("mk_a").await.unwrap(), Some(a));
    assert_eq!(store.account_by_management_key("mk_unknown").await.unwrap(), None);

    let reused = store
        .create_account(&account("acct_b", "b@example.com", 7), "mk_a")
        .await;
    assert!(matches!(reused, Err(StoreError::Conflict(_))), "{reused:?}");
    assert_eq!(
        store.account("acct_b").await.unwrap(),
        None,
        "the transaction rolled back"
    );
}

async fn keys_are_scoped_by_account(store: &dyn Store) {
    two_accounts(store).await;
    let mut k = key("key_a3", "acct_a", "h_a3", JAN_1 + 2);
    k.settings = full_settings();
    store.insert_key(&k).await.unwrap();

    assert_eq!(
        store.key("acct_a", "key_a3").await.unwrap(),
        Some(k.clone()),
        "settings round-trip"
    );
    assert_eq!(store.key("acct_b", "key_a3").await.unwrap(), None);
    assert_eq!(store.key("acct_a", "key_missing").await.unwrap(), None);

    let ids: Vec<String> = store.keys("acct_a").await.unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(ids, ["key_a3", "key_a2", "key_a1"], "newest first");
    let ids: Vec<String> = store.keys("acct_b").await.unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(ids, ["key_b1"]);

    let duplicate = store.insert_key(&key("key_other", "acct_b", "h_a3", JAN_1)).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");
}

async fn key_update_and_revoke(store: &dyn Store) {
    two_accounts(store).await;
    let settings = full_settings();
    assert_eq!(store.update_key("acct_b", "key_a1", &settings).await.unwrap(), None);
    assert_eq!(
        store.key("acct_a", "key_a1").await.unwrap().unwrap().settings,
        KeySettings::default()
    );

    let updated = store.update_key("acct_a", "key_a1", &settings).await.unwrap().unwrap();
    assert_eq!(updated.settings, settings);
    assert_eq!(store.key("acct_a", "key_a1").await.unwrap(), Some(updated));

    let cleared = store
        .update_key("acct_a", "key_a1", &KeySettings::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cleared.settings,
        KeySettings::default(),
        "optional settings can be cleared"
    );

    assert_eq!(store.revoke_key("acct_b", "key_a1", JAN_1 + 10).await.unwrap(), None);
    assert_eq!(
        store.key("acct_a", "key_a1").await.unwrap().unwrap().revoked_at_us,
        None
    );
    let revoked = store.revoke_key("acct_a", "key_a1", JAN_1 + 10).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at_us, Some(JAN_1 + 10));
    let again = store.revoke_key("acct_a", "key_a1", JAN_1 + 20).await.unwrap().unwrap();
    assert_eq!(again.revoked_at_us, Some(JAN_1 + 10), "the first revocation time stays");
    assert_eq!(store.revoke_key("acct_a", "key_missing", JAN_1).await.unwrap(), None);
}

async fn key_by_hash_and_active_keys(store: &dyn Store) {
    two_accounts(store).await;
    assert_eq!(store.key_by_hash("h_b1").await.unwrap().unwrap().id, "key_b1");
    assert_eq!(store.key_by_hash("h_none").await.unwrap(), None);

    store.revoke_key("acct_a", "key_a2", JAN_1 + 5).await.unwrap().unwrap();
    let revoked = store.key_by_hash("h_a2").await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at_us,
        Some(JAN_1 + 5),
        "a revoked key is still found by hash"
    );

    let mut active: Vec<String> = store.active_keys().await.unwrap().into_iter().map(|k| k.id).collect();
    active.sort();
    assert_eq!(active, ["key_a1", "key_b1"]);
}

async fn record_usage_is_idempotent_and_debits(store: &dyn Store) {
    two_accounts(store).await;
    let batch = vec![
        record(1, "acct_a", "key_a1", "gpt-4o", JAN_1, 1_000, 200),
        record(2, "acct_a", "key_a2", "gpt-4o", JAN_1, 2_000, 200),
        record(3, "acct_b", "key_b1", "gpt-4o", JAN_1, 300, 200),
        record(4, "acct_a", "key_a1", "gpt-4o", JAN_1, 0, 502),
    ];
    store.record_usage(&batch).await.unwrap();
    assert_eq!(balance(store, "acct_a").await, 1_000_000 - 3_000);
    assert_eq!(balance(store, "acct_b").await, 200);
    assert_eq!(spend(store, "acct_a", "key_a1").await, 1_000);
    assert_eq!(spend(store, "acct_a", "key_a2").await, 2_000);
    assert_eq!(spend(store, "acct_b", "key_b1").await, 300);

    // The same batch again (a journal replay), then an overlapping one with a duplicate inside.
    store.record_usage(&batch).await.unwrap();
    let overlap = vec![
        record(2, "acct_a", "key_a2", "gpt-4o", JAN_1, 2_000, 200),
        record(5, "acct_a", "key_a2", "gpt-4o", JAN_1, 7, 200),
        record(5, "acct_a", "key_a2", "gpt-4o", JAN_1, 7, 200),
    ];
    store.record_usage(&overlap).await.unwrap();
    store.record_usage(&[]).await.unwrap();
    assert_eq!(balance(store, "acct_a").await, 1_000_000 - 3_007);
    assert_eq!(balance(store, "acct_b").await, 200);
    assert_eq!(spend(store, "acct_a", "key_a2").await, 2_007);
    assert_eq!(store.usage(&filter("acct_a")).await.unwrap().len(), 4);
    assert_eq!(
        store.usage_record("acct_a", "req_00001").await.unwrap(),
        Some(batch[0].clone()),
        "round-trips"
    );
}

/// 25 records of `acct_a` over three days, two keys, two models, some failures; 3 of `acct_b`.
fn mixed_records() -> Vec<UsageRecord> {
    let mut records = Vec::new();
    for n in 1..=25_u32 {
        let key = if n.is_multiple_of(2) { "key_a2" } else { "key_a1" };
        let model = if n % 3 == 0 { "claude-sonnet-4" } else { "gpt-4o" };
        let status = match n % 7 {
            0 => 429,
            1 if n > 1 => 502,
            _ => 200,
        };
        let at = JAN_1 + i64::from(n % 3) * DAY + i64::from(n) * 1_000_000;
        records.push(record(n, "acct_a", key, model, at, i64::from(n) * 1_000, status));
    }
    for n in 26..=28 {
        records.push(record(n, "acct_b", "key_b1", "gpt-4o", JAN_1, 1, 200));
    }
    records
}

fn ids(records: &[UsageRecord]) -> Vec<String> {
    records.iter().map(|r| r.request_id.clone()).collect()
}

fn expected_ids(records: &[UsageRecord], keep: impl Fn(&UsageRecord) -> bool) -> Vec<String> {
    records
        .iter()
        .filter(|r| keep(r))
        .map(|r| r.request_id.clone())
        .collect()
}

async fn usage_filters_and_pagination(store: &dyn Store) {
    two_accounts(store).await;
    let all = mixed_records();
    // Two batches, the later ids first: a reader who pages to the end after the first commit
    // must still get the second batch from their last cursor, although its ids are smaller
    // (long requests take their id early and commit late).
    let (first, second) = all.split_at(13);
    store.record_usage(second).await.unwrap();
    let mut f = UsageFilter {
        limit: 10,
        ..filter("acct_a")
    };
    let mut pages = Vec::new();
    let read_all = async |f: &mut UsageFilter, pages: &mut Vec<Vec<UsageRecord>>| loop {
        let page = store.usage(f).await.unwrap();
        if page.is_empty() {
            break;
        }
        f.after = page.last().map(|r| r.request_id.clone());
        pages.push(page);
    };
    read_all(&mut f, &mut pages).await;
    store.record_usage(first).await.unwrap();
    read_all(&mut f, &mut pages).await;
    // Commit order: the second batch, then the first.
    let mine: Vec<UsageRecord> = second
        .iter()
        .chain(first)
        .filter(|r| r.account_id == "acct_a")
        .cloned()
        .collect();
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 2, 10, 3]);
    let paged: Vec<UsageRecord> = pages.concat();
    assert_eq!(paged, mine, "every record once, in commit order, intact");
    assert_eq!(paged.iter().map(|r| &r.request_id).collect::<HashSet<_>>().len(), 25);
    let unknown = UsageFilter {
        after: Some("req_unknown".into()),
        ..filter("acct_a")
    };
    assert!(
        store.usage(&unknown).await.unwrap().is_empty(),
        "an unknown cursor does not restart the listing"
    );

    let check = |f: UsageFilter, keep: Box<dyn Fn(&UsageRecord) -> bool>| {
        let expected = expected_ids(&mine, keep);
        async move {
            assert_eq!(ids(&store.usage(&f).await.unwrap()), expected, "{f:?}");
        }
    };
    check(
        UsageFilter {
            key_id: Some("key_a2".into()),
            ..filter("acct_a")
        },
        Box::new(|r| r.key_id == "key_a2"),
    )
    .await;
    check(
        UsageFilter {
            key_id: Some("key_b1".into()),
            ..filter("acct_a")
        },
        Box::new(|_| false),
    )
    .await;
    check(
        UsageFilter {
            model: Some("claude-sonnet-4".into()),
            ..filter("acct_a")
        },
        Box::new(|r| r.requested_model == "claude-sonnet-4"),
    )
    .await;
    check(
        UsageFilter {
            model: Some("gpt-4o-2024-08-06".into()),
            ..filter("acct_a")
        },
        Box::new(|r| r.served_model.as_deref() == Some("gpt-4o-2024-08-06")),
    )
    .await;
    check(
        UsageFilter {
            success: Some(true),
            ..filter("acct_a")
        },
        Box::new(|r| r.status == 200),
    )
    .await;
    check(
        UsageFilter {
            success: Some(false),
            ..filter("acct_a")
        },
        Box::new(|r| r.status != 200),
    )
    .await;
    check(
        UsageFilter {
            status: Some(429),
            ..filter("acct_a")
        },
        Box::new(|r| r.status == 429),
    )
    .await;
    check(
        UsageFilter {
            from_us: Some(JAN_1 + DAY),
            to_us: Some(JAN_1 + 2 * DAY),
            ..filter("acct_a")
        },
        Box::new(|r| r.created_at_us >= JAN_1 + DAY && r.created_at_us < JAN_1 + 2 * DAY),
    )
    .await;
    let first_three: Vec<String> = expected_ids(&mine, |r| r.key_id == "key_a1" && r.status == 200)
        .into_iter()
        .take(3)
        .collect();
    let limited = UsageFilter {
        key_id: Some("key_a1".into()),
        success: Some(true),
        limit: 3,
        ..filter("acct_a")
    };
    assert_eq!(ids(&store.usage(&limited).await.unwrap()), first_three);
    assert_eq!(
        ids(&store.usage(&filter("acct_b")).await.unwrap()),
        ["req_00026", "req_00027", "req_00028"]
    );
    assert!(store.usage(&filter("acct_missing")).await.unwrap().is_empty());
}

/// The expected summary of `records` grouped by `group_of`, sorted by group.
fn expected_summary(records: &[UsageRecord], group_of: impl Fn(&UsageRecord) -> String) -> Vec<SummaryRow> {
    let mut rows: std::collections::BTreeMap<String, SummaryRow> = Default::default();
    for r in records {
        let g = group_of(r);
        let row = rows.entry(g.clone()).or_insert(SummaryRow {
            group: g,
            requests: 0,
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            reasoning_tokens: 0,
            cost: Usd::ZERO,
        });
        row.requests += 1;
        row.prompt_tokens += r.usage.prompt_tokens;
        row.cached_tokens += r.usage.cached_tokens;
        row.completion_tokens += r.usage.completion_tokens;
        row.reasoning_tokens += r.usage.reasoning_tokens;
        row.cost = row.cost.checked_add(r.cost).unwrap();
    }
    rows.into_values().collect()
}

async fn usage_summary_sums_exactly(store: &dyn Store) {
    two_accounts(store).await;
    let all = mixed_records();
    store.record_usage(&all).await.unwrap();
    let mine: Vec<UsageRecord> = all.iter().filter(|r| r.account_id == "acct_a").cloned().collect();

    let by_key = store.usage_summary(&filter("acct_a"), SummaryGroup::Key).await.unwrap();
    assert_eq!(by_key, expected_summary(&mine, |r| r.key_id.clone()));
    assert_eq!(by_key.len(), 2);

    let by_model = store
        .usage_summary(&filter("acct_a"), SummaryGroup::Model)
        .await
        .unwrap();
    assert_eq!(by_model, expected_summary(&mine, |r| r.requested_model.clone()));

    let by_day = store.usage_summary(&filter("acct_a"), SummaryGroup::Day).await.unwrap();
    let days: Vec<&str> = by_day.iter().map(|r| r.group.as_str()).collect();
    assert_eq!(days, ["2024-01-01", "2024-01-02", "2024-01-03"]);
    let day_of = |r: &UsageRecord| {
        ["2024-01-01", "2024-01-02", "2024-01-03"][((r.created_at_us - JAN_1) / DAY) as usize].to_string()
    };
    assert_eq!(by_day, expected_summary(&mine, day_of));
    let total: i64 = by_day.iter().map(|r| r.cost.units()).sum();
    assert_eq!(total, (1..=25).sum::<i64>() * 1_000);

    // Filters apply; cursor and limit do not.
    let f = UsageFilter {
        success: Some(true),
        key_id: Some("key_a1".into()),
        after: Some("req_00020".into()),
        limit: 1,
        ..filter("acct_a")
    };
    let ok_a1: Vec<UsageRecord> = mine
        .iter()
        .filter(|r| r.status == 200 && r.key_id == "key_a1")
        .cloned()
        .collect();
    assert_eq!(
        store.usage_summary(&f, SummaryGroup::Model).await.unwrap(),
        expected_summary(&ok_a1, |r| r.requested_model.clone())
    );
    assert!(
        store
            .usage_summary(&filter("acct_missing"), SummaryGroup::Day)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn key_spend_since_sums_one_key_from_a_time(store: &dyn Store) {
    two_accounts(store).await;
    let batch = [
        record(1, "acct_a", "key_a1", "m", JAN_1 + DAY - 1, 7, 200),
        record(2, "acct_a", "key_a1", "m", JAN_1 + DAY, 11, 200),
        record(3, "acct_a", "key_a1", "m", JAN_1 + 2 * DAY, 13, 500),
        record(4, "acct_a", "key_a2", "m", JAN_1 + 2 * DAY, 17, 200),
    ];
    store.record_usage(&batch).await.unwrap();
    assert_eq!(store.key_spend_since("key_a1", JAN_1 + DAY).await.unwrap().units(), 24);
    assert_eq!(store.key_spend_since("key_a1", JAN_1).await.unwrap().units(), 31);
    assert_eq!(
        store.key_spend_since("key_a2", JAN_1 + 3 * DAY).await.unwrap().units(),
        0
    );
    assert_eq!(store.key_spend_since("key_none", 0).await.unwrap().units(), 0);
}

async fn ledger_pages_and_account_spend(store: &dyn Store) {
    two_accounts(store).await;
    store
        .record_usage(&[
            record(1, "acct_a", "key_a1", "m", JAN_1, 7, 200),
            record(2, "acct_a", "key_a2", "m", JAN_1, 11, 200),
            record(3, "acct_b", "key_b1", "m", JAN_1, 13, 200),
        ])
        .await
        .unwrap();
    assert_eq!(store.account_spend("acct_a").await.unwrap().units(), 18);
    assert_eq!(store.account_spend("acct_b").await.unwrap().units(), 13);
    let all = store.ledger("acct_a", None, 100).await.unwrap();
    // The opening credit, then one usage debit for the batch.
    assert_eq!(
        all.iter()
            .map(|e| (e.kind.as_str(), e.amount.units()))
            .collect::<Vec<_>>(),
        [("credit", 1_000_000), ("usage", -18)]
    );
    assert_eq!(
        all.iter().map(|e| e.amount.units()).sum::<i64>(),
        balance(store, "acct_a").await
    );
    let first = store.ledger("acct_a", None, 1).await.unwrap();
    let rest = store.ledger("acct_a", Some(first[0].id), 100).await.unwrap();
    assert_eq!([first, rest].concat(), all);
    assert!(
        store
            .ledger("acct_b", None, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.amount.units() != -18)
    );
}

async fn usage_record_is_scoped_by_account(store: &dyn Store) {
    two_accounts(store).await;
    let r = record(1, "acct_a", "key_a1", "gpt-4o", JAN_1, 10, 200);
    let failed = record(2, "acct_a", "key_a1", "gpt-4o", JAN_1, 0, 500);
    store.record_usage(&[r.clone(), failed.clone()]).await.unwrap();
    assert_eq!(store.usage_record("acct_a", "req_00001").await.unwrap(), Some(r));
    assert_eq!(store.usage_record("acct_a", "req_00002").await.unwrap(), Some(failed));
    assert_eq!(store.usage_record("acct_b", "req_00001").await.unwrap(), None);
    assert_eq!(store.usage_record("acct_a", "req_99999").await.unwrap(), None);
}

/// One `#[tokio::test]` per suite check, each on a fresh store from `$make`.
macro_rules! store_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            store_suite!(@tests $make;
                accounts_and_email_conflict,
                management_key_lookup,
                keys_are_scoped_by_account,
                key_update_and_revoke,
                key_by_hash_and_active_keys,
                record_usage_is_idempotent_and_debits,
                usage_filters_and_pagination,
                usage_summary_sums_exactly,
                usage_record_is_scoped_by_account,
                key_spend_since_sums_one_key_from_a_time,
                ledger_pages_and_account_spend,
            );
        }
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make.await;
                super::$name(&store).await;
            }
        )*
    };
}

/// A fresh SQLite store in a temporary directory (kept alive by the returned guard).
async fn sqlite_file() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("router-one.db")).await.unwrap();
    (store, dir)
}

async fn sqlite_memory() -> (SqliteStore, ()) {
    (SqliteStore::open_in_memory().await.unwrap(), ())
}

store_suite!(sqlite, sqlite_file());
store_suite!(sqlite_in_memory, sqlite_memory());

// ---- SQLite-only checks --------------------------------------------------------------------

/// Σ ledger_entries of an account, and Σ of its `usage` entries.
async fn ledger(store: &SqliteStore, account_id: &str) -> (i64, i64) {
    let all: Option<i64> = sqlx::query_scalar("SELECT SUM(amount_units) FROM ledger_entries WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    let usage: Option<i64> =
        sqlx::query_scalar("SELECT SUM(amount_units) FROM ledger_entries WHERE account_id = $1 AND kind = 'usage'")
            .bind(account_id)
            .fetch_one(store.pool())
            .await
            .unwrap();
    (all.unwrap_or(0), usage.unwrap_or(0))
}

async fn usage_cost(store: &SqliteStore, account_id: &str) -> i64 {
    let sum: Option<i64> = sqlx::query_scalar("SELECT SUM(cost_units) FROM usage_records WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    sum.unwrap_or(0)
}

#[tokio::test]
async fn balance_equals_ledger_and_usage_equals_debits_after_any_batches() {
    let (store, _dir) = sqlite_file().await;
    two_accounts(&store).await;
    let all = mixed_records();
    let batches: Vec<&[UsageRecord]> = vec![
        &all[0..5],
        &all[0..5],
        &all[3..17],
        &all[20..28],
        &all[..],
        &all[27..28],
        &[],
        &all[10..11],
    ];
    for batch in batches {
        store.record_usage(batch).await.unwrap();
        for account_id in ["acct_a", "acct_b"] {
            let (ledger_sum, usage_sum) = ledger(&store, account_id).await;
            assert_eq!(
                balance(&store, account_id).await,
                ledger_sum,
                "balance = Σ ledger ({account_id})"
            );
            assert_eq!(
                usage_cost(&store, account_id).await,
                -usage_sum,
                "Σ usage cost = −Σ usage debits"
            );
        }
    }
    assert_eq!(
        balance(&store, "acct_a").await,
        1_000_000 - (1..=25).sum::<i64>() * 1_000
    );
    assert_eq!(balance(&store, "acct_b").await, 500 - 3);
    // One usage entry per account per batch that inserted something with a cost.
    let entries: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'usage' AND account_id = 'acct_b'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(entries, 1, "acct_b's records all arrived in one batch");
}

#[tokio::test]
async fn usage_for_an_unknown_account_is_kept_but_not_debited() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    two_accounts(&store).await;
    let orphan = record(1, "acct_gone", "key_gone", "gpt-4o", JAN_1, 10, 200);
    let normal = record(2, "acct_a", "key_a1", "gpt-4o", JAN_1, 10, 200);
    store.record_usage(&[orphan.clone(), normal]).await.unwrap();
    assert_eq!(
        store.usage_record("acct_gone", "req_00001").await.unwrap(),
        Some(orphan)
    );
    assert_eq!(balance(&store, "acct_a").await, 1_000_000 - 10);
}

#[tokio::test]
async fn absurd_counts_saturate_instead_of_refusing_the_batch() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    two_accounts(&store).await;
    let mut r = record(1, "acct_a", "key_a1", "gpt-4o", JAN_1, 10, 200);
    r.usage.prompt_tokens = u64::MAX;
    r.latency_us = u64::MAX;
    store
        .record_usage(&[r, record(2, "acct_a", "key_a1", "gpt-4o", JAN_1, 10, 200)])
        .await
        .unwrap();
    let stored = store.usage_record("acct_a", "req_00001").await.unwrap().unwrap();
    assert_eq!(stored.usage.prompt_tokens, i64::MAX as u64);
    assert_eq!(stored.latency_us, i64::MAX as u64);
    assert_eq!(balance(&store, "acct_a").await, 1_000_000 - 20);
}

#[tokio::test]
async fn opens_in_wal_mode_and_reopens_with_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested-not-needed.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(sync, 1, "NORMAL");
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(busy, 5_000);
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    store
        .create_account(&account("acct_a", "a@example.com", 9), "mk_a")
        .await
        .unwrap();
    store.close().await;

    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.account("acct_a").await.unwrap().unwrap().balance.units(), 9);
    let key_for_missing_account = reopened.insert_key(&key("key_x", "acct_missing", "h_x", JAN_1)).await;
    assert!(
        matches!(key_for_missing_account, Err(StoreError::Database(_))),
        "foreign keys are enforced"
    );
}

#[tokio::test]
async fn two_handles_on_one_file_write_concurrently() {
    // The admin CLI and the server each open the file; the busy timeout serialises writers.
    let (a, dir) = sqlite_file().await;
    let b = SqliteStore::open(&dir.path().join("router-one.db")).await.unwrap();
    two_accounts(&a).await;
    let writes = (0..40_u32).map(|n| {
        let store = if n.is_multiple_of(2) { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            let r = record(n, "acct_a", "key_a1", "gpt-4o", JAN_1, 1, 200);
            store.record_usage(&[r]).await.unwrap();
        })
    });
    for w in writes.collect::<Vec<_>>() {
        w.await.unwrap();
    }
    assert_eq!(balance(&b, "acct_a").await, 1_000_000 - 40);
}
