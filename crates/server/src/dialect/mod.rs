//! Client dialects: the request and response shapes of inference endpoints other than OpenAI
//! chat completions (`/v1/responses`, `/v1/messages`).
//!
//! A dialect endpoint is a chat completion underneath: its body is rewritten into an OpenAI
//! chat body, which goes through the one pipeline every chat request takes (admission, routing,
//! the provider adapter, metering, the usage record), and the chat answer the pipeline produces
//! — complete, streamed or refused — is rewritten into the client's shape on its way out. So
//! every promise holds for a dialect exactly where it holds for chat, and a dialect is only
//! translation: two pure functions and a stream encoder, tested without a network.

pub(crate) mod messages;
pub(crate) mod responses;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body::Frame;

use router_one_core::usage::Endpoint;
use router_one_core::{ApiError, Catalog, ErrorKind};
use router_one_providers::sse::{SseSplitter, event_data};

use tracing::Instrument;

use crate::auth::InferenceKey;
use crate::error::ErrorResponse;
use crate::routes::upstream;
use crate::state::AppState;

/// The most of a complete chat answer the gateway rewrites (it produced it itself, under the
/// upstream body limit).
const MAX_CHAT_BODY: usize = 64 * 1024 * 1024;

/// One client dialect.
pub(crate) trait Dialect: Send + Sync + 'static {
    /// Rewrites the client's body into an OpenAI chat completions body. A field that cannot be
    /// honoured is a 400 naming it, never dropped silently. A streamed request must ask for
    /// `stream_options.include_usage`, so that the stream's end carries the usage (with its
    /// cost) the dialect reports.
    fn to_chat(&self, body: &Bytes) -> Result<Bytes, ApiError>;

    /// [`Dialect::to_chat`] for a dialect whose rewrite depends on the catalog entry of the
    /// model the body names (Messages keeps Claude-only fields for Claude models); the default
    /// ignores the catalog.
    fn to_chat_in(&self, body: &Bytes, _catalog: &Catalog) -> Result<Bytes, ApiError> {
        self.to_chat(body)
    }

    /// Rewrites a complete, successful chat completion (with `usage.cost`) into the client's
    /// body.
    #[allow(
        clippy::wrong_self_convention,
        reason = "names the direction of the rewrite (chat → dialect), not a constructor"
    )]
    fn from_chat(&self, chat: &[u8]) -> Result<Bytes, ApiError>;

    /// An encoder for one streamed answer.
    fn stream_encoder(&self) -> Box<dyn StreamEncoder>;

    /// [`Dialect::from_chat`] for a dialect whose answer repeats fields of the request (a
    /// Responses object echoes its parameters): `request` is the client's body, as sent.
    #[allow(clippy::wrong_self_convention, reason = "from the chat shape, by this dialect")]
    fn from_chat_for(&self, request: &[u8], chat: &[u8]) -> Result<Bytes, ApiError> {
        let _ = request;
        self.from_chat(chat)
    }

    /// [`Dialect::stream_encoder`] with the client's body, as [`Dialect::from_chat_for`].
    fn stream_encoder_for(&self, request: &[u8]) -> Box<dyn StreamEncoder> {
        let _ = request;
        self.stream_encoder()
    }

    /// The client's shape of an error: `error` is the OpenAI error object the pipeline
    /// answered with (`{"error": {"message", "type", "code", "param"}}`), `status` its status.
    fn error_body(&self, status: StatusCode, error: &[u8]) -> Bytes;
}

/// Rewrites one streamed chat answer, event by event, into the client's events.
pub(crate) trait StreamEncoder: Send {
    /// One chat event's `data:` payload (a chunk, an `{"error": …}` object, or `[DONE]`); what
    /// the client should get goes to `out` as whole SSE events.
    fn event(&mut self, data: &[u8], out: &mut Vec<u8>);

    /// The chat stream ended (after `[DONE]`, or cut); anything still owed to the client goes
    /// to `out`.
    fn finish(&mut self, out: &mut Vec<u8>);
}

/// Serves a dialect endpoint: the body, rewritten into chat, goes through the chat pipeline,
/// and its answer comes back rewritten.
pub(crate) async fn serve(
    app: Arc<AppState>,
    InferenceKey(key): InferenceKey,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
    dialect: &'static dyn Dialect,
) -> Response {
    let (mut meter, body) = match upstream::metered_request(&app, key, body, endpoint) {
        Ok(request) => request,
        Err(refused) => return rewrite(refused.into_response(), dialect, &[]).await,
    };
    let admitted = match dialect.to_chat_in(&body, &app.catalog) {
        Ok(chat) => {
            let span = meter.admission_span();
            crate::routes::chat::admit(&app, &mut meter, &chat)
                .instrument(span)
                .await
        }
        Err(e) => Err(e),
    };
    let response = upstream::respond(app, meter, admitted).await;
    // The client's body is kept for a dialect that echoes the request in its answer.
    rewrite(response, dialect, &body).await
}

/// A refusal before the pipeline (no key, a bad key), in the dialect's shape.
pub(crate) fn refusal(error: ErrorResponse, dialect: &'static dyn Dialect) -> Response {
    let (status, body) = error_parts(&error.error);
    let mut response = error.into_response();
    response.headers_mut().remove(http::header::CONTENT_LENGTH);
    *response.body_mut() = Body::from(dialect.error_body(status, &body));
    response
}

/// The chat pipeline's answer, rewritten for the client.
async fn rewrite(response: Response, dialect: &'static dyn Dialect, request: &[u8]) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let streamed = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if parts.status.is_success() && streamed {
        return Response::from_parts(
            parts,
            Body::new(encode_stream(body, dialect.stream_encoder_for(request))),
        );
    }
    let bytes = match axum::body::to_bytes(body, MAX_CHAT_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let error = ApiError::new(ErrorKind::UpstreamError, "The answer could not be read.");
            let (status, body) = error_parts(&error);
            parts.status = status;
            return Response::from_parts(parts, Body::from(dialect.error_body(status, &body)));
        }
    };
    let out = if parts.status.is_success() {
        match dialect.from_chat_for(request, &bytes) {
            Ok(out) => out,
            Err(error) => {
                let (status, body) = error_parts(&error);
                parts.status = status;
                dialect.error_body(status, &body)
            }
        }
    } else {
        dialect.error_body(parts.status, &bytes)
    };
    parts
        .headers
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(out))
}

/// An error's status and OpenAI-format body.
fn error_parts(error: &ApiError) -> (StatusCode, Bytes) {
    let status = StatusCode::from_u16(error.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Bytes::from(error.to_json()))
}

/// The chat event stream, split into events and re-encoded frame by frame.
struct EncodedStream {
    chat: Body,
    splitter: SseSplitter,
    events: Vec<Bytes>,
    encoder: Box<dyn StreamEncoder>,
    finished: bool,
}

fn encode_stream(chat: Body, encoder: Box<dyn StreamEncoder>) -> EncodedStream {
    EncodedStream {
        chat,
        splitter: SseSplitter::default(),
        events: Vec::new(),
        encoder,
        finished: false,
    }
}

impl http_body::Body for EncodedStream {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match std::task::ready!(Pin::new(&mut this.chat).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(chunk) = frame.into_data() else { continue };
                    this.events.clear();
                    // The pipeline's own events are whole and far under the splitter's limit.
                    let _ = this.splitter.push(chunk, &mut this.events);
                    for event in &this.events {
                        if let Some(data) = event_data(event) {
                            this.encoder.event(&data, &mut out);
                        }
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.finished = true;
                    this.encoder.finish(&mut out);
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }
}
