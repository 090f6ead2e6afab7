//! OpenAI wire format: `POST /v1/chat/completions` (plain and SSE) and `POST /v1/embeddings`,
//! shaped as in the OpenAI API reference and the `openai-python` types.

mod chat;
mod completion;
mod embeddings;
mod error;
mod request;
mod stream;

pub(crate) use chat::handle as chat;
pub(crate) use embeddings::handle as embeddings;
pub(crate) use error::not_found;
