//! Google Gemini API wire format (`v1beta`), shaped as in the Gemini API reference and the
//! `google-genai` types: `models/{model}:generateContent`, `:streamGenerateContent` (SSE with
//! `?alt=sse`, else a streamed JSON array), `:embedContent` and `:batchEmbedContents`.
//!
//! Auth is `x-goog-api-key: <non-empty>` (or `?key=`, or `authorization: Bearer`), else 403
//! `PERMISSION_DENIED`. Errors use Google's `{"error":{"code","message","status"}}` body.

mod embed;
mod error;
mod generate;
mod request;

pub(crate) use error::{not_found, response as error_response};
pub(crate) use generate::handle as generate;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::SimState;
use crate::body::SimBody;
use crate::conn::ConnControl;

/// The path prefix of every model method.
const MODELS: &str = "/v1beta/models/";

/// Handles one request whose path starts with `/v1beta/`.
pub(crate) async fn handle(request: Request<Incoming>, state: &SimState, control: &ConnControl) -> Response<SimBody> {
    let path = request.uri().path();
    let target = path
        .strip_prefix(MODELS)
        .and_then(|rest| rest.rsplit_once(':'))
        .filter(|(model, _)| !model.is_empty() && !model.contains('/'));
    let (model, method) = match target {
        Some((model, method)) if request.method() == Method::POST => (model.to_owned(), method.to_owned()),
        _ => return error::not_found(request.method(), path),
    };
    if !error::has_key(&request) {
        return error::missing_api_key();
    }
    match method.as_str() {
        "generateContent" => generate::handle(request, state, control, &model, None).await,
        "streamGenerateContent" => {
            let sse = request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
            generate::handle(request, state, control, &model, Some(sse)).await
        }
        "embedContent" => embed::handle(request, state, control, false).await,
        "batchEmbedContents" => embed::handle(request, state, control, true).await,
        _ => error::not_found(&Method::POST, &format!("{MODELS}{model}:{method}")),
    }
}
