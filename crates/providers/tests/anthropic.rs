//! Golden and property tests of the Anthropic adapter: OpenAI requests in → Anthropic requests
//! out, Anthropic answers and stream transcripts in → OpenAI answers and chunks out.
//!
//! Fixtures live in `tests/golden/anthropic/`. Expected outputs are checked as JSON values; run
//! with `UPDATE_GOLDEN=1` to rewrite them after a deliberate change (and review the diff).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use router_one_core::{ApiError, ErrorKind, Model};
use router_one_providers::anthropic::Anthropic;
use router_one_providers::request::{TopLevel, chat_view};
use router_one_providers::sse::{SseSplitter, event_data};
use router_one_providers::{ChatApi, ChatRequest, ReadContext, ReadHints, Refusal, Target};

const UPSTREAM: &str = "claude-sonnet-4-5-20250929";
const CONTEXT: ReadContext<'static> = ReadContext {
    upstream_id: UPSTREAM,
    created: 1_700_000_000,
    hints: ReadHints {
        base64: false,
        prompt_tokens_estimate: 0,
    },
};

// ------------------------------------------------------------------------------------ helpers

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/anthropic")
}

/// A Claude catalog entry with every capability, with `over` replacing fields.
fn model(over: &Value) -> Model {
    let mut base = json!({
        "id": "claude-sonnet", "family": "claude", "kind": "chat", "context_window": 200000,
        "max_output": 64000, "input_per_mtok": "3", "cached_input_per_mtok": "0.30",
        "output_per_mtok": "15", "tools": true, "vision": true, "reasoning": true, "route": []
    });
    if let (Some(base), Some(over)) = (base.as_object_mut(), over.as_object()) {
        base.extend(over.clone());
    }
    serde_json::from_value(base).unwrap()
}

/// Prepares `body` for `model`, as the gateway does: split, view, then the adapter.
fn prepare(body: &[u8], model: &Model) -> Result<Bytes, ApiError> {
    let body = Bytes::copy_from_slice(body);
    let top = TopLevel::parse(&body)?;
    let view = chat_view(&top)?;
    let request = ChatRequest {
        body: &body,
        top: &top,
        view: &view,
    };
    let target = Target {
        model,
        upstream_id: UPSTREAM,
        output_limit: None,
    };
    let prepared = Anthropic.prepare_chat(&request, target)?;
    assert_eq!(prepared.path, "/messages");
    Ok(prepared.body)
}

/// Compares `actual` with the golden file, or rewrites it under `UPDATE_GOLDEN`.
fn golden(path: &Path, actual: &Value) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let mut text = serde_json::to_string_pretty(actual).unwrap();
        text.push('\n');
        std::fs::write(path, text).unwrap();
        return;
    }
    let expected: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(actual, &expected, "{}", path.display());
}

/// Fixture files in `sub` whose names end with `suffix`, sorted.
fn fixtures(sub: &str, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir().join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {sub}");
    out
}

fn sibling(path: &Path, from: &str, to: &str) -> PathBuf {
    PathBuf::from(path.to_string_lossy().replace(from, to))
}

/// One SSE event the decoder wrote, as a JSON value (or the raw text of a comment).
fn event_value(event: &Bytes) -> Value {
    match event.strip_prefix(b"data: ") {
        Some(data) => serde_json::from_slice(data.strip_suffix(b"\n\n").unwrap()).unwrap(),
        None => Value::String(String::from_utf8(event.to_vec()).unwrap()),
    }
}

/// Runs a whole transcript through the decoder: one entry per upstream event.
fn run_stream(text: &[u8]) -> Value {
    let mut splitter = SseSplitter::default();
    let mut events = Vec::new();
    splitter.push(Bytes::copy_from_slice(text), &mut events).unwrap();
    assert_eq!(splitter.remainder(), None);
    let mut decoder = Anthropic.stream_decoder(CONTEXT);
    let mut transcript = Vec::new();
    for event in &events {
        let mut out = Vec::new();
        let decoded = decoder.decode(event, event_data(event).unwrap(), &mut out);
        let mut entry = json!({ "out": out.iter().map(event_value).collect::<Vec<_>>() });
        if let Some(usage) = decoded.usage {
            entry["usage"] = serde_json::to_value(usage).unwrap();
        }
        if let Some(held) = &decoded.held {
            assert_eq!(held.chunk[held.usage_end.unwrap()], b'}');
            entry["held"] = serde_json::from_slice(&held.chunk).unwrap();
        }
        for (flag, set) in [
            ("done", decoded.done),
            ("error", decoded.error),
            ("malformed", decoded.malformed),
        ] {
            if set {
                entry[flag] = json!(true);
            }
        }
        transcript.push(entry);
    }
    json!({ "served_model": decoder.served_model(), "events": transcript })
}

// ------------------------------------------------------------------------------------ golden

#[test]
fn requests_translate_to_golden_anthropic_bodies() {
    #[derive(Deserialize)]
    struct Case<'a> {
        #[serde(borrow)]
        request: &'a RawValue,
    }
    for path in fixtures("requests", ".json")
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".expected.json"))
    {
        let text = std::fs::read(&path).unwrap();
        let case: Case<'_> = serde_json::from_slice(&text).unwrap();
        let body = prepare(case.request.get().as_bytes(), &model(&json!({})))
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let actual: Value = serde_json::from_slice(&body).unwrap();
        golden(&sibling(&path, ".json", ".expected.json"), &actual);
    }
}

#[test]
fn sampling_numbers_and_tool_arguments_pass_byte_for_byte() {
    let raw = br#"{"model":"m","max_tokens":10,"temperature":0.70,"top_p":1e0,
        "messages":[{"role":"user","content":"a"},{"role":"assistant","tool_calls":[{"id":"t","type":"function",
        "function":{"name":"f","arguments":"{ \"a\" : [1.0, \"\\u00e9\"] }"}}]}]}"#;
    let body = prepare(raw, &model(&json!({}))).unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains(r#""temperature":0.70"#), "{text}");
    assert!(text.contains(r#""top_p":1e0"#), "{text}");
    assert!(text.contains(r#""input":{ "a" : [1.0, "\u00e9"] }"#), "{text}");
}

#[test]
fn unsupported_fields_are_refused_naming_the_field() {
    #[derive(Deserialize)]
    struct Case {
        patch: Value,
        #[serde(default)]
        model: Value,
        param: String,
    }
    let cases: Vec<Case> = serde_json::from_slice(&std::fs::read(dir().join("refusals.json")).unwrap()).unwrap();
    for case in cases {
        let mut body =
            json!({"model": "claude-sonnet", "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(case.patch.as_object().unwrap().clone());
        let error = prepare(body.to_string().as_bytes(), &model(&case.model))
            .err()
            .unwrap_or_else(|| panic!("accepted: {body}"));
        assert_eq!(error.kind, ErrorKind::InvalidRequest, "{body}");
        assert_eq!(error.kind.status(), 400);
        assert_eq!(
            error.param.as_deref(),
            Some(case.param.as_str()),
            "{body}: {}",
            error.message
        );
    }
}

#[test]
fn thinking_budget_is_capped_below_max_tokens() {
    let body =
        br#"{"model":"m","max_tokens":2000,"reasoning_effort":"xhigh","messages":[{"role":"user","content":"a"}]}"#;
    let v: Value = serde_json::from_slice(&prepare(body, &model(&json!({}))).unwrap()).unwrap();
    assert_eq!(v["thinking"], json!({"type": "enabled", "budget_tokens": 1999}));
    let body =
        br#"{"model":"m","max_tokens":1025,"reasoning_effort":"low","messages":[{"role":"user","content":"a"}]}"#;
    let v: Value = serde_json::from_slice(&prepare(body, &model(&json!({}))).unwrap()).unwrap();
    assert_eq!(v["thinking"]["budget_tokens"], 1024);
}

#[test]
fn responses_translate_to_golden_openai_bodies() {
    for path in fixtures("responses", ".anthropic.json") {
        let body = Bytes::from(std::fs::read(&path).unwrap());
        let read = Anthropic.read_chat(body, CONTEXT).unwrap();
        let actual: Value = serde_json::from_slice(&read.body).unwrap();
        assert_eq!(read.body[read.usage_end.unwrap()], b'}');
        assert_eq!(read.served_model.as_deref(), actual["model"].as_str());
        assert_eq!(
            read.usage.unwrap().prompt_tokens,
            actual["usage"]["prompt_tokens"].as_u64().unwrap()
        );
        golden(&sibling(&path, ".anthropic.json", ".openai.json"), &actual);
    }
}

/// The receipt's `upstream_response_id` is Anthropic's message id, complete or streamed.
#[test]
fn the_upstream_response_id_is_the_message_id() {
    for path in fixtures("responses", ".anthropic.json") {
        let raw = std::fs::read(&path).unwrap();
        let sent: Value = serde_json::from_slice(&raw).unwrap();
        let read = Anthropic.read_chat(Bytes::from(raw), CONTEXT).unwrap();
        assert_eq!(read.upstream_response_id.as_deref(), sent["id"].as_str(), "{path:?}");
    }
    let mut decoder = Anthropic.stream_decoder(CONTEXT);
    assert_eq!(decoder.upstream_response_id(), None, "nothing before message_start");
    let mut splitter = SseSplitter::default();
    let mut events = Vec::new();
    let text = std::fs::read(dir().join("streams/text.sse")).unwrap();
    splitter.push(Bytes::from(text.clone()), &mut events).unwrap();
    for event in &events {
        decoder.decode(event, event_data(event).unwrap(), &mut Vec::new());
    }
    let named = String::from_utf8(text).unwrap();
    let id = named.split("\"id\":\"").nth(1).and_then(|rest| rest.split('"').next());
    assert!(id.is_some_and(|id| id.starts_with("msg_")));
    assert_eq!(decoder.upstream_response_id(), id);
}

#[test]
fn tool_inputs_become_arguments_byte_for_byte() {
    let body = Bytes::from(std::fs::read(dir().join("responses/tool_use_parallel.anthropic.json")).unwrap());
    let read = Anthropic.read_chat(body, CONTEXT).unwrap();
    let v: Value = serde_json::from_slice(&read.body).unwrap();
    let calls = &v["choices"][0]["message"]["tool_calls"];
    assert_eq!(
        calls[0]["function"]["arguments"],
        r#"{"location": "San Francisco, CA", "unit": "celsius"}"#
    );
    assert_eq!(
        calls[1]["function"]["arguments"],
        "{ \"location\" :\"T\\u014dky\\u014d \\\"JP\\\"\",\n     \"n\": 1.50e2, \"tags\": [ ] }"
    );
}

#[test]
fn every_stop_reason_maps() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ] {
        let body = format!(
            r#"{{"id":"m","type":"message","role":"assistant","model":"c","content":[{{"type":"text","text":"x"}}],"stop_reason":"{stop}","usage":{{"input_tokens":1,"output_tokens":1}}}}"#
        );
        let read = Anthropic.read_chat(Bytes::from(body), CONTEXT).unwrap();
        let v: Value = serde_json::from_slice(&read.body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], finish, "{stop}");
        let event =
            format!(r#"{{"type":"message_delta","delta":{{"stop_reason":"{stop}"}},"usage":{{"output_tokens":3}}}}"#);
        let mut decoder = Anthropic.stream_decoder(CONTEXT);
        let mut out = Vec::new();
        decoder.decode(&Bytes::new(), Bytes::from(event), &mut out);
        assert_eq!(event_value(&out[0])["choices"][0]["finish_reason"], finish, "{stop}");
    }
}

#[test]
fn garbage_answers_are_upstream_errors() {
    for body in [
        &b"{\"id\":\"msg_sim_0\",\"type\":\"message\",\"role\":\"assis"[..],
        b"<html>",
        b"{}",
    ] {
        let error = Anthropic.read_chat(Bytes::copy_from_slice(body), CONTEXT).unwrap_err();
        assert_eq!((error.kind, error.kind.status()), (ErrorKind::UpstreamError, 502));
    }
}

#[test]
fn streams_translate_to_golden_chunks() {
    for path in fixtures("streams", ".sse") {
        let actual = run_stream(&std::fs::read(&path).unwrap());
        golden(&sibling(&path, ".sse", ".expected.json"), &actual);
    }
}

#[test]
fn errors_map_by_type() {
    let cases: [(u16, &str, ErrorKind, u16); 8] = [
        (
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ErrorKind::UpstreamOverloaded,
            503,
        ),
        (
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
            ErrorKind::RateLimited,
            429,
        ),
        (
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: 100000 > 64000"}}"#,
            ErrorKind::InvalidRequest,
            400,
        ),
        (
            413,
            r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#,
            ErrorKind::BodyTooLarge,
            413,
        ),
        (
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            ErrorKind::UpstreamError,
            502,
        ),
        (
            500,
            r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
            ErrorKind::UpstreamError,
            502,
        ),
        // The type decides, not the status (a proxy may have changed it).
        (
            500,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ErrorKind::UpstreamOverloaded,
            503,
        ),
        (503, "<html>bad gateway</html>", ErrorKind::UpstreamOverloaded, 503),
    ];
    for (status, body, kind, client_status) in cases {
        let Refusal::Error(error) = Anthropic.read_error(status, body.as_bytes()) else {
            panic!("passed through: {body}");
        };
        assert_eq!((error.kind, error.kind.status()), (kind, client_status), "{body}");
    }
    let Refusal::Error(error) = Anthropic.read_error(
        400,
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"messages.1: bad"}}"#,
    ) else {
        panic!()
    };
    assert!(error.message.ends_with("messages.1: bad"));
    let Refusal::Error(error) = Anthropic.read_error(
        429,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"credit balance too low"}}"#,
    ) else {
        panic!()
    };
    assert!(!error.message.contains("credit"));
    let Refusal::Error(error) = Anthropic.read_error(
        400,
        br#"{"type":"error","error":{"type":"billing_error","message":"Your credit balance is too low"}}"#,
    ) else {
        panic!()
    };
    assert!(!error.message.contains("credit"));
}

#[test]
fn headers_and_embeddings() {
    let headers = Anthropic.headers("sk-ant-test").unwrap();
    assert_eq!(headers[0].0, "x-api-key");
    assert_eq!(headers[0].1, "sk-ant-test");
    assert_eq!(headers[1].0, "anthropic-version");
    assert_eq!(headers[1].1, "2023-06-01");
    assert!(Anthropic.headers("bad\nkey").is_none());
    let body = Bytes::from_static(br#"{"model":"e","input":"x"}"#);
    let top = TopLevel::parse(&body).unwrap();
    let m = model(&json!({}));
    let error = Anthropic
        .prepare_embeddings(
            &top,
            Target {
                model: &m,
                upstream_id: "e",
                output_limit: None,
            },
        )
        .unwrap_err();
    assert_eq!(error.kind.status(), 400);
    assert!(error.message.contains("embeddings"));
    assert_eq!(Anthropic.read_embeddings(body, CONTEXT).unwrap_err().kind.status(), 400);
}

// ------------------------------------------------------------------------------------ properties

/// Whitespace JSON allows between tokens.
fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", " ", "\n", "\t", " \r\n  "])
}

/// A JSON string literal for arbitrary text, sometimes with every non-ASCII char `\u`-escaped.
fn json_string() -> impl Strategy<Value = String> {
    (any::<String>(), any::<bool>()).prop_map(|(s, escape)| {
        let plain = serde_json::to_string(&s).unwrap();
        if !escape {
            return plain;
        }
        let mut out = String::new();
        for c in plain.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
        }
        out
    })
}

/// A JSON object's text, with arbitrary inner whitespace, given a strategy for values.
fn object_of(value: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop::collection::vec((ws(), json_string(), ws(), ws(), value, ws()), 0..4).prop_map(|entries| {
        let inner: Vec<String> = entries
            .into_iter()
            .map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
            .collect();
        format!("{{{}}}", inner.join(","))
    })
}

/// Arbitrary JSON value text.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        "-?(0|[1-9][0-9]{0,6})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,2})?",
        json_string(),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..4).prop_map(|items| {
                let items: Vec<String> = items.into_iter().map(|(a, v, b)| format!("{a}{v}{b}")).collect();
                format!("[{}]", items.join(","))
            }),
            object_of(inner),
        ]
    })
}

fn json_object() -> impl Strategy<Value = String> {
    object_of(json_value())
}

/// One message: role, text, and (assistants) tool-call arguments.
fn message() -> impl Strategy<Value = (usize, String, Vec<String>, bool)> {
    (
        0usize..6,
        any::<String>(),
        prop::collection::vec(json_object(), 0..3),
        any::<bool>(),
    )
}

fn chat_request() -> impl Strategy<Value = (Value, Vec<String>)> {
    (
        prop::collection::vec(message(), 1..6),
        prop::option::of(0u64..3000),
        prop::option::of(prop::sample::select(vec!["none", "low", "high", "bogus"])),
        prop::option::of(prop::sample::select(vec![json!("auto"), json!("required"), json!("none"), json!({"type": "function", "function": {"name": "f"}})])),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(vec![json!(0.5), json!(["a", "b"]), json!("END"), json!(null), json!(3)])),
    )
        .prop_map(|(messages, max_tokens, effort, choice, parallel, stop)| {
            let roles = ["system", "developer", "user", "assistant", "tool", "user"];
            let mut arguments = Vec::new();
            let messages: Vec<Value> = messages
                .into_iter()
                .enumerate()
                .map(|(i, (role, text, args, parts))| {
                    let role = roles[role];
                    let content = if parts { json!([{"type": "text", "text": text}]) } else { json!(text) };
                    match role {
                        "assistant" if !args.is_empty() => {
                            let calls: Vec<Value> = args
                                .iter()
                                .enumerate()
                                .map(|(j, a)| json!({"id": format!("call_{i}_{j}"), "type": "function", "function": {"name": "f", "arguments": a}}))
                                .collect();
                            arguments.extend(args);
                            json!({"role": role, "content": if parts { Value::Null } else { content }, "tool_calls": calls})
                        }
                        "tool" => json!({"role": role, "tool_call_id": format!("call_{i}"), "content": content}),
                        _ => json!({"role": role, "content": content}),
                    }
                })
                .collect();
            let mut body = json!({"model": "claude", "messages": messages,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]});
            let fields = [
                ("max_tokens", max_tokens.map(Value::from)),
                ("reasoning_effort", effort.map(Value::from)),
                ("tool_choice", choice),
                ("parallel_tool_calls", parallel.map(Value::from)),
                ("temperature", stop.clone()),
                ("stop", stop),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            (body, arguments)
        })
}

#[derive(Deserialize)]
struct SentBody<'a> {
    #[serde(borrow)]
    messages: Vec<SentTurn<'a>>,
}

#[derive(Deserialize)]
struct SentTurn<'a> {
    #[serde(borrow)]
    content: Vec<SentBlock<'a>>,
}

#[derive(Deserialize)]
struct SentBlock<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
}

/// Splits `text` at char boundaries given by `cuts` (fractions of its length).
fn fragments(text: &str, cuts: &[usize]) -> Vec<String> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| {
            let mut at = c % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            at
        })
        .collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points {
        out.push(text[last..p].to_owned());
        last = p;
    }
    out.push(text[last..].to_owned());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any well-formed request is translated or refused with a 400, and tool-call arguments
    /// reach Anthropic's `input` byte for byte.
    #[test]
    fn requests_never_panic_and_keep_arguments((body, arguments) in chat_request()) {
        let text = serde_json::to_vec(&body).unwrap();
        match prepare(&text, &model(&json!({}))) {
            Ok(sent) => {
                let sent: SentBody<'_> = serde_json::from_slice(&sent).unwrap();
                let inputs: Vec<&str> = sent
                    .messages
                    .iter()
                    .flat_map(|t| &t.content)
                    .filter(|b| b.kind == "tool_use")
                    .map(|b| b.input.unwrap().get())
                    .collect();
                prop_assert_eq!(inputs, arguments.iter().map(String::as_str).collect::<Vec<_>>());
            }
            Err(error) => prop_assert_eq!(error.kind.status(), 400, "{}", error.message),
        }
    }

    /// A `tool_use` input, whatever its text, becomes `arguments` byte for byte.
    #[test]
    fn answer_inputs_keep_their_text(input in json_object()) {
        let body = format!(
            r#"{{"id":"msg_p","type":"message","role":"assistant","model":"claude","content":[{{"type":"tool_use","id":"t","name":"f","input":{input}}}],"stop_reason":"tool_use","usage":{{"input_tokens":1,"output_tokens":2}}}}"#
        );
        let read = Anthropic.read_chat(Bytes::from(body), CONTEXT).unwrap();
        let v: Value = serde_json::from_slice(&read.body).unwrap();
        prop_assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap(), input.as_str());
    }

    /// Streamed `partial_json` fragments, however cut, concatenate to the input text.
    #[test]
    fn streamed_inputs_keep_their_text(input in json_object(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let mut events = vec![
            json!({"type": "message_start", "message": {"id": "msg_p", "type": "message", "role": "assistant", "model": "claude", "content": [], "usage": {"input_tokens": 1, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
        ];
        for fragment in fragments(&input, &cuts) {
            events.push(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": fragment}}));
        }
        let mut decoder = Anthropic.stream_decoder(CONTEXT);
        let mut arguments = String::new();
        for event in events {
            let data = Bytes::from(serde_json::to_vec(&event).unwrap());
            let mut out = Vec::new();
            let decoded = decoder.decode(&data, data.clone(), &mut out);
            prop_assert!(!decoded.malformed);
            for chunk in &out {
                if let Some(a) = event_value(chunk)["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str() {
                    arguments.push_str(a);
                }
            }
        }
        prop_assert_eq!(arguments, input);
    }
}
