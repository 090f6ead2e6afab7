//! The models section: the catalog with its posted rates, limits and capabilities (the JSON of
//! `GET /v1/models`, built by the same function, for every model: no key filters it here), and
//! "try it": one chat request sent with a key the visitor pastes, its reply and the usage record
//! it made. The message and the reply are shown once and never logged or kept.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http::{Method, StatusCode};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::console::api::{Api, Call, Failure, query_value, text};
use crate::console::form::{Posted, filled};
use crate::console::layout::{self, Section};
use crate::console::session::Session;
use crate::routes::models::model_json;
use crate::state::AppState;

/// How often, and how far apart, the usage record is asked for while the API says it is pending.
const RECORD_TRIES: u32 = 20;
const RECORD_PAUSE: Duration = Duration::from_millis(100);

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/models", get(page))
        .route("/console/models/try", post(try_it))
}

/// Every catalog model as `GET /v1/models` shows it.
fn catalog(app: &AppState) -> Vec<Value> {
    app.catalog.models().iter().map(|m| model_json(m)).collect()
}

fn rate(model: &Value, field: &str) -> String {
    model
        .get("pricing")
        .and_then(|p| p.get(field))
        .and_then(Value::as_str)
        .map_or_else(|| "—".to_owned(), layout::usd)
}

fn capability(model: &Value, field: &str) -> &'static str {
    let has = model
        .get("capabilities")
        .and_then(|c| c.get(field))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if has { "Yes" } else { "No" }
}

fn tokens(model: &Value, field: &str) -> String {
    model
        .get(field)
        .and_then(Value::as_u64)
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// `GET /console/models`.
async fn page(State(app): State<Arc<AppState>>, session: Session) -> Response {
    let models = catalog(&app);
    let body = html! {
        p {
            "Every model Router One serves, at its posted rates: what a request costs is its tokens at these rates, exactly. "
            a href="#try" { "Try one" } "."
        }
        (table(&models))
        (try_form(&session, &models, &TryForm::default()))
    };
    layout::ok(layout::page("Models", Some(&session), Section::Models, body))
}

fn table(models: &[Value]) -> Markup {
    html! {
        div.table-wrap tabindex="0" {
            table #models {
                caption { "Rates in USD per 1 million tokens; windows and limits in tokens." }
                thead {
                    tr {
                        th scope="col" { "Model" }
                        th scope="col" { "Kind" }
                        th scope="col" .num { "Input" }
                        th scope="col" .num { "Cached input" }
                        th scope="col" .num { "Output" }
                        th scope="col" .num { "Context window" }
                        th scope="col" .num { "Max output" }
                        th scope="col" { "Tools" }
                        th scope="col" { "Vision" }
                        th scope="col" { "Reasoning" }
                    }
                }
                tbody {
                    @for m in models {
                        tr id=(format!("model-{}", text(m, "id"))) {
                            th scope="row" { code { (text(m, "id")) } }
                            td { (text(m, "kind")) }
                            td.num data-rate="input" { (rate(m, "input_per_mtok")) }
                            td.num data-rate="cached_input" { (rate(m, "cached_input_per_mtok")) }
                            td.num data-rate="output" { (rate(m, "output_per_mtok")) }
                            td.num { (tokens(m, "context_window")) }
                            td.num { (tokens(m, "max_output")) }
                            td { (capability(m, "tools")) }
                            td { (capability(m, "vision")) }
                            td { (capability(m, "reasoning")) }
                        }
                    }
                }
            }
        }
    }
}

/// The "try it" form as posted. The key is never shown back.
#[derive(Deserialize, Default)]
pub(crate) struct TryForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    message: String,
}

fn try_form(session: &Session, models: &[Value], filled: &TryForm) -> Markup {
    let chat = models
        .iter()
        .filter(|m| text(m, "kind") == "chat")
        .map(|m| text(m, "id"));
    html! {
        h2 #try { "Try it" }
        p {
            "Sends one chat request with a key of yours, billed to its account like any other, and shows the reply and its usage record. "
            "The message and the reply are not kept. Need a key? " a href="/console/keys/new" { "Create one" } "."
        }
        form.stack.card method="post" action="/console/models/try" {
            (layout::token_field(&session.form_token()))
            label {
                "Key secret"
                span.hint #try-key-hint { "An sk-rk-… inference key. It is used for this request only." }
                input type="password" name="key" autocomplete="off" required aria-describedby="try-key-hint";
            }
            label {
                "Model"
                select name="model" {
                    @for id in chat {
                        option value=(id) selected[id == filled.model] { (id) }
                    }
                }
            }
            label {
                "Message"
                textarea name="message" rows="3" required { (filled.message) }
            }
            button type="submit" { "Send" }
        }
    }
}

/// `POST /console/models/try`: one `POST /v1/chat/completions` with the pasted key, then its
/// usage record, read with the session.
async fn try_it(
    State(app): State<Arc<AppState>>,
    Extension(api): Extension<Api>,
    Posted { session, fields }: Posted<TryForm>,
) -> Response {
    let models = catalog(&app);
    let request = json!({
        "model": fields.model,
        "messages": [{ "role": "user", "content": fields.message }],
    });
    let sent = api
        .send(Call {
            method: Method::POST,
            path: "/v1/chat/completions",
            bearer: filled(&fields.key),
            body: Some(&request),
            forwarded_for: session.forwarded_for.as_ref(),
        })
        .await;
    let (status, outcome) = match sent {
        Ok(answer) => {
            let request_id = answer
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let reply = answer.json().map(|json| reply_text(&json)).unwrap_or_default();
            let record = record(&api, &session, &request_id).await;
            (StatusCode::OK, answered(&reply, &request_id, &record))
        }
        // The API's refusal of the request (a wrong key, a budget, a model), under its status.
        Err(failure) => (failure.status, layout::error_box(&failure.message)),
    };
    let body = html! {
        p { a href="/console/models" { "All models" } }
        (outcome)
        (try_form(&session, &models, &fields))
    };
    (
        status,
        layout::ok(layout::page("Try a model", Some(&session), Section::Models, body)),
    )
        .into_response()
}

/// The first choice's text.
fn reply_text(answer: &Value) -> String {
    answer
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The request's usage record, asked for again while the API answers it is pending.
async fn record(api: &Api, session: &Session, request_id: &str) -> Result<Value, Failure> {
    let path = format!("/v1/requests/{}", query_value(request_id));
    let mut tries = 0;
    loop {
        let answer = api.get(session, &path).await?;
        tries += 1;
        if text(&answer, "status") != "pending" || tries >= RECORD_TRIES {
            return Ok(answer.get("record").cloned().unwrap_or(answer));
        }
        tokio::time::sleep(RECORD_PAUSE).await;
    }
}

fn answered(reply: &str, request_id: &str, record: &Result<Value, Failure>) -> Markup {
    html! {
        section.card.result aria-labelledby="reply-heading" {
            h2 #reply-heading { "Reply" }
            p.reply #reply { (reply) }
        }
        section.card.result aria-labelledby="record-heading" {
            h2 #record-heading { "Usage record" }
            @match record {
                Ok(r) if text(r, "status") != "pending" => (record_facts(request_id, r)),
                Ok(_) => p { "Request " code { (request_id) } ": its record is not written yet. It will be in your usage in a moment." },
                Err(failure) => {
                    p { "Request " code { (request_id) } ": " (failure.message) }
                    p.muted { "A key of another account is billed to that account, and only it sees the record." }
                }
            }
        }
    }
}

fn record_facts(request_id: &str, r: &Value) -> Markup {
    let number = |field: &str| r.get(field).and_then(Value::as_u64).unwrap_or_default();
    let latency_us = number("latency_us");
    html! {
        dl.facts.narrow-stack #record {
            dt { "Request id" } dd { code #request-id { (request_id) } }
            dt { "Model" } dd { (text(r, "served_model")) @if text(r, "requested_model") != text(r, "served_model") { " (asked for " (text(r, "requested_model")) ")" } }
            dt { "Provider" } dd { (text(r, "provider")) }
            dt { "Input tokens" } dd { (number("prompt_tokens")) @if number("cached_tokens") > 0 { " (" (number("cached_tokens")) " cached)" } }
            dt { "Output tokens" } dd { (number("completion_tokens")) @if number("reasoning_tokens") > 0 { " (" (number("reasoning_tokens")) " reasoning)" } }
            dt { "Cost" } dd #record-cost { (layout::usd(text(r, "cost"))) }
            dt { "Latency" } dd { (latency_us / 1000) "." (format!("{:01}", (latency_us % 1000) / 100)) " ms" }
            dt { "Status" } dd { (number("status")) @if !text(r, "error_code").is_empty() { " (" (text(r, "error_code")) ")" } }
        }
    }
}
