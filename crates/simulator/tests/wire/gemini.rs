//! The Gemini wire format: generate (plain, capped, JSON, safety, tools), usage semantics,
//! streaming (SSE and JSON array), embeddings, faults and auth.

use super::*;

const KEY: (&str, &str) = ("x-goog-api-key", "AIza-test");
const MODEL: &str = "gemini-2.5-flash";

fn generate_path(model: &str) -> String {
    format!("/v1beta/models/{model}:generateContent")
}

async fn call(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> (StatusCode, String, Value) {
    let response = send(addr, path, headers, &body.to_string()).await.unwrap();
    let status = response.status();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, value)
}

async fn generate(addr: SocketAddr, body: &Value) -> Value {
    let (status, content_type, value) = call(addr, &generate_path(MODEL), &[KEY], body).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(content_type, "application/json");
    value
}

/// A request with a system instruction and one user turn, in camelCase.
fn gemini(user: &str) -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "contents": [{"role": "user", "parts": [{"text": user}]}]
    })
}

fn usage(prompt: u64, candidates: u64) -> Value {
    json!({"promptTokenCount": prompt, "candidatesTokenCount": candidates, "totalTokenCount": prompt + candidates})
}

/// The raw body of a streamed answer, and whether it ended cleanly.
async fn stream_body(addr: SocketAddr, query: &str, body: &Value) -> (String, String, bool) {
    let path = format!("/v1beta/models/{MODEL}:streamGenerateContent{query}");
    let response = send(addr, &path, &[KEY], &body.to_string()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let (raw, clean) = read_to_end(response).await;
    (content_type, String::from_utf8(raw).unwrap(), clean)
}

/// The parsed SSE events of a streamed answer, and whether it ended cleanly.
async fn sse(addr: SocketAddr, body: &Value) -> (Vec<Value>, bool) {
    let (content_type, text, clean) = stream_body(addr, "?alt=sse", body).await;
    assert_eq!(content_type, "text/event-stream");
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
    let events = text
        .split_terminator("\n\n")
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("a data line")).unwrap())
        .collect();
    (events, clean)
}

fn text_of(response: &Value) -> String {
    response["candidates"][0]["content"]["parts"]
        .as_array()
        .map(|parts| parts.iter().filter_map(|p| p["text"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn plain_text_answer() {
    let addr = start(SimConfig::default()).await;
    let body = generate(addr, &gemini("Hi   there")).await;
    // system (4 + 3) + user (4 + 2) + 3 = 16; the reply is 8 words.
    assert_eq!(
        body,
        json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": "Simulated reply from gemini-2.5-flash. You said: Hi there"}]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": usage(16, 8),
            "modelVersion": MODEL,
            "responseId": body["responseId"].clone()
        })
    );
    assert!(body["responseId"].as_str().unwrap().starts_with("sim-"));

    // snake_case spellings and a model turn; no role means user.
    let request = json!({
        "system_instruction": {"parts": [{"text": "a b"}]},
        "contents": [{"parts": [{"text": "one"}]}, {"role": "model", "parts": [{"text": "two words"}]},
            {"parts": [{"text": "three"}, {"inline_data": {"mime_type": "image/png", "data": "AA=="}}]}],
        "generation_config": {"temperature": 0.1, "top_p": 0.9, "stop_sequences": ["x"],
            "thinking_config": {"thinking_budget": 0}}
    });
    let body = generate(addr, &request).await;
    assert_eq!(text_of(&body), "Simulated reply from gemini-2.5-flash. You said: three");
    assert_eq!(body["usageMetadata"], usage(4 + 2 + 4 + 1 + 4 + 2 + 4 + 1 + 3, 7));
}

#[tokio::test]
async fn max_output_tokens_caps_the_reply() {
    let addr = start(SimConfig::default()).await;
    let request = with(gemini("Hi there"), json!({"generationConfig": {"maxOutputTokens": 3}}));
    let body = generate(addr, &request).await;
    assert_eq!(text_of(&body), "Simulated reply from");
    assert_eq!(body["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(body["usageMetadata"], usage(16, 3));
}

#[tokio::test]
async fn json_mode() {
    let addr = start(SimConfig::default()).await;
    let request = with(
        gemini("say \"x\""),
        json!({"generationConfig": {"responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"reply": {"type": "STRING"}}}}}),
    );
    let body = generate(addr, &request).await;
    let text = text_of(&body);
    let parsed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        parsed,
        json!({"reply": "Simulated reply from gemini-2.5-flash. You said: say \"x\""})
    );
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn safety_blocks_the_answer() {
    let addr = start(SimConfig::default()).await;
    let body = generate(addr, &gemini("bad [[sim:safety]]")).await;
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["finishReason"], "SAFETY");
    assert!(candidate.get("content").is_none());
    assert_eq!(candidate["safetyRatings"][0]["blocked"], true);
    assert_eq!(body["usageMetadata"], usage(4 + 3 + 4 + 2 + 3, 0));

    let (status, _, body) = call(
        addr,
        &generate_path(MODEL),
        &[KEY, ("x-sim", "safety")],
        &gemini("fine"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["candidates"][0]["finishReason"], "SAFETY");

    let (events, clean) = sse(addr, &gemini("bad [[sim:safety]]")).await;
    assert!(clean);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["candidates"][0]["finishReason"], "SAFETY");
    assert!(events[0]["candidates"][0].get("content").is_none());
}

fn declarations(names: &[&str]) -> Value {
    json!([{"functionDeclarations": names.iter()
        .map(|n| json!({"name": n, "description": "d", "parameters": {"type": "OBJECT"}}))
        .collect::<Vec<_>>()}])
}

#[tokio::test]
async fn single_and_parallel_function_calls() {
    let addr = start(SimConfig::default()).await;
    let request = with(
        gemini("Weather in Paris?"),
        json!({"tools": declarations(&["get_weather", "get_time"])}),
    );
    let body = generate(addr, &request).await;
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(
        candidate["content"]["parts"],
        json!([
            {"functionCall": {"name": "get_weather", "args": {"echo": "Weather in Paris?"}}},
            {"functionCall": {"name": "get_time", "args": {"echo": "Weather in Paris?"}}}
        ])
    );
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 20);

    let single = with(
        gemini("Weather in Paris?"),
        json!({"tools": declarations(&["get_weather"])}),
    );
    let body = generate(addr, &single).await;
    assert_eq!(body["candidates"][0]["content"]["parts"].as_array().unwrap().len(), 1);
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 10);

    let any = with(
        request.clone(),
        json!({"toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}}),
    );
    let body = generate(addr, &any).await;
    let parts = body["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["functionCall"]["name"], "get_time");

    let any_all = with(
        request.clone(),
        json!({"tool_config": {"function_calling_config": {"mode": "ANY"}}}),
    );
    let body = generate(addr, &any_all).await;
    let parts = body["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["functionCall"]["name"], "get_weather");

    let none = with(
        request,
        json!({"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}),
    );
    let body = generate(addr, &none).await;
    assert_eq!(
        text_of(&body),
        "Simulated reply from gemini-2.5-flash. You said: Weather in Paris?"
    );
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn function_response_round_trip() {
    let addr = start(SimConfig::default()).await;
    let request = json!({
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"echo": "Weather in Paris?"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"forecast": "sunny, 21C"}}}]}
        ],
        "tools": declarations(&["get_weather"])
    });
    let body = generate(addr, &request).await;
    assert_eq!(text_of(&body), r#"Tool said: {"forecast":"sunny, 21C"}"#);
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
    // (4 + 3) + 4 + (4 + 2 words of the response JSON) + 3 = 20 prompt tokens; 4 reply words.
    assert_eq!(body["usageMetadata"], usage(20, 4));
}

#[tokio::test]
async fn cached_and_thoughts_usage() {
    let addr = start(SimConfig::default()).await;
    let body = generate(addr, &gemini("Hi there [[sim:cached=5,reasoning=7]]")).await;
    // 16 + 1 prompt words for the directive; 9 reply words (the directive is echoed).
    assert_eq!(
        body["usageMetadata"],
        json!({"promptTokenCount": 17, "candidatesTokenCount": 9, "totalTokenCount": 17 + 9 + 7,
            "cachedContentTokenCount": 5, "thoughtsTokenCount": 7})
    );
}

#[tokio::test]
async fn sse_stream_transcript() {
    let addr = start(SimConfig::default()).await;
    let request = with(gemini("Hello there [[sim:words=4,reasoning=2]]"), json!({}));
    let (events, clean) = sse(addr, &request).await;
    assert!(clean);
    assert_eq!(events.len(), 4, "one event per word");
    let texts: Vec<String> = events.iter().map(text_of).collect();
    assert_eq!(texts, vec!["Simulated", " reply", " from", " gemini-2.5-flash."]);
    for (i, event) in events.iter().enumerate() {
        let so_far = i as u64 + 1;
        let meta = &event["usageMetadata"];
        assert_eq!(meta["promptTokenCount"], 17);
        assert_eq!(meta["candidatesTokenCount"], so_far);
        assert_eq!(meta["thoughtsTokenCount"], 2);
        assert_eq!(meta["totalTokenCount"], 17 + so_far + 2);
        assert_eq!(event["modelVersion"], MODEL);
        assert_eq!(event["responseId"], events[0]["responseId"]);
        assert_eq!(event["candidates"][0]["content"]["role"], "model");
        let finish = &event["candidates"][0]["finishReason"];
        if i + 1 == events.len() {
            assert_eq!(finish, "STOP");
        } else {
            assert!(finish.is_null());
        }
    }

    let capped = with(gemini("Hi there"), json!({"generationConfig": {"maxOutputTokens": 2}}));
    let (events, _) = sse(addr, &capped).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["candidates"][0]["finishReason"], "MAX_TOKENS");

    let tools = with(gemini("Weather?"), json!({"tools": declarations(&["a", "b"])}));
    let (events, _) = sse(addr, &tools).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["candidates"][0]["content"]["parts"][1]["functionCall"]["name"],
        "b"
    );
    assert_eq!(events[0]["usageMetadata"]["candidatesTokenCount"], 20);
    assert_eq!(events[0]["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn stream_without_sse_is_a_json_array() {
    let addr = start(SimConfig::default()).await;
    let (content_type, text, clean) = stream_body(addr, "", &gemini("Hi [[sim:words=3]]")).await;
    assert!(clean);
    assert_eq!(content_type, "application/json");
    let array: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(array.len(), 3);
    assert_eq!(array[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(array.iter().map(text_of).collect::<String>(), "Simulated reply from");
}

#[tokio::test]
async fn embeddings_single_and_batch() {
    let addr = start(SimConfig::default()).await;
    let path = "/v1beta/models/text-embedding-004:embedContent";
    let request = json!({"content": {"parts": [{"text": "hello world"}]}});
    let (status, _, body) = call(addr, path, &[KEY], &request).await;
    assert_eq!(status, StatusCode::OK);
    let values = body["embedding"]["values"].as_array().unwrap();
    assert_eq!(values.len(), 768);
    let norm: f64 = values.iter().map(|v| v.as_f64().unwrap().powi(2)).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    let (_, _, again) = call(addr, path, &[KEY], &request).await;
    assert_eq!(again, body);

    let request = json!({"content": {"parts": [{"text": "hello world"}]}, "output_dimensionality": 16});
    let (_, _, small) = call(addr, path, &[KEY], &request).await;
    assert_eq!(small["embedding"]["values"].as_array().unwrap().len(), 16);

    let batch = json!({"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello world"}]}},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "other"}]}, "outputDimensionality": 8}
    ]});
    let (status, _, body) = call(
        addr,
        "/v1beta/models/text-embedding-004:batchEmbedContents",
        &[KEY],
        &batch,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let embeddings = body["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 2);
    assert_eq!(embeddings[0]["values"], again["embedding"]["values"]);
    assert_eq!(embeddings[1]["values"].as_array().unwrap().len(), 8);

    let (status, _, body) = call(addr, path, &[KEY], &json!({"content": {"parts": []}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    let (status, _, body) = call(
        addr,
        path,
        &[KEY],
        &json!({"content": {"parts": [{"text": "x [[sim:status=429]]"}]}}),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn status_faults_use_google_error_bodies() {
    let addr = start(SimConfig::default()).await;
    for (code, name) in [
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
        (400, "INVALID_ARGUMENT"),
        (403, "PERMISSION_DENIED"),
    ] {
        let (status, _, body) = call(
            addr,
            &generate_path(MODEL),
            &[KEY],
            &gemini(&format!("hi [[sim:status={code}]]")),
        )
        .await;
        assert_eq!(status.as_u16(), code);
        assert_eq!(
            body,
            json!({"error": {"code": code, "message": format!("simulated error {code}"), "status": name}})
        );
    }
    let header = format!("status={}", 503);
    let (status, _, body) = call(addr, &generate_path(MODEL), &[KEY, ("x-sim", &header)], &gemini("hi")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
}

#[tokio::test]
async fn malformed_cut_reset_and_timeout() {
    let addr = start(SimConfig::default()).await;
    let response = send(
        addr,
        &generate_path(MODEL),
        &[KEY],
        &gemini("hi [[sim:malformed]]").to_string(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!bytes.is_empty());
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
    let (_, text, clean) = stream_body(addr, "?alt=sse", &gemini("hi [[sim:malformed]]")).await;
    assert!(clean);
    assert_eq!(text, "data: {not json\n\n");

    let (events, clean) = sse(addr, &gemini("Hello there world [[sim:cut=3]]")).await;
    assert!(!clean, "a cut stream must end in a connection error");
    assert_eq!(events.len(), 3);
    assert_eq!(events.iter().map(text_of).collect::<String>(), "Simulated reply from");
    assert!(events.iter().all(|e| e["candidates"][0]["finishReason"].is_null()));

    let result = send(
        addr,
        &generate_path(MODEL),
        &[KEY],
        &gemini("hi [[sim:reset]]").to_string(),
    )
    .await;
    assert!(result.is_err(), "expected a connection error");

    let body = gemini("hi [[sim:timeout]]").to_string();
    let path = generate_path(MODEL);
    let pending = send(addr, &path, &[KEY], &body);
    assert!(tokio::time::timeout(Duration::from_millis(300), pending).await.is_err());
    generate(addr, &gemini("still fine")).await;
}

#[tokio::test]
async fn pacing_applies_to_streams() {
    let addr = start(SimConfig::default()).await;
    let started = Instant::now();
    let (events, _) = sse(addr, &gemini("hi [[sim:ttft_ms=30,tpot_ms=30,words=4]]")).await;
    assert_eq!(events.len(), 4);
    // ttft + 3 gaps.
    assert!(
        started.elapsed() >= Duration::from_millis(120),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn auth_and_request_errors() {
    let addr = start(SimConfig::default()).await;
    let (status, _, body) = call(addr, &generate_path(MODEL), &[], &gemini("hi")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], 403);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    let (status, _, _) = call(addr, &generate_path(MODEL), &[("x-goog-api-key", " ")], &gemini("hi")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(addr, &format!("{}?key=k", generate_path(MODEL)), &[], &gemini("hi")).await;
    assert_eq!(status, StatusCode::OK);

    let response = send(addr, &generate_path(MODEL), &[KEY], "{not json").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    for request in [json!({}), json!({"contents": []}), json!({"contents": "hi"})] {
        let (status, _, body) = call(addr, &generate_path(MODEL), &[KEY], &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}");
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    }
    let (status, _, body) = call(addr, "/v1beta/models/m:countTokens", &[KEY], &gemini("hi")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["status"], "NOT_FOUND");
}
