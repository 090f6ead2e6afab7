//! Upstream providers. Each wire format lives in its own folder behind the [`ChatApi`] trait;
//! OpenAI-compatible vendors (DeepSeek, Mistral, Groq, Together, …) are presets of [`openai`],
//! not new modules. Clients always speak OpenAI format: [`anthropic`] and [`gemini`] translate.
//! [`azure`] and [`vertex`] are cloud hosts of those formats: other URLs and authentication, the
//! same bodies.

pub mod anthropic;
pub mod azure;
pub mod client;
pub mod estimate;
pub mod gemini;
pub mod keys;
pub mod openai;
pub mod provider;
pub mod refusal;
pub mod request;
pub mod sse;
pub mod vertex;

pub use client::{UpstreamClient, UpstreamError};
pub use keys::{KeyPool, NoKey, UpstreamKey};
pub use provider::{
    ApiStyle, ChatApi, ChatRequest, Decoded, HeldUsage, OutputLimitField, PreparedRequest, Provider, ProviderConfig,
    ReadContext, ReadHints, ReadResponse, Refusal, StreamDecoder, Target,
};
pub use request::{ChatView, TopLevel};
