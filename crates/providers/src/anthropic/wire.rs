//! Anthropic Messages serde types: the request we write and the answers, stream events and
//! errors we read. Values passed on untouched (tool inputs, schemas, sampling numbers) are
//! `RawValue`s, so they cross formats byte for byte; read types borrow from the body.

use std::borrow::Cow;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use router_one_core::TokenUsage;

// ------------------------------------------------------------------------------------ request

/// `POST /v1/messages` body (on Vertex AI: without `model`, which is in the URL, and with
/// `anthropic_version` in the body instead of a header).
#[derive(Debug, Serialize)]
pub(super) struct MessagesRequest<'b> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) anthropic_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) model: Option<&'b str>,
    pub(super) max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) system: Vec<Block<'b>>,
    pub(super) messages: Vec<Turn<'b>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tools: Vec<ToolDef<'b>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_choice: Option<ToolChoiceOut<'b>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) stop_sequences: Vec<Cow<'b, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<&'b RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_p: Option<&'b RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_k: Option<&'b RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) metadata: Option<Metadata<'b>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) thinking: Option<ThinkingOut<'b>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) output_config: Option<OutputConfig<'b>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) stream: bool,
}

/// One turn of `messages`: an assistant's earlier thinking blocks (raw, signed) come first.
#[derive(Debug)]
pub(super) struct Turn<'b> {
    pub(super) role: &'static str,
    pub(super) thinking: Vec<&'b RawValue>,
    pub(super) content: Vec<Block<'b>>,
}

impl Serialize for Turn<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Item<'a, 'b> {
            Raw(&'b RawValue),
            Block(&'a Block<'b>),
        }
        let items: Vec<Item<'_, '_>> = (self.thinking.iter().map(|raw| Item::Raw(raw)))
            .chain(self.content.iter().map(Item::Block))
            .collect();
        let mut turn = s.serialize_struct("Turn", 2)?;
        turn.serialize_field("role", self.role)?;
        turn.serialize_field("content", &items)?;
        turn.end()
    }
}

/// A prompt-cache breakpoint (`{"type":"ephemeral", "ttl"?}`), raw as the client sent it.
pub(super) type CacheControl<'b> = Option<&'b RawValue>;

/// A content block we send.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Block<'b> {
    /// Text.
    Text {
        text: &'b str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: CacheControl<'b>,
    },
    /// An image, inline or by URL.
    Image {
        source: ImageSource<'b>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: CacheControl<'b>,
    },
    /// An earlier tool call of the assistant; `input` is the client's arguments text, raw.
    ToolUse {
        id: &'b str,
        name: &'b str,
        input: &'b RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: CacheControl<'b>,
    },
    /// A tool's answer.
    ToolResult {
        tool_use_id: &'b str,
        content: Cow<'b, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: CacheControl<'b>,
    },
}

impl<'b> Block<'b> {
    /// A text block without a breakpoint.
    pub(super) fn text(text: &'b str) -> Block<'b> {
        Block::Text {
            text,
            cache_control: None,
        }
    }

    /// Puts a breakpoint on this block.
    pub(super) fn set_cache_control(&mut self, control: &'b RawValue) {
        let (Block::Text { cache_control, .. }
        | Block::Image { cache_control, .. }
        | Block::ToolUse { cache_control, .. }
        | Block::ToolResult { cache_control, .. }) = self;
        *cache_control = Some(control);
    }
}

/// Where an image comes from.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ImageSource<'b> {
    /// Inline base64 data.
    Base64 { media_type: &'b str, data: &'b str },
    /// A URL Anthropic fetches.
    Url { url: &'b str },
}

/// A client tool.
#[derive(Debug, Serialize)]
pub(super) struct ToolDef<'b> {
    pub(super) name: &'b str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<&'b str>,
    /// The function's `parameters`, raw; an empty object schema when absent (Anthropic
    /// requires one).
    #[serde(serialize_with = "schema_or_empty")]
    pub(super) input_schema: Option<&'b RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cache_control: CacheControl<'b>,
}

#[derive(Serialize)]
struct EmptySchema {
    #[serde(rename = "type")]
    kind: &'static str,
    properties: serde_json::Map<String, serde_json::Value>,
}

fn schema_or_empty<S: Serializer>(schema: &Option<&RawValue>, s: S) -> Result<S::Ok, S::Error> {
    match schema {
        Some(raw) => raw.serialize(s),
        None => EmptySchema {
            kind: "object",
            properties: serde_json::Map::new(),
        }
        .serialize(s),
    }
}

/// `tool_choice`: `{type: none|auto|any|tool, name?, disable_parallel_tool_use?}`.
#[derive(Debug, Serialize)]
pub(super) struct ToolChoiceOut<'b> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<&'b str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) disable_parallel_tool_use: Option<bool>,
}

/// `metadata`.
#[derive(Debug, Serialize)]
pub(super) struct Metadata<'b> {
    pub(super) user_id: &'b str,
}

/// `thinking`: ours (from `reasoning_effort`) or the client's own config, raw.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum ThinkingOut<'b> {
    /// From `reasoning_effort`.
    Budget(Thinking),
    /// A Messages client's `thinking`, as sent.
    Raw(&'b RawValue),
}

/// `thinking: {type: "enabled", budget_tokens}`.
#[derive(Debug, Serialize)]
pub(super) struct Thinking {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) budget_tokens: u64,
}

/// `output_config: {format: {type: "json_schema", schema}}` (structured outputs).
#[derive(Debug, Serialize)]
pub(super) struct OutputConfig<'b> {
    pub(super) format: OutputFormat<'b>,
}

/// `output_config.format`.
#[derive(Debug, Serialize)]
pub(super) struct OutputFormat<'b> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) schema: &'b RawValue,
}

// ------------------------------------------------------------------------------------ answers

/// A `message` object: the complete answer, and the message of `message_start`.
#[derive(Debug, Deserialize)]
pub(super) struct MessageIn<'a> {
    #[serde(borrow)]
    pub(super) id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) model: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(super) content: Vec<BlockIn<'a>>,
    #[serde(default, borrow)]
    pub(super) stop_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) stop_sequence: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) usage: Option<UsageIn>,
}

/// A content block of an answer (`text`, `thinking`, `redacted_thinking`, `tool_use`, and
/// whatever Anthropic adds; unread fields are skipped).
#[derive(Debug, Deserialize)]
pub(super) struct BlockIn<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) thinking: Option<Cow<'a, str>>,
    /// A `thinking` block's signature.
    #[serde(default, borrow)]
    pub(super) signature: Option<Cow<'a, str>>,
    /// A `redacted_thinking` block's data.
    #[serde(default, borrow)]
    pub(super) data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) name: Option<Cow<'a, str>>,
    /// A `tool_use` input, raw: it becomes the OpenAI `arguments` text unchanged.
    #[serde(default, borrow)]
    pub(super) input: Option<&'a RawValue>,
}

/// Anthropic's `usage`: `input_tokens` excludes the cache reads and writes, reported apart.
/// Fields are optional because `message_delta` may carry only `output_tokens`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(super) struct UsageIn {
    #[serde(default)]
    pub(super) input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) output_tokens: Option<u64>,
    #[serde(default)]
    pub(super) cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) cache_read_input_tokens: Option<u64>,
}

/// Running token counts of one answer, as Anthropic reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    input: u64,
    output: u64,
    cache_creation: u64,
    cache_read: u64,
}

impl Counts {
    /// Takes the fields `usage` reports (counts are cumulative: a later report replaces).
    pub(super) fn update(&mut self, usage: &UsageIn) {
        let take = |field: &mut u64, value: Option<u64>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        take(&mut self.input, usage.input_tokens);
        take(&mut self.output, usage.output_tokens);
        take(&mut self.cache_creation, usage.cache_creation_input_tokens);
        take(&mut self.cache_read, usage.cache_read_input_tokens);
    }

    /// In OpenAI terms: every prompt token (plain, cache write, cache read) is a prompt token;
    /// the cache reads are the cached part. Anthropic does not count thinking tokens apart.
    pub(super) fn tokens(&self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_creation),
            cached_tokens: self.cache_read,
            cache_write_tokens: self.cache_creation,
            completion_tokens: self.output,
            reasoning_tokens: 0,
        }
    }
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
pub(super) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and reasons Anthropic may add.
        _ => "stop",
    }
}

// ------------------------------------------------------------------------------------ stream

/// One stream event's data. One struct for every event type, so each event is parsed once;
/// `type` says which fields are set.
#[derive(Debug, Deserialize)]
pub(super) struct EventIn<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    /// `message_start`.
    #[serde(default, borrow)]
    pub(super) message: Option<MessageIn<'a>>,
    /// `content_block_*`: the block's position in the answer.
    #[serde(default)]
    pub(super) index: Option<u64>,
    /// `content_block_start`.
    #[serde(default, borrow)]
    pub(super) content_block: Option<BlockIn<'a>>,
    /// `content_block_delta` and `message_delta`.
    #[serde(default, borrow)]
    pub(super) delta: Option<DeltaIn<'a>>,
    /// `message_delta`.
    #[serde(default)]
    pub(super) usage: Option<UsageIn>,
    /// `error`.
    #[serde(default, borrow)]
    pub(super) error: Option<ErrorIn<'a>>,
}

/// A `content_block_delta`'s or `message_delta`'s `delta`.
#[derive(Debug, Deserialize)]
pub(super) struct DeltaIn<'a> {
    #[serde(rename = "type", default, borrow)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) stop_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) stop_sequence: Option<Cow<'a, str>>,
}

// ------------------------------------------------------------------------------------ errors

/// `{"type":"error","error":{"type","message"}}`.
#[derive(Debug, Deserialize)]
pub(super) struct ErrorEnvelope<'a> {
    #[serde(borrow)]
    pub(super) error: ErrorIn<'a>,
}

/// The error object.
#[derive(Debug, Deserialize)]
pub(super) struct ErrorIn<'a> {
    #[serde(rename = "type", default, borrow)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) message: Option<Cow<'a, str>>,
}

/// The HTTP status Anthropic gives an error `type` (documented in its errors page); `fallback`
/// for types it may add.
pub(super) fn error_status(kind: Option<&str>, fallback: u16) -> u16 {
    match kind {
        Some("invalid_request_error") => 400,
        Some("authentication_error") => 401,
        Some("billing_error") => 402,
        Some("permission_error") => 403,
        Some("not_found_error") => 404,
        Some("request_too_large") => 413,
        Some("rate_limit_error") => 429,
        Some("api_error") => 500,
        Some("timeout_error") => 504,
        Some("overloaded_error") => 529,
        _ => fallback,
    }
}
