//! The conversation, OpenAI → Anthropic: `system`/`developer` messages become the top-level
//! `system`; user parts become `text`/`image` blocks; assistant tool calls become `tool_use`
//! blocks whose `input` is the client's arguments text, raw; `tool` messages become `tool_result`
//! blocks of a `user` turn — consecutive ones share one turn (parallel results, as Anthropic
//! wants them), and a user message right after them joins that turn.

use std::borrow::Cow;

use serde_json::value::RawValue;

use router_one_core::{ApiError, ErrorKind};

use super::FAMILY;
use super::wire::{Block, ImageSource, Turn};
use crate::openai::wire::{Content, Image, Message, Part, unsupported};

/// `system` blocks and `messages` turns.
#[derive(Debug, Default)]
pub(super) struct Conversation<'b> {
    pub(super) system: Vec<Block<'b>>,
    pub(super) turns: Vec<Turn<'b>>,
}

/// What the last turn is, to know what may join it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Nothing may join (start, assistant turn, plain user turn).
    Closed,
    /// A user turn of only `tool_result` blocks: more results or user content may join.
    ToolResults,
    /// Tool results followed by user content: only more user content may join.
    AfterResults,
}

fn bad(param: String, message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message).with_param(param)
}

/// Translates the messages. `contents[i]` is `messages[i].content`, read beforehand so the
/// blocks can borrow from it.
pub(super) fn conversation<'b>(
    messages: &'b [Message<'_>],
    contents: &'b [Content<'_>],
    vision: bool,
) -> Result<Conversation<'b>, ApiError> {
    let mut out = Conversation::default();
    let mut last = Last::Closed;
    for (i, (message, content)) in messages.iter().zip(contents).enumerate() {
        match &*message.role {
            "system" | "developer" => {
                out.system.extend(text_blocks(content, i)?);
            }
            "user" => {
                let mut blocks = user_blocks(content, i, vision)?;
                last_block_cache_control(&mut blocks, message);
                match (last, out.turns.last_mut()) {
                    (Last::ToolResults | Last::AfterResults, Some(turn)) => {
                        turn.content.extend(blocks);
                        last = Last::AfterResults;
                    }
                    _ => {
                        out.turns.push(Turn {
                            role: "user",
                            thinking: Vec::new(),
                            content: blocks,
                        });
                        last = Last::Closed;
                    }
                }
            }
            "assistant" => {
                let mut blocks = assistant_blocks(message, content, i)?;
                last_block_cache_control(&mut blocks, message);
                out.turns.push(Turn {
                    role: "assistant",
                    thinking: message.thinking_blocks.clone().unwrap_or_default(),
                    content: blocks,
                });
                last = Last::Closed;
            }
            "tool" => {
                let mut block = tool_result(message, content, i)?;
                if let Some(control) = message.cache_control {
                    block.set_cache_control(control);
                }
                match (last, out.turns.last_mut()) {
                    (Last::ToolResults, Some(turn)) => turn.content.push(block),
                    _ => out.turns.push(Turn {
                        role: "user",
                        thinking: Vec::new(),
                        content: vec![block],
                    }),
                }
                last = Last::ToolResults;
            }
            "function" => {
                return Err(unsupported(
                    format!("messages[{i}].role"),
                    FAMILY,
                    "the legacy 'function' role is not available; use 'tool' messages with tool_call_id.",
                ));
            }
            other => {
                return Err(bad(
                    format!("messages[{i}].role"),
                    format!("'messages[{i}].role' must be system, developer, user, assistant or tool, not '{other}'."),
                ));
            }
        }
    }
    Ok(out)
}

/// The message-level breakpoint (the `cache_control` extension) goes on its last block.
fn last_block_cache_control<'b>(blocks: &mut [Block<'b>], message: &'b Message<'_>) {
    if let (Some(control), Some(last)) = (message.cache_control, blocks.last_mut()) {
        last.set_cache_control(control);
    }
}

/// A part's own breakpoint (the `cache_control` extension), on its block.
fn with_part_cache_control<'b>(mut block: Block<'b>, part: &'b Part<'_>) -> Block<'b> {
    if let Some(control) = part.cache_control {
        block.set_cache_control(control.0);
    }
    block
}

/// Text-only content (system and developer messages): a string or `text` parts.
fn text_blocks<'b>(content: &'b Content<'_>, i: usize) -> Result<Vec<Block<'b>>, ApiError> {
    match content {
        Content::Empty => Ok(Vec::new()),
        Content::Text(text) => Ok(vec![Block::text(text)]),
        Content::Parts(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match (&*part.kind, &part.text) {
                ("text", Some(text)) => Ok(with_part_cache_control(Block::text(text), part)),
                _ => Err(bad(
                    format!("messages[{i}].content[{j}]"),
                    format!("'messages[{i}].content[{j}]': this message accepts only text parts."),
                )),
            })
            .collect(),
    }
}

fn user_blocks<'b>(content: &'b Content<'_>, i: usize, vision: bool) -> Result<Vec<Block<'b>>, ApiError> {
    let parts = match content {
        Content::Empty => return Ok(Vec::new()),
        Content::Text(text) => return Ok(vec![Block::text(text)]),
        Content::Parts(parts) => parts,
    };
    parts
        .iter()
        .enumerate()
        .map(|(j, part)| user_part(part, i, j, vision).map(|block| with_part_cache_control(block, part)))
        .collect()
}

fn user_part<'b>(part: &'b Part<'_>, i: usize, j: usize, vision: bool) -> Result<Block<'b>, ApiError> {
    let param = || format!("messages[{i}].content[{j}]");
    match (&*part.kind, &part.text, &part.image_url) {
        ("text", Some(text), _) => Ok(Block::text(text)),
        ("image_url", _, Some(_)) if !vision => Err(unsupported(param(), FAMILY, "this model does not accept images.")),
        ("image_url", _, Some(url)) => {
            let source = match url
                .image()
                .map_err(|e| e.with_param(format!("{}.image_url.url", param())))?
            {
                Image::Base64 { media_type, data } => ImageSource::Base64 { media_type, data },
                Image::Url(url) => ImageSource::Url { url },
            };
            Ok(Block::Image {
                source,
                cache_control: None,
            })
        }
        ("input_audio" | "file", _, _) => Err(unsupported(
            param(),
            FAMILY,
            &format!("'{}' content parts cannot be sent to Anthropic.", part.kind),
        )),
        (kind, _, _) => Err(bad(
            param(),
            format!(
                "'{}' is not a valid content part here (type '{kind}' or its fields).",
                param()
            ),
        )),
    }
}

fn assistant_blocks<'b>(
    message: &'b Message<'_>,
    content: &'b Content<'_>,
    i: usize,
) -> Result<Vec<Block<'b>>, ApiError> {
    let mut blocks = Vec::new();
    match content {
        Content::Empty => {}
        // Anthropic rejects empty text blocks; an empty string says nothing anyway.
        Content::Text(text) if text.is_empty() => {}
        Content::Text(text) => blocks.push(Block::text(text)),
        Content::Parts(parts) => {
            for (j, part) in parts.iter().enumerate() {
                match (&*part.kind, &part.text) {
                    (_, Some(text)) if text.is_empty() => {}
                    // A refusal the assistant gave earlier is what it said.
                    ("text" | "refusal", Some(text)) => blocks.push(with_part_cache_control(Block::text(text), part)),
                    _ => {
                        return Err(bad(
                            format!("messages[{i}].content[{j}]"),
                            format!("'messages[{i}].content[{j}]': assistant messages accept only text parts."),
                        ));
                    }
                }
            }
        }
    }
    for (j, call) in message.tool_calls.iter().flatten().enumerate() {
        blocks.push(Block::ToolUse {
            id: &call.id,
            name: &call.function.name,
            input: object_text(&call.function.arguments, i, j)?,
            cache_control: None,
        });
    }
    Ok(blocks)
}

/// The arguments text as a raw JSON object: Anthropic's `input` must be an object. The text
/// inside is kept byte for byte (whitespace around the object is not part of the value).
fn object_text(arguments: &str, i: usize, j: usize) -> Result<&RawValue, ApiError> {
    match serde_json::from_str::<&RawValue>(arguments) {
        Ok(raw) if raw.get().starts_with('{') => Ok(raw),
        _ => {
            let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
            let message = format!("'{param}' must be a JSON object (as text).");
            Err(bad(param, message))
        }
    }
}

fn tool_result<'b>(message: &'b Message<'_>, content: &'b Content<'_>, i: usize) -> Result<Block<'b>, ApiError> {
    let Some(id) = message.tool_call_id.as_deref() else {
        return Err(bad(
            format!("messages[{i}].tool_call_id"),
            format!("'messages[{i}].tool_call_id' is required for tool messages."),
        ));
    };
    let content = match content {
        Content::Empty => Cow::Borrowed(""),
        Content::Text(text) => Cow::Borrowed(&**text),
        Content::Parts(parts) => {
            let mut joined = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (&*part.kind, &part.text) {
                    ("text", Some(text)) => joined.push_str(text),
                    _ => {
                        return Err(bad(
                            format!("messages[{i}].content[{j}]"),
                            format!("'messages[{i}].content[{j}]': tool messages accept only text parts."),
                        ));
                    }
                }
            }
            Cow::Owned(joined)
        }
    };
    Ok(Block::ToolResult {
        tool_use_id: id,
        content,
        is_error: message.is_error.filter(|e| *e),
        cache_control: None,
    })
}
