//! `models/{model}:generateContent` and `:streamGenerateContent`: parsing, directives, then a
//! whole `GenerateContentResponse` or a stream of them.
//!
//! A streamed answer is one response per word (each but the first with a leading space), or one
//! with all the `functionCall` parts, `tpot` apart after `ttft`; every one carries the usage so far
//! and the last one the `finishReason` and the final usage. With `?alt=sse` each is an SSE
//! `data:` event (there is no `[DONE]`); without, they form one JSON array, as the API streams
//! it. With `cut=N` the stream stops after N of them, none with a finish reason, and the
//! connection is dropped.
//!
//! Besides the shared directives, Gemini understands `safety` (in `x-sim` or `[[sim:...]]`): the
//! answer is blocked, with `finishReason` `SAFETY`, no content and no candidate tokens.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::error::{self, GeminiFaults};
use super::request::GenerateRequest;
use crate::SimState;
use crate::body::{PacedBuilder, SimBody};
use crate::conn::ConnControl;
use crate::directives::Pacing;
use crate::exchange;
use crate::reply::{self, Answer, Finish, Prompt, Reply, ToolCall, Turn};
use crate::tokens::{PER_PROMPT, Reported, Usage};

/// Handles one generate request; `stream` is `None` for `generateContent`, else whether SSE.
pub(crate) async fn handle(
    request: Request<Incoming>,
    state: &SimState,
    control: &ConnControl,
    model: &str,
    stream: Option<bool>,
) -> Response<SimBody> {
    let mut directives = exchange::header_directives(request.headers());
    let mut safety = header_safety(request.headers());
    let Some(body) = exchange::read_body(request.into_body()).await else {
        return error::unreadable_body();
    };
    let parsed: GenerateRequest = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(err) => return error::bad_body(&err),
    };
    if parsed.contents.as_ref().is_none_or(Vec::is_empty) {
        return error::invalid("* GenerateContentRequest.contents: contents is not specified");
    }
    let summary = parsed.summary();
    let Some(last_turn) = summary.last_turn else {
        return error::invalid("* GenerateContentRequest.contents: contents is not specified");
    };
    directives.apply_text(&summary.last_user_text);
    safety = text_safety(&summary.last_user_text).unwrap_or(safety);
    if let Some(fault) = directives.fault() {
        return exchange::inject(fault, control, &GeminiFaults { stream }).await;
    }

    let prompt = Prompt {
        model,
        message_tokens: summary.tokens,
        last_turn,
        last_user_text: &summary.last_user_text,
        tool_result: if last_turn == Turn::Tool {
            &summary.tool_result
        } else {
            ""
        },
        tools: parsed.tool_names(),
        tool_choice: parsed.tool_choice(),
        parallel_tool_calls: true,
        json: parsed.wants_json(),
        cap: parsed.cap(),
    };
    let reply = if safety {
        blocked(&prompt, directives.cached, directives.reasoning)
    } else {
        reply::answer(&prompt, &directives, || state.next_id())
    };
    let meta = Meta {
        id: state.next_id(),
        model,
        safety,
        report: directives.report,
    };
    let pacing = directives.pacing(&state.config);
    match stream {
        Some(sse) => streamed(&meta, &reply, sse, pacing, directives.cut),
        None => {
            exchange::pause(pacing.total(reply.visible_tokens)).await;
            whole(&meta, &reply)
        }
    }
}

/// What every response of one exchange repeats.
struct Meta<'a> {
    /// Number of the id `sim-<n>`.
    id: u64,
    /// The model from the path, echoed as `modelVersion`.
    model: &'a str,
    /// Whether the answer is blocked for safety.
    safety: bool,
    /// The usage fields to report instead of the real ones.
    report: Reported,
}

/// The reply to a prompt blocked by the `safety` directive: no text, only prompt tokens.
fn blocked<'a>(prompt: &Prompt<'_>, cached: Option<u64>, reasoning: Option<u64>) -> Reply<'a> {
    Reply {
        answer: Answer::Text(String::new()),
        finish: Finish::Stop,
        usage: Usage::new(prompt.message_tokens.saturating_add(PER_PROMPT), 0, cached, reasoning),
        visible_tokens: 0,
    }
}

/// The `safety` flag from `x-sim` headers.
fn header_safety(headers: &http::HeaderMap) -> bool {
    headers
        .get_all("x-sim")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(list_safety)
        .next_back()
        .unwrap_or(false)
}

/// The `safety` flag from the `[[sim:...]]` lists of `text`, if any mentions it.
fn text_safety(text: &str) -> Option<bool> {
    const OPEN: &str = "[[sim:";
    let mut found = None;
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find("]]") else { break };
        if let Some(on) = list_safety(&after[..end]) {
            found = Some(on);
        }
        rest = &after[end + 2..];
    }
    found
}

/// The last `safety` item of a `k=v,k=v` list, with the directives' flag rules.
fn list_safety(list: &str) -> Option<bool> {
    list.split(',')
        .filter_map(|item| {
            let (key, value) = match item.split_once('=') {
                Some((key, value)) => (key.trim(), Some(value.trim())),
                None => (item.trim(), None),
            };
            (key == "safety").then_some(!matches!(value, Some("0" | "false" | "no" | "off")))
        })
        .next_back()
}

/// Gemini's name for why an answer ended.
fn finish_reason(meta: &Meta<'_>, finish: Finish) -> &'static str {
    if meta.safety {
        return "SAFETY";
    }
    match finish {
        Finish::Length => "MAX_TOKENS",
        Finish::Stop | Finish::ToolCalls => "STOP",
    }
}

/// A whole `GenerateContentResponse`.
fn whole(meta: &Meta<'_>, reply: &Reply<'_>) -> Response<SimBody> {
    let parts = match parts(&reply.answer) {
        Ok(parts) => parts,
        Err(_) => return error::response(StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed"),
    };
    let body = GenerateResponse::new(
        meta,
        (!meta.safety).then_some(parts),
        Some(finish_reason(meta, reply.finish)),
        reply.usage,
        reply.visible_tokens,
    );
    match serde_json::to_vec(&body) {
        Ok(body) => exchange::json(StatusCode::OK, body),
        Err(_) => error::response(StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed"),
    }
}

/// The parts of a whole answer: one text part, or one `functionCall` part per call.
fn parts<'r>(answer: &'r Answer<'r>) -> Result<Vec<WirePart<'r>>, serde_json::Error> {
    match answer {
        Answer::Text(text) => Ok(vec![WirePart::Text { text }]),
        Answer::ToolCalls(calls) => calls.iter().map(call_part).collect(),
    }
}

fn call_part<'r>(call: &'r ToolCall<'r>) -> Result<WirePart<'r>, serde_json::Error> {
    Ok(WirePart::Call {
        function_call: WireCall {
            name: call.name,
            args: serde_json::from_str(&call.arguments)?,
        },
    })
}

/// The streamed answer, SSE events or one JSON array.
fn streamed(meta: &Meta<'_>, reply: &Reply<'_>, sse: bool, pacing: Pacing, cut: Option<u64>) -> Response<SimBody> {
    let pieces: Vec<Vec<WirePart<'_>>> = match &reply.answer {
        _ if meta.safety => vec![Vec::new()],
        Answer::Text(text) => {
            let words: Vec<_> = words(text).map(|text| vec![WirePart::Text { text }]).collect();
            if words.is_empty() {
                vec![vec![WirePart::Text { text: "" }]]
            } else {
                words
            }
        }
        Answer::ToolCalls(_) => match parts(&reply.answer) {
            Ok(parts) => vec![parts],
            Err(_) => return error::response(StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed"),
        },
    };
    let total = pieces.len();
    let mut out = PacedBuilder::with_capacity(total.saturating_add(1).saturating_mul(320));
    let mut visible = 0u64;
    for (i, parts) in pieces.into_iter().enumerate() {
        if cut.is_some_and(|cut| i as u64 >= cut) {
            break;
        }
        let last = i + 1 == total && cut.is_none();
        visible = if last {
            reply.visible_tokens
        } else {
            visible.saturating_add(parts_tokens(&parts))
        };
        let usage = Usage {
            completion: visible.saturating_add(reply.usage.reasoning),
            ..reply.usage
        };
        let finish = last.then(|| finish_reason(meta, reply.finish));
        let content = (!meta.safety).then_some(parts);
        let chunk = GenerateResponse::new(meta, content, finish, usage, visible);
        let delay = if i == 0 { pacing.ttft } else { pacing.tpot };
        out.segment(delay, |buf| {
            match (sse, i) {
                (true, _) => buf.extend_from_slice(b"data: "),
                (false, 0) => buf.push(b'['),
                (false, _) => buf.extend_from_slice(b",\r\n"),
            }
            if serde_json::to_writer(&mut *buf, &chunk).is_err() {
                buf.extend_from_slice(b"{}");
            }
            if sse {
                buf.extend_from_slice(b"\n\n");
            }
        });
    }
    if cut.is_some() {
        return finish_stream(out.finish(true), sse);
    }
    if !sse {
        out.segment(Duration::ZERO, |buf| buf.push(b']'));
    }
    finish_stream(out.finish(false), sse)
}

fn finish_stream(body: SimBody, sse: bool) -> Response<SimBody> {
    if sse {
        exchange::event_stream(body)
    } else {
        let mut response = exchange::json(StatusCode::OK, Vec::new());
        *response.body_mut() = body;
        response
    }
}

/// Completion tokens of the parts of one streamed response: a word each, or 10 per call.
fn parts_tokens(parts: &[WirePart<'_>]) -> u64 {
    parts
        .iter()
        .map(|p| match p {
            WirePart::Text { text } => u64::from(!text.trim().is_empty()),
            WirePart::Call { .. } => crate::tokens::PER_TOOL_CALL,
        })
        .sum()
}

/// The words of a single-space separated `text`, each but the first with its leading space.
fn words(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let end = text[start..].find(' ').map_or(text.len(), |i| start + i);
        let piece = if start == 0 {
            &text[..end]
        } else {
            &text[start - 1..end]
        };
        start = end + 1;
        Some(piece)
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse<'a> {
    candidates: [Candidate<'a>; 1],
    usage_metadata: UsageMetadata,
    model_version: &'a str,
    response_id: ResponseId,
}

impl<'a> GenerateResponse<'a> {
    fn new(
        meta: &Meta<'a>,
        parts: Option<Vec<WirePart<'a>>>,
        finish: Option<&'static str>,
        usage: Usage,
        visible: u64,
    ) -> Self {
        GenerateResponse {
            candidates: [Candidate {
                content: parts.map(|parts| WireContent { role: "model", parts }),
                finish_reason: finish,
                safety_ratings: (meta.safety && finish.is_some()).then_some(BLOCKED),
                index: 0,
            }],
            usage_metadata: UsageMetadata::new(usage.reported(&meta.report), meta.report.completion.unwrap_or(visible)),
            model_version: meta.model,
            response_id: ResponseId(meta.id),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<WireContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_ratings: Option<&'static [SafetyRating]>,
    index: u32,
}

#[derive(Serialize)]
struct WireContent<'a> {
    role: &'static str,
    parts: Vec<WirePart<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WirePart<'a> {
    Text {
        text: &'a str,
    },
    Call {
        #[serde(rename = "functionCall")]
        function_call: WireCall<'a>,
    },
}

#[derive(Serialize)]
struct WireCall<'a> {
    name: &'a str,
    args: &'a RawValue,
}

#[derive(Serialize)]
struct SafetyRating {
    category: &'static str,
    probability: &'static str,
    blocked: bool,
}

/// The rating of a blocked answer.
const BLOCKED: &[SafetyRating] = &[SafetyRating {
    category: "HARM_CATEGORY_DANGEROUS_CONTENT",
    probability: "HIGH",
    blocked: true,
}];

/// `usageMetadata`: thoughts are not part of the candidates' count but are part of the total
/// (which saturates, should a `report_*` directive make it overflow); cached tokens are part of
/// the prompt's count. Zero cached / thoughts counts are omitted, as the API omits them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    candidates_token_count: u64,
    total_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    cached_content_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    thoughts_token_count: u64,
}

impl UsageMetadata {
    fn new(usage: Usage, visible: u64) -> Self {
        UsageMetadata {
            prompt_token_count: usage.prompt,
            candidates_token_count: visible,
            total_token_count: usage.prompt.saturating_add(visible).saturating_add(usage.reasoning),
            cached_content_token_count: usage.cached,
            thoughts_token_count: usage.reasoning,
        }
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `sim-<n>`, written without an intermediate `String`.
struct ResponseId(u64);

impl Serialize for ResponseId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("sim-{}", self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_flag_from_lists_and_text() {
        assert_eq!(list_safety("cut=2, safety"), Some(true));
        assert_eq!(list_safety("safety=0"), Some(false));
        assert_eq!(list_safety("status=500"), None);
        assert_eq!(text_safety("hi [[sim:safety]] there"), Some(true));
        assert_eq!(text_safety("hi [[sim:safety]] [[sim:safety=off]]"), Some(false));
        assert_eq!(text_safety("hi [[sim:safety"), None);
    }

    #[test]
    fn words_keep_their_spaces() {
        assert_eq!(words("a bc d").collect::<Vec<_>>(), vec!["a", " bc", " d"]);
        assert_eq!(words("").count(), 0);
    }
}
