//! The parts of an Anthropic Messages request the simulator reads: strings are borrowed from the
//! body when they have no escapes, and every other field (`temperature`, `top_p`, `metadata`,
//! `thinking`, image sources, tool inputs and schemas, ...) is skipped. `output_config.format`
//! (structured outputs) is read only for its type: a JSON schema makes the answer JSON.
//! `thinking` is read for its type, earlier `thinking` blocks for their text and signature, and
//! `cache_control` for where it is (the prompt cache, `super::cache`).

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::reply::{ToolChoice, Turn};
use crate::tokens::{PER_MESSAGE, count_words};

/// A Messages request, as far as the simulator cares.
#[derive(Debug, Deserialize)]
pub(super) struct MessagesRequest<'a> {
    #[serde(borrow)]
    pub(super) model: Option<Cow<'a, str>>,
    /// Vertex AI's body-borne version (`vertex-2023-10-16`); Anthropic's API takes a header.
    #[serde(borrow)]
    pub(super) anthropic_version: Option<Cow<'a, str>>,
    pub(super) max_tokens: Option<u64>,
    #[serde(borrow)]
    pub(super) system: Option<Content<'a>>,
    #[serde(borrow)]
    pub(super) messages: Option<Vec<Message<'a>>>,
    #[serde(borrow)]
    pub(super) tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow)]
    pub(super) tool_choice: Option<RawToolChoice<'a>>,
    #[serde(borrow)]
    pub(super) stop_sequences: Option<Vec<Cow<'a, str>>>,
    pub(super) stream: Option<bool>,
    #[serde(borrow)]
    pub(super) output_config: Option<OutputConfig<'a>>,
    #[serde(borrow, default)]
    pub(super) thinking: Option<ThinkingConfig<'a>>,
}

/// `thinking`: `{"type": "enabled" | "adaptive" | "disabled", ...}`.
#[derive(Debug, Deserialize)]
pub(super) struct ThinkingConfig<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// `output_config`: `{"format": {"type": "json_schema", "schema": {...}}, "effort": ...}`.
#[derive(Debug, Deserialize)]
pub(super) struct OutputConfig<'a> {
    #[serde(borrow)]
    format: Option<OutputFormat<'a>>,
}

/// `output_config.format`, by type.
#[derive(Debug, Deserialize)]
pub(super) struct OutputFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// One message of `messages`.
#[derive(Debug, Deserialize)]
pub(super) struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Content<'a>,
}

/// Message (or system, or tool result) content: a string or an array of content blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Content<'a> {
    /// A plain string.
    Text(#[serde(borrow)] Cow<'a, str>),
    /// Content blocks: `text`, `image`, `tool_use`, `tool_result`, ...
    Blocks(#[serde(borrow)] Vec<Block<'a>>),
}

/// One content block; only the fields that carry text are read.
#[derive(Debug, Deserialize)]
pub(super) struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    /// The content of a `tool_result` block.
    #[serde(borrow, default)]
    content: Option<Box<Content<'a>>>,
    /// A `thinking` block's text.
    #[serde(borrow, default)]
    pub(super) thinking: Option<Cow<'a, str>>,
    /// A `thinking` block's signature.
    #[serde(borrow, default)]
    pub(super) signature: Option<Cow<'a, str>>,
    /// A prompt-cache breakpoint: only whether there is one matters.
    #[serde(default)]
    cache_control: Option<IgnoredAny>,
}

/// One entry of `tools`, by name (custom and server tools alike).
#[derive(Debug, Deserialize)]
pub(super) struct Tool<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// `tool_choice`: `{"type":"auto"|"any"|"tool"|"none","name":..,"disable_parallel_tool_use":..}`.
#[derive(Debug, Deserialize)]
pub(super) struct RawToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

impl Content<'_> {
    /// The text: the string, or the `text` blocks and `tool_result` contents concatenated as they
    /// are (no separator), like OpenAI's content parts.
    pub(super) fn text(&self) -> Cow<'_, str> {
        match self {
            Content::Text(text) => Cow::Borrowed(text),
            Content::Blocks(blocks) => {
                let mut out = Cow::Borrowed("");
                for block in blocks {
                    let piece = match (&block.text, &block.content) {
                        (Some(text), _) => Cow::Borrowed(&**text),
                        (None, Some(content)) if block.kind == "tool_result" => content.text(),
                        _ => continue,
                    };
                    if out.is_empty() {
                        out = piece;
                    } else {
                        out.to_mut().push_str(&piece);
                    }
                }
                out
            }
        }
    }

    /// The text of the last `tool_result` block, if there is one.
    fn tool_result(&self) -> Option<Cow<'_, str>> {
        let Content::Blocks(blocks) = self else {
            return None;
        };
        blocks
            .iter()
            .rev()
            .find(|b| b.kind == "tool_result")
            .map(|b| b.content.as_ref().map_or(Cow::Borrowed(""), |c| c.text()))
    }
}

/// `system` and `messages`, folded into what the reply and the token rule need.
#[derive(Debug)]
pub(super) struct Summary<'r> {
    /// Σ over the system prompt and the messages of (4 + words of its text).
    pub(super) tokens: u64,
    /// Who spoke last: a user message with a `tool_result` block counts as a tool turn.
    pub(super) last_turn: Turn,
    /// Text of the last user message.
    pub(super) last_user_text: Cow<'r, str>,
    /// Content of the last `tool_result` of the last message, if it has one.
    pub(super) tool_result: Cow<'r, str>,
}

/// Folds a non-empty conversation; `None` if `messages` is empty.
pub(super) fn summarise<'r>(system: Option<&'r Content<'_>>, messages: &'r [Message<'_>]) -> Option<Summary<'r>> {
    let last = messages.last()?;
    let mut tokens = system.map_or(0, |s| PER_MESSAGE + count_words(&s.text()));
    let mut last_user_text = Cow::Borrowed("");
    for message in messages {
        let text = message.content.text();
        tokens = tokens.saturating_add(PER_MESSAGE + count_words(&text));
        if message.role == "user" {
            last_user_text = text;
        }
    }
    let (last_turn, tool_result) = match (&*last.role, last.content.tool_result()) {
        ("user", Some(result)) => (Turn::Tool, result),
        ("user", None) => (Turn::User, Cow::Borrowed("")),
        _ => (Turn::Other, Cow::Borrowed("")),
    };
    Some(Summary {
        tokens,
        last_turn,
        last_user_text,
        tool_result,
    })
}

impl Content<'_> {
    /// Whether a block of this content is a prompt-cache breakpoint.
    pub(super) fn has_breakpoint(&self) -> bool {
        matches!(self, Content::Blocks(blocks) if blocks.iter().any(|b| b.cache_control.is_some()))
    }

    /// The `thinking` blocks.
    pub(super) fn thinking_blocks(&self) -> impl Iterator<Item = &Block<'_>> {
        let blocks = match self {
            Content::Blocks(blocks) => blocks.as_slice(),
            Content::Text(_) => &[],
        };
        blocks.iter().filter(|b| b.kind == "thinking")
    }
}

impl Message<'_> {
    /// `user` or `assistant`.
    pub(super) fn role(&self) -> &str {
        &self.role
    }

    /// The content.
    pub(super) fn content(&self) -> &Content<'_> {
        &self.content
    }
}

impl MessagesRequest<'_> {
    /// Whether extended thinking is on.
    pub(super) fn thinks(&self) -> bool {
        self.thinking
            .as_ref()
            .is_some_and(|t| matches!(&*t.kind, "enabled" | "adaptive"))
    }

    /// The first two tool names.
    pub(super) fn tool_names(&self) -> [Option<&str>; 2] {
        let mut names = self.tools.iter().flatten().filter_map(|t| t.name.as_deref());
        [names.next(), names.next()]
    }

    /// `tool_choice`; anything unrecognised counts as `auto`.
    pub(super) fn tool_choice(&self) -> ToolChoice<'_> {
        match self.tool_choice.as_ref() {
            None => ToolChoice::Auto,
            Some(choice) => match (&*choice.kind, choice.name.as_deref()) {
                ("none", _) => ToolChoice::None,
                ("any", _) | ("tool", None) => ToolChoice::Required,
                ("tool", Some(name)) => ToolChoice::Named(name),
                _ => ToolChoice::Auto,
            },
        }
    }

    /// Whether structured outputs asked for JSON.
    pub(super) fn wants_json(&self) -> bool {
        self.output_config
            .as_ref()
            .and_then(|c| c.format.as_ref())
            .is_some_and(|f| f.kind == "json_schema")
    }

    /// Whether more than one `tool_use` block may be returned.
    pub(super) fn parallel_tool_use(&self) -> bool {
        !self
            .tool_choice
            .as_ref()
            .and_then(|c| c.disable_parallel_tool_use)
            .unwrap_or(false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn folds_system_messages_and_tool_results() {
        let body = br#"{"model":"claude","max_tokens":64,
            "system":[{"type":"text","text":"be brief"}],
            "messages":[
              {"role":"user","content":[{"type":"text","text":"one two"},{"type":"image","source":{"type":"base64","data":"x"}},{"type":"text","text":" three"}]},
              {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"a","input":{"q":1}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"it is \"sunny\""}]}]}],
            "tools":[{"name":"a","input_schema":{}},{"name":"b","input_schema":{}},{"name":"c"}],
            "tool_choice":{"type":"tool","name":"b","disable_parallel_tool_use":true},
            "temperature":0.5,"metadata":{"user_id":"u"},"thinking":{"type":"enabled","budget_tokens":1024}}"#;
        let r: MessagesRequest<'_> = serde_json::from_slice(body).unwrap();
        let s = summarise(r.system.as_ref(), r.messages.as_deref().unwrap()).unwrap();
        assert_eq!(s.tokens, (4 + 2) + (4 + 3) + 4 + (4 + 3));
        assert_eq!(s.last_turn, Turn::Tool);
        assert_eq!(s.tool_result, "it is \"sunny\"");
        assert_eq!(s.last_user_text, "it is \"sunny\"");
        assert_eq!(r.tool_names(), [Some("a"), Some("b")]);
        assert_eq!(r.tool_choice(), ToolChoice::Named("b"));
        assert!(!r.parallel_tool_use());
        assert!(!r.wants_json());
        let r: MessagesRequest<'_> =
            serde_json::from_str(r#"{"output_config":{"format":{"type":"json_schema","schema":{}}}}"#).unwrap();
        assert!(r.wants_json());
    }

    #[test]
    fn tool_choice_modes() {
        for (raw, want) in [
            (r#"{"type":"none"}"#, ToolChoice::None),
            (r#"{"type":"any"}"#, ToolChoice::Required),
            (r#"{"type":"auto"}"#, ToolChoice::Auto),
            (r#"{"type":"weird"}"#, ToolChoice::Auto),
        ] {
            let body = format!(r#"{{"tool_choice":{raw}}}"#);
            let r: MessagesRequest<'_> = serde_json::from_str(&body).unwrap();
            assert_eq!(r.tool_choice(), want, "{raw}");
        }
    }

    #[test]
    fn wrong_shapes_are_errors() {
        for body in [
            r#"{"messages":"hi"}"#,
            r#"{"messages":[{"content":"x"}]}"#,
            r#"{"messages":[{"role":"user","content":5}]}"#,
        ] {
            assert!(serde_json::from_str::<MessagesRequest<'_>>(body).is_err(), "{body}");
        }
    }
}
