//! The storage interface. SQLite and PostgreSQL implement it in `router-one-store`; nothing
//! above this trait knows which one it talks to. It is never called on the request hot path
//! except through the batched usage writer.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::billing::{
    AdjustOutcome, CheckoutSession, ConfirmOutcome, LedgerKind, ManagementKey, Payment, PaymentConfirmation,
    PaymentReversal, Referral, ReferralRefusal, ReversalOutcome,
};
use crate::checkout::FxRate;
use crate::money::Usd;
use crate::usage::UsageRecord;

/// A storage failure. Never shown to a client beyond "internal error".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. the email is taken).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// An account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// `acct_…`.
    pub id: String,
    /// The owner's email.
    pub email: String,
    /// Prepaid balance (Σ ledger entries).
    pub balance: Usd,
    /// Creation time, µs since the epoch.
    pub created_at_us: i64,
    /// The code others sign up with to be referred by this account (unique).
    pub invite_code: String,
    /// The account that referred this one, forever.
    pub referred_by: Option<String>,
    /// The id of the account's last non-`usage` ledger entry when `balance` was read (0: none):
    /// the non-`usage` entries after it are not in `balance` yet, so the ledger follower applies
    /// exactly those ([`Store::ledger_since`] never returns `usage` entries, and `usage` entries
    /// are left out here because on PostgreSQL they do not commit in id order). Ignored when
    /// creating an account.
    pub ledger_head: i64,
}

/// One change of an account's balance (the ledger is append-only: balance = Σ entries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Increasing id, the ledger's order and its page cursor.
    pub id: i64,
    /// The account whose balance it changes.
    pub account_id: String,
    /// When, µs since the epoch.
    pub created_at_us: i64,
    /// Why.
    pub kind: LedgerKind,
    /// Signed amount: credits positive, debits negative.
    pub amount: Usd,
    /// What it refers to (a payment id, …).
    pub reference: Option<String>,
    /// Why (an operator's reason, …).
    pub reason: Option<String>,
}

/// How a key's `max_spend` resets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// A lifetime budget.
    #[default]
    None,
    /// Resets at 00:00 UTC.
    Daily,
    /// Resets Monday 00:00 UTC.
    Weekly,
    /// Resets on the 1st, 00:00 UTC.
    Monthly,
}

impl BudgetPeriod {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::None => "none",
            BudgetPeriod::Daily => "daily",
            BudgetPeriod::Weekly => "weekly",
            BudgetPeriod::Monthly => "monthly",
        }
    }

    /// The period containing `now_us` as `[start, end)` in µs since the epoch, UTC (`None`: a
    /// lifetime budget has no period).
    pub fn window(self, now_us: i64) -> Option<(i64, i64)> {
        use time::{Duration, OffsetDateTime, Time};
        let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_us) * 1000).ok()?;
        let midnight = now.replace_time(Time::MIDNIGHT);
        let (start, end) = match self {
            BudgetPeriod::None => return None,
            BudgetPeriod::Daily => (midnight, midnight + Duration::DAY),
            BudgetPeriod::Weekly => {
                let start = midnight - Duration::days(i64::from(now.weekday().number_days_from_monday()));
                (start, start + Duration::WEEK)
            }
            BudgetPeriod::Monthly => {
                let start = midnight.replace_day(1).ok()?;
                let end = match start.month() {
                    time::Month::December => start
                        .replace_year(start.year() + 1)
                        .ok()?
                        .replace_month(time::Month::January),
                    m => start.replace_month(m.next()),
                }
                .ok()?;
                (start, end)
            }
        };
        let us = |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1000).ok();
        Some((us(start)?, us(end)?))
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<BudgetPeriod> {
        Some(match s {
            "none" => BudgetPeriod::None,
            "daily" => BudgetPeriod::Daily,
            "weekly" => BudgetPeriod::Weekly,
            "monthly" => BudgetPeriod::Monthly,
            _ => return None,
        })
    }
}

/// What a key does with a request whose `max_tokens` what is left on the key or its account
/// cannot cover, while a smaller limit could be (issue 12: never a 402, which relays read as a
/// dead channel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OversizedMaxTokens {
    /// Serve it with the largest output limit that can be paid for (at least 16 tokens), and send
    /// that limit upstream.
    #[default]
    Clamp,
    /// Refuse it with a 400 naming the largest `max_tokens` that can be paid for.
    Refuse,
}

impl OversizedMaxTokens {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OversizedMaxTokens::Clamp => "clamp",
            OversizedMaxTokens::Refuse => "refuse",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<OversizedMaxTokens> {
        match s {
            "clamp" => Some(OversizedMaxTokens::Clamp),
            "refuse" => Some(OversizedMaxTokens::Refuse),
            _ => None,
        }
    }
}

/// The settings of an inference key that its owner controls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySettings {
    /// A label.
    pub name: Option<String>,
    /// Spend cap within `budget_period`.
    pub max_spend: Option<Usd>,
    /// When `max_spend` resets.
    pub budget_period: BudgetPeriod,
    /// Requests per minute.
    pub rpm_limit: Option<u32>,
    /// Tokens per minute.
    pub tpm_limit: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrency: Option<u32>,
    /// Allowed model ids; `None` allows all.
    pub models: Option<Vec<String>>,
    /// Expiry, µs since the epoch.
    pub expires_at_us: Option<i64>,
    /// The builder's own data (a customer id, say).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// What a `max_tokens` that cannot be paid for, while a smaller one could, gets.
    #[serde(default)]
    pub on_oversized_max_tokens: OversizedMaxTokens,
    /// Streams end with the usage chunk even when the client did not ask for it
    /// (`stream_options.include_usage`), for relays that never ask.
    #[serde(default)]
    pub always_include_usage: bool,
    /// Whether responses carry the `x-router-one-*` headers (a reseller may not want its
    /// upstream named); `x-request-id` is always sent.
    #[serde(default = "yes")]
    pub router_headers: bool,
}

fn yes() -> bool {
    true
}

impl Default for KeySettings {
    fn default() -> KeySettings {
        KeySettings {
            name: None,
            max_spend: None,
            budget_period: BudgetPeriod::None,
            rpm_limit: None,
            tpm_limit: None,
            max_concurrency: None,
            models: None,
            expires_at_us: None,
            metadata: serde_json::Map::new(),
            on_oversized_max_tokens: OversizedMaxTokens::Clamp,
            always_include_usage: false,
            router_headers: true,
        }
    }
}

impl KeySettings {
    /// Whether the key may use `model` (no allow-list: every model).
    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }
}

/// A stored inference key (never the secret itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// `key_…`.
    pub id: String,
    /// The owning account.
    pub account_id: String,
    /// SHA-256 of the secret.
    pub secret_hash: String,
    /// A non-secret prefix for listings.
    pub hint: String,
    /// Owner-controlled settings.
    pub settings: KeySettings,
    /// Creation time, µs.
    pub created_at_us: i64,
    /// Revocation time, µs.
    pub revoked_at_us: Option<i64>,
    /// Lifetime spend recorded so far.
    pub spend: Usd,
}

/// One page of inference keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys of the page. A stored row that cannot be read is left out (and logged).
    pub keys: Vec<ApiKey>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// Which usage records to list.
#[derive(Clone, Debug, Default)]
pub struct UsageFilter {
    /// Always set: an account only sees its own records.
    pub account_id: String,
    /// Only this key.
    pub key_id: Option<String>,
    /// Only this requested or served model.
    pub model: Option<String>,
    /// Only these statuses: `Some(true)` successes (2xx), `Some(false)` failures.
    pub success: Option<bool>,
    /// Only this exact HTTP status.
    pub status: Option<u16>,
    /// Created at or after, µs.
    pub from_us: Option<i64>,
    /// Created before, µs.
    pub to_us: Option<i64>,
    /// Cursor: records committed after the record with this request id (the last one of the
    /// previous page). Commit order, not id order: a long request commits late and must not be
    /// skipped by a reader who paged past its id.
    pub after: Option<String>,
    /// Newest first (a console's table); the cursor then pages back in commit order.
    pub newest_first: bool,
    /// Page size.
    pub limit: u32,
}

/// How to group a usage summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SummaryGroup {
    /// Per key.
    Key,
    /// Per requested model.
    Model,
    /// Per UTC day.
    Day,
}

/// One row of a usage summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// The key id, model id or day (`YYYY-MM-DD`).
    pub group: String,
    /// Requests counted.
    pub requests: u64,
    /// Σ prompt tokens.
    pub prompt_tokens: u64,
    /// Σ cached prompt tokens.
    pub cached_tokens: u64,
    /// Σ completion tokens.
    pub completion_tokens: u64,
    /// Σ reasoning tokens.
    pub reasoning_tokens: u64,
    /// Σ cost.
    pub cost: Usd,
}

/// Durable state: accounts, keys, usage. Implemented for SQLite and PostgreSQL.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account with its first management key and, if `account.balance` is not zero, an
    /// opening `adjustment` entry. `password_hash` is an argon2 PHC string (`None`: no login).
    /// A taken email or invite code is a [`StoreError::Conflict`]; `account.referred_by` must
    /// name an existing account.
    async fn create_account(
        &self,
        account: &Account,
        password_hash: Option<&str>,
        management_key: &ManagementKey,
    ) -> StoreResult<()>;
    /// An account and its password hash, by email (stored lower-case; pass it lower-case).
    async fn account_by_email(&self, email: &str) -> StoreResult<Option<(Account, Option<String>)>>;
    /// The account with this invite code.
    async fn account_by_invite_code(&self, code: &str) -> StoreResult<Option<Account>>;
    /// Accounts in id order after `after`, at most `limit` (the operator's listing).
    async fn accounts(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<Account>>;
    /// Attaches `referrer_id` as the account's inviter, forever, in one transaction that refuses
    /// self-referral, loops, a second referrer and an account that has already paid.
    async fn set_referrer(&self, account_id: &str, referrer_id: &str) -> StoreResult<Result<(), ReferralRefusal>>;
    /// The accounts `account_id` referred, oldest first, with their commissions.
    async fn referrals(&self, account_id: &str) -> StoreResult<Vec<Referral>>;
    /// Stores a new management key.
    async fn insert_management_key(&self, key: &ManagementKey) -> StoreResult<()>;
    /// An account's management keys, revoked ones included, newest first.
    async fn management_keys(&self, account_id: &str) -> StoreResult<Vec<ManagementKey>>;
    /// Revokes a management key (keeping the first revocation time); `None` if the account has
    /// no such key.
    async fn revoke_management_key(
        &self,
        account_id: &str,
        key_id: &str,
        at_us: i64,
    ) -> StoreResult<Option<ManagementKey>>;
    /// Posts an operator's credit (`amount` > 0) or debit (< 0) as an `adjustment` entry with
    /// its reason. A debit larger than the committed balance is refused.
    async fn adjust_balance(
        &self,
        account_id: &str,
        amount: Usd,
        reason: &str,
        at_us: i64,
    ) -> StoreResult<AdjustOutcome>;
    /// Every account's ledger entries after entry `after`, oldest first, at most `limit`, except
    /// `usage` debits (which the gateway settled in memory before posting them): how a running
    /// gateway learns of credits and debits posted by webhooks, other nodes or the operator.
    /// These entries commit in id order, so a follower that pages by id never skips one that
    /// committed late.
    async fn ledger_since(&self, after: i64, limit: u32) -> StoreResult<Vec<LedgerEntry>>;
    /// The id of the last non-`usage` ledger entry of any account (0: none): where a new
    /// follower of [`Store::ledger_since`] starts.
    async fn ledger_head(&self) -> StoreResult<i64>;
    /// Stores a new checkout session.
    async fn insert_checkout_session(&self, session: &CheckoutSession) -> StoreResult<()>;
    /// One checkout session of an account.
    async fn checkout_session(&self, account_id: &str, id: &str) -> StoreResult<Option<CheckoutSession>>;
    /// Applies a successful payment, once per `(provider, payment_id)` whatever the retries, in
    /// one transaction: checks the charge against the session's quote, marks the session paid,
    /// credits the token line (`topup`) and, if the account was referred, credits the inviter
    /// `commission_percent` of the token line (`commission`, rounded down to the unit).
    async fn confirm_payment(&self, confirmation: &PaymentConfirmation) -> StoreResult<ConfirmOutcome>;
    /// A confirmed payment.
    async fn payment(&self, provider: &str, payment_id: &str) -> StoreResult<Option<Payment>>;
    /// Reverses a confirmed payment once, in one transaction: takes back its credit (`refund` or
    /// `chargeback`) and its commission (`commission_reversal`), each bounded as
    /// [`PaymentReversal`] says, and marks the payment and its session.
    async fn reverse_payment(&self, reversal: &PaymentReversal) -> StoreResult<ReversalOutcome>;
    /// Sets (or replaces) a currency's FX rate; these override the config file's.
    async fn set_fx_rate(&self, currency: &str, rate: &FxRate) -> StoreResult<()>;
    /// The FX rates set with [`Store::set_fx_rate`], by currency.
    async fn fx_rates(&self) -> StoreResult<std::collections::BTreeMap<String, FxRate>>;
    /// Publishes a receipt-signing public key (its JWK, as JSON text) under its key id, so the
    /// JWKS of every node sharing this store names it; a key already published stays as it was.
    async fn publish_receipt_key(&self, kid: &str, jwk: &str) -> StoreResult<()>;
    /// Every published receipt-signing public key (JWK JSON texts), oldest first.
    async fn receipt_keys(&self) -> StoreResult<Vec<String>>;
    /// The account owning this (unrevoked) management key.
    async fn account_by_management_key(&self, hash: &str) -> StoreResult<Option<Account>>;
    /// One account.
    async fn account(&self, id: &str) -> StoreResult<Option<Account>>;
    /// Stores a new inference key, unless its account already has `max_live_keys` unrevoked
    /// keys: then nothing is stored and the answer is `false` (one statement, so concurrent
    /// creations cannot overshoot the cap).
    async fn insert_key(&self, key: &ApiKey, max_live_keys: u32) -> StoreResult<bool>;
    /// An inference key by the hash of its secret, revoked or not.
    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>>;
    /// Unrevoked keys in id order after key `after`, at most `limit` (to warm the in-memory
    /// index at start, a page at a time). A row that cannot be read is left out with an error
    /// in the log (ids only): that key is not served, every other one is.
    async fn active_keys(&self, after: Option<&str>, limit: u32) -> StoreResult<KeyPage>;
    /// An account's keys, newest first, after key `after` (none: from the newest), at most
    /// `limit`; a row that cannot be read is left out, as in [`Store::active_keys`]. A cursor
    /// naming no key of the account yields an empty page.
    async fn keys(&self, account_id: &str, after: Option<&str>, limit: u32) -> StoreResult<KeyPage>;
    /// One key of an account.
    async fn key(&self, account_id: &str, key_id: &str) -> StoreResult<Option<ApiKey>>;
    /// Replaces a key's settings; `None` if the account has no such key.
    async fn update_key(&self, account_id: &str, key_id: &str, settings: &KeySettings) -> StoreResult<Option<ApiKey>>;
    /// Revokes a key; `None` if the account has no such key.
    async fn revoke_key(&self, account_id: &str, key_id: &str, at_us: i64) -> StoreResult<Option<ApiKey>>;
    /// Writes usage records in one transaction and debits the accounts and keys. Idempotent by
    /// request id: a record already stored is skipped and not debited twice (journal replay).
    async fn record_usage(&self, batch: &[UsageRecord]) -> StoreResult<()>;
    /// Records matching `filter`, in commit order.
    async fn usage(&self, filter: &UsageFilter) -> StoreResult<Vec<UsageRecord>>;
    /// Σ of records matching `filter` (cursor and limit ignored), grouped.
    async fn usage_summary(&self, filter: &UsageFilter, group: SummaryGroup) -> StoreResult<Vec<SummaryRow>>;
    /// One record of an account.
    async fn usage_record(&self, account_id: &str, request_id: &str) -> StoreResult<Option<UsageRecord>>;
    /// Whether any account has a record of this request id (a "pending" answer is only for an
    /// id nobody has recorded yet).
    async fn request_recorded(&self, request_id: &str) -> StoreResult<bool>;
    /// Σ cost of a key's usage records created at or after `since_us` (its spend in the current
    /// budget period; read when the key is loaded, never per request).
    async fn key_spend_since(&self, key_id: &str, since_us: i64) -> StoreResult<Usd>;
    /// Σ cost of an account's usage records (its committed spend).
    async fn account_spend(&self, account_id: &str) -> StoreResult<Usd>;
    /// An account's ledger entries after entry `after` (oldest first), at most `limit`.
    async fn ledger(&self, account_id: &str, after: Option<i64>, limit: u32) -> StoreResult<Vec<LedgerEntry>>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn us(rfc3339: &str) -> i64 {
        let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
        i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap()
    }

    #[test]
    fn periods_are_utc_calendar_windows() {
        let now = us("2026-11-25T13:45:10.5Z"); // a Wednesday
        assert_eq!(BudgetPeriod::None.window(now), None);
        assert_eq!(
            BudgetPeriod::Daily.window(now),
            Some((us("2026-11-25T00:00:00Z"), us("2026-11-26T00:00:00Z")))
        );
        assert_eq!(
            BudgetPeriod::Weekly.window(now),
            Some((us("2026-11-23T00:00:00Z"), us("2026-11-30T00:00:00Z")))
        );
        assert_eq!(
            BudgetPeriod::Monthly.window(now),
            Some((us("2026-11-01T00:00:00Z"), us("2026-12-01T00:00:00Z")))
        );
        assert_eq!(
            BudgetPeriod::Monthly.window(us("2026-12-31T23:59:59Z")),
            Some((us("2026-12-01T00:00:00Z"), us("2027-01-01T00:00:00Z")))
        );
        // The boundary belongs to the new period.
        assert_eq!(
            BudgetPeriod::Daily.window(us("2026-11-26T00:00:00Z")).unwrap().0,
            us("2026-11-26T00:00:00Z")
        );
        assert_eq!(
            BudgetPeriod::Weekly.window(us("2026-11-30T00:00:00Z")).unwrap().0,
            us("2026-11-30T00:00:00Z")
        );
    }
}
