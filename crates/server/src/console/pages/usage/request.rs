//! `GET /console/requests/{id}`: one request's usage record, timeline and attempts (`GET
//! /v1/requests/{id}`) and, when it has one, its signed receipt (`GET
//! /v1/requests/{id}/receipt`, docs/receipts.md), checked here against the gateway's published
//! keys so the page can show its claims. Another account's request is the API's 404.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use maud::{Markup, html};
use serde_json::Value;

use super::{count, millis, millis_of, text};
use crate::console::api::{Api, Call, Failure, query_value};
use crate::console::layout::{self, Section};
use crate::console::session::Session;
use crate::state::AppState;

/// Where anyone checks a receipt: the gateway's public keys.
const JWKS_PATH: &str = "/.well-known/jwks.json";

pub(super) async fn page(
    State(app): State<Arc<AppState>>,
    session: Session,
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
) -> Response {
    let trace = match api.get(&session, &format!("/v1/requests/{}", query_value(&id))).await {
        Ok(trace) => trace,
        Err(failure) => return layout::failed(failure),
    };
    let Some(record) = trace.get("record") else {
        // 202: the request is still running, or its record is being committed on another node.
        let body = html! {
            p { code.request-id { (id) } }
            (layout::notice_box("This request is still being recorded: reload the page in a moment."))
            p { a href="/console/usage" { "Back to usage" } }
        };
        let page = layout::page("Request", Some(&session), Section::Usage, body);
        return (
            StatusCode::ACCEPTED,
            [(http::header::RETRY_AFTER, "1")],
            layout::ok(page),
        )
            .into_response();
    };
    let jwks_url = format!("{}{JWKS_PATH}", app.config.public_url.trim_end_matches('/'));
    let receipt = receipt_section(&api, &session, &id, &jwks_url).await;
    let key_name = key_name(&api, &session, text(record, "key_id")).await;
    let body = html! {
        p { a href="/console/usage" { "← Usage" } " · " code.request-id { (id) } }
        h2 { "Record" }
        div.card { (facts(record, key_name.as_deref())) }
        h2 { "Timeline" }
        (timeline(&trace))
        h2 { "Attempts" }
        (attempts(&trace))
        h2 { "Receipt" }
        (receipt)
    };
    layout::ok(layout::page("Request", Some(&session), Section::Usage, body))
}

/// The name of the request's key, if the account still lists it.
async fn key_name(api: &Api, session: &Session, key_id: &str) -> Option<String> {
    let key = api
        .get(session, &format!("/v1/keys/{}", query_value(key_id)))
        .await
        .ok()?;
    Some(text(&key, "name").to_owned())
}

fn facts(r: &Value, key_name: Option<&str>) -> Markup {
    let status = r.get("status").and_then(Value::as_u64).unwrap_or_default();
    let optional = |field: &str| r.get(field).and_then(Value::as_str).map(str::to_owned);
    html! {
        dl.facts #record {
            dt { "Request id" } dd { code { (text(r, "request_id")) } }
            dt { "Time (UTC)" } dd { time datetime=(text(r, "created_at")) { (text(r, "created_at")) } }
            dt { "Key" } dd { @if let Some(name) = key_name { (name) " " } code { (text(r, "key_id")) } }
            dt { "Endpoint" } dd { (text(r, "endpoint")) }
            dt { "Model requested" } dd { (text(r, "requested_model")) }
            dt { "Model served" } dd { (optional("served_model").unwrap_or_else(|| "—".into())) }
            dt { "Route" } dd { (or_dash(text(r, "provider"))) }
            dt { "Prompt tokens" } dd { (count(r, "prompt_tokens")) }
            dt { "Cached tokens" } dd { (count(r, "cached_tokens")) }
            dt { "Cache write tokens" } dd { (count(r, "cache_write_tokens")) }
            dt { "Completion tokens" } dd { (count(r, "completion_tokens")) }
            dt { "Reasoning tokens" } dd { (count(r, "reasoning_tokens")) }
            dt { "Cost" } dd #record-cost { (layout::usd(text(r, "cost"))) }
            dt { "Latency" } dd { (millis_of(r, "latency_us")) }
            dt { "Sent upstream after" } dd { (millis_of(r, "upstream_sent_us")) }
            dt { "First byte after" } dd { (millis_of(r, "ttft_us")) }
            dt { "Status" } dd { (status) }
            dt { "Error" } dd { (optional("error_code").unwrap_or_else(|| "none".into())) }
            dt { "Streamed" } dd { (if r.get("streamed").and_then(Value::as_bool).unwrap_or_default() { "yes" } else { "no" }) }
        }
    }
}

fn timeline(trace: &Value) -> Markup {
    let events = trace
        .get("timeline")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    html! {
        div.table-wrap tabindex="0" {
            table #timeline {
                caption { "What happened, in milliseconds after the request arrived." }
                thead { tr { th.num scope="col" { "At" } th scope="col" { "Event" } th scope="col" { "Detail" } } }
                tbody {
                    @for e in &events {
                        tr {
                            td.num { (millis_of(e, "at_us")) }
                            th scope="row" { (text(e, "event").replace('_', " ")) }
                            td {
                                @if let Some(provider) = e.get("provider").and_then(Value::as_str) { "route " (provider) }
                                @if let Some(status) = e.get("status").and_then(Value::as_u64) { "status " (status) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn attempts(trace: &Value) -> Markup {
    let attempts = trace
        .get("attempts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    html! {
        div.table-wrap tabindex="0" {
            table #attempts {
                caption { "Every route tried, in order; only the last one is billed." }
                thead {
                    tr {
                        th scope="col" { "Route" }
                        th.num scope="col" { "Status" }
                        th scope="col" { "Error" }
                        th.num scope="col" { "Time" }
                        th scope="col" { "Billed" }
                    }
                }
                tbody {
                    @for a in &attempts {
                        tr {
                            th scope="row" { (or_dash(text(a, "route"))) }
                            td.num { (count(a, "status")) }
                            td { (a.get("error").and_then(Value::as_str).unwrap_or("none")) }
                            td.num { (a.get("latency_us").and_then(Value::as_u64).map_or_else(|| "—".to_owned(), millis)) }
                            td { (if a.get("billed").and_then(Value::as_bool).unwrap_or_default() { "yes" } else { "no" }) }
                        }
                    }
                }
            }
        }
    }
}

/// The receipt, checked against the published keys, or why there is none.
async fn receipt_section(api: &Api, session: &Session, id: &str, jwks_url: &str) -> Markup {
    let answer = api
        .get(session, &format!("/v1/requests/{}/receipt", query_value(id)))
        .await;
    let receipt = match answer {
        Ok(answer) => answer.get("receipt").and_then(Value::as_str).map(str::to_owned),
        // No receipt: receipts are off, or this endpoint's answers are not signed.
        Err(failure) if failure.status == StatusCode::NOT_FOUND => {
            return html! { p.muted #no-receipt { (failure.message) } };
        }
        Err(failure) => return layout::error_box(&failure.message),
    };
    let Some(receipt) = receipt else {
        return html! { p.muted { "The receipt is still being recorded: reload the page in a moment." } };
    };
    let checked = jwks(api).await.map(|keys| router_one_receipts::verify(&receipt, &keys));
    html! {
        div.card.receipt {
            label for="receipt" { "The signed receipt" }
            textarea #receipt readonly rows="6" spellcheck="false" { (receipt) }
            div.copy-row {
                button type="button" data-copy="receipt" hidden { "Copy the receipt" }
                span #receipt-status role="status" {}
            }
            p {
                "Anyone can check it offline against the gateway's public keys, "
                a href=(JWKS_PATH) { (JWKS_PATH) } ", with "
                code { "router-one verify RECEIPT --jwks " (jwks_url) }
                " (see docs/receipts.md); with the response body saved, "
                code { "--body body.json" } " also checks it is the body received."
            }
            @match checked {
                Ok(Ok(verified)) => {
                    (layout::notice_box(&format!(
                        "Checked here: signed by key {} in a batch of {} receipt{}.",
                        verified.kid,
                        verified.batch.leaves,
                        if verified.batch.leaves == 1 { "" } else { "s" }
                    )))
                    h3 { "What it states" }
                    (claims(&verified.claims))
                }
                Ok(Err(error)) => (layout::error_box(&format!("This receipt does not verify against the published keys: {error}."))),
                Err(failure) => (layout::error_box(&failure.message)),
            }
        }
    }
}

/// The gateway's published keys, as anyone fetching `/.well-known/jwks.json` gets them.
async fn jwks(api: &Api) -> Result<router_one_receipts::Jwks, Failure> {
    let answer = api
        .send(Call {
            method: Method::GET,
            path: JWKS_PATH,
            bearer: None,
            body: None,
            forwarded_for: None,
        })
        .await?;
    serde_json::from_slice(&answer.body).map_err(|_| Failure {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "The gateway's public keys could not be read.".into(),
        param: None,
    })
}

/// The receipt's claims as facts (`usage` spread into its counts).
fn claims(claims: &Value) -> Markup {
    let mut facts: Vec<(String, String)> = Vec::new();
    if let Some(object) = claims.as_object() {
        for (name, value) in object {
            match value.as_object() {
                Some(inner) => {
                    for (part, value) in inner {
                        facts.push((format!("{name}.{part}"), plain(value)));
                    }
                }
                None => facts.push((name.clone(), plain(value))),
            }
        }
    }
    html! {
        dl.facts #claims {
            @for (name, value) in &facts {
                dt { code { (name) } }
                dd { @if name == "created_at_us" { (value) " (" (when_us(value)) ")" } @else { (value) } }
            }
        }
    }
}

/// `text`, or a dash when there is none (a request refused before any route was chosen).
fn or_dash(text: &str) -> &str {
    if text.is_empty() { "—" } else { text }
}

/// A claim's value as text: strings without quotes, `null` as it is.
fn plain(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// µs since the epoch, as a UTC time to the second.
fn when_us(us: &str) -> String {
    let Some(t) = us
        .parse::<i64>()
        .ok()
        .and_then(|us| time::OffsetDateTime::from_unix_timestamp(us.div_euclid(1_000_000)).ok())
    else {
        return String::new();
    };
    let shown = t.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ));
    shown.map(|s| s + " UTC").unwrap_or_default()
}
