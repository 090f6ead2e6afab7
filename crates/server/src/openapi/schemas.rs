//! The request and response bodies of the management API, as the handlers write and read them.
//! The handlers build their JSON with `serde_json::json!`; these types exist only to describe it
//! (they are never constructed), and the end-to-end suite (`tests/e2e/test_openapi.py`) checks
//! real responses against them. Response objects refuse unknown fields, so a field a handler adds
//! without describing it here fails that check.

#![allow(dead_code)]

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{PartialSchema, ToResponse, ToSchema};

/// A decimal number written as a JSON string (`"12.5"`, `"-0.0000012"`): money is never a float.
pub(crate) struct Decimal;

/// Matches what `Usd` and `rust_decimal::Decimal` print.
const DECIMAL_PATTERN: &str = r"^-?[0-9]+(\.[0-9]+)?$";

impl PartialSchema for Decimal {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(DECIMAL_PATTERN))
            .description(Some(
                "A decimal number as a string; money is USD unless said otherwise.",
            ))
            .examples([serde_json::json!("12.5")])
            .into()
    }
}

impl ToSchema for Decimal {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Decimal")
    }
}

/// A UTC time as RFC 3339 (`2026-11-25T15:25:37.123456Z`).
pub(crate) struct Timestamp;

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .pattern(Some(
                r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$",
            ))
            .description(Some("A time, RFC 3339."))
            .into()
    }
}

impl ToSchema for Timestamp {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
}

/// `amount_usd` of a checkout request: a decimal string or a JSON number, read from its text
/// (never through a float); at most 2 decimal places.
pub(crate) struct AmountUsd;

impl PartialSchema for AmountUsd {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(DECIMAL_PATTERN)),
            )
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .description(Some(
                "USD to buy: a decimal string (`\"25.50\"`) or a JSON number, read from its text.",
            ))
            .into()
    }
}

impl ToSchema for AmountUsd {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AmountUsd")
    }
}

// ------------------------------------------------------------------------------------ errors

/// Every refusal and failure: OpenAI's error shape.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

/// What went wrong.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorDetail {
    /// For humans.
    pub(crate) message: String,
    /// OpenAI's error type (`invalid_request_error`, `permission_error`, `server_error`, …).
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The request field to blame, if one is.
    #[schema(required = true)]
    pub(crate) param: Option<String>,
    /// Stable machine-readable code (`invalid_request`, `not_found`, `invalid_api_key`, …).
    pub(crate) code: String,
}

/// The shared error response (`components.responses.Error`).
pub(crate) struct Error;

impl<'r> ToResponse<'r> for Error {
    fn response() -> (&'r str, RefOr<Response>) {
        (
            "Error",
            ResponseBuilder::new()
                .description(
                    "Refused or failed: `{\"error\": {message, type, param, code}}`. 400 invalid request, \
                     401 missing or invalid key (or wrong login), 404 not found, 409 conflict, 413 body \
                     too large, 422 payment mismatch, 5xx server or payment provider error.",
                )
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .into(),
        )
    }
}

// -------------------------------------------------------------------------------------- keys

/// How a key's `max_spend` resets.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BudgetPeriod {
    None,
    Daily,
    Weekly,
    Monthly,
}

/// The settings of an inference key, as sent to `POST /v1/keys` (every field optional) and
/// `PATCH /v1/keys/{id}` (fields present replace the current ones; `null` clears one).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeySettings {
    /// A label, at most 200 characters.
    #[schema(max_length = 200)]
    pub(crate) name: Option<String>,
    /// Spend cap in USD, a non-negative decimal string (`null`: none).
    pub(crate) max_spend: Option<Decimal>,
    /// When `max_spend` resets (default `none`: a lifetime budget).
    pub(crate) budget_period: Option<BudgetPeriod>,
    /// Requests per minute (`null`: unlimited).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub(crate) rpm_limit: Option<u32>,
    /// Tokens per minute (`null`: unlimited).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_000_u64)]
    pub(crate) tpm_limit: Option<u64>,
    /// Requests in flight at once (`null`: unlimited).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub(crate) max_concurrency: Option<u32>,
    /// Model allow-list (catalog ids, at most 256); `null`: every model.
    #[schema(max_items = 256)]
    pub(crate) models: Option<Vec<String>>,
    /// When the key stops working, RFC 3339.
    pub(crate) expires_at: Option<Timestamp>,
    /// Free-form labels, stored as given: any JSON object of at most 8192 bytes as compact JSON.
    #[schema(value_type = Option<Object>)]
    pub(crate) metadata: Option<serde_json::Value>,
    /// What a request whose `max_tokens` cannot be paid for, while a smaller one could, gets
    /// (default `clamp`).
    pub(crate) on_oversized_max_tokens: Option<OversizedMaxTokens>,
    /// Streams end with the usage chunk even when the client did not ask for it (default `false`).
    pub(crate) always_include_usage: Option<bool>,
    /// Whether responses carry the `x-router-one-*` headers (default `true`).
    pub(crate) router_headers: Option<bool>,
}

/// What a key does with a request whose `max_tokens` what is left on the key or its account
/// cannot cover, while a smaller limit could be: `clamp` serves it with the largest limit that can
/// be paid for (and sends that limit upstream); `refuse` answers 400 naming that limit. Not even a
/// 16-token answer fitting is a 402 either way.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OversizedMaxTokens {
    Clamp,
    Refuse,
}

/// The current budget period of a key with a periodic `budget_period`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyPeriod {
    pub(crate) start: Timestamp,
    pub(crate) end: Timestamp,
    /// Spend in this period (`null` when the key is not live, e.g. revoked).
    #[schema(required = true)]
    pub(crate) spend: Option<Decimal>,
}

/// One windowed limit, live.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateCounter {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Time until the window resets (`0s`, `250ms`, `1m30s`).
    pub(crate) reset: String,
}

/// Where a key's rate limits stand; a limit not set is `null`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimits {
    #[schema(required = true)]
    pub(crate) requests: Option<RateCounter>,
    #[schema(required = true)]
    pub(crate) tokens: Option<RateCounter>,
}

/// Declares an inference key's response object, and the same with its secret.
macro_rules! api_key_schemas {
    ($($(#[$doc:meta])* $name:ident { $($extra:tt)* })*) => {$(
        $(#[$doc])*
        #[derive(ToSchema)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            /// `key_…`.
            pub(crate) id: String,
            #[schema(pattern = "^api_key$")]
            pub(crate) object: String,
            #[schema(required = true)]
            pub(crate) name: Option<String>,
            /// A non-secret prefix of the secret, for listings.
            pub(crate) hint: String,
            #[schema(required = true)]
            pub(crate) max_spend: Option<Decimal>,
            pub(crate) budget_period: BudgetPeriod,
            #[schema(required = true)]
            pub(crate) rpm_limit: Option<u32>,
            #[schema(required = true)]
            pub(crate) tpm_limit: Option<u64>,
            #[schema(required = true)]
            pub(crate) max_concurrency: Option<u32>,
            #[schema(required = true)]
            pub(crate) models: Option<Vec<String>>,
            #[schema(required = true)]
            pub(crate) expires_at: Option<Timestamp>,
            #[schema(value_type = Object)]
            pub(crate) metadata: serde_json::Value,
            pub(crate) on_oversized_max_tokens: OversizedMaxTokens,
            pub(crate) always_include_usage: bool,
            pub(crate) router_headers: bool,
            pub(crate) created_at: Timestamp,
            #[schema(required = true)]
            pub(crate) revoked_at: Option<Timestamp>,
            /// Lifetime spend.
            pub(crate) spend: Decimal,
            /// The current budget period (`null` for a lifetime budget).
            #[schema(required = true)]
            pub(crate) period: Option<KeyPeriod>,
            /// Held by requests in flight.
            pub(crate) reserved: Decimal,
            /// What is left of `max_spend` (`null`: no cap).
            #[schema(required = true)]
            pub(crate) remaining: Option<Decimal>,
            /// Live rate-limit standing (`null` when the key is not live, e.g. revoked).
            #[schema(required = true)]
            pub(crate) rate_limits: Option<RateLimits>,
            $($extra)*
        }
    )*};
}

api_key_schemas! {
    /// An inference key as the API shows it: never its secret.
    ApiKey {}
    /// A key just created: with its secret (`sk-…`), shown this once.
    CreatedApiKey {
        /// The secret. Shown only in this response.
        pub(crate) key: String,
    }
}

/// `GET /v1/keys`: one page, newest first.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiKeyList {
    #[schema(pattern = "^list$")]
    pub(crate) object: String,
    pub(crate) data: Vec<ApiKey>,
    pub(crate) has_more: bool,
    /// Pass as `after` for the next page (also the `x-next-cursor` header); `null` on the last.
    #[schema(required = true)]
    pub(crate) next_cursor: Option<String>,
}

// ------------------------------------------------------------------------------------- usage

/// Which API a request called.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Endpoint {
    ChatCompletions,
    Embeddings,
    Responses,
    Messages,
}

/// One request's usage record.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageRecord {
    /// Also the response's `x-request-id`.
    pub(crate) request_id: String,
    pub(crate) key_id: String,
    pub(crate) created_at: Timestamp,
    pub(crate) endpoint: Endpoint,
    pub(crate) requested_model: String,
    #[schema(required = true)]
    pub(crate) served_model: Option<String>,
    pub(crate) provider: String,
    pub(crate) prompt_tokens: u64,
    pub(crate) cached_tokens: u64,
    /// The part of `prompt_tokens` written to the prompt cache (billed at the cache-write rate).
    pub(crate) cache_write_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) reasoning_tokens: u64,
    /// USD at posted rates.
    pub(crate) cost: Decimal,
    /// Arrival to last byte, µs.
    pub(crate) latency_us: u64,
    /// Arrival to leaving for the upstream, µs.
    #[schema(required = true)]
    pub(crate) upstream_sent_us: Option<u64>,
    /// Arrival to first byte from the upstream, µs.
    #[schema(required = true)]
    pub(crate) ttft_us: Option<u64>,
    /// HTTP status returned to the client.
    pub(crate) status: u16,
    #[schema(required = true)]
    pub(crate) error_code: Option<String>,
    pub(crate) streamed: bool,
}

/// `GET /v1/usage` (`format=json`): one page, oldest first.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsagePage {
    #[schema(pattern = "^list$")]
    pub(crate) object: String,
    pub(crate) data: Vec<UsageRecord>,
    pub(crate) has_more: bool,
    /// Pass as `after` for the next page (also the `x-next-cursor` header); `null` on the last.
    #[schema(required = true)]
    pub(crate) next_cursor: Option<String>,
}

/// How a summary groups.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SummaryGroup {
    Key,
    Model,
    Day,
}

/// One group of a usage summary.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SummaryRow {
    /// The key id, model id or day (`YYYY-MM-DD`).
    pub(crate) group: String,
    pub(crate) requests: u64,
    pub(crate) prompt_tokens: u64,
    pub(crate) cached_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) reasoning_tokens: u64,
    pub(crate) cost: Decimal,
}

/// `GET /v1/usage/summary`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageSummary {
    #[schema(pattern = "^list$")]
    pub(crate) object: String,
    pub(crate) group_by: SummaryGroup,
    pub(crate) data: Vec<SummaryRow>,
}

/// A step of a request's timeline.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TimelineEventKind {
    Received,
    SentUpstream,
    FirstByte,
    Completed,
}

/// One event of a request's timeline, µs after arrival.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimelineEvent {
    pub(crate) at_us: u64,
    pub(crate) event: TimelineEventKind,
    /// `sent_upstream` only.
    #[schema(nullable = false)]
    pub(crate) provider: Option<String>,
    /// `completed` only: the HTTP status returned.
    #[schema(nullable = false)]
    pub(crate) status: Option<u16>,
}

/// `GET /v1/requests/{id}/receipt`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Receipt {
    #[schema(pattern = "^receipt$")]
    pub(crate) object: String,
    /// The request id.
    pub(crate) request_id: String,
    /// The receipt: its batch's compact JWS (`header.payload.signature`), its claims and their
    /// path to the batch's signed root (empty for a batch of one), base64url, separated by `~`
    /// (docs/receipts.md).
    #[schema(pattern = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+~[A-Za-z0-9_-]+~[A-Za-z0-9_-]*$")]
    pub(crate) receipt: String,
}

/// `GET /v1/requests/{id}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestTrace {
    #[schema(pattern = "^request$")]
    pub(crate) object: String,
    pub(crate) record: UsageRecord,
    pub(crate) timeline: Vec<TimelineEvent>,
    /// Every attempt on a route of the model, in order: those that failed before the client
    /// received a byte and were tried again on the next route (not billed), then the one that
    /// ended the request (billed).
    pub(crate) attempts: Vec<Attempt>,
}

/// `GET /v1/requests/{id}` (and its receipt) before the request is recorded: 202 with
/// `Retry-After`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PendingRequest {
    #[schema(pattern = "^request$")]
    pub(crate) object: String,
    pub(crate) id: String,
    #[schema(pattern = "^pending$")]
    pub(crate) status: String,
    pub(crate) message: String,
}

/// One attempt of a request on one route.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Attempt {
    /// The route (provider channel).
    pub(crate) route: String,
    /// The status it gave (or, failed over, would have given) the client.
    pub(crate) status: u16,
    /// Its error code; `null` for a success.
    pub(crate) error: Option<String>,
    pub(crate) latency_us: u64,
    /// Only the attempt that ended the request is billed.
    pub(crate) billed: bool,
}

// ----------------------------------------------------------------------------------- account

/// `GET /v1/account`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Account {
    #[schema(pattern = "^account$")]
    pub(crate) object: String,
    /// `acct_…`.
    pub(crate) id: String,
    pub(crate) email: String,
    /// Committed balance: Σ ledger entries.
    pub(crate) balance: Decimal,
    /// Σ usage records' cost.
    pub(crate) spend: Decimal,
    /// Held right now by requests in flight.
    pub(crate) reserved: Decimal,
    pub(crate) invite_code: String,
    /// The inviting account's id.
    #[schema(required = true)]
    pub(crate) referred_by: Option<String>,
    pub(crate) created_at: Timestamp,
}

/// Why the balance changed.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LedgerKind {
    Topup,
    Usage,
    Commission,
    Refund,
    Chargeback,
    CommissionReversal,
    Adjustment,
}

/// One ledger entry.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LedgerEntry {
    #[schema(pattern = "^ledger_entry$")]
    pub(crate) object: String,
    /// Increasing; the page cursor.
    pub(crate) id: i64,
    pub(crate) created_at: Timestamp,
    pub(crate) kind: LedgerKind,
    /// Signed: credits positive, debits negative.
    pub(crate) amount: Decimal,
    #[schema(required = true)]
    pub(crate) reference: Option<String>,
    #[schema(required = true)]
    pub(crate) reason: Option<String>,
}

/// `GET /v1/account/ledger`: one page, oldest first.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LedgerPage {
    #[schema(pattern = "^list$")]
    pub(crate) object: String,
    pub(crate) data: Vec<LedgerEntry>,
    pub(crate) has_more: bool,
    /// The last entry's id (an integer), to pass as `after`; `null` on the last page.
    #[schema(required = true)]
    pub(crate) next_cursor: Option<i64>,
}

// ---------------------------------------------------------------------------------- checkout

/// `POST /v1/checkout/quote`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuoteRequest {
    pub(crate) amount_usd: AmountUsd,
    /// ISO 4217 code, as configured (`EUR`).
    pub(crate) currency: String,
    /// A payment channel, as configured (`card`, `alipay`, …).
    pub(crate) channel: String,
}

/// `POST /v1/checkout/sessions`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckoutSessionRequest {
    pub(crate) amount_usd: AmountUsd,
    pub(crate) currency: String,
    pub(crate) channel: String,
    /// Payment provider; may be left out when only one is configured.
    pub(crate) provider: Option<String>,
}

/// A checkout quote; the money lines are decimal strings in `currency`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Quote {
    #[schema(pattern = "^checkout\\.quote$")]
    pub(crate) object: String,
    /// The USD credited: exactly `amount_usd`.
    pub(crate) token_line_usd: Decimal,
    pub(crate) currency: String,
    pub(crate) channel: String,
    /// Units of `currency` per 1 USD.
    pub(crate) fx_rate: Decimal,
    /// When `fx_rate` was fixed, as configured (RFC 3339).
    pub(crate) fx_as_of: String,
    /// Decimal places of the money lines.
    pub(crate) minor_units: u32,
    pub(crate) converted: Decimal,
    pub(crate) fx_cost: Decimal,
    pub(crate) channel_fee: Decimal,
    /// `converted + fx_cost + channel_fee`, exactly.
    pub(crate) total: Decimal,
    /// The rounding rule, in words.
    pub(crate) rounding: String,
}

/// Where a checkout session is.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SessionStatus {
    Open,
    Paid,
    Refunded,
    ChargedBack,
}

/// A checkout session.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckoutSession {
    #[schema(pattern = "^checkout\\.session$")]
    pub(crate) object: String,
    /// `cs_…`.
    pub(crate) id: String,
    pub(crate) status: SessionStatus,
    pub(crate) provider: String,
    /// Where the buyer pays.
    pub(crate) payment_url: String,
    pub(crate) quote: Quote,
    /// The provider's payment id, once paid.
    #[schema(required = true)]
    pub(crate) payment_id: Option<String>,
    pub(crate) created_at: Timestamp,
}

// --------------------------------------------------------------------------------- referrals

/// An account the caller referred.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReferredAccount {
    pub(crate) account_id: String,
    /// Masked.
    pub(crate) email: String,
    pub(crate) joined_at: Timestamp,
    /// Confirmed top-ups that earned a commission.
    pub(crate) payments: u64,
    /// Σ commission credited minus Σ reversed.
    pub(crate) commission: Decimal,
}

/// `GET /v1/referrals`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Referrals {
    #[schema(pattern = "^referrals$")]
    pub(crate) object: String,
    /// The caller's invite code.
    pub(crate) code: String,
    /// The signup link carrying it.
    pub(crate) link: String,
    /// Percent of a referred top-up credited to the inviter.
    pub(crate) commission_percent: Decimal,
    pub(crate) referred: Vec<ReferredAccount>,
    pub(crate) commission_total: Decimal,
}

/// `POST /v1/referrals/claim`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReferralClaimRequest {
    pub(crate) invite_code: String,
}

/// The inviter attached.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReferralClaim {
    #[schema(pattern = "^referral\\.claim$")]
    pub(crate) object: String,
    /// The inviter's account id.
    pub(crate) referred_by: String,
}

// --------------------------------------------------------------------------- management keys

/// `POST /v1/management-keys` (the body may be empty).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManagementKeyRequest {
    /// A label, at most 200 characters.
    pub(crate) name: Option<String>,
}

/// Declares a management key's response object, and the same with its secret.
macro_rules! management_key_schemas {
    ($($(#[$doc:meta])* $name:ident { $($extra:tt)* })*) => {$(
        $(#[$doc])*
        #[derive(ToSchema)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            #[schema(pattern = "^management_key$")]
            pub(crate) object: String,
            /// `mkey_…`.
            pub(crate) id: String,
            #[schema(required = true)]
            pub(crate) name: Option<String>,
            /// A non-secret prefix of the secret.
            pub(crate) hint: String,
            pub(crate) created_at: Timestamp,
            #[schema(required = true)]
            pub(crate) revoked_at: Option<Timestamp>,
            $($extra)*
        }
    )*};
}

management_key_schemas! {
    /// A management key: never its secret.
    ManagementKey {}
    /// A management key just created, with its secret (`sk-rm-…`), shown this once.
    CreatedManagementKey {
        /// The secret. Shown only in this response.
        pub(crate) key: String,
    }
}

/// `GET /v1/management-keys`: newest first, revoked ones included.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManagementKeyList {
    #[schema(pattern = "^list$")]
    pub(crate) object: String,
    pub(crate) data: Vec<ManagementKey>,
}

// -------------------------------------------------------------------------------------- auth

/// `POST /v1/auth/signup`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupRequest {
    pub(crate) email: String,
    pub(crate) password: String,
    /// Another account's invite code: it becomes the inviter, forever.
    pub(crate) invite_code: Option<String>,
}

/// A new account and its first management key.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Signup {
    #[schema(pattern = "^signup$")]
    pub(crate) object: String,
    pub(crate) account_id: String,
    /// Normalized.
    pub(crate) email: String,
    /// `sk-rm-…`, shown this once.
    pub(crate) management_key: String,
    /// The management key's id (`mkey_…`), to revoke it by.
    pub(crate) management_key_id: String,
    pub(crate) invite_code: String,
    pub(crate) invite_link: String,
    #[schema(required = true)]
    pub(crate) referred_by: Option<String>,
}

/// `POST /v1/auth/login`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    pub(crate) email: String,
    pub(crate) password: String,
}

/// A new management key for the account.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    #[schema(pattern = "^login$")]
    pub(crate) object: String,
    pub(crate) account_id: String,
    /// `sk-rm-…`, shown this once.
    pub(crate) management_key: String,
    pub(crate) management_key_id: String,
}

// ---------------------------------------------------------------------------------- payments

/// What a webhook did.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WebhookOutcome {
    Credited,
    Duplicate,
    Ignored,
    Reversed,
    AlreadyReversed,
}

/// The answer to a payment provider.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookAck {
    pub(crate) received: bool,
    pub(crate) outcome: WebhookOutcome,
}
