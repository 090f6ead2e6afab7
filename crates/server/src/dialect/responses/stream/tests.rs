//! Golden tests: chat chunk sequences → the exact events.

use super::*;

/// The events for `chunks` (chat `data:` payloads), each as `(event name, data as JSON)`.
fn encode(request: &str, chunks: &[&str], finish: bool) -> Vec<(String, serde_json::Value)> {
    let mut encoder = Encoder::new(request.as_bytes());
    let mut out = Vec::new();
    for chunk in chunks {
        encoder.event(chunk.as_bytes(), &mut out);
    }
    if finish {
        encoder.finish(&mut out);
    }
    let text = String::from_utf8(out).unwrap();
    let events: Vec<_> = text
        .split_terminator("\n\n")
        .map(|event| {
            let (name, data) = event.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_owned();
            let data: serde_json::Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str());
            (name, data)
        })
        .collect();
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    events
}

fn names(events: &[(String, serde_json::Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

const HEAD: &str = r#""id":"chatcmpl-7","object":"chat.completion.chunk","created":9,"model":"gpt-x""#;

fn chunk(body: &str) -> String {
    format!("{{{HEAD},{body}}}")
}

#[test]
fn a_text_answer_streams_its_semantic_events() {
    let chunks = [
        chunk(r#""choices":[{"index":0,"delta":{"role":"assistant","content":""}}]"#),
        chunk(r#""choices":[{"index":0,"delta":{"content":"Hello"}}]"#),
        chunk(r#""choices":[{"index":0,"delta":{"content":" world"}}]"#),
        chunk(r#""choices":[{"index":0,"delta":{},"finish_reason":"stop"}]"#),
        chunk(
            r#""choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"cost":0.000012345678901}"#,
        ),
        "[DONE]".to_owned(),
    ];
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let events = encode(r#"{"model":"gpt-x","input":"hi","metadata":{"a":"1"}}"#, &chunks, true);
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let created = &events[0].1["response"];
    assert_eq!(created["id"], "resp_7");
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], serde_json::json!([]));
    assert_eq!(created["usage"], serde_json::Value::Null);
    assert_eq!(created["metadata"], serde_json::json!({"a":"1"}));
    assert_eq!(
        events[2].1,
        serde_json::json!({"type":"response.output_item.added","sequence_number":2,"output_index":0,
            "item":{"type":"message","id":"msg_7_0","status":"in_progress","role":"assistant","content":[]}})
    );
    assert_eq!(
        events[4].1,
        serde_json::json!({"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_7_0",
            "output_index":0,"content_index":0,"delta":"Hello","logprobs":[]})
    );
    assert_eq!(events[6].1["text"], "Hello world");
    assert_eq!(events[8].1["item"]["status"], "completed");
    let done = &events[9].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello world");
    assert_eq!(done["usage"]["input_tokens"], 5);
    assert_eq!(done["usage"]["total_tokens"], 7);
}

#[test]
fn the_cost_keeps_its_exact_text() {
    let chunks = [
        chunk(r#""choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]"#),
        chunk(r#""choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"cost":0.10000000000000000001}"#),
        "[DONE]".to_owned(),
    ];
    let mut encoder = Encoder::new(b"{}");
    let mut out = Vec::new();
    for c in &chunks {
        encoder.event(c.as_bytes(), &mut out);
    }
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""cost":0.10000000000000000001}"#), "{text}");
}

#[test]
fn tool_calls_stream_as_function_call_items() {
    let chunks = [
        chunk(r#""choices":[{"index":0,"delta":{"role":"assistant","content":"Let me check."}}]"#),
        chunk(
            r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get","arguments":""}}]}}]"#,
        ),
        chunk(r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"c\":"}}]}}]"#),
        chunk(r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]"#),
        chunk(
            r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"time","arguments":"{}"}}]}}]"#,
        ),
        chunk(r#""choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]"#),
        chunk(r#""choices":[],"usage":{"prompt_tokens":5,"completion_tokens":20,"total_tokens":25,"cost":1}"#),
        "[DONE]".to_owned(),
    ];
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let events = encode(r#"{"tools":[{"type":"function","name":"get"}]}"#, &chunks, true);
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(
        events[8].1["item"],
        serde_json::json!({"type":"function_call","id":"fc_7_1","call_id":"call_a","name":"get","arguments":"",
            "status":"in_progress"})
    );
    assert_eq!(events[13].1["arguments"], r#"{"c":1}"#);
    assert_eq!(events[13].1["item_id"], "fc_7_1");
    assert_eq!(events[13].1["name"], "get");
    let done = &events[17].1["response"];
    let calls: Vec<_> = done["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["call_id"].clone())
        .collect();
    assert_eq!(calls, [serde_json::Value::Null, "call_a".into(), "call_b".into()]);
    assert_eq!(done["output"][2]["arguments"], "{}");
    assert_eq!(done["tools"][0]["name"], "get");
}

#[test]
fn a_length_finish_is_incomplete() {
    let chunks = [
        chunk(r#""choices":[{"index":0,"delta":{"content":"one two"},"finish_reason":"length"}]"#),
        chunk(r#""choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"cost":0.5}"#),
        "[DONE]".to_owned(),
    ];
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let events = encode("{}", &chunks, true);
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "response.incomplete");
    assert_eq!(last["response"]["status"], "incomplete");
    assert_eq!(last["response"]["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(last["response"]["output"][0]["status"], "incomplete");
}

#[test]
fn a_broken_stream_fails_with_what_was_billed() {
    let chunks = [
        chunk(r#""choices":[{"index":0,"delta":{"content":"partial"}}]"#),
        chunk(r#""choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"cost":0.25}"#),
        r#"{"error":{"message":"The upstream provider's stream broke before it finished.","type":"upstream_error","param":null,"code":"upstream_error"}}"#.to_owned(),
    ];
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let events = encode("{}", &chunks, true);
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.failed",
        ]
    );
    let failed = &events[5].1["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "server_error");
    assert!(failed["error"]["message"].as_str().unwrap().contains("stream broke"));
    assert_eq!(failed["usage"]["cost"], 0.25);
    assert_eq!(failed["output"][0]["status"], "incomplete");
    assert_eq!(failed["output"][0]["content"][0]["text"], "partial");
}

#[test]
fn a_stream_cut_without_an_ending_fails() {
    let chunks = [chunk(r#""choices":[{"index":0,"delta":{"content":"x"}}]"#)];
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let events = encode("{}", &chunks, true);
    assert_eq!(events.last().unwrap().0, "response.failed");
    // Nothing follows the end.
    let mut encoder = Encoder::new(b"{}");
    let mut out = Vec::new();
    encoder.event(b"[DONE]", &mut out);
    let len = out.len();
    encoder.event(chunks[0].as_bytes(), &mut out);
    encoder.finish(&mut out);
    assert_eq!(out.len(), len);
}

#[test]
fn shown_reasoning_is_a_reasoning_item() {
    let chunks = [
        chunk(r#""choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]"#),
        chunk(r#""choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]"#),
        "[DONE]".to_owned(),
    ];
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let events = encode("{}", &chunks, true);
    assert_eq!(
        names(&events)[2..9],
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
        ]
    );
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["type"], "reasoning");
    assert_eq!(done["output"][0]["content"][0]["text"], "hmm");
    assert_eq!(done["output"][1]["content"][0]["text"], "ok");
}
