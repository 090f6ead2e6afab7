//! The Anthropic Messages wire format (`POST /v1/messages`). Clients speak OpenAI chat
//! completions; this adapter translates their requests to Messages and the answers, complete
//! and streamed, back to OpenAI format.
//!
//! Request fields are translated, refused with a 400 naming the field, or — only when purely
//! informational, never changing the answer — dropped. The dropped set is: `model` (replaced by
//! the route's upstream id), `stream` (re-sent as Anthropic's `stream`), `stream_options` (the
//! gateway meters streams itself), `store`, `metadata` and `service_tier` (OpenAI bookkeeping).
//! `user` is translated to `metadata.user_id`. Per-message `name` has no Anthropic field and is
//! not sent. Any other unknown field is refused.
//!
//! Extensions of the chat format, for what only Messages carries (a `/v1/messages` client's
//! request comes this way, `server/src/dialect/messages`; OpenRouter uses the same names):
//! `cache_control` on content parts, tools and (for its last block) a message; `thinking` (the
//! Messages config, raw) at the top level; an assistant message's `thinking_blocks` (raw, with
//! their signatures) and a tool message's `is_error`. Answers carry the thinking blocks back in
//! the message's `thinking_blocks`, and streams in the delta's `reasoning_signature` and
//! `redacted_thinking`; the stop sequence that ended an answer is the choice's `stop_sequence`;
//! cache writes are `usage.prompt_tokens_details.cache_write_tokens`.
//!
//! Files: `wire` (Anthropic serde types), `prepare` (the request's top level: sampling, tools,
//! thinking, structured outputs, refusals), `request` (the conversation), `response` (complete
//! answers), `stream` (stream events).

mod prepare;
mod request;
mod response;
mod stream;
mod wire;

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use router_one_core::{ApiError, ErrorKind};

use crate::provider::{
    ChatApi, ChatRequest, PreparedRequest, ReadContext, ReadHints, ReadResponse, Refusal, StreamDecoder, Target,
};
use crate::refusal;
use crate::request::TopLevel;

/// How refusals name the model family.
const FAMILY: &str = "Claude";

/// The API version every request is written for.
const VERSION: &str = "2023-06-01";

/// The Anthropic adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anthropic;

fn no_embeddings() -> ApiError {
    ApiError::new(
        ErrorKind::InvalidRequest,
        "Anthropic has no embeddings API; use an embedding model served by another provider.",
    )
    .with_param("model")
}

/// The client's error for an Anthropic error of `kind` with HTTP `status`. A billing error's
/// message is not repeated: relays disable channels whose errors mention money.
fn vendor_error(status: u16, kind: Option<&str>, message: Option<&str>) -> ApiError {
    let message = if kind == Some("billing_error") { None } else { message };
    refusal::from_status(status, message)
}

impl Anthropic {
    /// The Messages body for Claude on Vertex AI: no `model` (the URL names it) and
    /// `anthropic_version` (`version`, e.g. `vertex-2023-10-16`) in the body.
    pub(crate) fn vertex_body(
        request: &ChatRequest<'_>,
        target: Target<'_>,
        version: &'static str,
    ) -> Result<Bytes, ApiError> {
        prepare::prepare(request, target, Some(version))
    }
}

impl ChatApi for Anthropic {
    fn prepare_chat(&self, request: &ChatRequest<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError> {
        Ok(PreparedRequest {
            body: prepare::prepare(request, target, None)?,
            path: Cow::Borrowed("/messages"),
            hints: ReadHints::default(),
        })
    }

    fn prepare_embeddings(&self, _: &TopLevel<'_>, _: Target<'_>) -> Result<PreparedRequest, ApiError> {
        Err(no_embeddings())
    }

    fn read_chat(&self, body: Bytes, context: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        response::read(&body, context)
    }

    fn read_embeddings(&self, _: Bytes, _: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        Err(no_embeddings())
    }

    fn stream_decoder(&self, context: ReadContext<'_>) -> Box<dyn StreamDecoder> {
        Box::new(stream::Decoder::new(context))
    }

    fn read_error(&self, status: u16, body: &[u8]) -> Refusal {
        // Never passed through: the body is Anthropic's shape, not OpenAI's.
        let (kind, message) = match serde_json::from_slice::<wire::ErrorEnvelope<'_>>(body) {
            Ok(envelope) => (envelope.error.kind, envelope.error.message),
            Err(_) => (None, None),
        };
        let status = wire::error_status(kind.as_deref(), status);
        Refusal::Error(vendor_error(status, kind.as_deref(), message.as_deref()))
    }

    fn headers(&self, api_key: &str) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let key = HeaderValue::from_str(api_key).ok()?;
        Some(vec![
            (HeaderName::from_static("x-api-key"), key),
            (
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(VERSION),
            ),
        ])
    }
}
