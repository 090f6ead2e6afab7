//! The non-streamed `chat.completion` object and the `usage` object both shapes share.

use http::{Response, StatusCode};
use serde::{Serialize, Serializer};

use super::chat::{CALL_PREFIX, Choices, FINGERPRINT, ID_PREFIX, Meta};
use crate::body::SimBody;
use crate::exchange;
use crate::reply::{Answer, Finish, Reply, ToolCall};
use crate::tokens::Usage;

/// A `chat.completion` response with one choice per reply of `choices`.
pub(super) fn response(meta: &Meta<'_>, choices: &Choices<'_>) -> Response<SimBody> {
    let completion = Completion {
        id: Id(ID_PREFIX, meta.id),
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices: WireChoices(&choices.replies),
        usage: WireUsage::from(choices.usage),
        service_tier: "default",
        system_fingerprint: FINGERPRINT,
    };
    match serde_json::to_vec(&completion) {
        Ok(body) => exchange::json(StatusCode::OK, body),
        Err(_) => super::error::for_status(StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed"),
    }
}

/// OpenAI's name for a finish reason.
pub(super) fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: Id,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: WireChoices<'a>,
    usage: WireUsage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

/// The `choices` array, indexed in order, written without an intermediate `Vec`.
struct WireChoices<'a>(&'a [Reply<'a>]);

impl Serialize for WireChoices<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().zip(0u32..).map(|(reply, index)| {
            let (content, tool_calls) = match &reply.answer {
                Answer::Text(text) => (Some(text.as_str()), None),
                Answer::ToolCalls(calls) => (None, Some(ToolCalls(calls))),
            };
            Choice {
                index,
                message: Message {
                    role: "assistant",
                    content,
                    refusal: None,
                    tool_calls,
                    annotations: [],
                },
                logprobs: None,
                finish_reason: finish_reason(reply.finish),
            }
        }))
    }
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<ToolCalls<'a>>,
    annotations: [(); 0],
}

/// A prefixed numeric id, written without an intermediate `String`.
#[derive(Clone, Copy)]
pub(super) struct Id(pub(super) &'static str, pub(super) u64);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}{}", self.0, self.1))
    }
}

struct ToolCalls<'a>(&'a [ToolCall<'a>]);

impl Serialize for ToolCalls<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|call| WireToolCall {
            id: Id(CALL_PREFIX, call.id),
            kind: "function",
            function: Function {
                name: call.name,
                arguments: &call.arguments,
            },
        }))
    }
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: Id,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// OpenAI's `usage` object (`CompletionUsage`).
#[derive(Serialize)]
pub(super) struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl From<Usage> for WireUsage {
    fn from(usage: Usage) -> Self {
        WireUsage {
            prompt_tokens: usage.prompt,
            completion_tokens: usage.completion,
            total_tokens: usage.total(),
            prompt_tokens_details: PromptDetails {
                cached_tokens: usage.cached,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: usage.reasoning,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}
