//! Upstream providers. Each wire format lives in its own folder behind the [`ChatApi`] trait;
//! OpenAI-compatible vendors (DeepSeek, Mistral, Groq, Together, …) are presets of [`openai`],
//! not new modules.

pub mod client;
pub mod openai;
pub mod provider;
pub mod request;
pub mod sse;

pub use client::{UpstreamClient, UpstreamError};
pub use provider::{ApiStyle, ChatApi, ChatRequest, PreparedRequest, Provider, ProviderConfig, ReadResponse};
pub use request::{ChatView, TopLevel};
