//! What a usage batch stores and debits, the same on every backend: a record's values as
//! stored (clamped with an error in the log, never refused: a refused record would stall the
//! usage writer and every record behind it, promise 5), and the totals of the records a batch
//! really inserted, added in Rust with saturating arithmetic so no sum can fail in SQL.

use std::collections::{BTreeMap, HashSet};

use router_one_core::usage::{MAX_MODEL_CHARS, UsageRecord, kept_model_name};

/// What a batch's newly inserted records debit: each account (one `usage` ledger entry per
/// account per batch) and each key's lifetime spend. Maps, so rows are locked and written in
/// a fixed order (account id, then key), which keeps concurrent batches from deadlocking.
#[derive(Default)]
pub(crate) struct BatchDebits<'a> {
    /// Per account id.
    pub(crate) accounts: BTreeMap<&'a str, AccountDebit<'a>>,
    /// Per (account id, key id): Σ cost, saturated.
    pub(crate) keys: BTreeMap<(&'a str, &'a str), i64>,
}

impl<'a> BatchDebits<'a> {
    /// Adds the records of `records` whose request id is in `inserted`, removing each id as it
    /// goes: a request id repeated within the batch was inserted (and is debited) once.
    pub(crate) fn add_inserted(&mut self, records: &'a [UsageRecord], inserted: &mut HashSet<String>) {
        let records: Vec<&'a UsageRecord> = records
            .iter()
            .filter(|r| inserted.remove(r.request_id.as_str()))
            .collect();
        self.add_records(&records);
    }

    /// Adds `records` (each newly inserted, once).
    pub(crate) fn add_records(&mut self, records: &[&'a UsageRecord]) {
        for record in records {
            self.accounts.entry(&record.account_id).or_default().add(record);
            let spend = self.keys.entry((&record.account_id, &record.key_id)).or_default();
            *spend = clamped_sum(*spend, stored_cost(record), "a key's batch spend");
        }
    }
}

/// What one batch debits from one account.
#[derive(Default)]
pub(crate) struct AccountDebit<'a> {
    /// Σ cost of the account's newly inserted records, units (saturated).
    pub(crate) cost: i64,
    /// How many records.
    pub(crate) requests: u64,
    /// The smallest request id among them.
    pub(crate) first: Option<&'a str>,
    /// The largest.
    pub(crate) last: Option<&'a str>,
}

impl<'a> AccountDebit<'a> {
    /// Adds one newly inserted record.
    pub(crate) fn add(&mut self, record: &'a UsageRecord) {
        self.cost = clamped_sum(self.cost, stored_cost(record), "an account's batch debit");
        self.requests += 1;
        let id = record.request_id.as_str();
        self.first = Some(self.first.map_or(id, |f| f.min(id)));
        self.last = Some(self.last.map_or(id, |l| l.max(id)));
    }

    /// The `usage` ledger entry's reference: the range of request ids it debits.
    pub(crate) fn reference(&self) -> String {
        format!("{}..{}", self.first.unwrap_or_default(), self.last.unwrap_or_default())
    }

    /// The `usage` ledger entry's reason: how many requests it debits.
    pub(crate) fn reason(&self) -> String {
        format!("{} requests", self.requests)
    }
}

/// `a + b`, saturated (with an error in the log) instead of overflowing: only an absurd cost
/// can get here, and refusing it would stall the writer.
pub(crate) fn clamped_sum(a: i64, b: i64, what: &str) -> i64 {
    a.checked_add(b).unwrap_or_else(|| {
        tracing::error!(what, a, b, "usage amount out of range; saturated");
        a.saturating_add(b)
    })
}

/// The cost a record is stored and debited with: never negative (pricing never makes one;
/// a negative cost would credit the account).
pub(crate) fn stored_cost(record: &UsageRecord) -> i64 {
    let units = record.cost.units();
    if units < 0 {
        tracing::error!(request_id = %record.request_id, units, "negative usage cost recorded as 0");
        return 0;
    }
    units
}

/// `text` cut to [`MAX_MODEL_CHARS`] characters (loudly): a backstop, as every model name is
/// checked long before it gets here.
pub(crate) fn bounded_text<'a>(text: &'a str, what: &str, request_id: &str) -> &'a str {
    let kept = kept_model_name(text);
    if kept.len() < text.len() {
        tracing::error!(
            request_id,
            what,
            chars = text.chars().count(),
            "usage record model name cut to {MAX_MODEL_CHARS} characters"
        );
    }
    kept
}

/// A count as a BIGINT, saturating: a usage record is never refused for an absurd count,
/// since one refused record would stall the writer's whole batch.
pub(crate) fn saturating(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
