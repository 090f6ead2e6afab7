//! The OpenAI chat format as translating adapters need it: the client's request read in full
//! (JSON values that are passed on — schemas, tool arguments, sampling numbers — stay raw text,
//! so they reach the other format byte for byte), and the answer and chunks written back.
//!
//! The OpenAI adapter itself never parses this much: it forwards bodies and only splits the top
//! level (`crate::request`).

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use router_one_core::{ApiError, ErrorKind, TokenUsage};

use crate::provider::{HeldUsage, ReadResponse};
use crate::request::TopLevel;

// ------------------------------------------------------------------------------------ request

/// A chat completion request, read in full.
#[derive(Debug, Deserialize)]
pub struct ChatBody<'a> {
    /// The conversation.
    #[serde(borrow)]
    pub messages: Vec<Message<'a>>,
    /// Function tools.
    #[serde(default, borrow)]
    pub tools: Option<Vec<Tool<'a>>>,
    /// `"none" | "auto" | "required" | {"type":"function","function":{"name"}}`, raw.
    #[serde(default, borrow)]
    pub tool_choice: Option<&'a RawValue>,
    /// Whether several tool calls may come in one turn.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// `{"type":"text"|"json_object"|"json_schema", "json_schema": {…}}`.
    #[serde(default, borrow)]
    pub response_format: Option<ResponseFormat<'a>>,
    /// A string or an array of strings, raw.
    #[serde(default, borrow)]
    pub stop: Option<&'a RawValue>,
    /// Sampling temperature, raw.
    #[serde(default, borrow)]
    pub temperature: Option<&'a RawValue>,
    /// Nucleus sampling, raw.
    #[serde(default, borrow)]
    pub top_p: Option<&'a RawValue>,
    /// Top-k sampling (not OpenAI's, but Anthropic and Gemini have it), raw.
    #[serde(default, borrow)]
    pub top_k: Option<&'a RawValue>,
    /// Seed, raw.
    #[serde(default, borrow)]
    pub seed: Option<&'a RawValue>,
    /// Presence penalty, raw.
    #[serde(default, borrow)]
    pub presence_penalty: Option<&'a RawValue>,
    /// Frequency penalty, raw.
    #[serde(default, borrow)]
    pub frequency_penalty: Option<&'a RawValue>,
    /// Number of choices.
    #[serde(default)]
    pub n: Option<u64>,
    /// End-user id.
    #[serde(default, borrow)]
    pub user: Option<Cow<'a, str>>,
    /// `none | minimal | low | medium | high | xhigh`.
    #[serde(default, borrow)]
    pub reasoning_effort: Option<Cow<'a, str>>,
    /// Extension for Claude (read by the Anthropic adapter only; others refuse it): Anthropic's
    /// `thinking` config, raw.
    #[serde(default, borrow)]
    pub thinking: Option<&'a RawValue>,
}

impl<'a> ChatBody<'a> {
    /// Reads a chat body in full, with a precise error when a field has the wrong shape.
    pub fn parse(body: &'a [u8]) -> Result<ChatBody<'a>, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidRequest,
                format!("The request does not follow the chat completions schema: {e}"),
            )
        })
    }

    /// Every message's content, read (errors name the message).
    pub fn contents(&self) -> Result<Vec<Content<'a>>, ApiError> {
        self.messages.iter().enumerate().map(|(i, m)| m.content(i)).collect()
    }

    /// `stop` as a list (empty when absent).
    pub fn stop_sequences(&self) -> Result<Vec<Cow<'a, str>>, ApiError> {
        let Some(raw) = self.stop else {
            return Ok(Vec::new());
        };
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stop<'b> {
            One(#[serde(borrow)] Cow<'b, str>),
            Many(#[serde(borrow)] Vec<Cow<'b, str>>),
            Null(()),
        }
        match serde_json::from_str::<Stop<'a>>(raw.get()) {
            Ok(Stop::One(s)) => Ok(vec![s]),
            Ok(Stop::Many(v)) => Ok(v),
            Ok(Stop::Null(())) => Ok(Vec::new()),
            Err(_) => Err(invalid("stop", "'stop' must be a string or an array of strings.")),
        }
    }

    /// `tool_choice`, read.
    pub fn tool_choice(&self) -> Result<Option<ToolChoice<'a>>, ApiError> {
        let Some(raw) = self.tool_choice else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct Named<'b> {
            #[serde(borrow)]
            function: NameOnly<'b>,
        }
        #[derive(Deserialize)]
        struct NameOnly<'b> {
            #[serde(borrow)]
            name: Cow<'b, str>,
        }
        let text = raw.get();
        if text.starts_with('"') {
            return match serde_json::from_str::<Cow<'a, str>>(text).as_deref() {
                Ok("none") => Ok(Some(ToolChoice::None)),
                Ok("auto") => Ok(Some(ToolChoice::Auto)),
                Ok("required") => Ok(Some(ToolChoice::Required)),
                _ => Err(invalid(
                    "tool_choice",
                    "'tool_choice' must be \"none\", \"auto\", \"required\" or a named function.",
                )),
            };
        }
        if text == "null" {
            return Ok(None);
        }
        serde_json::from_str::<Named<'a>>(text)
            .map(|n| Some(ToolChoice::Function(n.function.name)))
            .map_err(|_| invalid("tool_choice", "'tool_choice' names no function."))
    }
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice<'a> {
    /// Never call a tool.
    None,
    /// The model decides.
    Auto,
    /// Call at least one tool.
    Required,
    /// Call this function.
    Function(Cow<'a, str>),
}

/// One message. Roles: `system`, `developer`, `user`, `assistant`, `tool` (and the legacy
/// `function`, which adapters refuse).
#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    /// The role.
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    /// A string, an array of parts, or null; raw until [`Message::content`] reads it.
    #[serde(default, borrow)]
    pub content: Option<&'a RawValue>,
    /// An assistant's tool calls.
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
    /// The call a `tool` message answers.
    #[serde(default, borrow)]
    pub tool_call_id: Option<Cow<'a, str>>,
    /// A participant name.
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    /// Extension for Claude: an assistant's earlier `thinking` / `redacted_thinking` blocks,
    /// raw with their signatures (they go back to Anthropic unchanged).
    #[serde(default, borrow)]
    pub thinking_blocks: Option<Vec<&'a RawValue>>,
    /// Extension for Claude: the prompt-cache breakpoint (`{"type":"ephemeral"}`) of the
    /// message's last block (a tool call or tool result; parts carry their own).
    #[serde(default, borrow)]
    pub cache_control: Option<&'a RawValue>,
    /// Extension for Claude: a `tool` message that reports an error (`tool_result.is_error`).
    #[serde(default)]
    pub is_error: Option<bool>,
}

/// A message's content, read.
#[derive(Debug, PartialEq, Eq)]
pub enum Content<'a> {
    /// No content (`null` or absent).
    Empty,
    /// A plain string.
    Text(Cow<'a, str>),
    /// Content parts.
    Parts(Vec<Part<'a>>),
}

impl<'a> Message<'a> {
    /// The content, read; `index` names the message in errors.
    pub fn content(&self, index: usize) -> Result<Content<'a>, ApiError> {
        let Some(raw) = self.content else {
            return Ok(Content::Empty);
        };
        let text = raw.get();
        let bad = || {
            invalid_owned(
                format!("messages[{index}].content"),
                format!("'messages[{index}].content' must be a string or an array of content parts."),
            )
        };
        match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str(text).map(Content::Text).map_err(|_| bad()),
            Some(b'[') => serde_json::from_str(text).map(Content::Parts).map_err(|_| bad()),
            _ if text == "null" => Ok(Content::Empty),
            _ => Err(bad()),
        }
    }
}

/// One content part: `text`, `image_url`, `input_audio`, `file`, `refusal`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Part<'a> {
    /// The part's type.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// A `text` (or `refusal`) part's text.
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    /// An `image_url` part's image.
    #[serde(default, borrow)]
    pub image_url: Option<ImageUrl<'a>>,
    /// Extension for Claude (OpenRouter's too): the part's prompt-cache breakpoint, raw.
    #[serde(default, borrow)]
    pub cache_control: Option<RawJson<'a>>,
}

/// A raw JSON value, compared by its text.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(transparent)]
pub struct RawJson<'a>(#[serde(borrow)] pub &'a RawValue);

impl PartialEq for RawJson<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for RawJson<'_> {}

/// `{"url": "https://…" | "data:image/png;base64,…", "detail": …}`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct ImageUrl<'a> {
    /// The URL or data URL.
    #[serde(borrow)]
    pub url: Cow<'a, str>,
}

/// An image, as the other formats want it.
#[derive(Debug, PartialEq, Eq)]
pub enum Image<'a> {
    /// Inline bytes: a media type and base64 data.
    Base64 {
        /// `image/png`, …
        media_type: &'a str,
        /// Base64 text, as sent.
        data: &'a str,
    },
    /// A URL the vendor fetches.
    Url(&'a str),
}

impl ImageUrl<'_> {
    /// Splits a `data:<type>;base64,<data>` URL; any other URL is passed by reference.
    pub fn image(&self) -> Result<Image<'_>, ApiError> {
        let url = &*self.url;
        let Some(rest) = url.strip_prefix("data:") else {
            return Ok(Image::Url(url));
        };
        match rest.split_once(";base64,") {
            Some((media_type, data)) if !media_type.is_empty() && !data.is_empty() => {
                Ok(Image::Base64 { media_type, data })
            }
            _ => Err(invalid(
                "image_url",
                "An image data URL must look like data:<media type>;base64,<data>.",
            )),
        }
    }
}

/// An assistant's tool call.
#[derive(Debug, Deserialize)]
pub struct ToolCall<'a> {
    /// The call id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// The function called.
    #[serde(borrow)]
    pub function: FunctionCall<'a>,
}

/// A function call: its name and its arguments as JSON text.
#[derive(Debug, Deserialize)]
pub struct FunctionCall<'a> {
    /// The function's name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// The arguments: JSON text, inside a JSON string.
    #[serde(borrow)]
    pub arguments: Cow<'a, str>,
}

/// A function tool.
#[derive(Debug, Deserialize)]
pub struct Tool<'a> {
    /// `function` (other tool types are refused by adapters).
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// The function.
    #[serde(default, borrow)]
    pub function: Option<FunctionDef<'a>>,
    /// Extension for Claude: the tool's prompt-cache breakpoint, raw.
    #[serde(default, borrow)]
    pub cache_control: Option<&'a RawValue>,
}

/// A function's declaration.
#[derive(Debug, Deserialize)]
pub struct FunctionDef<'a> {
    /// Its name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// What it does.
    #[serde(default, borrow)]
    pub description: Option<Cow<'a, str>>,
    /// Its JSON Schema, raw.
    #[serde(default, borrow)]
    pub parameters: Option<&'a RawValue>,
}

/// `response_format`.
#[derive(Debug, Deserialize)]
pub struct ResponseFormat<'a> {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// For `json_schema`.
    #[serde(default, borrow)]
    pub json_schema: Option<JsonSchema<'a>>,
}

/// `response_format.json_schema`.
#[derive(Debug, Deserialize)]
pub struct JsonSchema<'a> {
    /// The schema's name.
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    /// The schema, raw.
    #[serde(default, borrow)]
    pub schema: Option<&'a RawValue>,
}

/// Top-level fields that never change the answer, which translating adapters drop: `model` and
/// `stream` (re-sent in the vendor's form), `stream_options` (the gateway meters streams itself),
/// and OpenAI's bookkeeping (`store`, `metadata`, `service_tier`).
pub const INFORMATIONAL: &[&str] = &["model", "stream", "stream_options", "store", "metadata", "service_tier"];

/// Refuses the first top-level field a translating adapter neither translates (`translated`) nor
/// may drop ([`INFORMATIONAL`]): a 400 naming it, never a silent drop. A `null`, and a value
/// that asks for OpenAI's default (`n: 1`, `logprobs: false`, `logit_bias: {}`,
/// `modalities: ["text"]`, `parallel_tool_calls: true`), changes nothing and passes.
pub fn refuse_untranslated(top: &TopLevel<'_>, family: &str, translated: &[&str]) -> Result<(), ApiError> {
    for (key, value) in &top.0 {
        let key: &str = key;
        let text = value.get().trim();
        if text == "null" || INFORMATIONAL.contains(&key) || translated.contains(&key) {
            continue;
        }
        let why = match key {
            "n" if text == "1" => continue,
            "logprobs" if text == "false" => continue,
            "logit_bias" if text.trim_start_matches('{').trim_start() == "}" => continue,
            "parallel_tool_calls" if text == "true" => continue,
            "modalities" => match serde_json::from_str::<Vec<Cow<'_, str>>>(text) {
                Ok(list) if list.iter().all(|m| m == "text") => continue,
                Ok(_) => "only text output is supported.",
                Err(_) => return Err(invalid("modalities", "'modalities' must be an array of strings.")),
            },
            "n" => "one choice is generated per request; send n separate requests.",
            "logprobs" | "top_logprobs" => "log probabilities are not returned.",
            "logit_bias" => "there is no logit bias.",
            "presence_penalty" | "frequency_penalty" => "there are no repetition penalties.",
            "seed" => "there is no seeded sampling.",
            "parallel_tool_calls" => "parallel tool calls cannot be turned off.",
            "audio" => "only text output is supported.",
            "prediction" => "predicted outputs are not supported.",
            "functions" | "function_call" => {
                "the legacy functions API is not supported; use 'tools' and 'tool_choice'."
            }
            "web_search_options" => "web search is not supported.",
            _ => "the field has no equivalent, and it is refused rather than ignored.",
        };
        return Err(unsupported(key.to_owned(), family, why));
    }
    Ok(())
}

/// A 400 naming `param`.
pub fn invalid(param: &'static str, message: impl Into<Cow<'static, str>>) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message).with_param(param)
}

fn invalid_owned(param: String, message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message).with_param(param)
}

/// A 400 for a field the target model family cannot honour: refused, never dropped.
pub fn unsupported(param: impl Into<Cow<'static, str>>, family: &str, why: &str) -> ApiError {
    let param = param.into();
    ApiError::new(
        ErrorKind::InvalidRequest,
        format!("'{param}' is not supported for {family} models: {why}"),
    )
    .with_param(param)
}

// ------------------------------------------------------------------------------------ answers

/// One tool call in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallOut<'a> {
    /// The call id.
    pub id: &'a str,
    /// The function's name.
    pub name: &'a str,
    /// The arguments as JSON text, exactly as the upstream wrote them.
    pub arguments: &'a str,
}

/// A complete answer, to be written as an OpenAI `chat.completion`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionOut<'a> {
    /// Response id.
    pub id: &'a str,
    /// Unix seconds.
    pub created: u64,
    /// The served model.
    pub model: &'a str,
    /// Text content (`None`: `null`).
    pub content: Option<&'a str>,
    /// Reasoning text, when the upstream shows it (`reasoning_content`, as DeepSeek names it).
    pub reasoning: Option<&'a str>,
    /// Claude's thinking blocks with their signatures (a JSON array, raw), so a client can send
    /// them back: the `thinking_blocks` extension of the message.
    pub thinking_blocks: Option<RawJson<'a>>,
    /// Tool calls.
    pub tool_calls: Vec<ToolCallOut<'a>>,
    /// `stop`, `length`, `tool_calls` or `content_filter`.
    pub finish_reason: &'a str,
    /// Claude: the stop sequence that ended the answer (the choice's `stop_sequence`
    /// extension, which a Messages client reads as `stop_reason: stop_sequence`).
    pub stop_sequence: Option<&'a str>,
    /// Token counts.
    pub usage: TokenUsage,
}

#[derive(Serialize)]
struct CompletionJson<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceJson<'a>; 1],
    // Last, so the usage object closes just before the body's final brace.
    usage: UsageJson,
}

#[derive(Serialize)]
struct ChoiceJson<'a> {
    index: u32,
    message: MessageJson<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
struct MessageJson<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_blocks: Option<RawJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallJson<'a>>,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct ToolCallJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionJson<'a>,
}

#[derive(Serialize)]
struct FunctionJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

#[derive(Serialize)]
struct UsageJson {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedJson,
    completion_tokens_details: ReasoningJson,
}

#[derive(Serialize)]
struct CachedJson {
    cached_tokens: u64,
    /// Prompt tokens written to the cache (Anthropic's), as OpenRouter names them; only when
    /// some were.
    #[serde(skip_serializing_if = "is_zero")]
    cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct ReasoningJson {
    reasoning_tokens: u64,
}

impl From<TokenUsage> for UsageJson {
    fn from(u: TokenUsage) -> Self {
        UsageJson {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens.saturating_add(u.completion_tokens),
            prompt_tokens_details: CachedJson {
                cached_tokens: u.cached_tokens,
                cache_write_tokens: u.cache_write_tokens,
            },
            completion_tokens_details: ReasoningJson {
                reasoning_tokens: u.reasoning_tokens,
            },
        }
    }
}

/// Writes a complete answer as an OpenAI `chat.completion` body, ready for `usage.cost`.
pub fn completion(out: &CompletionOut<'_>) -> ReadResponse {
    let json = CompletionJson {
        id: out.id,
        object: "chat.completion",
        created: out.created,
        model: out.model,
        choices: [ChoiceJson {
            index: 0,
            message: MessageJson {
                role: "assistant",
                content: out.content,
                reasoning_content: out.reasoning,
                thinking_blocks: out.thinking_blocks,
                tool_calls: out
                    .tool_calls
                    .iter()
                    .map(|c| ToolCallJson {
                        index: None,
                        id: Some(c.id),
                        kind: Some("function"),
                        function: FunctionJson {
                            name: Some(c.name),
                            arguments: Some(c.arguments),
                        },
                    })
                    .collect(),
                refusal: None,
            },
            logprobs: None,
            finish_reason: out.finish_reason,
            stop_sequence: out.stop_sequence,
        }],
        usage: out.usage.into(),
    };
    let body = to_vec(&json);
    ReadResponse {
        usage_end: usage_end(&body),
        body: Bytes::from(body),
        served_model: Some(out.model.to_owned()),
        usage: Some(out.usage),
        upstream_response_id: None,
    }
}

/// The fields every chunk of one stream repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHead {
    /// Response id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model.
    pub model: String,
}

/// What one chunk adds to the answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta<'a> {
    /// `assistant` on the first chunk.
    pub role: bool,
    /// Text.
    pub content: Option<&'a str>,
    /// Reasoning text.
    pub reasoning: Option<&'a str>,
    /// Claude: the signature that closes a thinking block (`reasoning_signature` extension).
    pub reasoning_signature: Option<&'a str>,
    /// Claude: a `redacted_thinking` block's data (`redacted_thinking` extension).
    pub redacted_thinking: Option<&'a str>,
    /// A tool call's start (`id` and `name` set) or its next argument fragment.
    pub tool_call: Option<ToolCallDelta<'a>>,
    /// Set on the last content chunk.
    pub finish_reason: Option<&'a str>,
    /// Claude: with `finish_reason`, the stop sequence that ended the answer (extension).
    pub stop_sequence: Option<&'a str>,
}

/// One tool call fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta<'a> {
    /// The call's position among this answer's calls.
    pub index: usize,
    /// Set on the call's first fragment.
    pub id: Option<&'a str>,
    /// Set on the call's first fragment.
    pub name: Option<&'a str>,
    /// An argument fragment, exactly as the upstream sent it.
    pub arguments: Option<&'a str>,
}

#[derive(Serialize)]
struct ChunkJson<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoiceJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageJson>,
}

#[derive(Serialize)]
struct ChunkChoiceJson<'a> {
    index: u32,
    delta: DeltaJson<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
struct DeltaJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_signature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacted_thinking: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallJson<'a>; 1]>,
}

impl ChunkHead {
    /// One `chat.completion.chunk` as a whole SSE event.
    pub fn chunk(&self, delta: &Delta<'_>) -> Bytes {
        let json = ChunkJson {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: vec![ChunkChoiceJson {
                index: 0,
                delta: DeltaJson {
                    role: delta.role.then_some("assistant"),
                    content: delta.content,
                    reasoning_content: delta.reasoning,
                    reasoning_signature: delta.reasoning_signature,
                    redacted_thinking: delta.redacted_thinking,
                    tool_calls: delta.tool_call.as_ref().map(|c| {
                        [ToolCallJson {
                            index: Some(c.index),
                            id: c.id,
                            kind: c.id.map(|_| "function"),
                            function: FunctionJson {
                                name: c.name,
                                arguments: c.arguments,
                            },
                        }]
                    }),
                },
                logprobs: None,
                finish_reason: delta.finish_reason,
                stop_sequence: delta.stop_sequence,
            }],
            usage: None,
        };
        data_event(&to_vec(&json))
    }

    /// The usage-only chunk (`"choices": []`), held until the stream ends.
    pub fn usage_chunk(&self, usage: TokenUsage) -> HeldUsage {
        let json = ChunkJson {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: Vec::new(),
            usage: Some(usage.into()),
        };
        let chunk = to_vec(&json);
        HeldUsage {
            usage_end: usage_end(&chunk),
            chunk: Bytes::from(chunk),
        }
    }
}

/// An error inside a stream, as OpenAI sends one: `data: {"error": {…}}`.
pub fn error_event(error: &ApiError) -> Bytes {
    data_event(&error.to_json())
}

/// `data: <json>\n\n`.
pub fn data_event(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    // These types hold only strings, integers and nulls: serializing them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The closing brace of a `usage` object written last in a JSON object: the byte before the
/// object's own closing brace.
fn usage_end(body: &[u8]) -> Option<usize> {
    body.len().checked_sub(2).filter(|&i| body[i] == b'}')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::openai::with_cost;

    #[test]
    fn reads_a_full_request() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"sunny"}],
            "stop":"END","temperature":0.70,"tool_choice":{"type":"function","function":{"name":"f"}},
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#;
        let chat = ChatBody::parse(body).unwrap();
        assert_eq!(chat.messages.len(), 4);
        assert_eq!(chat.messages[0].content(0).unwrap(), Content::Text("be brief".into()));
        let parts = match chat.messages[1].content(1).unwrap() {
            Content::Parts(parts) => parts,
            other => unreachable!("{other:?}"),
        };
        assert_eq!(
            parts[1].image_url.as_ref().unwrap().image().unwrap(),
            Image::Base64 {
                media_type: "image/png",
                data: "AAAA"
            }
        );
        assert_eq!(chat.messages[2].content(2).unwrap(), Content::Empty);
        assert_eq!(
            chat.messages[2].tool_calls.as_ref().unwrap()[0].function.arguments,
            r#"{"a": 1}"#
        );
        assert_eq!(chat.stop_sequences().unwrap(), vec!["END"]);
        assert_eq!(chat.temperature.unwrap().get(), "0.70");
        assert_eq!(chat.tool_choice().unwrap(), Some(ToolChoice::Function("f".into())));
        assert_eq!(
            chat.tools.unwrap()[0]
                .function
                .as_ref()
                .unwrap()
                .parameters
                .unwrap()
                .get(),
            r#"{"type":"object"}"#
        );
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let chat =
            ChatBody::parse(br#"{"messages":[{"role":"user","content":5}],"stop":3,"tool_choice":"maybe"}"#).unwrap();
        assert_eq!(
            chat.messages[0].content(0).unwrap_err().param.as_deref(),
            Some("messages[0].content")
        );
        assert_eq!(chat.stop_sequences().unwrap_err().param.as_deref(), Some("stop"));
        assert_eq!(chat.tool_choice().unwrap_err().param.as_deref(), Some("tool_choice"));
    }

    #[test]
    fn writes_a_completion_ready_for_cost() {
        let read = completion(&CompletionOut {
            id: "msg_1",
            created: 7,
            model: "claude-x",
            content: Some("hi"),
            reasoning: None,
            thinking_blocks: None,
            stop_sequence: None,
            tool_calls: vec![ToolCallOut {
                id: "t1",
                name: "f",
                arguments: r#"{"a":1}"#,
            }],
            finish_reason: "tool_calls",
            usage: TokenUsage {
                prompt_tokens: 5,
                cached_tokens: 1,
                cache_write_tokens: 0,
                completion_tokens: 3,
                reasoning_tokens: 0,
            },
        });
        let body = with_cost(read.body, read.usage_end, "0.01");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            r#"{"a":1}"#
        );
        assert_eq!(v["usage"]["total_tokens"], 8);
        assert_eq!(v["usage"]["cost"], 0.01);
        assert_eq!(v["object"], "chat.completion");
    }

    #[test]
    fn writes_chunks() {
        let head = ChunkHead {
            id: "x".into(),
            created: 1,
            model: "m".into(),
        };
        let event = head.chunk(&Delta {
            tool_call: Some(ToolCallDelta {
                index: 1,
                id: Some("t"),
                name: Some("f"),
                arguments: Some(""),
            }),
            ..Delta::default()
        });
        let v: serde_json::Value = serde_json::from_slice(&event[6..event.len() - 2]).unwrap();
        assert_eq!(v["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(v["choices"][0]["delta"]["tool_calls"][0]["type"], "function");
        let held = head.usage_chunk(TokenUsage {
            prompt_tokens: 2,
            ..TokenUsage::default()
        });
        let with = with_cost(held.chunk, held.usage_end, "1");
        let v: serde_json::Value = serde_json::from_slice(&with).unwrap();
        assert_eq!(v["choices"], serde_json::json!([]));
        assert_eq!(v["usage"]["cost"], 1);
    }
}
