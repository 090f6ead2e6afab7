//! The Response object (`"object": "response"`) both answers are made of: its output items, its
//! usage (with the exact `cost` of the chat usage, as raw text), and the request parameters it
//! repeats, as OpenAI's does. `store` is always `false`: Router One stores no bodies.

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The request parameters a Response object repeats, read from the client's body (which
/// `to_chat` already checked; a body that cannot be read here echoes the defaults).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Echo {
    #[serde(default)]
    instructions: Option<Box<RawValue>>,
    #[serde(default)]
    max_output_tokens: Option<Box<RawValue>>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
    #[serde(default)]
    parallel_tool_calls: Option<Box<RawValue>>,
    #[serde(default)]
    prompt_cache_key: Option<Box<RawValue>>,
    #[serde(default)]
    reasoning: Option<Box<RawValue>>,
    #[serde(default)]
    safety_identifier: Option<Box<RawValue>>,
    #[serde(default)]
    service_tier: Option<Box<RawValue>>,
    #[serde(default)]
    temperature: Option<Box<RawValue>>,
    #[serde(default)]
    text: Option<Box<RawValue>>,
    #[serde(default)]
    tool_choice: Option<Box<RawValue>>,
    #[serde(default)]
    tools: Option<Box<RawValue>>,
    #[serde(default)]
    top_p: Option<Box<RawValue>>,
    #[serde(default)]
    user: Option<Box<RawValue>>,
}

impl Echo {
    /// The parameters of `request`.
    pub(super) fn read(request: &[u8]) -> Echo {
        serde_json::from_slice(request).unwrap_or_default()
    }
}

/// `"completed"`, `"incomplete"` (with its reason), `"in_progress"` or `"failed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    InProgress,
    Completed,
    /// Stopped early: `max_output_tokens` or `content_filter`.
    Incomplete(&'static str),
    Failed,
}

impl Status {
    /// The status for a chat `finish_reason`.
    pub(super) fn of_finish(finish_reason: Option<&str>) -> Status {
        match finish_reason {
            Some("length") => Status::Incomplete("max_output_tokens"),
            Some("content_filter") => Status::Incomplete("content_filter"),
            _ => Status::Completed,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete(_) => "incomplete",
            Status::Failed => "failed",
        }
    }

    /// An output item's status once the response has this one.
    pub(super) fn item_status(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::InProgress => "in_progress",
            Status::Incomplete(_) | Status::Failed => "incomplete",
        }
    }
}

/// One output item.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum OutputItem {
    /// The model's reasoning, when the upstream shows it.
    Reasoning {
        id: String,
        summary: [u8; 0],
        content: Vec<ReasoningText>,
        status: &'static str,
    },
    /// What the model said.
    Message {
        id: String,
        status: &'static str,
        role: &'static str,
        content: Vec<ContentPart>,
    },
    /// A call of one of the client's functions.
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: &'static str,
    },
}

impl OutputItem {
    /// The item's id.
    pub(super) fn id(&self) -> &str {
        match self {
            OutputItem::Reasoning { id, .. } | OutputItem::Message { id, .. } | OutputItem::FunctionCall { id, .. } => {
                id
            }
        }
    }

    /// Sets the item's status.
    pub(super) fn set_status(&mut self, to: &'static str) {
        match self {
            OutputItem::Reasoning { status, .. }
            | OutputItem::Message { status, .. }
            | OutputItem::FunctionCall { status, .. } => *status = to,
        }
    }
}

/// `{"type":"reasoning_text","text":…}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(super) struct ReasoningText {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) text: String,
}

/// A message's content part.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ContentPart {
    /// Text, without annotations (a chat answer has none) or log probabilities.
    OutputText {
        text: String,
        annotations: [u8; 0],
        logprobs: [u8; 0],
    },
    /// The model declined.
    Refusal { refusal: String },
}

impl ContentPart {
    /// A text part.
    pub(super) fn text(text: String) -> ContentPart {
        ContentPart::OutputText {
            text,
            annotations: [],
            logprobs: [],
        }
    }
}

/// The usage of a chat answer, read (the `cost` kept as its exact text).
#[derive(Debug, Default, Deserialize)]
pub(super) struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    #[serde(default)]
    cost: Option<Box<RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// Responses usage: the chat usage's counts under their Responses names, and its cost.
#[derive(Debug, Serialize)]
pub(super) struct Usage {
    input_tokens: u64,
    input_tokens_details: InputDetails,
    output_tokens: u64,
    output_tokens_details: OutputDetails,
    total_tokens: u64,
    /// The exact decimal the usage record holds, as the chat answer wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<Box<RawValue>>,
}

#[derive(Debug, Serialize)]
struct InputDetails {
    cached_tokens: u64,
    /// Only when the chat usage says; Router One bills cache writes as input tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_write_tokens: Option<u64>,
}

#[derive(Debug, Serialize)]
struct OutputDetails {
    reasoning_tokens: u64,
}

impl From<ChatUsage> for Usage {
    fn from(chat: ChatUsage) -> Usage {
        let input = chat.prompt_tokens.unwrap_or(0);
        let output = chat.completion_tokens.unwrap_or(0);
        let prompt = chat.prompt_tokens_details.unwrap_or_default();
        Usage {
            input_tokens: input,
            input_tokens_details: InputDetails {
                cached_tokens: prompt.cached_tokens.unwrap_or(0),
                cache_write_tokens: prompt.cache_write_tokens,
            },
            output_tokens: output,
            output_tokens_details: OutputDetails {
                reasoning_tokens: chat
                    .completion_tokens_details
                    .and_then(|d| d.reasoning_tokens)
                    .unwrap_or(0),
            },
            total_tokens: chat.total_tokens.unwrap_or(input.saturating_add(output)),
            cost: chat.cost,
        }
    }
}

/// Why a response failed: `{"code","message","type"}`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Failure {
    pub(super) code: &'static str,
    pub(super) message: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub(super) kind: Option<String>,
}

/// The ids of one answer, all made from the chat completion's id.
#[derive(Debug, Clone)]
pub(super) struct Ids {
    base: String,
}

impl Ids {
    /// Ids from the chat id (its `chatcmpl-` or Anthropic's `msg_` prefix dropped); a fresh one
    /// when it is empty.
    pub(super) fn new(chat_id: &str) -> Ids {
        let base = ["chatcmpl-", "msg_"]
            .iter()
            .find_map(|prefix| chat_id.strip_prefix(prefix))
            .unwrap_or(chat_id);
        let base = if base.is_empty() {
            router_one_core::ids::new_id("gen")
        } else {
            base.to_owned()
        };
        Ids { base }
    }

    /// `resp_…`.
    pub(super) fn response(&self) -> String {
        format!("resp_{}", self.base)
    }

    /// The id of output item `index`: `msg_…`, `fc_…` or `rs_…`.
    pub(super) fn item(&self, prefix: &str, index: usize) -> String {
        format!("{prefix}_{}_{index}", self.base)
    }
}

/// One Response object, borrowing its parts.
pub(super) struct ResponseObject<'a> {
    pub(super) id: &'a str,
    pub(super) created_at: u64,
    pub(super) model: &'a str,
    pub(super) status: Status,
    pub(super) output: &'a [OutputItem],
    pub(super) usage: Option<&'a Usage>,
    pub(super) error: Option<&'a Failure>,
    pub(super) echo: &'a Echo,
}

impl Serialize for ResponseObject<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let echo = self.echo;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", self.id)?;
        map.serialize_entry("object", "response")?;
        map.serialize_entry("created_at", &self.created_at)?;
        map.serialize_entry("status", self.status.as_str())?;
        map.serialize_entry("background", &false)?;
        map.serialize_entry("error", &self.error)?;
        let incomplete = match self.status {
            Status::Incomplete(reason) => Some(Reason { reason }),
            _ => None,
        };
        map.serialize_entry("incomplete_details", &incomplete)?;
        map.serialize_entry("instructions", &echo.instructions)?;
        map.serialize_entry("max_output_tokens", &echo.max_output_tokens)?;
        map.serialize_entry("max_tool_calls", &None::<u64>)?;
        map.serialize_entry("metadata", &Or(&echo.metadata, "{}"))?;
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("output", self.output)?;
        map.serialize_entry("parallel_tool_calls", &Or(&echo.parallel_tool_calls, "true"))?;
        map.serialize_entry("previous_response_id", &None::<&str>)?;
        map.serialize_entry("prompt_cache_key", &echo.prompt_cache_key)?;
        map.serialize_entry("reasoning", &Or(&echo.reasoning, r#"{"effort":null,"summary":null}"#))?;
        map.serialize_entry("safety_identifier", &echo.safety_identifier)?;
        map.serialize_entry("service_tier", &echo.service_tier)?;
        map.serialize_entry("store", &false)?;
        map.serialize_entry("temperature", &echo.temperature)?;
        map.serialize_entry("text", &Or(&echo.text, r#"{"format":{"type":"text"}}"#))?;
        map.serialize_entry("tool_choice", &Or(&echo.tool_choice, r#""auto""#))?;
        map.serialize_entry("tools", &Or(&echo.tools, "[]"))?;
        map.serialize_entry("top_p", &echo.top_p)?;
        map.serialize_entry("truncation", "disabled")?;
        map.serialize_entry("usage", &self.usage)?;
        map.serialize_entry("user", &echo.user)?;
        map.end()
    }
}

#[derive(Serialize)]
struct Reason {
    reason: &'static str,
}

/// An echoed value, or a default (JSON text) when the request had none.
struct Or<'a>(&'a Option<Box<RawValue>>, &'static str);

impl Serialize for Or<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(value) => value.serialize(s),
            None => match serde_json::from_str::<&RawValue>(self.1) {
                Ok(default) => default.serialize(s),
                Err(_) => s.serialize_none(),
            },
        }
    }
}
