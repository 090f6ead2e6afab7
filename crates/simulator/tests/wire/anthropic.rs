//! Anthropic Messages API (`POST /v1/messages`): plain and streamed shapes, the token rule with
//! Anthropic's cache accounting, caps, stop sequences, tools, every fault, auth and bad requests.

use super::*;

const KEY: (&str, &str) = ("x-api-key", "sk-ant-test");
const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");
const MODEL: &str = "claude-sonnet-4-5";
// system "You are terse." = 4 + 3, user "Hello there world" = 4 + 3, plus 3.
const PROMPT_TOKENS: u64 = 17;
const REPLY: &str = "Simulated reply from claude-sonnet-4-5. You said: Hello there world";

fn request(user: &str) -> Value {
    json!({"model": MODEL, "max_tokens": 1024, "system": "You are terse.",
        "messages": [{"role": "user", "content": user}]})
}

fn tools(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"name": n, "description": "d", "input_schema": {"type": "object"}}))
            .collect(),
    )
}

fn usage(input: u64, output: u64, cache_read: u64) -> Value {
    json!({"input_tokens": input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read,
        "output_tokens": output})
}

async fn raw(addr: SocketAddr, headers: &[(&str, &str)], body: &str) -> (StatusCode, String, Bytes) {
    let response = send(addr, "/v1/messages", headers, body).await.unwrap();
    let status = response.status();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, bytes)
}

async fn messages(addr: SocketAddr, body: &Value) -> (StatusCode, Value) {
    let (status, content_type, bytes) = raw(addr, &[KEY, VERSION], &body.to_string()).await;
    assert_eq!(content_type, "application/json");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The `(event, data)` pairs of an SSE body, and whether it ended cleanly.
async fn stream(addr: SocketAddr, body: &Value) -> (Vec<(String, Value)>, bool) {
    let response = send(addr, "/v1/messages", &[KEY, VERSION], &body.to_string())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (raw, clean) = read_to_end(response).await;
    let text = String::from_utf8(raw).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
    let events = text
        .split_terminator("\n\n")
        .map(|e| {
            let (event, data) = e.split_once('\n').unwrap();
            let name = event.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str(), "the data's type is the event's name");
            (name, data)
        })
        .collect();
    (events, clean)
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn non_stream_message() {
    let addr = start(SimConfig::default()).await;
    let (status, body) = messages(addr, &request("Hello   there\nworld")).await;
    assert_eq!(status, StatusCode::OK);
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("msg_sim_"), "{id}");
    assert_eq!(
        body,
        json!({"id": id, "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": REPLY}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": usage(PROMPT_TOKENS, 9, 0)})
    );
    let (_, again) = messages(addr, &request("Hello there world")).await;
    assert_ne!(again["id"], body["id"]);
}

#[tokio::test]
async fn system_blocks_and_content_blocks_count() {
    let addr = start(SimConfig::default()).await;
    let body = json!({"model": "m", "max_tokens": 50, "temperature": 0.2, "top_p": 0.9,
        "metadata": {"user_id": "u"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [{"type": "text", "text": "Be brief please."}],
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": [{"type": "text", "text": "an answer"}]},
            {"role": "user", "content": [{"type": "text", "text": "part one "},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
                {"type": "text", "text": "part two"}]}]});
    let (status, body) = messages(addr, &body).await;
    assert_eq!(status, StatusCode::OK);
    // Thinking is on: a signed thinking block comes first, its words billed as output.
    assert_eq!(body["content"][0]["type"], "thinking");
    assert!(body["content"][0]["signature"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(
        body["content"][1]["text"],
        "Simulated reply from m. You said: part one part two"
    );
    assert_eq!(body["usage"]["input_tokens"], (4 + 3) + (4 + 2) + (4 + 2) + (4 + 4) + 3);
    assert_eq!(body["usage"]["output_tokens"], 5 + 10);
}

#[tokio::test]
async fn max_tokens_caps_the_reply() {
    let addr = start(SimConfig::default()).await;
    let (_, body) = messages(addr, &with(request("Hello there world"), json!({"max_tokens": 3}))).await;
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Simulated reply from"}])
    );
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn stop_sequences_end_the_text() {
    let addr = start(SimConfig::default()).await;
    let body = with(
        request("Hello there world"),
        json!({"stop_sequences": ["You said", "zzz"]}),
    );
    let (_, body) = messages(addr, &body).await;
    assert_eq!(body["content"][0]["text"], "Simulated reply from claude-sonnet-4-5.");
    assert_eq!(body["stop_reason"], "stop_sequence");
    assert_eq!(body["stop_sequence"], "You said");
    assert_eq!(body["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn cached_tokens_are_apart_from_input_tokens() {
    let addr = start(SimConfig::default()).await;
    let (_, body) = messages(addr, &request("Hello there world [[sim:cached=10,reasoning=5]]")).await;
    // The directive is one more word of the user message.
    assert_eq!(body["usage"], usage(PROMPT_TOKENS + 1 - 10, 10 + 5, 10));
    // More cached tokens than the prompt has are clamped to the prompt.
    let (_, body) = messages(addr, &request("hi [[sim:cached=1000]]")).await;
    assert_eq!(body["usage"]["input_tokens"], 0);
    assert_eq!(body["usage"]["cache_read_input_tokens"], (4 + 3) + (4 + 2) + 3);
}

#[tokio::test]
async fn single_and_parallel_tool_use() {
    let addr = start(SimConfig::default()).await;
    let base = with(
        request("Weather in Paris?"),
        json!({"tools": tools(&["get_weather", "get_time"])}),
    );
    let (_, body) = messages(addr, &base).await;
    assert_eq!(body["stop_reason"], "tool_use");
    let blocks = body["content"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    for (block, name) in blocks.iter().zip(["get_weather", "get_time"]) {
        assert!(block["id"].as_str().unwrap().starts_with("toolu_sim_"));
        assert_eq!(
            block,
            &json!({"type": "tool_use", "id": block["id"], "name": name, "input": {"echo": "Weather in Paris?"}})
        );
    }
    assert_ne!(blocks[0]["id"], blocks[1]["id"]);
    assert_eq!(body["usage"]["output_tokens"], 20);

    let single = with(
        base.clone(),
        json!({"tool_choice": {"type": "auto", "disable_parallel_tool_use": true}}),
    );
    let (_, body) = messages(addr, &single).await;
    assert_eq!(body["content"].as_array().unwrap().len(), 1);
    assert_eq!(body["usage"]["output_tokens"], 10);

    let any = with(base.clone(), json!({"tool_choice": {"type": "any"}}));
    let (_, body) = messages(addr, &any).await;
    assert_eq!(body["content"].as_array().unwrap().len(), 1);
    assert_eq!(body["content"][0]["name"], "get_weather");

    let named = with(
        base.clone(),
        json!({"tool_choice": {"type": "tool", "name": "get_time"}}),
    );
    let (_, body) = messages(addr, &named).await;
    assert_eq!(body["content"].as_array().unwrap().len(), 1);
    assert_eq!(body["content"][0]["name"], "get_time");

    let none = with(base.clone(), json!({"tool_choice": {"type": "none"}}));
    let (_, body) = messages(addr, &none).await;
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["content"][0]["type"], "text");

    let long = with(
        request("A question that is quite a lot longer than fifty characters in total"),
        json!({"tools": tools(&["lookup"])}),
    );
    let (_, body) = messages(addr, &long).await;
    assert_eq!(
        body["content"][0]["input"],
        json!({"echo": "A question that is quite a lot longer than fifty c"})
    );
}

#[tokio::test]
async fn tool_result_round_trip() {
    let addr = start(SimConfig::default()).await;
    let first = with(request("Weather?"), json!({"tools": tools(&["get_weather"])}));
    let (_, body) = messages(addr, &first).await;
    let tool_use = body["content"][0].clone();
    assert_eq!(tool_use["type"], "tool_use");
    let second = json!({"model": MODEL, "max_tokens": 100, "tools": tools(&["get_weather"]), "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"],
            "content": "sunny, 21C"}]}]});
    let (_, body) = messages(addr, &second).await;
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Tool said: sunny, 21C"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], (4 + 1) + 4 + (4 + 2) + 3);

    // Block content, and only the first 200 characters are echoed.
    let long = "x".repeat(250);
    let third = json!({"model": MODEL, "max_tokens": 100, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
            "content": [{"type": "text", "text": long}]}]}]});
    let (_, body) = messages(addr, &third).await;
    assert_eq!(body["content"][0]["text"], format!("Tool said: {}", "x".repeat(200)));
}

#[tokio::test]
async fn streamed_text_transcript() {
    let addr = start(SimConfig::default()).await;
    let request = with(request("Hello there world [[sim:cached=5]]"), json!({"stream": true}));
    let (events, clean) = stream(addr, &request).await;
    assert!(clean);
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    // 9 words of the reply, plus the echoed directive.
    expected.extend(std::iter::repeat_n("content_block_delta", 10));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected);
    let start = &events[0].1["message"];
    let id = start["id"].as_str().unwrap();
    assert!(id.starts_with("msg_sim_"));
    assert_eq!(
        start,
        &json!({"id": id, "type": "message", "role": "assistant", "model": MODEL, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage(PROMPT_TOKENS + 1 - 5, 1, 5)})
    );
    assert_eq!(
        events[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        events[3].1,
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Simulated"}})
    );
    assert_eq!(events[4].1["delta"]["text"], " reply");
    let text: String = events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, format!("{REPLY} [[sim:cached=5]]"));
    assert_eq!(events[13].1, json!({"type": "content_block_stop", "index": 0}));
    assert_eq!(
        events[14].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 10}})
    );
    assert_eq!(events[15].1, json!({"type": "message_stop"}));
}

#[tokio::test]
async fn streamed_max_tokens() {
    let addr = start(SimConfig::default()).await;
    let request = with(request("Hello there world"), json!({"stream": true, "max_tokens": 2}));
    let (events, clean) = stream(addr, &request).await;
    assert!(clean);
    let deltas = events.iter().filter(|(n, _)| n == "content_block_delta").count();
    assert_eq!(deltas, 2);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn streamed_tool_use() {
    let addr = start(SimConfig::default()).await;
    let request = with(
        request("Weather in Paris?"),
        json!({"stream": true, "tools": tools(&["get_weather", "get_time"])}),
    );
    let (events, clean) = stream(addr, &request).await;
    assert!(clean);
    assert_eq!(&names(&events)[..3], ["message_start", "content_block_start", "ping"]);
    let mut blocks: Vec<(Value, String)> = Vec::new();
    let mut open = None;
    for (name, data) in &events[1..] {
        match name.as_str() {
            "content_block_start" => {
                assert_eq!(open, None);
                let index = data["index"].as_u64().unwrap() as usize;
                assert_eq!(index, blocks.len());
                let block = &data["content_block"];
                assert_eq!(block["type"], "tool_use");
                assert!(block["id"].as_str().unwrap().starts_with("toolu_sim_"));
                assert_eq!(block["input"], json!({}));
                blocks.push((block.clone(), String::new()));
                open = Some(index);
            }
            "content_block_delta" => {
                assert_eq!(data["index"].as_u64().map(|i| i as usize), open);
                assert_eq!(data["delta"]["type"], "input_json_delta");
                let fragment = data["delta"]["partial_json"].as_str().unwrap();
                blocks.last_mut().unwrap().1.push_str(fragment);
            }
            "content_block_stop" => {
                assert_eq!(data["index"].as_u64().map(|i| i as usize), open);
                open = None;
            }
            _ => {}
        }
    }
    let names: Vec<&Value> = blocks.iter().map(|(b, _)| &b["name"]).collect();
    assert_eq!(names, [&json!("get_weather"), &json!("get_time")]);
    for (_, input) in &blocks {
        let input: Value = serde_json::from_str(input).unwrap();
        assert_eq!(input, json!({"echo": "Weather in Paris?"}));
    }
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 20);
}

#[tokio::test]
async fn status_faults_use_anthropic_error_types() {
    let addr = start(SimConfig::default()).await;
    for (code, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ] {
        let (status, body) = messages(addr, &request(&format!("hi [[sim:status={code}]]"))).await;
        assert_eq!(status.as_u16(), code);
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": kind, "message": format!("simulated error {code}")}})
        );
    }
    // From the header too, and for streams (the error comes before any event).
    let body = with(request("hi"), json!({"stream": true})).to_string();
    let (status, content_type, bytes) = raw(addr, &[KEY, VERSION, ("x-sim", "status=529")], &body).await;
    assert_eq!(status.as_u16(), 529);
    assert_eq!(content_type, "application/json");
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn malformed_fault() {
    let addr = start(SimConfig::default()).await;
    let (status, content_type, bytes) = raw(addr, &[KEY, VERSION], &request("hi [[sim:malformed]]").to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    assert!(!bytes.is_empty());
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());

    let body = with(request("hi [[sim:malformed]]"), json!({"stream": true})).to_string();
    let (status, content_type, bytes) = raw(addr, &[KEY, VERSION], &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/event-stream");
    assert_eq!(&bytes[..], b"event: message_start\ndata: {not json\n\n");
}

#[tokio::test]
async fn cut_fault_drops_the_stream() {
    let addr = start(SimConfig::default()).await;
    let request = with(request("Hello there world [[sim:cut=3]]"), json!({"stream": true}));
    let (events, clean) = stream(addr, &request).await;
    assert!(!clean, "a cut stream must end in a connection error");
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", 3));
    assert_eq!(names(&events), expected);
    let text: String = events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Simulated reply from");
}

#[tokio::test]
async fn reset_and_timeout_faults() {
    let addr = start(SimConfig::default()).await;
    let result = send(
        addr,
        "/v1/messages",
        &[KEY, VERSION],
        &request("hi [[sim:reset]]").to_string(),
    )
    .await;
    assert!(result.is_err(), "expected a connection error");

    let body = request("hi [[sim:timeout]]").to_string();
    let pending = send(addr, "/v1/messages", &[KEY, VERSION], &body);
    assert!(tokio::time::timeout(Duration::from_millis(300), pending).await.is_err());
    let (status, _) = messages(addr, &request("hi")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn pacing_from_directives() {
    let addr = start(SimConfig::default()).await;
    let started = Instant::now();
    let (_, body) = messages(addr, &request("hi [[sim:ttft_ms=60,tpot_ms=5,words=4]]")).await;
    assert_eq!(body["usage"]["output_tokens"], 4);
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let request = with(
        request("hi [[sim:ttft_ms=50,tpot_ms=30,words=4]]"),
        json!({"stream": true}),
    );
    let response = send(addr, "/v1/messages", &[KEY, VERSION], &request.to_string())
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        frame.unwrap();
        frames += 1;
    }
    let elapsed = started.elapsed();
    // 50 ms before the first block, then 3 gaps of 30 ms between the 4 words.
    assert!(elapsed >= Duration::from_millis(140), "{elapsed:?}");
    assert!(frames >= 5, "{frames} frames");
}

#[tokio::test]
async fn auth_and_bad_requests() {
    let addr = start(SimConfig::default()).await;
    let body = request("hi").to_string();
    let unauthorised = [
        vec![],
        vec![VERSION],
        vec![("x-api-key", " "), VERSION],
        vec![KEY],
        vec![AUTH, VERSION],
    ];
    for headers in &unauthorised {
        let (status, _, bytes) = raw(addr, headers, &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "authentication_error");
        assert!(body["error"]["message"].as_str().unwrap().contains("x-api-key"));
    }

    let (status, _, bytes) = raw(addr, &[KEY, VERSION], "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");

    for (missing, message) in [
        ("model", "model: Field required"),
        ("messages", "messages: Field required"),
        ("max_tokens", "max_tokens: Field required"),
    ] {
        let mut body = request("hi");
        body.as_object_mut().unwrap().remove(missing);
        let (status, error) = messages(addr, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{missing}");
        assert_eq!(
            error,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        );
    }
    let (status, error) = messages(addr, &with(request("hi"), json!({"messages": []}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let (status, error) = messages(addr, &with(request("hi"), json!({"messages": "hi"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["type"], "invalid_request_error");
}
