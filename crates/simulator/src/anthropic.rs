//! Anthropic wire format: `POST /v1/messages` (plain and SSE), shaped as in Anthropic's Messages
//! API reference and the `anthropic-sdk-python` types (`Message`, `Usage`, `RawMessageStreamEvent`).
//! It simulates the prompt cache (`cache_control` breakpoints: written on first sight, read on a
//! repeat, `cache`) and extended thinking (a signed `thinking` block, `thinking`).

mod cache;
mod error;
mod messages;
mod request;
mod response;
mod stream;
mod thinking;

pub(crate) use cache::PromptCache;

pub(crate) use messages::handle as messages;
pub(crate) use messages::vertex as vertex_messages;
