//! A complete chat completion, rewritten into a Messages `message`: thinking blocks first (a
//! Claude answer's, raw with their signatures; else the reasoning text as one unsigned
//! `thinking` block), then the text, then one `tool_use` block per tool call whose `input` is
//! the call's arguments text. `usage` is Anthropic's split (`input_tokens` excludes cache reads
//! and writes) plus `cost`, the exact decimal text the pipeline wrote.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use router_one_core::{ApiError, ErrorKind};

/// The chat answer, as far as it is read.
#[derive(Debug, Deserialize)]
struct Completion<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default, borrow)]
    usage: Option<ChatUsage<'a>>,
}

#[derive(Debug, Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    message: ChatMessage<'a>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    /// The Anthropic adapter's extension: the stop sequence that ended the answer.
    #[serde(default, borrow)]
    stop_sequence: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    /// The Anthropic adapter's extension: the answer's thinking blocks, raw.
    #[serde(default, borrow)]
    thinking_blocks: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Debug, Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    function: Function<'a>,
}

#[derive(Debug, Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    arguments: Cow<'a, str>,
}

/// The chat `usage` with the gateway's `cost` (raw: its text is the exact decimal) and the
/// cache writes the Anthropic adapter reports.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ChatUsage<'a> {
    #[serde(default)]
    pub(super) prompt_tokens: u64,
    #[serde(default)]
    pub(super) completion_tokens: u64,
    #[serde(default)]
    pub(super) prompt_tokens_details: Option<PromptDetails>,
    #[serde(default, borrow)]
    pub(super) cost: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PromptDetails {
    #[serde(default)]
    cached_tokens: u64,
    #[serde(default)]
    cache_write_tokens: u64,
}

/// Anthropic's `usage`, with the cost.
#[derive(Debug, Serialize)]
pub(super) struct MessagesUsage<'a> {
    pub(super) input_tokens: u64,
    pub(super) output_tokens: u64,
    pub(super) cache_creation_input_tokens: u64,
    pub(super) cache_read_input_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cost: Option<&'a RawValue>,
}

impl<'a> ChatUsage<'a> {
    /// In Anthropic's terms: `input_tokens` is the prompt without cache reads and writes.
    pub(super) fn messages(&self) -> MessagesUsage<'a> {
        let (read, write) = self
            .prompt_tokens_details
            .as_ref()
            .map_or((0, 0), |d| (d.cached_tokens, d.cache_write_tokens));
        MessagesUsage {
            input_tokens: self.prompt_tokens.saturating_sub(read).saturating_sub(write),
            output_tokens: self.completion_tokens,
            cache_creation_input_tokens: write,
            cache_read_input_tokens: read,
            cost: self.cost,
        }
    }
}

#[derive(Debug, Serialize)]
struct MessageOut<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: MessagesUsage<'a>,
}

/// A content block of the answer.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Block<'a> {
    Raw(&'a RawValue),
    Typed(TypedBlock<'a>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TypedBlock<'a> {
    Thinking {
        thinking: &'a str,
        signature: &'static str,
    },
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a RawValue,
    },
}

/// Anthropic's `stop_reason` for a chat `finish_reason` (and the stop sequence that ended the
/// answer, which Claude's answers name).
pub(super) fn stop_reason(finish_reason: Option<&str>, stop_sequence: Option<&str>) -> &'static str {
    match finish_reason {
        _ if stop_sequence.is_some() => "stop_sequence",
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A message id in Anthropic's form (`msg_…`), keeping the upstream's id.
pub(super) fn message_id(id: &str) -> Cow<'_, str> {
    if id.starts_with("msg_") {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(format!("msg_{id}"))
    }
}

fn garbage() -> ApiError {
    ApiError::new(
        ErrorKind::UpstreamError,
        "The answer could not be rewritten as a message.",
    )
}

/// A tool call's arguments as the `input` object, or an error: Anthropic's `input` is an object.
pub(super) fn tool_input(arguments: &str) -> Result<&RawValue, ApiError> {
    let arguments = if arguments.trim().is_empty() { "{}" } else { arguments };
    match serde_json::from_str::<&RawValue>(arguments) {
        Ok(raw) if raw.get().starts_with('{') => Ok(raw),
        _ => Err(ApiError::new(
            ErrorKind::UpstreamError,
            "The model's tool call arguments are not a JSON object.",
        )),
    }
}

/// Rewrites a complete chat answer.
pub(super) fn from_chat(chat: &[u8]) -> Result<Bytes, ApiError> {
    let completion: Completion<'_> = serde_json::from_slice(chat).map_err(|_| garbage())?;
    let choice = completion.choices.first().ok_or_else(garbage)?;
    let message = &choice.message;
    let mut content = Vec::new();
    match (&message.thinking_blocks, &message.reasoning_content) {
        (Some(blocks), _) if !blocks.is_empty() => content.extend(blocks.iter().map(|b| Block::Raw(b))),
        (_, Some(thinking)) if !thinking.is_empty() => content.push(Block::Typed(TypedBlock::Thinking {
            thinking,
            signature: "",
        })),
        _ => {}
    }
    if let Some(text) = message.content.as_deref().filter(|t| !t.is_empty()) {
        content.push(Block::Typed(TypedBlock::Text { text }));
    }
    for call in message.tool_calls.iter().flatten() {
        content.push(Block::Typed(TypedBlock::ToolUse {
            id: &call.id,
            name: &call.function.name,
            input: tool_input(&call.function.arguments)?,
        }));
    }
    let usage = completion.usage.unwrap_or_default();
    let out = MessageOut {
        id: message_id(&completion.id),
        kind: "message",
        role: "assistant",
        model: &completion.model,
        content,
        stop_reason: stop_reason(choice.finish_reason.as_deref(), choice.stop_sequence.as_deref()),
        stop_sequence: choice.stop_sequence.as_deref(),
        usage: usage.messages(),
    };
    serde_json::to_vec(&out).map(Bytes::from).map_err(|_| garbage())
}
