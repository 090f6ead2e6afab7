//! `POST /v1/chat/completions`: auth, parsing, directives, then a plain or streamed answer.

use http::{Request, Response};
use hyper::body::Incoming;

use super::error::{self, OpenAiFaults};
use super::request::{ChatRequest, Messages};
use super::{completion, stream};
use crate::SimState;
use crate::body::SimBody;
use crate::conn::ConnControl;
use crate::exchange;
use crate::lenient;
use crate::reply::{self, Prompt, Turn};

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
    let reply = reply::answer(&prompt, &directives, || state.next_id());
    let pacing = directives.pacing(&state.config);
    if streamed {
        let include_usage = chat
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        stream::response(&meta, &reply, include_usage, pacing, &directives)
    } else {
        exchange::pause(pacing.total(reply.visible_tokens)).await;
        completion::response(&meta, &reply)
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
