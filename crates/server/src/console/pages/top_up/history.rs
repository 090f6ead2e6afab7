//! `GET /console/top-up/history?after=<entry id>`: the account's top-ups, refunds and
//! chargebacks, read from the ledger (`GET /v1/account/ledger`, oldest first, in cursor pages)
//! and paged the same way. The ledger holds every kind of entry (usage debits too), so one page
//! here may read several of the API's pages.

use axum::Extension;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use crate::console::api::{Api, Failure, query_value, text};
use crate::console::layout::{self, Section};
use crate::console::session::Session;

/// Payments shown per page.
const PAGE_ROWS: usize = 50;
/// Ledger entries asked for per API call (the API's largest page).
const LEDGER_PAGE: u32 = 1000;
/// API pages read for one page here at most; past that, the page ends early with a link on.
const MAX_LEDGER_PAGES: usize = 20;

/// The ledger kinds a payment posts, and how the page names them.
const PAYMENT_KINDS: [(&str, &str); 3] = [("topup", "Top-up"), ("refund", "Refund"), ("chargeback", "Chargeback")];

#[derive(Deserialize, Default)]
pub(crate) struct HistoryQuery {
    after: Option<String>,
}

/// One page of payments, and where the next starts (if there is one).
struct Payments {
    rows: Vec<Value>,
    next: Option<String>,
}

/// An entry id (a JSON number) as cursor text.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn cursor_of(entry: &Value) -> Option<String> {
    entry.get("id").map(id_text)
}

fn is_payment(entry: &Value) -> bool {
    let kind = entry.get("kind").and_then(Value::as_str).unwrap_or_default();
    PAYMENT_KINDS.iter().any(|(k, _)| *k == kind)
}

/// Reads ledger pages from `after` until a page of payments (and one more, to know whether
/// another page exists) is found or the ledger ends.
async fn payments(api: &Api, session: &Session, after: Option<&str>) -> Result<Payments, Failure> {
    let mut cursor = after.map(str::to_owned);
    let mut rows = Vec::new();
    for _ in 0..MAX_LEDGER_PAGES {
        let path = match &cursor {
            Some(after) => format!("/v1/account/ledger?limit={LEDGER_PAGE}&after={}", query_value(after)),
            None => format!("/v1/account/ledger?limit={LEDGER_PAGE}"),
        };
        let page = api.get(session, &path).await?;
        let entries = page.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
        for entry in entries.into_iter().filter(is_payment) {
            if rows.len() == PAGE_ROWS {
                let next = rows.last().and_then(cursor_of);
                return Ok(Payments { rows, next });
            }
            rows.push(entry);
        }
        let has_more = page.get("has_more").and_then(Value::as_bool).unwrap_or(false);
        match page.get("next_cursor").filter(|_| has_more) {
            Some(next) => cursor = Some(id_text(next)),
            None => return Ok(Payments { rows, next: None }),
        }
    }
    // Many entries and few payments: go on from where the reading stopped.
    Ok(Payments { rows, next: cursor })
}

fn kind_name(kind: &str) -> &str {
    PAYMENT_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(kind, |(_, name)| name)
}

/// A ledger amount with its sign, exactly as the API wrote it.
fn signed_usd(amount: &str) -> String {
    if amount.starts_with('-') {
        layout::usd(amount)
    } else {
        format!("+{}", layout::usd(amount))
    }
}

fn table(rows: &[Value]) -> Markup {
    html! {
        div.table-wrap tabindex="0" {
            table #payments {
                caption { "Payments, oldest first. Amounts are what each one added to or took from your balance, in USD." }
                thead {
                    tr {
                        th scope="col" { "Date (UTC)" }
                        th scope="col" { "Kind" }
                        th.num scope="col" { "Amount" }
                        th scope="col" { "Payment" }
                    }
                }
                tbody {
                    @for entry in rows {
                        tr data-kind=(text(entry, "kind")) {
                            td { (text(entry, "created_at")) }
                            td { (kind_name(text(entry, "kind"))) }
                            td.num { (signed_usd(text(entry, "amount"))) }
                            td { code { (text(entry, "reference")) } }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/top-up/history`.
pub(crate) async fn page(
    session: Session,
    Extension(api): Extension<Api>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let after = query.after.as_deref().map(str::trim).filter(|a| !a.is_empty());
    let found = match payments(&api, &session, after).await {
        Ok(found) => found,
        Err(failure) => return layout::failed(failure),
    };
    let body = html! {
        p { a href="/console/top-up" { "Top up" } }
        @if found.rows.is_empty() {
            p.card {
                @if after.is_some() { "No more payments." } @else { "No payments yet." }
            }
        } @else {
            (table(&found.rows))
        }
        @if after.is_some() || found.next.is_some() {
            nav.pager aria-label="Pages" {
                @if after.is_some() { a href="/console/top-up/history" { "First page" } }
                @if let Some(next) = &found.next {
                    a href=(format!("/console/top-up/history?after={}", query_value(next))) { "Later payments" }
                }
            }
        }
    };
    layout::ok(layout::page("Payment history", Some(&session), Section::TopUp, body))
}
