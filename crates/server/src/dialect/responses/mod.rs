//! The OpenAI Responses API (`POST /v1/responses`) as a dialect of chat completions:
//! [`request`] and [`input`] rewrite the request into a chat body, [`response`] and [`stream`]
//! rewrite the chat answer into a Response object or its semantic events, both made of the
//! parts in [`object`]. Router One stores no bodies, so what needs storage (`store: true`,
//! `previous_response_id`, `background`) is refused with a 400 that says so; `docs/responses.md`
//! lists what is served and what is refused.

mod input;
mod object;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod props;
mod request;
mod response;
mod stream;

use bytes::Bytes;
use http::StatusCode;

use router_one_core::ApiError;

use super::{Dialect, StreamEncoder};

/// The Responses dialect.
pub(crate) struct Responses;

/// The one instance the route serves with.
pub(crate) static RESPONSES: Responses = Responses;

impl Dialect for Responses {
    fn to_chat(&self, body: &Bytes) -> Result<Bytes, ApiError> {
        request::to_chat(body)
    }

    fn from_chat(&self, chat: &[u8]) -> Result<Bytes, ApiError> {
        response::from_chat(b"{}", chat)
    }

    fn stream_encoder(&self) -> Box<dyn StreamEncoder> {
        Box::new(stream::Encoder::new(b"{}"))
    }

    fn from_chat_for(&self, request: &[u8], chat: &[u8]) -> Result<Bytes, ApiError> {
        response::from_chat(request, chat)
    }

    fn stream_encoder_for(&self, request: &[u8]) -> Box<dyn StreamEncoder> {
        Box::new(stream::Encoder::new(request))
    }

    /// OpenAI's Responses API answers errors in the chat shape already.
    fn error_body(&self, _status: StatusCode, error: &[u8]) -> Bytes {
        Bytes::copy_from_slice(error)
    }
}
