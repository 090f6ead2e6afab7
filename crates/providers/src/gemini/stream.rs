//! Gemini's `streamGenerateContent?alt=sse` → OpenAI chunks. Each SSE `data:` is one whole
//! `GenerateContentResponse`, parsed once into borrowed structs: text parts become content (or
//! reasoning) chunks, each `functionCall` part one complete tool-call chunk, `finishReason` the
//! final chunk. Gemini sends no `[DONE]`: the finish event is what marks the answer complete.

use bytes::Bytes;

use super::response::{call_id, finish_reason, parse, response_id, usage};
use super::{error_from, status_of};
use crate::openai::wire::{ChunkHead, Delta, ToolCallDelta, error_event};
use crate::provider::{Decoded, ReadContext, StreamDecoder};

/// Decodes one streamed answer.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// The upstream model id, for when events name none.
    upstream_id: String,
    /// Unix seconds of the request.
    created: u64,
    /// Set by the first event.
    head: Option<ChunkHead>,
    /// Function calls sent so far (the next call's index).
    calls: usize,
    /// A finish reason was sent: later events may only update usage.
    finished: bool,
    /// Gemini's `responseId`, once an event has carried one.
    response_id: Option<String>,
}

impl Decoder {
    pub(crate) fn new(context: ReadContext<'_>) -> Decoder {
        Decoder {
            upstream_id: context.upstream_id.to_owned(),
            created: context.created,
            head: None,
            calls: 0,
            finished: false,
            response_id: None,
        }
    }
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, _event: &Bytes, data: Bytes, out: &mut Vec<Bytes>) -> Decoded {
        let Some(event) = parse(&data) else {
            return Decoded {
                malformed: true,
                ..Decoded::default()
            };
        };
        if let Some(error) = &event.error {
            out.push(error_event(&error_from(
                status_of(error, error.code.unwrap_or(500)),
                error.message.as_deref(),
            )));
            return Decoded {
                error: true,
                ..Decoded::default()
            };
        }
        if self.response_id.is_none() {
            self.response_id = event
                .response_id
                .as_deref()
                .filter(|id| !id.is_empty())
                .map(str::to_owned);
        }
        let head = match &mut self.head {
            Some(head) => head,
            slot @ None => {
                let head = slot.insert(ChunkHead {
                    id: response_id(&event, self.created),
                    created: self.created,
                    // The served model: Gemini's `modelVersion`, else the id the request named.
                    model: event.model_version.as_deref().unwrap_or(&self.upstream_id).to_owned(),
                });
                out.push(head.chunk(&Delta {
                    role: true,
                    content: Some(""),
                    ..Delta::default()
                }));
                head
            }
        };

        // After the finish chunk nothing but usage may follow: the client's answer is complete.
        let candidate = event
            .candidates
            .as_deref()
            .and_then(<[_]>::first)
            .filter(|_| !self.finished);
        for part in candidate
            .and_then(|c| c.content.as_ref())
            .map_or(&[][..], |c| &c.parts[..])
        {
            if let Some(call) = &part.function_call {
                let id = call_id(call.id.as_deref(), self.calls);
                out.push(head.chunk(&Delta {
                    tool_call: Some(ToolCallDelta {
                        index: self.calls,
                        id: Some(&id),
                        name: Some(&call.name),
                        arguments: Some(call.args.map_or("{}", |a| a.get())),
                    }),
                    ..Delta::default()
                }));
                self.calls += 1;
            } else if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                let delta = if part.thought == Some(true) {
                    Delta {
                        reasoning: Some(text),
                        ..Delta::default()
                    }
                } else {
                    Delta {
                        content: Some(text),
                        ..Delta::default()
                    }
                };
                out.push(head.chunk(&delta));
            }
        }

        let blocked = candidate.is_none()
            && !self.finished
            && event.prompt_feedback.as_ref().is_some_and(|f| f.block_reason.is_some());
        let finish = match candidate.and_then(|c| c.finish_reason.as_deref()) {
            Some(reason) => Some(finish_reason(reason, self.calls > 0)),
            None if blocked => Some("content_filter"),
            None => None,
        };
        if let Some(finish) = finish {
            self.finished = true;
            out.push(head.chunk(&Delta {
                finish_reason: Some(finish),
                ..Delta::default()
            }));
        }
        let usage = event.usage_metadata.as_ref().map(usage);
        Decoded {
            usage,
            held: usage.map(|u| head.usage_chunk(u)),
            done: finish.is_some(),
            ..Decoded::default()
        }
    }

    fn served_model(&self) -> Option<&str> {
        self.head.as_ref().map(|head| head.model.as_str())
    }

    /// Gemini's `responseId` (never the id made up when it sent none).
    fn upstream_response_id(&self) -> Option<&str> {
        self.response_id.as_deref()
    }
}
