//! `/console/top-up`: an amount, a currency and a payment channel → the quote, line by line
//! (`POST /v1/checkout/quote`) → a checkout session (`POST /v1/checkout/sessions`) whose page
//! links to the provider's payment page. The provider sends the payer back to that page (the
//! session's return URL), which then shows the payment and the credited balance.
//! `/console/top-up/history` lists the payments in the ledger.

mod history;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use router_one_core::checkout::{MAX_AMOUNT_USD, MIN_AMOUNT_USD};

use crate::console::api::{Api, Failure, query_value};
use crate::console::form::Posted;
use crate::console::layout::{self, Section};
use crate::console::session::Session;
use crate::routes::checkout::offered_channels;
use crate::state::AppState;

const TITLE: &str = "Top up";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/top-up", get(form_page))
        .route("/console/top-up/quote", post(quote))
        .route("/console/top-up/pay", post(pay))
        .route("/console/top-up/history", get(history::page))
        .route("/console/top-up/{id}", get(session_page))
}

/// The top-up form, as posted (every field a string: the API parses and judges them).
#[derive(Deserialize, Default)]
pub(crate) struct TopUp {
    #[serde(default)]
    amount_usd: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    channel: String,
}

impl TopUp {
    fn request(&self) -> Value {
        json!({ "amount_usd": self.amount_usd, "currency": self.currency, "channel": self.channel })
    }
}

/// The channels on offer and the currencies each takes.
type Offered = [(String, Vec<String>)];

/// Every currency some channel takes, sorted, once each.
fn currencies(offered: &Offered) -> Vec<&str> {
    let mut all: Vec<&str> = offered.iter().flat_map(|(_, c)| c.iter().map(String::as_str)).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// A field of the API's answer as the API wrote it: a string as is, anything else as JSON text.
fn shown(value: &Value, field: &str) -> String {
    match value.get(field) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The option to select: the one posted, else `preferred` if offered, else the first.
fn chosen<'a>(posted: &'a str, options: &[&'a str], preferred: &str) -> &'a str {
    match posted.trim() {
        "" => options
            .iter()
            .find(|o| **o == preferred)
            .or(options.first())
            .copied()
            .unwrap_or_default(),
        posted => posted,
    }
}

/// The form, filled with `filled` (defaults: USD by card, where offered).
fn top_up_form(session: &Session, offered: &Offered, filled: &TopUp, error: Option<&Failure>) -> Markup {
    let currencies = currencies(offered);
    let channels: Vec<&str> = offered.iter().map(|(c, _)| c.as_str()).collect();
    let currency = chosen(&filled.currency, &currencies, "USD");
    let channel = chosen(&filled.channel, &channels, "card");
    let invalid = |field: &str| error.and_then(|e| e.about(field)).map(|_| "true");
    html! {
        @if let Some(error) = error { (layout::error_box(&error.message)) }
        form.stack.card method="post" action="/console/top-up/quote" {
            (layout::token_field(&session.form_token()))
            label {
                "Amount of credit (USD)"
                span.hint #amount-hint {
                    "From " (MIN_AMOUNT_USD) " to " (MAX_AMOUNT_USD) " USD, in whole cents. "
                    "Exactly this is added to your balance; FX and payment fees are shown on their own lines."
                }
                input #amount type="text" name="amount_usd" inputmode="decimal" autocomplete="off" required
                    value=(filled.amount_usd) aria-describedby="amount-hint" aria-invalid=[invalid("amount_usd")];
            }
            label {
                "Pay in"
                select #currency name="currency" aria-invalid=[invalid("currency")] {
                    @for code in &currencies {
                        option value=(code) selected[*code == currency] { (code) }
                    }
                }
            }
            label {
                "Payment channel"
                span.hint #channel-hint {
                    @for (i, (name, takes)) in offered.iter().enumerate() {
                        @if i > 0 { "; " }
                        (name) " takes " (takes.join(", "))
                    }
                    "."
                }
                select #channel name="channel" aria-describedby="channel-hint" aria-invalid=[invalid("channel")] {
                    @for (name, _) in offered {
                        option value=(name) selected[*name == channel] { (name) }
                    }
                }
            }
            button type="submit" { "Get a quote" }
        }
        p { a href="/console/top-up/history" { "Payment history" } }
    }
}

/// The quote's lines, each on its own row, as the API gave them.
fn quote_table(quote: &Value, caption: &str) -> Markup {
    let currency = shown(quote, "currency");
    let row = |label: Markup, id: &str, amount: String, unit: &str| {
        html! {
            tr {
                th scope="row" { (label) }
                td.num { span id=(id) { (amount) } " " (unit) }
            }
        }
    };
    html! {
        div.table-wrap.quote tabindex="0" {
            table {
                caption { (caption) }
                tbody {
                    (row(html! { "Credit to your balance (token line)" }, "quote-token-line", shown(quote, "token_line_usd"), "USD"))
                    tr {
                        th scope="row" { "FX rate" }
                        td.num {
                            span #quote-fx-rate { (shown(quote, "fx_rate")) } " " (currency) " per USD"
                            br;
                            span.muted { "as of " time #quote-fx-as-of datetime=(shown(quote, "fx_as_of")) { (shown(quote, "fx_as_of")) } ", set by this gateway's operator" }
                        }
                    }
                    (row(html! { "Credit in " (currency) }, "quote-converted", shown(quote, "converted"), &currency))
                    (row(html! { "FX cost" }, "quote-fx-cost", shown(quote, "fx_cost"), &currency))
                    (row(html! { "Channel fee (" (shown(quote, "channel")) ")" }, "quote-channel-fee", shown(quote, "channel_fee"), &currency))
                    tr.total {
                        th scope="row" { "Total to pay" }
                        td.num { strong { span #quote-total { (shown(quote, "total")) } " " (currency) } }
                    }
                }
            }
        }
        p.muted { (shown(quote, "rounding")) }
    }
}

/// The form page with the API's refusal, under the API's status; a failure the visitor cannot
/// fix by editing the form (signed out, a server fault) is the usual failure page.
fn refused(session: &Session, offered: &Offered, filled: &TopUp, failure: &Failure) -> Response {
    if failure.status == StatusCode::UNAUTHORIZED || failure.status == StatusCode::INTERNAL_SERVER_ERROR {
        return layout::failed(failure.clone());
    }
    let body = top_up_form(session, offered, filled, Some(failure));
    (
        failure.status,
        layout::ok(layout::page(TITLE, Some(session), Section::TopUp, body)),
    )
        .into_response()
}

/// `GET /console/top-up`.
async fn form_page(State(app): State<Arc<AppState>>, session: Session, Extension(api): Extension<Api>) -> Response {
    let account = match api.get(&session, "/v1/account").await {
        Ok(account) => account,
        Err(failure) => return layout::failed(failure),
    };
    let offered = offered_channels(&app);
    let body = html! {
        p { "Your balance: " strong #balance { (layout::usd(&shown(&account, "balance"))) } }
        @if offered.is_empty() {
            (layout::error_box("This gateway offers no payment channel yet."))
        } @else {
            (top_up_form(&session, &offered, &TopUp::default(), None))
        }
    };
    layout::ok(layout::page(TITLE, Some(&session), Section::TopUp, body))
}

/// `POST /console/top-up/quote`: the form again, with the quote under it and a way on to pay.
async fn quote(
    State(app): State<Arc<AppState>>,
    Extension(api): Extension<Api>,
    Posted { session, fields }: Posted<TopUp>,
) -> Response {
    let offered = offered_channels(&app);
    let quote = match api.post(&session, "/v1/checkout/quote", &fields.request()).await {
        Ok(quote) => quote,
        Err(failure) => return refused(&session, &offered, &fields, &failure),
    };
    let caption = format!(
        "{} USD of credit, paid in {} by {}",
        shown(&quote, "token_line_usd"),
        shown(&quote, "currency"),
        shown(&quote, "channel")
    );
    let body = html! {
        (top_up_form(&session, &offered, &fields, None))
        section aria-labelledby="quote-heading" {
            h2 #quote-heading { "Your quote" }
            (quote_table(&quote, &caption))
            form.inline method="post" action="/console/top-up/pay" {
                (layout::token_field(&session.form_token()))
                input type="hidden" name="amount_usd" value=(shown(&quote, "token_line_usd"));
                input type="hidden" name="currency" value=(shown(&quote, "currency"));
                input type="hidden" name="channel" value=(shown(&quote, "channel"));
                button type="submit" { "Continue to payment" }
            }
        }
    };
    layout::ok(layout::page(TITLE, Some(&session), Section::TopUp, body))
}

/// `POST /console/top-up/pay`: opens the checkout session, then shows its page.
async fn pay(
    State(app): State<Arc<AppState>>,
    Extension(api): Extension<Api>,
    Posted { session, fields }: Posted<TopUp>,
) -> Response {
    match api.post(&session, "/v1/checkout/sessions", &fields.request()).await {
        Ok(opened) => {
            let id = shown(&opened, "id");
            Redirect::to(&format!("/console/top-up/{}", query_value(&id))).into_response()
        }
        Err(failure) => refused(&session, &offered_channels(&app), &fields, &failure),
    }
}

/// What a session's status means to the payer.
fn status_text(status: &str) -> &'static str {
    match status {
        "open" => "Waiting for your payment",
        "paid" => "Paid: the credit is on your balance",
        "refunded" => "Refunded: the credit was taken back",
        "charged_back" => "Charged back: the credit was taken back",
        _ => "Unknown",
    }
}

/// `GET /console/top-up/{id}`: where a top-up is; while open, the link to pay it.
async fn session_page(session: Session, Extension(api): Extension<Api>, Path(id): Path<String>) -> Response {
    match render_session(&session, &api, &id).await {
        Ok(page) => layout::ok(page),
        Err(failure) => layout::failed(failure),
    }
}

async fn render_session(session: &Session, api: &Api, id: &str) -> Result<Markup, Failure> {
    let checkout = api
        .get(session, &format!("/v1/checkout/sessions/{}", query_value(id)))
        .await?;
    let status = shown(&checkout, "status");
    let balance = match status.as_str() {
        "paid" => Some(shown(&api.get(session, "/v1/account").await?, "balance")),
        _ => None,
    };
    let quote = checkout.get("quote").cloned().unwrap_or_default();
    let provider = shown(&checkout, "provider");
    let payment_url = shown(&checkout, "payment_url");
    // The provider's page is another site: only a web address becomes a link.
    let linkable = payment_url.starts_with("https://") || payment_url.starts_with("http://");
    let body = html! {
        @if let Some(balance) = &balance {
            (layout::notice_box(&format!(
                "Paid. {} USD was added to your balance, which is now {}.",
                shown(&quote, "token_line_usd"),
                layout::usd(balance)
            )))
        }
        dl.facts.card {
            dt { "Status" }
            dd { span #session-status data-status=(status) { (status_text(&status)) } " (" code { (status) } ")" }
            dt { "Checkout session" }
            dd { code { (shown(&checkout, "id")) } }
            dt { "Provider" }
            dd { (provider) }
            dt { "Opened" }
            dd { (shown(&checkout, "created_at")) }
            @if let Some(payment_id) = checkout.get("payment_id").and_then(Value::as_str) {
                dt { "Payment" }
                dd { code { (payment_id) } }
            }
        }
        @if status == "open" {
            section.card aria-labelledby="pay-heading" {
                h2 #pay-heading { "Pay " (shown(&quote, "total")) " " (shown(&quote, "currency")) }
                @if linkable {
                    p { a.button.pay-link #pay-link href=(payment_url) { "Pay with " (provider) } }
                } @else {
                    p { "Pay at " code { (payment_url) } }
                }
                p.muted {
                    "You pay on " (provider) "'s page and come back here afterwards. "
                    "Your balance is credited once " (provider) " confirms the payment. "
                    a href=(format!("/console/top-up/{}", query_value(id))) { "Check again" }
                }
            }
        }
        h2 { "Quote" }
        (quote_table(&quote, "The lines of this top-up"))
        p { a href="/console/top-up" { "New top-up" } " · " a href="/console/top-up/history" { "Payment history" } " · " a href="/console" { "Overview" } }
    };
    Ok(layout::page("Top-up", Some(session), Section::TopUp, body))
}
