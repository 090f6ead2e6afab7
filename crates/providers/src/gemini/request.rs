//! OpenAI chat request → Gemini `GenerateContentRequest`. Every field is translated or refused
//! with a 400 naming it; only the informational fields listed in the module doc of
//! [`crate::gemini`] are dropped.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;

use router_one_core::{ApiError, ErrorKind};

use super::options;
use super::wire::{
    Blob, CallOut, Content, FileData, GenerateRequest, Part, ResponseOut, ResponseValue, SystemInstruction,
};
use crate::openai::wire::{self as oai, ChatBody, Image, refuse_untranslated, unsupported};
use crate::provider::{ChatRequest, PreparedRequest, ReadHints, Target};

/// The family name used in refusals.
pub(crate) const FAMILY: &str = "Gemini";

/// Top-level fields read (and translated or checked) below.
const HANDLED: &[&str] = &[
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "response_format",
    "reasoning_effort",
    "tools",
    "tool_choice",
    "user",
];

/// A 400 naming a computed field path.
pub(crate) fn bad(param: String, message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message).with_param(param)
}

/// Translates a chat request.
pub(crate) fn prepare(request: &ChatRequest<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError> {
    refuse_untranslated(request.top, FAMILY, HANDLED)?;
    let chat = ChatBody::parse(request.body)?;
    check_fields(&chat, target)?;
    // Contents are read first and kept, so the translated parts can borrow their text.
    let contents = chat.contents()?;

    let mut system: Vec<Part<'_>> = Vec::new();
    let mut turns: Vec<Content<'_>> = Vec::new();
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    let mut after_tool = false;
    for (i, (message, content)) in chat.messages.iter().zip(&contents).enumerate() {
        let role = &*message.role;
        let is_tool = role == "tool";
        match role {
            // Gemini has one system instruction: every system message goes there, in order.
            "system" | "developer" => system.extend(parts(content, i, Speaker::System, target)?),
            "user" => push(&mut turns, "user", parts(content, i, Speaker::User, target)?),
            "assistant" => {
                let mut out = parts(content, i, Speaker::Assistant, target)?;
                for (j, call) in message.tool_calls.iter().flatten().enumerate() {
                    out.push(Part::FunctionCall {
                        function_call: CallOut {
                            name: &call.function.name,
                            args: arguments(&call.function.arguments, i, j)?,
                        },
                    });
                    call_names.insert(&call.id, &call.function.name);
                }
                push(&mut turns, "model", out);
            }
            "tool" => {
                let param = || format!("messages[{i}].tool_call_id");
                let id = message
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| bad(param(), format!("'{}' is required for tool messages.", param())))?;
                let name = call_names.get(id).copied().ok_or_else(|| {
                    bad(
                        param(),
                        format!("'{}' does not match any earlier assistant tool call.", param()),
                    )
                })?;
                let part = Part::FunctionResponse {
                    function_response: ResponseOut {
                        name,
                        response: tool_result(content, i)?,
                    },
                };
                // Consecutive tool messages answer one turn's parallel calls: one content.
                match turns.last_mut() {
                    Some(last) if after_tool => last.parts.push(part),
                    _ => turns.push(Content {
                        role: "user",
                        parts: vec![part],
                    }),
                }
            }
            "function" => {
                return Err(unsupported(
                    format!("messages[{i}].role"),
                    FAMILY,
                    "the legacy 'function' role is not supported; use 'tool' messages.",
                ));
            }
            _ => {
                return Err(bad(
                    format!("messages[{i}].role"),
                    format!("'messages[{i}].role' must be system, developer, user, assistant or tool."),
                ));
            }
        }
        after_tool = is_tool;
    }

    let (tools, tool_config) = options::tools(&chat)?;
    let body = GenerateRequest {
        contents: turns,
        system_instruction: (!system.is_empty()).then_some(SystemInstruction { parts: system }),
        tools,
        tool_config,
        generation_config: options::generation_config(&chat, request, target)?,
    };
    let body = serde_json::to_vec(&body)
        .map_err(|_| ApiError::new(ErrorKind::Internal, "The request could not be written for Gemini."))?;
    let id = target.upstream_id;
    let path = if request.view.stream {
        format!("/models/{id}:streamGenerateContent?alt=sse")
    } else {
        format!("/models/{id}:generateContent")
    };
    Ok(PreparedRequest {
        body: body.into(),
        path: Cow::Owned(path),
        hints: ReadHints::default(),
    })
}

/// Adds a turn unless it is empty (Gemini refuses contents without parts).
fn push<'b>(turns: &mut Vec<Content<'b>>, role: &'static str, parts: Vec<Part<'b>>) {
    if !parts.is_empty() {
        turns.push(Content { role, parts });
    }
}

/// A JSON `null`, which counts as an absent field.
pub(crate) fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// Refuses values of known fields Gemini cannot honour.
fn check_fields(chat: &ChatBody<'_>, target: Target<'_>) -> Result<(), ApiError> {
    if chat.tools.as_ref().is_some_and(|t| !t.is_empty()) && !target.model.tools {
        return Err(unsupported("tools", FAMILY, "this model does not support tools."));
    }
    Ok(())
}

/// Who wrote a message, for which parts it may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Speaker {
    System,
    User,
    Assistant,
}

/// A message's content as Gemini parts.
fn parts<'b>(
    content: &'b oai::Content<'_>,
    i: usize,
    who: Speaker,
    target: Target<'_>,
) -> Result<Vec<Part<'b>>, ApiError> {
    let list = match content {
        oai::Content::Empty => return Ok(Vec::new()),
        oai::Content::Text(text) if text.is_empty() => return Ok(Vec::new()),
        oai::Content::Text(text) => return Ok(vec![Part::Text { text }]),
        oai::Content::Parts(list) => list,
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, part) in list.iter().enumerate() {
        let param = || format!("messages[{i}].content[{j}]");
        match (&*part.kind, who) {
            ("text", _) | ("refusal", Speaker::Assistant) => {
                let text = part
                    .text
                    .as_deref()
                    .ok_or_else(|| bad(param(), format!("'{}' has no text.", param())))?;
                out.push(Part::Text { text });
            }
            ("image_url", Speaker::User) => {
                if !target.model.vision {
                    return Err(unsupported(param(), FAMILY, "this model does not accept images."));
                }
                let url = part
                    .image_url
                    .as_ref()
                    .ok_or_else(|| bad(param(), format!("'{}' has no image_url.", param())))?;
                let image = url.image().map_err(|e| e.with_param(param()))?;
                out.push(match image {
                    Image::Base64 { media_type, data } => Part::InlineData {
                        inline_data: Blob {
                            mime_type: media_type,
                            data,
                        },
                    },
                    Image::Url(file_uri) => Part::FileData {
                        file_data: FileData {
                            mime_type: image_mime(file_uri).ok_or_else(|| {
                                bad(
                                    format!("{}.image_url.url", param()),
                                    format!(
                                        "The type of the image at '{}.image_url.url' cannot be told from its \
                                         extension (png, jpg, jpeg, webp, gif, heic, heif); send it as a data URL.",
                                        param()
                                    ),
                                )
                            })?,
                            file_uri,
                        },
                    },
                });
            }
            ("input_audio" | "file", _) => {
                return Err(unsupported(param(), FAMILY, "audio and file parts are not supported."));
            }
            (kind, _) => {
                return Err(bad(
                    param(),
                    format!("'{}' has a type ('{kind}') this message role cannot hold.", param()),
                ));
            }
        }
    }
    Ok(out)
}

/// The media type of an image URL, from its path's extension.
pub(crate) fn image_mime(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = file.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => return None,
    })
}

/// A tool call's arguments as raw JSON (an object, as Gemini's `args` must be).
fn arguments(text: &str, i: usize, j: usize) -> Result<Box<RawValue>, ApiError> {
    serde_json::from_str::<Box<RawValue>>(text)
        .ok()
        .filter(|raw| raw.get().starts_with('{'))
        .ok_or_else(|| {
            let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
            bad(param.clone(), format!("'{param}' must be a JSON object."))
        })
}

/// A tool message's content as `functionResponse.response`.
fn tool_result<'b>(content: &'b oai::Content<'_>, i: usize) -> Result<ResponseValue<'b>, ApiError> {
    let text: Cow<'b, str> = match content {
        oai::Content::Empty => Cow::Borrowed(""),
        oai::Content::Text(text) => Cow::Borrowed(text),
        oai::Content::Parts(list) => {
            let mut joined = String::new();
            for (j, part) in list.iter().enumerate() {
                match (&*part.kind, &part.text) {
                    ("text", Some(text)) => joined.push_str(text),
                    _ => {
                        let param = format!("messages[{i}].content[{j}]");
                        return Err(bad(
                            param.clone(),
                            format!("'{param}' must be a text part in a tool message."),
                        ));
                    }
                }
            }
            Cow::Owned(joined)
        }
    };
    if text.trim_start().starts_with('{')
        && let Ok(raw) = serde_json::from_str::<Box<RawValue>>(&text)
    {
        return Ok(ResponseValue::Object(raw));
    }
    Ok(ResponseValue::Wrapped { content: text })
}
