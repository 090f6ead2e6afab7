//! The request's top level, OpenAI → Anthropic: every field is translated, dropped because it
//! is informational (see the module doc of [`super`]), or refused with a 400 naming it.

use bytes::Bytes;

use router_one_core::{ApiError, ErrorKind};

use super::FAMILY;
use super::request::conversation;
use super::wire::{
    MessagesRequest, Metadata, OutputConfig, OutputFormat, Thinking, ThinkingOut, ToolChoiceOut, ToolDef,
};
use crate::openai::wire::{ChatBody, Content, ToolChoice, invalid, refuse_untranslated, unsupported};
use crate::provider::{ChatRequest, Target};

/// Top-level fields translated (read from [`ChatBody`] or the view).
const TRANSLATED: &[&str] = &[
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "stop",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "reasoning_effort",
    "user",
    // The extension a Messages client's `thinking` config comes in (module doc of `super`).
    "thinking",
];

/// Budgets for `reasoning_effort` low, medium, high, xhigh (Anthropic's minimum is 1024).
const BUDGETS: [(&str, u64); 4] = [("low", 1024), ("medium", 4096), ("high", 16384), ("xhigh", 32768)];

/// The Anthropic body for a client's chat request: for Anthropic's own API (`vertex_version`
/// `None`) with `model`; for Vertex AI without it and with `anthropic_version` in the body.
pub(super) fn prepare(
    request: &ChatRequest<'_>,
    target: Target<'_>,
    vertex_version: Option<&'static str>,
) -> Result<Bytes, ApiError> {
    refuse_untranslated(request.top, FAMILY, TRANSLATED)?;
    let chat = ChatBody::parse(request.body)?;
    let contents = chat.contents()?;
    cache_ttls(&chat, &contents)?;
    let conversation = conversation(&chat.messages, &contents, target.model.vision)?;
    let max_tokens = request.output_limit(target).unwrap_or(target.model.max_output);
    let tools = tools(&chat, target)?;
    let choice = chat.tool_choice()?;
    let tool_choice = tool_choice(choice.as_ref(), chat.parallel_tool_calls, !tools.is_empty())?;
    let body = MessagesRequest {
        anthropic_version: vertex_version,
        model: vertex_version.is_none().then_some(target.upstream_id),
        max_tokens,
        system: conversation.system,
        messages: conversation.turns,
        tools,
        tool_choice,
        stop_sequences: chat.stop_sequences()?,
        temperature: not_null(chat.temperature),
        top_p: not_null(chat.top_p),
        top_k: not_null(chat.top_k),
        metadata: chat.user.as_deref().map(|user_id| Metadata { user_id }),
        thinking: thinking(&chat, target, max_tokens)?,
        output_config: output_config(&chat)?,
        stream: request.view.stream,
    };
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|_| ApiError::new(ErrorKind::Internal, "The request could not be written for Anthropic."))
}

/// The catalog posts one cache-write rate, Anthropic's 5-minute one: a breakpoint asking for
/// another TTL (the 1-hour cache, billed at twice the input rate) is refused, not under-billed.
fn cache_ttls(chat: &ChatBody<'_>, contents: &[Content<'_>]) -> Result<(), ApiError> {
    let check = |raw: Option<&serde_json::value::RawValue>, param: String| -> Result<(), ApiError> {
        #[derive(serde::Deserialize)]
        struct Control<'a> {
            #[serde(default, borrow)]
            ttl: Option<std::borrow::Cow<'a, str>>,
        }
        let Some(raw) = raw else { return Ok(()) };
        match serde_json::from_str::<Control<'_>>(raw.get()) {
            Ok(Control { ttl: None }) => Ok(()),
            Ok(Control { ttl: Some(ttl) }) if ttl == "5m" => Ok(()),
            _ => Err(ApiError::new(
                ErrorKind::InvalidRequest,
                format!("'{param}': only the 5-minute prompt cache is offered (omit 'ttl' or send \"5m\")."),
            )
            .with_param(param)),
        }
    };
    for (i, (message, content)) in chat.messages.iter().zip(contents).enumerate() {
        check(message.cache_control, format!("messages[{i}].cache_control"))?;
        if let Content::Parts(parts) = content {
            for (j, part) in parts.iter().enumerate() {
                check(
                    part.cache_control.map(|c| c.0),
                    format!("messages[{i}].content[{j}].cache_control"),
                )?;
            }
        }
    }
    for (i, tool) in chat.tools.iter().flatten().enumerate() {
        check(tool.cache_control, format!("tools[{i}].cache_control"))?;
    }
    Ok(())
}

fn not_null(raw: Option<&serde_json::value::RawValue>) -> Option<&serde_json::value::RawValue> {
    raw.filter(|r| r.get() != "null")
}

fn tools<'b>(chat: &'b ChatBody<'_>, target: Target<'_>) -> Result<Vec<ToolDef<'b>>, ApiError> {
    let tools = chat.tools.as_deref().unwrap_or_default();
    if !tools.is_empty() && !target.model.tools {
        return Err(unsupported(
            "tools",
            FAMILY,
            "this model does not support tool calling.",
        ));
    }
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            if tool.kind != "function" {
                let param = format!("tools[{i}].type");
                return Err(unsupported(param, FAMILY, "only function tools can be sent."));
            }
            let Some(function) = &tool.function else {
                return Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    format!("'tools[{i}].function' is required for function tools."),
                )
                .with_param(format!("tools[{i}].function")));
            };
            Ok(ToolDef {
                name: &function.name,
                description: function.description.as_deref(),
                input_schema: not_null(function.parameters),
                cache_control: tool.cache_control,
            })
        })
        .collect()
}

fn tool_choice<'b>(
    choice: Option<&'b ToolChoice<'_>>,
    parallel: Option<bool>,
    has_tools: bool,
) -> Result<Option<ToolChoiceOut<'b>>, ApiError> {
    if !has_tools {
        // Without tools, `none` and `auto` already hold; a call cannot be forced.
        return match choice {
            Some(ToolChoice::Required | ToolChoice::Function(_)) => Err(invalid(
                "tool_choice",
                "'tool_choice' requires a tool to call, but 'tools' is empty.",
            )),
            _ => Ok(None),
        };
    }
    // Anthropic puts "one call per turn" on tool_choice; without a choice, it goes on `auto`.
    let disable = (parallel == Some(false)).then_some(true);
    let (kind, name) = match choice {
        None if disable.is_some() => ("auto", None),
        None => return Ok(None),
        // `none` has no parallelism setting: no call at all.
        Some(ToolChoice::None) => ("none", None),
        Some(ToolChoice::Auto) => ("auto", None),
        Some(ToolChoice::Required) => ("any", None),
        Some(ToolChoice::Function(name)) => ("tool", Some(&**name)),
    };
    Ok(Some(ToolChoiceOut {
        kind,
        name,
        disable_parallel_tool_use: disable.filter(|_| kind != "none"),
    }))
}

/// `thinking`: the client's own config (the extension), or a budget by `reasoning_effort`.
fn thinking<'b>(
    chat: &'b ChatBody<'_>,
    target: Target<'_>,
    max_tokens: u64,
) -> Result<Option<ThinkingOut<'b>>, ApiError> {
    let Some(raw) = not_null(chat.thinking) else {
        return Ok(effort_budget(chat.reasoning_effort.as_deref(), target, max_tokens)?.map(ThinkingOut::Budget));
    };
    if chat.reasoning_effort.is_some() {
        return Err(invalid(
            "thinking",
            "Send either 'thinking' or 'reasoning_effort', not both.",
        ));
    }
    if !target.model.reasoning {
        return Err(unsupported("thinking", FAMILY, "this model has no extended thinking."));
    }
    Ok(Some(ThinkingOut::Raw(raw)))
}

fn effort_budget(effort: Option<&str>, target: Target<'_>, max_tokens: u64) -> Result<Option<Thinking>, ApiError> {
    let Some(effort) = effort else {
        return Ok(None);
    };
    if !target.model.reasoning {
        return Err(unsupported(
            "reasoning_effort",
            FAMILY,
            "this model has no extended thinking.",
        ));
    }
    if matches!(effort, "none" | "minimal") {
        return Ok(None);
    }
    let Some((_, budget)) = BUDGETS.iter().find(|(name, _)| *name == effort) else {
        return Err(invalid(
            "reasoning_effort",
            "'reasoning_effort' must be none, minimal, low, medium, high or xhigh.",
        ));
    };
    if max_tokens <= 1024 {
        return Err(invalid(
            "reasoning_effort",
            "Extended thinking needs max_tokens (or max_completion_tokens) above 1024: Claude's thinking \
             budget is at least 1024 tokens and must stay below max_tokens.",
        ));
    }
    Ok(Some(Thinking {
        kind: "enabled",
        budget_tokens: (*budget).min(max_tokens - 1),
    }))
}

fn output_config<'b>(chat: &'b ChatBody<'_>) -> Result<Option<OutputConfig<'b>>, ApiError> {
    let Some(format) = &chat.response_format else {
        return Ok(None);
    };
    match &*format.kind {
        "text" => Ok(None),
        "json_schema" => {
            let schema = format
                .json_schema
                .as_ref()
                .and_then(|j| not_null(j.schema))
                .ok_or_else(|| {
                    invalid(
                        "response_format.json_schema.schema",
                        "'response_format.json_schema.schema' is required for Claude structured outputs.",
                    )
                })?;
            Ok(Some(OutputConfig {
                format: OutputFormat {
                    kind: "json_schema",
                    schema,
                },
            }))
        }
        "json_object" => Err(unsupported(
            "response_format",
            FAMILY,
            "Claude has no schema-less JSON mode; use response_format type 'json_schema' with a schema.",
        )),
        _ => Err(invalid(
            "response_format",
            "'response_format.type' must be text, json_object or json_schema.",
        )),
    }
}
