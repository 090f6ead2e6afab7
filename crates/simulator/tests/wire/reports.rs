//! `report_*` directives: a hostile or broken upstream that reports usage it did not serve. Each
//! replaces one usage field on the wire, exactly (up to u64::MAX), in every format, streamed or
//! not, and leaves the answer itself as it was.

use super::*;

const MAX: u64 = u64::MAX;
const ABSURD: &str = "report_prompt=18446744073709551615,report_completion=18446744073709551614,\
    report_cached=18446744073709551613,report_reasoning=20000";

/// The body of one request, as text, with the `x-sim` header given (if any).
async fn exchange(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> String {
    let response = send(addr, path, headers, &body.to_string()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (raw, clean) = read_to_end(response).await;
    assert!(clean);
    String::from_utf8(raw).unwrap()
}

/// The JSON values of the `data:` lines of an SSE body.
fn data_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test]
async fn openai_usage_is_replaced_field_by_field() {
    let addr = start(SimConfig::default()).await;
    let request = with(chat("Hello there world"), json!({"n": 2}));
    let honest: Value = serde_json::from_str(&exchange(addr, "/v1/chat/completions", &[AUTH], &request).await).unwrap();
    let raw = exchange(addr, "/v1/chat/completions", &[AUTH, ("x-sim", ABSURD)], &request).await;
    // The full u64 goes out as its exact digits, not as a float.
    assert!(raw.contains(r#""prompt_tokens":18446744073709551615,"#), "{raw}");
    let lying: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(lying["choices"], honest["choices"], "the answer is the same");
    assert_eq!(
        lying["usage"],
        json!({"prompt_tokens": MAX, "completion_tokens": MAX - 1, "total_tokens": MAX,
            "prompt_tokens_details": {"cached_tokens": MAX - 2, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 20000, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
    );

    // One field alone; the others stay the real ones (17 prompt tokens, 2 × 9 completion).
    let raw = exchange(
        addr,
        "/v1/chat/completions",
        &[AUTH, ("x-sim", "report_reasoning=20000")],
        &request,
    )
    .await;
    let lying: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(lying["usage"], usage(17, 18, 0, 20000));
}

#[tokio::test]
async fn openai_stream_reports_in_its_usage_chunk() {
    let addr = start(SimConfig::default()).await;
    let request = with(
        chat("Hello there world [[sim:report_completion=18446744073709551615]]"),
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let raw = exchange(addr, "/v1/chat/completions", &[AUTH], &request).await;
    assert!(raw.contains(r#""completion_tokens":18446744073709551615,"#), "{raw}");
    let chunks = data_lines(&raw);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text.split(' ').count(), 10, "the reply is not lengthened: {text}");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    // prompt: 4 + 3 + 4 + 4 + 3 (the directive is one more word)
    assert_eq!(last["usage"]["prompt_tokens"], 18);
    assert_eq!(last["usage"]["completion_tokens"], MAX);
    assert_eq!(last["usage"]["total_tokens"], MAX);
}

#[tokio::test]
async fn openai_embeddings_report_their_prompt() {
    let addr = start(SimConfig::default()).await;
    let request = json!({"model": "text-embedding-3-small", "input": "two words"});
    let raw = exchange(addr, "/v1/embeddings", &[AUTH, ("x-sim", ABSURD)], &request).await;
    let body: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(body["usage"], json!({"prompt_tokens": MAX, "total_tokens": MAX}));
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 1536);
}

const ANTHROPIC: [(&str, &str); 2] = [("x-api-key", "sk-ant-test"), ("anthropic-version", "2023-06-01")];

fn anthropic(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": stream,
        "messages": [{"role": "user", "content": "Hello there world"}]})
}

#[tokio::test]
async fn anthropic_usage_is_replaced_field_by_field() {
    let addr = start(SimConfig::default()).await;
    let honest: Value =
        serde_json::from_str(&exchange(addr, "/v1/messages", &ANTHROPIC, &anthropic(false)).await).unwrap();
    let headers = [ANTHROPIC[0], ANTHROPIC[1], ("x-sim", ABSURD)];
    let raw = exchange(addr, "/v1/messages", &headers, &anthropic(false)).await;
    assert!(raw.contains(r#""input_tokens":18446744073709551615,"#), "{raw}");
    let lying: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(lying["content"], honest["content"]);
    // report_reasoning has no field here: Anthropic counts thinking in output_tokens.
    assert_eq!(
        lying["usage"],
        json!({"input_tokens": MAX, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": MAX - 2, "output_tokens": MAX - 1})
    );

    let raw = exchange(addr, "/v1/messages", &headers, &anthropic(true)).await;
    let events = data_lines(&raw);
    let start = &events[0]["message"]["usage"];
    assert_eq!(
        start,
        &json!({"input_tokens": MAX, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": MAX - 2, "output_tokens": 1})
    );
    let delta = events.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(delta["usage"], json!({"output_tokens": MAX - 1}));
    let text: String = events.iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
    assert_eq!(text, honest["content"][0]["text"].as_str().unwrap());
}

const GEMINI: (&str, &str) = ("x-goog-api-key", "AIza-test");

fn gemini() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "Hello there world"}]}]})
}

#[tokio::test]
async fn gemini_usage_metadata_is_replaced_field_by_field() {
    let addr = start(SimConfig::default()).await;
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let honest: Value = serde_json::from_str(&exchange(addr, path, &[GEMINI], &gemini()).await).unwrap();
    let raw = exchange(addr, path, &[GEMINI, ("x-sim", ABSURD)], &gemini()).await;
    assert!(raw.contains(r#""promptTokenCount":18446744073709551615,"#), "{raw}");
    let lying: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(lying["candidates"], honest["candidates"]);
    assert_eq!(
        lying["usageMetadata"],
        json!({"promptTokenCount": MAX, "candidatesTokenCount": MAX - 1, "totalTokenCount": MAX,
            "cachedContentTokenCount": MAX - 2, "thoughtsTokenCount": 20000})
    );

    // Streamed: every chunk reports the lie; reasoning alone adds to the total.
    let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
    let raw = exchange(addr, path, &[GEMINI, ("x-sim", "report_reasoning=20000")], &gemini()).await;
    let chunks = data_lines(&raw);
    assert_eq!(chunks.len(), 9);
    for (i, chunk) in chunks.iter().enumerate() {
        let words = i as u64 + 1;
        assert_eq!(
            chunk["usageMetadata"],
            json!({"promptTokenCount": 10, "candidatesTokenCount": words,
                "totalTokenCount": 10 + words + 20000, "thoughtsTokenCount": 20000})
        );
    }
}
