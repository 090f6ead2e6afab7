//! Who is looking at a console page. A session is a management key the console minted at
//! log-in (named `login YYYY-MM-DD`, listed and revocable with the account's other management
//! keys), kept in an `HttpOnly`, `SameSite=Lax` cookie that scripts cannot read; `Secure` when
//! the gateway's public URL is `https`. Logging out revokes it, so a copied cookie dies with the
//! session. Every page re-checks it as any management call does, so a key revoked on another
//! node ends the session here within the same few seconds.
//!
//! Forms carry a token derived from the session's secret (before log-in, from a random
//! per-browser cookie): a page on another site can make a browser post here, but cannot read
//! the token it would need.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};

use crate::auth;
use crate::console::api::query_value;
use crate::state::AppState;

/// The session cookie: `{management key id}.{management key}` (`mkey_….sk-rm-…`); the id is what
/// log-out revokes.
pub(crate) const SESSION_COOKIE: &str = "router_one_session";
/// A random value per browser, the seed of the log-in and sign-up forms' token.
pub(crate) const BROWSER_COOKIE: &str = "router_one_browser";
/// How long a browser keeps the session cookie.
const SESSION_DAYS: i64 = 7;

/// A signed-in visitor.
#[derive(Clone)]
pub(crate) struct Session {
    /// The management key the cookie holds, and its id.
    pub(crate) secret: String,
    pub(crate) key_id: String,
    /// The request's `X-Forwarded-For`, passed on to the API.
    pub(crate) forwarded_for: Option<HeaderValue>,
}

impl Session {
    /// The token this session's forms carry.
    pub(crate) fn form_token(&self) -> String {
        form_token(&self.secret)
    }
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, Response> {
        let Some((key_id, secret)) = cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|c| c.split_once('.').map(|(id, secret)| (id.to_owned(), secret.to_owned())))
        else {
            return Err(to_login(parts));
        };
        match auth::management_account_of(app, &secret).await {
            Ok(_account) => Ok(Session {
                secret,
                key_id,
                forwarded_for: parts.headers.get("x-forwarded-for").cloned(),
            }),
            // Revoked, or never valid: forget it and ask for a log-in.
            Err(_) => {
                let mut response = to_login(parts);
                response
                    .headers_mut()
                    .append(header::SET_COOKIE, ended(app, SESSION_COOKIE));
                Err(response)
            }
        }
    }
}

/// The log-in page, coming back to this page afterwards.
fn to_login(parts: &Parts) -> Response {
    let here = parts.uri.path_and_query().map_or("/console", |p| p.as_str());
    Redirect::to(&format!("/login?next={}", query_value(here))).into_response()
}

/// A place to go after logging in: a console path, never another site (`//evil`, `/\evil`).
pub(crate) fn local_next(next: Option<&str>) -> &str {
    match next {
        Some(path) if path.starts_with("/console") && !path.contains("//") && !path.contains('\\') => path,
        _ => "/console",
    }
}

/// The value of cookie `name` in the request, if sent.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

/// The token of forms whose visitor holds `seed` (a session secret, or the browser cookie).
pub(crate) fn form_token(seed: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"router-one console form\0")
        .chain_update(seed.as_bytes())
        .finalize();
    hex::encode(&digest[..20])
}

/// Whether a posted form's token is the one `seed` gives, compared in constant time.
pub(crate) fn token_matches(seed: &str, posted: &str) -> bool {
    let expected = form_token(seed);
    expected.len() == posted.len()
        && expected
            .bytes()
            .zip(posted.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Cookies are `Secure` when the console is served over TLS, as the public URL says (a proxy
/// may terminate it): a browser would drop a `Secure` cookie set over plain http.
fn secure(app: &AppState) -> bool {
    served_over_tls(&app.config.public_url)
}

fn served_over_tls(public_url: &str) -> bool {
    public_url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// What a session cookie holds.
pub(crate) struct SessionCookie<'a> {
    pub(crate) key_id: &'a str,
    pub(crate) secret: &'a str,
}

/// `Set-Cookie` starting a session.
pub(crate) fn started(app: &AppState, session: &SessionCookie<'_>) -> HeaderValue {
    header_value(&session_cookie(session, secure(app)))
}

fn session_cookie(session: &SessionCookie<'_>, secure: bool) -> String {
    let value = format!("{}.{}", session.key_id, session.secret);
    Cookie::build((SESSION_COOKIE, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(cookie::time::Duration::days(SESSION_DAYS))
        .to_string()
}

/// `Set-Cookie` giving this browser its form seed.
pub(crate) fn browser_seed(app: &AppState, seed: &str) -> HeaderValue {
    let cookie = Cookie::build((BROWSER_COOKIE, seed))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(app));
    header_value(&cookie.to_string())
}

/// `Set-Cookie` removing cookie `name`.
pub(crate) fn ended(app: &AppState, name: &'static str) -> HeaderValue {
    let cookie = Cookie::build((name, ""))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure(app))
        .max_age(cookie::time::Duration::ZERO);
    header_value(&cookie.to_string())
}

fn header_value(text: &str) -> HeaderValue {
    // Cookie values here are hex, `sk-rm-…` keys or empty: always valid header text.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_followed_after_log_in() {
        assert_eq!(local_next(Some("/console/keys?x=1")), "/console/keys?x=1");
        assert_eq!(local_next(Some("https://evil.example/console")), "/console");
        assert_eq!(local_next(Some("//evil.example/console")), "/console");
        assert_eq!(local_next(Some("/console//evil.example")), "/console");
        assert_eq!(local_next(Some("/console/\\evil")), "/console");
        assert_eq!(local_next(None), "/console");
    }

    #[test]
    fn the_session_cookie_is_secure_exactly_when_served_over_tls() {
        assert!(served_over_tls("https://router.example.com"));
        assert!(served_over_tls("HTTPS://router.example.com"));
        assert!(!served_over_tls("http://127.0.0.1:8080"));
        assert!(!served_over_tls("http"));
        let session = SessionCookie {
            key_id: "mkey_1",
            secret: "sk-rm-2",
        };
        assert_eq!(
            session_cookie(&session, true),
            "router_one_session=mkey_1.sk-rm-2; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=604800"
        );
        assert!(!session_cookie(&session, false).contains("Secure"));
    }

    #[test]
    fn a_form_token_matches_only_its_own_seed() {
        let token = form_token("sk-rm-one");
        assert!(token_matches("sk-rm-one", &token));
        assert!(!token_matches("sk-rm-two", &token));
        assert!(!token_matches("sk-rm-one", ""));
        assert!(!token_matches("sk-rm-one", &token[1..]));
    }
}
