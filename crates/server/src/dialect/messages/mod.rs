//! The Anthropic Messages dialect (`POST /v1/messages`): a Messages body rewritten into chat
//! (`request`), the chat answer rewritten into a `message` (`response`) or Anthropic's stream
//! events (`stream`), refusals in Anthropic's error shape (`error`).
//!
//! Claude models keep what only Messages carries (`cache_control`, `thinking` and its signed
//! blocks, `metadata.user_id`) through extensions of the chat format that the Anthropic adapter
//! reads; see `request` for what other models get.

mod error;
mod request;
mod response;
mod stream;

use bytes::Bytes;
use http::StatusCode;

use router_one_core::ApiError;
use router_one_core::catalog::Catalog;

use super::{Dialect, StreamEncoder};

/// The Messages dialect.
pub(crate) static MESSAGES: Messages = Messages;

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Messages;

/// The catalog family whose models are served by the Anthropic adapter, which reads the chat
/// extensions.
const NATIVE_FAMILY: &str = "claude";

/// Whether `model` is a Claude model (an unknown one is not: admission refuses it anyway).
fn is_native(catalog: &Catalog, model: &str) -> bool {
    catalog.get(model).is_some_and(|m| m.family == NATIVE_FAMILY)
}

/// A `count_tokens` body (a Messages body without `max_tokens`) rewritten into chat, as
/// `/v1/messages` would rewrite it.
pub(crate) fn count_body(body: &Bytes, catalog: &Catalog) -> Result<Bytes, ApiError> {
    request::to_chat(body, |model| is_native(catalog, model), request::Purpose::Count)
}

impl Dialect for Messages {
    /// Without the catalog: as for a model that is not Claude's.
    fn to_chat(&self, body: &Bytes) -> Result<Bytes, ApiError> {
        request::to_chat(body, |_| false, request::Purpose::Answer)
    }

    fn to_chat_in(&self, body: &Bytes, catalog: &Catalog) -> Result<Bytes, ApiError> {
        request::to_chat(body, |model| is_native(catalog, model), request::Purpose::Answer)
    }

    fn from_chat(&self, chat: &[u8]) -> Result<Bytes, ApiError> {
        response::from_chat(chat)
    }

    fn stream_encoder(&self) -> Box<dyn StreamEncoder> {
        Box::<stream::Encoder>::default()
    }

    fn error_body(&self, status: StatusCode, error: &[u8]) -> Bytes {
        error::anthropic_error(status, error)
    }
}

#[cfg(test)]
mod tests;
