//! Golden tests: a Messages body in → the chat body out; a chat answer → the Messages answer; a
//! chat chunk sequence → Anthropic's exact event sequence; refusals → Anthropic's error shape.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::StatusCode;

use super::request::{Purpose, to_chat};
use super::{Dialect, MESSAGES};

fn chat(body: &str, native: bool) -> String {
    String::from_utf8(to_chat(body.as_bytes(), |_| native, Purpose::Answer).unwrap().to_vec()).unwrap()
}

const CONVERSATION: &str = r#"{"model":"m","max_tokens":2048,"system":[{"type":"text","text":"Be terse.","cache_control":{"type":"ephemeral"}}],
 "messages":[
  {"role":"user","content":[{"type":"text","text":"look"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"QUJD"}}]},
  {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig1"},{"type":"text","text":"calling"},{"type":"tool_use","id":"tu_1","name":"get","input":{"q": 1.50},"cache_control":{"type":"ephemeral"}}]},
  {"role":"user","content":[{"type":"tool_result","tool_use_id":"tu_1","content":"sunny","is_error":true},{"type":"text","text":"and?"}]}],
 "tools":[{"name":"get","description":"d","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}}],
 "tool_choice":{"type":"any","disable_parallel_tool_use":true},
 "stop_sequences":["END"],"temperature":0.70,"metadata":{"user_id":"u1"},
 "thinking":{"type":"enabled","budget_tokens":2000},"stream":true}"#;

#[test]
fn a_conversation_becomes_chat_for_other_models() {
    assert_eq!(
        chat(CONVERSATION, false),
        concat!(
            r#"{"model":"m","messages":["#,
            r#"{"role":"system","content":[{"type":"text","text":"Be terse."}]},"#,
            r#"{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,QUJD"}}]},"#,
            r#"{"role":"assistant","content":[{"type":"text","text":"calling"}],"tool_calls":[{"id":"tu_1","type":"function","function":{"name":"get","arguments":"{\"q\": 1.50}"}}]},"#,
            r#"{"role":"tool","content":[{"type":"text","text":"sunny"}],"tool_call_id":"tu_1"},"#,
            r#"{"role":"user","content":[{"type":"text","text":"and?"}]}],"#,
            r#""max_tokens":2048,"stream":true,"stream_options":{"include_usage":true},"#,
            r#""tools":[{"type":"function","function":{"name":"get","description":"d","parameters":{"type":"object"}}}],"#,
            r#""tool_choice":"required","parallel_tool_calls":false,"stop":["END"],"temperature":0.70,"user":"u1","reasoning_effort":"low"}"#
        )
    );
}

#[test]
fn a_conversation_keeps_what_only_messages_carries_for_claude() {
    assert_eq!(
        chat(CONVERSATION, true),
        concat!(
            r#"{"model":"m","messages":["#,
            r#"{"role":"system","content":[{"type":"text","text":"Be terse.","cache_control":{"type":"ephemeral"}}]},"#,
            r#"{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,QUJD"}}]},"#,
            r#"{"role":"assistant","content":[{"type":"text","text":"calling"}],"tool_calls":[{"id":"tu_1","type":"function","function":{"name":"get","arguments":"{\"q\": 1.50}"}}],"#,
            r#""thinking_blocks":[{"type":"thinking","thinking":"hmm","signature":"sig1"}],"cache_control":{"type":"ephemeral"}},"#,
            r#"{"role":"tool","content":[{"type":"text","text":"sunny"}],"tool_call_id":"tu_1","is_error":true},"#,
            r#"{"role":"user","content":[{"type":"text","text":"and?"}]}],"#,
            r#""max_tokens":2048,"stream":true,"stream_options":{"include_usage":true},"#,
            r#""tools":[{"type":"function","function":{"name":"get","description":"d","parameters":{"type":"object"}},"cache_control":{"type":"ephemeral"}}],"#,
            r#""tool_choice":"required","parallel_tool_calls":false,"stop":["END"],"temperature":0.70,"user":"u1","#,
            r#""thinking":{"type":"enabled","budget_tokens":2000}}"#
        )
    );
}

#[test]
fn refusals_name_the_field() {
    let refused = |body: &str| to_chat(body.as_bytes(), |_| false, Purpose::Answer).unwrap_err();
    let e = refused(r#"{"model":"m","messages":[]}"#);
    assert_eq!(e.param.as_deref(), Some("max_tokens"));
    let e = refused(
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{}}]}]}"#,
    );
    assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
    let e =
        refused(r#"{"model":"m","max_tokens":5,"messages":[],"tools":[{"type":"web_search_20250305","name":"w"}]}"#);
    assert_eq!(e.param.as_deref(), Some("tools[0].type"));
    let e = refused(r#"{"model":"m","max_tokens":5,"messages":[],"mcp_servers":[]}"#);
    assert!(e.message.contains("mcp_servers"), "{}", e.message);
    // count_tokens needs no max_tokens.
    assert!(to_chat(br#"{"model":"m","messages":[]}"#, |_| false, Purpose::Count).is_ok());
}

#[test]
fn a_chat_answer_becomes_a_message_with_the_exact_cost() {
    let chat = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","reasoning_content":"mull","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"q\":1.10}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":4,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":3,"cache_write_tokens":2},"completion_tokens_details":{"reasoning_tokens":0},"cost":0.000012345678901234567}}"#;
    let out = MESSAGES.from_chat(chat).unwrap();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        concat!(
            r#"{"id":"msg_chatcmpl-1","type":"message","role":"assistant","model":"gpt-x","content":["#,
            r#"{"type":"thinking","thinking":"mull","signature":""},{"type":"text","text":"Hi"},"#,
            r#"{"type":"tool_use","id":"call_1","name":"get","input":{"q":1.10}}],"#,
            r#""stop_reason":"tool_use","stop_sequence":null,"#,
            r#""usage":{"input_tokens":5,"output_tokens":4,"cache_creation_input_tokens":2,"cache_read_input_tokens":3,"cost":0.000012345678901234567}}"#
        )
    );
}

#[test]
fn claude_thinking_blocks_come_back_raw() {
    let chat = br#"{"id":"msg_1","model":"claude-x","choices":[{"message":{"content":"ok","reasoning_content":"a","thinking_blocks":[{"type":"thinking","thinking":"a","signature":"S"},{"type":"redacted_thinking","data":"D"}]},"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"cost":0.5}}"#;
    let out = MESSAGES.from_chat(chat).unwrap();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        concat!(
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":["#,
            r#"{"type":"thinking","thinking":"a","signature":"S"},{"type":"redacted_thinking","data":"D"},{"type":"text","text":"ok"}],"#,
            r#""stop_reason":"max_tokens","stop_sequence":null,"#,
            r#""usage":{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cost":0.5}}"#
        )
    );
}

fn encode(events: &[&str]) -> String {
    let mut encoder = MESSAGES.stream_encoder();
    let mut out = Vec::new();
    for data in events {
        encoder.event(data.as_bytes(), &mut out);
    }
    encoder.finish(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn a_chat_stream_becomes_anthropics_event_sequence() {
    let c = |delta: &str| {
        format!(r#"{{"id":"c1","model":"m1","choices":[{{"index":0,"delta":{delta},"finish_reason":null}}]}}"#)
    };
    let events = [
        c(r#"{"role":"assistant","content":""}"#),
        c(r#"{"reasoning_content":"th"}"#),
        c(r#"{"reasoning_signature":"SIG"}"#),
        c(r#"{"content":"Hel"}"#),
        c(r#"{"content":"lo"}"#),
        c(r#"{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}]}"#),
        c(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]}"#),
        c(r#"{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}"#),
        r#"{"id":"c1","model":"m1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#.to_owned(),
        r#"{"id":"c1","model":"m1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":0},"cost":0.00001}}"#.to_owned(),
        "[DONE]".to_owned(),
    ];
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    let want = concat!(
        "event: message_start\ndata: {\"message\":{\"content\":[],\"id\":\"msg_c1\",\"model\":\"m1\",\"role\":\"assistant\",\"stop_reason\":null,\"stop_sequence\":null,\"type\":\"message\",\"usage\":{\"input_tokens\":0,\"output_tokens\":0}},\"type\":\"message_start\"}\n\n",
        "event: content_block_start\ndata: {\"content_block\":{\"signature\":\"\",\"thinking\":\"\",\"type\":\"thinking\"},\"index\":0,\"type\":\"content_block_start\"}\n\n",
        "event: content_block_delta\ndata: {\"delta\":{\"thinking\":\"th\",\"type\":\"thinking_delta\"},\"index\":0,\"type\":\"content_block_delta\"}\n\n",
        "event: content_block_delta\ndata: {\"delta\":{\"signature\":\"SIG\",\"type\":\"signature_delta\"},\"index\":0,\"type\":\"content_block_delta\"}\n\n",
        "event: content_block_stop\ndata: {\"index\":0,\"type\":\"content_block_stop\"}\n\n",
        "event: content_block_start\ndata: {\"content_block\":{\"text\":\"\",\"type\":\"text\"},\"index\":1,\"type\":\"content_block_start\"}\n\n",
        "event: content_block_delta\ndata: {\"delta\":{\"text\":\"Hel\",\"type\":\"text_delta\"},\"index\":1,\"type\":\"content_block_delta\"}\n\n",
        "event: content_block_delta\ndata: {\"delta\":{\"text\":\"lo\",\"type\":\"text_delta\"},\"index\":1,\"type\":\"content_block_delta\"}\n\n",
        "event: content_block_stop\ndata: {\"index\":1,\"type\":\"content_block_stop\"}\n\n",
        "event: content_block_start\ndata: {\"content_block\":{\"id\":\"call_1\",\"input\":{},\"name\":\"get\",\"type\":\"tool_use\"},\"index\":2,\"type\":\"content_block_start\"}\n\n",
        "event: content_block_delta\ndata: {\"delta\":{\"partial_json\":\"{\\\"q\\\":\",\"type\":\"input_json_delta\"},\"index\":2,\"type\":\"content_block_delta\"}\n\n",
        "event: content_block_delta\ndata: {\"delta\":{\"partial_json\":\"1}\",\"type\":\"input_json_delta\"},\"index\":2,\"type\":\"content_block_delta\"}\n\n",
        "event: content_block_stop\ndata: {\"index\":2,\"type\":\"content_block_stop\"}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":9,\"output_tokens\":5,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"cost\":0.00001}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    assert_eq!(encode(&events), want);
}

#[test]
fn stream_errors_and_cuts_end_with_an_error_event() {
    let start = r#"{"id":"c1","model":"m1","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#;
    let error = r#"{"error":{"message":"upstream broke","type":"upstream_error","code":"upstream_error"}}"#;
    let out = encode(&[start, error]);
    assert!(
        out.ends_with("event: error\ndata: {\"error\":{\"message\":\"upstream broke\",\"type\":\"api_error\"},\"type\":\"error\"}\n\n"),
        "{out}"
    );
    let cut = encode(&[start]);
    assert!(cut.contains("event: error\n") && !cut.contains("message_stop"), "{cut}");
}

#[test]
fn errors_take_anthropics_shape_and_type_by_status() {
    let openai = Bytes::from_static(br#"{"error":{"message":"The model `x` does not exist.","type":"invalid_request_error","code":"model_not_found"}}"#);
    let body = MESSAGES.error_body(StatusCode::NOT_FOUND, &openai);
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"error":{"message":"The model `x` does not exist.","type":"not_found_error"},"type":"error"}"#
    );
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (503, "overloaded_error"),
        (502, "api_error"),
    ] {
        let body = MESSAGES.error_body(StatusCode::from_u16(status).unwrap(), &openai);
        assert!(std::str::from_utf8(&body).unwrap().contains(kind), "{status}");
    }
}

#[test]
fn claudes_stop_sequence_comes_back() {
    let chat = br#"{"id":"msg_2","model":"c","choices":[{"message":{"content":"one two"},"finish_reason":"stop","stop_sequence":"three"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"cost":0.1}}"#;
    let out: serde_json::Value = serde_json::from_slice(&MESSAGES.from_chat(chat).unwrap()).unwrap();
    assert_eq!(
        (out["stop_reason"].as_str(), out["stop_sequence"].as_str()),
        (Some("stop_sequence"), Some("three"))
    );
    let stream = encode(&[
        r#"{"id":"msg_2","model":"c","choices":[{"index":0,"delta":{"content":"one"},"finish_reason":null}]}"#,
        r#"{"id":"msg_2","model":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop","stop_sequence":"three"}]}"#,
        "[DONE]",
    ]);
    assert!(
        stream.contains(r#""delta":{"stop_reason":"stop_sequence","stop_sequence":"three"}"#),
        "{stream}"
    );
}
