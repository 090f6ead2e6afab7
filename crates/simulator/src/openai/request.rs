//! The parts of an OpenAI chat-completions request the simulator reads, parsed without building
//! a message list: `messages` and `tools` are folded into summaries as they are read, strings are
//! borrowed from the body when they have no escapes, and every other field is skipped.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::reply::{ToolChoice, Turn};
use crate::tokens::{PER_MESSAGE, count_words};

/// A chat-completions request, as far as the simulator cares.
#[derive(Debug, Deserialize)]
pub(super) struct ChatRequest<'a> {
    #[serde(borrow)]
    pub(super) model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) messages: Option<Messages<'a>>,
    pub(super) stream: Option<bool>,
    pub(super) stream_options: Option<StreamOptions>,
    pub(super) max_tokens: Option<u64>,
    pub(super) max_completion_tokens: Option<u64>,
    /// How many choices to answer; signed, so that a negative `n` gets OpenAI's range message.
    pub(super) n: Option<i64>,
    #[serde(borrow)]
    pub(super) tools: Option<Tools<'a>>,
    #[serde(borrow)]
    pub(super) tool_choice: Option<&'a RawValue>,
    pub(super) parallel_tool_calls: Option<bool>,
    #[serde(borrow)]
    pub(super) response_format: Option<ResponseFormat<'a>>,
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
pub(super) struct StreamOptions {
    pub(super) include_usage: Option<bool>,
}

/// `response_format`, by its type only.
#[derive(Debug, Deserialize)]
pub(super) struct ResponseFormat<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
}

impl ChatRequest<'_> {
    /// `max_completion_tokens` if given, else `max_tokens`.
    pub(super) fn cap(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// JSON mode or structured outputs.
    pub(super) fn wants_json(&self) -> bool {
        self.response_format
            .as_ref()
            .is_some_and(|f| matches!(&*f.kind, "json_object" | "json_schema"))
    }

    /// `tool_choice`; anything unrecognised counts as `"auto"`.
    pub(super) fn tool_choice(&self) -> ToolChoice<'_> {
        let Some(raw) = self.tool_choice else {
            return ToolChoice::Auto;
        };
        match serde_json::from_str::<RawChoice<'_>>(raw.get()) {
            Ok(RawChoice::Mode(mode)) => match mode.as_ref() {
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                _ => ToolChoice::Auto,
            },
            Ok(RawChoice::Named { function, custom }) => {
                match function.or(custom) {
                    // A name is borrowed from the request body unless it had escapes; the
                    // escaped case is vanishingly rare in tests, so fall back to the first tool.
                    Some(Named {
                        name: Cow::Borrowed(name),
                    }) => ToolChoice::Named(name),
                    Some(Named { name: Cow::Owned(_) }) => ToolChoice::Required,
                    None => ToolChoice::Auto,
                }
            }
            Err(_) => ToolChoice::Auto,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawChoice<'a> {
    Mode(#[serde(borrow)] Cow<'a, str>),
    Named {
        #[serde(borrow)]
        function: Option<Named<'a>>,
        #[serde(borrow)]
        custom: Option<Named<'a>>,
    },
}

#[derive(Debug, Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// `messages`, folded into what the reply and the token rule need.
#[derive(Debug, Default)]
pub(super) struct Messages<'a> {
    /// Number of messages.
    pub(super) count: u64,
    /// Σ over messages of (4 + words of its text).
    pub(super) tokens: u64,
    /// Role of the last message.
    pub(super) last_turn: Option<Turn>,
    /// Text of the last user message.
    pub(super) last_user_text: Cow<'a, str>,
    /// Text of the last non-user message.
    pub(super) last_other_text: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
}

/// Message content: a string, or an array of parts whose `text` fields count.
enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

impl<'a> Content<'a> {
    /// The text: the string, or the `text` parts concatenated as they are.
    fn into_text(self) -> Cow<'a, str> {
        match self {
            Content::Text(text) => text,
            Content::Parts(parts) => {
                let mut texts = parts.into_iter().filter_map(|p| p.text);
                let Some(first) = texts.next() else {
                    return Cow::Borrowed("");
                };
                match texts.next() {
                    None => first,
                    Some(second) => {
                        let mut joined = first.into_owned();
                        joined.push_str(&second);
                        texts.for_each(|t| joined.push_str(&t));
                        Cow::Owned(joined)
                    }
                }
            }
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContentVisitor(PhantomData))
    }
}

struct ContentVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
    type Value = Content<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of content parts")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        while let Some(part) = seq.next_element()? {
            parts.push(part);
        }
        Ok(Content::Parts(parts))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Messages<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(MessagesVisitor(PhantomData))
    }
}

struct MessagesVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for MessagesVisitor<'a> {
    type Value = Messages<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Messages::default();
        while let Some(message) = seq.next_element::<Message<'a>>()? {
            let text = message.content.map_or(Cow::Borrowed(""), Content::into_text);
            out.count += 1;
            out.tokens = out.tokens.saturating_add(PER_MESSAGE + count_words(&text));
            let turn = match &*message.role {
                "user" => Turn::User,
                "tool" => Turn::Tool,
                _ => Turn::Other,
            };
            out.last_turn = Some(turn);
            if turn == Turn::User {
                out.last_user_text = text;
            } else {
                out.last_other_text = text;
            }
        }
        Ok(out)
    }
}

/// `tools`, folded into the count and the first two names.
#[derive(Debug, Default)]
pub(super) struct Tools<'a> {
    /// The first two named tools.
    pub(super) names: [Option<Cow<'a, str>>; 2],
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow)]
    function: Option<Named<'a>>,
    #[serde(borrow)]
    custom: Option<Named<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Tools<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ToolsVisitor(PhantomData))
    }
}

struct ToolsVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ToolsVisitor<'a> {
    type Value = Tools<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tools")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Tools::default();
        let mut named = 0;
        while let Some(tool) = seq.next_element::<Tool<'a>>()? {
            if let Some(Named { name }) = tool.function.or(tool.custom) {
                if let Some(slot) = out.names.get_mut(named) {
                    *slot = Some(name);
                }
                named += 1;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn folds_messages_and_tools() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"one two"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":" three"}]},
            {"role":"assistant","content":null,"tool_calls":[]},
            {"role":"tool","tool_call_id":"c","content":"it is \"sunny\""}],
            "tools":[{"type":"function","function":{"name":"a","parameters":{}}},{"type":"function","function":{"name":"b"}},{"type":"function","function":{"name":"c"}}],
            "tool_choice":{"type":"function","function":{"name":"b"}},
            "max_tokens":5,"max_completion_tokens":7,"response_format":{"type":"json_schema","json_schema":{}},
            "unknown":{"deep":[1,2,3]}}"#;
        let r: ChatRequest<'_> = serde_json::from_slice(body).unwrap();
        let m = r.messages.as_ref().unwrap();
        assert_eq!(m.count, 4);
        assert_eq!(m.tokens, (4 + 2) + (4 + 3) + 4 + (4 + 3));
        assert_eq!(m.last_turn, Some(Turn::Tool));
        assert_eq!(m.last_user_text, "one two three");
        assert_eq!(m.last_other_text, "it is \"sunny\"");
        let names = &r.tools.as_ref().unwrap().names;
        assert_eq!((names[0].as_deref(), names[1].as_deref()), (Some("a"), Some("b")));
        assert_eq!(r.tool_choice(), ToolChoice::Named("b"));
        assert_eq!(r.cap(), Some(7));
        assert!(r.wants_json());
    }

    #[test]
    fn tool_choice_modes() {
        for (raw, want) in [
            (r#""none""#, ToolChoice::None),
            (r#""required""#, ToolChoice::Required),
            (r#""auto""#, ToolChoice::Auto),
            (r#"42"#, ToolChoice::Auto),
        ] {
            let body = format!(r#"{{"tool_choice":{raw}}}"#);
            let r: ChatRequest<'_> = serde_json::from_str(&body).unwrap();
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
            assert!(serde_json::from_str::<ChatRequest<'_>>(body).is_err(), "{body}");
        }
    }
}
