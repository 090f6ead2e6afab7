//! Chat completions: plain and streamed shapes, the token rule, caps, JSON mode, auth and bad requests.

use super::*;

// system "You are terse." = 4 + 3, user "Hello there world" = 4 + 3, plus 3.
const PROMPT_TOKENS: u64 = 17;
const REPLY: &str = "Simulated reply from gpt-4o-mini. You said: Hello there world";

#[tokio::test]
async fn non_stream_chat_completion() {
    let addr = start(SimConfig::default()).await;
    let (status, content_type, body) = post(addr, "/v1/chat/completions", &chat("Hello   there\nworld")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-sim-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["system_fingerprint"], "fp_sim");
    assert_eq!(
        body["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": REPLY, "refusal": null,
            "annotations": []}, "logprobs": null, "finish_reason": "stop"}])
    );
    assert_eq!(body["usage"], usage(PROMPT_TOKENS, 9, 0, 0));
}

#[tokio::test]
async fn ids_are_unique_and_model_is_echoed_exactly() {
    let addr = start(SimConfig::default()).await;
    let request = json!({"model": "Weird/Model \"x\" 名", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "part one "}, {"type": "image_url", "image_url": {"url": "data:,"}},
        {"type": "text", "text": "part two"}]}]});
    let (_, _, a) = post(addr, "/v1/chat/completions", &request).await;
    let (_, _, b) = post(addr, "/v1/chat/completions", &request).await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(a["model"], "Weird/Model \"x\" 名");
    assert_eq!(
        a["choices"][0]["message"]["content"],
        "Simulated reply from Weird/Model \"x\" 名. You said: part one part two"
    );
    assert_eq!(a["usage"]["prompt_tokens"], 4 + 4 + 3);
}

#[tokio::test]
async fn stream_without_usage() {
    let addr = start(SimConfig::default()).await;
    let (events, clean) = events(addr, &with(chat("Hello there world"), json!({"stream": true}))).await;
    assert!(clean);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = chunks(&events);
    // role + 9 words + finish
    assert_eq!(chunks.len(), 11);
    let id = chunks[0]["id"].as_str().unwrap();
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o-mini");
        assert!(chunk.get("usage").is_none(), "no usage key without include_usage");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "Simulated"}));
    assert_eq!(chunks[2]["choices"][0]["delta"], json!({"content": " reply"}));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, REPLY);
    let last = &chunks[10]["choices"][0];
    assert_eq!((&last["delta"], &last["finish_reason"]), (&json!({}), &json!("stop")));
    assert!(chunks[..10].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
}

#[tokio::test]
async fn stream_with_usage() {
    let addr = start(SimConfig::default()).await;
    let request = with(
        chat("Hello there world [[sim:cached=5,reasoning=3]]"),
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let (events, clean) = events(addr, &request).await;
    assert!(clean);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = chunks(&events);
    // role + 10 words (the directive is echoed) + finish + usage
    assert_eq!(chunks.len(), 13);
    for chunk in &chunks[..12] {
        assert!(chunk["usage"].is_null() && chunk.get("usage").is_some());
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
    }
    let final_chunk = &chunks[12];
    assert_eq!(final_chunk["choices"], json!([]));
    assert_eq!(final_chunk["usage"], usage(PROMPT_TOKENS + 1, 10 + 3, 5, 3));
}

#[tokio::test]
async fn max_tokens_caps_with_length() {
    let addr = start(SimConfig::default()).await;
    let (_, _, body) = post(
        addr,
        "/v1/chat/completions",
        &with(chat("Hello there world"), json!({"max_tokens": 4})),
    )
    .await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Simulated reply from gpt-4o-mini."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 4);
    // max_completion_tokens wins over max_tokens; a cap above the length changes nothing.
    let request = with(
        chat("Hello there world"),
        json!({"max_tokens": 2, "max_completion_tokens": 50}),
    );
    let (_, _, body) = post(addr, "/v1/chat/completions", &request).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 9);
    let request = with(
        chat("Hello there world"),
        json!({"max_completion_tokens": 2, "stream": true}),
    );
    let (events, _) = events(addr, &request).await;
    let chunks = chunks(&events);
    assert_eq!(chunks.len(), 4);
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn words_directive_sets_the_length() {
    let addr = start(SimConfig::default()).await;
    let (_, _, body) = post(addr, "/v1/chat/completions", &chat("hi [[sim:words=12]]")).await;
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content.split(' ').count(), 12);
    assert!(
        content.ends_with("hi [[sim:words=12]] lorem lorem lorem lorem"),
        "{content}"
    );
    assert_eq!(body["usage"]["completion_tokens"], 12);
    let (_, _, body) = post(addr, "/v1/chat/completions", &chat("hi [[sim:words=2]]")).await;
    assert_eq!(body["choices"][0]["message"]["content"], "Simulated reply");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn json_mode_returns_a_json_object() {
    let addr = start(SimConfig::default()).await;
    for kind in ["json_object", "json_schema"] {
        let request = with(
            chat("Hello \"there\" world"),
            json!({"response_format": {"type": kind}}),
        );
        let (_, _, body) = post(addr, "/v1/chat/completions", &request).await;
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        let object: Value = serde_json::from_str(content).unwrap();
        assert_eq!(
            object,
            json!({"reply": "Simulated reply from gpt-4o-mini. You said: Hello \"there\" world"})
        );
    }
}

#[tokio::test]
async fn auth_and_bad_requests() {
    let addr = start(SimConfig::default()).await;
    for headers in [
        &[][..],
        &[("authorization", "Bearer ")][..],
        &[("authorization", "sk-test")][..],
    ] {
        let response = send(addr, "/v1/chat/completions", headers, &chat("hi").to_string())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert!(body["error"]["param"].is_null());
    }
    let response = send(addr, "/v1/chat/completions", &[AUTH], "{not json").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not parse the JSON body")
    );

    let (status, _, body) = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["message"], "you must provide a model parameter");
    let (status, _, body) = post(addr, "/v1/chat/completions", &json!({"model": "m"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "messages");
    let (status, _, _) = post(addr, "/v1/chat/completions", &json!({"model": "m", "messages": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = post(addr, "/v1/chat/completions", &json!({"model": "m", "messages": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = post(addr, "/v1/nope", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "Invalid URL (POST /v1/nope)");
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let addr = start(SimConfig::default()).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..20 {
        let body = with(chat(&format!("message {i}")), json!({"stream": i % 2 == 0})).to_string();
        let request = Request::post("/v1/chat/completions")
            .header("host", "sim")
            .header("authorization", "Bearer k")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        if i % 2 == 0 {
            assert!(bytes.ends_with(b"data: [DONE]\n\n"));
        } else {
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            let expected = format!("Simulated reply from gpt-4o-mini. You said: message {i}");
            assert_eq!(body["choices"][0]["message"]["content"], expected.as_str());
        }
    }
}
