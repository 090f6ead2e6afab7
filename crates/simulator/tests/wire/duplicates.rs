//! Repeated JSON keys in OpenAI-format requests: the last value wins, at every level the
//! simulator reads, as in Python's `json` and JavaScript's `JSON.parse`.

use super::*;

/// Posts `body` as it is (a `Value` cannot hold a repeated key) and parses the answer.
async fn post_raw(addr: SocketAddr, path: &str, body: &str) -> (StatusCode, Value) {
    let response = send(addr, path, &[AUTH], body).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

const MESSAGES: &str = r#""messages":[{"role":"user","content":"hi [[sim:words=1500]]"}]"#;

#[tokio::test]
async fn repeated_model_is_answered_as_the_last() {
    let addr = start(SimConfig::default()).await;
    let body = format!(r#"{{"model":"cheap-a",{MESSAGES},"model":"dear-b"}}"#);
    let (status, answer) = post_raw(addr, "/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["model"], "dear-b");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.starts_with("Simulated reply from dear-b."), "{content}");
}

#[tokio::test]
async fn repeated_max_tokens_caps_at_the_last() {
    let addr = start(SimConfig::default()).await;
    for (first, last) in [("1", "1000"), (r#""junk""#, "1000"), ("1000", "1")] {
        let body = format!(r#"{{"model":"m",{MESSAGES},"max_tokens":{first},"max_tokens":{last}}}"#);
        let (status, answer) = post_raw(addr, "/v1/chat/completions", &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["choices"][0]["finish_reason"], "length");
        assert_eq!(
            answer["usage"]["completion_tokens"],
            json!(last.parse::<u64>().unwrap())
        );
    }
    // The same for max_completion_tokens, streamed.
    let body = format!(
        r#"{{"model":"m",{MESSAGES},"stream":true,"max_completion_tokens":1,"max_completion_tokens":7,
        "stream_options":{{"include_usage":true}}}}"#
    );
    let response = send(addr, "/v1/chat/completions", &[AUTH], &body).await.unwrap();
    let (raw, _) = read_to_end(response).await;
    let text = String::from_utf8(raw).unwrap();
    let usage_chunk = text
        .split_terminator("\n\n")
        .filter_map(|e| serde_json::from_str::<Value>(e.strip_prefix("data: ").unwrap()).ok())
        .find(|c| c["choices"] == json!([]))
        .unwrap();
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 7);
}

#[tokio::test]
async fn repeated_stream_options_keep_the_last() {
    let addr = start(SimConfig::default()).await;
    let messages = r#""messages":[{"role":"user","content":"hi"}]"#;
    for (options, wants_usage) in [
        (
            r#""stream_options":{"include_usage":true},"stream_options":{"include_usage":false}"#,
            false,
        ),
        (
            r#""stream_options":{"include_usage":false},"stream_options":{"include_usage":true}"#,
            true,
        ),
        (
            r#""stream_options":{"include_usage":true,"include_usage":false}"#,
            false,
        ),
    ] {
        let body = format!(r#"{{"model":"m",{messages},"stream":true,{options}}}"#);
        let response = send(addr, "/v1/chat/completions", &[AUTH], &body).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{options}");
        let (raw, clean) = read_to_end(response).await;
        let text = String::from_utf8(raw).unwrap();
        assert!(clean && text.ends_with("data: [DONE]\n\n"), "{text}");
        assert_eq!(
            text.contains(r#""choices":[],"usage":{"#),
            wants_usage,
            "{options}: {text}"
        );
    }
}

#[tokio::test]
async fn repeated_keys_inside_messages_keep_the_last() {
    let addr = start(SimConfig::default()).await;
    let body = r#"{"model":"m","messages":[
        {"role":"system","content":"first","content":"a b c d e"},
        {"role":"assistant","role":"user","content":"hello","content":"last words"}]}"#;
    let (status, answer) = post_raw(addr, "/v1/chat/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Simulated reply from m. You said: last words"
    );
    // (4 + 5) + (4 + 2) + 3
    assert_eq!(answer["usage"]["prompt_tokens"], 18);
}

#[tokio::test]
async fn repeated_embedding_fields_keep_the_last() {
    let addr = start(SimConfig::default()).await;
    let body = r#"{"model":"a","input":"one","encoding_format":"base64","model":"b",
        "input":["two three","four"],"encoding_format":"float","dimensions":1,"dimensions":8}"#;
    let (status, answer) = post_raw(addr, "/v1/embeddings", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["model"], "b");
    assert_eq!(answer["usage"]["prompt_tokens"], 3);
    assert_eq!(answer["data"].as_array().unwrap().len(), 2);
    assert_eq!(answer["data"][0]["embedding"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn a_bad_last_value_is_still_refused() {
    let addr = start(SimConfig::default()).await;
    let body = format!(r#"{{"model":"m",{MESSAGES},"max_tokens":5,"max_tokens":"x"}}"#);
    let (status, answer) = post_raw(addr, "/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    let (status, _) = post_raw(addr, "/v1/chat/completions", r#"{"model":"m","model":}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
