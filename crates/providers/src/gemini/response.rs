//! A complete Gemini answer → an OpenAI `chat.completion`, and what streams share with it:
//! finish reasons, usage and ids.

use router_one_core::{ApiError, ErrorKind, TokenUsage};

use super::wire::{GenerateResponse, UsageMetadata};
use crate::openai::wire::{CompletionOut, ToolCallOut, completion};
use crate::provider::{ReadContext, ReadResponse};

/// OpenAI's `finish_reason` for Gemini's `finishReason`; `calls` when the answer made function
/// calls (Gemini says `STOP` for those too).
pub(crate) fn finish_reason(reason: &str, calls: bool) -> &'static str {
    match reason {
        "STOP" if calls => "tool_calls",
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" | "LANGUAGE" => {
            "content_filter"
        }
        _ => "stop",
    }
}

/// OpenAI token counts from `usageMetadata`: tool-use prompt tokens are prompt tokens, and
/// thoughts are billed as output, so they are part of `completion_tokens`.
pub(crate) fn usage(meta: &UsageMetadata) -> TokenUsage {
    let prompt = meta.prompt_token_count.saturating_add(meta.tool_use_prompt_token_count);
    TokenUsage {
        prompt_tokens: prompt,
        // As reported: settlement bounds it (cached above prompt is an implausible report).
        cached_tokens: meta.cached_content_token_count,
        cache_write_tokens: 0,
        completion_tokens: meta.candidates_token_count.saturating_add(meta.thoughts_token_count),
        reasoning_tokens: meta.thoughts_token_count,
    }
}

/// The response id: Gemini's `responseId`, else one made from the request time.
pub(crate) fn response_id(answer: &GenerateResponse<'_>, created: u64) -> String {
    match answer.response_id.as_deref() {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!("gen-{created}"),
    }
}

/// A tool call's id: Gemini's `functionCall.id` when it sends one, else `call_<n>`.
pub(crate) fn call_id(id: Option<&str>, index: usize) -> String {
    match id {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!("call_{index}"),
    }
}

/// The error for an upstream body that is not a Gemini answer.
pub(crate) fn garbage() -> ApiError {
    ApiError::new(
        ErrorKind::UpstreamError,
        "The upstream provider returned a response that is not a valid Gemini answer.",
    )
}

/// Parses one `GenerateContentResponse`. Only an object is one: serde would also read the struct
/// from a JSON array, by position.
pub(crate) fn parse(body: &[u8]) -> Option<GenerateResponse<'_>> {
    if !body.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// Reads a complete `generateContent` answer.
pub(crate) fn read_chat(body: &[u8], context: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
    let answer = parse(body).ok_or_else(garbage)?;
    if answer.error.is_some() {
        return Err(garbage());
    }
    let candidate = answer.candidates.as_deref().and_then(<[_]>::first);
    let mut text = String::new();
    let mut reasoning = String::new();
    let (mut saw_text, mut saw_reasoning) = (false, false);
    let mut calls: Vec<(String, &str, &str)> = Vec::new();
    for part in candidate
        .and_then(|c| c.content.as_ref())
        .map_or(&[][..], |c| &c.parts[..])
    {
        if let Some(call) = &part.function_call {
            let id = call_id(call.id.as_deref(), calls.len());
            calls.push((id, &call.name, call.args.map_or("{}", |a| a.get())));
        } else if let Some(t) = &part.text {
            if part.thought == Some(true) {
                reasoning.push_str(t);
                saw_reasoning = true;
            } else {
                text.push_str(t);
                saw_text = true;
            }
        }
    }
    let blocked = candidate.is_none()
        && answer
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some());
    let finish = if blocked {
        "content_filter"
    } else {
        let reason = candidate.and_then(|c| c.finish_reason.as_deref()).unwrap_or("STOP");
        finish_reason(reason, !calls.is_empty())
    };
    // Text, or `null` when the answer is only calls or was filtered away.
    let content = if saw_text {
        Some(text.as_str())
    } else if calls.is_empty() && finish != "content_filter" {
        Some("")
    } else {
        None
    };
    let id = response_id(&answer, context.created);
    let model = answer.model_version.as_deref().unwrap_or(context.upstream_id);
    let mut read = completion(&CompletionOut {
        id: &id,
        created: context.created,
        model,
        content,
        reasoning: saw_reasoning.then_some(reasoning.as_str()),
        thinking_blocks: None,
        stop_sequence: None,
        tool_calls: calls
            .iter()
            .map(|(id, name, arguments)| ToolCallOut { id, name, arguments })
            .collect(),
        finish_reason: finish,
        usage: answer.usage_metadata.as_ref().map(usage).unwrap_or_default(),
    });
    // Gemini's own `responseId`, not the id made up when it sent none.
    read.upstream_response_id = answer
        .response_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    Ok(read)
}
