//! The console: the web pages where an account holder signs up, makes keys, watches usage, tops
//! up and shares an invite link (docs/console.md). Pages are rendered on the server (maud); the
//! only script is `assets/console.js` (copy buttons), embedded in the binary like the stylesheet.
//!
//! The console is a client of the management API, in-process ([`api::Api`]): every page asks
//! the same handlers a `curl` would, with the session's management key, so each rule (limits,
//! ownership, validation, error messages) lives once, in the API. A session is a management key
//! the console minted at log-in, kept in an `HttpOnly` cookie ([`session`]).

mod api;
mod assets;
mod chart;
mod form;
mod layout;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use http::{HeaderValue, header};

use crate::state::AppState;

pub(crate) use api::Api;

/// The policy every console answer carries: scripts and styles from this origin only (no inline
/// script or style, no `eval`), forms posting only here (a top-up leaves for the payment page by
/// a link, not a form), never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The console's routes. `api` is the management and inference API the pages call in-process.
pub(crate) fn routes(api: Api) -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(pages::auth::root))
        .route("/signup", get(pages::auth::signup_page).post(pages::auth::signup))
        .route("/login", get(pages::auth::login_page).post(pages::auth::login))
        .route("/logout", post(pages::auth::logout))
        .route("/console", get(pages::overview::page))
        .route("/console/assets/{file}", get(assets::serve))
        .merge(pages::keys::routes())
        .merge(pages::usage::routes())
        .merge(pages::top_up::routes())
        .merge(pages::referrals::routes())
        .merge(pages::models::routes())
        .merge(pages::docs::routes())
        .route("/console/{*rest}", get(pages::not_found))
        .layer(axum::Extension(api))
        .layer(axum::middleware::map_response(secure_headers))
}

/// Headers on every console answer: the content security policy, no sniffing, no framing, no
/// caching of pages that show an account, and no referrer sent to other sites.
async fn secure_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
