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
    /// Azure OpenAI: OpenAI's format on a resource's deployments (`api-key`, `api-version`).
    Azure,
    /// Anthropic's Claude models on Google Cloud Vertex AI (`rawPredict`, OAuth access tokens).
    #[serde(rename = "vertex-anthropic")]
    VertexAnthropic,
    /// Google's Gemini models on Google Cloud Vertex AI (`generateContent`, OAuth access tokens).
    #[serde(rename = "vertex-gemini")]
    VertexGemini,
}

impl ApiStyle {
    /// Whether the provider is on Vertex AI (a project, a region, Google credentials).
    pub fn is_vertex(self) -> bool {
        matches!(self, ApiStyle::VertexAnthropic | ApiStyle::VertexGemini)
    }
}

/// A provider as the operator configures it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Wire format.
    pub api: ApiStyle,
    /// Base URL including the version path, e.g. `https://api.openai.com/v1` (Vertex AI: the
    /// host only, by default `https://{region}-aiplatform.googleapis.com`).
    #[serde(default)]
    pub base_url: String,
    /// The environment variable holding the secret (never the secret itself).
    #[serde(default)]
    pub api_key_env: String,
    /// More keys for the same provider (`[[providers.NAME.keys]]`), each from its own
    /// environment variable and with optional limits of its own; requests spread over all.
    #[serde(default)]
    pub keys: Vec<crate::keys::KeyConfig>,
    /// OpenAI format only: the field that limits output when the gateway adds one (OpenAI's
    /// reasoning models accept only `max_completion_tokens`; most compatible vendors only
    /// `max_tokens`).
    #[serde(default)]
    pub output_limit_field: OutputLimitField,
    /// Azure only: the `api-version` sent (default: the GA version the adapter is written for).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Vertex AI only: the Google Cloud project id.
    #[serde(default)]
    pub project: Option<String>,
    /// Vertex AI only: the region (`us-east5`, `europe-west1`, `global`).
    #[serde(default)]
    pub region: Option<String>,
    /// Vertex AI only: the environment variable holding a service-account key file, as JSON or
    /// as the file's path (e.g. `GOOGLE_APPLICATION_CREDENTIALS`). Access tokens are minted
    /// from it; `api_key_env` may instead hold a static access token.
    #[serde(default)]
    pub credentials_env: Option<String>,
    /// Vertex AI only: the token endpoint, when not the key file's `token_uri`.
    #[serde(default)]
    pub token_url: Option<String>,
}

impl ProviderConfig {
    /// What makes this provider unusable as configured, if anything.
    pub fn problem(&self) -> Option<String> {
        if !self.api.is_vertex() {
            return self.base_url.is_empty().then(|| "`base_url` is required".to_owned());
        }
        for (field, value) in [("project", &self.project), ("region", &self.region)] {
            match value {
                None => return Some(format!("`{field}` is required for Vertex AI")),
                Some(v) if !crate::vertex::is_path_safe(v) => {
                    return Some(format!(
                        "`{field}` may hold only letters, digits, `-`, `_`, `.` and `@`"
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// The base URL: the configured one, or Vertex AI's for the region.
    fn effective_base_url(&self) -> String {
        match (&self.region, self.base_url.is_empty() && self.api.is_vertex()) {
            (Some(region), true) => crate::vertex::default_base_url(region),
            _ => self.base_url.trim_end_matches('/').to_owned(),
        }
    }

    fn vertex_location(&self) -> crate::vertex::Location {
        crate::vertex::Location {
            project: self.project.clone().unwrap_or_default(),
            region: self.region.clone().unwrap_or_default(),
        }
    }
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
    /// The upstream's own id for its answer, where it sent one (OpenAI format: the body's `id`;
    /// Anthropic: the message id; Gemini: `responseId`; never an id the adapter made up).
    pub upstream_response_id: Option<String>,
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
    /// The upstream's own id for its answer, once an event has named it (as
    /// [`ReadResponse::upstream_response_id`]).
    fn upstream_response_id(&self) -> Option<&str> {
        None
    }
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
    /// Its upstream keys, their authentication headers built once from the secrets read at start.
    pub keys: crate::keys::KeyPool,
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

/// A key minting access tokens from the service account `credentials_env` names (Vertex AI),
/// if one is configured and readable; a key file that is not is logged, not fatal (the
/// provider then has no key and its requests get a 503).
fn service_account(name: &str, config: &ProviderConfig) -> Option<crate::keys::UpstreamKey> {
    let env = config.credentials_env.as_deref().filter(|_| config.api.is_vertex())?;
    match crate::vertex::ServiceAccount::from_env(env) {
        Ok(account) => {
            let source = crate::vertex::TokenSource::new(name, account, config.token_url.as_deref());
            Some(crate::keys::UpstreamKey::with_token(env, source))
        }
        Err(e) => {
            tracing::error!(provider = %name, error = %e, "Vertex AI credentials unusable");
            None
        }
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
            ApiStyle::Azure => Arc::new(crate::azure::AzureOpenAi {
                openai: OpenAi {
                    output_limit_field: config.output_limit_field,
                },
                api_version: config
                    .api_version
                    .clone()
                    .unwrap_or_else(|| crate::azure::DEFAULT_API_VERSION.to_owned()),
            }),
            ApiStyle::VertexAnthropic => Arc::new(crate::vertex::VertexAnthropic {
                location: config.vertex_location(),
            }),
            ApiStyle::VertexGemini => Arc::new(crate::vertex::VertexGemini {
                location: config.vertex_location(),
            }),
        };
        // `api_key_env` first (if set), then every `[[keys]]` entry; a variable that is unset,
        // empty or not a header value gives no key.
        let single = (!config.api_key_env.is_empty()).then_some((config.api_key_env.as_str(), None));
        let keys = single
            .into_iter()
            .chain(config.keys.iter().map(|k| (k.env.as_str(), Some(k))))
            .filter_map(|(env, limits)| {
                let secret = std::env::var(env).ok().filter(|k| !k.is_empty())?;
                let headers = api.headers(&secret)?;
                Some(crate::keys::UpstreamKey::new(env, headers, limits))
            })
            .chain(service_account(name, config))
            .collect();
        Provider {
            name: name.to_owned(),
            base_url: config.effective_base_url(),
            keys: crate::keys::KeyPool::new(keys),
            api,
        }
    }

    /// Sets the one secret presented upstream (the demo's, tests'). A secret that cannot be a
    /// header value is dropped (and the provider then has no key).
    pub fn set_api_key(&mut self, key: &str) {
        let keys = self
            .api
            .headers(key)
            .map(|headers| crate::keys::UpstreamKey::new("(set)", headers, None));
        self.keys = crate::keys::KeyPool::new(keys.into_iter().collect());
    }

    /// Whether a secret is set.
    pub fn has_api_key(&self) -> bool {
        !self.keys.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: serde_json::Value) -> ProviderConfig {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn vertex_needs_a_project_and_a_region_and_defaults_its_base_url_from_the_region() {
        let vertex = config(json!({"api": "vertex-gemini", "project": "p", "region": "europe-west1"}));
        assert_eq!(vertex.problem(), None);
        assert_eq!(
            vertex.effective_base_url(),
            "https://europe-west1-aiplatform.googleapis.com"
        );
        let own = config(json!({"api": "vertex-anthropic", "project": "p", "region": "r", "base_url": "http://x/"}));
        assert_eq!(own.effective_base_url(), "http://x");
        let no_project = config(json!({"api": "vertex-anthropic", "region": "us-east5"}));
        assert!(no_project.problem().unwrap().contains("project"));
        let unsafe_project = config(json!({"api": "vertex-anthropic", "project": "a/b", "region": "us-east5"}));
        assert!(unsafe_project.problem().unwrap().contains("project"));
        assert!(config(json!({"api": "openai"})).problem().unwrap().contains("base_url"));
        assert_eq!(
            config(json!({"api": "openai", "base_url": "http://x/v1"})).problem(),
            None
        );
    }

    #[test]
    fn a_vertex_provider_without_readable_credentials_has_no_key() {
        let vertex = config(json!({"api": "vertex-anthropic", "project": "p", "region": "us-east5",
            "credentials_env": "ROUTER_ONE_TEST_VERTEX_UNSET"}));
        let mut provider = Provider::from_config("vertex", &vertex);
        assert!(!provider.has_api_key());
        // A static access token is sent as a Bearer token.
        provider.set_api_key("ya29.static");
        let key = provider.keys.pick(1).unwrap();
        assert_eq!(
            key.headers,
            [(
                http::header::AUTHORIZATION,
                HeaderValue::from_static("Bearer ya29.static")
            )]
        );
        assert!(key.token.is_none());
    }
}
