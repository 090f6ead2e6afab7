//! Property tests: whatever a client sends, the request rewrite answers a chat body or a 400 (never
//! a panic, never another error); whatever chunks the chat stream holds, the events are
//! well-formed, numbered in order, and end with exactly one final event.

use proptest::prelude::*;
use serde_json::{Value, json};

use router_one_core::ErrorKind;

use super::request::to_chat;
use super::stream::Encoder;
use crate::dialect::StreamEncoder;

/// Any JSON value, a few levels deep, with the keys and strings this dialect reads.
fn json_value() -> impl Strategy<Value = Value> {
    let words = prop::sample::select(vec![
        "type",
        "role",
        "content",
        "message",
        "function_call",
        "function_call_output",
        "user",
        "assistant",
        "input_text",
        "input_image",
        "output_text",
        "call_id",
        "name",
        "arguments",
        "output",
        "function",
        "json_schema",
        "format",
        "schema",
        "image_url",
        "x",
        "",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        words.clone().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((words.clone(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// A chat stream event: chunks with text, tool call fragments, finishes and usage, an error,
/// `[DONE]`, or junk.
fn chat_event() -> impl Strategy<Value = String> {
    let delta = prop_oneof![
        "[a-z ]{0,6}".prop_map(|t| json!({"content": t})),
        "[a-z ]{0,6}".prop_map(|t| json!({"reasoning_content": t})),
        "[a-z ]{0,6}".prop_map(|t| json!({"refusal": t})),
        (0u64..3, prop::option::of("[a-z]{1,3}"), "[{}a-z:]{0,4}").prop_map(|(index, id, args)| {
            json!({"tool_calls": [{"index": index, "id": id, "function": {"name": "f", "arguments": args}}]})
        }),
    ];
    prop_oneof![
        8 => (delta, prop::option::of(prop::sample::select(vec!["stop", "length", "tool_calls"]))).prop_map(
            |(delta, finish)| {
                json!({"id": "c", "created": 1, "model": "m",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                .to_string()
            }
        ),
        1 => Just(r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"cost":0.1}}"#.to_owned()),
        1 => Just(r#"{"error":{"message":"broke","type":"upstream_error"}}"#.to_owned()),
        1 => Just("[DONE]".to_owned()),
        1 => "[ -~]{0,8}",
    ]
}

const FINAL: [&str; 3] = ["response.completed", "response.incomplete", "response.failed"];

proptest! {
    #[test]
    fn any_request_is_a_chat_body_or_a_400(input in json_value(), tools in json_value(), text in json_value(),
                                           choice in json_value()) {
        let body = json!({"model": "m", "input": input, "tools": tools, "text": text, "tool_choice": choice});
        match to_chat(body.to_string().as_bytes()) {
            Ok(chat) => {
                let chat: Value = serde_json::from_slice(&chat).unwrap();
                prop_assert!(chat["messages"].is_array());
            }
            Err(e) => prop_assert!(matches!(e.kind, ErrorKind::InvalidRequest | ErrorKind::InvalidJson), "{e:?}"),
        }
    }

    #[test]
    fn any_bytes_are_a_chat_body_or_a_400(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Err(e) = to_chat(&bytes) {
            prop_assert!(matches!(e.kind, ErrorKind::InvalidRequest | ErrorKind::InvalidJson), "{e:?}");
        }
    }

    #[test]
    fn any_chat_stream_makes_well_formed_events(events in prop::collection::vec(chat_event(), 1..24)) {
        let mut encoder = Encoder::new(b"{}");
        let mut out = Vec::new();
        for event in &events {
            encoder.event(event.as_bytes(), &mut out);
        }
        encoder.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        let mut finals = 0;
        for (i, event) in text.split_terminator("\n\n").enumerate() {
            let (name, data) = event.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            prop_assert_eq!(data["type"].as_str(), Some(name));
            prop_assert_eq!(data["sequence_number"].as_u64(), Some(i as u64));
            prop_assert!(finals == 0, "an event after the final one: {}", name);
            if FINAL.contains(&name) {
                finals += 1;
                // Every item the final response lists was closed (or the response failed).
                let response = &data["response"];
                for item in response["output"].as_array().unwrap() {
                    prop_assert!(item["status"] != "in_progress", "{}", item);
                }
            }
            if i == 0 {
                prop_assert_eq!(name, "response.created");
            }
        }
        // A stream with a head always ends; one without any chunk may say nothing at all.
        prop_assert!(finals == 1 || text.is_empty(), "{}", text);
    }
}
