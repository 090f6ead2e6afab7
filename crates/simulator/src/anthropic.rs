//! Anthropic wire format: `POST /v1/messages` (plain and SSE), shaped as in Anthropic's Messages
//! API reference and the `anthropic-sdk-python` types (`Message`, `Usage`, `RawMessageStreamEvent`).

mod error;
mod messages;
mod request;
mod response;
mod stream;

pub(crate) use messages::handle as messages;
