//! `POST /v1/messages`: auth, parsing, directives, then a plain or streamed answer.

use std::borrow::Cow;

use http::{Request, Response};
use hyper::body::Incoming;

use super::cache::CacheUse;
use super::error::{self, AnthropicFaults};
use super::request::{self, MessagesRequest};
use super::thinking::{self, Thinking};
use super::{response, stream};
use crate::SimState;
use crate::body::SimBody;
use crate::conn::ConnControl;
use crate::exchange;
use crate::reply::{self, Answer, Finish, Prompt, Reply};
use crate::tokens::{Reported, count_words};

/// The prefix of every message id.
pub(super) const ID_PREFIX: &str = "msg_sim_";
/// The prefix of every `tool_use` block id.
pub(super) const TOOL_PREFIX: &str = "toolu_sim_";

/// Everything a response writes: the message id, the model and the decided answer.
#[derive(Debug)]
pub(super) struct Outcome<'a> {
    /// Number of the id `msg_sim_<n>`.
    pub(super) id: u64,
    /// The requested model, echoed as is.
    pub(super) model: &'a str,
    /// The answer and its usage.
    pub(super) reply: Reply<'a>,
    /// `end_turn`, `max_tokens`, `tool_use` or `stop_sequence`.
    pub(super) stop_reason: &'static str,
    /// The stop sequence that ended the text, if one did.
    pub(super) stop_sequence: Option<&'a str>,
    /// The usage fields to report instead of the real ones.
    pub(super) report: Reported,
    /// Prompt tokens written to the prompt cache (a part of the prompt, apart from `cached`).
    pub(super) cache_write: u64,
    /// The thinking block that opens the answer, when thinking is on.
    pub(super) thinking: Option<Thinking>,
}

impl Outcome<'_> {
    /// The final `output_tokens`: the real completion tokens, or `report_completion=N`.
    pub(super) fn output_tokens(&self) -> u64 {
        self.report.completion.unwrap_or(self.reply.usage.completion)
    }
}

/// The only `anthropic_version` Vertex AI accepts in a Claude body.
const VERTEX_VERSION: &str = "vertex-2023-10-16";

/// Handles one Messages request.
pub(crate) async fn handle(request: Request<Incoming>, state: &SimState, control: &ConnControl) -> Response<SimBody> {
    if !error::is_authenticated(request.headers()) {
        return error::authentication();
    }
    answer(request, state, control, None).await
}

/// Handles Claude's `rawPredict` / `streamRawPredict` on Vertex AI (the caller checked the
/// token): the model comes from the path, and the body must carry `anthropic_version`
/// `vertex-2023-10-16` (a 400 otherwise, as Vertex answers); the rest is the Messages API's.
pub(crate) async fn vertex(
    request: Request<Incoming>,
    state: &SimState,
    control: &ConnControl,
    model: &str,
) -> Response<SimBody> {
    answer(request, state, control, Some(model)).await
}

/// Answers a Messages body; `vertex_model` is the model a Vertex AI path names.
async fn answer(
    request: Request<Incoming>,
    state: &SimState,
    control: &ConnControl,
    vertex_model: Option<&str>,
) -> Response<SimBody> {
    let mut directives = exchange::header_directives(request.headers());
    let Some(body) = exchange::read_body(request.into_body()).await else {
        return error::invalid_request("The request body could not be read or is too large.");
    };
    let parsed: MessagesRequest<'_> = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(err) => return error::bad_body(&err),
    };
    let model = match vertex_model {
        Some(model) => match parsed.anthropic_version.as_deref() {
            Some(VERTEX_VERSION) => model,
            Some(other) => {
                return error::invalid_request(&format!(
                    "anthropic_version: {other:?} is not supported; use \"{VERTEX_VERSION}\""
                ));
            }
            None => return error::invalid_request("anthropic_version: Field required"),
        },
        None => match parsed.model.as_deref() {
            Some(model) => model,
            None => return error::invalid_request("model: Field required"),
        },
    };
    let Some(messages) = parsed.messages.as_deref() else {
        return error::invalid_request("messages: Field required");
    };
    let Some(max_tokens) = parsed.max_tokens else {
        return error::invalid_request("max_tokens: Field required");
    };
    let Some(summary) = request::summarise(parsed.system.as_ref(), messages) else {
        return error::invalid_request("messages: at least one message is required");
    };
    let streamed = parsed.stream.unwrap_or(false);
    directives.apply_text(&summary.last_user_text);
    if let Some(fault) = directives.fault() {
        return exchange::inject(fault, control, &AnthropicFaults { stream: streamed }).await;
    }

    let thinking = match parsed.thinks().then(|| thinking::think(messages)).transpose() {
        Ok(thinking) => thinking,
        Err(message) => return error::invalid_request(&message),
    };
    let id = state.next_id();
    let prompt = Prompt {
        model,
        message_tokens: summary.tokens,
        last_turn: summary.last_turn,
        last_user_text: &summary.last_user_text,
        tool_result: &summary.tool_result,
        tools: parsed.tool_names(),
        tool_choice: parsed.tool_choice(),
        parallel_tool_calls: parsed.parallel_tool_use(),
        json: parsed.wants_json(),
        cap: Some(max_tokens),
    };
    let mut reply = reply::answer(&prompt, &directives, || state.next_id());
    let cache = state.prompt_cache.lookup(model, parsed.system.as_ref(), messages);
    let cache_write = apply_cache(&mut reply, cache);
    if let Some(thinking) = &thinking {
        reply.usage.completion = reply.usage.completion.saturating_add(thinking.tokens());
    }
    let stop_sequence = apply_stop_sequences(&mut reply, parsed.stop_sequences.as_deref().unwrap_or(&[]));
    let stop_reason = match (stop_sequence, reply.finish) {
        (Some(_), _) => "stop_sequence",
        (None, Finish::Stop) => "end_turn",
        (None, Finish::Length) => "max_tokens",
        (None, Finish::ToolCalls) => "tool_use",
    };
    let outcome = Outcome {
        id,
        model,
        reply,
        stop_reason,
        stop_sequence,
        report: directives.report,
        cache_write,
        thinking,
    };
    let pacing = directives.pacing(&state.config);
    if streamed {
        stream::response(&outcome, pacing, directives.cut)
    } else {
        exchange::pause(pacing.total(outcome.reply.visible_tokens)).await;
        response::response(&outcome)
    }
}

/// Puts the prompt cache's reads in `cached` (unless `cached=N` said more); returns the tokens
/// written, at most what the reads leave of the prompt.
fn apply_cache(reply: &mut Reply<'_>, cache: CacheUse) -> u64 {
    let usage = &mut reply.usage;
    usage.cached = usage.cached.max(cache.read.min(usage.prompt));
    cache.written.min(usage.prompt - usage.cached)
}

/// Ends a text reply before the first of `sequences` it contains, fixing its usage; returns the
/// sequence that matched.
fn apply_stop_sequences<'s>(reply: &mut Reply<'_>, sequences: &'s [Cow<'_, str>]) -> Option<&'s str> {
    let Answer::Text(text) = &mut reply.answer else {
        return None;
    };
    let (at, sequence) = sequences
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(&**s).map(|at| (at, &**s)))
        .min_by_key(|(at, _)| *at)?;
    text.truncate(text[..at].trim_end().len());
    let visible = count_words(text);
    reply.usage.completion = reply.usage.completion - reply.visible_tokens + visible;
    reply.visible_tokens = visible;
    Some(sequence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Finish;
    use crate::tokens::Usage;

    #[test]
    fn stop_sequences_cut_the_text_and_its_usage() {
        let mut reply = Reply {
            answer: Answer::Text("one two three four".into()),
            finish: Finish::Stop,
            usage: Usage::new(9, 4, None, Some(2)),
            visible_tokens: 4,
        };
        let sequences = [Cow::Borrowed("four"), Cow::Borrowed("thr")];
        assert_eq!(apply_stop_sequences(&mut reply, &sequences), Some("thr"));
        assert_eq!(reply.answer, Answer::Text("one two".into()));
        assert_eq!((reply.visible_tokens, reply.usage.completion), (2, 4));
        assert_eq!(apply_stop_sequences(&mut reply, &[Cow::Borrowed("zzz")]), None);
    }
}
