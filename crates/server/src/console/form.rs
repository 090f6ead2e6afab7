//! Posted console forms. Each carries the token of its visitor's session (or, before log-in, of
//! the browser's seed cookie); a form without it is refused here, before any handler runs, so
//! no console action can be triggered by another site.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::console::layout;
use crate::console::session::{self, BROWSER_COOKIE, Session};
use crate::state::AppState;

/// A form posted by a signed-in visitor.
pub(crate) struct Posted<T> {
    pub(crate) session: Session,
    pub(crate) fields: T,
}

/// A form posted before log-in (sign-up, log-in), with the browser's seed cookie.
pub(crate) struct PostedByBrowser<T> {
    pub(crate) fields: T,
}

/// The form's fields, once its token proved it came from a page of this console: the token is
/// checked first (a form without it is 403 whatever else it holds), the fields after (400).
async fn read<T: DeserializeOwned + Send>(
    request: Request,
    app: &Arc<AppState>,
    seed: Option<&str>,
) -> Result<T, Response> {
    let body = Bytes::from_request(request, app)
        .await
        .map_err(|e| layout::problem(StatusCode::BAD_REQUEST, "The form could not be read", &e.body_text()))?;
    let token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(name, _)| name == "csrf"))
        .map(|(_, token)| token);
    match (seed, token) {
        (Some(seed), Some(token)) if session::token_matches(seed, &token) => {}
        _ => {
            return Err(layout::problem(
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The form was not sent from this console page, or the page is too old. Reload it and try again.",
            ));
        }
    }
    serde_urlencoded::from_bytes::<T>(&body)
        .map_err(|e| layout::problem(StatusCode::BAD_REQUEST, "The form could not be read", &e.to_string()))
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<AppState>> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, app: &Arc<AppState>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, app).await?;
        let fields = read(Request::from_parts(parts, body), app, Some(&session.secret)).await?;
        Ok(Posted { session, fields })
    }
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<AppState>> for PostedByBrowser<T> {
    type Rejection = Response;

    async fn from_request(request: Request, app: &Arc<AppState>) -> Result<Self, Response> {
        let seed = session::cookie(request.headers(), BROWSER_COOKIE);
        let fields = read(request, app, seed.as_deref()).await?;
        Ok(PostedByBrowser { fields })
    }
}

/// A form with nothing but its token (a log-out button).
#[derive(Deserialize)]
pub(crate) struct NoFields {}

/// A form field that may be left empty (or out): `None` when it was.
pub(crate) fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().and_then(filled)
}

/// Text a visitor typed, trimmed: `None` when only blanks.
pub(crate) fn filled(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|t| !t.is_empty())
}
