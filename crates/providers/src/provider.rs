//! A configured provider channel and the trait every wire format implements.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use router_one_core::{ApiError, TokenUsage};

use crate::openai::OpenAi;
use crate::request::{ChatView, TopLevel};
use crate::sse::StreamEvent;

/// Which wire format a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiStyle {
    /// OpenAI chat completions and embeddings (also DeepSeek, Mistral, Groq, Together, …).
    OpenAi,
    /// Anthropic Messages (adapter: a later issue).
    Anthropic,
    /// Google Gemini (adapter: a later issue).
    Gemini,
}

/// A provider as the operator configures it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Wire format.
    pub api: ApiStyle,
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The environment variable holding the secret (never the secret itself).
    pub api_key_env: String,
}

/// A request body rewritten for the upstream, plus what the gateway learned reading it.
#[derive(Debug)]
pub struct PreparedRequest {
    /// The body to send.
    pub body: Bytes,
    /// Path below the base URL (`/chat/completions`).
    pub path: &'static str,
}

/// A client's chat request as read once by the gateway.
#[derive(Debug)]
pub struct ChatRequest<'a> {
    /// The body as received.
    pub body: &'a Bytes,
    /// Its top level, split.
    pub top: &'a TopLevel<'a>,
    /// The fields the gateway reads.
    pub view: &'a ChatView<'a>,
}

/// What a complete (non-streamed) upstream answer reported, and the body to return.
#[derive(Debug)]
pub struct ReadResponse {
    /// The model id the upstream reported.
    pub served_model: Option<String>,
    /// Token counts, when the upstream reported them.
    pub usage: Option<TokenUsage>,
    /// Offset of the closing brace of the body's `usage` object, where `cost` is added.
    pub usage_end: Option<usize>,
}

/// One wire format. Implementations are pure: they transform bytes and never do I/O, so they
/// are tested with golden files and property tests without a network.
pub trait ChatApi: Send + Sync + 'static {
    /// Rewrites a client's OpenAI-format chat body for this upstream: the upstream model id,
    /// forced stream usage, and whatever translation the format needs.
    fn prepare_chat(&self, request: &ChatRequest<'_>, upstream_model: &str) -> Result<PreparedRequest, ApiError>;
    /// Rewrites an OpenAI-format embeddings body for this upstream.
    fn prepare_embeddings(&self, request: &TopLevel<'_>, upstream_model: &str) -> Result<PreparedRequest, ApiError>;
    /// Reads a complete successful response: served model and usage.
    fn read_response(&self, body: &[u8]) -> Result<ReadResponse, ApiError>;
    /// Returns the response body for the client with `usage.cost` set to `cost`; `usage_end`
    /// comes from [`ChatApi::read_response`] of the same body.
    fn with_cost(&self, body: Bytes, usage_end: Option<usize>, cost: &str) -> Bytes;
    /// Classifies one stream event.
    fn read_event(&self, data: &[u8]) -> StreamEvent;
    /// The served model named by a stream event, if it names one.
    fn served_model(&self, data: &[u8]) -> Option<String>;
    /// The authentication header for this format (`None` if the key cannot be a header value).
    fn auth_header(&self, api_key: &str) -> Option<(http::HeaderName, http::HeaderValue)>;
}

/// A provider channel ready to use.
pub struct Provider {
    /// The name in the config (`openai`, `groq`, …).
    pub name: String,
    /// The base URL, without a trailing slash.
    pub base_url: String,
    /// Its authentication header, built once from the secret read at start.
    auth: Option<(http::HeaderName, http::HeaderValue)>,
    /// Its wire format.
    pub api: Arc<dyn ChatApi>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl Provider {
    /// Builds a provider from its config, reading its secret from the environment.
    pub fn from_config(name: &str, config: &ProviderConfig) -> Option<Provider> {
        let api: Arc<dyn ChatApi> = match config.api {
            ApiStyle::OpenAi => Arc::new(OpenAi),
            ApiStyle::Anthropic | ApiStyle::Gemini => return None,
        };
        let mut provider = Provider {
            name: name.to_owned(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            auth: None,
            api,
        };
        if let Some(key) = std::env::var(&config.api_key_env).ok().filter(|k| !k.is_empty()) {
            provider.set_api_key(&key);
        }
        Some(provider)
    }

    /// Sets the secret presented upstream. A secret that cannot be a header value is dropped
    /// (and the provider then has no key).
    pub fn set_api_key(&mut self, key: &str) {
        self.auth = self.api.auth_header(key);
    }

    /// Whether a secret is set.
    pub fn has_api_key(&self) -> bool {
        self.auth.is_some()
    }

    /// The authentication header, if a secret is set.
    pub fn auth_header(&self) -> Option<&(http::HeaderName, http::HeaderValue)> {
        self.auth.as_ref()
    }
}
