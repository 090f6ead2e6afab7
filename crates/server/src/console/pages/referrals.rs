//! The referrals section: `GET /console/referrals` shows the invite link and code (`GET
//! /v1/referrals`), the accounts that signed up with it (their emails masked by the API), each
//! top-up commission (the ledger's commission entries) and the total; an account without an
//! inviter that has not topped up yet may name one (`POST /console/referrals/claim`, which is
//! `POST /v1/referrals/claim`: its rules and refusals are the API's).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::console::api::{Api, Failure, text};
use crate::console::form::{Posted, given};
use crate::console::layout::{self, Section};
use crate::console::session::Session;
use crate::state::AppState;

/// Ledger pages (of 1000 entries, oldest first) read for commissions: an account with more
/// entries than this sees the commissions among its oldest ones, and is told so.
const LEDGER_PAGES: usize = 5;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/referrals", get(page))
        .route("/console/referrals/claim", post(claim))
}

fn list<'a>(object: &'a Value, field: &str) -> &'a [Value] {
    object.get(field).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// What the page shows, read from the API.
struct Referrals {
    referrals: Value,
    /// The account's own inviter, if it has one.
    has_inviter: bool,
    /// Commission entries (and their reversals), oldest first.
    commissions: Vec<Value>,
    /// Whether the account has topped up (then it can no longer name an inviter).
    topped_up: bool,
    /// Whether the ledger had more entries than were read.
    ledger_cut: bool,
}

async fn read(api: &Api, session: &Session) -> Result<Referrals, Failure> {
    let (referrals, account) = tokio::try_join!(api.get(session, "/v1/referrals"), api.get(session, "/v1/account"))?;
    let mut commissions = Vec::new();
    let mut topped_up = false;
    let mut after: Option<String> = None;
    let mut ledger_cut = false;
    for read in 0..LEDGER_PAGES {
        let path = match &after {
            Some(cursor) => format!("/v1/account/ledger?limit=1000&after={cursor}"),
            None => "/v1/account/ledger?limit=1000".to_owned(),
        };
        let page = api.get(session, &path).await?;
        for entry in list(&page, "data") {
            match text(entry, "kind") {
                "commission" | "commission_reversal" => commissions.push(entry.clone()),
                "topup" => topped_up = true,
                _ => {}
            }
        }
        // Cursors are entry ids (numbers).
        after = page.get("next_cursor").filter(|c| !c.is_null()).map(Value::to_string);
        if after.is_none() {
            break;
        }
        ledger_cut = read + 1 == LEDGER_PAGES;
    }
    Ok(Referrals {
        referrals,
        has_inviter: account.get("referred_by").is_some_and(|r| !r.is_null()),
        commissions,
        topped_up,
        ledger_cut,
    })
}

#[derive(Deserialize, Default)]
struct PageQuery {
    claimed: Option<String>,
}

/// `GET /console/referrals`.
async fn page(
    session: Session,
    Extension(api): Extension<Api>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let claimed = query.map(|Query(q)| q).unwrap_or_default().claimed.is_some();
    match read(&api, &session).await {
        Ok(found) => {
            let notice = claimed.then(|| layout::notice_box("Your inviter is recorded."));
            layout::ok(render(&session, &found, notice, None))
        }
        Err(failure) => layout::failed(failure),
    }
}

#[derive(Deserialize)]
struct ClaimForm {
    invite_code: Option<String>,
}

/// `POST /console/referrals/claim`.
async fn claim(Extension(api): Extension<Api>, Posted { session, fields }: Posted<ClaimForm>) -> Response {
    let code = given(&fields.invite_code).unwrap_or_default();
    let claimed = api
        .post(&session, "/v1/referrals/claim", &json!({ "invite_code": code }))
        .await;
    let failure = match claimed {
        Ok(_) => return Redirect::to("/console/referrals?claimed=1").into_response(),
        Err(failure) if failure.status.is_client_error() && failure.status != StatusCode::UNAUTHORIZED => failure,
        Err(failure) => return layout::failed(failure),
    };
    match read(&api, &session).await {
        Ok(found) => {
            let page = render(&session, &found, None, Some((&failure, code)));
            (failure.status, layout::ok(page)).into_response()
        }
        Err(failure) => layout::failed(failure),
    }
}

fn render(session: &Session, found: &Referrals, notice: Option<Markup>, refused: Option<(&Failure, &str)>) -> Markup {
    let r = &found.referrals;
    let percent = text(r, "commission_percent");
    let referred = list(r, "referred");
    let body = html! {
        @if let Some(notice) = notice { (notice) }
        section.card aria-labelledby="invite-heading" {
            h2 #invite-heading { "Your invite link" }
            p {
                "Share it: when someone signs up through it, you earn " (percent) "% of every top-up they make, "
                "credited to your balance."
            }
            label for="invite-link" { "Invite link" }
            div.secret {
                input #invite-link type="text" readonly value=(text(r, "link"));
                button type="button" data-copy="invite-link" hidden { "Copy link" }
                span #invite-link-status role="status" {}
            }
            p { "Your invite code: " code #invite-code { (text(r, "code")) } }
        }
        h2 { "Accounts you invited" }
        @if referred.is_empty() {
            p.card { "Nobody has signed up with your link yet." }
        } @else {
            div.table-wrap tabindex="0" {
                table #referred {
                    caption { "Accounts that signed up with your link; emails are masked." }
                    thead {
                        tr {
                            th scope="col" { "Account" }
                            th scope="col" { "Joined (UTC)" }
                            th.num scope="col" { "Top-ups" }
                            th.num scope="col" { "Your commission" }
                        }
                    }
                    tbody {
                        @for one in referred {
                            tr {
                                th scope="row" { (text(one, "email")) }
                                td { (text(one, "joined_at").get(..10).unwrap_or_default()) }
                                td.num { (one.get("payments").and_then(Value::as_u64).unwrap_or_default()) }
                                td.num { (layout::usd(text(one, "commission"))) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Commissions" }
        p { "Total earned: " strong #commission-total { (layout::usd(text(r, "commission_total"))) } }
        (commissions(found))
        @if !found.has_inviter && !found.topped_up {
            (claim_form(session, refused))
        }
    };
    layout::page("Referrals", Some(session), Section::Referrals, body)
}

fn commissions(found: &Referrals) -> Markup {
    html! {
        @if found.commissions.is_empty() {
            p.card { "No commissions yet: they are credited when an account you invited tops up." }
        } @else {
            div.table-wrap tabindex="0" {
                table #commissions {
                    caption { "Each commission, credited with the top-up that earned it (a refunded top-up takes its commission back)." }
                    thead {
                        tr {
                            th scope="col" { "Date (UTC)" }
                            th scope="col" { "What" }
                            th scope="col" { "Payment" }
                            th.num scope="col" { "Amount" }
                        }
                    }
                    tbody {
                        @for entry in &found.commissions {
                            tr {
                                td { (text(entry, "created_at").get(..10).unwrap_or_default()) }
                                th scope="row" {
                                    (if text(entry, "kind") == "commission" { "Commission on a top-up" } else { "Commission taken back" })
                                }
                                td { code { (text(entry, "reference")) } }
                                td.num.cost { (layout::usd(text(entry, "amount"))) }
                            }
                        }
                    }
                }
            }
        }
        @if found.ledger_cut {
            p.muted { "Only the commissions among your oldest ledger entries are listed; the total above counts them all." }
        }
    }
}

/// The form naming an inviter: only before the account's first top-up, once.
fn claim_form(session: &Session, refused: Option<(&Failure, &str)>) -> Markup {
    let typed = refused.map(|(_, code)| code).unwrap_or_default();
    html! {
        h2 #claim-heading { "Were you invited?" }
        @if let Some((failure, _)) = refused { (layout::error_box(&failure.message)) }
        form.stack.card method="post" action="/console/referrals/claim" aria-labelledby="claim-heading" {
            (layout::token_field(&session.form_token()))
            label {
                "Your inviter's code"
                span.hint #claim-hint { "Once, and only before your first top-up." }
                input type="text" name="invite_code" required autocomplete="off" value=(typed)
                    aria-describedby="claim-hint" aria-invalid=[refused.map(|_| "true")];
            }
            button type="submit" { "Add my inviter" }
        }
    }
}
