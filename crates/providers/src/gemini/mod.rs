//! The Google Gemini wire format: OpenAI chat and embeddings requests translated to
//! `models/{id}:generateContent`, `:streamGenerateContent?alt=sse` and `:batchEmbedContents`
//! (below a base URL ending in `/v1beta`), and Gemini's answers, streams and errors translated
//! back to OpenAI format. Authentication is the `x-goog-api-key` header.
//!
//! Every request field is either translated or refused with a 400 naming it — never silently
//! dropped — except these top-level fields, which never change the answer and are dropped:
//! `model` (the route decides the upstream model), `stream` (it picks the endpoint),
//! `stream_options` (the gateway meters streams itself; Gemini always reports usage), `store`,
//! `metadata`, `service_tier` and `user`. Per message, `name` (a participant label Gemini has no
//! place for) is dropped too. A `null` value counts as absent everywhere.
//!
//! Not translatable and refused: `n` > 1, `logprobs: true`, `top_logprobs`, a non-empty
//! `logit_bias`, `parallel_tool_calls: false`, `audio`, audio `modalities`, `prediction`,
//! `functions` / `function_call`, `web_search_options`, `input_audio` and `file` parts, the
//! `function` role, non-function tools; images, tools and `reasoning_effort` on models without
//! that capability; any other unknown field.
//!
//! Layout: `wire` holds Gemini's JSON types, `request` translates requests (`options` their
//! tools and generation config), `response` reads whole answers, `stream` decodes streams,
//! `embed` does embeddings.

mod embed;
mod options;
mod request;
mod response;
mod stream;
mod wire;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use router_one_core::ApiError;

use crate::provider::{
    ChatApi, ChatRequest, PreparedRequest, ReadContext, ReadResponse, Refusal, StreamDecoder, Target,
};
use crate::refusal;
use crate::request::TopLevel;

use wire::{ErrorDetail, ErrorEnvelope};

/// The Gemini adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gemini;

impl ChatApi for Gemini {
    fn prepare_chat(&self, request: &ChatRequest<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError> {
        request::prepare(request, target)
    }

    fn prepare_embeddings(&self, request: &TopLevel<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError> {
        embed::prepare(request, target)
    }

    fn read_chat(&self, body: Bytes, context: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        response::read_chat(&body, context)
    }

    fn read_embeddings(&self, body: Bytes, context: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        embed::read(&body, context)
    }

    fn stream_decoder(&self, context: ReadContext<'_>) -> Box<dyn StreamDecoder> {
        Box::new(stream::Decoder::new(context))
    }

    fn read_error(&self, status: u16, body: &[u8]) -> Refusal {
        // Google's error object, sometimes wrapped in a one-element array. The shapes are told
        // apart by the first byte: serde would also read a struct from an array, by position.
        let envelope = if body.trim_ascii_start().starts_with(b"[") {
            serde_json::from_slice::<Vec<ErrorEnvelope<'_>>>(body)
                .ok()
                .and_then(|v| v.into_iter().next())
        } else {
            serde_json::from_slice::<ErrorEnvelope<'_>>(body).ok()
        };
        match envelope {
            Some(envelope) => {
                let detail = &envelope.error;
                Refusal::Error(error_from(status_of(detail, status), detail.message.as_deref()))
            }
            None => Refusal::Error(error_from(status, None)),
        }
    }

    fn headers(&self, api_key: &str) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let mut value = HeaderValue::from_str(api_key).ok()?;
        value.set_sensitive(true);
        Some(vec![(HeaderName::from_static("x-goog-api-key"), value)])
    }
}

/// The HTTP status an error means: from Google's canonical `status` when it names one, else
/// `fallback`.
pub(crate) fn status_of(detail: &ErrorDetail<'_>, fallback: u16) -> u16 {
    match detail.status.as_deref() {
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION") => 400,
        Some("UNAUTHENTICATED") => 401,
        Some("PERMISSION_DENIED") => 403,
        Some("NOT_FOUND") => 404,
        Some("RESOURCE_EXHAUSTED") => 429,
        Some("INTERNAL") => 500,
        Some("UNAVAILABLE") => 503,
        Some("DEADLINE_EXCEEDED") => 504,
        _ => fallback,
    }
}

/// The client's error for an upstream status and message.
pub(crate) fn error_from(status: u16, message: Option<&str>) -> ApiError {
    refusal::from_status(status, message.filter(|m| !m.is_empty()))
}
