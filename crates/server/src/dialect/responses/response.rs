//! A complete chat completion → a Response object: reasoning (when the upstream shows it), the
//! message, then one `function_call` item per tool call; `finish_reason: "length"` makes an
//! `incomplete` response. The usage's `cost` is copied as text, so it stays exact.

use bytes::Bytes;
use serde::Deserialize;

use router_one_core::{ApiError, ErrorKind};

use super::object::{ChatUsage, ContentPart, Echo, Ids, OutputItem, ReasoningText, ResponseObject, Status, Usage};

/// The parts of a chat completion a Response is made of.
#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    id: String,
    #[serde(default)]
    created: u64,
    #[serde(default)]
    model: String,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    id: String,
    function: Function,
}

#[derive(Deserialize)]
struct Function {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

/// Rewrites a chat completion (with `usage.cost`) into a Response object.
pub(super) fn from_chat(request: &[u8], chat: &[u8]) -> Result<Bytes, ApiError> {
    let completion: Completion = serde_json::from_slice(chat).map_err(|_| {
        ApiError::new(
            ErrorKind::UpstreamError,
            "The upstream answer could not be read as a response.",
        )
    })?;
    let echo = Echo::read(request);
    let ids = Ids::new(&completion.id);
    let choice = completion.choices.into_iter().next();
    let status = Status::of_finish(choice.as_ref().and_then(|c| c.finish_reason.as_deref()));
    let output = output(&ids, choice.and_then(|c| c.message), status);
    let usage = completion.usage.map(Usage::from);
    let object = ResponseObject {
        id: &ids.response(),
        created_at: completion.created,
        model: &completion.model,
        status,
        output: &output,
        usage: usage.as_ref(),
        error: None,
        echo: &echo,
    };
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(|_| ApiError::new(ErrorKind::Internal, "The response could not be written."))
}

/// The output items of one chat message.
fn output(ids: &Ids, message: Option<Message>, status: Status) -> Vec<OutputItem> {
    let mut out = Vec::new();
    let Some(message) = message else {
        out.push(text_message(ids, 0, Vec::new(), status));
        return out;
    };
    if let Some(text) = message.reasoning_content.filter(|t| !t.is_empty()) {
        out.push(OutputItem::Reasoning {
            id: ids.item("rs", out.len()),
            summary: [],
            content: vec![ReasoningText {
                kind: "reasoning_text",
                text,
            }],
            status: "completed",
        });
    }
    let calls = message.tool_calls.unwrap_or_default();
    let mut parts = Vec::new();
    if let Some(text) = message.content.filter(|t| !t.is_empty() || calls.is_empty()) {
        parts.push(ContentPart::text(text));
    }
    if let Some(refusal) = message.refusal.filter(|r| !r.is_empty()) {
        parts.push(ContentPart::Refusal { refusal });
    }
    if !parts.is_empty() || calls.is_empty() {
        if parts.is_empty() {
            parts.push(ContentPart::text(String::new()));
        }
        let index = out.len();
        out.push(text_message(ids, index, parts, status));
    }
    for call in calls {
        out.push(OutputItem::FunctionCall {
            id: ids.item("fc", out.len()),
            call_id: call.id,
            name: call.function.name,
            arguments: call.function.arguments,
            status: "completed",
        });
    }
    out
}

fn text_message(ids: &Ids, index: usize, content: Vec<ContentPart>, status: Status) -> OutputItem {
    OutputItem::Message {
        id: ids.item("msg", index),
        status: status.item_status(),
        role: "assistant",
        content,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn convert(request: &str, chat: &str) -> serde_json::Value {
        serde_json::from_slice(&from_chat(request.as_bytes(), chat.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn a_text_answer() {
        let got = convert(
            r#"{"model":"m","input":"hi","instructions":"be brief","metadata":{"k":"v"},"temperature":0.5}"#,
            r#"{"id":"chatcmpl-abc","object":"chat.completion","created":1700000000,"model":"gpt-x",
               "choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],
               "usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14,
                        "prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":0},
                        "cost":0.0000123456}}"#,
        );
        let want = serde_json::json!({
            "id": "resp_abc", "object": "response", "created_at": 1700000000, "status": "completed",
            "background": false, "error": null, "incomplete_details": null, "instructions": "be brief",
            "max_output_tokens": null, "max_tool_calls": null, "metadata": {"k": "v"}, "model": "gpt-x",
            "output": [{"type": "message", "id": "msg_abc_0", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": "Hello there", "annotations": [], "logprobs": []}]}],
            "parallel_tool_calls": true, "previous_response_id": null, "prompt_cache_key": null,
            "reasoning": {"effort": null, "summary": null}, "safety_identifier": null, "service_tier": null,
            "store": false, "temperature": 0.5, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": null, "truncation": "disabled",
            "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 2,
                      "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 14, "cost": 0.0000123456},
            "user": null
        });
        assert_eq!(got, want);
    }

    #[test]
    fn the_cost_keeps_its_exact_text() {
        let out = from_chat(
            b"{}",
            br#"{"id":"x","created":1,"model":"m","choices":[{"message":{"content":"a"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":0.12345678901234567890}}"#,
        )
        .unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains(r#""cost":0.12345678901234567890}"#), "{text}");
    }

    #[test]
    fn tool_calls_and_reasoning_become_items() {
        let got = convert(
            r#"{"model":"m","input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":"required"}"#,
            r#"{"id":"msg_01","created":2,"model":"claude-x","choices":[{"index":0,"message":{"role":"assistant",
               "content":null,"reasoning_content":"thinking","tool_calls":[
               {"id":"toolu_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
               {"id":"toolu_2","type":"function","function":{"name":"f","arguments":"{}"}}]},
               "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":20,"total_tokens":23,"cost":1}}"#,
        );
        assert_eq!(got["id"], "resp_01");
        assert_eq!(
            got["output"],
            serde_json::json!([
                {"type":"reasoning","id":"rs_01_0","summary":[],"content":[{"type":"reasoning_text","text":"thinking"}],
                 "status":"completed"},
                {"type":"function_call","id":"fc_01_1","call_id":"toolu_1","name":"f","arguments":"{\"a\":1}",
                 "status":"completed"},
                {"type":"function_call","id":"fc_01_2","call_id":"toolu_2","name":"f","arguments":"{}",
                 "status":"completed"}
            ])
        );
        assert_eq!(got["tools"], serde_json::json!([{"type":"function","name":"f"}]));
        assert_eq!(got["tool_choice"], "required");
    }

    #[test]
    fn a_cut_answer_is_incomplete() {
        let got = convert(
            r#"{"model":"m","input":"x","max_output_tokens":3}"#,
            r#"{"id":"c","created":2,"model":"m","choices":[{"message":{"content":"one two three"},
               "finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":3,"cost":0.5}}"#,
        );
        assert_eq!(got["status"], "incomplete");
        assert_eq!(
            got["incomplete_details"],
            serde_json::json!({"reason":"max_output_tokens"})
        );
        assert_eq!(got["output"][0]["status"], "incomplete");
        assert_eq!(got["max_output_tokens"], 3);
        assert_eq!(got["usage"]["total_tokens"], 6);
    }

    #[test]
    fn an_unreadable_answer_is_an_upstream_error() {
        assert_eq!(from_chat(b"{}", b"[").unwrap_err().kind, ErrorKind::UpstreamError);
    }
}
