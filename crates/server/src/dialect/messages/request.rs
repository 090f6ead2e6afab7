//! A Messages request body, rewritten into an OpenAI chat completions body.
//!
//! Every field is translated, refused with a 400 naming it, or (`service_tier`, and the
//! `anthropic-version` the SDK sends as a header) ignored because it never changes the answer.
//! Values passed on (tool inputs, schemas, sampling numbers) stay raw JSON text.
//!
//! For a Claude model (`native`), what only Messages carries goes along as extensions of the
//! chat format that the Anthropic adapter reads (`providers/src/anthropic`): `cache_control` on
//! text and image parts, tools and (for `tool_use`/`tool_result` blocks) on the message; the
//! `thinking` config at the top level; an assistant's `thinking` and `redacted_thinking`
//! blocks, raw with their signatures, as `thinking_blocks`; a tool result's `is_error`. For any
//! other model `cache_control` is dropped (a hint no other vendor reads), earlier thinking blocks
//! are dropped (their signatures mean nothing elsewhere), and `thinking` becomes a
//! `reasoning_effort` by its budget.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use router_one_core::{ApiError, ErrorKind};

/// A 400 naming `param`.
pub(super) fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    let param = param.into();
    ApiError::new(ErrorKind::InvalidRequest, message.into()).with_param(param)
}

// ------------------------------------------------------------------------------------ input

/// The Messages body. Unknown top-level fields are refused (serde names them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesBody<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default, borrow)]
    system: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Vec<InMessage<'a>>,
    #[serde(default, borrow)]
    tools: Option<Vec<InTool<'a>>>,
    #[serde(default, borrow)]
    tool_choice: Option<InToolChoice<'a>>,
    #[serde(default, borrow)]
    stop_sequences: Option<Vec<Cow<'a, str>>>,
    #[serde(default, borrow)]
    temperature: Option<&'a RawValue>,
    #[serde(default, borrow)]
    top_p: Option<&'a RawValue>,
    #[serde(default, borrow)]
    top_k: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    metadata: Option<InMetadata<'a>>,
    #[serde(default, borrow)]
    thinking: Option<&'a RawValue>,
    /// Priority capacity is not offered; `auto` and `standard_only` both mean standard here.
    #[serde(default, borrow)]
    #[allow(dead_code, reason = "read only so that it is not refused as an unknown field")]
    service_tier: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct InMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: &'a RawValue,
}

/// A content block, flat: `type` says which fields are set. Read from its raw text, which
/// thinking blocks keep.
#[derive(Debug, Deserialize)]
struct InBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    source: Option<InSource<'a>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_use_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(default, borrow)]
    cache_control: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct InSource<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    media_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    url: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct InTool<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input_schema: Option<&'a RawValue>,
    #[serde(default, borrow)]
    cache_control: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct InToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct InMetadata<'a> {
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
}

/// `thinking`: `{type: enabled, budget_tokens}`, `{type: disabled}` or `{type: adaptive}`.
#[derive(Debug, Deserialize)]
struct InThinking<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    budget_tokens: Option<u64>,
}

// ------------------------------------------------------------------------------------ output

#[derive(Debug, Serialize)]
struct ChatOut<'a> {
    model: Cow<'a, str>,
    messages: Vec<ChatMessage<'a>>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ChatTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<Vec<Cow<'a, str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
    /// Claude only: the Messages `thinking` config, raw.
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a RawValue>,
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Debug, Default, Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Vec<ChatPart<'a>>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ChatToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<Cow<'a, str>>,
    /// Claude only: earlier `thinking` / `redacted_thinking` blocks, raw.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    thinking_blocks: Vec<&'a RawValue>,
    /// Claude only: the breakpoint of the message's last block (a `tool_use` or `tool_result`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a RawValue>,
    /// Claude only: a tool result that reports an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    is_error: Option<bool>,
}

#[derive(Debug, Serialize)]
struct ChatPart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_url: Option<ImageUrl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a RawValue>,
}

#[derive(Debug, Serialize)]
struct ImageUrl {
    url: String,
}

#[derive(Debug, Serialize)]
struct ChatToolCall<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: ChatFunctionCall<'a>,
}

#[derive(Debug, Serialize)]
struct ChatFunctionCall<'a> {
    name: Cow<'a, str>,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct ChatTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: ChatFunction<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a RawValue>,
}

#[derive(Debug, Serialize)]
struct ChatFunction<'a> {
    name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a RawValue>,
}

// ------------------------------------------------------------------------------------ rewrite

/// What the rewritten body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// `/v1/messages`: `max_tokens` is required, as Anthropic requires it.
    Answer,
    /// `/v1/messages/count_tokens`: no `max_tokens` (the body only feeds the estimate).
    Count,
}

/// Rewrites a Messages body into a chat body; `native` says whether the model named is a Claude
/// model, served by the Anthropic adapter, which reads the extensions (module doc).
pub(super) fn to_chat(body: &[u8], native: impl FnOnce(&str) -> bool, purpose: Purpose) -> Result<Bytes, ApiError> {
    let request: MessagesBody<'_> = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("The request is not a valid Messages body: {e}"),
        )
    })?;
    let native = native(&request.model);
    let max_tokens = match (request.max_tokens, purpose) {
        (Some(max_tokens), _) => max_tokens,
        (None, Purpose::Count) => 1,
        (None, Purpose::Answer) => return Err(invalid("max_tokens", "max_tokens: Field required")),
    };
    if max_tokens == 0 {
        return Err(invalid("max_tokens", "max_tokens: must be at least 1"));
    }
    let mut messages = system(request.system, native)?;
    for (i, message) in request.messages.iter().enumerate() {
        let blocks = blocks(message.content, &format!("messages[{i}].content"))?;
        match &*message.role {
            "user" => user(blocks, i, native, &mut messages)?,
            "assistant" => messages.push(assistant(blocks, i, native)?),
            other => {
                return Err(invalid(
                    format!("messages[{i}].role"),
                    format!("messages[{i}].role: must be 'user' or 'assistant', not '{other}'"),
                ));
            }
        }
    }
    let tools = tools(request.tools.unwrap_or_default(), native)?;
    let (tool_choice, parallel_tool_calls) = tool_choice(request.tool_choice.as_ref())?;
    let (thinking, reasoning_effort) = thinking(request.thinking, native)?;
    let stream = request.stream.unwrap_or(false);
    let out = ChatOut {
        model: request.model,
        messages,
        max_tokens,
        stream,
        // The usage at the stream's end carries the cost the client is shown.
        stream_options: stream.then_some(StreamOptions { include_usage: true }),
        tools,
        tool_choice,
        parallel_tool_calls,
        stop: request.stop_sequences.filter(|s| !s.is_empty()),
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        user: request.metadata.and_then(|m| m.user_id),
        reasoning_effort,
        thinking,
    };
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|_| ApiError::new(ErrorKind::Internal, "The request could not be rewritten."))
}

type Blocks<'a> = Vec<(InBlock<'a>, &'a RawValue)>;

/// Content: a string (one text block) or an array of blocks, each kept with its raw text.
fn blocks<'a>(content: &'a RawValue, param: &str) -> Result<Blocks<'a>, ApiError> {
    let text = content.get();
    if text.starts_with('"') {
        let text: Cow<'a, str> =
            serde_json::from_str(text).map_err(|_| invalid(param, format!("{param}: invalid string")))?;
        let block = InBlock {
            kind: Cow::Borrowed("text"),
            text: Some(text),
            source: None,
            id: None,
            name: None,
            input: None,
            tool_use_id: None,
            content: None,
            is_error: None,
            cache_control: None,
        };
        return Ok(vec![(block, content)]);
    }
    let raws: Vec<&'a RawValue> = serde_json::from_str(text).map_err(|_| {
        invalid(
            param,
            format!("{param}: must be a string or an array of content blocks"),
        )
    })?;
    raws.into_iter()
        .enumerate()
        .map(|(j, raw)| {
            serde_json::from_str::<InBlock<'a>>(raw.get())
                .map(|block| (block, raw))
                .map_err(|e| invalid(format!("{param}[{j}]"), format!("{param}[{j}]: {e}")))
        })
        .collect()
}

/// `system`: a string, or text blocks (with their breakpoints, for Claude).
fn system(system: Option<&RawValue>, native: bool) -> Result<Vec<ChatMessage<'_>>, ApiError> {
    let Some(raw) = system.filter(|r| r.get() != "null") else {
        return Ok(Vec::new());
    };
    let mut parts = Vec::new();
    for (j, (block, _)) in blocks(raw, "system")?.into_iter().enumerate() {
        let param = format!("system[{j}]");
        if block.kind != "text" {
            return Err(invalid(param.clone(), format!("{param}: only text blocks are allowed")));
        }
        parts.push(text_part(block, &param, native)?);
    }
    Ok(vec![ChatMessage {
        role: "system",
        content: Some(parts),
        ..ChatMessage::default()
    }])
}

fn text_part<'a>(block: InBlock<'a>, param: &str, native: bool) -> Result<ChatPart<'a>, ApiError> {
    let text = block
        .text
        .ok_or_else(|| invalid(format!("{param}.text"), format!("{param}.text: Field required")))?;
    Ok(ChatPart {
        kind: "text",
        text: Some(text),
        image_url: None,
        cache_control: block.cache_control.filter(|_| native),
    })
}

fn image_part<'a>(block: InBlock<'a>, param: &str, native: bool) -> Result<ChatPart<'a>, ApiError> {
    let source = block
        .source
        .ok_or_else(|| invalid(format!("{param}.source"), format!("{param}.source: Field required")))?;
    let url = match (&*source.kind, source.media_type, source.data, source.url) {
        ("base64", Some(media_type), Some(data), _) => format!("data:{media_type};base64,{data}"),
        ("url", _, _, Some(url)) => url.into_owned(),
        _ => {
            return Err(invalid(
                format!("{param}.source"),
                format!("{param}.source: must be a base64 source (media_type, data) or a url source"),
            ));
        }
    };
    Ok(ChatPart {
        kind: "image_url",
        text: None,
        image_url: Some(ImageUrl { url }),
        cache_control: block.cache_control.filter(|_| native),
    })
}

/// A user turn: its `tool_result` blocks become `tool` messages (first: Anthropic wants them
/// before the turn's other content), the rest one user message.
fn user<'a>(blocks: Blocks<'a>, i: usize, native: bool, out: &mut Vec<ChatMessage<'a>>) -> Result<(), ApiError> {
    let mut parts = Vec::new();
    for (j, (block, _)) in blocks.into_iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        match &*block.kind {
            "text" => parts.push(text_part(block, &param, native)?),
            "image" => parts.push(image_part(block, &param, native)?),
            "tool_result" if !parts.is_empty() => {
                return Err(invalid(
                    param.clone(),
                    format!("{param}: tool_result blocks must come before any other content of the turn"),
                ));
            }
            "tool_result" => out.push(tool_result(block, &param, native)?),
            other => return Err(refused_block(&param, other, "user")),
        }
    }
    if !parts.is_empty() {
        out.push(ChatMessage {
            role: "user",
            content: Some(parts),
            ..ChatMessage::default()
        });
    }
    Ok(())
}

fn refused_block(param: &str, kind: &str, role: &str) -> ApiError {
    invalid(
        param.to_owned(),
        format!("{param}: '{kind}' blocks are not supported in {role} messages by this gateway"),
    )
}

fn tool_result<'a>(block: InBlock<'a>, param: &str, native: bool) -> Result<ChatMessage<'a>, ApiError> {
    let id = block.tool_use_id.ok_or_else(|| {
        invalid(
            format!("{param}.tool_use_id"),
            format!("{param}.tool_use_id: Field required"),
        )
    })?;
    let mut parts = Vec::new();
    if let Some(raw) = block.content.filter(|c| c.get() != "null") {
        let inner_param = format!("{param}.content");
        for (k, (inner, _)) in blocks(raw, &inner_param)?.into_iter().enumerate() {
            let p = format!("{inner_param}[{k}]");
            if inner.kind != "text" {
                return Err(invalid(
                    p.clone(),
                    format!("{p}: only text is supported in tool results"),
                ));
            }
            // A breakpoint inside a result is the result's own.
            parts.push(text_part(inner, &p, false)?);
        }
    }
    Ok(ChatMessage {
        role: "tool",
        content: Some(parts),
        tool_call_id: Some(id),
        cache_control: block.cache_control.filter(|_| native),
        is_error: block.is_error.filter(|e| native && *e),
        ..ChatMessage::default()
    })
}

/// An assistant turn: text, `tool_use` blocks as tool calls, thinking blocks (Claude only).
fn assistant<'a>(blocks: Blocks<'a>, i: usize, native: bool) -> Result<ChatMessage<'a>, ApiError> {
    let mut message = ChatMessage {
        role: "assistant",
        ..ChatMessage::default()
    };
    let mut parts = Vec::new();
    let last = blocks.len().saturating_sub(1);
    for (j, (block, raw)) in blocks.into_iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        match &*block.kind {
            "text" => parts.push(text_part(block, &param, native)?),
            "tool_use" => {
                let (Some(id), Some(name), Some(input)) = (block.id, block.name, block.input) else {
                    return Err(invalid(
                        param.clone(),
                        format!("{param}: tool_use needs id, name and input"),
                    ));
                };
                if !input.get().starts_with('{') {
                    return Err(invalid(
                        format!("{param}.input"),
                        format!("{param}.input: must be an object"),
                    ));
                }
                if native && block.cache_control.is_some() {
                    if j != last {
                        let p = format!("{param}.cache_control");
                        return Err(invalid(
                            p.clone(),
                            format!("{p}: a tool_use block may carry a breakpoint only as the turn's last block"),
                        ));
                    }
                    message.cache_control = block.cache_control;
                }
                message.tool_calls.push(ChatToolCall {
                    id,
                    kind: "function",
                    function: ChatFunctionCall {
                        name,
                        arguments: input.get(),
                    },
                });
            }
            "thinking" | "redacted_thinking" => {
                if native {
                    message.thinking_blocks.push(raw);
                }
            }
            other => return Err(refused_block(&param, other, "assistant")),
        }
    }
    if !parts.is_empty() {
        message.content = Some(parts);
    }
    Ok(message)
}

fn tools(tools: Vec<InTool<'_>>, native: bool) -> Result<Vec<ChatTool<'_>>, ApiError> {
    tools
        .into_iter()
        .enumerate()
        .map(|(i, tool)| {
            if let Some(kind) = tool.kind.as_deref().filter(|k| *k != "custom") {
                return Err(invalid(
                    format!("tools[{i}].type"),
                    format!(
                        "tools[{i}].type: server tools ('{kind}') are not supported by this gateway; send client tools"
                    ),
                ));
            }
            Ok(ChatTool {
                kind: "function",
                function: ChatFunction {
                    name: tool.name,
                    description: tool.description,
                    parameters: tool.input_schema,
                },
                cache_control: tool.cache_control.filter(|_| native),
            })
        })
        .collect()
}

fn tool_choice(choice: Option<&InToolChoice<'_>>) -> Result<(Option<serde_json::Value>, Option<bool>), ApiError> {
    let Some(choice) = choice else {
        return Ok((None, None));
    };
    let parallel = choice.disable_parallel_tool_use.filter(|d| *d).map(|_| false);
    let value = match (&*choice.kind, &choice.name) {
        ("auto", _) => serde_json::json!("auto"),
        ("any", _) => serde_json::json!("required"),
        // `none` has no parallelism setting.
        ("none", _) => return Ok((Some(serde_json::json!("none")), None)),
        ("tool", Some(name)) => serde_json::json!({"type": "function", "function": {"name": name}}),
        _ => {
            return Err(invalid(
                "tool_choice",
                "tool_choice: must be {type: auto|any|none} or {type: tool, name}",
            ));
        }
    };
    Ok((Some(value), parallel))
}

/// `thinking`: raw for Claude; else a reasoning effort by budget (`disabled`: none asked).
fn thinking(raw: Option<&RawValue>, native: bool) -> Result<(Option<&RawValue>, Option<&'static str>), ApiError> {
    let Some(raw) = raw.filter(|r| r.get() != "null") else {
        return Ok((None, None));
    };
    let bad = || {
        invalid(
            "thinking",
            "thinking: must be {type: enabled, budget_tokens}, {type: adaptive} or {type: disabled}",
        )
    };
    let config: InThinking<'_> = serde_json::from_str(raw.get()).map_err(|_| bad())?;
    if native {
        return Ok((Some(raw), None));
    }
    let effort = match (&*config.kind, config.budget_tokens) {
        ("disabled", _) => None,
        ("adaptive", _) => Some("medium"),
        ("enabled", Some(budget)) if budget < 1024 => {
            return Err(invalid(
                "thinking.budget_tokens",
                "thinking.budget_tokens: must be at least 1024",
            ));
        }
        ("enabled", Some(budget)) if budget < 4096 => Some("low"),
        ("enabled", Some(budget)) if budget < 16384 => Some("medium"),
        ("enabled", Some(_)) => Some("high"),
        _ => return Err(bad()),
    };
    Ok((None, effort))
}
