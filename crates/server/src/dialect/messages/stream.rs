//! A streamed chat answer, rewritten into Anthropic's event sequence: `message_start`, then per
//! content block `content_block_start` / `content_block_delta`s / `content_block_stop`, then
//! `message_delta` (stop reason and usage, with the exact `cost`) and `message_stop`. A chat
//! error event becomes `event: error`; a stream that ends without `[DONE]` and without an error
//! gets one.
//!
//! The chat stream reports usage only at its end, so `message_start` carries
//! `input_tokens: 0`; the real counts come in `message_delta`, whose usage Anthropic's SDKs
//! take as cumulative totals (they overwrite `message_start`'s).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::error::anthropic_error;
use super::response::{ChatUsage, message_id, stop_reason};
use crate::dialect::StreamEncoder;

/// One chat event's data, as far as it is read.
#[derive(Debug, Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Vec<ChunkChoice<'a>>,
    #[serde(default, borrow)]
    usage: Option<ChatUsage<'a>>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    /// The Anthropic adapter's extension: the stop sequence that ended the answer.
    #[serde(default, borrow)]
    stop_sequence: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    /// The Anthropic adapter's extension: the signature closing a thinking block.
    #[serde(default, borrow)]
    reasoning_signature: Option<Cow<'a, str>>,
    /// The Anthropic adapter's extension: a `redacted_thinking` block's data.
    #[serde(default, borrow)]
    redacted_thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Debug, Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: usize,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Debug, Deserialize)]
struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// The kind of the open content block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// A tool call: its chat index.
    Tool(usize),
}

/// Encodes one stream.
#[derive(Debug, Default)]
pub(super) struct Encoder {
    started: bool,
    /// The open block and its index.
    open: Option<(Open, usize)>,
    /// Blocks started so far.
    blocks: usize,
    /// Chat tool index → block index.
    tools: Vec<(usize, usize)>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<String>,
    /// The `message_delta` usage, written when the usage chunk came.
    usage: Option<String>,
    /// `message_stop` (or an error) was sent: nothing more goes out.
    ended: bool,
}

/// `event: <type>\ndata: <json>\n\n`.
fn event(out: &mut Vec<u8>, kind: &str, data: &serde_json::Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // A `Value` always serializes.
    out.extend_from_slice(&serde_json::to_vec(data).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

impl Encoder {
    fn start(&mut self, chunk: &Chunk<'_>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = message_id(chunk.id.as_deref().unwrap_or("stream"));
        let message = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": chunk.model.as_deref().unwrap_or_default(),
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    /// Opens a block of `kind` (closing the open one) unless it is the open one; its index.
    fn open(&mut self, kind: Open, block: serde_json::Value, out: &mut Vec<u8>) -> usize {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some((kind, index));
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    fn delta(out: &mut Vec<u8>, index: usize, delta: serde_json::Value) {
        event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    fn choice(&mut self, choice: &ChunkChoice<'_>, out: &mut Vec<u8>) {
        if let Some(delta) = &choice.delta {
            self.content(delta, out);
        }
        if let Some(reason) = choice.finish_reason.as_deref() {
            let sequence = choice.stop_sequence.as_deref();
            self.stop_reason = Some(stop_reason(Some(reason), sequence));
            self.stop_sequence = sequence.map(str::to_owned);
        }
    }

    fn content(&mut self, delta: &Delta<'_>, out: &mut Vec<u8>) {
        if let Some(data) = delta.redacted_thinking.as_deref() {
            self.close(out);
            let index = self.blocks;
            self.blocks += 1;
            let block = json!({"type": "redacted_thinking", "data": data});
            event(
                out,
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": block}),
            );
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
        if let Some(thinking) = delta.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
            let block = json!({"type": "thinking", "thinking": "", "signature": ""});
            let index = self.open(Open::Thinking, block, out);
            Self::delta(out, index, json!({"type": "thinking_delta", "thinking": thinking}));
        }
        if let Some(signature) = delta.reasoning_signature.as_deref() {
            let block = json!({"type": "thinking", "thinking": "", "signature": ""});
            let index = self.open(Open::Thinking, block, out);
            Self::delta(out, index, json!({"type": "signature_delta", "signature": signature}));
            // A signature ends its block: more reasoning is another block.
            self.close(out);
        }
        if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
            let index = self.open(Open::Text, json!({"type": "text", "text": ""}), out);
            Self::delta(out, index, json!({"type": "text_delta", "text": text}));
        }
        for call in delta.tool_calls.iter().flatten() {
            self.tool_call(call, out);
        }
    }

    fn tool_call(&mut self, call: &ToolCallDelta<'_>, out: &mut Vec<u8>) {
        let known = self.tools.iter().find(|(t, _)| *t == call.index).map(|(_, b)| *b);
        let index = match (known, &call.id) {
            (Some(index), _) => index,
            (None, id) => {
                let name = call
                    .function
                    .as_ref()
                    .and_then(|f| f.name.as_deref())
                    .unwrap_or_default();
                let block = json!({
                    "type": "tool_use",
                    "id": id.as_deref().unwrap_or_default(),
                    "name": name,
                    "input": {},
                });
                let index = self.open(Open::Tool(call.index), block, out);
                self.tools.push((call.index, index));
                index
            }
        };
        if let Some(arguments) = call
            .function
            .as_ref()
            .and_then(|f| f.arguments.as_deref())
            .filter(|a| !a.is_empty())
        {
            Self::delta(
                out,
                index,
                json!({"type": "input_json_delta", "partial_json": arguments}),
            );
        }
    }

    fn done(&mut self, out: &mut Vec<u8>) {
        self.close(out);
        let delta = json!({"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": self.stop_sequence});
        // Written as text: the usage holds the cost's exact decimal text.
        let usage = self.usage.as_deref().unwrap_or(r#"{"output_tokens":0}"#);
        out.extend_from_slice(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":");
        out.extend_from_slice(delta.to_string().as_bytes());
        out.extend_from_slice(b",\"usage\":");
        out.extend_from_slice(usage.as_bytes());
        out.extend_from_slice(b"}\n\n");
        event(out, "message_stop", &json!({"type": "message_stop"}));
        self.ended = true;
    }

    fn error(&mut self, error: &[u8], out: &mut Vec<u8>) {
        let body = anthropic_error(http::StatusCode::INTERNAL_SERVER_ERROR, error);
        out.extend_from_slice(b"event: error\ndata: ");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        self.ended = true;
    }
}

impl StreamEncoder for Encoder {
    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if data == b"[DONE]" {
            if !self.started {
                self.start(&Chunk::empty(), out);
            }
            self.done(out);
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
            return self.error(
                br#"{"error":{"message":"The stream could not be read.","type":"api_error"}}"#,
                out,
            );
        };
        if chunk.error.is_some() {
            return self.error(data, out);
        }
        self.start(&chunk, out);
        for choice in &chunk.choices {
            self.choice(choice, out);
        }
        if let Some(usage) = &chunk.usage {
            // The cost is kept as its exact text: a `Value` would hold it as an f64.
            self.usage = serde_json::to_string(&usage.messages()).ok();
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.ended {
            self.error(
                br#"{"error":{"message":"The stream ended before the answer was complete.","type":"api_error"}}"#,
                out,
            );
        }
    }
}

impl Chunk<'_> {
    fn empty() -> Chunk<'static> {
        Chunk {
            id: None,
            model: None,
            choices: Vec::new(),
            usage: None,
            error: None,
        }
    }
}
