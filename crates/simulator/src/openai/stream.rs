//! The streamed answer: `chat.completion.chunk` events over SSE, written by hand into one paced
//! buffer (see [`crate::body`]).
//!
//! Order of events, for each choice in turn (`"index": i` in every chunk of choice i): a role
//! chunk (`{"role":"assistant","content":""}`, after `ttft` for the first choice); one chunk per
//! word (each but the first with a leading space), or for tool calls a header chunk per call
//! (index, id, type, name, empty arguments) followed by argument fragments, `tpot` apart; a chunk
//! with an empty delta and the choice's finish reason. Then, with `include_usage`, a chunk with
//! `"choices":[]` and the usage of all choices (every other chunk then carries `"usage":null`);
//! then `data: [DONE]`. With `cut=N`, the stream stops after N content chunks (counted over all
//! choices, or all of them if fewer), no choice gets its finish chunk, and the connection is
//! dropped; with `keepalive`, it opens with an SSE comment line (`: keep-alive`); with
//! `endless_event`, the first role chunk is followed by [`ENDLESS_EVENT_BYTES`] of one content
//! event that never ends, then the connection is dropped.

use std::time::Duration;

use http::Response;

use super::chat::{CALL_PREFIX, Choices, FINGERPRINT, ID_PREFIX, Meta};
use super::completion::{WireUsage, finish_reason};
use crate::body::{PacedBuilder, SimBody};
use crate::directives::{Directives, Pacing};
use crate::exchange;
use crate::json::{push_str, push_u64};
use crate::reply::{Answer, ToolCall, fragments};

/// Characters per streamed fragment of tool-call arguments.
const ARGUMENT_FRAGMENT_CHARS: usize = 8;

/// The delta of the first chunk of each choice.
const ROLE_DELTA: &[u8] = br#"{"role":"assistant","content":"","refusal":null}"#;

/// The size of the `endless_event` (above the gateway's 4 MiB limit on one event).
const ENDLESS_EVENT_BYTES: usize = 6 * 1024 * 1024;

/// A streamed response for `choices`.
pub(super) fn response(
    meta: &Meta<'_>,
    choices: &Choices<'_>,
    include_usage: bool,
    pacing: Pacing,
    directives: &Directives,
) -> Response<SimBody> {
    let cut = directives.cut;
    let writer = ChunkWriter::new(meta, include_usage);
    let mut events = Events {
        out: PacedBuilder::with_capacity(estimate(choices)),
        writer: &writer,
        choice: 0,
        sent: 0,
        cut,
    };
    if directives.keepalive {
        events
            .out
            .segment(Duration::ZERO, |buf| buf.extend_from_slice(b": keep-alive\n\n"));
    }
    for (index, reply) in choices.replies.iter().enumerate() {
        events.choice = index;
        let delay = if index == 0 { pacing.ttft } else { Duration::ZERO };
        events.chunk(delay, ROLE_DELTA, None);
        if directives.endless_event {
            events.out.segment(Duration::ZERO, |buf| {
                buf.extend_from_slice(br#"data: {"choices":[{"index":0,"delta":{"content":""#);
                buf.resize(buf.len() + ENDLESS_EVENT_BYTES, b'x');
            });
            return exchange::event_stream(events.out.finish(true));
        }
        let complete = match &reply.answer {
            Answer::Text(text) => events.words(text, pacing.tpot),
            Answer::ToolCalls(calls) => events.tool_calls(calls, pacing.tpot),
        };
        if !complete {
            return exchange::event_stream(events.out.finish(true));
        }
        if cut.is_none() {
            events.chunk(Duration::ZERO, b"{}", Some(finish_reason(reply.finish)));
        }
    }
    if cut.is_some() {
        return exchange::event_stream(events.out.finish(true));
    }
    if include_usage {
        let usage = WireUsage::from(choices.usage);
        events.out.segment(Duration::ZERO, |buf| writer.usage(buf, &usage));
    }
    events
        .out
        .segment(Duration::ZERO, |buf| buf.extend_from_slice(b"data: [DONE]\n\n"));
    exchange::event_stream(events.out.finish(false))
}

/// A rough size of the whole stream, so the buffer is allocated once.
fn estimate(choices: &Choices<'_>) -> usize {
    const PER_CHUNK: usize = 240;
    let chunks = usize::try_from(choices.visible_tokens).unwrap_or(usize::MAX);
    let framing = choices.replies.len().saturating_mul(2).saturating_add(2);
    chunks.saturating_add(framing).saturating_mul(PER_CHUNK)
}

/// Writes the parts of a chunk that never change within one stream.
struct ChunkWriter {
    /// `data: {"id":…,"object":…,"created":…,"model":…,…,"choices":[`
    prefix: Vec<u8>,
    /// `]}` plus `"usage":null` when the client asked for usage.
    suffix: &'static [u8],
}

impl ChunkWriter {
    fn new(meta: &Meta<'_>, include_usage: bool) -> Self {
        let mut prefix = Vec::with_capacity(160 + meta.model.len());
        prefix.extend_from_slice(br#"data: {"id":""#);
        prefix.extend_from_slice(ID_PREFIX.as_bytes());
        push_u64(&mut prefix, meta.id);
        prefix.extend_from_slice(br#"","object":"chat.completion.chunk","created":"#);
        push_u64(&mut prefix, meta.created);
        prefix.extend_from_slice(br#","model":"#);
        push_str(&mut prefix, meta.model);
        prefix.extend_from_slice(br#","service_tier":"default","system_fingerprint":"#);
        push_str(&mut prefix, FINGERPRINT);
        prefix.extend_from_slice(br#","choices":["#);
        let suffix: &[u8] = if include_usage {
            b"],\"usage\":null}\n\n"
        } else {
            b"]}\n\n"
        };
        ChunkWriter { prefix, suffix }
    }

    /// One chunk whose only choice, number `index`, has `delta` (written by `delta`) and `finish`.
    fn choice(&self, buf: &mut Vec<u8>, index: usize, delta: impl FnOnce(&mut Vec<u8>), finish: Option<&str>) {
        buf.extend_from_slice(&self.prefix);
        buf.extend_from_slice(br#"{"index":"#);
        push_u64(buf, index as u64);
        buf.extend_from_slice(br#","delta":"#);
        delta(buf);
        buf.extend_from_slice(br#","logprobs":null,"finish_reason":"#);
        match finish {
            Some(reason) => push_str(buf, reason),
            None => buf.extend_from_slice(b"null"),
        }
        buf.push(b'}');
        buf.extend_from_slice(self.suffix);
    }

    /// The final chunk with no choices and the usage.
    fn usage(&self, buf: &mut Vec<u8>, usage: &WireUsage) {
        buf.extend_from_slice(&self.prefix);
        buf.extend_from_slice(br#"],"usage":"#);
        if serde_json::to_writer(&mut *buf, usage).is_err() {
            buf.extend_from_slice(b"null");
        }
        buf.extend_from_slice(b"}\n\n");
    }
}

/// The stream being written, counting content chunks for `cut`.
struct Events<'w> {
    out: PacedBuilder,
    writer: &'w ChunkWriter,
    /// The index of the choice being written.
    choice: usize,
    sent: u64,
    cut: Option<u64>,
}

impl Events<'_> {
    fn chunk(&mut self, delay: Duration, delta: &[u8], finish: Option<&str>) {
        let (writer, choice) = (self.writer, self.choice);
        self.out.segment(delay, |buf| {
            writer.choice(buf, choice, |b| b.extend_from_slice(delta), finish)
        });
    }

    /// Adds one content chunk unless `cut` says the stream ends before it; false once cut.
    fn content(&mut self, delay: Duration, delta: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.cut.is_some_and(|cut| self.sent >= cut) {
            return false;
        }
        self.sent += 1;
        let (writer, choice) = (self.writer, self.choice);
        self.out.segment(delay, |buf| writer.choice(buf, choice, delta, None));
        true
    }

    /// One chunk per word of `text` (single-space separated); false if cut short.
    fn words(&mut self, text: &str, tpot: Duration) -> bool {
        let mut start = 0;
        while start < text.len() {
            let end = text[start..].find(' ').map_or(text.len(), |i| start + i);
            // Each word after the first carries the space before it.
            let piece = if start == 0 {
                &text[..end]
            } else {
                &text[start - 1..end]
            };
            let delay = if start == 0 { Duration::ZERO } else { tpot };
            if !self.content(delay, |buf| content_delta(buf, piece)) {
                return false;
            }
            start = end + 1;
        }
        true
    }

    /// A header chunk per call, then its arguments in fragments; false if cut short.
    fn tool_calls(&mut self, calls: &[ToolCall<'_>], tpot: Duration) -> bool {
        for (index, call) in calls.iter().enumerate() {
            let delay = if index == 0 { Duration::ZERO } else { tpot };
            if !self.content(delay, |buf| call_header_delta(buf, index, call)) {
                return false;
            }
            for fragment in fragments(&call.arguments, ARGUMENT_FRAGMENT_CHARS) {
                if !self.content(tpot, |buf| call_fragment_delta(buf, index, fragment)) {
                    return false;
                }
            }
        }
        true
    }
}

fn content_delta(buf: &mut Vec<u8>, piece: &str) {
    buf.extend_from_slice(br#"{"content":"#);
    push_str(buf, piece);
    buf.push(b'}');
}

fn call_header_delta(buf: &mut Vec<u8>, index: usize, call: &ToolCall<'_>) {
    buf.extend_from_slice(br#"{"tool_calls":[{"index":"#);
    push_u64(buf, index as u64);
    buf.extend_from_slice(br#","id":""#);
    buf.extend_from_slice(CALL_PREFIX.as_bytes());
    push_u64(buf, call.id);
    buf.extend_from_slice(br#"","type":"function","function":{"name":"#);
    push_str(buf, call.name);
    buf.extend_from_slice(br#","arguments":""}}]}"#);
}

fn call_fragment_delta(buf: &mut Vec<u8>, index: usize, fragment: &str) {
    buf.extend_from_slice(br#"{"tool_calls":[{"index":"#);
    push_u64(buf, index as u64);
    buf.extend_from_slice(br#","function":{"arguments":"#);
    push_str(buf, fragment);
    buf.extend_from_slice(b"}}]}");
}
