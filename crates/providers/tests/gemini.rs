//! Golden and property tests of the Gemini adapter: OpenAI requests in → Gemini requests out,
//! Gemini answers, streams and errors in → OpenAI out, through the public API only.
//!
//! Fixtures (`tests/golden/gemini/`) follow Gemini's REST documentation and the official SDK's
//! types (`GenerateContentResponse`, `Candidate`, `Part`, `FunctionCall`, `UsageMetadata`,
//! `FinishReason`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use bytes::Bytes;
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use router_one_core::{ApiError, ErrorKind, Model, TokenUsage};
use router_one_providers::gemini::Gemini;
use router_one_providers::request::{TopLevel, chat_view};
use router_one_providers::sse::{SseSplitter, event_data};
use router_one_providers::{ChatApi, ChatRequest, PreparedRequest, ReadContext, ReadHints, Refusal, Target};

const UPSTREAM: &str = "gemini-2.5-flash";
const CREATED: u64 = 1_700_000_000;

fn golden(path: &str) -> Vec<u8> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/gemini")
        .join(path);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn golden_json(path: &str) -> Value {
    serde_json::from_slice(&golden(path)).unwrap()
}

/// A catalog model with the given capabilities.
fn model(vision: bool, tools: bool, reasoning: bool) -> Model {
    serde_json::from_value(serde_json::json!({
        "id": "gemini-2.5-flash", "family": "gemini", "kind": "chat",
        "context_window": 1_048_576, "max_output": 65_536,
        "input_per_mtok": "0.30", "cached_input_per_mtok": "0.03", "output_per_mtok": "2.50",
        "tools": tools, "vision": vision, "reasoning": reasoning,
        "route": [{"provider": "gemini", "upstream_id": UPSTREAM}]
    }))
    .unwrap()
}

fn context() -> ReadContext<'static> {
    ReadContext {
        upstream_id: UPSTREAM,
        created: CREATED,
        hints: ReadHints::default(),
    }
}

fn prepare_with(body: &[u8], model: &Model) -> Result<PreparedRequest, ApiError> {
    let body = Bytes::copy_from_slice(body);
    let top = TopLevel::parse(&body)?;
    let view = chat_view(&top)?;
    let request = ChatRequest {
        body: &body,
        top: &top,
        view: &view,
    };
    Gemini.prepare_chat(
        &request,
        Target {
            model,
            upstream_id: UPSTREAM,
            output_limit: None,
        },
    )
}

fn prepare(body: &[u8]) -> Result<PreparedRequest, ApiError> {
    prepare_with(body, &model(true, true, true))
}

// ------------------------------------------------------------------------------------ requests

#[test]
fn golden_requests() {
    let cases = [
        ("text", false),
        ("system_multi_turn", true),
        ("images", false),
        ("tools_round_trip", false),
        ("tool_choice_function", false),
        ("tool_choice_required", false),
        ("tool_choice_none", false),
        ("json_object", false),
        ("json_schema", false),
        ("reasoning", false),
        ("reasoning_none", false),
    ];
    for (name, stream) in cases {
        let out = prepare(&golden(&format!("request/{name}.openai.json"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Value = serde_json::from_slice(&out.body).unwrap();
        let want = golden_json(&format!("request/{name}.gemini.json"));
        assert_eq!(got, want, "{name}: {}", String::from_utf8_lossy(&out.body));
        let path = if stream {
            format!("/models/{UPSTREAM}:streamGenerateContent?alt=sse")
        } else {
            format!("/models/{UPSTREAM}:generateContent")
        };
        assert_eq!(out.path, path, "{name}");
    }
}

#[test]
fn tool_arguments_and_numbers_pass_byte_for_byte() {
    let out = prepare(&golden("request/tools_round_trip.openai.json")).unwrap();
    let body = std::str::from_utf8(&out.body).unwrap();
    assert!(body.contains(r#""args":{ "city" : "Paris","#), "{body}");
    assert!(body.contains("\n \"unit\": 1.50 }"), "{body}");
    let out = prepare(&golden("request/text.openai.json")).unwrap();
    assert!(
        std::str::from_utf8(&out.body)
            .unwrap()
            .contains(r#""temperature":0.70"#)
    );
}

#[test]
fn informational_fields_are_dropped() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"store":true,"metadata":{"a":"b"},
        "service_tier":"default","user":"u","stream_options":{"include_usage":true},"n":1,"logprobs":false,
        "parallel_tool_calls":true,"logit_bias":{},"modalities":["text"],"audio":null,"top_logprobs":null}"#;
    let out = prepare(body).unwrap();
    let got: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        got,
        serde_json::json!({"contents":[{"role":"user","parts":[{"text":"hi"}]}]})
    );
}

#[test]
fn refusals_name_the_field() {
    let user = r#"{"role":"user","content":"hi"}"#;
    let with = |extra: &str| format!(r#"{{"model":"m","messages":[{user}],{extra}}}"#);
    let tool = r#""tools":[{"type":"function","function":{"name":"f"}}]"#;
    let all = model(true, true, true);
    let plain = model(false, false, false);
    let cases: Vec<(String, &Model, &str)> = vec![
        (with(r#""n":2"#), &all, "n"),
        (with(r#""logprobs":true"#), &all, "logprobs"),
        (with(r#""top_logprobs":3"#), &all, "top_logprobs"),
        (with(r#""logit_bias":{"50256":-100}"#), &all, "logit_bias"),
        (with(r#""parallel_tool_calls":false"#), &all, "parallel_tool_calls"),
        (with(r#""audio":{"voice":"alloy","format":"wav"}"#), &all, "audio"),
        (with(r#""modalities":["text","audio"]"#), &all, "modalities"),
        (with(r#""prediction":{"type":"content","content":"x"}"#), &all, "prediction"),
        (with(r#""functions":[{"name":"f"}]"#), &all, "functions"),
        (with(r#""function_call":"auto""#), &all, "function_call"),
        (with(r#""web_search_options":{}"#), &all, "web_search_options"),
        (with(r#""frobnicate":1"#), &all, "frobnicate"),
        (with(tool), &plain, "tools"),
        (with(r#""tools":[{"type":"web_search"}]"#), &all, "tools[0].type"),
        (with(r#""reasoning_effort":"high""#), &plain, "reasoning_effort"),
        (with(r#""reasoning_effort":"extreme""#), &all, "reasoning_effort"),
        (with(r#""tool_choice":"required""#), &all, "tool_choice"),
        (with(&format!(r#"{tool},"tool_choice":{{"type":"function","function":{{"name":"g"}}}}"#)), &all, "tool_choice"),
        (with(r#""response_format":{"type":"json_schema","json_schema":{"name":"x"}}"#), &all, "response_format.json_schema.schema"),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"input_audio","input_audio":{"data":"AA==","format":"wav"}}]}]}"#.into(),
            &all,
            "messages[0].content[1]",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"f"}}]}]}"#.into(),
            &all,
            "messages[0].content[0]",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]}]}"#.into(),
            &plain,
            "messages[0].content[1]",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x.test/img.bmp"}}]}]}"#.into(),
            &all,
            "messages[0].content[0].image_url.url",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x.test/image"}}]}]}"#.into(),
            &all,
            "messages[0].content[0].image_url.url",
        ),
        (
            format!(r#"{{"model":"m","messages":[{user},{{"role":"function","name":"f","content":"x"}}]}}"#),
            &all,
            "messages[1].role",
        ),
        (
            format!(
                r#"{{"model":"m","messages":[{user},{{"role":"assistant","tool_calls":[{{"id":"a","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},{{"role":"tool","tool_call_id":"b","content":"x"}}]}}"#
            ),
            &all,
            "messages[2].tool_call_id",
        ),
        (
            format!(
                r#"{{"model":"m","messages":[{user},{{"role":"assistant","tool_calls":[{{"id":"a","type":"function","function":{{"name":"f","arguments":"[1]"}}}}]}}]}}"#
            ),
            &all,
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            format!(
                r#"{{"model":"m","messages":[{user},{{"role":"assistant","tool_calls":[{{"id":"a","type":"function","function":{{"name":"f","arguments":"{{oops"}}}}]}}]}}"#
            ),
            &all,
            "messages[1].tool_calls[0].function.arguments",
        ),
    ];
    for (body, model, param) in cases {
        let err = prepare_with(body.as_bytes(), model).expect_err(&body);
        assert_eq!(err.kind, ErrorKind::InvalidRequest, "{body}");
        assert_eq!(err.param.as_deref(), Some(param), "{body}: {}", err.message);
    }
}

#[test]
fn headers_carry_the_key() {
    let headers = Gemini.headers("AIza-secret").unwrap();
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].0.as_str(), "x-goog-api-key");
    assert_eq!(headers[0].1.to_str().unwrap(), "AIza-secret");
    assert!(Gemini.headers("bad\nkey").is_none());
}

// ------------------------------------------------------------------------------------ answers

#[test]
fn golden_responses() {
    for name in [
        "text_stop",
        "parallel_calls",
        "max_tokens",
        "safety",
        "blocked_prompt",
        "thoughts",
        "recitation_no_ids",
    ] {
        let read = Gemini
            .read_chat(Bytes::from(golden(&format!("response/{name}.gemini.json"))), context())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Value = serde_json::from_slice(&read.body).unwrap();
        let want = golden_json(&format!("response/{name}.openai.json"));
        assert_eq!(got, want, "{name}");
        assert_eq!(read.served_model.as_deref(), want["model"].as_str(), "{name}");
        let end = read.usage_end.unwrap();
        assert_eq!(read.body[end], b'}');
        assert_eq!(end, read.body.len() - 2, "{name}");
        let usage = read.usage.unwrap();
        assert_eq!(
            usage.prompt_tokens,
            want["usage"]["prompt_tokens"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn usage_counts_thoughts_as_output_and_cache_as_prompt() {
    let read = Gemini
        .read_chat(Bytes::from(golden("response/thoughts.gemini.json")), context())
        .unwrap();
    assert_eq!(
        read.usage.unwrap(),
        TokenUsage {
            prompt_tokens: 1200,
            cached_tokens: 1024,
            cache_write_tokens: 0,
            completion_tokens: 190,
            reasoning_tokens: 150
        }
    );
    let read = Gemini
        .read_chat(Bytes::from(golden("response/parallel_calls.gemini.json")), context())
        .unwrap();
    assert_eq!(
        read.usage.unwrap().prompt_tokens,
        48,
        "tool-use prompt tokens are prompt tokens"
    );
}

#[test]
fn garbage_is_an_upstream_error() {
    for body in [
        &b"{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"te"[..],
        b"<html>",
        b"[1,2]",
        b"[]",
    ] {
        let err = Gemini.read_chat(Bytes::copy_from_slice(body), context()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::UpstreamError);
    }
}

// ------------------------------------------------------------------------------------ streams

struct Transcript {
    chunks: Vec<Value>,
    held: Option<Value>,
    usage: Option<TokenUsage>,
    done: bool,
    error: bool,
    malformed: bool,
    served: Option<String>,
    /// What the decoder says Gemini called its answer.
    response_id: Option<String>,
}

fn run_stream(text: &[u8], pieces: usize) -> Transcript {
    let mut decoder = Gemini.stream_decoder(context());
    let mut splitter = SseSplitter::default();
    let mut events = Vec::new();
    let step = text.len().div_ceil(pieces.max(1)).max(1);
    for piece in text.chunks(step) {
        splitter.push(Bytes::copy_from_slice(piece), &mut events).unwrap();
    }
    assert!(splitter.remainder().is_none());
    let mut t = Transcript {
        chunks: Vec::new(),
        held: None,
        usage: None,
        done: false,
        error: false,
        malformed: false,
        served: None,
        response_id: None,
    };
    let mut out = Vec::new();
    for event in &events {
        let data = event_data(event).unwrap();
        let d = decoder.decode(event, data, &mut out);
        if let Some(held) = d.held {
            assert_eq!(held.chunk[held.usage_end.unwrap()], b'}');
            t.held = Some(serde_json::from_slice(&held.chunk).unwrap());
        }
        t.usage = d.usage.or(t.usage);
        t.done |= d.done;
        t.error |= d.error;
        t.malformed |= d.malformed;
    }
    for chunk in out {
        let json = chunk.strip_prefix(b"data: ").unwrap().strip_suffix(b"\n\n").unwrap();
        t.chunks.push(serde_json::from_slice(json).unwrap());
    }
    t.served = decoder.served_model().map(str::to_owned);
    t.response_id = decoder.upstream_response_id().map(str::to_owned);
    t
}

#[test]
fn golden_streams() {
    for name in [
        "text",
        "parallel_calls",
        "thoughts",
        "safety",
        "blocked_prompt",
        "error_midway",
    ] {
        let sse = golden(&format!("stream/{name}.sse"));
        let want = golden_json(&format!("stream/{name}.expected.json"));
        for pieces in [1, 3, 17] {
            let t = run_stream(&sse, pieces);
            assert_eq!(Value::Array(t.chunks.clone()), want["chunks"], "{name}");
            assert_eq!(t.held.clone().unwrap_or(Value::Null), want["held"], "{name}");
            assert_eq!(t.done, want["done"].as_bool().unwrap(), "{name}");
            assert_eq!(t.error, want["error"].as_bool().unwrap(), "{name}");
            assert!(!t.malformed, "{name}");
            assert_eq!(t.served.as_deref(), want["served_model"].as_str(), "{name}");
            if let Some(usage) = t.usage {
                assert_eq!(
                    Some(usage.prompt_tokens),
                    want["held"]["usage"]["prompt_tokens"].as_u64()
                );
            }
        }
    }
}

/// The receipt's `upstream_response_id` is Gemini's `responseId` when it sent one, and nothing
/// when it did not (never the `gen-…` id made up for the client).
#[test]
fn the_upstream_response_id_is_geminis_own() {
    for name in ["text_stop", "parallel_calls", "recitation_no_ids", "blocked_prompt"] {
        let raw = golden(&format!("response/{name}.gemini.json"));
        let sent = serde_json::from_slice::<Value>(&raw).unwrap()["responseId"]
            .as_str()
            .map(str::to_owned);
        let read = Gemini.read_chat(Bytes::from(raw), context()).unwrap();
        assert_eq!(read.upstream_response_id, sent, "{name}");
    }
    for name in ["text", "thoughts", "error_midway"] {
        let sse = golden(&format!("stream/{name}.sse"));
        let text = String::from_utf8(sse.clone()).unwrap();
        let sent = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .filter_map(|data| serde_json::from_str::<Value>(data).ok())
            .find_map(|event| event["responseId"].as_str().map(str::to_owned));
        assert!(sent.is_some(), "{name} names its response");
        assert_eq!(run_stream(&sse, 3).response_id, sent, "{name}");
    }
    let unnamed = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\n";
    assert_eq!(run_stream(unnamed, 1).response_id, None);
}

#[test]
fn malformed_stream_data() {
    for sse in [&b"data: {not json\n\n"[..], b"data: []\r\n\r\n", b"data: [DONE]\n\n"] {
        let t = run_stream(sse, 1);
        assert!(t.malformed && t.chunks.is_empty());
    }
}

#[test]
fn nothing_but_usage_follows_the_finish() {
    let sse = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"finishReason\":\"STOP\"}]}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"STOP\"}],",
        "\"usageMetadata\":{\"promptTokenCount\":2,\"candidatesTokenCount\":1}}\r\n\r\n",
    );
    let t = run_stream(sse.as_bytes(), 1);
    assert_eq!(t.chunks.len(), 3, "role, text, finish: {:?}", t.chunks);
    assert_eq!(t.chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(t.chunks[0]["id"], format!("gen-{CREATED}"));
    assert_eq!(t.served.as_deref(), Some(UPSTREAM), "no modelVersion: the requested id");
    assert_eq!(t.usage.unwrap().completion_tokens, 1);
    assert!(t.done);
}

// ------------------------------------------------------------------------------------ errors

#[test]
fn errors_map_google_statuses() {
    let cases: [(u16, &str, ErrorKind, Option<&str>); 8] = [
        (
            429,
            r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#,
            ErrorKind::RateLimited,
            None,
        ),
        (
            503,
            r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
            ErrorKind::UpstreamOverloaded,
            Some("The model is overloaded."),
        ),
        (
            400,
            r#"{"error":{"code":400,"message":"* GenerateContentRequest.contents: contents is not specified","status":"INVALID_ARGUMENT"}}"#,
            ErrorKind::InvalidRequest,
            Some("contents is not specified"),
        ),
        (
            400,
            r#"[{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}]"#,
            ErrorKind::InvalidRequest,
            Some("User location"),
        ),
        (
            500,
            r#"{"error":{"code":504,"message":"Deadline expired before operation could complete.","status":"DEADLINE_EXCEEDED"}}"#,
            ErrorKind::UpstreamTimeout,
            Some("Deadline expired"),
        ),
        (
            403,
            r#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers","status":"PERMISSION_DENIED"}}"#,
            ErrorKind::UpstreamError,
            None,
        ),
        (502, "<html>Bad Gateway</html>", ErrorKind::UpstreamError, None),
        (
            503,
            r#"{"error":{"code":503,"message":"busy"}}"#,
            ErrorKind::UpstreamOverloaded,
            Some("busy"),
        ),
    ];
    for (status, body, kind, contains) in cases {
        let Refusal::Error(err) = Gemini.read_error(status, body.as_bytes()) else {
            panic!("{body}: passed through");
        };
        assert_eq!(err.kind, kind, "{body}");
        if let Some(text) = contains {
            assert!(err.message.contains(text), "{body}: {}", err.message);
        }
    }
    // A rate limit never repeats the vendor's message (it may mention quota or billing).
    let Refusal::Error(err) = Gemini.read_error(
        429,
        br#"{"error":{"message":"quota billing","status":"RESOURCE_EXHAUSTED"}}"#,
    ) else {
        panic!()
    };
    assert!(!err.message.contains("quota"));
}

// ------------------------------------------------------------------------------------ embeddings

fn embed_request(body: &[u8]) -> Result<PreparedRequest, ApiError> {
    let top = TopLevel::parse(body)?;
    let model = model(false, false, false);
    Gemini.prepare_embeddings(
        &top,
        Target {
            model: &model,
            upstream_id: "text-embedding-004",
            output_limit: None,
        },
    )
}

#[test]
fn golden_embeddings() {
    let request = golden("embed/request.openai.json");
    let out = embed_request(&request).unwrap();
    assert_eq!(out.path, "/models/text-embedding-004:batchEmbedContents");
    assert_eq!(
        serde_json::from_slice::<Value>(&out.body).unwrap(),
        golden_json("embed/request.gemini.json")
    );

    // The request's hints (base64 asked, the size estimate) come back with the answer.
    assert_eq!(
        out.hints,
        ReadHints {
            base64: true,
            prompt_tokens_estimate: 6
        },
        "ceil(11/3) + ceil(6/3)"
    );
    let answer = golden("embed/response.gemini.json");
    for (base64, expected) in [
        (true, "embed/response.base64.json"),
        (false, "embed/response.float.json"),
    ] {
        let context = ReadContext {
            upstream_id: "text-embedding-004",
            created: CREATED,
            hints: ReadHints { base64, ..out.hints },
        };
        let read = Gemini.read_embeddings(Bytes::from(answer.clone()), context).unwrap();
        let got: Value = serde_json::from_slice(&read.body).unwrap();
        assert_eq!(got, golden_json(expected), "{expected}");
        assert_eq!(read.usage_end, Some(read.body.len() - 2));
        assert_eq!(read.usage.unwrap().prompt_tokens, 6);
        if !base64 {
            // The upstream's number text, as received.
            assert!(
                std::str::from_utf8(&read.body)
                    .unwrap()
                    .contains("[0.013168523, -0.25, 1e-3]")
            );
        }
    }
    // Without an estimate: at least one token per vector.
    let context = ReadContext {
        upstream_id: "text-embedding-004",
        created: CREATED,
        hints: ReadHints::default(),
    };
    let read = Gemini.read_embeddings(Bytes::from(answer), context).unwrap();
    assert_eq!(read.usage.unwrap().prompt_tokens, 2);
}

#[test]
fn embedding_refusals() {
    for (body, param) in [
        (r#"{"model":"e","input":[1,2,3]}"#, "input"),
        (r#"{"model":"e","input":[[1,2],[3]]}"#, "input"),
        (r#"{"model":"e","input":[]}"#, "input"),
        (r#"{"model":"e"}"#, "input"),
        (
            r#"{"model":"e","input":"x","encoding_format":"int8"}"#,
            "encoding_format",
        ),
        (r#"{"model":"e","input":"x","dimensions":0}"#, "dimensions"),
        (r#"{"model":"e","input":"x","truncate":"END"}"#, "truncate"),
    ] {
        let err = embed_request(body.as_bytes()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest, "{body}");
        assert_eq!(err.param.as_deref(), Some(param), "{body}");
    }
}

// ------------------------------------------------------------------------------------ properties

/// JSON whitespace, possibly none.
fn ws() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ \t\r\n]{0,2}").unwrap()
}

/// Text with unicode, quotes, backslashes and control characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex("\\PC{0,16}").unwrap(),
        proptest::string::string_regex("[a-z \"\\\\\n\t\u{0}\u{1f}é€😀/]{0,16}").unwrap(),
    ]
}

/// Arbitrary JSON value text, with arbitrary whitespace and number spellings.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        proptest::string::string_regex("-?(0|[1-9][0-9]{0,5})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,2})?").unwrap(),
        text().prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just(r#""\u00e9\ud83d\ude00\/""#.to_owned()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec((ws(), inner.clone(), ws()), 0..4)
                .prop_map(|items| format!("[{}]", join(items.into_iter().map(|(a, v, b)| format!("{a}{v}{b}"))))),
            json_object(inner),
        ]
    })
}

fn json_object(value: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (proptest::collection::vec((ws(), text(), ws(), value, ws()), 0..4), ws()).prop_map(|(items, pad)| {
        if items.is_empty() {
            return format!("{{{pad}}}");
        }
        let fields = items
            .into_iter()
            .map(|(a, k, b, v, c)| format!("{a}{}{b}:{v}{c}", serde_json::to_string(&k).unwrap()));
        format!("{{{}}}", join(fields))
    })
}

fn json_object_text() -> impl Strategy<Value = String> {
    json_object(json_text())
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(",")
}

#[derive(Debug, Clone)]
enum Turn {
    System(String),
    User(String),
    Assistant(String),
    Calls(Vec<String>),
}

fn turn() -> impl Strategy<Value = Turn> {
    prop_oneof![
        text().prop_map(Turn::System),
        text().prop_map(Turn::User),
        text().prop_map(Turn::Assistant),
        proptest::collection::vec(json_object_text(), 1..4).prop_map(Turn::Calls),
    ]
}

/// An OpenAI request and the arguments texts of its tool calls, in order.
fn chat_request(turns: &[Turn], extras: &[(bool, &str)]) -> (String, Vec<String>) {
    let mut messages = Vec::new();
    let mut args = Vec::new();
    for (i, t) in turns.iter().enumerate() {
        match t {
            Turn::System(s) => messages.push(serde_json::json!({"role": "system", "content": s})),
            Turn::User(s) => {
                messages.push(serde_json::json!({"role": "user", "content": [{"type": "text", "text": s}]}))
            }
            Turn::Assistant(s) => messages.push(serde_json::json!({"role": "assistant", "content": s})),
            Turn::Calls(calls) => {
                let tool_calls: Vec<Value> = calls
                    .iter()
                    .enumerate()
                    .map(|(j, a)| {
                        serde_json::json!({"id": format!("c{i}_{j}"), "type": "function",
                            "function": {"name": format!("f{j}"), "arguments": a}})
                    })
                    .collect();
                messages.push(serde_json::json!({"role": "assistant", "content": null, "tool_calls": tool_calls}));
                for (j, a) in calls.iter().enumerate() {
                    messages
                        .push(serde_json::json!({"role": "tool", "tool_call_id": format!("c{i}_{j}"), "content": a}));
                }
                args.extend(calls.iter().cloned());
            }
        }
    }
    let mut body = serde_json::json!({"model": "m", "messages": messages});
    for (on, field) in extras {
        if *on {
            let (k, v) = field.split_once('=').unwrap();
            body[k] = serde_json::from_str(v).unwrap();
        }
    }
    (body.to_string(), args)
}

#[derive(Deserialize)]
struct SentRequest<'a> {
    #[serde(borrow)]
    contents: Vec<SentContent<'a>>,
}

#[derive(Deserialize)]
struct SentContent<'a> {
    #[serde(borrow)]
    parts: Vec<SentPart<'a>>,
}

#[derive(Deserialize)]
struct SentPart<'a> {
    #[serde(default, borrow, rename = "functionCall")]
    function_call: Option<SentCall<'a>>,
}

#[derive(Deserialize)]
struct SentCall<'a> {
    #[serde(borrow)]
    args: &'a RawValue,
}

const EXTRAS: [&str; 6] = [
    "temperature=1.25",
    "max_tokens=64",
    "stop=[\"a\",\"b\"]",
    "response_format={\"type\":\"json_object\"}",
    "seed=-3",
    "top_p=1e-2",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any well-formed request is translated (or refused with a 400), and every tool call's
    /// arguments reach Gemini byte for byte (outer JSON whitespace aside).
    #[test]
    fn requests_translate_and_keep_arguments(
        turns in proptest::collection::vec(turn(), 1..8),
        flags in proptest::collection::vec(any::<bool>(), EXTRAS.len()),
        pad in ws(),
    ) {
        let extras: Vec<(bool, &str)> = flags.iter().copied().zip(EXTRAS).collect();
        let (body, args) = chat_request(&turns, &extras);
        let padded = format!("{pad}{body}{pad}");
        // Every generated request is valid: it must translate.
        let out = prepare(padded.as_bytes());
        prop_assert!(out.is_ok(), "{:?}", out.err());
        let out = out.unwrap();
        let sent: SentRequest<'_> = serde_json::from_slice(&out.body).unwrap();
        let got: Vec<&str> = sent
            .contents
            .iter()
            .flat_map(|c| &c.parts)
            .filter_map(|p| p.function_call.as_ref().map(|c| c.args.get()))
            .collect();
        let want: Vec<&str> = args.iter().map(|a| a.trim_matches([' ', '\t', '\r', '\n'])).collect();
        prop_assert_eq!(got, want);
    }

    /// Random top-level junk never panics the translator.
    #[test]
    fn arbitrary_bodies_never_panic(body in json_object_text()) {
        if let Err(e) = prepare(body.as_bytes()) {
            prop_assert_eq!(e.kind.status(), 400);
        }
    }

    /// Whatever JSON text Gemini writes as `args`, the client's `arguments` are that text.
    #[test]
    fn answer_arguments_are_the_upstream_text(args in json_object_text(), name in "[a-z_]{1,8}") {
        let body = format!(
            r#"{{"candidates":[{{"content":{{"role":"model","parts":[{{"functionCall":{{"name":"{name}","args":{args}}}}}]}},"finishReason":"STOP"}}]}}"#
        );
        let read = Gemini.read_chat(Bytes::from(body.clone()), context()).unwrap();
        let v: Value = serde_json::from_slice(&read.body).unwrap();
        prop_assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str(), Some(args.as_str()));
        prop_assert_eq!(v["choices"][0]["finish_reason"].as_str(), Some("tool_calls"));

        // An SSE event is one line of data: Gemini writes its events without raw line breaks.
        let line_args = args.replace(['\r', '\n'], " ");
        let line = body.replace(&args, &line_args);
        let t = run_stream(format!("data: {line}\r\n\r\n").as_bytes(), 2);
        prop_assert_eq!(t.chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str(), Some(line_args.as_str()));
        prop_assert!(t.done);
    }
}
