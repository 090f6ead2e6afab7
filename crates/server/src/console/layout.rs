//! The frame every console page shares: head, navigation, main landmark; and the pages that say
//! something went wrong.

use axum::response::{Html, IntoResponse, Redirect, Response};
use http::StatusCode;
use maud::{DOCTYPE, Markup, html};

use crate::console::api::Failure;
use crate::console::assets;
use crate::console::session::Session;

/// The console's sections, in navigation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Overview,
    Keys,
    Usage,
    TopUp,
    Referrals,
    Models,
    Docs,
    /// A page outside the navigation (log-in, an error).
    None,
}

const SECTIONS: [(Section, &str, &str); 7] = [
    (Section::Overview, "/console", "Overview"),
    (Section::Keys, "/console/keys", "Keys"),
    (Section::Usage, "/console/usage", "Usage"),
    (Section::TopUp, "/console/top-up", "Top up"),
    (Section::Referrals, "/console/referrals", "Referrals"),
    (Section::Models, "/console/models", "Models"),
    (Section::Docs, "/console/docs", "Docs"),
];

/// A whole page: `title` names it (and the tab); `session` is the signed-in visitor, if any.
pub(crate) fn page(title: &str, session: Option<&Session>, section: Section, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Router One" }
                link rel="stylesheet" href=(assets::href("console.css"));
                link rel="icon" href=(assets::href("favicon.svg")) type="image/svg+xml";
                script src=(assets::href("console.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href=(if session.is_some() { "/console" } else { "/" }) { "Router One" }
                    @if let Some(session) = session {
                        nav aria-label="Console" {
                            ul {
                                @for (s, href, label) in SECTIONS {
                                    li {
                                        @if s == section {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            (token_field(&session.form_token()))
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page as a 200 answer.
pub(crate) fn ok(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// The hidden field carrying a form's token.
pub(crate) fn token_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A message box: `role="alert"` for errors so screen readers announce them.
pub(crate) fn error_box(message: &str) -> Markup {
    html! { p.error role="alert" { (message) } }
}

/// A message box for good news.
pub(crate) fn notice_box(message: &str) -> Markup {
    html! { p.notice role="status" { (message) } }
}

/// A page saying what went wrong, with `status`.
pub(crate) fn problem(status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        (error_box(message))
        p { a href="/console" { "Back to the console" } }
    };
    (status, Html(page(title, None, Section::None, body).into_string())).into_response()
}

/// What a console page answers when the API refused: a signed-out visitor goes to log in; an
/// unknown (or someone else's) thing is a 404; anything else shows the API's message with its
/// status.
pub(crate) fn failed(failure: Failure) -> Response {
    match failure.status {
        StatusCode::UNAUTHORIZED => Redirect::to("/login").into_response(),
        StatusCode::NOT_FOUND => problem(StatusCode::NOT_FOUND, "Not found", &failure.message),
        status if status.is_server_error() => {
            tracing::warn!(status = status.as_u16(), "console page failed");
            problem(
                status,
                "Something went wrong",
                "The page could not be shown. Try again in a moment.",
            )
        }
        status => problem(status, "That did not work", &failure.message),
    }
}

/// `$1.234567` from the API's decimal string (kept exact: never parsed into a float).
pub(crate) fn usd(amount: &str) -> String {
    match amount.strip_prefix('-') {
        Some(positive) => format!("−${positive}"),
        None => format!("${amount}"),
    }
}
