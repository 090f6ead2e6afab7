//! Chat chunks → the Responses semantic events, each an SSE event named by its `type` and
//! numbered by `sequence_number`:
//!
//! `response.created`, `response.in_progress`; per output item `response.output_item.added`,
//! its content (`response.content_part.added`, `response.output_text.delta`…`.done`,
//! `response.content_part.done` for a message; `response.function_call_arguments.delta`…`.done`
//! for a call; `response.reasoning_text.*` for shown reasoning), `response.output_item.done`;
//! then `response.completed` (or `response.incomplete`) with the usage and its exact cost, or
//! `response.failed` when the chat stream ended in an error.
//!
//! Items close when the chat choice finishes (text also closes when a tool call starts, as
//! OpenAI streams them in turn); the final event waits for `[DONE]`, since the usage chunk,
//! priced by the gateway, comes after the finish.

use serde::{Deserialize, Serialize};

use super::object::{
    ChatUsage, ContentPart, Echo, Failure, Ids, OutputItem, ReasoningText, ResponseObject, Status, Usage,
};
use crate::dialect::StreamEncoder;

/// One chat chunk, as far as it is read.
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<ChatUsage>,
    #[serde(default)]
    error: Option<ChatError>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDelta>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Default, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ChatError {
    #[serde(default)]
    message: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// The head of the response, known from the first chunk.
struct Head {
    ids: Ids,
    id: String,
    created: u64,
    model: String,
}

/// Which part of the message is open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Refusal,
}

/// An item being streamed.
struct Open {
    /// Its output index.
    index: usize,
    /// For a message: the open content part.
    part: Option<(usize, PartKind)>,
    /// For a function call: the chat tool call index.
    call: Option<u64>,
}

/// The encoder of one streamed Response.
pub(super) struct Encoder {
    echo: Echo,
    sequence: u64,
    head: Option<Head>,
    output: Vec<OutputItem>,
    open: Vec<Open>,
    finish: Option<String>,
    usage: Option<Usage>,
    ended: bool,
}

impl Encoder {
    /// An encoder for the answer to `request`.
    pub(super) fn new(request: &[u8]) -> Encoder {
        Encoder {
            echo: Echo::read(request),
            sequence: 0,
            head: None,
            output: Vec::new(),
            open: Vec::new(),
            finish: None,
            usage: None,
            ended: false,
        }
    }

    /// Writes one event: `event: <type>`, and the body with `type` and `sequence_number` first.
    fn emit<T: Serialize>(&mut self, out: &mut Vec<u8>, kind: &str, body: &T) {
        let json = to_json(body);
        self.write_event(out, kind, &json);
    }

    /// [`Encoder::emit`] for a body already serialized (a JSON object).
    fn write_event(&mut self, out: &mut Vec<u8>, kind: &str, json: &[u8]) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":");
        let _ = serde_json::to_writer(&mut *out, kind);
        out.extend_from_slice(b",\"sequence_number\":");
        out.extend_from_slice(self.sequence.to_string().as_bytes());
        let rest = json.get(1..).unwrap_or(b"}");
        if rest.first().is_some_and(|&b| b != b'}') {
            out.push(b',');
        }
        out.extend_from_slice(rest);
        out.extend_from_slice(b"\n\n");
        self.sequence += 1;
    }

    /// `response.created` and `response.in_progress`, once the head is known.
    fn start(&mut self, chunk: &Chunk, out: &mut Vec<u8>) {
        if self.head.is_some() {
            return;
        }
        let ids = Ids::new(chunk.id.as_deref().unwrap_or_default());
        self.head = Some(Head {
            id: ids.response(),
            ids,
            created: chunk.created.unwrap_or_default(),
            model: chunk.model.clone().unwrap_or_default(),
        });
        self.lifecycle(out, "response.created", Status::InProgress, None);
        self.lifecycle(out, "response.in_progress", Status::InProgress, None);
    }

    /// An event carrying the whole response object.
    fn lifecycle(&mut self, out: &mut Vec<u8>, kind: &str, status: Status, error: Option<&Failure>) {
        #[derive(Serialize)]
        struct Body<'a> {
            response: ResponseObject<'a>,
        }
        let Some(head) = &self.head else { return };
        let in_progress = status == Status::InProgress;
        let json = to_json(&Body {
            response: ResponseObject {
                id: &head.id,
                created_at: head.created,
                model: &head.model,
                status,
                output: if in_progress { &[] } else { &self.output },
                usage: if in_progress { None } else { self.usage.as_ref() },
                error,
                echo: &self.echo,
            },
        });
        self.write_event(out, kind, &json);
    }

    fn ids(&self) -> Option<&Ids> {
        self.head.as_ref().map(|h| &h.ids)
    }

    /// The open message, opened (and whatever else is open closed) if needed.
    fn message(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        if let Some(pos) = self
            .open
            .iter()
            .position(|o| matches!(self.output[o.index], OutputItem::Message { .. }))
        {
            return Some(pos);
        }
        self.close_all(out, Status::Completed);
        let index = self.output.len();
        let id = self.ids()?.item("msg", index);
        self.add(
            out,
            OutputItem::Message {
                id,
                status: "in_progress",
                role: "assistant",
                content: Vec::new(),
            },
        );
        self.open.push(Open {
            index,
            part: None,
            call: None,
        });
        Some(self.open.len() - 1)
    }

    fn add(&mut self, out: &mut Vec<u8>, item: OutputItem) {
        #[derive(Serialize)]
        struct Added<'a> {
            output_index: usize,
            item: &'a OutputItem,
        }
        let output_index = self.output.len();
        self.output.push(item);
        let json = to_json(&Added {
            output_index,
            item: &self.output[output_index],
        });
        self.write_event(out, "response.output_item.added", &json);
    }

    /// Text (or a refusal) for the message.
    fn message_text(&mut self, out: &mut Vec<u8>, kind: PartKind, delta: &str) {
        let Some(pos) = self.message(out) else { return };
        let index = self.open[pos].index;
        let item_id = self.output[index].id().to_owned();
        let content_index = match self.open[pos].part {
            Some((at, open)) if open == kind => at,
            _ => {
                self.close_part(out, pos);
                let OutputItem::Message { content, .. } = &mut self.output[index] else {
                    return;
                };
                let part = match kind {
                    PartKind::Text => ContentPart::text(String::new()),
                    PartKind::Refusal => ContentPart::Refusal { refusal: String::new() },
                };
                content.push(part.clone());
                let at = content.len() - 1;
                self.open[pos].part = Some((at, kind));
                self.emit(
                    out,
                    "response.content_part.added",
                    &PartEvent {
                        item_id: &item_id,
                        output_index: index,
                        content_index: at,
                        part: &part,
                    },
                );
                at
            }
        };
        if let OutputItem::Message { content, .. } = &mut self.output[index] {
            match content.get_mut(content_index) {
                Some(ContentPart::OutputText { text, .. }) => text.push_str(delta),
                Some(ContentPart::Refusal { refusal }) => refusal.push_str(delta),
                None => {}
            }
        }
        if delta.is_empty() {
            return;
        }
        #[derive(Serialize)]
        struct TextDelta<'a> {
            item_id: &'a str,
            output_index: usize,
            content_index: usize,
            delta: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            logprobs: Option<[u8; 0]>,
        }
        let (kind, logprobs) = match kind {
            PartKind::Text => ("response.output_text.delta", Some([])),
            PartKind::Refusal => ("response.refusal.delta", None),
        };
        self.emit(
            out,
            kind,
            &TextDelta {
                item_id: &item_id,
                output_index: index,
                content_index,
                delta,
                logprobs,
            },
        );
    }

    /// Closes the message's open content part: `….done` and `response.content_part.done`.
    fn close_part(&mut self, out: &mut Vec<u8>, pos: usize) {
        let Some((at, kind)) = self.open[pos].part.take() else {
            return;
        };
        let index = self.open[pos].index;
        let item_id = self.output[index].id().to_owned();
        let OutputItem::Message { content, .. } = &self.output[index] else {
            return;
        };
        let Some(part) = content.get(at).cloned() else { return };
        match (&part, kind) {
            (ContentPart::OutputText { text, .. }, PartKind::Text) => {
                #[derive(Serialize)]
                struct TextDone<'a> {
                    item_id: &'a str,
                    output_index: usize,
                    content_index: usize,
                    text: &'a str,
                    logprobs: [u8; 0],
                }
                let body = TextDone {
                    item_id: &item_id,
                    output_index: index,
                    content_index: at,
                    text,
                    logprobs: [],
                };
                self.emit(out, "response.output_text.done", &body);
            }
            (ContentPart::Refusal { refusal }, PartKind::Refusal) => {
                #[derive(Serialize)]
                struct RefusalDone<'a> {
                    item_id: &'a str,
                    output_index: usize,
                    content_index: usize,
                    refusal: &'a str,
                }
                let body = RefusalDone {
                    item_id: &item_id,
                    output_index: index,
                    content_index: at,
                    refusal,
                };
                self.emit(out, "response.refusal.done", &body);
            }
            _ => {}
        }
        self.emit(
            out,
            "response.content_part.done",
            &PartEvent {
                item_id: &item_id,
                output_index: index,
                content_index: at,
                part: &part,
            },
        );
    }

    /// Shown reasoning: a `reasoning` item with one `reasoning_text` part.
    fn reasoning(&mut self, out: &mut Vec<u8>, delta: &str) {
        let pos = match self
            .open
            .iter()
            .position(|o| matches!(self.output[o.index], OutputItem::Reasoning { .. }))
        {
            Some(pos) => pos,
            None => {
                self.close_all(out, Status::Completed);
                let index = self.output.len();
                let Some(id) = self.ids().map(|ids| ids.item("rs", index)) else {
                    return;
                };
                self.add(
                    out,
                    OutputItem::Reasoning {
                        id: id.clone(),
                        summary: [],
                        content: Vec::new(),
                        status: "in_progress",
                    },
                );
                let part = ReasoningText {
                    kind: "reasoning_text",
                    text: String::new(),
                };
                self.emit(
                    out,
                    "response.content_part.added",
                    &ReasoningPartEvent {
                        item_id: &id,
                        output_index: index,
                        content_index: 0,
                        part: &part,
                    },
                );
                if let OutputItem::Reasoning { content, .. } = &mut self.output[index] {
                    content.push(part);
                }
                self.open.push(Open {
                    index,
                    part: None,
                    call: None,
                });
                self.open.len() - 1
            }
        };
        let index = self.open[pos].index;
        if let OutputItem::Reasoning { content, .. } = &mut self.output[index]
            && let Some(part) = content.first_mut()
        {
            part.text.push_str(delta);
        }
        let item_id = self.output[index].id().to_owned();
        self.emit(
            out,
            "response.reasoning_text.delta",
            &Fragment {
                item_id: &item_id,
                output_index: index,
                content_index: Some(0),
                delta,
            },
        );
    }

    /// A tool call fragment: the first one of a call adds its item.
    fn tool_call(&mut self, out: &mut Vec<u8>, call: ToolCallDelta) {
        let function = call.function.unwrap_or_default();
        let pos = match self.open.iter().position(|o| o.call == Some(call.index)) {
            Some(pos) => pos,
            None => {
                // Text and reasoning come before the calls; earlier calls stay open, in case
                // an upstream interleaves their fragments.
                let text: Vec<usize> = (0..self.open.len()).filter(|&p| self.open[p].call.is_none()).collect();
                for pos in text.into_iter().rev() {
                    self.close(out, pos, Status::Completed);
                }
                let index = self.output.len();
                let Some(id) = self.ids().map(|ids| ids.item("fc", index)) else {
                    return;
                };
                let call_id = call.id.clone().unwrap_or_else(|| format!("call_{id}"));
                self.add(
                    out,
                    OutputItem::FunctionCall {
                        id,
                        call_id,
                        name: function.name.clone().unwrap_or_default(),
                        arguments: String::new(),
                        status: "in_progress",
                    },
                );
                self.open.push(Open {
                    index,
                    part: None,
                    call: Some(call.index),
                });
                self.open.len() - 1
            }
        };
        let index = self.open[pos].index;
        let Some(delta) = function.arguments.filter(|a| !a.is_empty()) else {
            return;
        };
        if let OutputItem::FunctionCall { arguments, .. } = &mut self.output[index] {
            arguments.push_str(&delta);
        }
        let item_id = self.output[index].id().to_owned();
        self.emit(
            out,
            "response.function_call_arguments.delta",
            &Fragment {
                item_id: &item_id,
                output_index: index,
                content_index: None,
                delta: &delta,
            },
        );
    }

    /// Closes the open item at `pos`: its content's `….done` events, then
    /// `response.output_item.done`.
    fn close(&mut self, out: &mut Vec<u8>, pos: usize, status: Status) {
        self.close_part(out, pos);
        let open = self.open.remove(pos);
        let index = open.index;
        let item_status = match self.output[index] {
            OutputItem::Message { .. } => status.item_status(),
            _ => "completed",
        };
        self.output[index].set_status(item_status);
        let item_id = self.output[index].id().to_owned();
        match self.output[index].clone() {
            OutputItem::FunctionCall { arguments, name, .. } => {
                #[derive(Serialize)]
                struct ArgumentsDone<'a> {
                    item_id: &'a str,
                    output_index: usize,
                    name: &'a str,
                    arguments: &'a str,
                }
                let body = ArgumentsDone {
                    item_id: &item_id,
                    output_index: index,
                    name: &name,
                    arguments: &arguments,
                };
                self.emit(out, "response.function_call_arguments.done", &body);
            }
            OutputItem::Reasoning { content, .. } => {
                if let Some(part) = content.first() {
                    #[derive(Serialize)]
                    struct ReasoningDone<'a> {
                        item_id: &'a str,
                        output_index: usize,
                        content_index: usize,
                        text: &'a str,
                    }
                    let body = ReasoningDone {
                        item_id: &item_id,
                        output_index: index,
                        content_index: 0,
                        text: &part.text,
                    };
                    self.emit(out, "response.reasoning_text.done", &body);
                    self.emit(
                        out,
                        "response.content_part.done",
                        &ReasoningPartEvent {
                            item_id: &item_id,
                            output_index: index,
                            content_index: 0,
                            part,
                        },
                    );
                }
            }
            OutputItem::Message { .. } => {}
        }
        #[derive(Serialize)]
        struct Done<'a> {
            output_index: usize,
            item: &'a OutputItem,
        }
        let json = to_json(&Done {
            output_index: index,
            item: &self.output[index],
        });
        self.write_event(out, "response.output_item.done", &json);
    }

    /// Closes every open item, in output order.
    fn close_all(&mut self, out: &mut Vec<u8>, status: Status) {
        self.open.sort_by_key(|o| o.index);
        while !self.open.is_empty() {
            self.close(out, 0, status);
        }
    }

    /// The choice finished: every item closes (an answer with none gets an empty message).
    fn finish_items(&mut self, out: &mut Vec<u8>) {
        let status = Status::of_finish(self.finish.as_deref());
        if self.output.is_empty() {
            self.message_text(out, PartKind::Text, "");
        }
        self.close_all(out, status);
    }

    /// The final event: `response.completed` or `response.incomplete`.
    fn complete(&mut self, out: &mut Vec<u8>) {
        self.finish_items(out);
        let status = Status::of_finish(self.finish.as_deref());
        let kind = match status {
            Status::Incomplete(_) => "response.incomplete",
            _ => "response.completed",
        };
        self.lifecycle(out, kind, status, None);
        self.ended = true;
    }

    /// The final event of a broken stream: `response.failed`, with what was said so far.
    fn fail(&mut self, out: &mut Vec<u8>, error: Option<ChatError>) {
        if self.head.is_none() {
            self.start(
                &Chunk {
                    id: None,
                    created: None,
                    model: None,
                    choices: Vec::new(),
                    usage: None,
                    error: None,
                },
                out,
            );
        }
        for open in &self.open {
            self.output[open.index].set_status("incomplete");
        }
        self.open.clear();
        let error = error.unwrap_or(ChatError {
            message: None,
            kind: None,
        });
        let failure = Failure {
            code: "server_error",
            message: error
                .message
                .unwrap_or_else(|| "The answer's stream ended before it was complete.".to_owned()),
            kind: error.kind,
        };
        self.lifecycle(out, "response.failed", Status::Failed, Some(&failure));
        self.ended = true;
    }
}

#[derive(Serialize)]
struct PartEvent<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    part: &'a ContentPart,
}

#[derive(Serialize)]
struct ReasoningPartEvent<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    part: &'a ReasoningText,
}

/// An event body as JSON. Event bodies hold strings, integers and raw JSON: serializing them
/// cannot fail.
fn to_json<T: Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec())
}

/// A text fragment of an item (`content_index` for parts of a message or reasoning).
#[derive(Serialize)]
struct Fragment<'a> {
    item_id: &'a str,
    output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<usize>,
    delta: &'a str,
}

impl StreamEncoder for Encoder {
    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if data == b"[DONE]" {
            self.complete(out);
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else {
            // The pipeline only forwards events it could read; anything else ends the answer.
            self.fail(out, None);
            return;
        };
        if let Some(error) = chunk.error {
            self.fail(out, Some(error));
            return;
        }
        self.start(&chunk, out);
        if let Some(usage) = chunk.usage {
            self.usage = Some(Usage::from(usage));
        }
        // One choice: the chat body never asks for more.
        let Some(choice) = chunk.choices.into_iter().next() else {
            return;
        };
        let delta = choice.delta.unwrap_or_default();
        if let Some(text) = delta.reasoning_content.filter(|t| !t.is_empty()) {
            self.reasoning(out, &text);
        }
        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
            self.message_text(out, PartKind::Text, &text);
        }
        if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
            self.message_text(out, PartKind::Refusal, &text);
        }
        for call in delta.tool_calls {
            self.tool_call(out, call);
        }
        if let Some(reason) = choice.finish_reason {
            self.finish = Some(reason);
            self.finish_items(out);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        // Without `[DONE]`: complete only if the choice did finish.
        if self.finish.is_some() {
            self.complete(out);
        } else {
            self.fail(out, None);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
