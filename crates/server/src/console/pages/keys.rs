//! The keys section: the account's inference keys (`GET /v1/keys`) with their spend, budget and
//! live limit counters; a new key (`POST /v1/keys`) whose secret is shown once, on the page that
//! answers the form, and nowhere else; a key's details and edit form (`PATCH /v1/keys/{id}`);
//! revoking with a confirmation (`DELETE /v1/keys/{id}`). Another account's key is the API's 404.

mod form;

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::console::api::{Api, Failure, query_value, text};
use crate::console::form::{NoFields, Posted};
use crate::console::layout::{self, Section};
use crate::console::session::Session;
use crate::state::AppState;

use form::{FormFrame, KeyForm};

/// Keys per page of the list.
const PAGE_SIZE: u32 = 50;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/keys", get(list))
        .route("/console/keys/new", get(new_page).post(create))
        .route("/console/keys/{id}", get(details).post(update))
        .route("/console/keys/{id}/revoke", get(confirm_revoke).post(revoke))
}

/// The console path of key `id`, plus `rest`.
fn key_href(id: &str, rest: &str) -> String {
    format!("/console/keys/{}{rest}", query_value(id))
}

/// The API path of key `id`.
fn key_api(id: &str) -> String {
    format!("/v1/keys/{}", query_value(id))
}

/// What a person calls the key: its name, else its hint.
fn label(key: &Value) -> &str {
    match text(key, "name") {
        "" => text(key, "hint"),
        name => name,
    }
}

/// Active, revoked or expired.
fn status(key: &Value) -> &'static str {
    if !key.get("revoked_at").is_none_or(Value::is_null) {
        return "revoked";
    }
    let expired =
        OffsetDateTime::parse(text(key, "expires_at"), &Rfc3339).is_ok_and(|at| at <= OffsetDateTime::now_utc());
    if expired { "expired" } else { "active" }
}

/// `2030-01-02 03:04 UTC` from the API's RFC 3339 time.
fn when(rfc3339: &str) -> String {
    match rfc3339.get(..16) {
        Some(minute) => format!("{} UTC", minute.replace('T', " ")),
        None => rfc3339.to_owned(),
    }
}

/// `$10 a day`, or "No cap".
fn budget(key: &Value) -> String {
    let cap = text(key, "max_spend");
    if cap.is_empty() {
        return "No cap".into();
    }
    let period = match text(key, "budget_period") {
        "daily" => "a day",
        "weekly" => "a week",
        "monthly" => "a month",
        _ => "in all",
    };
    format!("{} {period}", layout::usd(cap))
}

fn remaining(key: &Value) -> String {
    match key.get("remaining").and_then(Value::as_str) {
        Some(left) => layout::usd(left),
        None => "No cap".into(),
    }
}

/// A live rate-limit counter (`rate_limits.requests` or `.tokens`) as `58 of 60 left` (and,
/// `with_reset`, when the minute's count starts again).
fn counter(key: &Value, which: &str, with_reset: bool) -> String {
    let Some(limits) = key.get("rate_limits").filter(|l| !l.is_null()) else {
        return "—".into();
    };
    let Some(c) = limits.get(which).filter(|c| !c.is_null()) else {
        return "No limit".into();
    };
    let number = |field: &str| c.get(field).and_then(Value::as_u64).unwrap_or_default();
    let (left, limit) = (number("remaining"), number("limit"));
    let counted = format!("{left} of {limit} left");
    match c.get("reset").and_then(Value::as_str) {
        Some(reset) if with_reset && left < limit => format!("{counted}, resets in {reset}"),
        _ => counted,
    }
}

/// A limit setting and, when set, its live counter: `60 a minute (58 of 60 left)`.
fn limit_with_counter(key: &Value, field: &str, which: &str) -> String {
    match key.get(field).and_then(Value::as_u64) {
        Some(limit) => format!("{limit} a minute ({})", counter(key, which, true)),
        None => "No limit".into(),
    }
}

fn model_ids(app: &AppState) -> Vec<String> {
    app.catalog.models().iter().map(|m| m.id.clone()).collect()
}

// ----------------------------------------------------------------------------- the list

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    after: Option<String>,
    revoked: Option<String>,
}

/// `GET /console/keys[?after=CURSOR]`.
async fn list(
    session: Session,
    Extension(api): Extension<Api>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let mut path = format!("/v1/keys?limit={PAGE_SIZE}");
    if let Some(after) = query.after.as_deref().filter(|a| !a.is_empty()) {
        path.push_str(&format!("&after={}", query_value(after)));
    }
    let page = match api.get(&session, &path).await {
        Ok(page) => page,
        Err(failure) => return layout::failed(failure),
    };
    let keys = page.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
    let next = page.get("next_cursor").and_then(Value::as_str);
    let body = html! {
        @if let Some(id) = &query.revoked {
            (layout::notice_box(&format!("Key {id} was revoked: requests with it are refused.")))
        }
        p { a.button href="/console/keys/new" { "Create a key" } }
        @if keys.is_empty() && query.after.is_none() {
            p.card { "No keys yet. Create one, then use it as the key of your OpenAI client or relay channel." }
        } @else {
            (table(&keys))
        }
        @if query.after.is_some() || next.is_some() {
            nav.pager aria-label="Key pages" {
                @if query.after.is_some() { a href="/console/keys" { "First page" } }
                @if let Some(next) = next { a href=(format!("/console/keys?after={}", query_value(next))) { "Next page" } }
            }
        }
    };
    layout::ok(layout::page("Keys", Some(&session), Section::Keys, body))
}

fn table(keys: &[Value]) -> Markup {
    html! {
        div.table-wrap tabindex="0" {
            table #keys {
                caption { "Inference keys, newest first. Limits show what is left of the current minute." }
                thead {
                    tr {
                        th scope="col" { "Name" }
                        th scope="col" { "Key" }
                        th scope="col" { "Status" }
                        th scope="col" .num { "Spend" }
                        th scope="col" { "Budget" }
                        th scope="col" .num { "Remaining" }
                        th scope="col" { "Requests / min" }
                        th scope="col" { "Tokens / min" }
                        th scope="col" { "Created" }
                    }
                }
                tbody {
                    @for key in keys {
                        @let id = text(key, "id");
                        tr id=(format!("key-{id}")) {
                            th scope="row" { a href=(key_href(id, "")) { (label(key)) } }
                            td { code { (text(key, "hint")) } }
                            td { span class=(format!("status {}", status(key))) { (status(key)) } }
                            td.num.spend { (layout::usd(text(key, "spend"))) }
                            td { (budget(key)) }
                            td.num { (remaining(key)) }
                            td { (counter(key, "requests", false)) }
                            td { (counter(key, "tokens", false)) }
                            td { (when(text(key, "created_at"))) }
                        }
                    }
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------- a new key

/// `GET /console/keys/new`.
async fn new_page(State(app): State<Arc<AppState>>, session: Session) -> Response {
    layout::ok(new_key_page(&app, &session, &KeyForm::defaults(), None))
}

fn new_key_page(app: &AppState, session: &Session, values: &KeyForm, error: Option<&Failure>) -> Markup {
    let ids = model_ids(app);
    let token = session.form_token();
    let frame = FormFrame {
        action: "/console/keys/new",
        token: &token,
        submit: "Create key",
        model_ids: &ids,
        error,
    };
    let body = html! {
        p { "Every setting can be changed later, except the secret: it is shown once, on the next page." }
        @if let Some(error) = error { (layout::error_box(&error.message)) }
        (form::render(&frame, values))
    };
    layout::page("New key", Some(session), Section::Keys, body)
}

/// `POST /console/keys/new`: creates the key and shows its secret, once.
async fn create(
    State(app): State<Arc<AppState>>,
    Extension(api): Extension<Api>,
    Posted { session, fields }: Posted<KeyForm>,
) -> Response {
    match api.post(&session, "/v1/keys", &fields.body()).await {
        Ok(key) => layout::ok(secret_page(&session, &key)),
        Err(failure) if failure.status.is_client_error() && failure.status != http::StatusCode::UNAUTHORIZED => {
            let page = new_key_page(&app, &session, &fields, Some(&failure));
            (failure.status, layout::ok(page)).into_response()
        }
        Err(failure) => layout::failed(failure),
    }
}

/// The answer to a created key: its secret in a read-only field with a copy button. The only
/// page that ever shows a secret.
fn secret_page(session: &Session, key: &Value) -> Markup {
    let id = text(key, "id");
    let body = html! {
        p.warning role="alert" {
            strong { "Copy this secret now: it will not be shown again." }
            " Router One keeps only its hash. If you lose it, revoke the key and create another."
        }
        div.card {
            label.copy-label for="key-secret" { "Secret of " (label(key)) }
            div.secret {
                input #key-secret type="text" readonly value=(text(key, "key")) autocomplete="off" spellcheck="false";
                button type="button" data-copy="key-secret" hidden { "Copy" }
                span #key-secret-status role="status" {}
            }
        }
        (facts(key))
        p { a href=(key_href(id, "")) { "Key details" } " · " a href="/console/keys" { "All keys" } " · " a href="/console/docs" { "Use it in a relay or your code" } }
    };
    layout::page("Key created", Some(session), Section::Keys, body)
}

// ----------------------------------------------------------------------------- one key

#[derive(Deserialize, Default)]
pub(crate) struct DetailsQuery {
    saved: Option<String>,
}

/// `GET /console/keys/{id}`: the key's details and its edit form.
async fn details(
    State(app): State<Arc<AppState>>,
    session: Session,
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
    query: Result<Query<DetailsQuery>, QueryRejection>,
) -> Response {
    let saved = query.is_ok_and(|Query(q)| q.saved.is_some());
    match api.get(&session, &key_api(&id)).await {
        Ok(key) => layout::ok(key_page(&app, &session, &key, &KeyForm::of_key(&key), None, saved)),
        Err(failure) => layout::failed(failure),
    }
}

/// `POST /console/keys/{id}`: saves the edit form.
async fn update(
    State(app): State<Arc<AppState>>,
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
    Posted { session, fields }: Posted<KeyForm>,
) -> Response {
    let failure = match api.patch(&session, &key_api(&id), &fields.body()).await {
        Ok(_) => return Redirect::to(&key_href(&id, "?saved=1")).into_response(),
        Err(failure) => failure,
    };
    let refused = failure.status.is_client_error()
        && !matches!(
            failure.status,
            http::StatusCode::UNAUTHORIZED | http::StatusCode::NOT_FOUND
        );
    if !refused {
        return layout::failed(failure);
    }
    match api.get(&session, &key_api(&id)).await {
        Ok(key) => {
            let page = key_page(&app, &session, &key, &fields, Some(&failure), false);
            (failure.status, layout::ok(page)).into_response()
        }
        Err(failure) => layout::failed(failure),
    }
}

fn key_page(
    app: &AppState,
    session: &Session,
    key: &Value,
    values: &KeyForm,
    error: Option<&Failure>,
    saved: bool,
) -> Markup {
    let id = text(key, "id");
    let ids = model_ids(app);
    let token = session.form_token();
    let action = key_href(id, "");
    let frame = FormFrame {
        action: &action,
        token: &token,
        submit: "Save changes",
        model_ids: &ids,
        error,
    };
    let revoked = status(key) == "revoked";
    let body = html! {
        @if saved { (layout::notice_box("Saved.")) }
        p { a href="/console/keys" { "All keys" } }
        (facts(key))
        @if !revoked {
            h2 { "Edit" }
            @if let Some(error) = error { (layout::error_box(&error.message)) }
            (form::render(&frame, values))
            h2 { "Revoke" }
            p { "A revoked key is refused from its next request on. This cannot be undone." }
            p { a.button.danger href=(key_href(id, "/revoke")) { "Revoke this key" } }
        }
    };
    layout::page(&format!("Key {}", label(key)), Some(session), Section::Keys, body)
}

/// The key as the API shows it, never its secret.
fn facts(key: &Value) -> Markup {
    let models = key
        .get("models")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
    let metadata = key
        .get("metadata")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .and_then(|m| serde_json::to_string_pretty(m).ok());
    let number = |field: &str| {
        key.get(field)
            .and_then(Value::as_u64)
            .map_or_else(|| "No limit".to_owned(), |n| n.to_string())
    };
    let yes_no = |field: &str| {
        if key.get(field).and_then(Value::as_bool).unwrap_or(false) {
            "Yes"
        } else {
            "No"
        }
    };
    let period = key.get("period").filter(|p| !p.is_null());
    html! {
        dl.facts.card.narrow-stack #key-facts {
            dt { "Id" } dd { code { (text(key, "id")) } }
            dt { "Name" } dd { (text(key, "name")) }
            dt { "Key" } dd { code { (text(key, "hint")) } }
            dt { "Status" } dd { span class=(format!("status {}", status(key))) { (status(key)) } }
            dt { "Created" } dd { (when(text(key, "created_at"))) }
            dt { "Expires" } dd { @match text(key, "expires_at") { "" => "Never", at => (when(at)) } }
            @if status(key) == "revoked" { dt { "Revoked" } dd { (when(text(key, "revoked_at"))) } }
            dt { "Spend" } dd.spend { (layout::usd(text(key, "spend"))) }
            dt { "Budget" } dd { (budget(key)) }
            @if let Some(period) = period {
                dt { "This period" }
                dd { (layout::usd(text(period, "spend"))) " from " (when(text(period, "start"))) " to " (when(text(period, "end"))) }
            }
            dt { "Held by requests in flight" } dd { (layout::usd(text(key, "reserved"))) }
            dt { "Remaining" } dd { (remaining(key)) }
            dt { "Requests per minute" } dd { (limit_with_counter(key, "rpm_limit", "requests")) }
            dt { "Tokens per minute" } dd { (limit_with_counter(key, "tpm_limit", "tokens")) }
            dt { "Requests at once" } dd { (number("max_concurrency")) }
            dt { "Allowed models" } dd { (models.unwrap_or_else(|| "Every model".into())) }
            dt { "Metadata" } dd { @match metadata { Some(m) => pre { (m) }, None => "None" } }
            dt { "Oversized max_tokens" } dd { (text(key, "on_oversized_max_tokens")) }
            dt { "Usage at the end of every stream" } dd { (yes_no("always_include_usage")) }
            dt { "Router One's headers" } dd { (yes_no("router_headers")) }
        }
    }
}

// ----------------------------------------------------------------------------- revoking

/// `GET /console/keys/{id}/revoke`: are you sure?
async fn confirm_revoke(session: Session, Extension(api): Extension<Api>, Path(id): Path<String>) -> Response {
    let key = match api.get(&session, &key_api(&id)).await {
        Ok(key) => key,
        Err(failure) => return layout::failed(failure),
    };
    let body = html! {
        p { "Revoke key " strong { (label(&key)) } "? Requests with it will be refused." }
        p.muted { "This cannot be undone. Its usage records stay." }
        form.inline method="post" action=(key_href(&id, "/revoke")) {
            (layout::token_field(&session.form_token()))
            button.danger type="submit" { "Revoke key" }
            a.button.secondary href=(key_href(&id, "")) { "Cancel" }
        }
    };
    layout::ok(layout::page("Revoke key", Some(&session), Section::Keys, body))
}

/// `POST /console/keys/{id}/revoke`: revokes, then back to the list.
async fn revoke(
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
    Posted { session, .. }: Posted<NoFields>,
) -> Response {
    match api.delete(&session, &key_api(&id)).await {
        Ok(_) => Redirect::to(&format!("/console/keys?revoked={}", query_value(&id))).into_response(),
        Err(failure) => layout::failed(failure),
    }
}
