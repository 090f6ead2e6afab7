//! What the simulated model answers, decided once and independent of any wire format: each
//! format (OpenAI today; Anthropic and Gemini later) turns its request into a [`Prompt`] and
//! writes the [`Reply`] back in its own shape.

use crate::directives::Directives;
use crate::tokens::{self, PER_PROMPT, PER_TOOL_CALL, Usage};

/// Characters of the last user message echoed in a text reply.
const ECHO_CHARS: usize = 200;
/// Characters of the last user message echoed in tool-call arguments.
const ARGUMENT_CHARS: usize = 50;

/// The parts of a request that decide the answer.
#[derive(Debug, Clone)]
pub(crate) struct Prompt<'a> {
    /// The requested model, echoed in the reply.
    pub(crate) model: &'a str,
    /// Σ over messages of (4 + words), without the per-prompt 3.
    pub(crate) message_tokens: u64,
    /// Who spoke last.
    pub(crate) last_turn: Turn,
    /// Text of the last user message, wherever it is ("" if none).
    pub(crate) last_user_text: &'a str,
    /// Text of the last message if it is a tool result ("" otherwise).
    pub(crate) tool_result: &'a str,
    /// The first two tools offered, by name.
    pub(crate) tools: [Option<&'a str>; 2],
    /// How the request lets the model use its tools.
    pub(crate) tool_choice: ToolChoice<'a>,
    /// Whether the request allows more than one tool call.
    pub(crate) parallel_tool_calls: bool,
    /// JSON mode or structured outputs: the content must be a JSON object.
    pub(crate) json: bool,
    /// The max completion tokens asked for, if any.
    pub(crate) cap: Option<u64>,
}

/// The role of the last message of a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// A user message.
    User,
    /// A tool result.
    Tool,
    /// Anything else (system, assistant, developer).
    Other,
}

/// How a request lets the model use its tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToolChoice<'a> {
    /// The model decides (the default).
    Auto,
    /// Never call a tool.
    None,
    /// Call at least one tool.
    Required,
    /// Call this function.
    Named(&'a str),
}

/// The answer to a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply<'a> {
    /// Text or tool calls.
    pub(crate) answer: Answer<'a>,
    /// Why the answer ended.
    pub(crate) finish: Finish,
    /// Its token usage.
    pub(crate) usage: Usage,
    /// Its completion tokens without reasoning: the number of paced chunks.
    pub(crate) visible_tokens: u64,
}

/// Text, or calls to tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer<'a> {
    /// Content whose words are separated by single spaces.
    Text(String),
    /// Calls to the named functions.
    ToolCalls(Vec<ToolCall<'a>>),
}

/// One call to a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolCall<'a> {
    /// Number of its id (`call_sim_<n>` in OpenAI's format).
    pub(crate) id: u64,
    /// The function called.
    pub(crate) name: &'a str,
    /// Its arguments, a compact JSON object: `{"echo":"<first 50 chars of the user text>"}`.
    pub(crate) arguments: String,
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The reply is complete.
    Stop,
    /// The max-tokens cap truncated it.
    Length,
    /// The model called tools.
    ToolCalls,
}

/// Answers `prompt`, numbering tool calls with `next_id`.
pub(crate) fn answer<'a>(prompt: &Prompt<'a>, directives: &Directives, mut next_id: impl FnMut() -> u64) -> Reply<'a> {
    let prompt_tokens = prompt.message_tokens.saturating_add(PER_PROMPT);
    let usage = |visible| Usage::new(prompt_tokens, visible, directives.cached, directives.reasoning);
    let calls = tools_to_call(prompt);
    if !calls.is_empty() {
        let arguments = echo_arguments(prompt.last_user_text);
        let calls: Vec<ToolCall<'a>> = calls
            .into_iter()
            .map(|name| ToolCall {
                id: next_id(),
                name,
                arguments: arguments.clone(),
            })
            .collect();
        let visible = PER_TOOL_CALL * calls.len() as u64;
        return Reply {
            answer: Answer::ToolCalls(calls),
            finish: Finish::ToolCalls,
            usage: usage(visible),
            visible_tokens: visible,
        };
    }
    let text = reply_text(prompt, directives.words);
    let shaped = tokens::shape(&text, None, prompt.cap);
    Reply {
        finish: if shaped.capped { Finish::Length } else { Finish::Stop },
        usage: usage(shaped.words),
        visible_tokens: shaped.words,
        answer: Answer::Text(shaped.text),
    }
}

/// The functions to call, in order; empty for a text answer.
fn tools_to_call<'a>(prompt: &Prompt<'a>) -> Vec<&'a str> {
    let [Some(first), second] = prompt.tools else {
        return Vec::new();
    };
    if prompt.last_turn != Turn::User {
        return Vec::new();
    }
    match prompt.tool_choice {
        ToolChoice::None => Vec::new(),
        ToolChoice::Named(name) => vec![name],
        ToolChoice::Required => vec![first],
        ToolChoice::Auto => match second {
            Some(second) if prompt.parallel_tool_calls => vec![first, second],
            _ => vec![first],
        },
    }
}

/// The text before the max-tokens cap: the echo (or tool echo), padded to `words`, and wrapped
/// as a JSON object in JSON mode.
fn reply_text(prompt: &Prompt<'_>, words: Option<u64>) -> String {
    let raw = if prompt.last_turn == Turn::Tool {
        format!("Tool said: {}", tokens::first_chars(prompt.tool_result, ECHO_CHARS))
    } else {
        format!(
            "Simulated reply from {}. You said: {}",
            prompt.model,
            tokens::first_chars(prompt.last_user_text, ECHO_CHARS)
        )
    };
    let text = match words {
        Some(_) => tokens::shape(&raw, words, None).text,
        None => raw,
    };
    if prompt.json {
        json_object(&[("reply", &text)])
    } else {
        text
    }
}

fn echo_arguments(user_text: &str) -> String {
    json_object(&[("echo", tokens::first_chars(user_text, ARGUMENT_CHARS))])
}

/// A compact JSON object of string fields.
fn json_object(fields: &[(&str, &str)]) -> String {
    let mut out = Vec::with_capacity(fields.iter().map(|(k, v)| k.len() + v.len() + 8).sum());
    out.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::json::push_str(&mut out, key);
        out.push(b':');
        crate::json::push_str(&mut out, value);
    }
    out.push(b'}');
    // Escaped JSON built from `&str`s is valid UTF-8; the fallback is never taken.
    String::from_utf8(out).unwrap_or_default()
}

/// `text` in pieces of at most `chars` characters (never splitting a character): how every
/// format streams tool-call arguments.
pub(crate) fn fragments(text: &str, chars: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.char_indices().nth(chars).map_or(rest.len(), |(i, _)| i);
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_split_on_characters() {
        let pieces: Vec<&str> = fragments(r#"{"echo":"héllo wörld"}"#, 8).collect();
        assert_eq!(pieces, vec![r#"{"echo":"#, r#""héllo w"#, r#"örld"}"#]);
        assert_eq!(fragments("", 8).count(), 0);
    }

    fn prompt(user: &'static str) -> Prompt<'static> {
        Prompt {
            model: "m",
            message_tokens: 4 + tokens::count_words(user),
            last_turn: Turn::User,
            last_user_text: user,
            tool_result: "",
            tools: [None, None],
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            json: false,
            cap: None,
        }
    }

    fn ids() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn text_reply_and_usage() {
        let r = answer(&prompt("Hi   there"), &Directives::default(), ids());
        assert_eq!(
            r.answer,
            Answer::Text("Simulated reply from m. You said: Hi there".into())
        );
        assert_eq!((r.usage.prompt, r.usage.completion, r.finish), (9, 8, Finish::Stop));
    }

    #[test]
    fn cap_words_and_directives() {
        let mut p = prompt("a b c");
        p.cap = Some(3);
        let d = Directives {
            words: Some(5),
            reasoning: Some(4),
            cached: Some(2),
            ..Default::default()
        };
        let r = answer(&p, &d, ids());
        assert_eq!(r.answer, Answer::Text("Simulated reply from".into()));
        assert_eq!(r.finish, Finish::Length);
        assert_eq!(
            r.usage,
            Usage {
                prompt: 10,
                completion: 7,
                cached: 2,
                reasoning: 4
            }
        );
        p.cap = None;
        let r = answer(&p, &d, ids());
        assert_eq!(r.answer, Answer::Text("Simulated reply from m. You".into()));
    }

    #[test]
    fn json_mode_wraps_the_text() {
        let mut p = prompt("say \"x\"");
        p.json = true;
        let r = answer(&p, &Directives::default(), ids());
        assert_eq!(
            r.answer,
            Answer::Text(r#"{"reply":"Simulated reply from m. You said: say \"x\""}"#.into())
        );
    }

    #[test]
    fn tool_calls_follow_choice_and_parallelism() {
        let mut p = prompt("weather in Paris");
        p.tools = [Some("a"), Some("b")];
        let names = |p: &Prompt<'static>| match answer(p, &Directives::default(), ids()).answer {
            Answer::ToolCalls(calls) => calls.iter().map(|c| (c.id, c.name)).collect(),
            Answer::Text(_) => Vec::new(),
        };
        assert_eq!(names(&p), vec![(1, "a"), (2, "b")]);
        p.parallel_tool_calls = false;
        assert_eq!(names(&p), vec![(1, "a")]);
        p.tool_choice = ToolChoice::Named("b");
        assert_eq!(names(&p), vec![(1, "b")]);
        p.tool_choice = ToolChoice::None;
        assert!(names(&p).is_empty());
        p.tool_choice = ToolChoice::Required;
        p.last_turn = Turn::Other;
        assert!(names(&p).is_empty());
        p.last_turn = Turn::User;
        let r = answer(&p, &Directives::default(), ids());
        assert_eq!(r.usage.completion, 10);
        assert_eq!(r.finish, Finish::ToolCalls);
        let arguments = match r.answer {
            Answer::ToolCalls(calls) => calls.first().map(|c| c.arguments.clone()),
            Answer::Text(_) => None,
        };
        assert_eq!(arguments.as_deref(), Some(r#"{"echo":"weather in Paris"}"#));
    }

    #[test]
    fn tool_result_is_echoed() {
        let mut p = prompt("q");
        p.last_turn = Turn::Tool;
        p.tool_result = "sunny, 21C";
        p.tools = [Some("a"), None];
        let r = answer(&p, &Directives::default(), ids());
        assert_eq!(r.answer, Answer::Text("Tool said: sunny, 21C".into()));
    }
}
