//! Anthropic's stream, decoded into OpenAI chunks one event at a time. Each event's data is
//! parsed once into borrowed structs; its `type` field says what it is (the `event:` line
//! repeats it and is ignored).

use bytes::Bytes;

use super::vendor_error;
use super::wire::{Counts, EventIn, error_status, finish_reason};
use crate::openai::wire::{ChunkHead, Delta, ToolCallDelta, error_event};
use crate::provider::{Decoded, ReadContext, StreamDecoder};

/// Keeps idle client connections alive while Anthropic pings us.
const PING: &[u8] = b": ping\n\n";

/// Decodes one streamed answer.
#[derive(Debug)]
pub(super) struct Decoder {
    head: ChunkHead,
    /// Set once `message_start` named the model.
    model: Option<String>,
    counts: Counts,
    /// Anthropic block index → OpenAI tool-call index, for the `tool_use` blocks so far.
    tools: Vec<(u64, usize)>,
}

impl Decoder {
    pub(super) fn new(context: ReadContext<'_>) -> Decoder {
        Decoder {
            head: ChunkHead {
                id: String::new(),
                created: context.created,
                model: context.upstream_id.to_owned(),
            },
            model: None,
            counts: Counts::default(),
            tools: Vec::new(),
        }
    }

    fn tool_index(&self, block: Option<u64>) -> Option<usize> {
        let block = block?;
        self.tools.iter().find(|(b, _)| *b == block).map(|(_, t)| *t)
    }

    fn read(&mut self, data: &[u8], out: &mut Vec<Bytes>) -> Decoded {
        let Ok(event) = serde_json::from_slice::<EventIn<'_>>(data) else {
            return Decoded {
                malformed: true,
                ..Decoded::default()
            };
        };
        match &*event.kind {
            "message_start" => {
                let Some(message) = &event.message else {
                    return malformed();
                };
                self.head.id = message.id.to_string();
                self.head.model = message.model.to_string();
                self.model = Some(message.model.to_string());
                if let Some(usage) = &message.usage {
                    self.counts.update(usage);
                }
                out.push(self.head.chunk(&Delta {
                    role: true,
                    content: Some(""),
                    ..Delta::default()
                }));
                return Decoded {
                    usage: Some(self.counts.tokens()),
                    ..Decoded::default()
                };
            }
            "content_block_start" => {
                let Some(block) = &event.content_block else {
                    return malformed();
                };
                match (&*block.kind, &block.text, &block.thinking) {
                    ("text", Some(text), _) if !text.is_empty() => out.push(self.head.chunk(&Delta {
                        content: Some(text),
                        ..Delta::default()
                    })),
                    ("thinking", _, Some(thinking)) if !thinking.is_empty() => out.push(self.head.chunk(&Delta {
                        reasoning: Some(thinking),
                        ..Delta::default()
                    })),
                    // Encrypted: only a Messages client can use it (the `redacted_thinking`
                    // extension).
                    ("redacted_thinking", _, _) => {
                        if let Some(data) = &block.data {
                            out.push(self.head.chunk(&Delta {
                                redacted_thinking: Some(data),
                                ..Delta::default()
                            }));
                        }
                    }
                    ("tool_use", _, _) => {
                        let (Some(index), Some(id), Some(name)) = (event.index, &block.id, &block.name) else {
                            return malformed();
                        };
                        let tool = self.tools.len();
                        self.tools.push((index, tool));
                        out.push(self.head.chunk(&Delta {
                            tool_call: Some(ToolCallDelta {
                                index: tool,
                                id: Some(id),
                                name: Some(name),
                                arguments: Some(""),
                            }),
                            ..Delta::default()
                        }));
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(delta) = &event.delta else {
                    return malformed();
                };
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(text) = &delta.text {
                            out.push(self.head.chunk(&Delta {
                                content: Some(text),
                                ..Delta::default()
                            }));
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(thinking) = &delta.thinking {
                            out.push(self.head.chunk(&Delta {
                                reasoning: Some(thinking),
                                ..Delta::default()
                            }));
                        }
                    }
                    Some("input_json_delta") => {
                        let (Some(tool), Some(json)) = (self.tool_index(event.index), &delta.partial_json) else {
                            // Fragments of a block that is not a client tool call (server tools).
                            return Decoded::default();
                        };
                        if !json.is_empty() {
                            out.push(self.head.chunk(&Delta {
                                tool_call: Some(ToolCallDelta {
                                    index: tool,
                                    id: None,
                                    name: None,
                                    arguments: Some(json),
                                }),
                                ..Delta::default()
                            }));
                        }
                    }
                    // The signature closing a thinking block: the `reasoning_signature` extension,
                    // so a Messages client can send the block back.
                    Some("signature_delta") => {
                        if let Some(signature) = &delta.signature {
                            out.push(self.head.chunk(&Delta {
                                reasoning_signature: Some(signature),
                                ..Delta::default()
                            }));
                        }
                    }
                    // citations_delta and whatever comes next carry nothing for the client.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(usage) = &event.usage {
                    self.counts.update(usage);
                }
                if let Some(delta) = &event.delta
                    && let Some(reason) = delta.stop_reason.as_deref()
                {
                    out.push(self.head.chunk(&Delta {
                        finish_reason: Some(finish_reason(Some(reason))),
                        stop_sequence: delta.stop_sequence.as_deref(),
                        ..Delta::default()
                    }));
                }
                let usage = self.counts.tokens();
                return Decoded {
                    usage: Some(usage),
                    held: Some(self.head.usage_chunk(usage)),
                    ..Decoded::default()
                };
            }
            "message_stop" => {
                return Decoded {
                    done: true,
                    ..Decoded::default()
                };
            }
            "ping" => out.push(Bytes::from_static(PING)),
            "error" => {
                let (kind, message) = match &event.error {
                    Some(e) => (e.kind.as_deref(), e.message.as_deref()),
                    None => (None, None),
                };
                // Mid-stream errors come with HTTP 200; an unknown type is the upstream's fault.
                let status = error_status(kind, 500);
                out.push(error_event(&vendor_error(status, kind, message)));
                return Decoded {
                    error: true,
                    ..Decoded::default()
                };
            }
            // content_block_stop, and event types Anthropic may add.
            _ => {}
        }
        Decoded::default()
    }
}

fn malformed() -> Decoded {
    Decoded {
        malformed: true,
        ..Decoded::default()
    }
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, _event: &Bytes, data: Bytes, out: &mut Vec<Bytes>) -> Decoded {
        self.read(&data, out)
    }

    fn served_model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The message id `message_start` named (also every chunk's `id`).
    fn upstream_response_id(&self) -> Option<&str> {
        (self.model.is_some() && !self.head.id.is_empty()).then_some(self.head.id.as_str())
    }
}
