//! Usage data for billing: `GET /v1/usage` (filters, cursor pages, JSON / JSON Lines / CSV),
//! `GET /v1/usage/summary`, and `GET /v1/requests/{id}` (one request's record and timeline).
//! An account only ever sees its own records: every query is scoped by the management key's
//! account. Every format is a page of at most [`MAX_LIMIT`] records read at once, so what one
//! request holds is bounded by the page, whatever the format; a full export follows the cursor.
//!
//! CSV cells are escaped against formula injection as OWASP advises: a cell that starts with
//! `=`, `+`, `-`, `@`, a tab, a carriage return or a NUL (a model name a client chose, say)
//! gets a leading `'` and is quoted, so a spreadsheet shows it as text and never evaluates it.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use router_one_core::ids::rfc3339;
use router_one_core::store::{SummaryGroup, UsageFilter};
use router_one_core::{ApiError, ErrorKind, UsageRecord};

use crate::auth::ManagementAccount;
use crate::error::{ErrorResponse, internal};
use crate::state::AppState;

const DEFAULT_LIMIT: u32 = 100;
/// Most records per page, in every format.
pub(crate) const MAX_LIMIT: u32 = 1000;

/// Query parameters of the usage endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageQuery {
    /// Only this inference key's records (`key_…`).
    key_id: Option<String>,
    /// Only this requested model.
    model: Option<String>,
    /// An HTTP status (`200`), or `success` / `error`.
    status: Option<String>,
    /// RFC 3339 or Unix seconds.
    from: Option<String>,
    /// RFC 3339 or Unix seconds.
    to: Option<String>,
    /// Page cursor: the previous page's `next_cursor`.
    after: Option<String>,
    /// `asc` (default: oldest first, in commit order) or `desc` (newest first); the cursor
    /// pages on in the same order.
    #[param(pattern = "^(asc|desc)$")]
    order: Option<String>,
    /// Records per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `json` (default), `jsonl` or `csv`.
    #[param(pattern = "^(json|jsonl|csv)$")]
    format: Option<String>,
    /// Summary only: `key`, `model` (default) or `day`.
    #[param(pattern = "^(key|model|day)$")]
    group_by: Option<String>,
}

fn bad(param: &'static str, message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message).with_param(param)
}

fn parse_time(param: &'static str, value: &str) -> Result<i64, ApiError> {
    if let Ok(seconds) = value.parse::<i64>() {
        return seconds
            .checked_mul(1_000_000)
            .ok_or_else(|| bad(param, format!("`{value}` is out of range.")));
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000) as i64)
        .map_err(|_| {
            bad(
                param,
                format!("Invalid {param} `{value}`: use RFC 3339 or Unix seconds."),
            )
        })
}

impl UsageQuery {
    fn filter(&self, account_id: String) -> Result<UsageFilter, ApiError> {
        let (success, status) = match self.status.as_deref() {
            None => (None, None),
            Some("success") => (Some(true), None),
            Some("error") => (Some(false), None),
            Some(s) => match s.parse::<u16>() {
                Ok(code) => (None, Some(code)),
                Err(_) => {
                    return Err(bad(
                        "status",
                        format!("Invalid status `{s}`: use an HTTP status, success or error."),
                    ));
                }
            },
        };
        let newest_first = match self.order.as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(bad("order", format!("Invalid order `{other}`: use asc or desc."))),
        };
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(bad("limit", format!("limit must be between 1 and {MAX_LIMIT}.")));
        }
        Ok(UsageFilter {
            account_id,
            key_id: self.key_id.clone(),
            model: self.model.clone(),
            success,
            status,
            from_us: self.from.as_deref().map(|v| parse_time("from", v)).transpose()?,
            to_us: self.to.as_deref().map(|v| parse_time("to", v)).transpose()?,
            after: self.after.clone(),
            newest_first,
            limit,
        })
    }
}

/// A usage record as the API shows it.
pub(crate) fn record_json(r: &UsageRecord) -> Value {
    json!({
        "request_id": r.request_id,
        "key_id": r.key_id,
        "created_at": rfc3339(r.created_at_us),
        "endpoint": r.endpoint,
        "requested_model": r.requested_model,
        "served_model": r.served_model,
        "provider": r.provider,
        "prompt_tokens": r.usage.prompt_tokens,
        "cached_tokens": r.usage.cached_tokens,
        "cache_write_tokens": r.usage.cache_write_tokens,
        "completion_tokens": r.usage.completion_tokens,
        "reasoning_tokens": r.usage.reasoning_tokens,
        "cost": r.cost,
        "latency_us": r.latency_us,
        "upstream_sent_us": r.upstream_sent_us,
        "ttft_us": r.ttft_us,
        "status": r.status,
        "error_code": r.error_code,
        "streamed": r.streamed,
    })
}

const CSV_HEADER: &str = "request_id,key_id,created_at,endpoint,requested_model,served_model,provider,prompt_tokens,cached_tokens,completion_tokens,reasoning_tokens,cost,latency_us,upstream_sent_us,ttft_us,status,error_code,streamed,cache_write_tokens\n";

/// First characters that make a spreadsheet read a cell as a formula (OWASP's list, and NUL).
const FORMULA_STARTS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\0'];

/// One RFC 4180 cell: quoted when it holds a separator, a quote or a line break; a cell a
/// spreadsheet would evaluate is also prefixed with `'` (and so quoted).
fn csv_field(out: &mut String, value: &str) {
    let formula = value.starts_with(FORMULA_STARTS);
    if formula || value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if formula {
            out.push('\'');
        }
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn csv_row(out: &mut String, r: &UsageRecord) {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for (i, field) in [
        r.request_id.clone(),
        r.key_id.clone(),
        rfc3339(r.created_at_us),
        r.endpoint.as_str().to_owned(),
        r.requested_model.clone(),
        r.served_model.clone().unwrap_or_default(),
        r.provider.clone(),
        r.usage.prompt_tokens.to_string(),
        r.usage.cached_tokens.to_string(),
        r.usage.completion_tokens.to_string(),
        r.usage.reasoning_tokens.to_string(),
        r.cost.to_string(),
        r.latency_us.to_string(),
        opt(r.upstream_sent_us),
        opt(r.ttft_us),
        r.status.to_string(),
        r.error_code.clone().unwrap_or_default(),
        r.streamed.to_string(),
        // Last, so the columns before it keep their places for existing readers.
        r.usage.cache_write_tokens.to_string(),
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, field);
    }
    out.push('\n');
}

fn with_type(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `GET /v1/usage`.
#[utoipa::path(
    get,
    path = "/v1/usage",
    operation_id = "usage_list",
    tag = "usage",
    summary = "List usage records, oldest first, in cursor pages",
    params(UsageQuery),
    responses(
        (status = 200, description = "One page; `x-next-cursor` carries the next cursor when there is one.", content(
            (crate::openapi::schemas::UsagePage = "application/json"),
            (String = "application/jsonl", example = "one UsageRecord object per line"),
            (String = "text/csv", example = "request_id,key_id,created_at,…")
        )),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 401, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn list(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, ErrorResponse> {
    let Query(query) = query.map_err(|e| bad("query", e.body_text()))?;
    let filter = query.filter(account_id)?;
    // One extra row tells whether another page exists.
    let mut page_filter = filter.clone();
    page_filter.limit = filter.limit + 1;
    let mut records = app.store.usage(&page_filter).await.map_err(internal)?;
    let has_more = records.len() > filter.limit as usize;
    records.truncate(filter.limit as usize);
    let next_cursor = if has_more {
        records.last().map(|r| r.request_id.clone())
    } else {
        None
    };
    let mut response = match query.format.as_deref().unwrap_or("json") {
        "json" => Json(json!({
            "object": "list",
            "data": records.iter().map(record_json).collect::<Vec<_>>(),
            "has_more": has_more,
            "next_cursor": next_cursor,
        }))
        .into_response(),
        "jsonl" => {
            let mut body = String::new();
            for r in &records {
                let _ = writeln!(body, "{}", record_json(r));
            }
            with_type(body, "application/jsonl")
        }
        "csv" => {
            let mut body = String::from(CSV_HEADER);
            for r in &records {
                csv_row(&mut body, r);
            }
            with_type(body, "text/csv")
        }
        other => return Err(bad("format", format!("Invalid format `{other}`: use json, jsonl or csv.")).into()),
    };
    if let Some(cursor) = next_cursor.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert("x-next-cursor", cursor);
    }
    Ok(response)
}

/// `GET /v1/usage/summary?group_by=key|model|day`.
#[utoipa::path(
    get,
    path = "/v1/usage/summary",
    operation_id = "usage_summary",
    tag = "usage",
    summary = "Usage totals grouped by key, model or day",
    params(UsageQuery),
    responses(
        (status = 200, description = "One row per group.", body = crate::openapi::schemas::UsageSummary),
        (status = 400, response = crate::openapi::schemas::Error),
        (status = 401, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn summary(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, ErrorResponse> {
    let Query(query) = query.map_err(|e| bad("query", e.body_text()))?;
    let group = match query.group_by.as_deref().unwrap_or("model") {
        "key" => SummaryGroup::Key,
        "model" => SummaryGroup::Model,
        "day" => SummaryGroup::Day,
        other => {
            return Err(bad(
                "group_by",
                format!("Invalid group_by `{other}`: use key, model or day."),
            )
            .into());
        }
    };
    let filter = query.filter(account_id)?;
    let rows = app.store.usage_summary(&filter, group).await.map_err(internal)?;
    Ok(Json(json!({ "object": "list", "group_by": group, "data": rows })).into_response())
}

/// `GET /v1/requests/{id}`: the record and its timeline.
/// A request's record, as soon as its response has ended.
pub(crate) enum Lookup {
    Found(Box<UsageRecord>),
    /// Not recorded yet (still running, or recorded by another node and not yet committed).
    Pending,
}

/// How long after its id was minted a request that is not found is "pending" rather than
/// unknown: longer than a request may run (the upstream's deadline, then a long stream) plus
/// the commit lag. A client can mint nothing that passes for a recent id of ours except by
/// copying one, and "pending" says nothing about whose it is.
const PENDING_WINDOW_MS: u64 = 10 * 60 * 1_000;
/// The longest a lookup waits for this node's journaled records to commit.
const READ_THROUGH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a request's record through what is journaled but not yet committed. A record reaches
/// this node's journal before its response's last byte and the database ~25 ms later, so a
/// lookup that misses while this node has records pending waits for them to commit (a flush
/// skips the writer's linger) and looks again: the node that served a request answers for it
/// from the moment its response ended. Another node cannot see it until that node commits:
/// an id minted within [`PENDING_WINDOW_MS`] is then `Pending`, never "does not exist".
pub(crate) async fn find_record(app: &AppState, account_id: &str, id: &str) -> Result<Lookup, ErrorResponse> {
    if let Some(record) = app.store.usage_record(account_id, id).await.map_err(internal)? {
        return Ok(Lookup::Found(Box::new(record)));
    }
    if app.usage.pending() > 0
        && tokio::time::timeout(READ_THROUGH_WAIT, app.usage.flush()).await.is_ok()
        && let Some(record) = app.store.usage_record(account_id, id).await.map_err(internal)?
    {
        return Ok(Lookup::Found(Box::new(record)));
    }
    let now_ms = u64::try_from(router_one_core::ids::now_us() / 1_000).unwrap_or_default();
    let recent = router_one_core::ids::minted_at_ms(id, "req")
        // A little ahead is another node's clock.
        .is_some_and(|at| at <= now_ms.saturating_add(5_000) && now_ms.saturating_sub(at) < PENDING_WINDOW_MS);
    // Another account's request is "not found", exactly like an id nobody has.
    if recent && !app.store.request_recorded(id).await.map_err(internal)? {
        return Ok(Lookup::Pending);
    }
    Err(ApiError::new(ErrorKind::NotFound, format!("No request `{id}` in this account.")).into())
}

/// 202 with `Retry-After`: the request is not recorded yet; ask again.
pub(crate) fn pending(id: &str) -> Response {
    let body = json!({
        "object": "request",
        "id": id,
        "status": "pending",
        "message": "This request has no record yet: it is still running, or it ended on another gateway node \
                    and its record is being committed. Ask again after Retry-After seconds.",
    });
    let mut response = (http::StatusCode::ACCEPTED, Json(body)).into_response();
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[utoipa::path(
    get,
    path = "/v1/requests/{id}",
    operation_id = "usage_trace",
    tag = "usage",
    summary = "One request's usage record and timeline",
    params(("id" = String, Path, description = "The request id (`x-request-id`).")),
    responses(
        (status = 200, description = "The record and its timeline.", body = crate::openapi::schemas::RequestTrace),
        (status = 202, description = "Not recorded yet (still running, or ended on another node moments ago): ask again after `Retry-After`.", body = crate::openapi::schemas::PendingRequest),
        (status = 401, response = crate::openapi::schemas::Error),
        (status = 404, response = crate::openapi::schemas::Error)
    ),
    security(("management_key" = [])),
)]
pub(crate) async fn trace(
    State(app): State<Arc<AppState>>,
    ManagementAccount(account_id): ManagementAccount,
    Path(id): Path<String>,
) -> Result<Response, ErrorResponse> {
    let record = match find_record(&app, &account_id, &id).await? {
        Lookup::Found(record) => record,
        Lookup::Pending => return Ok(pending(&id)),
    };
    let mut timeline = vec![json!({ "at_us": 0, "event": "received" })];
    if let Some(at) = record.upstream_sent_us {
        timeline.push(json!({ "at_us": at, "event": "sent_upstream", "provider": record.provider }));
    }
    if let Some(at) = record.ttft_us {
        timeline.push(json!({ "at_us": at, "event": "first_byte" }));
    }
    timeline.push(json!({ "at_us": record.latency_us, "event": "completed", "status": record.status }));
    // Every attempt, in order: those that failed over (not billed), then the one that ended
    // the request (the record's route, status and error).
    let mut attempts: Vec<Value> = record
        .failed_attempts
        .iter()
        .map(|a| json!({ "route": a.route, "status": a.status, "error": a.error, "latency_us": a.latency_us, "billed": false }))
        .collect();
    let spent: u64 = record.failed_attempts.iter().map(|a| a.latency_us).sum();
    attempts.push(json!({
        "route": record.provider,
        "status": record.status,
        "error": record.error_code,
        "latency_us": record.latency_us.saturating_sub(spent),
        "billed": true,
    }));
    Ok(Json(json!({
        "object": "request",
        "record": record_json(&record),
        "timeline": timeline,
        "attempts": attempts,
    }))
    .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cell(value: &str) -> String {
        let mut out = String::new();
        csv_field(&mut out, value);
        out
    }

    #[test]
    fn csv_cells_that_a_spreadsheet_would_evaluate_are_escaped() {
        assert_eq!(
            cell("=HYPERLINK(\"http://x\",\"y\")"),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        for start in ["+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "\0x"] {
            assert_eq!(cell(start), format!("\"'{start}\""));
        }
        assert_eq!(cell("gpt-4o"), "gpt-4o", "a dash inside is harmless");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell(""), "");
    }
}
