//! A complete Anthropic `message`, read into an OpenAI `chat.completion`: text blocks become
//! `content`, thinking blocks `reasoning_content`, `tool_use` blocks tool calls whose
//! `arguments` are the `input` text exactly as received. The thinking blocks themselves, with
//! their signatures, and `redacted_thinking` blocks also go into the message's
//! `thinking_blocks` extension, so that a Messages client gets them back whole.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use router_one_core::{ApiError, ErrorKind};

use super::wire::{BlockIn, Counts, MessageIn, finish_reason};
use crate::openai::wire::{CompletionOut, RawJson, ToolCallOut, completion};
use crate::provider::{ReadContext, ReadResponse};

fn garbage() -> ApiError {
    ApiError::new(
        ErrorKind::UpstreamError,
        "The upstream provider returned a response that is not an Anthropic message.",
    )
}

/// Reads a complete answer.
pub(super) fn read(body: &Bytes, context: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
    let message: MessageIn<'_> = serde_json::from_slice(body).map_err(|_| garbage())?;
    let mut content: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut tool_calls = Vec::new();
    let mut thinking_blocks = Vec::new();
    for block in &message.content {
        if let Some(kept) = ThinkingBlock::of(block) {
            thinking_blocks.push(kept);
        }
        match (&*block.kind, &block.text, &block.thinking) {
            ("text", Some(text), _) => content.get_or_insert_with(String::new).push_str(text),
            ("thinking", _, Some(thinking)) => reasoning.get_or_insert_with(String::new).push_str(thinking),
            ("tool_use", _, _) => {
                let (Some(id), Some(name), Some(input)) = (&block.id, &block.name, block.input) else {
                    return Err(garbage());
                };
                tool_calls.push(ToolCallOut {
                    id,
                    name,
                    arguments: input.get(),
                });
            }
            // redacted_thinking is encrypted; server tool blocks are not the client's.
            _ => {}
        }
    }
    let thinking_blocks = raw_array(&thinking_blocks)?;
    let mut counts = Counts::default();
    if let Some(usage) = &message.usage {
        counts.update(usage);
    }
    let mut read = completion(&CompletionOut {
        id: &message.id,
        created: context.created,
        model: &message.model,
        content: content.as_deref(),
        reasoning: reasoning.as_deref(),
        thinking_blocks: thinking_blocks.as_deref().map(RawJson),
        tool_calls,
        finish_reason: finish_reason(message.stop_reason.as_deref()),
        stop_sequence: message.stop_sequence.as_deref(),
        usage: counts.tokens(),
    });
    // The client's `id` is Anthropic's own message id, so the receipt can name it too.
    read.upstream_response_id = (!message.id.is_empty()).then(|| message.id.to_string());
    Ok(read)
}

/// A thinking block as Anthropic sent it (the fields that matter to send it back).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ThinkingBlock<'a> {
    Thinking { thinking: &'a str, signature: &'a str },
    RedactedThinking { data: &'a str },
}

impl<'a> ThinkingBlock<'a> {
    fn of(block: &'a BlockIn<'_>) -> Option<ThinkingBlock<'a>> {
        match (&*block.kind, &block.thinking, &block.data) {
            ("thinking", Some(thinking), _) => Some(ThinkingBlock::Thinking {
                thinking,
                signature: block.signature.as_deref().unwrap_or_default(),
            }),
            ("redacted_thinking", _, Some(data)) => Some(ThinkingBlock::RedactedThinking { data }),
            _ => None,
        }
    }
}

/// The blocks as one raw JSON array, or `None` if there are none.
fn raw_array(blocks: &[ThinkingBlock<'_>]) -> Result<Option<Box<RawValue>>, ApiError> {
    if blocks.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(blocks)
        .and_then(RawValue::from_string)
        .map(Some)
        .map_err(|_| garbage())
}
