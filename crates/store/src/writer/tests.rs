//! Crash-safety tests of the usage writer: nothing lost, nothing counted twice, across
//! simulated crashes, a real `kill -9` of a child process, database failures, truncated
//! journals and segment rotation under concurrent appenders.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::AtomicUsize;

use async_trait::async_trait;
use router_one_core::billing::{
    AdjustOutcome, CheckoutSession, ConfirmOutcome, ManagementKey, Payment, PaymentConfirmation, PaymentReversal,
    Referral, ReferralRefusal, ReversalOutcome,
};
use router_one_core::checkout::FxRate;
use router_one_core::money::Usd;
use router_one_core::pricing::TokenUsage;
use router_one_core::store::{
    Account, ApiKey, KeyPage, KeySettings, LedgerEntry, SummaryGroup, SummaryRow, UsageFilter,
};
use router_one_core::usage::Endpoint;

use super::*;
use crate::SqliteStore;

const OPENING_BALANCE: i64 = 1_000_000_000_000;

fn record(n: u32) -> UsageRecord {
    UsageRecord {
        request_id: format!("req_{n:06}"),
        account_id: "acct_a".into(),
        key_id: "key_a".into(),
        created_at_us: 1_704_067_200_000_000 + i64::from(n),
        endpoint: Endpoint::ChatCompletions,
        requested_model: "gpt-4o".into(),
        served_model: Some("gpt-4o-2024-08-06".into()),
        provider: "openai".into(),
        usage: TokenUsage {
            prompt_tokens: 10,
            cached_tokens: 0,
            cache_write_tokens: 0,
            completion_tokens: 5,
            reasoning_tokens: 0,
        },
        cost: Usd::from_units(1_000 + i64::from(n)),
        latency_us: 1_000,
        upstream_sent_us: Some(10),
        ttft_us: Some(100),
        status: 200,
        error_code: None,
        streamed: true,
        lease: None,
        failed_attempts: Vec::new(),
        receipt: None,
        refusal: None,
    }
}

/// Σ cost of records `range`.
fn cost_of(range: std::ops::Range<u32>) -> i64 {
    range.map(|n| record(n).cost.units()).sum()
}

/// A database file in `dir` with account `acct_a` and key `key_a`.
async fn seeded_store(dir: &Path) -> Arc<SqliteStore> {
    let store = SqliteStore::open(&dir.join("router-one.db")).await.unwrap();
    let account = Account {
        id: "acct_a".into(),
        email: "a@example.com".into(),
        balance: Usd::from_units(OPENING_BALANCE),
        created_at_us: 0,
        invite_code: "INVITE_A".into(),
        referred_by: None,
        ledger_head: 0,
    };
    let management_key = ManagementKey {
        id: "mkey_a".into(),
        account_id: "acct_a".into(),
        secret_hash: "mk_a".into(),
        hint: "sk-rm-a".into(),
        name: None,
        created_at_us: 0,
        revoked_at_us: None,
    };
    store.create_account(&account, None, &management_key).await.unwrap();
    let key = ApiKey {
        id: "key_a".into(),
        account_id: "acct_a".into(),
        secret_hash: "h_a".into(),
        hint: "sk-rk-a".into(),
        settings: KeySettings::default(),
        created_at_us: 0,
        revoked_at_us: None,
        spend: Usd::ZERO,
    };
    assert!(store.insert_key(&key, 10).await.unwrap());
    Arc::new(store)
}

/// Asserts the store holds exactly records `0..n`, each once, debited once.
async fn assert_exactly_once(store: &SqliteStore, n: u32) {
    let (rows, distinct): (i64, i64) = sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage_records")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!((rows, distinct), (i64::from(n), i64::from(n)));
    for i in [0, n / 2, n.saturating_sub(1)].into_iter().filter(|i| *i < n) {
        assert_eq!(
            store.usage_record("acct_a", &record(i).request_id).await.unwrap(),
            Some(record(i))
        );
    }
    let balance = store.account("acct_a").await.unwrap().unwrap().balance.units();
    assert_eq!(balance, OPENING_BALANCE - cost_of(0..n), "debited exactly once");
    let ledger: i64 = sqlx::query_scalar("SELECT SUM(amount_units) FROM ledger_entries WHERE account_id = 'acct_a'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(ledger, balance, "balance = Σ ledger");
    let spend = store.key("acct_a", "key_a").await.unwrap().unwrap().spend.units();
    assert_eq!(spend, cost_of(0..n));
}

/// The journal segments in `dir`: (number, size in bytes).
fn segments(dir: &Path) -> Vec<(u64, u64)> {
    journal::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(seq, path)| (seq, std::fs::metadata(path).unwrap().len()))
        .collect()
}

/// How a [`TestStore`] treats `record_usage`.
enum Mode {
    /// Commits the first `n` batches, then never returns (the process "dies" mid-commit).
    StallAfter(AtomicUsize),
    /// Fails the first `n` batches, then commits.
    FailTimes(AtomicUsize),
}

/// The SQLite store with a misbehaving `record_usage`.
struct TestStore {
    inner: Arc<SqliteStore>,
    mode: Mode,
    /// Set once a `record_usage` call hangs for good.
    stalled: std::sync::atomic::AtomicBool,
}

impl TestStore {
    /// Waits until the writer using this store is stuck in a commit that never ends.
    async fn wait_until_stalled(&self) {
        while !self.stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Decrements `n` if positive; `true` if it was.
fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl Store for TestStore {
    async fn create_account(&self, a: &Account, p: Option<&str>, k: &ManagementKey) -> StoreResult<()> {
        self.inner.create_account(a, p, k).await
    }
    async fn account_by_email(&self, e: &str) -> StoreResult<Option<(Account, Option<String>)>> {
        self.inner.account_by_email(e).await
    }
    async fn account_by_invite_code(&self, c: &str) -> StoreResult<Option<Account>> {
        self.inner.account_by_invite_code(c).await
    }
    async fn accounts(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<Account>> {
        self.inner.accounts(after, limit).await
    }
    async fn set_referrer(&self, a: &str, r: &str) -> StoreResult<Result<(), ReferralRefusal>> {
        self.inner.set_referrer(a, r).await
    }
    async fn referrals(&self, a: &str) -> StoreResult<Vec<Referral>> {
        self.inner.referrals(a).await
    }
    async fn insert_management_key(&self, k: &ManagementKey) -> StoreResult<()> {
        self.inner.insert_management_key(k).await
    }
    async fn management_keys(&self, a: &str) -> StoreResult<Vec<ManagementKey>> {
        self.inner.management_keys(a).await
    }
    async fn revoke_management_key(&self, a: &str, k: &str, at: i64) -> StoreResult<Option<ManagementKey>> {
        self.inner.revoke_management_key(a, k, at).await
    }
    async fn adjust_balance(&self, a: &str, amount: Usd, reason: &str, at: i64) -> StoreResult<AdjustOutcome> {
        self.inner.adjust_balance(a, amount, reason, at).await
    }
    async fn ledger_since(&self, after: i64, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        self.inner.ledger_since(after, limit).await
    }
    async fn ledger_head(&self) -> StoreResult<i64> {
        self.inner.ledger_head().await
    }
    async fn insert_checkout_session(&self, s: &CheckoutSession) -> StoreResult<()> {
        self.inner.insert_checkout_session(s).await
    }
    async fn checkout_session(&self, a: &str, id: &str) -> StoreResult<Option<CheckoutSession>> {
        self.inner.checkout_session(a, id).await
    }
    async fn confirm_payment(&self, c: &PaymentConfirmation) -> StoreResult<ConfirmOutcome> {
        self.inner.confirm_payment(c).await
    }
    async fn payment(&self, p: &str, id: &str) -> StoreResult<Option<Payment>> {
        self.inner.payment(p, id).await
    }
    async fn reverse_payment(&self, r: &PaymentReversal) -> StoreResult<ReversalOutcome> {
        self.inner.reverse_payment(r).await
    }
    async fn set_fx_rate(&self, c: &str, r: &FxRate) -> StoreResult<()> {
        self.inner.set_fx_rate(c, r).await
    }
    async fn fx_rates(&self) -> StoreResult<std::collections::BTreeMap<String, FxRate>> {
        self.inner.fx_rates().await
    }
    async fn publish_receipt_key(&self, kid: &str, jwk: &str) -> StoreResult<()> {
        self.inner.publish_receipt_key(kid, jwk).await
    }
    async fn receipt_keys(&self) -> StoreResult<Vec<String>> {
        self.inner.receipt_keys().await
    }
    async fn account_by_management_key(&self, h: &str) -> StoreResult<Option<Account>> {
        self.inner.account_by_management_key(h).await
    }
    async fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        self.inner.account(id).await
    }
    async fn insert_key(&self, k: &ApiKey, max_live: u32) -> StoreResult<bool> {
        self.inner.insert_key(k, max_live).await
    }
    async fn key_by_hash(&self, h: &str) -> StoreResult<Option<ApiKey>> {
        self.inner.key_by_hash(h).await
    }
    async fn active_keys(&self, after: Option<&str>, limit: u32) -> StoreResult<KeyPage> {
        self.inner.active_keys(after, limit).await
    }
    async fn keys(&self, a: &str, after: Option<&str>, limit: u32) -> StoreResult<KeyPage> {
        self.inner.keys(a, after, limit).await
    }
    async fn key(&self, a: &str, k: &str) -> StoreResult<Option<ApiKey>> {
        self.inner.key(a, k).await
    }
    async fn update_key(&self, a: &str, k: &str, s: &KeySettings) -> StoreResult<Option<ApiKey>> {
        self.inner.update_key(a, k, s).await
    }
    async fn revoke_key(&self, a: &str, k: &str, at: i64) -> StoreResult<Option<ApiKey>> {
        self.inner.revoke_key(a, k, at).await
    }
    async fn record_usage(&self, batch: &[UsageRecord]) -> StoreResult<()> {
        match &self.mode {
            Mode::StallAfter(n) if !take_one(n) => {
                self.stalled.store(true, Ordering::SeqCst);
                std::future::pending().await
            }
            Mode::FailTimes(n) if take_one(n) => Err(StoreError::Database("injected failure".into())),
            _ => self.inner.record_usage(batch).await,
        }
    }
    async fn usage(&self, f: &UsageFilter) -> StoreResult<Vec<UsageRecord>> {
        self.inner.usage(f).await
    }
    async fn usage_summary(&self, f: &UsageFilter, g: SummaryGroup) -> StoreResult<Vec<SummaryRow>> {
        self.inner.usage_summary(f, g).await
    }
    async fn usage_record(&self, a: &str, r: &str) -> StoreResult<Option<UsageRecord>> {
        self.inner.usage_record(a, r).await
    }
    async fn request_recorded(&self, r: &str) -> StoreResult<bool> {
        self.inner.request_recorded(r).await
    }
    async fn key_spend_since(&self, k: &str, since: i64) -> StoreResult<Usd> {
        self.inner.key_spend_since(k, since).await
    }
    async fn account_spend(&self, a: &str) -> StoreResult<Usd> {
        self.inner.account_spend(a).await
    }
    async fn ledger(&self, a: &str, after: Option<i64>, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        self.inner.ledger(a, after, limit).await
    }
}

fn test_store(inner: &Arc<SqliteStore>, mode: Mode) -> Arc<TestStore> {
    Arc::new(TestStore {
        inner: Arc::clone(inner),
        mode,
        stalled: Default::default(),
    })
}

#[tokio::test]
async fn the_commit_observer_sees_each_committed_record_once_and_no_replayed_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let journal_dir = tmp.path().join("journal");
    // An earlier run that died with a record in its journal only: replayed at start, not observed.
    let stalled = test_store(&store, Mode::StallAfter(AtomicUsize::new(0)));
    let crashed = UsageWriter::start(&journal_dir, stalled.clone(), 16).await.unwrap();
    crashed.record(record(10_000)).unwrap();
    stalled.wait_until_stalled().await;
    drop(crashed);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let observer: CommitObserver = {
        let seen = seen.clone();
        Arc::new(move |records: &[UsageRecord]| {
            seen.lock()
                .unwrap()
                .extend(records.iter().map(|r| r.request_id.clone()));
        })
    };
    let writer = UsageWriter::start_observed(&journal_dir, store.clone(), 16, observer)
        .await
        .unwrap();
    for n in 0..100 {
        writer.record(record(n)).unwrap();
    }
    writer.flush().await;
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let mut want: Vec<String> = (0..100).map(|n| record(n).request_id).collect();
    want.sort();
    assert_eq!(seen, want);
    // The earlier run's record was replayed into the store, just not shown to the observer.
    assert!(
        store
            .usage_record("acct_a", &record(10_000).request_id)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn flush_commits_everything_and_empties_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let journal_dir = tmp.path().join("journal");
    let writer = UsageWriter::start(&journal_dir, store.clone(), 64).await.unwrap();
    for n in 0..300 {
        writer.record(record(n)).unwrap();
    }
    writer.flush().await;
    assert_eq!(writer.pending(), 0);
    assert_exactly_once(&store, 300).await;
    assert_eq!(
        segments(&journal_dir),
        [(1, 0)],
        "the written segment was rotated out and deleted"
    );
    writer.flush().await;
    assert_eq!(segments(&journal_dir), [(1, 0)], "an empty segment is not rotated");
}

/// A backlog of full batches is committed at once: the writer lingers (a timer) only while its
/// batch is not full. The clock is paused and this test never lets the runtime idle, so no timer
/// can fire: were a full batch kept waiting for the linger, the records would never commit.
#[tokio::test]
async fn a_backlog_of_full_batches_commits_without_lingering() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let writer = UsageWriter::start(&tmp.path().join("journal"), store.clone(), 10)
        .await
        .unwrap();
    tokio::time::pause();
    for n in 0..50 {
        writer.record(record(n)).unwrap();
    }
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    while writer.pending() > 0 && std::time::Instant::now() < give_up {
        tokio::task::yield_now().await;
    }
    assert_eq!(writer.pending(), 0, "a full batch waited for the linger");
    tokio::time::resume();
    assert_exactly_once(&store, 50).await;
}

#[tokio::test]
async fn records_survive_a_crash_before_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let journal_dir = tmp.path().join("journal");

    // The database never commits: the process "dies" with everything in the journal only.
    let stalled = test_store(&store, Mode::StallAfter(AtomicUsize::new(0)));
    let crashed = UsageWriter::start(&journal_dir, stalled.clone(), 16).await.unwrap();
    for n in 0..100 {
        crashed.record(record(n)).unwrap();
    }
    stalled.wait_until_stalled().await;
    assert_eq!(crashed.pending(), 100);
    drop(crashed);
    assert_exactly_once(&store, 0).await;

    let restarted = UsageWriter::start(&journal_dir, store.clone(), 16).await.unwrap();
    assert_exactly_once(&store, 100).await;
    assert_eq!(restarted.pending(), 0);
    assert_eq!(segments(&journal_dir), [(1, 0)], "replayed segments are deleted");
    drop(restarted);

    // A second restart finds nothing more to do.
    let again = UsageWriter::start(&journal_dir, store.clone(), 16).await.unwrap();
    again.flush().await;
    assert_exactly_once(&store, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_mid_stream_with_rotations_replays_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let journal_dir = tmp.path().join("journal");

    // Some batches commit (and segments rotate), then the database hangs for good.
    let flaky = test_store(&store, Mode::StallAfter(AtomicUsize::new(5)));
    let crashed = UsageWriter::start_with_segment_bytes(&journal_dir, flaky.clone(), 8, 2_048, None)
        .await
        .unwrap();
    for n in 0..400 {
        crashed.record(record(n)).unwrap();
        // Bursts: a segment is rotated out while some of its records are still uncommitted.
        if n % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    flaky.wait_until_stalled().await;
    assert!(crashed.pending() > 0);
    assert!(
        segments(&journal_dir).len() > 1,
        "a retired segment is kept: {:?}",
        segments(&journal_dir)
    );
    drop(crashed);

    let _restarted = UsageWriter::start(&journal_dir, store.clone(), 50).await.unwrap();
    assert_exactly_once(&store, 400).await;
}

#[tokio::test]
async fn replay_skips_committed_records_and_a_truncated_last_line() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let journal_dir = tmp.path().join("journal");
    store
        .record_usage(&(0..20).map(record).collect::<Vec<_>>())
        .await
        .unwrap();

    // A crash after records 0..20 committed but before their segment was deleted, with 20..30
    // not committed and the process killed while writing record 30.
    std::fs::create_dir_all(&journal_dir).unwrap();
    let mut bytes = Vec::new();
    for n in 0..30 {
        bytes.extend(journal::encode(&record(n)).unwrap());
    }
    let torn = journal::encode(&record(30)).unwrap();
    bytes.extend(&torn[..torn.len() - 7]);
    std::fs::write(journal_dir.join("usage-7.journal"), &bytes).unwrap();
    std::fs::write(
        journal_dir.join("usage-3.journal"),
        journal::encode(&record(5)).unwrap(),
    )
    .unwrap();

    let writer = UsageWriter::start(&journal_dir, store.clone(), 8).await.unwrap();
    assert_exactly_once(&store, 30).await;
    assert_eq!(
        segments(&journal_dir),
        [(8, 0)],
        "numbering continues after the replayed segments"
    );

    writer.record(record(30)).unwrap();
    writer.flush().await;
    assert_exactly_once(&store, 31).await;
}

#[tokio::test]
async fn a_failing_database_is_retried_without_losing_records() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let journal_dir = tmp.path().join("journal");
    let failing = test_store(&store, Mode::FailTimes(AtomicUsize::new(3)));
    let writer = UsageWriter::start(&journal_dir, failing.clone(), 10).await.unwrap();
    for n in 0..25 {
        writer.record(record(n)).unwrap();
    }
    writer.flush().await;
    assert_eq!(writer.pending(), 0);
    assert_exactly_once(&store, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_concurrent_appenders_loses_and_duplicates_nothing() {
    const THREADS: u32 = 8;
    const PER_THREAD: u32 = 400;
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let journal_dir = tmp.path().join("journal");
    // A one-byte limit: every commit that follows an append rotates the segment.
    let writer = UsageWriter::start_with_segment_bytes(&journal_dir, store.clone(), 16, 1, None)
        .await
        .unwrap();

    let flusher = {
        let writer = writer.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                writer.flush().await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let appenders: Vec<_> = (0..THREADS)
        .map(|t| {
            let writer = writer.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    writer.record(record(t * PER_THREAD + i)).unwrap();
                    // Keep the appends among the commits (and so among the rotations) however
                    // slow the machine is: never run far ahead of the database.
                    while writer.pending() > 64 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();
    for a in appenders {
        a.join().unwrap();
    }
    flusher.await.unwrap();
    writer.flush().await;
    assert_eq!(writer.pending(), 0);
    assert_exactly_once(&store, THREADS * PER_THREAD).await;
    let left = segments(&journal_dir);
    assert_eq!(left.len(), 1, "every retired segment was deleted: {left:?}");
    assert_eq!(left[0].1, 0);
    assert!(left[0].0 > 10, "segments rotated many times: {left:?}");
}

#[tokio::test]
async fn a_dropped_writer_shuts_down_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let journal_dir = tmp.path().join("journal");
    let writer = UsageWriter::start(&journal_dir, store.clone(), 10).await.unwrap();
    for n in 0..15 {
        writer.record(record(n)).unwrap();
    }
    drop(writer);
    for _ in 0..200 {
        if segments(&journal_dir).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(segments(&journal_dir), [], "everything committed, the journal is gone");
    assert_exactly_once(&store, 15).await;
}

/// Set in the child process of [`killed_process_loses_no_record`]: the directory to use.
const CHILD_DIR: &str = "ROUTER_ONE_STORE_KILL_TEST_DIR";
/// Records the child writes before it is killed.
const CHILD_RECORDS: u32 = 2_000;

/// The child half of [`killed_process_loses_no_record`]; does nothing when run on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_records_then_waits_to_be_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let dir = PathBuf::from(dir);
    let store = Arc::new(SqliteStore::open(&dir.join("router-one.db")).await.unwrap());
    let writer = UsageWriter::start(&dir.join("journal"), store, 7).await.unwrap();
    for n in 0..CHILD_RECORDS {
        writer.record(record(n)).unwrap();
    }
    // Every `record` returned: a client could have had each response. Now die at any moment.
    let mut out = std::io::stdout();
    writeln!(out, "RECORDED pending={}", writer.pending()).unwrap();
    out.flush().unwrap();
    std::future::pending::<()>().await;
}

/// Kills the child process if the test fails before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one test of this binary as a child process with `env` set to `dir`, waits until it
/// prints `marker`, then kills it with SIGKILL (no destructor, no flush, perhaps mid-commit).
fn run_child_then_kill(test: &str, env: &str, dir: &Path, marker: &str) {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let seen = lines.find(|l| l.as_ref().is_ok_and(|l| l.contains(marker)));
    assert!(
        seen.is_some(),
        "the child never printed {marker} (see its output above)"
    );
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

#[tokio::test]
async fn killed_process_loses_no_record() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    run_child_then_kill(
        "writer::tests::child_records_then_waits_to_be_killed",
        CHILD_DIR,
        tmp.path(),
        "RECORDED",
    );

    let _restarted = UsageWriter::start(&tmp.path().join("journal"), store.clone(), 100)
        .await
        .unwrap();
    assert_exactly_once(&store, CHILD_RECORDS).await;
}

/// Waits (without a time bound that could fail a slow machine, but not forever) until the
/// writer says records are durable again.
async fn wait_until_durable(writer: &UsageWriter) {
    for _ in 0..3_000 {
        if writer.is_durable() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("records never became durable again");
}

#[tokio::test]
async fn a_torn_append_is_reappended_and_swallows_no_other_record() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let journal_dir = tmp.path().join("journal");
    // The database never commits: after the "crash", every record must come from the journal.
    let stalled = test_store(&store, Mode::StallAfter(AtomicUsize::new(0)));
    let writer = UsageWriter::start_with_segment_bytes(&journal_dir, stalled.clone(), 16, 1 << 30, None)
        .await
        .unwrap();
    for n in 0..5 {
        writer.record(record(n)).unwrap();
    }
    assert!(writer.is_durable());

    // The disk fills up in the middle of record 5; record 6 finds no space at all.
    let half = journal::encode(&record(5)).unwrap().len() as u64 / 2;
    writer.shared.current.load().space.store(half, Ordering::SeqCst);
    assert!(writer.record(record(5)).is_err());
    assert!(
        !writer.is_durable(),
        "a failed append makes records not durable at once"
    );
    assert!(writer.record(record(6)).is_err());
    // Probes find no space either.
    tokio::time::sleep(PROBE_INTERVAL * 3).await;
    assert!(!writer.is_durable());

    // Space returns: the probe re-appends 5 and 6, and records are durable again.
    writer.shared.current.load().space.store(u64::MAX, Ordering::SeqCst);
    wait_until_durable(&writer).await;
    for n in 7..10 {
        writer.record(record(n)).unwrap();
    }
    stalled.wait_until_stalled().await;
    drop(writer);

    let _restarted = UsageWriter::start(&journal_dir, store.clone(), 16).await.unwrap();
    assert_exactly_once(&store, 10).await;
}

/// Set in the child process of [`a_full_disk_recovers_without_a_restart`]: the directory.
const FULL_DISK_DIR: &str = "ROUTER_ONE_STORE_FULL_DISK_DIR";
/// Records the child writes before, while and after its disk is full.
const BEFORE: u32 = 20;
const DURING: u32 = 40;
const AFTER: u32 = 20;

/// The child half of [`a_full_disk_recovers_without_a_restart`]; does nothing on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_fills_the_disk_then_frees_it() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Some(dir) = std::env::var_os(FULL_DISK_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    // With a handler for SIGXFSZ, a write past the file-size limit fails (EFBIG, or short) as
    // on a full disk, instead of killing the process.
    let xfsz = rustix::process::Signal::XFSZ.as_raw();
    let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(xfsz)).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.join("router-one.db")).await.unwrap());
    let writer = UsageWriter::start(&dir.join("journal"), store, 8).await.unwrap();
    for n in 0..BEFORE {
        writer.record(record(n)).unwrap();
    }
    writer.flush().await;

    // The disk fills: no file may grow past 1 KiB (the fresh journal segment has room for
    // a record or two, the database and its WAL for nothing).
    let roomy = getrlimit(Resource::Fsize);
    setrlimit(
        Resource::Fsize,
        Rlimit {
            current: Some(1_024),
            maximum: roomy.maximum,
        },
    )
    .unwrap();
    let failed = (BEFORE..BEFORE + DURING)
        .filter(|n| writer.record(record(*n)).is_err())
        .count();
    assert!(failed > 30, "the journal filled up ({failed} appends failed)");
    assert!(!writer.is_durable());
    // Let the writer fail some database commits too.
    tokio::time::sleep(PROBE_INTERVAL * 5).await;
    assert!(!writer.is_durable(), "nothing frees space by itself");

    // Space returns: the same writer recovers by itself.
    setrlimit(Resource::Fsize, roomy).unwrap();
    wait_until_durable(&writer).await;
    for n in BEFORE + DURING..BEFORE + DURING + AFTER {
        writer.record(record(n)).unwrap();
    }
    writer.flush().await;
    let mut out = std::io::stdout();
    writeln!(out, "RECOVERED pending={}", writer.pending()).unwrap();
    out.flush().unwrap();
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn a_full_disk_recovers_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    // The child's writer must recover by itself; whatever it holds in memory dies with it.
    run_child_then_kill(
        "writer::tests::child_fills_the_disk_then_frees_it",
        FULL_DISK_DIR,
        tmp.path(),
        "RECOVERED",
    );

    // Every record is committed exactly once — those whose append failed included — and
    // replaying what the journal holds adds nothing.
    let _restarted = UsageWriter::start(&tmp.path().join("journal"), store.clone(), 100)
        .await
        .unwrap();
    assert_exactly_once(&store, BEFORE + DURING + AFTER).await;
}
