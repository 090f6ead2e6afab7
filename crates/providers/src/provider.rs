//! A configured provider channel and the trait every wire format implements.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use router_one_core::{ApiError, Model, TokenUsage};

use crate::anthropic::Anthropic;
use crate::gemini::Gemini;
use crate::openai::OpenAi;
use crate::request::{ChatView, TopLevel};

/// Which wire format a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiStyle {
    /// OpenAI chat completions and embeddings (also DeepSeek, Mistral, Groq, Together, …).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini (`generateContent`).
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
    /// OpenAI format only: the field that limits output when the gateway adds one (OpenAI's
    /// reasoning models accept only `max_completion_tokens`; most compatible vendors only
    /// `max_tokens`).
    #[serde(default)]
    pub output_limit_field: OutputLimitField,
}

/// The request field that limits output tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputLimitField {
    /// `max_tokens`.
    #[default]
    MaxTokens,
    /// `max_completion_tokens`.
    MaxCompletionTokens,
}

impl OutputLimitField {
    /// The field's name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputLimitField::MaxTokens => "max_tokens",
            OutputLimitField::MaxCompletionTokens => "max_completion_tokens",
        }
    }

    /// The other field, which an upstream reading this one may ignore.
    pub fn other(self) -> OutputLimitField {
        match self {
            OutputLimitField::MaxTokens => OutputLimitField::MaxCompletionTokens,
            OutputLimitField::MaxCompletionTokens => OutputLimitField::MaxTokens,
        }
    }
}

/// A request body rewritten for the upstream.
#[derive(Debug)]
pub struct PreparedRequest {
    /// The body to send.
    pub body: Bytes,
    /// Path and query below the base URL (`/chat/completions`, `/models/x:generateContent`).
    pub path: Cow<'static, str>,
    /// What reading the answer will need to know about the request.
    pub hints: ReadHints,
}

/// What an adapter learns preparing a request and needs again to read its answer (the request
/// itself is gone by then).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadHints {
    /// The client asked for embeddings as base64 (`encoding_format: "base64"`).
    pub base64: bool,
    /// The adapter's estimate of the prompt's tokens, for upstreams whose answers count none.
    pub prompt_tokens_estimate: u64,
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

/// The catalog model a request goes to and its id at this provider.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The catalog entry (maximum output, capabilities).
    pub model: &'a Model,
    /// The model id the upstream knows.
    pub upstream_id: &'a str,
    /// The output limit per choice that admission reserved for (the client's, within the model's
    /// maximum, or a default clamped to what the key and account can pay for): the upstream is
    /// sent exactly this limit, so it cannot produce more than was metered. `None` for embeddings.
    pub output_limit: Option<u64>,
}

impl ChatRequest<'_> {
    /// The output limit to send upstream: admission's, else (a request prepared outside
    /// admission) the client's.
    pub fn output_limit(&self, target: Target<'_>) -> Option<u64> {
        target.output_limit.or(self.view.max_output())
    }
}

/// What a reader needs to know about the request whose answer it reads.
#[derive(Debug, Clone, Copy)]
pub struct ReadContext<'a> {
    /// The model id sent upstream (the served model when the upstream names none).
    pub upstream_id: &'a str,
    /// Unix seconds of the request, for `created` in translated answers.
    pub created: u64,
    /// What the adapter noted when it prepared the request.
    pub hints: ReadHints,
}

/// A complete (non-streamed) upstream answer, read: the client's body (always OpenAI format)
/// and what the gateway meters.
#[derive(Debug)]
pub struct ReadResponse {
    /// The body for the client, OpenAI format.
    pub body: Bytes,
    /// The model id the upstream reported.
    pub served_model: Option<String>,
    /// Token counts, when the upstream reported them.
    pub usage: Option<TokenUsage>,
    /// Offset in `body` of the closing brace of its `usage` object, where `cost` is added.
    pub usage_end: Option<usize>,
}

/// An OpenAI usage-only chunk (`"choices": []`), held back until the stream ends so its cost can
/// be added; sent only when the client asked for usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldUsage {
    /// The chunk's JSON (without `data: `).
    pub chunk: Bytes,
    /// Offset of the closing brace of its `usage` object.
    pub usage_end: Option<usize>,
}

/// What one upstream stream event meant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Token counts the event reported (cumulative: the last report wins).
    pub usage: Option<TokenUsage>,
    /// A usage chunk to send last (replaces any held earlier).
    pub held: Option<HeldUsage>,
    /// The upstream said the answer is complete: the client gets `data: [DONE]` at the end.
    pub done: bool,
    /// The upstream reported an error inside the stream (already translated into `out`).
    pub error: bool,
    /// Not an event of this format (truncated or garbled): the stream is broken from here.
    pub malformed: bool,
}

/// Turns one upstream's stream events into OpenAI chunks, one event at a time.
pub trait StreamDecoder: Send {
    /// Reads one event: `event` is the whole SSE event as received, `data` its payload. What the
    /// client should get goes to `out` as whole SSE events (`data: …\n\n`).
    fn decode(&mut self, event: &Bytes, data: Bytes, out: &mut Vec<Bytes>) -> Decoded;
    /// The model the upstream named, once an event has named it.
    fn served_model(&self) -> Option<&str>;
}

/// One wire format. Implementations are pure: they transform bytes and never do I/O, so they
/// are tested with golden files and property tests without a network. Whatever the upstream
/// speaks, the client always gets OpenAI format.
pub trait ChatApi: Send + Sync + 'static {
    /// Rewrites a client's OpenAI-format chat body for this upstream: the upstream model id,
    /// forced stream usage, and whatever translation the format needs. A request that cannot be
    /// translated is refused with a 400 naming the field, never silently changed.
    fn prepare_chat(&self, request: &ChatRequest<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError>;
    /// Rewrites an OpenAI-format embeddings body for this upstream.
    fn prepare_embeddings(&self, request: &TopLevel<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError>;
    /// Reads a complete successful chat answer.
    fn read_chat(&self, body: Bytes, context: ReadContext<'_>) -> Result<ReadResponse, ApiError>;
    /// Reads a complete successful embeddings answer.
    fn read_embeddings(&self, body: Bytes, context: ReadContext<'_>) -> Result<ReadResponse, ApiError>;
    /// A decoder for one streamed answer.
    fn stream_decoder(&self, context: ReadContext<'_>) -> Box<dyn StreamDecoder>;
    /// What an error status and body from this upstream mean to the client.
    fn read_error(&self, status: u16, body: &[u8]) -> Refusal;
    /// The headers that authenticate (and version) a request, or `None` if the key cannot be a
    /// header value.
    fn headers(&self, api_key: &str) -> Option<Vec<(HeaderName, HeaderValue)>>;
}

/// An upstream's error answer, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Already an OpenAI-format error the client can read: send status and body unchanged.
    PassThrough,
    /// Answer with this error instead.
    Error(ApiError),
}

/// A provider channel ready to use.
pub struct Provider {
    /// The name in the config (`openai`, `groq`, …).
    pub name: String,
    /// The base URL, without a trailing slash.
    pub base_url: String,
    /// Its authentication headers, built once from the secret read at start.
    headers: Option<Vec<(HeaderName, HeaderValue)>>,
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
    pub fn from_config(name: &str, config: &ProviderConfig) -> Provider {
        let api: Arc<dyn ChatApi> = match config.api {
            ApiStyle::OpenAi => Arc::new(OpenAi {
                output_limit_field: config.output_limit_field,
            }),
            ApiStyle::Anthropic => Arc::new(Anthropic),
            ApiStyle::Gemini => Arc::new(Gemini),
        };
        let mut provider = Provider {
            name: name.to_owned(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            headers: None,
            api,
        };
        if let Some(key) = std::env::var(&config.api_key_env).ok().filter(|k| !k.is_empty()) {
            provider.set_api_key(&key);
        }
        provider
    }

    /// Sets the secret presented upstream. A secret that cannot be a header value is dropped
    /// (and the provider then has no key).
    pub fn set_api_key(&mut self, key: &str) {
        self.headers = self.api.headers(key);
    }

    /// Whether a secret is set.
    pub fn has_api_key(&self) -> bool {
        self.headers.is_some()
    }

    /// The authentication headers, if a secret is set.
    pub fn auth_headers(&self) -> &[(HeaderName, HeaderValue)] {
        self.headers.as_deref().unwrap_or_default()
    }
}
