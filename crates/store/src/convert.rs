//! Conversions between database rows and the core types, shared by every SQL backend: rows
//! hold `i64` (money as 10⁻¹⁰ USD units, times as µs), JSON as text; the core types hold
//! unsigned counts, [`Usd`] and parsed values. A value that does not fit is a
//! [`StoreError::Database`], never a panic.

use router_one_core::billing::{CheckoutSession, LedgerKind, ManagementKey, Payment, SessionStatus};
use router_one_core::checkout::Quote;
use router_one_core::money::Usd;
use router_one_core::pricing::TokenUsage;
use router_one_core::store::{
    Account, ApiKey, BudgetPeriod, KeyPage, KeySettings, LedgerEntry, OversizedMaxTokens, StoreError, StoreResult,
};
use router_one_core::usage::{Endpoint, ReceiptParts, RecordReceipt, UsageRecord};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sqlx::{ColumnIndex, Decode, FromRow, Row, Type};

/// Microseconds in one UTC day.
pub(crate) const DAY_US: i64 = 86_400_000_000;

/// Maps a database error, turning a uniqueness violation into [`StoreError::Conflict`].
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(d.message().to_owned()),
        _ => StoreError::Database(e.to_string()),
    }
}

/// A value that does not fit its column or its type.
fn out_of_range(what: &str) -> StoreError {
    StoreError::Database(format!("{what} out of range"))
}

/// An unsigned count as a BIGINT.
fn to_i64<T: TryInto<i64>>(value: T, what: &str) -> StoreResult<i64> {
    value.try_into().map_err(|_| out_of_range(what))
}

/// A BIGINT as an unsigned count.
pub(crate) fn from_i64<T: TryFrom<i64>>(value: i64, what: &str) -> StoreResult<T> {
    T::try_from(value).map_err(|_| out_of_range(what))
}

/// An optional BIGINT as an optional unsigned count.
fn from_opt_i64<T: TryFrom<i64>>(value: Option<i64>, what: &str) -> StoreResult<Option<T>> {
    value.map(|v| from_i64(v, what)).transpose()
}

/// An optional unsigned count as an optional BIGINT.
fn to_opt_i64<T: TryInto<i64>>(value: Option<T>, what: &str) -> StoreResult<Option<i64>> {
    value.map(|v| to_i64(v, what)).transpose()
}

/// The `YYYY-MM-DD` name of the UTC day with this index (days since 1970-01-01).
pub(crate) fn day_name(day: i64) -> StoreResult<String> {
    let secs = day.checked_mul(86_400).ok_or_else(|| out_of_range("day"))?;
    let date = time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| out_of_range("day"))?
        .date();
    Ok(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

/// An `api_keys` row as stored.
#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    id: String,
    account_id: String,
    secret_hash: String,
    hint: String,
    name: Option<String>,
    max_spend_units: Option<i64>,
    budget_period: String,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    max_concurrency: Option<i64>,
    models: Option<String>,
    expires_at_us: Option<i64>,
    metadata: String,
    created_at_us: i64,
    revoked_at_us: Option<i64>,
    spend_units: i64,
    on_oversized_max_tokens: String,
    always_include_usage: bool,
    router_headers: bool,
}

/// The `api_keys` columns, in [`KeyRow`] order.
pub(crate) const KEY_COLUMNS: &str = "id, account_id, secret_hash, hint, name, max_spend_units, budget_period, \
     rpm_limit, tpm_limit, max_concurrency, models, expires_at_us, metadata, created_at_us, revoked_at_us, spend_units, \
     on_oversized_max_tokens, always_include_usage, router_headers";

impl TryFrom<KeyRow> for ApiKey {
    type Error = StoreError;
    fn try_from(row: KeyRow) -> StoreResult<ApiKey> {
        let budget_period = BudgetPeriod::parse(&row.budget_period)
            .ok_or_else(|| StoreError::Database(format!("unknown budget period `{}`", row.budget_period)))?;
        let models = row
            .models
            .as_deref()
            .map(serde_json::from_str::<Vec<String>>)
            .transpose()
            .map_err(json_err)?;
        let metadata = serde_json::from_str(&row.metadata).map_err(json_err)?;
        let on_oversized_max_tokens = OversizedMaxTokens::parse(&row.on_oversized_max_tokens).ok_or_else(|| {
            StoreError::Database(format!(
                "unknown on_oversized_max_tokens `{}`",
                row.on_oversized_max_tokens
            ))
        })?;
        Ok(ApiKey {
            id: row.id,
            account_id: row.account_id,
            secret_hash: row.secret_hash,
            hint: row.hint,
            settings: KeySettings {
                name: row.name,
                max_spend: row.max_spend_units.map(Usd::from_units),
                budget_period,
                rpm_limit: from_opt_i64(row.rpm_limit, "rpm_limit")?,
                tpm_limit: from_opt_i64(row.tpm_limit, "tpm_limit")?,
                max_concurrency: from_opt_i64(row.max_concurrency, "max_concurrency")?,
                models,
                expires_at_us: row.expires_at_us,
                metadata,
                on_oversized_max_tokens,
                always_include_usage: row.always_include_usage,
                router_headers: row.router_headers,
            },
            created_at_us: row.created_at_us,
            revoked_at_us: row.revoked_at_us,
            spend: Usd::from_units(row.spend_units),
        })
    }
}

/// The page of keys in `rows` (read with one row more than `limit`, which says whether another
/// page follows). A row that cannot be read is left out with an error naming its ids — never
/// its secret hash — so one bad row hides one key, never the others.
pub(crate) fn key_page<R>(rows: &[R], limit: u32) -> KeyPage
where
    R: Row,
    for<'r> KeyRow: FromRow<'r, R>,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    let page = rows.get(..limit as usize).unwrap_or(rows);
    let keys = page
        .iter()
        .filter_map(|row| match KeyRow::from_row(row).map_err(db_err).and_then(ApiKey::try_from) {
            Ok(key) => Some(key),
            Err(e) => {
                let id: Option<String> = row.try_get("id").ok();
                let account_id: Option<String> = row.try_get("account_id").ok();
                tracing::error!(?id, ?account_id, error = %e, "stored inference key cannot be read; it is not served");
                None
            }
        })
        .collect();
    let next = if rows.len() > page.len() {
        page.last().and_then(|row| row.try_get("id").ok())
    } else {
        None
    };
    KeyPage { keys, next }
}

/// A stored JSON column that does not parse.
fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Database(format!("corrupt JSON column: {e}"))
}

/// A key's settings as the values of their columns.
pub(crate) struct SettingsColumns {
    pub(crate) name: Option<String>,
    pub(crate) max_spend_units: Option<i64>,
    pub(crate) budget_period: &'static str,
    pub(crate) rpm_limit: Option<i64>,
    pub(crate) tpm_limit: Option<i64>,
    pub(crate) max_concurrency: Option<i64>,
    pub(crate) models: Option<String>,
    pub(crate) expires_at_us: Option<i64>,
    pub(crate) metadata: String,
    pub(crate) on_oversized_max_tokens: &'static str,
    pub(crate) always_include_usage: bool,
    pub(crate) router_headers: bool,
}

impl SettingsColumns {
    /// Encodes `settings` for storage.
    pub(crate) fn new(settings: &KeySettings) -> StoreResult<SettingsColumns> {
        let models = settings
            .models
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(json_err)?;
        Ok(SettingsColumns {
            name: settings.name.clone(),
            max_spend_units: settings.max_spend.map(Usd::units),
            budget_period: settings.budget_period.as_str(),
            rpm_limit: to_opt_i64(settings.rpm_limit, "rpm_limit")?,
            tpm_limit: to_opt_i64(settings.tpm_limit, "tpm_limit")?,
            max_concurrency: to_opt_i64(settings.max_concurrency, "max_concurrency")?,
            models,
            expires_at_us: settings.expires_at_us,
            metadata: serde_json::to_string(&settings.metadata).map_err(json_err)?,
            on_oversized_max_tokens: settings.on_oversized_max_tokens.as_str(),
            always_include_usage: settings.always_include_usage,
            router_headers: settings.router_headers,
        })
    }
}

/// A `usage_records` row as stored.
#[derive(sqlx::FromRow)]
pub(crate) struct UsageRow {
    request_id: String,
    account_id: String,
    key_id: String,
    created_at_us: i64,
    endpoint: String,
    requested_model: String,
    served_model: Option<String>,
    provider: String,
    prompt_tokens: i64,
    cached_tokens: i64,
    completion_tokens: i64,
    reasoning_tokens: i64,
    cost_units: i64,
    latency_us: i64,
    upstream_sent_us: Option<i64>,
    ttft_us: Option<i64>,
    status: i64,
    error_code: Option<String>,
    streamed: bool,
    cache_write_tokens: i64,
    failed_attempts: Option<String>,
    receipt: Option<String>,
    receipt_path: Option<String>,
    response_sha256: Option<String>,
    upstream_response_id: Option<String>,
    /// Read through [`RECEIPT_BATCH_JWS`] (by `receipt_batch`, its id).
    receipt_batch_jws: Option<String>,
}

/// The `usage_records` columns, in [`UsageRow`] order.
pub(crate) const USAGE_COLUMNS: &str = "request_id, account_id, key_id, created_at_us, endpoint, requested_model, \
     served_model, provider, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, cost_units, \
     latency_us, upstream_sent_us, ttft_us, status, error_code, streamed, cache_write_tokens, failed_attempts, \
     receipt, receipt_batch, receipt_path, response_sha256, upstream_response_id";

/// The JWS of a row's receipt batch, read beside [`USAGE_COLUMNS`] (`SELECT {USAGE_COLUMNS},
/// {RECEIPT_BATCH_JWS} FROM usage_records …`).
pub(crate) const RECEIPT_BATCH_JWS: &str =
    "(SELECT jws FROM receipt_batches WHERE receipt_batches.id = usage_records.receipt_batch) AS receipt_batch_jws";

/// A record's receipt as stored: a whole one (kept before receipts were kept in parts) or its
/// parts, whose batch is stored once in `receipt_batches` ([`receipt_batches`]).
#[derive(Default)]
pub(crate) struct ReceiptColumns<'a> {
    pub(crate) whole: Option<&'a str>,
    pub(crate) batch: Option<&'a str>,
    pub(crate) path: Option<&'a str>,
    pub(crate) response_sha256: Option<&'a str>,
    pub(crate) upstream_response_id: Option<&'a str>,
}

impl<'a> ReceiptColumns<'a> {
    pub(crate) fn of(record: &'a UsageRecord) -> ReceiptColumns<'a> {
        match &record.receipt {
            None => ReceiptColumns::default(),
            Some(RecordReceipt::Whole(whole)) => ReceiptColumns {
                whole: Some(whole),
                ..ReceiptColumns::default()
            },
            Some(RecordReceipt::Parts(parts)) => ReceiptColumns {
                whole: None,
                batch: Some(parts.batch_id()),
                path: Some(&parts.path),
                response_sha256: Some(&parts.response_sha256),
                upstream_response_id: parts.upstream_response_id.as_deref(),
            },
        }
    }
}

/// The receipt batches `records` name, each once (by id, with its JWS). A usage batch holds
/// few receipt batches (tens of receipts share one), so a scan of those kept is enough.
pub(crate) fn receipt_batches(records: &[UsageRecord]) -> Vec<(&str, &str)> {
    let mut batches: Vec<(&str, &str)> = Vec::new();
    for record in records {
        if let Some(RecordReceipt::Parts(parts)) = &record.receipt
            && !batches.iter().any(|(id, _)| *id == parts.batch_id())
        {
            batches.push((parts.batch_id(), &parts.batch));
        }
    }
    batches
}

/// A record's failed attempts as stored: `NULL` for none (the usual case), else a JSON array.
pub(crate) fn failed_attempts_text(record: &UsageRecord) -> Option<String> {
    if record.failed_attempts.is_empty() {
        return None;
    }
    serde_json::to_string(&record.failed_attempts).ok()
}

impl TryFrom<UsageRow> for UsageRecord {
    type Error = StoreError;
    fn try_from(row: UsageRow) -> StoreResult<UsageRecord> {
        let endpoint = Endpoint::parse(&row.endpoint)
            .ok_or_else(|| StoreError::Database(format!("unknown endpoint `{}`", row.endpoint)))?;
        Ok(UsageRecord {
            request_id: row.request_id,
            account_id: row.account_id,
            key_id: row.key_id,
            created_at_us: row.created_at_us,
            endpoint,
            requested_model: row.requested_model,
            served_model: row.served_model,
            provider: row.provider,
            usage: TokenUsage {
                prompt_tokens: from_i64(row.prompt_tokens, "prompt_tokens")?,
                cached_tokens: from_i64(row.cached_tokens, "cached_tokens")?,
                cache_write_tokens: from_i64(row.cache_write_tokens, "cache_write_tokens")?,
                completion_tokens: from_i64(row.completion_tokens, "completion_tokens")?,
                reasoning_tokens: from_i64(row.reasoning_tokens, "reasoning_tokens")?,
            },
            cost: Usd::from_units(row.cost_units),
            latency_us: from_i64(row.latency_us, "latency_us")?,
            upstream_sent_us: from_opt_i64(row.upstream_sent_us, "upstream_sent_us")?,
            ttft_us: from_opt_i64(row.ttft_us, "ttft_us")?,
            status: from_i64(row.status, "status")?,
            error_code: row.error_code,
            streamed: row.streamed,
            lease: None,
            failed_attempts: match row.failed_attempts {
                Some(text) => {
                    serde_json::from_str(&text).map_err(|e| StoreError::Database(format!("failed_attempts: {e}")))?
                }
                None => Vec::new(),
            },
            receipt: match (
                row.receipt,
                row.receipt_batch_jws,
                row.receipt_path,
                row.response_sha256,
            ) {
                (Some(whole), ..) => Some(RecordReceipt::Whole(whole)),
                (None, Some(batch), Some(path), Some(response_sha256)) => Some(RecordReceipt::Parts(ReceiptParts {
                    batch,
                    path,
                    response_sha256,
                    upstream_response_id: row.upstream_response_id,
                })),
                _ => None,
            },
            refusal: None,
        })
    }
}

/// The `accounts` columns (table alias `a`), in [`AccountRow`] order. `ledger_head` is the last
/// entry the ledger follower applies (every kind but `usage`), read in the same statement as the
/// balance, so the balance includes exactly the followed entries up to it: on PostgreSQL those
/// entries commit in id order (see `postgres::accounts`), so any entry not yet visible here has a
/// higher id; on SQLite every write is serialised, so that holds trivially.
pub(crate) const ACCOUNT_COLUMNS: &str = "a.id, a.email, a.balance_units, a.created_at_us, a.invite_code, a.referred_by, \
     (SELECT COALESCE(MAX(l.id), 0) FROM ledger_entries l WHERE l.account_id = a.id AND l.kind <> 'usage') \
     AS ledger_head";

/// An account selected with [`ACCOUNT_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(crate) struct AccountRow {
    id: String,
    email: String,
    balance_units: i64,
    created_at_us: i64,
    invite_code: String,
    referred_by: Option<String>,
    ledger_head: i64,
}

impl From<AccountRow> for Account {
    fn from(row: AccountRow) -> Account {
        Account {
            id: row.id,
            email: row.email,
            balance: Usd::from_units(row.balance_units),
            created_at_us: row.created_at_us,
            invite_code: row.invite_code,
            referred_by: row.referred_by,
            ledger_head: row.ledger_head,
        }
    }
}

/// The `ledger_entries` columns, in [`LedgerRow`] order.
pub(crate) const LEDGER_COLUMNS: &str = "id, account_id, created_at_us, kind, amount_units, reference, reason";

/// A `ledger_entries` row as stored.
#[derive(sqlx::FromRow)]
pub(crate) struct LedgerRow {
    id: i64,
    account_id: String,
    created_at_us: i64,
    kind: String,
    amount_units: i64,
    reference: Option<String>,
    reason: Option<String>,
}

impl TryFrom<LedgerRow> for LedgerEntry {
    type Error = StoreError;
    fn try_from(row: LedgerRow) -> StoreResult<LedgerEntry> {
        let kind = LedgerKind::parse(&row.kind)
            .ok_or_else(|| StoreError::Database(format!("unknown ledger kind `{}`", row.kind)))?;
        Ok(LedgerEntry {
            id: row.id,
            account_id: row.account_id,
            created_at_us: row.created_at_us,
            kind,
            amount: Usd::from_units(row.amount_units),
            reference: row.reference,
            reason: row.reason,
        })
    }
}

/// The `management_keys` columns, in [`ManagementKeyRow`] order.
pub(crate) const MANAGEMENT_KEY_COLUMNS: &str = "id, account_id, secret_hash, hint, name, created_at_us, revoked_at_us";

/// A `management_keys` row as stored.
#[derive(sqlx::FromRow)]
pub(crate) struct ManagementKeyRow {
    id: String,
    account_id: String,
    secret_hash: String,
    hint: String,
    name: Option<String>,
    created_at_us: i64,
    revoked_at_us: Option<i64>,
}

impl From<ManagementKeyRow> for ManagementKey {
    fn from(row: ManagementKeyRow) -> ManagementKey {
        ManagementKey {
            id: row.id,
            account_id: row.account_id,
            secret_hash: row.secret_hash,
            hint: row.hint,
            name: row.name,
            created_at_us: row.created_at_us,
            revoked_at_us: row.revoked_at_us,
        }
    }
}

/// A stored status name that is not one.
fn parse_status(status: &str) -> StoreResult<SessionStatus> {
    SessionStatus::parse(status).ok_or_else(|| StoreError::Database(format!("unknown session status `{status}`")))
}

/// The `checkout_sessions` columns, in [`SessionRow`] order.
pub(crate) const SESSION_COLUMNS: &str =
    "id, account_id, provider, provider_session_id, payment_url, quote, status, payment_id, created_at_us";

/// A `checkout_sessions` row as stored (the quote as JSON).
#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    id: String,
    account_id: String,
    provider: String,
    provider_session_id: String,
    payment_url: String,
    quote: String,
    status: String,
    payment_id: Option<String>,
    created_at_us: i64,
}

impl TryFrom<SessionRow> for CheckoutSession {
    type Error = StoreError;
    fn try_from(row: SessionRow) -> StoreResult<CheckoutSession> {
        let quote: Quote =
            serde_json::from_str(&row.quote).map_err(|e| StoreError::Database(format!("corrupt quote JSON: {e}")))?;
        Ok(CheckoutSession {
            id: row.id,
            account_id: row.account_id,
            provider: row.provider,
            provider_session_id: row.provider_session_id,
            payment_url: row.payment_url,
            quote,
            status: parse_status(&row.status)?,
            payment_id: row.payment_id,
            created_at_us: row.created_at_us,
        })
    }
}

/// The `payments` columns, in [`PaymentRow`] order.
pub(crate) const PAYMENT_COLUMNS: &str = "provider, payment_id, session_id, account_id, credited_units, referrer_id, \
     commission_units, status, reversed_units, commission_reversed_units, created_at_us";

/// A `payments` row as stored.
#[derive(sqlx::FromRow)]
pub(crate) struct PaymentRow {
    provider: String,
    payment_id: String,
    session_id: String,
    account_id: String,
    credited_units: i64,
    referrer_id: Option<String>,
    commission_units: i64,
    status: String,
    reversed_units: i64,
    commission_reversed_units: i64,
    created_at_us: i64,
}

impl TryFrom<PaymentRow> for Payment {
    type Error = StoreError;
    fn try_from(row: PaymentRow) -> StoreResult<Payment> {
        Ok(Payment {
            provider: row.provider,
            payment_id: row.payment_id,
            session_id: row.session_id,
            account_id: row.account_id,
            credited: Usd::from_units(row.credited_units),
            referrer_id: row.referrer_id,
            commission: Usd::from_units(row.commission_units),
            status: parse_status(&row.status)?,
            reversed: Usd::from_units(row.reversed_units),
            commission_reversed: Usd::from_units(row.commission_reversed_units),
            created_at_us: row.created_at_us,
        })
    }
}

/// `percent` % of `token_line`, rounded down to the unit, computed exactly.
pub(crate) fn commission_of(token_line: Usd, percent: Decimal) -> StoreResult<Usd> {
    let out_of_range = || StoreError::Database(format!("commission of {percent}% out of range"));
    if percent.is_sign_negative() && !percent.is_zero() {
        return Err(out_of_range());
    }
    let units = Decimal::from(token_line.units())
        .checked_mul(percent)
        .and_then(|v| v.checked_div(Decimal::ONE_HUNDRED))
        .ok_or_else(out_of_range)?
        .floor()
        .to_i64()
        .ok_or_else(out_of_range)?;
    Ok(Usd::from_units(units.max(0)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_utc_days() {
        assert_eq!(day_name(0).unwrap(), "1970-01-01");
        assert_eq!(day_name(19_723).unwrap(), "2024-01-01");
        assert_eq!(day_name(-1).unwrap(), "1969-12-31");
    }

    #[test]
    fn refuses_values_that_do_not_fit() {
        assert!(to_i64(u64::MAX, "tokens").is_err());
        assert!(from_i64::<u32>(-1, "rpm").is_err());
        assert_eq!(from_i64::<u16>(200, "status").unwrap(), 200);
    }
}
