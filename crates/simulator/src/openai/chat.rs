//! `POST /v1/chat/completions`: auth, parsing, directives, then a plain or streamed answer.

use http::{Request, Response};
use hyper::body::Incoming;

use super::error::{self, OpenAiFaults};
use super::request::{ChatRequest, Messages};
use super::{completion, stream};
use crate::SimState;
use crate::body::SimBody;
use crate::conn::ConnControl;
use crate::directives::Directives;
use crate::exchange;
use crate::lenient;
use crate::reply::{self, Prompt, Reply, Turn};
use crate::tokens::Usage;

/// What every response of one exchange repeats: its id, time and model.
#[derive(Debug, Clone, Copy)]
pub(super) struct Meta<'a> {
    /// Number of the id `chatcmpl-sim-<n>`.
    pub(super) id: u64,
    /// Unix seconds.
    pub(super) created: u64,
    /// The requested model, echoed as is.
    pub(super) model: &'a str,
}

/// The prefix of every chat-completion id.
pub(super) const ID_PREFIX: &str = "chatcmpl-sim-";
/// The prefix of every tool-call id.
pub(super) const CALL_PREFIX: &str = "call_sim_";
/// The `system_fingerprint` of every response.
pub(super) const FINGERPRINT: &str = "fp_sim";

/// Handles one chat-completions request.
pub(crate) async fn handle(request: Request<Incoming>, state: &SimState, control: &ConnControl) -> Response<SimBody> {
    let mut directives = exchange::header_directives(request.headers());
    if !exchange::has_bearer(request.headers()) {
        return error::missing_api_key();
    }
    let Some(body) = exchange::read_body(request.into_body()).await else {
        return error::unreadable_body();
    };
    let mut rewritten = None;
    let chat: ChatRequest<'_> = match lenient::from_slice(&body, &mut rewritten) {
        Ok(chat) => chat,
        Err(err) => return error::bad_body(&err),
    };
    let Some(model) = chat.model.as_deref() else {
        return error::invalid_request("you must provide a model parameter", None, None);
    };
    let Some(messages) = chat.messages.as_ref() else {
        return error::missing("messages");
    };
    let Some(last_turn) = messages.last_turn else {
        return error::invalid_request("[] is too short - 'messages'", Some("messages"), None);
    };
    let count = match choice_count(chat.n) {
        Ok(count) => count,
        Err(n) => return n_out_of_range(n),
    };
    let streamed = chat.stream.unwrap_or(false);
    directives.apply_text(&messages.last_user_text);
    if let Some(fault) = directives.fault() {
        return exchange::inject(fault, control, &OpenAiFaults { stream: streamed }).await;
    }

    let meta = Meta {
        id: state.next_id(),
        created: exchange::unix_now(),
        model,
    };
    let prompt = prompt(&chat, model, messages, last_turn);
    let choices = Choices::answer(&prompt, &directives, count, || state.next_id());
    let pacing = directives.pacing(&state.config);
    if streamed {
        let include_usage = chat
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        stream::response(&meta, &choices, include_usage, pacing, &directives)
    } else {
        exchange::pause(pacing.total(choices.visible_tokens)).await;
        completion::response(&meta, &choices)
    }
}

/// The most choices one request may ask for with `n`, as OpenAI allows.
const MAX_CHOICES: i64 = 128;

/// `n`: how many choices to answer (absent or null: one), or `Err(n)` when out of range.
fn choice_count(n: Option<i64>) -> Result<usize, i64> {
    match n.unwrap_or(1) {
        n @ 1..=MAX_CHOICES => usize::try_from(n).map_err(|_| n),
        n => Err(n),
    }
}

/// OpenAI's 400 for an `n` out of 1..=128.
fn n_out_of_range(n: i64) -> Response<SimBody> {
    let (bound, code) = if n < 1 {
        ("below minimum value. Expected a value >= 1", "integer_below_min_value")
    } else {
        (
            "above maximum value. Expected a value <= 128",
            "integer_above_max_value",
        )
    };
    let message = format!("Invalid 'n': integer {bound}, but got {n} instead.");
    error::invalid_request(&message, Some("n"), Some(code))
}

/// The answer to one chat request: `n` choices, and the usage of them all.
#[derive(Debug)]
pub(super) struct Choices<'a> {
    /// One reply per choice, in index order; never empty.
    pub(super) replies: Vec<Reply<'a>>,
    /// The usage the response reports: the prompt once, the completion tokens of every choice,
    /// and the `cached` and `reasoning` directives once for the whole response; each field a
    /// `report_*` directive names replaced by its value.
    pub(super) usage: Usage,
    /// Σ of the choices' completion tokens without reasoning: the number of paced chunks.
    pub(super) visible_tokens: u64,
}

impl<'a> Choices<'a> {
    /// Answers `prompt` `count` times; each choice numbers its own tool calls with `next_id`.
    fn answer(prompt: &Prompt<'a>, directives: &Directives, count: usize, mut next_id: impl FnMut() -> u64) -> Self {
        let each = directives.per_choice(count);
        let replies: Vec<Reply<'a>> = (0..count).map(|_| reply::answer(prompt, &each, &mut next_id)).collect();
        let visible_tokens = replies
            .iter()
            .fold(0u64, |sum, reply| sum.saturating_add(reply.visible_tokens));
        let prompt_tokens = replies.first().map_or(0, |reply| reply.usage.prompt);
        Choices {
            usage: Usage::new(prompt_tokens, visible_tokens, directives.cached, directives.reasoning)
                .reported(&directives.report),
            replies,
            visible_tokens,
        }
    }
}

fn prompt<'a>(chat: &'a ChatRequest<'_>, model: &'a str, messages: &'a Messages<'_>, last_turn: Turn) -> Prompt<'a> {
    let names = chat.tools.as_ref().map(|t| &t.names);
    let name = |i: usize| names.and_then(|n| n.get(i)).and_then(|n| n.as_deref());
    Prompt {
        model,
        message_tokens: messages.tokens,
        last_turn,
        last_user_text: &messages.last_user_text,
        tool_result: if last_turn == Turn::Tool {
            &messages.last_other_text
        } else {
            ""
        },
        tools: [name(0), name(1)],
        tool_choice: chat.tool_choice(),
        parallel_tool_calls: chat.parallel_tool_calls.unwrap_or(true),
        json: chat.wants_json(),
        cap: chat.cap(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::ToolChoice;

    #[test]
    fn n_defaults_to_one_and_is_bounded() {
        assert_eq!(choice_count(None).ok(), Some(1));
        assert_eq!(choice_count(Some(1)).ok(), Some(1));
        assert_eq!(choice_count(Some(128)).ok(), Some(128));
        for refused in [i64::MIN, -1, 0, 129, i64::MAX] {
            assert_eq!(choice_count(Some(refused)), Err(refused));
        }
    }

    #[test]
    fn choices_sum_completion_and_count_directives_once() {
        let prompt = Prompt {
            model: "m",
            message_tokens: 6,
            last_turn: Turn::User,
            last_user_text: "a b",
            tool_result: "",
            tools: [None, None],
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            json: false,
            cap: Some(3),
        };
        let directives = Directives {
            cached: Some(4),
            reasoning: Some(100),
            ..Directives::default()
        };
        let mut ids = 0..;
        let choices = Choices::answer(&prompt, &directives, 3, || ids.next().unwrap_or(0));
        assert_eq!(choices.replies.len(), 3);
        assert_eq!(choices.visible_tokens, 9);
        assert_eq!(
            choices.usage,
            Usage {
                prompt: 9,
                completion: 9 + 100,
                cached: 4,
                reasoning: 100
            }
        );
    }
}
