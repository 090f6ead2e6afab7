//! The store behaviour suite, written against `&dyn Store` so every backend runs the same
//! checks: one `store_suite!` line per backend (SQLite on a file, in memory, and PostgreSQL,
//! each test on a private database). The backend-only checks after it (SQLite's ledger
//! invariant and pragmas; PostgreSQL's commit-order cursors, partitions and concurrency) read
//! the database directly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashSet;

use router_one_core::billing::{
    AdjustOutcome, CheckoutSession, ConfirmOutcome, LedgerKind, ManagementKey, PaymentConfirmation, PaymentReversal,
    ReferralRefusal, ReversalOutcome, SessionStatus,
};
use router_one_core::checkout::{FxRate, Quote};
use router_one_core::money::Usd;
use router_one_core::pricing::TokenUsage;
use router_one_core::store::{
    Account, ApiKey, BudgetPeriod, KeyPage, KeySettings, OversizedMaxTokens, Store, StoreError, SummaryGroup,
    SummaryRow, UsageFilter,
};
use router_one_core::usage::{Endpoint, ReceiptParts, RecordReceipt, UsageRecord};
use router_one_store::{PgStore, SqliteStore};
use rust_decimal::Decimal;

/// 2024-01-01T00:00:00Z in µs.
const JAN_1: i64 = 1_704_067_200_000_000;
const DAY: i64 = 86_400_000_000;

fn account(id: &str, email: &str, balance: i64) -> Account {
    Account {
        id: id.into(),
        email: email.into(),
        balance: Usd::from_units(balance),
        created_at_us: JAN_1,
        invite_code: format!("INV-{}", id.to_uppercase()),
        referred_by: None,
        ledger_head: 0,
    }
}

/// A management key of `account_id` whose secret hashes to `hash`.
fn mkey(hash: &str, account_id: &str, created_at_us: i64) -> ManagementKey {
    ManagementKey {
        id: format!("mkey_{hash}"),
        account_id: account_id.into(),
        secret_hash: hash.into(),
        hint: "sk-rm-ab…".into(),
        name: None,
        created_at_us,
        revoked_at_us: None,
    }
}

/// Creates `account` (no password) with a management key whose secret hashes to `hash`.
async fn create(store: &dyn Store, account: &Account, hash: &str) -> Result<(), StoreError> {
    store
        .create_account(account, None, &mkey(hash, &account.id, account.created_at_us))
        .await
}

/// `account` as read back: `ledger_head` is the store's, not the caller's.
fn head0(account: Option<Account>) -> Option<Account> {
    account.map(|a| Account { ledger_head: 0, ..a })
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
        // Every relay option away from its default, so a column dropped on the way is seen.
        on_oversized_max_tokens: OversizedMaxTokens::Refuse,
        always_include_usage: true,
        router_headers: false,
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
            cache_write_tokens: u64::from(n % 4),
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
        lease: None,
        failed_attempts: Vec::new(),
        receipt: None,
        refusal: None,
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
    create(store, &account("acct_a", "a@example.com", 1_000_000), "mk_a")
        .await
        .unwrap();
    create(store, &account("acct_b", "b@example.com", 500), "mk_b")
        .await
        .unwrap();
    for (k, created) in [("key_a1", JAN_1), ("key_a2", JAN_1 + 1)] {
        assert!(
            store
                .insert_key(&key(k, "acct_a", &format!("h_{k}"), created), 10)
                .await
                .unwrap()
        );
    }
    assert!(
        store
            .insert_key(&key("key_b1", "acct_b", "h_key_b1", JAN_1), 10)
            .await
            .unwrap()
    );
}

/// The ids of a page of keys.
fn page_ids(page: &KeyPage) -> Vec<&str> {
    page.keys.iter().map(|k| k.id.as_str()).collect()
}

async fn balance(store: &dyn Store, account_id: &str) -> i64 {
    store.account(account_id).await.unwrap().unwrap().balance.units()
}

async fn spend(store: &dyn Store, account_id: &str, key_id: &str) -> i64 {
    store.key(account_id, key_id).await.unwrap().unwrap().spend.units()
}

async fn accounts_and_email_conflict(store: &dyn Store) {
    let a = account("acct_a", "a@example.com", 25_000_000_000);
    create(store, &a, "mk_a").await.unwrap();
    assert_eq!(head0(store.account("acct_a").await.unwrap()), Some(a));
    assert_eq!(store.account("acct_missing").await.unwrap(), None);

    let taken = create(store, &account("acct_b", "a@example.com", 0), "mk_b").await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    assert_eq!(
        store.account("acct_b").await.unwrap(),
        None,
        "nothing of the refused account is kept"
    );
    assert_eq!(store.account_by_management_key("mk_b").await.unwrap(), None);

    let zero = account("acct_c", "c@example.com", 0);
    create(store, &zero, "mk_c").await.unwrap();
    assert_eq!(head0(store.account("acct_c").await.unwrap()), Some(zero));
}

async fn management_key_lookup(store: &dyn Store) {
    let a = account("acct_a", "a@example.com", 7);
    create(store, &a, "mk_a").await.unwrap();
    assert_eq!(head0(store.account_by_management_key("mk_a").await.unwrap()), Some(a));
    assert_eq!(store.account_by_management_key("mk_unknown").await.unwrap(), None);

    let reused = create(store, &account("acct_b", "b@example.com", 7), "mk_a").await;
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
    assert!(store.insert_key(&k, 10).await.unwrap());

    assert_eq!(
        store.key("acct_a", "key_a3").await.unwrap(),
        Some(k.clone()),
        "settings round-trip"
    );
    assert_eq!(store.key("acct_b", "key_a3").await.unwrap(), None);
    assert_eq!(store.key("acct_a", "key_missing").await.unwrap(), None);

    let all = store.keys("acct_a", None, 10).await.unwrap();
    assert_eq!(page_ids(&all), ["key_a3", "key_a2", "key_a1"], "newest first");
    assert_eq!(all.next, None);
    assert_eq!(page_ids(&store.keys("acct_b", None, 10).await.unwrap()), ["key_b1"]);

    let duplicate = store.insert_key(&key("key_other", "acct_b", "h_a3", JAN_1), 10).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");
}

async fn keys_page_by_cursor(store: &dyn Store) {
    two_accounts(store).await;
    // Two keys created in the same µs: the id breaks the tie.
    for (k, created) in [("key_a3", JAN_1 + 2), ("key_a4", JAN_1 + 2), ("key_a5", JAN_1 + 3)] {
        assert!(
            store
                .insert_key(&key(k, "acct_a", &format!("h_{k}"), created), 10)
                .await
                .unwrap()
        );
    }
    let first = store.keys("acct_a", None, 2).await.unwrap();
    assert_eq!(page_ids(&first), ["key_a5", "key_a4"]);
    assert_eq!(first.next.as_deref(), Some("key_a4"));
    let second = store.keys("acct_a", Some("key_a4"), 2).await.unwrap();
    assert_eq!(page_ids(&second), ["key_a3", "key_a2"]);
    let last = store.keys("acct_a", second.next.as_deref(), 2).await.unwrap();
    assert_eq!(page_ids(&last), ["key_a1"]);
    assert_eq!(last.next, None);
    let exact = store.keys("acct_a", Some("key_a3"), 2).await.unwrap();
    assert_eq!(
        (page_ids(&exact), exact.next.as_deref()),
        (vec!["key_a2", "key_a1"], None)
    );
    assert!(
        store.keys("acct_a", Some("key_b1"), 2).await.unwrap().keys.is_empty(),
        "another account's key is no cursor here"
    );
    assert!(store.keys("acct_a", Some("key_nope"), 2).await.unwrap().keys.is_empty());

    let active = store.active_keys(None, 4).await.unwrap();
    assert_eq!(page_ids(&active), ["key_a1", "key_a2", "key_a3", "key_a4"], "id order");
    let rest = store.active_keys(active.next.as_deref(), 4).await.unwrap();
    assert_eq!(
        (page_ids(&rest), rest.next.as_deref()),
        (vec!["key_a5", "key_b1"], None)
    );
}

async fn live_keys_per_account_are_capped(store: &dyn Store) {
    two_accounts(store).await;
    // acct_a has 2 live keys: a cap of 3 takes one more.
    assert!(
        store
            .insert_key(&key("key_a3", "acct_a", "h_a3", JAN_1), 3)
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_key(&key("key_a4", "acct_a", "h_a4", JAN_1), 3)
            .await
            .unwrap()
    );
    assert_eq!(store.key("acct_a", "key_a4").await.unwrap(), None, "nothing stored");
    // Another account has its own count; a revoked key frees its place.
    assert!(
        store
            .insert_key(&key("key_b2", "acct_b", "h_b2", JAN_1), 3)
            .await
            .unwrap()
    );
    store.revoke_key("acct_a", "key_a1", JAN_1 + 1).await.unwrap().unwrap();
    assert!(
        store
            .insert_key(&key("key_a4", "acct_a", "h_a4", JAN_1), 3)
            .await
            .unwrap()
    );
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
    assert_eq!(store.key_by_hash("h_key_b1").await.unwrap().unwrap().id, "key_b1");
    assert_eq!(store.key_by_hash("h_none").await.unwrap(), None);

    store.revoke_key("acct_a", "key_a2", JAN_1 + 5).await.unwrap().unwrap();
    let revoked = store.key_by_hash("h_key_a2").await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at_us,
        Some(JAN_1 + 5),
        "a revoked key is still found by hash"
    );

    let active = store.active_keys(None, 10).await.unwrap();
    assert_eq!(page_ids(&active), ["key_a1", "key_b1"]);
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
    // Full pages, except where a batch ended.
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 2, 10, 3]);
    let paged: Vec<UsageRecord> = pages.concat();
    assert_eq!(paged, mine, "every record once, in commit order, intact");
    assert_eq!(paged.iter().map(|r| &r.request_id).collect::<HashSet<_>>().len(), 25);
    // Newest first, paged back by the same cursor: the same records, reversed.
    let mut back = UsageFilter {
        limit: 7,
        newest_first: true,
        ..filter("acct_a")
    };
    let mut newest_first = Vec::new();
    loop {
        let page = store.usage(&back).await.unwrap();
        if page.is_empty() {
            break;
        }
        back.after = page.last().map(|r| r.request_id.clone());
        newest_first.extend(page);
    }
    assert_eq!(ids(&newest_first), ids(&mine).into_iter().rev().collect::<Vec<_>>());
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
    // The opening adjustment, then one usage debit for the batch.
    assert_eq!(
        all.iter()
            .map(|e| (e.kind.as_str(), e.amount.units()))
            .collect::<Vec<_>>(),
        [("adjustment", 1_000_000), ("usage", -18)]
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
    let mut r = record(1, "acct_a", "key_a1", "gpt-4o", JAN_1, 10, 200);
    // Served on a second route after the first failed: the failed attempt round-trips.
    r.failed_attempts = vec![router_one_core::usage::FailedAttempt {
        route: "openai.eu".into(),
        error: "upstream_overloaded".into(),
        status: 503,
        latency_us: 1_234,
    }];
    // Its signed receipt's parts (metadata and a hash only) round-trip; a refusal has none.
    // Receipts of one signed batch share its JWS, stored once, also across usage batches.
    let batch = "eyJhbGciOiJFZERTQSJ9.eyJyb290IjoiMDAifQ.c2lnX2E";
    let parts = |path: &str, upstream_response_id: Option<&str>| {
        Some(RecordReceipt::Parts(ReceiptParts {
            batch: batch.into(),
            path: path.into(),
            response_sha256: "ab".repeat(32),
            upstream_response_id: upstream_response_id.map(str::to_owned),
        }))
    };
    r.receipt = parts("TA", Some("chatcmpl-1"));
    let failed = record(2, "acct_a", "key_a1", "gpt-4o", JAN_1, 0, 500);
    let mut mate = record(3, "acct_a", "key_a1", "gpt-4o", JAN_1, 10, 200);
    mate.receipt = parts("Ug", None);
    store
        .record_usage(&[r.clone(), failed.clone(), mate.clone()])
        .await
        .unwrap();
    let mut later_mate = record(4, "acct_a", "key_a1", "gpt-4o", JAN_1, 10, 200);
    later_mate.receipt = parts("", Some("chatcmpl-4"));
    // A whole receipt, as records kept them before parts, round-trips as it was.
    let mut whole = record(5, "acct_a", "key_a1", "gpt-4o", JAN_1, 10, 200);
    whole.receipt = Some(RecordReceipt::Whole("eyJhbGciOiJFZERTQSJ9.e30.c2ln~e30~".into()));
    store.record_usage(&[later_mate.clone(), whole.clone()]).await.unwrap();
    assert_eq!(store.usage_record("acct_a", "req_00001").await.unwrap(), Some(r));
    assert_eq!(store.usage_record("acct_a", "req_00002").await.unwrap(), Some(failed));
    assert_eq!(store.usage_record("acct_a", "req_00003").await.unwrap(), Some(mate));
    assert_eq!(
        store.usage_record("acct_a", "req_00004").await.unwrap(),
        Some(later_mate)
    );
    assert_eq!(store.usage_record("acct_a", "req_00005").await.unwrap(), Some(whole));
    assert_eq!(store.usage_record("acct_b", "req_00001").await.unwrap(), None);
    assert_eq!(store.usage_record("acct_a", "req_99999").await.unwrap(), None);
    // Recorded for some account (whichever asks), or not at all.
    assert!(store.request_recorded("req_00001").await.unwrap());
    assert!(!store.request_recorded("req_99999").await.unwrap());
}

/// Receipt public keys: published once per kid (a second publication keeps the first), listed
/// oldest first, visible to every node on the same store.
async fn receipt_keys_publish_once(store: &dyn Store) {
    assert!(store.receipt_keys().await.unwrap().is_empty());
    store.publish_receipt_key("kid_a", r#"{"kid":"kid_a"}"#).await.unwrap();
    store.publish_receipt_key("kid_b", r#"{"kid":"kid_b"}"#).await.unwrap();
    store.publish_receipt_key("kid_a", r#"{"kid":"other"}"#).await.unwrap();
    assert_eq!(
        store.receipt_keys().await.unwrap(),
        vec![r#"{"kid":"kid_a"}"#.to_owned(), r#"{"kid":"kid_b"}"#.to_owned()]
    );
}

// ---- Accounts, payments, referrals ---------------------------------------------------------

/// One USD in units.
const USD: i64 = 10_000_000_000;

/// A quote crediting `token_units` and charging `total` `currency`.
fn quote(token_units: i64, currency: &str, total: &str) -> Quote {
    let total: Decimal = total.parse().unwrap();
    Quote {
        token_line_usd: Usd::from_units(token_units),
        currency: currency.into(),
        channel: "card".into(),
        fx_rate: Decimal::ONE,
        fx_as_of: "2026-11-25T12:00:00Z".into(),
        minor_units: 2,
        converted: total,
        fx_cost: Decimal::ZERO,
        channel_fee: Decimal::ZERO,
        total,
    }
}

/// An open session `id` of `account_id` with provider `sim`.
fn session(id: &str, account_id: &str, quote: Quote) -> CheckoutSession {
    CheckoutSession {
        id: id.into(),
        account_id: account_id.into(),
        provider: "sim".into(),
        provider_session_id: format!("sps_{id}"),
        payment_url: format!("https://pay.example/{id}"),
        quote,
        status: SessionStatus::Open,
        payment_id: None,
        created_at_us: JAN_1,
    }
}

fn confirmation(payment_id: &str, session_id: &str, amount: &str, currency: &str) -> PaymentConfirmation {
    PaymentConfirmation {
        provider: "sim".into(),
        payment_id: payment_id.into(),
        session_id: session_id.into(),
        amount: amount.parse().unwrap(),
        currency: currency.into(),
        commission_percent: "5".parse().unwrap(),
        at_us: JAN_1 + 1_000,
    }
}

fn reversal(payment_id: &str, kind: LedgerKind, max_debit: i64, max_commission_debit: i64) -> PaymentReversal {
    PaymentReversal {
        provider: "sim".into(),
        payment_id: payment_id.into(),
        kind,
        max_debit: Usd::from_units(max_debit),
        max_commission_debit: Usd::from_units(max_commission_debit),
        at_us: JAN_1 + 2_000,
    }
}

/// balance = Σ ledger entries, for each account.
async fn assert_balanced(store: &dyn Store, account_ids: &[&str]) {
    for id in account_ids {
        let sum: i64 = store
            .ledger(id, None, 100_000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.amount.units())
            .sum();
        let balance = balance(store, id).await;
        assert_eq!(balance, sum, "balance = Σ ledger ({id})");
        assert!(balance >= 0, "{id} went negative: {balance}");
    }
}

/// The kinds and amounts of an account's ledger entries.
async fn entries(store: &dyn Store, account_id: &str) -> Vec<(LedgerKind, i64)> {
    store
        .ledger(account_id, None, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.amount.units()))
        .collect()
}

/// `acct_r` (the inviter, 0 balance) and `acct_p` (the payer, referred by `acct_r`, 0 balance).
async fn inviter_and_payer(store: &dyn Store) {
    create(store, &account("acct_r", "r@example.com", 0), "mk_r")
        .await
        .unwrap();
    let mut p = account("acct_p", "p@example.com", 0);
    p.referred_by = Some("acct_r".into());
    create(store, &p, "mk_p").await.unwrap();
}

/// Opens session `cs_id` for `account_id` crediting `token_units` for `total` USD and confirms it
/// as `payment_id`.
async fn pay(store: &dyn Store, account_id: &str, cs_id: &str, payment_id: &str, token_units: i64, total: &str) {
    store
        .insert_checkout_session(&session(cs_id, account_id, quote(token_units, "USD", total)))
        .await
        .unwrap();
    let outcome = store
        .confirm_payment(&confirmation(payment_id, cs_id, total, "USD"))
        .await
        .unwrap();
    assert!(matches!(outcome, ConfirmOutcome::Applied(_)), "{outcome:?}");
}

async fn account_lookups_and_listing(store: &dyn Store) {
    let a = account("acct_a", "a@example.com", 5);
    store
        .create_account(
            &a,
            Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
            &mkey("mk_a", "acct_a", JAN_1),
        )
        .await
        .unwrap();
    let mut b = account("acct_b", "b@example.com", 0);
    b.referred_by = Some("acct_a".into());
    create(store, &b, "mk_b").await.unwrap();
    create(store, &account("acct_c", "c@example.com", 0), "mk_c")
        .await
        .unwrap();

    let (found, hash) = store.account_by_email("a@example.com").await.unwrap().unwrap();
    assert_eq!(head0(Some(found.clone())), Some(a.clone()));
    assert!(found.ledger_head > 0, "the opening entry is the head");
    assert_eq!(hash.as_deref(), Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"));
    let (found_b, hash_b) = store.account_by_email("b@example.com").await.unwrap().unwrap();
    assert_eq!(found_b.referred_by.as_deref(), Some("acct_a"));
    assert_eq!(found_b.ledger_head, 0);
    assert_eq!(hash_b, None);
    assert!(store.account_by_email("nobody@example.com").await.unwrap().is_none());

    assert_eq!(
        head0(store.account_by_invite_code("INV-ACCT_B").await.unwrap()),
        Some(b.clone())
    );
    assert_eq!(store.account_by_invite_code("NOPE").await.unwrap(), None);

    let mut taken = account("acct_d", "d@example.com", 0);
    taken.invite_code = a.invite_code.clone();
    let conflict = create(store, &taken, "mk_d").await;
    assert!(matches!(conflict, Err(StoreError::Conflict(_))), "{conflict:?}");

    let ids = |v: Vec<Account>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.accounts(None, 10).await.unwrap()),
        ["acct_a", "acct_b", "acct_c"]
    );
    assert_eq!(ids(store.accounts(None, 2).await.unwrap()), ["acct_a", "acct_b"]);
    assert_eq!(ids(store.accounts(Some("acct_b"), 10).await.unwrap()), ["acct_c"]);
    assert!(store.accounts(Some("acct_c"), 10).await.unwrap().is_empty());
}

async fn management_keys_insert_list_revoke(store: &dyn Store) {
    two_accounts(store).await;
    let mut k2 = mkey("mk_a2", "acct_a", JAN_1 + 10);
    k2.name = Some("ci".into());
    store.insert_management_key(&k2).await.unwrap();
    let dup = store.insert_management_key(&mkey("mk_a2", "acct_b", JAN_1 + 11)).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    let listed = store.management_keys("acct_a").await.unwrap();
    assert_eq!(
        listed,
        [k2.clone(), mkey("mk_a", "acct_a", JAN_1)],
        "newest first, round-trips"
    );
    assert_eq!(store.management_keys("acct_b").await.unwrap().len(), 1);
    assert_eq!(
        store.account_by_management_key("mk_a2").await.unwrap().unwrap().id,
        "acct_a"
    );

    assert_eq!(
        store
            .revoke_management_key("acct_b", "mkey_mk_a2", JAN_1 + 20)
            .await
            .unwrap(),
        None,
        "another account's key"
    );
    assert_eq!(
        store.revoke_management_key("acct_a", "mkey_none", JAN_1).await.unwrap(),
        None
    );
    let revoked = store
        .revoke_management_key("acct_a", "mkey_mk_a2", JAN_1 + 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at_us, Some(JAN_1 + 20));
    let again = store
        .revoke_management_key("acct_a", "mkey_mk_a2", JAN_1 + 30)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at_us, Some(JAN_1 + 20), "the first revocation time stays");
    assert_eq!(store.account_by_management_key("mk_a2").await.unwrap(), None);
    assert!(store.account_by_management_key("mk_a").await.unwrap().is_some());
    let listed = store.management_keys("acct_a").await.unwrap();
    assert_eq!(listed.len(), 2, "revoked keys are still listed");
    assert_eq!(listed[0].revoked_at_us, Some(JAN_1 + 20));
}

async fn confirm_payment_credits_once(store: &dyn Store) {
    two_accounts(store).await;
    let q = quote(10 * USD, "USD", "10.60");
    store
        .insert_checkout_session(&session("cs_1", "acct_a", q.clone()))
        .await
        .unwrap();
    let stored = store.checkout_session("acct_a", "cs_1").await.unwrap().unwrap();
    assert_eq!(stored, session("cs_1", "acct_a", q.clone()), "the session round-trips");
    assert_eq!(store.checkout_session("acct_b", "cs_1").await.unwrap(), None);

    let c = confirmation("pay_1", "cs_1", "10.60", "USD");
    let applied = match store.confirm_payment(&c).await.unwrap() {
        ConfirmOutcome::Applied(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(applied.credited.units(), 10 * USD);
    assert_eq!(applied.status, SessionStatus::Paid);
    assert_eq!(applied.referrer_id, None);
    assert_eq!(applied.commission, Usd::ZERO);
    assert_eq!(applied.session_id, "cs_1");
    assert_eq!(applied.account_id, "acct_a");
    assert_eq!(balance(store, "acct_a").await, 1_000_000 + 10 * USD);
    for _ in 0..3 {
        match store.confirm_payment(&c).await.unwrap() {
            ConfirmOutcome::Duplicate(p) => assert_eq!(p, applied),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(balance(store, "acct_a").await, 1_000_000 + 10 * USD, "credited once");
    assert_eq!(store.payment("sim", "pay_1").await.unwrap(), Some(applied.clone()));
    assert_eq!(store.payment("other", "pay_1").await.unwrap(), None);
    let s = store.checkout_session("acct_a", "cs_1").await.unwrap().unwrap();
    assert_eq!(
        (s.status, s.payment_id.as_deref()),
        (SessionStatus::Paid, Some("pay_1"))
    );
    let topups: Vec<_> = store
        .ledger("acct_a", None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == LedgerKind::Topup)
        .collect();
    assert_eq!(topups.len(), 1);
    assert_eq!(topups[0].amount.units(), 10 * USD);
    assert_eq!(topups[0].reference.as_deref(), Some("pay_1"));

    // The same session paid again under another id, another provider, an unknown session.
    let other = store
        .confirm_payment(&confirmation("pay_2", "cs_1", "10.60", "USD"))
        .await
        .unwrap();
    assert!(matches!(other, ConfirmOutcome::Mismatch(_)), "{other:?}");
    let mut wrong_provider = confirmation("pay_3", "cs_1", "10.60", "USD");
    wrong_provider.provider = "stripe".into();
    assert_eq!(
        store.confirm_payment(&wrong_provider).await.unwrap(),
        ConfirmOutcome::UnknownSession
    );
    assert_eq!(
        store
            .confirm_payment(&confirmation("pay_4", "cs_none", "10.60", "USD"))
            .await
            .unwrap(),
        ConfirmOutcome::UnknownSession
    );
    assert_eq!(store.payment("sim", "pay_2").await.unwrap(), None);
    assert_eq!(balance(store, "acct_a").await, 1_000_000 + 10 * USD);
    assert_balanced(store, &["acct_a", "acct_b"]).await;
}

async fn concurrent_confirms_credit_once(store: &dyn Store) {
    inviter_and_payer(store).await;
    store
        .insert_checkout_session(&session("cs_1", "acct_p", quote(20 * USD, "USD", "21.00")))
        .await
        .unwrap();
    let c = confirmation("pay_1", "cs_1", "21.00", "USD");
    let (r1, r2, r3, r4, r5, r6, r7, r8) = tokio::join!(
        store.confirm_payment(&c),
        store.confirm_payment(&c),
        store.confirm_payment(&c),
        store.confirm_payment(&c),
        store.confirm_payment(&c),
        store.confirm_payment(&c),
        store.confirm_payment(&c),
        store.confirm_payment(&c),
    );
    let outcomes = [r1, r2, r3, r4, r5, r6, r7, r8].map(Result::unwrap);
    let applied = outcomes
        .iter()
        .filter(|o| matches!(o, ConfirmOutcome::Applied(_)))
        .count();
    let duplicates = outcomes
        .iter()
        .filter(|o| matches!(o, ConfirmOutcome::Duplicate(_)))
        .count();
    assert_eq!((applied, duplicates), (1, 7), "{outcomes:?}");
    assert_eq!(balance(store, "acct_p").await, 20 * USD);
    assert_eq!(balance(store, "acct_r").await, USD, "5% once");
    assert_balanced(store, &["acct_p", "acct_r"]).await;
}

async fn payment_mismatch_credits_nothing(store: &dyn Store) {
    two_accounts(store).await;
    store
        .insert_checkout_session(&session("cs_1", "acct_a", quote(12 * USD, "USD", "12.30")))
        .await
        .unwrap();
    for (amount, currency) in [("12.31", "USD"), ("12.29", "USD"), ("12.30", "EUR"), ("0", "USD")] {
        let outcome = store
            .confirm_payment(&confirmation("pay_x", "cs_1", amount, currency))
            .await
            .unwrap();
        assert!(
            matches!(outcome, ConfirmOutcome::Mismatch(_)),
            "{amount} {currency}: {outcome:?}"
        );
    }
    assert_eq!(store.payment("sim", "pay_x").await.unwrap(), None);
    assert_eq!(balance(store, "acct_a").await, 1_000_000);
    let s = store.checkout_session("acct_a", "cs_1").await.unwrap().unwrap();
    assert_eq!((s.status, s.payment_id), (SessionStatus::Open, None));
    // The same value written differently is the same amount.
    let outcome = store
        .confirm_payment(&confirmation("pay_x", "cs_1", "12.3", "USD"))
        .await
        .unwrap();
    assert!(matches!(outcome, ConfirmOutcome::Applied(_)), "{outcome:?}");
    assert_eq!(balance(store, "acct_a").await, 1_000_000 + 12 * USD);
    assert_balanced(store, &["acct_a", "acct_b"]).await;
}

async fn commission_rounds_down(store: &dyn Store) {
    inviter_and_payer(store).await;
    let token = 1_234_567_890_123; // $123.4567890123: not a whole cent, to exercise the rounding
    store
        .insert_checkout_session(&session("cs_1", "acct_p", quote(token, "USD", "130.00")))
        .await
        .unwrap();
    let outcome = store
        .confirm_payment(&confirmation("pay_1", "cs_1", "130", "USD"))
        .await
        .unwrap();
    let ConfirmOutcome::Applied(p) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(p.referrer_id.as_deref(), Some("acct_r"));
    assert_eq!(p.commission.units(), 61_728_394_506, "5% = …506.15, rounded down");
    assert_eq!(balance(store, "acct_r").await, 61_728_394_506);

    store
        .insert_checkout_session(&session("cs_2", "acct_p", quote(token, "USD", "130.00")))
        .await
        .unwrap();
    let mut c = confirmation("pay_2", "cs_2", "130.00", "USD");
    c.commission_percent = "3.33".parse().unwrap();
    let ConfirmOutcome::Applied(p2) = store.confirm_payment(&c).await.unwrap() else {
        panic!()
    };
    assert_eq!(p2.commission.units(), 41_111_110_741, "3.33% = …741.0959, rounded down");

    // A commission that rounds to zero posts no entry.
    store
        .insert_checkout_session(&session("cs_3", "acct_p", quote(19, "USD", "1.00")))
        .await
        .unwrap();
    let ConfirmOutcome::Applied(p3) = store
        .confirm_payment(&confirmation("pay_3", "cs_3", "1.00", "USD"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(p3.commission, Usd::ZERO);
    let commissions = store
        .ledger("acct_r", None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == LedgerKind::Commission)
        .collect::<Vec<_>>();
    assert_eq!(commissions.len(), 2, "no zero entry");
    assert!(
        commissions
            .iter()
            .all(|e| e.reason.as_deref().unwrap_or("").contains("acct_p"))
    );
    assert_eq!(
        commissions
            .iter()
            .map(|e| e.reference.clone().unwrap())
            .collect::<Vec<_>>(),
        ["pay_1", "pay_2"]
    );
    assert_eq!(balance(store, "acct_p").await, 2 * token + 19);
    assert_eq!(balance(store, "acct_r").await, 61_728_394_506 + 41_111_110_741);

    let referrals = store.referrals("acct_r").await.unwrap();
    assert_eq!(referrals.len(), 1);
    assert_eq!(referrals[0].account_id, "acct_p");
    assert_eq!(referrals[0].email, "p@example.com");
    assert_eq!(referrals[0].joined_at_us, JAN_1);
    assert_eq!(referrals[0].payments, 3);
    assert_eq!(referrals[0].commission.units(), 61_728_394_506 + 41_111_110_741);
    assert!(store.referrals("acct_p").await.unwrap().is_empty());
    assert_balanced(store, &["acct_p", "acct_r"]).await;
}

async fn reversal_is_bounded_and_once(store: &dyn Store) {
    inviter_and_payer(store).await;
    pay(store, "acct_p", "cs_1", "pay_1", 10 * USD, "10.00").await;
    pay(store, "acct_p", "cs_2", "pay_2", 10 * USD, "10.00").await;
    assert_eq!(balance(store, "acct_p").await, 20 * USD);
    assert_eq!(balance(store, "acct_r").await, USD);

    // Bounded by max_debit (what the payer can spare beyond requests in flight).
    let outcome = store
        .reverse_payment(&reversal("pay_1", LedgerKind::Refund, 3 * USD, USD / 4))
        .await
        .unwrap();
    let ReversalOutcome::Applied(p) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (p.status, p.reversed.units(), p.commission_reversed.units()),
        (SessionStatus::Refunded, 3 * USD, USD / 4)
    );
    assert_eq!(balance(store, "acct_p").await, 17 * USD);
    assert_eq!(balance(store, "acct_r").await, USD - USD / 4);
    assert_eq!(
        store.checkout_session("acct_p", "cs_1").await.unwrap().unwrap().status,
        SessionStatus::Refunded
    );
    // Once: a second refund or a chargeback of the same payment changes nothing.
    for kind in [LedgerKind::Refund, LedgerKind::Chargeback] {
        match store
            .reverse_payment(&reversal("pay_1", kind, 100 * USD, 100 * USD))
            .await
            .unwrap()
        {
            ReversalOutcome::Duplicate(again) => assert_eq!(again, p),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(balance(store, "acct_p").await, 17 * USD);

    // Bounded by the balance: the payer spent most of it, the inviter all of it.
    let spent = store
        .adjust_balance("acct_p", Usd::from_units(-15 * USD), "spent", JAN_1 + 1_500)
        .await
        .unwrap();
    assert!(matches!(spent, AdjustOutcome::Applied { .. }), "{spent:?}");
    store
        .adjust_balance("acct_r", Usd::from_units(-(USD / 2)), "spent", JAN_1 + 1_500)
        .await
        .unwrap();
    assert_eq!(balance(store, "acct_r").await, USD / 4);
    let ReversalOutcome::Applied(p2) = store
        .reverse_payment(&reversal("pay_2", LedgerKind::Chargeback, 100 * USD, 100 * USD))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(p2.status, SessionStatus::ChargedBack);
    assert_eq!(
        p2.reversed.units(),
        2 * USD,
        "only what was left; the rest is the operator's loss"
    );
    assert_eq!(p2.commission_reversed.units(), USD / 4);
    assert_eq!(balance(store, "acct_p").await, 0);
    assert_eq!(balance(store, "acct_r").await, 0);
    assert_eq!(
        store.checkout_session("acct_p", "cs_2").await.unwrap().unwrap().status,
        SessionStatus::ChargedBack
    );
    assert_eq!(store.payment("sim", "pay_2").await.unwrap(), Some(p2));
    let p_kinds = entries(store, "acct_p").await;
    assert_eq!(
        p_kinds,
        [
            (LedgerKind::Topup, 10 * USD),
            (LedgerKind::Topup, 10 * USD),
            (LedgerKind::Refund, -3 * USD),
            (LedgerKind::Adjustment, -15 * USD),
            (LedgerKind::Chargeback, -2 * USD),
        ]
    );
    let r_kinds = entries(store, "acct_r").await;
    assert_eq!(
        r_kinds,
        [
            (LedgerKind::Commission, USD / 2),
            (LedgerKind::Commission, USD / 2),
            (LedgerKind::CommissionReversal, -(USD / 4)),
            (LedgerKind::Adjustment, -(USD / 2)),
            (LedgerKind::CommissionReversal, -(USD / 4)),
        ]
    );
    let referrals = store.referrals("acct_r").await.unwrap();
    assert_eq!((referrals[0].payments, referrals[0].commission.units()), (2, USD / 2));

    // A reversal with nothing to take posts nothing but still marks the payment.
    pay(store, "acct_p", "cs_3", "pay_3", USD, "1.00").await;
    let ReversalOutcome::Applied(p3) = store
        .reverse_payment(&reversal("pay_3", LedgerKind::Refund, 0, 0))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (p3.status, p3.reversed, p3.commission_reversed),
        (SessionStatus::Refunded, Usd::ZERO, Usd::ZERO)
    );
    assert_eq!(entries(store, "acct_p").await.len(), 6, "one topup more, no zero entry");

    assert_eq!(
        store
            .reverse_payment(&reversal("pay_none", LedgerKind::Refund, USD, USD))
            .await
            .unwrap(),
        ReversalOutcome::UnknownPayment
    );
    let mut other_provider = reversal("pay_3", LedgerKind::Refund, USD, USD);
    other_provider.provider = "stripe".into();
    assert_eq!(
        store.reverse_payment(&other_provider).await.unwrap(),
        ReversalOutcome::UnknownPayment
    );
    assert_balanced(store, &["acct_p", "acct_r"]).await;
}

async fn referral_refusals(store: &dyn Store) {
    for (id, email) in [
        ("acct_a", "a@example.com"),
        ("acct_b", "b@example.com"),
        ("acct_c", "c@example.com"),
        ("acct_d", "d@example.com"),
        ("acct_e", "e@example.com"),
    ] {
        create(store, &account(id, email, 0), &format!("mk_{id}"))
            .await
            .unwrap();
    }
    assert_eq!(
        store.set_referrer("acct_a", "acct_a").await.unwrap(),
        Err(ReferralRefusal::SelfReferral)
    );
    // b is referred by a, c by b.
    assert_eq!(store.set_referrer("acct_b", "acct_a").await.unwrap(), Ok(()));
    assert_eq!(store.set_referrer("acct_c", "acct_b").await.unwrap(), Ok(()));
    assert_eq!(
        store.account("acct_c").await.unwrap().unwrap().referred_by.as_deref(),
        Some("acct_b")
    );
    assert_eq!(
        store.set_referrer("acct_a", "acct_b").await.unwrap(),
        Err(ReferralRefusal::Loop),
        "direct"
    );
    assert_eq!(
        store.set_referrer("acct_a", "acct_c").await.unwrap(),
        Err(ReferralRefusal::Loop),
        "through b"
    );
    assert_eq!(store.account("acct_a").await.unwrap().unwrap().referred_by, None);
    assert_eq!(
        store.set_referrer("acct_b", "acct_d").await.unwrap(),
        Err(ReferralRefusal::AlreadyReferred)
    );
    assert_eq!(
        store.set_referrer("acct_b", "acct_b").await.unwrap(),
        Err(ReferralRefusal::SelfReferral),
        "self-referral is checked first"
    );
    assert_eq!(
        store.account("acct_b").await.unwrap().unwrap().referred_by.as_deref(),
        Some("acct_a"),
        "referral is forever"
    );
    // d has paid: too late to attach an inviter.
    pay(store, "acct_d", "cs_d", "pay_d", USD, "1.00").await;
    assert_eq!(
        store.set_referrer("acct_d", "acct_a").await.unwrap(),
        Err(ReferralRefusal::AlreadyPaid)
    );
    assert!(store.set_referrer("acct_e", "acct_missing").await.is_err());
    assert!(store.set_referrer("acct_missing", "acct_a").await.is_err());
    assert_eq!(store.account("acct_e").await.unwrap().unwrap().referred_by, None);
    // A refused claim leaves the account free to claim later.
    assert_eq!(store.set_referrer("acct_e", "acct_c").await.unwrap(), Ok(()));
    let referred: Vec<String> = store
        .referrals("acct_a")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.account_id)
        .collect();
    assert_eq!(referred, ["acct_b"]);
    let r = store.referrals("acct_c").await.unwrap();
    assert_eq!((r.len(), r[0].payments, r[0].commission), (1, 0, Usd::ZERO));
    assert_balanced(store, &["acct_a", "acct_d"]).await;
}

async fn adjust_balance_credits_and_debits(store: &dyn Store) {
    two_accounts(store).await;
    let credit = store
        .adjust_balance("acct_b", Usd::from_units(1_000), "goodwill", JAN_1 + 5)
        .await
        .unwrap();
    let AdjustOutcome::Applied {
        entry_id,
        balance: after,
    } = credit
    else {
        panic!("{credit:?}")
    };
    assert_eq!(after.units(), 1_500);
    assert_eq!(store.ledger_head().await.unwrap(), entry_id);
    let last = store.ledger("acct_b", None, 100).await.unwrap().pop().unwrap();
    assert_eq!(
        (
            last.id,
            last.kind,
            last.amount.units(),
            last.reason.as_deref(),
            last.created_at_us
        ),
        (entry_id, LedgerKind::Adjustment, 1_000, Some("goodwill"), JAN_1 + 5)
    );
    assert_eq!(store.account("acct_b").await.unwrap().unwrap().ledger_head, entry_id);

    let refused = store
        .adjust_balance("acct_b", Usd::from_units(-1_501), "too much", JAN_1 + 6)
        .await
        .unwrap();
    assert_eq!(
        refused,
        AdjustOutcome::InsufficientBalance {
            balance: Usd::from_units(1_500)
        }
    );
    assert_eq!(store.ledger_head().await.unwrap(), entry_id, "nothing posted");
    let debit = store
        .adjust_balance("acct_b", Usd::from_units(-1_500), "all of it", JAN_1 + 7)
        .await
        .unwrap();
    assert!(
        matches!(debit, AdjustOutcome::Applied { balance, .. } if balance == Usd::ZERO),
        "{debit:?}"
    );
    assert_eq!(
        store
            .adjust_balance("acct_none", Usd::from_units(5), "x", JAN_1)
            .await
            .unwrap(),
        AdjustOutcome::UnknownAccount
    );
    assert_eq!(balance(store, "acct_a").await, 1_000_000);
    assert_balanced(store, &["acct_a", "acct_b"]).await;
}

async fn ledger_since_skips_usage(store: &dyn Store) {
    assert_eq!(store.ledger_head().await.unwrap(), 0);
    assert!(store.ledger_since(0, 100).await.unwrap().is_empty());
    two_accounts(store).await;
    store
        .record_usage(&[record(1, "acct_a", "key_a1", "m", JAN_1, 7, 200)])
        .await
        .unwrap();
    store
        .adjust_balance("acct_b", Usd::from_units(3), "x", JAN_1)
        .await
        .unwrap();
    let head = store.ledger_head().await.unwrap();
    let since = store.ledger_since(0, 100).await.unwrap();
    assert_eq!(
        since
            .iter()
            .map(|e| (e.account_id.as_str(), e.kind, e.amount.units()))
            .collect::<Vec<_>>(),
        [
            ("acct_a", LedgerKind::Adjustment, 1_000_000),
            ("acct_b", LedgerKind::Adjustment, 500),
            ("acct_b", LedgerKind::Adjustment, 3),
        ]
    );
    assert_eq!(since.last().unwrap().id, head);
    let usage_entry = store
        .ledger("acct_a", None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == LedgerKind::Usage)
        .unwrap();
    assert!(usage_entry.id < head);
    let paged = store.ledger_since(since[0].id, 1).await.unwrap();
    assert_eq!(paged, [since[1].clone()]);
    assert!(store.ledger_since(head, 100).await.unwrap().is_empty());
    assert_balanced(store, &["acct_a", "acct_b"]).await;
}

async fn fx_rates_round_trip(store: &dyn Store) {
    assert!(store.fx_rates().await.unwrap().is_empty());
    let eur = FxRate {
        per_usd: "0.9234".parse().unwrap(),
        as_of: "2026-11-25T12:00:00Z".into(),
        markup_percent: "1.50".parse().unwrap(),
        minor_units: 2,
    };
    let jpy = FxRate {
        per_usd: "155.1234567891".parse().unwrap(),
        as_of: "2026-11-25T12:00:00Z".into(),
        markup_percent: Decimal::ZERO,
        minor_units: 0,
    };
    store.set_fx_rate("EUR", &eur).await.unwrap();
    store.set_fx_rate("JPY", &jpy).await.unwrap();
    let rates = store.fx_rates().await.unwrap();
    assert_eq!(rates.keys().collect::<Vec<_>>(), ["EUR", "JPY"]);
    assert_eq!(rates["EUR"], eur);
    assert_eq!(rates["JPY"], jpy);
    assert_eq!(rates["EUR"].markup_percent.to_string(), "1.50", "the scale is kept");
    let newer = FxRate {
        per_usd: "0.95".parse().unwrap(),
        ..eur
    };
    store.set_fx_rate("EUR", &newer).await.unwrap();
    let rates = store.fx_rates().await.unwrap();
    assert_eq!((rates.len(), &rates["EUR"]), (2, &newer), "replaced");
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
                keys_page_by_cursor,
                live_keys_per_account_are_capped,
                record_usage_is_idempotent_and_debits,
                usage_filters_and_pagination,
                usage_summary_sums_exactly,
                usage_record_is_scoped_by_account,
                receipt_keys_publish_once,
                key_spend_since_sums_one_key_from_a_time,
                ledger_pages_and_account_spend,
                account_lookups_and_listing,
                management_keys_insert_list_revoke,
                confirm_payment_credits_once,
                concurrent_confirms_credit_once,
                payment_mismatch_credits_nothing,
                commission_rounds_down,
                reversal_is_bounded_and_once,
                referral_refusals,
                adjust_balance_credits_and_debits,
                ledger_since_skips_usage,
                fx_rates_round_trip,
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
store_suite!(postgres, postgres_db());

/// A fresh PostgreSQL store on a private database (dropped with the returned guard).
async fn postgres_db() -> (PgStore, pg::Database) {
    let db = pg::Database::create().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    (store, db)
}

/// Private PostgreSQL databases for the tests, on the server named by
/// `ROUTER_ONE_TEST_POSTGRES_URL` (default: the local one CI starts).
mod pg {
    use std::sync::atomic::{AtomicU64, Ordering};

    use sqlx::{Connection, PgConnection};

    /// Where the test databases are created when `ROUTER_ONE_TEST_POSTGRES_URL` is unset.
    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// The server's URL (its database is only used to create and drop the test databases).
    pub(crate) fn server_url() -> String {
        std::env::var("ROUTER_ONE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into())
    }

    /// `url` naming database `name` instead of its own.
    fn with_database(url: &str, name: &str) -> String {
        let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
        let authority = base.find("://").map_or(0, |i| i + 3);
        let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("{}/{name}{query}", &base[..path])
    }

    /// A connection to the server, or a failure that says how to start it: a PostgreSQL test
    /// never passes without PostgreSQL.
    pub(crate) async fn admin() -> PgConnection {
        let url = server_url();
        PgConnection::connect(&url).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {url} ({e}). Start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (and \
                 `psql -h 127.0.0.1 -U postgres -c 'create database test'`), or point \
                 ROUTER_ONE_TEST_POSTGRES_URL at a server where this user may create databases."
            )
        })
    }

    /// Runs `f` to completion on a thread of its own (from `Drop`, or once per process).
    fn block_on_thread(f: impl std::future::Future<Output = ()> + Send + 'static) {
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(f);
        })
        .join();
    }

    /// Drops the test databases of processes that are gone (a killed run leaves its own).
    async fn drop_stale_databases() {
        let mut conn = admin().await;
        let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'ro\\_t\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for name in names {
            let pid = name.split('_').nth(2).unwrap_or_default();
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }

    /// A private database, `ro_t_<pid>_<n>`, dropped (connections and all) with this guard.
    pub(crate) struct Database {
        /// Its URL.
        pub(crate) url: String,
        name: String,
    }

    impl Database {
        /// Creates a new empty database.
        pub(crate) async fn create() -> Database {
            static CLEANED: std::sync::Once = std::sync::Once::new();
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let mut conn = admin().await;
            CLEANED.call_once(|| block_on_thread(drop_stale_databases()));
            let name = format!("ro_t_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            Database {
                url: with_database(&server_url(), &name),
                name,
            }
        }
    }

    impl Drop for Database {
        fn drop(&mut self) {
            let name = self.name.clone();
            block_on_thread(async move {
                let mut conn = admin().await;
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            });
        }
    }

    #[test]
    fn names_another_database() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "ro_t_1"),
            "postgres://u@h:5432/ro_t_1"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}

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
    create(&store, &account("acct_a", "a@example.com", 9), "mk_a")
        .await
        .unwrap();
    store.close().await;

    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.account("acct_a").await.unwrap().unwrap().balance.units(), 9);
    let key_for_missing_account = reopened
        .insert_key(&key("key_x", "acct_missing", "h_x", JAN_1), 10)
        .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_confirms_from_two_handles_credit_once() {
    // Eight webhook deliveries of one payment at once, on two handles of one file (two
    // gateway nodes): one credit, one commission, seven duplicates.
    let (a, dir) = sqlite_file().await;
    let b = SqliteStore::open(&dir.path().join("router-one.db")).await.unwrap();
    inviter_and_payer(&a).await;
    a.insert_checkout_session(&session("cs_1", "acct_p", quote(20 * USD, "USD", "21.00")))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8_u32)
        .map(|n| {
            let store = if n.is_multiple_of(2) { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .confirm_payment(&confirmation("pay_1", "cs_1", "21.00", "USD"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut applied = 0;
    let mut duplicates = 0;
    for task in tasks {
        match task.await.unwrap() {
            ConfirmOutcome::Applied(_) => applied += 1,
            ConfirmOutcome::Duplicate(_) => duplicates += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((applied, duplicates), (1, 7));
    assert_eq!(balance(&b, "acct_p").await, 20 * USD);
    assert_eq!(balance(&b, "acct_r").await, USD);
    assert_balanced(&a, &["acct_p", "acct_r"]).await;
}

/// A database file at `path` with only the first `migrations` applied (an older release's).
async fn database_of_an_older_release(path: &std::path::Path, migrations: usize) -> sqlx::SqlitePool {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let all = sqlx::migrate!("./migrations/sqlite");
    let older = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(all.migrations[..migrations].to_vec()),
        ..all
    };
    older.run(&pool).await.unwrap();
    pool
}

#[tokio::test]
async fn a_0001_database_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let pool = database_of_an_older_release(&path, 1).await;
    // Two ids sharing their last 8 characters, and a third.
    for (id, email) in [
        ("acct_x_0193abcd", "x@example.com"),
        ("acct_y_0193abcd", "y@example.com"),
        ("acct_0193ffff0000eeee", "z@example.com"),
    ] {
        sqlx::query("INSERT INTO accounts (id, email, balance_units, created_at_us) VALUES ($1, $2, 700, $3)")
            .bind(id)
            .bind(email)
            .bind(JAN_1)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO ledger_entries (account_id, created_at_us, kind, amount_units, reason) \
             VALUES ($1, $2, 'credit', 700, 'opening balance')",
        )
        .bind(id)
        .bind(JAN_1)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO management_keys (id, account_id, secret_hash, created_at_us) VALUES ($1, $1, $2, $3)")
            .bind(id)
            .bind(format!("mk_{id}"))
            .bind(JAN_1)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    let accounts = store.accounts(None, 10).await.unwrap();
    assert_eq!(accounts.len(), 3);
    let codes: HashSet<&str> = accounts.iter().map(|a| a.invite_code.as_str()).collect();
    assert_eq!(codes.len(), 3, "unique: {codes:?}");
    assert!(codes.contains("0000EEEE"), "derived from the id: {codes:?}");
    let nulls: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE invite_code IS NULL")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(nulls, 0);
    for a in &accounts {
        assert_eq!(
            store.account_by_invite_code(&a.invite_code).await.unwrap().unwrap().id,
            a.id
        );
        assert_eq!(a.referred_by, None);
        assert_eq!(entries(&store, &a.id).await, [(LedgerKind::Adjustment, 700)]);
        assert_eq!(
            store
                .account_by_management_key(&format!("mk_{}", a.id))
                .await
                .unwrap()
                .unwrap()
                .id,
            a.id
        );
        assert_eq!(store.management_keys(&a.id).await.unwrap()[0].name, None);
    }
    assert_balanced(&store, &["acct_x_0193abcd", "acct_y_0193abcd", "acct_0193ffff0000eeee"]).await;
    let unique = create(
        &store,
        &{
            let mut d = account("acct_d", "d@example.com", 0);
            d.invite_code = accounts[0].invite_code.clone();
            d
        },
        "mk_d",
    )
    .await;
    assert!(
        matches!(unique, Err(StoreError::Conflict(_))),
        "the invite code index is unique"
    );
}

// ---- Issue 10: no stored row stops the store; constraints refuse what the code never writes

/// `typeof` of a column of one row.
async fn type_of(store: &SqliteStore, sql: &str) -> String {
    sqlx::query_scalar(sql).fetch_one(store.pool()).await.unwrap()
}

#[tokio::test]
async fn costs_near_i64_max_never_turn_a_spend_into_a_real_or_stall_the_writer() {
    let (store, _dir) = sqlite_file().await;
    two_accounts(&store).await;
    let huge = i64::MAX / 2 + 1;
    // Separate batches: the old `spend_units + $1` overflowed in SQL and stored a REAL; one
    // batch: the old batch sum refused the batch for good (the writer retried it forever).
    store
        .record_usage(&[record(1, "acct_a", "key_a1", "m", JAN_1, huge, 200)])
        .await
        .unwrap();
    store
        .record_usage(&[
            record(2, "acct_a", "key_a1", "m", JAN_1, huge, 200),
            record(3, "acct_a", "key_a1", "m", JAN_1, huge, 200),
        ])
        .await
        .unwrap();
    assert_eq!(
        type_of(&store, "SELECT typeof(spend_units) FROM api_keys WHERE id = 'key_a1'").await,
        "integer"
    );
    assert_eq!(
        type_of(&store, "SELECT typeof(balance_units) FROM accounts WHERE id = 'acct_a'").await,
        "integer"
    );
    // Every reader still works: the key (saturated), the account, its sums and summaries.
    assert_eq!(spend(&store, "acct_a", "key_a1").await, i64::MAX);
    assert!(store.active_keys(None, 10).await.unwrap().keys.len() == 3);
    let entries = store.ledger("acct_a", None, 100).await.unwrap();
    let ledger_sum: i128 = entries.iter().map(|e| i128::from(e.amount.units())).sum();
    let balance = balance(&store, "acct_a").await;
    assert_eq!(i128::from(balance), ledger_sum, "balance = Σ ledger still");
    assert_eq!(balance, i64::MIN, "the debit saturated");
    assert_eq!(store.account_spend("acct_a").await.unwrap().units(), i64::MAX);
    assert_eq!(store.key_spend_since("key_a1", 0).await.unwrap().units(), i64::MAX);
    let summary = store.usage_summary(&filter("acct_a"), SummaryGroup::Key).await.unwrap();
    assert_eq!(summary[0].cost.units(), i64::MAX);
    assert_eq!(summary[0].requests, 3);
}

#[tokio::test]
async fn sums_are_exact_past_the_i64_range_of_their_halves() {
    let (store, _dir) = sqlite_file().await;
    two_accounts(&store).await;
    // Costs whose low halves carry: the split sum must join them exactly.
    let costs = [u32::MAX as i64, u32::MAX as i64, (1 << 40) + 3, 7];
    let records: Vec<UsageRecord> = costs
        .iter()
        .enumerate()
        .map(|(i, c)| record(i as u32, "acct_a", "key_a2", "m", JAN_1 + i as i64, *c, 200))
        .collect();
    store.record_usage(&records).await.unwrap();
    let total: i64 = costs.iter().sum();
    assert_eq!(store.key_spend_since("key_a2", JAN_1).await.unwrap().units(), total);
    assert_eq!(
        store.key_spend_since("key_a2", JAN_1 + 2).await.unwrap().units(),
        (1 << 40) + 10
    );
    assert_eq!(store.account_spend("acct_a").await.unwrap().units(), total);
    assert_eq!(store.account_spend("acct_b").await.unwrap().units(), 0);
}

#[tokio::test]
async fn constraints_refuse_what_the_code_never_writes() {
    let (store, _dir) = sqlite_file().await;
    two_accounts(&store).await;
    for (what, sql) in [
        (
            "a REAL spend",
            "UPDATE api_keys SET spend_units = 1.5e19 WHERE id = 'key_a1'",
        ),
        (
            "a negative spend",
            "UPDATE api_keys SET spend_units = -1 WHERE id = 'key_a1'",
        ),
        (
            "a negative limit",
            "UPDATE api_keys SET rpm_limit = -5 WHERE id = 'key_a1'",
        ),
        (
            "a text limit",
            "UPDATE api_keys SET tpm_limit = 'lots' WHERE id = 'key_a1'",
        ),
        (
            "an unknown period",
            "UPDATE api_keys SET budget_period = 'yearly' WHERE id = 'key_a1'",
        ),
        (
            "metadata that is not JSON",
            "UPDATE api_keys SET metadata = '{oops' WHERE id = 'key_a1'",
        ),
        (
            "metadata that is not an object",
            "UPDATE api_keys SET metadata = '[1]' WHERE id = 'key_a1'",
        ),
        (
            "models that are not an array",
            "UPDATE api_keys SET models = '{}' WHERE id = 'key_a1'",
        ),
        (
            "a name over 1,000 characters",
            "UPDATE api_keys SET name = printf('%.1001c', 'x') WHERE id = 'key_a1'",
        ),
        (
            "metadata over 64 KiB",
            "UPDATE api_keys SET metadata = json_object('k', printf('%.65536c', 'x')) WHERE id = 'key_a1'",
        ),
        (
            "a REAL balance",
            "UPDATE accounts SET balance_units = balance_units + 9.3e18 WHERE id = 'acct_a'",
        ),
    ] {
        let refused = sqlx::query(sql).execute(store.pool()).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("CHECK constraint failed")),
            "{what} must be refused: {refused:?}"
        );
    }
}

/// Writes rows no code path writes, bypassing the constraints, as a hand edit or an older
/// bug would have.
async fn corrupt(store: &SqliteStore, statements: &[&str]) {
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut *conn)
        .await
        .unwrap();
    for sql in statements {
        sqlx::query(sql).execute(&mut *conn).await.unwrap();
    }
    sqlx::query("PRAGMA ignore_check_constraints = OFF")
        .execute(&mut *conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_row_that_cannot_be_read_hides_only_itself() {
    let (store, _dir) = sqlite_file().await;
    two_accounts(&store).await;
    for k in ["key_a3", "key_a4"] {
        assert!(
            store
                .insert_key(&key(k, "acct_a", &format!("h_{k}"), JAN_1 + 5), 10)
                .await
                .unwrap()
        );
    }
    store.set_fx_rate("EUR", &fx("0.9")).await.unwrap();
    store.set_fx_rate("GBP", &fx("0.8")).await.unwrap();
    corrupt(
        &store,
        &[
            "UPDATE api_keys SET spend_units = 1.5e19 WHERE id = 'key_a2'",
            "UPDATE api_keys SET metadata = 'not json' WHERE id = 'key_a4'",
            "UPDATE fx_rates SET rate = 'garbage' WHERE currency = 'EUR'",
        ],
    )
    .await;
    let active = store.active_keys(None, 10).await.unwrap();
    assert_eq!(page_ids(&active), ["key_a1", "key_a3", "key_b1"]);
    // Paging still walks past a bad row: it ends a page, and the cursor continues after it.
    // Newest first: key_a4 (bad), key_a3, key_a2 (bad), key_a1.
    let first = store.keys("acct_a", None, 2).await.unwrap();
    assert_eq!(
        (page_ids(&first), first.next.as_deref()),
        (vec!["key_a3"], Some("key_a3"))
    );
    let second = store.keys("acct_a", first.next.as_deref(), 1).await.unwrap();
    assert_eq!((page_ids(&second), second.next.as_deref()), (vec![], Some("key_a2")));
    let third = store.keys("acct_a", second.next.as_deref(), 1).await.unwrap();
    assert_eq!((page_ids(&third), third.next.as_deref()), (vec!["key_a1"], None));
    let rates = store.fx_rates().await.unwrap();
    assert_eq!(rates.keys().collect::<Vec<_>>(), ["GBP"]);
}

fn fx(per_usd: &str) -> FxRate {
    FxRate {
        per_usd: per_usd.parse().unwrap(),
        as_of: "2026-11-25T00:00:00Z".into(),
        markup_percent: Decimal::ONE,
        minor_units: 2,
    }
}

#[tokio::test]
async fn migration_0003_repairs_reals_and_quarantines_what_it_cannot_keep() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let pool = database_of_an_older_release(&path, 2).await;
    let insert_key = |id: &str, name: String, spend: &str, metadata: &str, rpm: &str| {
        format!(
            "INSERT INTO api_keys (id, account_id, secret_hash, hint, name, budget_period, rpm_limit, metadata, \
             created_at_us, spend_units) VALUES ('{id}', 'acct_a', 'h_{id}', 'sk-rk-…', '{name}', 'none', {rpm}, \
             '{metadata}', {JAN_1}, {spend})"
        )
    };
    for sql in [
        format!(
            "INSERT INTO accounts (id, email, balance_units, created_at_us, invite_code) \
             VALUES ('acct_a', 'a@example.com', -9.3e18, {JAN_1}, 'INV-A')"
        ),
        format!(
            "INSERT INTO accounts (id, email, balance_units, created_at_us, invite_code, referred_by) \
             VALUES ('acct_b', 'b@example.com', 5, {JAN_1}, 'INV-B', 'acct_a')"
        ),
        format!(
            "INSERT INTO ledger_entries (account_id, created_at_us, kind, amount_units) VALUES ('acct_b', {JAN_1}, 'adjustment', 5)"
        ),
        insert_key("key_real", "fine".into(), "1.5e19", "{}", "NULL"),
        insert_key("key_long", "x".repeat(300), "7", r#"{"customer":"c_1"}"#, "60"),
        insert_key("key_huge", "x".repeat(5_000), "0", "{}", "NULL"),
        insert_key("key_json", "bad".into(), "0", "{oops", "NULL"),
        insert_key("key_neg", "neg".into(), "0", "{}", "-1"),
    ] {
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    // A REAL left by the old overflow is cast back, saturated; a name longer than the API
    // allows (but under the backstop) is kept.
    let real = store.key("acct_a", "key_real").await.unwrap().unwrap();
    assert_eq!(real.spend.units(), i64::MAX);
    let long = store.key("acct_a", "key_long").await.unwrap().unwrap();
    assert_eq!((long.spend.units(), long.settings.rpm_limit), (7, Some(60)));
    assert_eq!(
        store.account("acct_a").await.unwrap().unwrap().balance.units(),
        i64::MIN
    );
    // What no repair can make valid is moved aside, whole.
    let page = store.keys("acct_a", None, 10).await.unwrap();
    let mut kept = page_ids(&page);
    kept.sort();
    assert_eq!(kept, ["key_long", "key_real"]);
    let mut quarantined: Vec<(String, i64)> = sqlx::query_as("SELECT id, length(name) FROM quarantined_api_keys")
        .fetch_all(store.pool())
        .await
        .unwrap();
    quarantined.sort();
    assert_eq!(
        quarantined,
        [
            ("key_huge".into(), 5_000),
            ("key_json".into(), 3),
            ("key_neg".into(), 3)
        ]
    );
    // The rebuilt tables keep their keys, indexes and references.
    let broken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pragma_foreign_key_check")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(broken, 0);
    assert_eq!(
        store
            .account_by_invite_code("INV-B")
            .await
            .unwrap()
            .unwrap()
            .referred_by
            .as_deref(),
        Some("acct_a")
    );
    assert_eq!(store.referrals("acct_a").await.unwrap().len(), 1);
    let (ledger_sum, _) = ledger(&store, "acct_b").await;
    assert_eq!(ledger_sum, 5);
    let dup = create(&store, &account("acct_c", "c@example.com", 0), "mk_c").await;
    assert!(dup.is_ok(), "{dup:?}");
    let taken = {
        let mut c = account("acct_d", "d@example.com", 0);
        c.invite_code = "INV-A".into();
        create(&store, &c, "mk_d").await
    };
    assert!(
        matches!(taken, Err(StoreError::Conflict(_))),
        "invite codes stay unique"
    );
    assert!(
        store
            .insert_key(&key("key_new", "acct_missing", "h_new", JAN_1), 10)
            .await
            .is_err(),
        "foreign keys are enforced again"
    );
}

#[tokio::test]
async fn model_names_from_outside_are_stored_bounded() {
    let (store, _dir) = sqlite_file().await;
    two_accounts(&store).await;
    let mut huge = record(1, "acct_a", "key_a1", &"é".repeat(10_000), JAN_1, 5, 200);
    huge.served_model = Some("m".repeat(1 << 20));
    store.record_usage(&[huge.clone()]).await.unwrap();
    let stored = store.usage_record("acct_a", &huge.request_id).await.unwrap().unwrap();
    assert_eq!(stored.requested_model, "é".repeat(256));
    assert_eq!(stored.served_model, Some("m".repeat(256)));
    assert_eq!(stored.cost.units(), 5, "the rest of the record is kept as is");
}

// ---- PostgreSQL-only checks ------------------------------------------------------------------

/// Budget leases and the node registry (`ClusterStore`), in `store_suite/cluster.rs`.
#[path = "store_suite/cluster.rs"]
mod cluster;

/// Holds the row `id` of `table` locked in a transaction of its own until the returned
/// transaction ends: whatever then needs that row waits, holding everything it took before.
async fn hold_row(store: &PgStore, table: &str, id: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query(&format!("SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Waits until `n` sessions of the store's database wait for a lock.
async fn until_waiting_on_locks(store: &PgStore, n: i64) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{n} sessions never waited for a lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_usage_batch_that_commits_late_is_on_the_next_page() {
    let (store, _db) = postgres_db().await;
    two_accounts(&store).await;
    store
        .record_usage(&[record(1, "acct_a", "key_a1", "m", JAN_1, 1, 200)])
        .await
        .unwrap();
    // A batch takes the usage lock, inserts its record (drawing its seq), then waits for
    // key_a1's row…
    let blocker = hold_row(&store, "api_keys", "key_a1").await;
    let late = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .record_usage(&[record(2, "acct_a", "key_a1", "m", JAN_1, 1, 200)])
                .await
        }
    });
    until_waiting_on_locks(&store, 1).await;
    // …so a later batch, whose rows are free, waits for the usage lock and cannot draw its
    // seq before the first commits.
    let later = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .record_usage(&[record(3, "acct_a", "key_a2", "m", JAN_1, 1, 200)])
                .await
        }
    });
    until_waiting_on_locks(&store, 2).await;
    let mut f = UsageFilter {
        limit: 10,
        ..filter("acct_a")
    };
    let first = store.usage(&f).await.unwrap();
    assert_eq!(ids(&first), ["req_00001"], "neither open batch is listed");
    assert!(!later.is_finished(), "the later batch waits for the first");
    f.after = Some("req_00001".into());
    drop(blocker);
    late.await.unwrap().unwrap();
    later.await.unwrap().unwrap();
    let next = store.usage(&f).await.unwrap();
    assert_eq!(
        ids(&next),
        ["req_00002", "req_00003"],
        "the late record is not skipped: numbers follow commit order"
    );
    f.after = Some("req_00003".into());
    assert!(store.usage(&f).await.unwrap().is_empty());
    assert_eq!(balance(&store, "acct_a").await, 1_000_000 - 3);
}

/// A session left idle inside a transaction (a node whose network vanished mid-batch) is ended
/// by PostgreSQL, so the usage lock and row locks it held come free.
#[tokio::test]
async fn every_session_has_an_idle_in_transaction_timeout() {
    let (store, _db) = postgres_db().await;
    let timeout: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(timeout, router_one_store::postgres::IDLE_IN_TRANSACTION_TIMEOUT);
}

/// A transaction left open elsewhere on the server — a backup, an idle session — holds back
/// no listing: usage records are listed the moment their batch commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_transaction_elsewhere_holds_back_no_listing() {
    let (store, _db) = postgres_db().await;
    let (other, _other_db) = postgres_db().await;
    two_accounts(&store).await;
    // Open transactions with transaction ids, in this database and in another one.
    let mut here = store.pool().begin().await.unwrap();
    let mut there = other.pool().begin().await.unwrap();
    for tx in [&mut here, &mut there] {
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut **tx)
            .await
            .unwrap();
    }
    store
        .record_usage(&[record(1, "acct_a", "key_a1", "m", JAN_1, 1, 200)])
        .await
        .unwrap();
    let page = store.usage(&filter("acct_a")).await.unwrap();
    assert_eq!(
        ids(&page),
        ["req_00001"],
        "listed while the other transactions are open"
    );
    here.rollback().await.unwrap();
    there.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ledger_entry_that_commits_late_is_not_skipped_by_the_follower() {
    let (store, _db) = postgres_db().await;
    two_accounts(&store).await;
    let head = store.ledger_head().await.unwrap();
    // An adjustment of acct_a takes the ledger lock, then waits for acct_a's row…
    let blocker = hold_row(&store, "accounts", "acct_a").await;
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.adjust_balance("acct_a", Usd::from_units(5), "first", JAN_1).await }
    });
    until_waiting_on_locks(&store, 1).await;
    // …so an adjustment of acct_b, whose row is free, waits for the ledger lock and cannot
    // draw its id before the first commits.
    let second = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .adjust_balance("acct_b", Usd::from_units(7), "second", JAN_1)
                .await
        }
    });
    until_waiting_on_locks(&store, 2).await;
    // Usage debits take no ledger lock: the usage writer is not held up by postings.
    store
        .record_usage(&[record(1, "acct_b", "key_b1", "m", JAN_1, 1, 200)])
        .await
        .unwrap();
    assert!(!second.is_finished(), "the second posting waits for the first");
    assert_eq!(
        store.ledger_head().await.unwrap(),
        head,
        "usage debits are not the head"
    );
    assert!(store.ledger_since(head, 100).await.unwrap().is_empty());
    drop(blocker);
    let AdjustOutcome::Applied { entry_id: first_id, .. } = first.await.unwrap().unwrap() else {
        panic!()
    };
    let AdjustOutcome::Applied {
        entry_id: second_id, ..
    } = second.await.unwrap().unwrap()
    else {
        panic!()
    };
    assert!(first_id < second_id, "ids follow the lock's order");
    let since = store.ledger_since(head, 100).await.unwrap();
    assert_eq!(
        since.iter().map(|e| (e.id, e.amount.units())).collect::<Vec<_>>(),
        [(first_id, 5), (second_id, 7)]
    );
    assert_eq!(store.ledger_head().await.unwrap(), second_id);
    assert_eq!(store.account("acct_b").await.unwrap().unwrap().ledger_head, second_id);
    assert_balanced(&store, &["acct_a", "acct_b"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_confirms_on_two_pg_handles_credit_once() {
    let (a, db) = postgres_db().await;
    let b = PgStore::connect(&db.url).await.unwrap();
    inviter_and_payer(&a).await;
    a.insert_checkout_session(&session("cs_1", "acct_p", quote(20 * USD, "USD", "21.00")))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8_u32)
        .map(|n| {
            let store = if n.is_multiple_of(2) { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .confirm_payment(&confirmation("pay_1", "cs_1", "21.00", "USD"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut outcomes = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            ConfirmOutcome::Applied(_) => outcomes.0 += 1,
            ConfirmOutcome::Duplicate(_) => outcomes.1 += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(outcomes, (1, 7));
    assert_eq!(balance(&b, "acct_p").await, 20 * USD);
    assert_eq!(balance(&b, "acct_r").await, USD);
    assert_balanced(&a, &["acct_p", "acct_r"]).await;
}

/// The partition holding each record of `acct_a`, by request id.
async fn partitions_of(store: &PgStore) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT request_id, tableoid::regclass::text FROM usage_records WHERE account_id = 'acct_a' \
         ORDER BY request_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn usage_lands_in_monthly_partitions_and_replays_change_nothing() {
    let (store, _db) = postgres_db().await;
    two_accounts(&store).await;
    let now = router_one_core::ids::now_us();
    let month = |us: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap();
        format!("usage_records_{:04}{:02}", t.year(), u8::from(t.month()))
    };
    let next_month = now + 31 * DAY;
    let far_future = 4_102_444_800_000_000; // 2100-01-01
    let batch = [
        record(1, "acct_a", "key_a1", "m", now, 10, 200),
        record(2, "acct_a", "key_a1", "m", next_month, 20, 200),
        record(3, "acct_a", "key_a2", "m", JAN_1, 40, 200),
        record(4, "acct_a", "key_a2", "m", far_future, 80, 200),
    ];
    store.record_usage(&batch).await.unwrap();
    let expected = |jan_2024: &str| {
        vec![
            ("req_00001".to_string(), month(now)),
            ("req_00002".to_string(), month(next_month)),
            ("req_00003".to_string(), jan_2024.to_string()),
            ("req_00004".to_string(), "usage_records_default".to_string()),
        ]
    };
    assert_eq!(partitions_of(&store).await, expected("usage_records_default"));
    let ledger_entries = store.ledger("acct_a", None, 100).await.unwrap().len();

    // A replay (the journal after a crash) inserts nothing and debits nothing.
    store.record_usage(&batch).await.unwrap();
    store.record_usage(&batch[1..3]).await.unwrap();
    assert_eq!(balance(&store, "acct_a").await, 1_000_000 - 150);
    assert_eq!(spend(&store, "acct_a", "key_a1").await, 30);
    assert_eq!(spend(&store, "acct_a", "key_a2").await, 120);
    assert_eq!(store.ledger("acct_a", None, 100).await.unwrap().len(), ledger_entries);
    assert_eq!(store.usage(&filter("acct_a")).await.unwrap().len(), 4);

    // A month's partition created later takes its records out of DEFAULT; twice is a no-op.
    store.ensure_partitions(JAN_1).await.unwrap();
    store.ensure_partitions(JAN_1).await.unwrap();
    assert_eq!(partitions_of(&store).await, expected("usage_records_202401"));
    assert_eq!(
        ids(&store.usage(&filter("acct_a")).await.unwrap()),
        ids(&batch),
        "same records, same order"
    );
    store.record_usage(&batch).await.unwrap();
    assert_eq!(balance(&store, "acct_a").await, 1_000_000 - 150, "still a replay");
    assert_eq!(store.account_spend("acct_a").await.unwrap().units(), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_connecting_at_once_share_one_schema() {
    let db = pg::Database::create().await;
    let (a, b) = tokio::join!(PgStore::connect(&db.url), PgStore::connect(&db.url));
    let (a, b) = (a.unwrap(), b.unwrap());
    create(&a, &account("acct_a", "a@example.com", 9), "mk_a")
        .await
        .unwrap();
    a.close().await;
    let again = PgStore::connect(&db.url).await.unwrap();
    assert_eq!(balance(&again, "acct_a").await, 9);
    assert_eq!(balance(&b, "acct_a").await, 9);
    let migrations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(again.pool())
        .await
        .unwrap();
    let files = sqlx::migrate!("./migrations/postgres").migrations.len();
    assert_eq!(migrations, i64::try_from(files).unwrap(), "each applied once");
}

#[tokio::test]
async fn costs_near_i64_max_saturate_on_postgres_too() {
    let (store, _db) = postgres_db().await;
    two_accounts(&store).await;
    let huge = i64::MAX / 2 + 1;
    for batch in [
        vec![record(1, "acct_a", "key_a1", "m", JAN_1, huge, 200)],
        vec![
            record(2, "acct_a", "key_a1", "m", JAN_1, huge, 200),
            record(3, "acct_a", "key_a1", "m", JAN_1, huge, 200),
        ],
    ] {
        store.record_usage(&batch).await.unwrap();
    }
    assert_eq!(spend(&store, "acct_a", "key_a1").await, i64::MAX);
    assert_eq!(balance(&store, "acct_a").await, i64::MIN, "the debit saturated");
    let entries = store.ledger("acct_a", None, 100).await.unwrap();
    let ledger_sum: i128 = entries.iter().map(|e| i128::from(e.amount.units())).sum();
    assert_eq!(ledger_sum, i128::from(i64::MIN), "balance = Σ ledger still");
    assert_eq!(store.account_spend("acct_a").await.unwrap().units(), i64::MAX);
    let summary = store.usage_summary(&filter("acct_a"), SummaryGroup::Key).await.unwrap();
    assert_eq!((summary[0].cost.units(), summary[0].requests), (i64::MAX, 3));
}
