//! The streamed answer: Anthropic's server-sent events, each `event: <type>\ndata: <json>\n\n`,
//! written by hand into one paced buffer (see [`crate::body`]).
//!
//! Order of events: `message_start` (the message with empty content, `stop_reason` null and usage
//! with the input and cache tokens and `output_tokens` 1), sent at once; then per content block
//! `content_block_start` (the first after `ttft`, followed by one `ping`), its deltas `tpot` apart
//! (`text_delta` per word, each but the first with a leading space; `input_json_delta` fragments
//! of a tool input) and `content_block_stop`; then `message_delta` with the stop reason and the
//! final `output_tokens`, and `message_stop`. With `cut=N`, the stream stops after N deltas and
//! the connection is dropped: no `message_delta`, no `message_stop`.

use std::time::Duration;

use http::Response;

use super::messages::{ID_PREFIX, Outcome};
use super::response::{push_stop_sequence, push_usage, tool_use_block};
use super::thinking::Thinking;
use crate::body::{PacedBuilder, SimBody};
use crate::directives::Pacing;
use crate::exchange;
use crate::json::{push_str, push_u64};
use crate::reply::{Answer, ToolCall, fragments};

/// Characters per streamed fragment of a tool input.
const INPUT_FRAGMENT_CHARS: usize = 8;

/// A streamed response for `outcome`.
pub(super) fn response(outcome: &Outcome<'_>, pacing: Pacing, cut: Option<u64>) -> Response<SimBody> {
    let mut events = Events {
        out: PacedBuilder::with_capacity(estimate(outcome)),
        sent: 0,
        cut,
        pending: pacing.ttft,
        pinged: false,
    };
    events.event(Duration::ZERO, "message_start", |buf| message_start(buf, outcome));
    let first = usize::from(outcome.thinking.is_some());
    let thought = outcome.thinking.as_ref().is_none_or(|t| events.thinking(t));
    let complete = thought
        && match &outcome.reply.answer {
            Answer::Text(text) => events.text(text, pacing.tpot, first),
            Answer::ToolCalls(calls) => events.tool_uses(calls, pacing.tpot, first),
        };
    if !complete || cut.is_some() {
        return exchange::event_stream(events.out.finish(true));
    }
    events.event(Duration::ZERO, "message_delta", |buf| {
        buf.extend_from_slice(br#"{"type":"message_delta","delta":{"stop_reason":"#);
        push_str(buf, outcome.stop_reason);
        buf.extend_from_slice(br#","stop_sequence":"#);
        push_stop_sequence(buf, outcome.stop_sequence);
        buf.extend_from_slice(br#"},"usage":{"output_tokens":"#);
        push_u64(buf, outcome.output_tokens());
        buf.extend_from_slice(b"}}");
    });
    events.event(Duration::ZERO, "message_stop", |buf| {
        buf.extend_from_slice(br#"{"type":"message_stop"}"#);
    });
    exchange::event_stream(events.out.finish(false))
}

/// A rough size of the whole stream, so the buffer is allocated once.
fn estimate(outcome: &Outcome<'_>) -> usize {
    const PER_EVENT: usize = 120;
    let events = usize::try_from(outcome.reply.visible_tokens).unwrap_or(usize::MAX);
    events
        .saturating_add(8)
        .saturating_mul(PER_EVENT)
        .saturating_add(outcome.model.len())
}

fn message_start(buf: &mut Vec<u8>, outcome: &Outcome<'_>) {
    buf.extend_from_slice(br#"{"type":"message_start","message":{"id":""#);
    buf.extend_from_slice(ID_PREFIX.as_bytes());
    push_u64(buf, outcome.id);
    buf.extend_from_slice(br#"","type":"message","role":"assistant","model":"#);
    push_str(buf, outcome.model);
    buf.extend_from_slice(br#","content":[],"stop_reason":null,"stop_sequence":null,"usage":"#);
    push_usage(buf, outcome, 1);
    buf.extend_from_slice(b"}}");
}

/// The stream being written, counting deltas for `cut`.
struct Events {
    out: PacedBuilder,
    sent: u64,
    cut: Option<u64>,
    /// The wait before the first content block (`ttft`), zero once spent.
    pending: Duration,
    pinged: bool,
}

impl Events {
    /// Adds `event: <name>` with the data `write` appends.
    fn event(&mut self, delay: Duration, name: &str, write: impl FnOnce(&mut Vec<u8>)) {
        self.out.segment(delay, |buf| {
            buf.extend_from_slice(b"event: ");
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b"\ndata: ");
            write(buf);
            buf.extend_from_slice(b"\n\n");
        });
    }

    /// `content_block_start` for block `index` (after `ttft` if it is the first), then one `ping`.
    fn block_start(&mut self, delay: Duration, index: usize, block: impl FnOnce(&mut Vec<u8>)) {
        let delay = delay.max(std::mem::take(&mut self.pending));
        self.event(delay, "content_block_start", |buf| {
            buf.extend_from_slice(br#"{"type":"content_block_start","index":"#);
            push_u64(buf, index as u64);
            buf.extend_from_slice(br#","content_block":"#);
            block(buf);
            buf.push(b'}');
        });
        if !self.pinged {
            self.pinged = true;
            self.event(Duration::ZERO, "ping", |buf| {
                buf.extend_from_slice(br#"{"type":"ping"}"#)
            });
        }
    }

    fn block_stop(&mut self, index: usize) {
        self.event(Duration::ZERO, "content_block_stop", |buf| {
            buf.extend_from_slice(br#"{"type":"content_block_stop","index":"#);
            push_u64(buf, index as u64);
            buf.push(b'}');
        });
    }

    /// Adds one `content_block_delta` unless `cut` says the stream ends before it; false once cut.
    fn delta(&mut self, delay: Duration, index: usize, delta: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.cut.is_some_and(|cut| self.sent >= cut) {
            return false;
        }
        self.sent += 1;
        self.event(delay, "content_block_delta", |buf| {
            buf.extend_from_slice(br#"{"type":"content_block_delta","index":"#);
            push_u64(buf, index as u64);
            buf.extend_from_slice(br#","delta":"#);
            delta(buf);
            buf.push(b'}');
        });
        true
    }

    /// The thinking block (index 0): its text in one `thinking_delta`, then its
    /// `signature_delta`; false if cut.
    fn thinking(&mut self, thinking: &Thinking) -> bool {
        self.block_start(Duration::ZERO, 0, |buf| {
            buf.extend_from_slice(br#"{"type":"thinking","thinking":"","signature":""}"#)
        });
        let written = self.delta(Duration::ZERO, 0, |buf| {
            buf.extend_from_slice(br#"{"type":"thinking_delta","thinking":"#);
            push_str(buf, &thinking.text);
            buf.push(b'}');
        }) && self.delta(Duration::ZERO, 0, |buf| {
            buf.extend_from_slice(br#"{"type":"signature_delta","signature":"#);
            push_str(buf, &thinking.signature);
            buf.push(b'}');
        });
        if written {
            self.block_stop(0);
        }
        written
    }

    /// One text block (at `index`), one `text_delta` per word of `text` (single-space
    /// separated); false if cut.
    fn text(&mut self, text: &str, tpot: Duration, index: usize) -> bool {
        self.block_start(Duration::ZERO, index, |buf| {
            buf.extend_from_slice(br#"{"type":"text","text":""}"#)
        });
        let mut start = 0;
        while start < text.len() {
            let end = text[start..].find(' ').map_or(text.len(), |i| start + i);
            // Each word after the first carries the space before it.
            let (piece, delay) = if start == 0 {
                (&text[..end], Duration::ZERO)
            } else {
                (&text[start - 1..end], tpot)
            };
            let written = self.delta(delay, index, |buf| {
                buf.extend_from_slice(br#"{"type":"text_delta","text":"#);
                push_str(buf, piece);
                buf.push(b'}');
            });
            if !written {
                return false;
            }
            start = end + 1;
        }
        self.block_stop(index);
        true
    }

    /// One `tool_use` block per call, its input streamed as `input_json_delta` fragments; false
    /// if cut short.
    fn tool_uses(&mut self, calls: &[ToolCall<'_>], tpot: Duration, first: usize) -> bool {
        for (n, call) in calls.iter().enumerate() {
            let index = first + n;
            let delay = if n == 0 { Duration::ZERO } else { tpot };
            self.block_start(delay, index, |buf| tool_use_block(buf, call, "{}"));
            for fragment in fragments(&call.arguments, INPUT_FRAGMENT_CHARS) {
                let written = self.delta(tpot, index, |buf| {
                    buf.extend_from_slice(br#"{"type":"input_json_delta","partial_json":"#);
                    push_str(buf, fragment);
                    buf.push(b'}');
                });
                if !written {
                    return false;
                }
            }
            self.block_stop(index);
        }
        true
    }
}
