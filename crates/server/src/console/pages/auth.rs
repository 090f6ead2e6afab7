//! Sign-up, log-in and log-out. Both forms call the API (`POST /v1/auth/signup`,
//! `/v1/auth/login`), so the password rule, the invite rules and the log-in lockout are the
//! API's; what they answer becomes the session cookie.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, Method, StatusCode, header};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::console::api::{Api, Call, Failure};
use crate::console::form::{NoFields, Posted, PostedByBrowser, given};
use crate::console::layout::{self, Section};
use crate::console::session::{self, BROWSER_COOKIE, SESSION_COOKIE, SessionCookie};
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub(crate) struct AuthQuery {
    invite: Option<String>,
    next: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    invite_code: Option<String>,
    next: Option<String>,
}

/// `GET /`: the console (which sends a visitor without a session to log in).
pub(crate) async fn root() -> Redirect {
    Redirect::to("/console")
}

/// The browser's form seed, and the `Set-Cookie` giving it one if it has none yet.
fn seed(app: &AppState, headers: &HeaderMap) -> (String, Option<http::HeaderValue>) {
    match session::cookie(headers, BROWSER_COOKIE) {
        Some(seed) => (seed, None),
        None => {
            let seed = hex::encode(rand::random::<[u8; 16]>());
            let set = session::browser_seed(app, &seed);
            (seed, Some(set))
        }
    }
}

fn with_seed(status: StatusCode, set: Option<http::HeaderValue>, markup: Markup) -> Response {
    let mut response = (status, layout::ok(markup)).into_response();
    if let Some(set) = set {
        response.headers_mut().append(header::SET_COOKIE, set);
    }
    response
}

struct Filled<'a> {
    email: &'a str,
    invite_code: &'a str,
    next: &'a str,
    error: Option<&'a Failure>,
}

fn signup_form(token: &str, filled: &Filled<'_>) -> Markup {
    let email_error = filled.error.and_then(|e| e.about("email"));
    let password_error = filled.error.and_then(|e| e.about("password"));
    let invite_error = filled.error.and_then(|e| e.about("invite_code"));
    html! {
        @if let Some(error) = filled.error { (layout::error_box(&error.message)) }
        form.stack.card method="post" action="/signup" {
            (layout::token_field(token))
            label {
                "Email"
                input type="email" name="email" autocomplete="email" required value=(filled.email)
                    aria-invalid=[email_error.map(|_| "true")];
            }
            label {
                "Password"
                span.hint #password-rule { "At least 12 characters." }
                input type="password" name="password" autocomplete="new-password" required minlength="12"
                    aria-describedby="password-rule" aria-invalid=[password_error.map(|_| "true")];
            }
            label {
                "Invite code"
                span.hint #invite-hint { "Optional: the code from the invite link you were given." }
                input type="text" name="invite_code" value=(filled.invite_code) autocomplete="off"
                    aria-describedby="invite-hint" aria-invalid=[invite_error.map(|_| "true")];
            }
            button type="submit" { "Sign up" }
        }
        p { "Already have an account? " a href="/login" { "Log in" } }
    }
}

fn login_form(token: &str, filled: &Filled<'_>) -> Markup {
    html! {
        @if let Some(error) = filled.error { (layout::error_box(&error.message)) }
        form.stack.card method="post" action="/login" {
            (layout::token_field(token))
            input type="hidden" name="next" value=(filled.next);
            label { "Email" input type="email" name="email" autocomplete="email" required value=(filled.email); }
            label { "Password" input type="password" name="password" autocomplete="current-password" required; }
            button type="submit" { "Log in" }
        }
        p { "New here? " a href="/signup" { "Create an account" } }
    }
}

/// `GET /signup?invite=CODE`: the invite link lands here, its code filled in.
pub(crate) async fn signup_page(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<AuthQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let (seed, set) = seed(&app, &headers);
    let filled = Filled {
        email: "",
        invite_code: query.invite.as_deref().unwrap_or_default(),
        next: "",
        error: None,
    };
    let body = signup_form(&session::form_token(&seed), &filled);
    with_seed(
        StatusCode::OK,
        set,
        layout::page("Create your account", None, Section::None, body),
    )
}

/// `POST /signup`.
pub(crate) async fn signup(
    State(app): State<Arc<AppState>>,
    axum::Extension(api): axum::Extension<Api>,
    headers: HeaderMap,
    PostedByBrowser { fields }: PostedByBrowser<Credentials>,
) -> Response {
    let mut request = json!({ "email": fields.email, "password": fields.password });
    if let Some(code) = given(&fields.invite_code) {
        request["invite_code"] = Value::from(code);
    }
    let answer = ask_without_key(&api, "/v1/auth/signup", &request, &headers).await;
    match answer {
        Ok(signed_up) => start(&app, &signed_up, "/console"),
        Err(failure) => {
            let seed = session::cookie(&headers, BROWSER_COOKIE).unwrap_or_default();
            let filled = Filled {
                email: &fields.email,
                invite_code: fields.invite_code.as_deref().unwrap_or_default(),
                next: "",
                error: Some(&failure),
            };
            let body = signup_form(&session::form_token(&seed), &filled);
            refused(&failure, layout::page("Create your account", None, Section::None, body))
        }
    }
}

/// `GET /login?next=/console/…`.
pub(crate) async fn login_page(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<AuthQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let (seed, set) = seed(&app, &headers);
    let filled = Filled {
        email: "",
        invite_code: "",
        next: session::local_next(query.next.as_deref()),
        error: None,
    };
    let body = login_form(&session::form_token(&seed), &filled);
    with_seed(StatusCode::OK, set, layout::page("Log in", None, Section::None, body))
}

/// `POST /login`.
pub(crate) async fn login(
    State(app): State<Arc<AppState>>,
    axum::Extension(api): axum::Extension<Api>,
    headers: HeaderMap,
    PostedByBrowser { fields }: PostedByBrowser<Credentials>,
) -> Response {
    let request = json!({ "email": fields.email, "password": fields.password });
    let answer = ask_without_key(&api, "/v1/auth/login", &request, &headers).await;
    let next = session::local_next(fields.next.as_deref());
    match answer {
        Ok(logged_in) => start(&app, &logged_in, next),
        Err(failure) => {
            let seed = session::cookie(&headers, BROWSER_COOKIE).unwrap_or_default();
            let filled = Filled {
                email: &fields.email,
                invite_code: "",
                next,
                error: Some(&failure),
            };
            let body = login_form(&session::form_token(&seed), &filled);
            refused(&failure, layout::page("Log in", None, Section::None, body))
        }
    }
}

/// `POST path` to one of the API's routes that take no key (sign-up, log-in), with the browser's
/// `X-Forwarded-For` so that per-source limits count it.
async fn ask_without_key(api: &Api, path: &str, request: &Value, headers: &HeaderMap) -> Result<Value, Failure> {
    api.send(Call {
        method: Method::POST,
        path,
        bearer: None,
        body: Some(request),
        forwarded_for: headers.get("x-forwarded-for"),
    })
    .await
    .and_then(|a| a.json())
}

/// The form again with the API's refusal, under the API's status (a 5xx stays a 5xx).
fn refused(failure: &Failure, page: Markup) -> Response {
    (failure.status, layout::ok(page)).into_response()
}

/// The session the API's answer (`management_key`, `management_key_id`) starts, and on to `next`.
fn start(app: &AppState, answer: &Value, next: &str) -> Response {
    let key = answer.get("management_key").and_then(Value::as_str);
    let id = answer.get("management_key_id").and_then(Value::as_str);
    let (Some(key), Some(id)) = (key, id) else {
        return layout::problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The session could not be started. Try again.",
        );
    };
    let cookie = SessionCookie {
        key_id: id,
        secret: key,
    };
    let mut response = Redirect::to(next).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session::started(app, &cookie));
    response
}

/// `POST /logout`: the session's management key is revoked, the cookie removed.
pub(crate) async fn logout(
    State(app): State<Arc<AppState>>,
    axum::Extension(api): axum::Extension<Api>,
    Posted { session, .. }: Posted<NoFields>,
) -> Response {
    let path = format!("/v1/management-keys/{}", session.key_id);
    if let Err(failure) = api
        .send(Call {
            method: Method::DELETE,
            path: &path,
            bearer: Some(&session.secret),
            body: None,
            forwarded_for: session.forwarded_for.as_ref(),
        })
        .await
    {
        return layout::failed(failure);
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session::ended(&app, SESSION_COOKIE));
    response
}
