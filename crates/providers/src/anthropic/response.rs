//! A complete Anthropic `message`, read into an OpenAI `chat.completion`: text blocks become
//! `content`, thinking blocks `reasoning_content`, `tool_use` blocks tool calls whose
//! `arguments` are the `input` text exactly as received.

use bytes::Bytes;

use router_one_core::{ApiError, ErrorKind};

use super::wire::{Counts, MessageIn, finish_reason};
use crate::openai::wire::{CompletionOut, ToolCallOut, completion};
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
    for block in &message.content {
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
    let mut counts = Counts::default();
    if let Some(usage) = &message.usage {
        counts.update(usage);
    }
    Ok(completion(&CompletionOut {
        id: &message.id,
        created: context.created,
        model: &message.model,
        content: content.as_deref(),
        reasoning: reasoning.as_deref(),
        tool_calls,
        finish_reason: finish_reason(message.stop_reason.as_deref()),
        usage: counts.tokens(),
    }))
}
