//! The non-streamed `message` object, and the `usage` object both shapes share, written by hand
//! into one buffer (tool inputs are already JSON text).

use http::{Response, StatusCode};

use super::messages::{ID_PREFIX, Outcome, TOOL_PREFIX};
use crate::body::SimBody;
use crate::exchange;
use crate::json::{push_str, push_u64};
use crate::reply::{Answer, ToolCall};
use crate::tokens::{Reported, Usage};

/// A `message` response for `outcome`.
pub(super) fn response(outcome: &Outcome<'_>) -> Response<SimBody> {
    let mut buf = Vec::with_capacity(400 + outcome.model.len());
    buf.extend_from_slice(br#"{"id":""#);
    buf.extend_from_slice(ID_PREFIX.as_bytes());
    push_u64(&mut buf, outcome.id);
    buf.extend_from_slice(br#"","type":"message","role":"assistant","model":"#);
    push_str(&mut buf, outcome.model);
    buf.extend_from_slice(br#","content":["#);
    if let Some(thinking) = &outcome.thinking {
        thinking_block(&mut buf, &thinking.text, &thinking.signature);
        buf.push(b',');
    }
    match &outcome.reply.answer {
        Answer::Text(text) => text_block(&mut buf, text),
        Answer::ToolCalls(calls) => {
            for (i, call) in calls.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                tool_use_block(&mut buf, call, &call.arguments);
            }
        }
    }
    buf.extend_from_slice(br#"],"stop_reason":"#);
    push_str(&mut buf, outcome.stop_reason);
    buf.extend_from_slice(br#","stop_sequence":"#);
    push_stop_sequence(&mut buf, outcome.stop_sequence);
    buf.extend_from_slice(br#","usage":"#);
    push_usage(&mut buf, outcome, outcome.output_tokens());
    buf.push(b'}');
    exchange::json(StatusCode::OK, buf)
}

/// `{"type":"thinking","thinking":<text>,"signature":<signature>}`.
pub(super) fn thinking_block(buf: &mut Vec<u8>, text: &str, signature: &str) {
    buf.extend_from_slice(br#"{"type":"thinking","thinking":"#);
    push_str(buf, text);
    buf.extend_from_slice(br#","signature":"#);
    push_str(buf, signature);
    buf.push(b'}');
}

/// `{"type":"text","text":<text>}`.
pub(super) fn text_block(buf: &mut Vec<u8>, text: &str) {
    buf.extend_from_slice(br#"{"type":"text","text":"#);
    push_str(buf, text);
    buf.push(b'}');
}

/// `{"type":"tool_use","id":..,"name":..,"input":<input>}`; `input` is JSON text.
pub(super) fn tool_use_block(buf: &mut Vec<u8>, call: &ToolCall<'_>, input: &str) {
    buf.extend_from_slice(br#"{"type":"tool_use","id":""#);
    buf.extend_from_slice(TOOL_PREFIX.as_bytes());
    push_u64(buf, call.id);
    buf.extend_from_slice(br#"","name":"#);
    push_str(buf, call.name);
    buf.extend_from_slice(br#","input":"#);
    buf.extend_from_slice(input.as_bytes());
    buf.push(b'}');
}

/// The stop sequence as a JSON string, or `null`.
pub(super) fn push_stop_sequence(buf: &mut Vec<u8>, sequence: Option<&str>) {
    match sequence {
        Some(sequence) => push_str(buf, sequence),
        None => buf.extend_from_slice(b"null"),
    }
}

/// Anthropic's `usage` object with `output` output tokens. `input_tokens` excludes the tokens
/// read from and written to the cache, which Anthropic reports apart in
/// `cache_read_input_tokens` and `cache_creation_input_tokens`; `report_prompt` and
/// `report_cached` replace the input and the reads as they are written.
pub(super) fn push_usage(buf: &mut Vec<u8>, outcome: &Outcome<'_>, output: u64) {
    let (usage, report): (&Usage, &Reported) = (&outcome.reply.usage, &outcome.report);
    let plain = usage
        .prompt
        .saturating_sub(usage.cached)
        .saturating_sub(outcome.cache_write);
    buf.extend_from_slice(br#"{"input_tokens":"#);
    push_u64(buf, report.prompt.unwrap_or(plain));
    buf.extend_from_slice(br#","cache_creation_input_tokens":"#);
    push_u64(buf, outcome.cache_write);
    buf.extend_from_slice(br#","cache_read_input_tokens":"#);
    push_u64(buf, report.cached.unwrap_or(usage.cached));
    buf.extend_from_slice(br#","output_tokens":"#);
    push_u64(buf, output);
    buf.push(b'}');
}
