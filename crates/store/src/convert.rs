//! Conversions between database rows and the core types, shared by every SQL backend: rows
//! hold `i64` (money as 10⁻¹⁰ USD units, times as µs), JSON as text; the core types hold
//! unsigned counts, [`Usd`] and parsed values. A value that does not fit is a
//! [`StoreError::Database`], never a panic.

use router_one_core::money::Usd;
use router_one_core::pricing::TokenUsage;
use router_one_core::store::{ApiKey, BudgetPeriod, KeySettings, StoreError, StoreResult};
use router_one_core::usage::{Endpoint, UsageRecord};

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
}

/// The `api_keys` columns, in [`KeyRow`] order.
pub(crate) const KEY_COLUMNS: &str = "id, account_id, secret_hash, hint, name, max_spend_units, budget_period, \
     rpm_limit, tpm_limit, max_concurrency, models, expires_at_us, metadata, created_at_us, revoked_at_us, spend_units";

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
            },
            created_at_us: row.created_at_us,
            revoked_at_us: row.revoked_at_us,
            spend: Usd::from_units(row.spend_units),
        })
    }
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
}

/// The `usage_records` columns, in [`UsageRow`] order.
pub(crate) const USAGE_COLUMNS: &str = "request_id, account_id, key_id, created_at_us, endpoint, requested_model, \
     served_model, provider, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, cost_units, \
     latency_us, upstream_sent_us, ttft_us, status, error_code, streamed";

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
        })
    }
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
