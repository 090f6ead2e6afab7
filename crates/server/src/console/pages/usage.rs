//! The usage section: `GET /console/usage` (the per-request table of `GET /v1/usage`, its
//! filters and cursor pages), `/console/usage/download` (this page as the API's CSV or JSON
//! Lines), `/console/usage/summary` (totals by key, model or day, and their chart) and
//! `/console/requests/{id}` (one request's record, timeline and receipt).

mod filters;
mod request;
mod summary;

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, body::Body};
use http::{HeaderValue, Method, StatusCode, header};
use maud::{Markup, html};
use serde_json::Value;

use crate::console::api::{Answer, Api, Failure, query_value, text};
use crate::console::layout::{self, Section};
use crate::console::session::Session;
use crate::state::AppState;

use filters::{Choices, Filters, KeyChoice};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/usage", get(page))
        .route("/console/usage/download", get(download))
        .route("/console/usage/summary", get(summary::page))
        .route("/console/requests/{id}", get(request::page))
}

/// The query of a usage page; one the browser mangled reads as no filters.
fn filters_of(query: Result<Query<Filters>, QueryRejection>) -> Filters {
    query.map(|Query(f)| f).unwrap_or_default()
}

/// A whole-number field of an API object as text ("—" when absent or null).
fn count(row: &Value, field: &str) -> String {
    row.get(field)
        .and_then(Value::as_u64)
        .map_or_else(|| "—".to_owned(), |n| n.to_string())
}

/// Microseconds as milliseconds with one decimal (`3014` → `3.0 ms`).
fn millis(us: u64) -> String {
    format!("{}.{} ms", us / 1000, us % 1000 / 100)
}

/// A µs field as milliseconds ("—" when absent or null).
fn millis_of(row: &Value, field: &str) -> String {
    row.get(field)
        .and_then(Value::as_u64)
        .map_or_else(|| "—".to_owned(), millis)
}

/// `2026-11-28T09:06:06.544578Z` as `2026-11-28 09:06:06` (UTC, to the second).
fn when(rfc3339: &str) -> String {
    rfc3339
        .get(..19)
        .map_or_else(|| rfc3339.to_owned(), |t| t.replacen('T', " ", 1))
}

/// The `data` array of a list answer.
fn rows(answer: &Value) -> Vec<Value> {
    answer
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The account's keys (the first 1000, newest first), named as the page shows them.
async fn key_choices(api: &Api, session: &Session) -> Result<Vec<KeyChoice>, Failure> {
    let keys = api.get(session, "/v1/keys?limit=1000").await?;
    Ok(rows(&keys)
        .iter()
        .map(|k| {
            let revoked = k.get("revoked_at").is_some_and(|r| !r.is_null());
            let label = format!(
                "{} ({}){}",
                text(k, "name"),
                text(k, "hint"),
                if revoked { ", revoked" } else { "" }
            );
            KeyChoice {
                id: text(k, "id").to_owned(),
                label,
            }
        })
        .collect())
}

/// How a key id reads on the page: its name when the account has it.
fn key_name<'a>(keys: &'a [KeyChoice], id: &'a str) -> &'a str {
    keys.iter().find(|k| k.id == id).map_or(id, |k| k.label.as_str())
}

/// Every model the account has requests for (the summary by model's groups).
async fn used_models(api: &Api, session: &Session) -> Result<Vec<String>, Failure> {
    let summary = api.get(session, "/v1/usage/summary?group_by=model").await?;
    Ok(rows(&summary).iter().map(|r| text(r, "group").to_owned()).collect())
}

/// The usage views, as tabs keeping the filters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum View<'a> {
    Requests,
    /// A summary grouped by `key`, `model` or `day`.
    By(&'a str),
}

fn views(current: View<'_>, filters: &Filters) -> Markup {
    let tabs = [
        (
            View::Requests,
            filters.link("/console/usage", &filters.limit_pair()),
            "Requests",
        ),
        (
            View::By("key"),
            filters.link("/console/usage/summary", &[("group_by", "key".into())]),
            "By key",
        ),
        (
            View::By("model"),
            filters.link("/console/usage/summary", &[("group_by", "model".into())]),
            "By model",
        ),
        (
            View::By("day"),
            filters.link("/console/usage/summary", &[("group_by", "day".into())]),
            "By day",
        ),
    ];
    html! {
        nav.tabs aria-label="Usage views" {
            ul {
                @for (view, href, label) in tabs {
                    li {
                        @if view == current { a href=(href) aria-current="page" { (label) } }
                        @else { a href=(href) { (label) } }
                    }
                }
            }
        }
    }
}

/// `GET /console/usage`.
async fn page(
    session: Session,
    Extension(api): Extension<Api>,
    query: Result<Query<Filters>, QueryRejection>,
) -> Response {
    let filters = filters_of(query);
    let (keys, models) = match tokio::try_join!(key_choices(&api, &session), used_models(&api, &session)) {
        Ok(found) => found,
        Err(failure) => return layout::failed(failure),
    };
    let choices = Choices {
        keys: &keys,
        models: &models,
        action: "/console/usage",
        paged: true,
    };
    let listed = api.get(&session, &format!("/v1/usage?{}", filters.usage_query())).await;
    let (status, results) = match listed {
        Ok(answer) => (StatusCode::OK, table(&answer, &filters, &keys)),
        // A filter the API refused: the form again, with its words.
        Err(failure) if failure.status.is_client_error() && failure.status != StatusCode::UNAUTHORIZED => {
            (failure.status, layout::error_box(&failure.message))
        }
        Err(failure) => return layout::failed(failure),
    };
    let body = html! {
        (views(View::Requests, &filters))
        h2 { "Filter" }
        (filters::form(&filters, &choices))
        (results)
    };
    let page = layout::page("Usage", Some(&session), Section::Usage, body);
    (status, layout::ok(page)).into_response()
}

/// The request table of one `GET /v1/usage` page, its pager and its downloads.
fn table(answer: &Value, filters: &Filters, keys: &[KeyChoice]) -> Markup {
    let records = rows(answer);
    let next = answer.get("next_cursor").and_then(Value::as_str);
    let mut next_pairs = filters.limit_pair();
    if let Some(cursor) = next {
        next_pairs.push(("after", cursor.to_owned()));
    }
    html! {
        h2 #requests { "Requests" }
        @if records.is_empty() {
            p.card { "No requests match these filters" @if filters.after.is_some() { " after this point" } "." }
        } @else {
            div.table-wrap tabindex="0" {
                table.usage {
                    caption { "Requests, newest first; times in UTC, costs in USD exactly as billed." }
                    thead {
                        tr {
                            th scope="col" { "Time" }
                            th scope="col" { "Request" }
                            th scope="col" { "Key" }
                            th scope="col" { "Model (served)" }
                            th.num scope="col" { "Prompt" }
                            th.num scope="col" { "Cached" }
                            th.num scope="col" { "Completion" }
                            th.num scope="col" { "Cost" }
                            th.num scope="col" { "Latency" }
                            th.num scope="col" { "Status" }
                        }
                    }
                    tbody {
                        @for r in &records { (row(r, keys)) }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if filters.after.is_some() {
                a href=(filters.link("/console/usage", &filters.limit_pair())) { "First page" }
            }
            @if next.is_some() {
                a rel="next" href=(filters.link("/console/usage", &next_pairs)) { "Next page" }
            }
        }
        p.downloads {
            "Download every request these filters match, oldest first: "
            a href=(filters.download_link("csv")) download { "CSV" }
            " · "
            a href=(filters.download_link("jsonl")) download { "JSON Lines" }
        }
    }
}

fn row(r: &Value, keys: &[KeyChoice]) -> Markup {
    let id = text(r, "request_id");
    let requested = text(r, "requested_model");
    let served = text(r, "served_model");
    let status = r.get("status").and_then(Value::as_u64).unwrap_or_default();
    html! {
        tr {
            td { time datetime=(text(r, "created_at")) { (when(text(r, "created_at"))) } }
            th scope="row" { a href=(format!("/console/requests/{}", query_value(id))) { code { (id) } } }
            td { (key_name(keys, text(r, "key_id"))) }
            td {
                (requested)
                @if !served.is_empty() && served != requested { span.muted { " → " (served) } }
            }
            td.num { (count(r, "prompt_tokens")) }
            td.num { (count(r, "cached_tokens")) }
            td.num { (count(r, "completion_tokens")) }
            td.num.cost { (layout::usd(text(r, "cost"))) }
            td.num { (millis_of(r, "latency_us")) }
            td.num {
                @if (200..300).contains(&status) { (status) }
                @else { strong.status-bad { (status) } @if let Some(code) = r.get("error_code").and_then(Value::as_str) { " " span.muted { (code) } } }
            }
        }
    }
}

/// Most pages of 1,000 records one download reads: a million records.
const MAX_DOWNLOAD_PAGES: usize = 1_000;

/// `GET /console/usage/download?format=csv|jsonl&…`: every record the filters match, oldest
/// first, as the API writes them (`GET /v1/usage?format=…`), read page after page while the
/// browser downloads, so a long history never sits whole in memory. A CSV's header comes once.
async fn download(
    session: Session,
    Extension(api): Extension<Api>,
    query: Result<Query<Filters>, QueryRejection>,
) -> Response {
    let filters = filters_of(query);
    let format = filters.format.clone().unwrap_or_else(|| "csv".to_owned());
    // The first page now: a filter the API refuses is a page saying why, not a broken file.
    let path = format!("/v1/usage?{}", filters.download_query(&format, None));
    let first = match api.as_visitor(&session, Method::GET, &path, None).await {
        Ok(answer) => answer,
        Err(failure) => return layout::failed(failure),
    };
    let content_type = first
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let rest = futures_util::stream::unfold(
        (next_cursor(&first), 1, api, session, filters, format.clone()),
        |(cursor, pages, api, session, filters, format)| async move {
            let cursor = cursor.filter(|_| pages < MAX_DOWNLOAD_PAGES)?;
            let path = format!("/v1/usage?{}", filters.download_query(&format, Some(&cursor)));
            let page = match api.as_visitor(&session, Method::GET, &path, None).await {
                Ok(page) => page,
                Err(failure) => {
                    // The browser shows the download as failed rather than silently short.
                    tracing::warn!(status = failure.status.as_u16(), "usage download stopped");
                    let stopped = std::io::Error::other("the usage listing failed");
                    return Some((Err(stopped), (None, pages, api, session, filters, format)));
                }
            };
            let next = next_cursor(&page);
            let body = if format == "csv" {
                without_header(page.body)
            } else {
                page.body
            };
            Some((Ok(body), (next, pages + 1, api, session, filters, format)))
        },
    );
    let first_page = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first.body) });
    let mut response = Body::from_stream(futures_util::StreamExt::chain(first_page, rest)).into_response();
    // The API accepted the format, so it is one of its few names: a safe file name.
    let disposition = HeaderValue::from_str(&format!("attachment; filename=usage.{format}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    response
}

/// The cursor of the page after this one, if there is one (`x-next-cursor`).
fn next_cursor(page: &Answer) -> Option<String> {
    page.headers
        .get("x-next-cursor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A CSV page without its first line (the header the first page already gave).
fn without_header(csv: bytes::Bytes) -> bytes::Bytes {
    match csv.iter().position(|&b| b == b'\n') {
        Some(end) => csv.slice(end + 1..),
        None => bytes::Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_page_after_the_first_loses_only_its_header() {
        let page = bytes::Bytes::from_static(b"request_id,cost\nreq_1,0.1\nreq_2,0.2\n");
        assert_eq!(&without_header(page)[..], b"req_1,0.1\nreq_2,0.2\n");
        assert!(without_header(bytes::Bytes::from_static(b"request_id,cost")).is_empty());
    }

    #[test]
    fn times_and_latencies_read_as_people_write_them() {
        assert_eq!(when("2026-11-28T09:06:06.544578Z"), "2026-11-28 09:06:06");
        assert_eq!(when("soon"), "soon");
        assert_eq!(millis(3014), "3.0 ms");
        assert_eq!(millis(1_234_567), "1234.5 ms");
    }
}
