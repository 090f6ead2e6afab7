//! Directives that inject faults and latency: status, malformed, cut, reset, timeout, pacing.

use super::*;

#[tokio::test]
async fn status_directive_from_text_and_header() {
    let addr = start(SimConfig::default()).await;
    let (status, _, body) = post(addr, "/v1/chat/completions", &chat("hi [[sim:status=429]]")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body,
        json!({"error": {"message": "simulated error 429", "type": "requests", "param": null,
            "code": "rate_limit_exceeded"}})
    );
    let response = send(
        addr,
        "/v1/chat/completions",
        &[AUTH, ("x-sim", "status=500")],
        &chat("hi").to_string(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(body["error"]["message"], "simulated error 500");
    let (status, _, body) = post(addr, "/v1/chat/completions", &chat("hi [[sim:status=401]]")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    // Directives in earlier user messages do not count.
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "[[sim:status=500]]"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "fine"}]});
    let (status, _, _) = post(addr, "/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_directive() {
    let addr = start(SimConfig::default()).await;
    let response = send(
        addr,
        "/v1/chat/completions",
        &[AUTH],
        &chat("hi [[sim:malformed]]").to_string(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!bytes.is_empty());
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());

    let (events, clean) = events(addr, &with(chat("hi [[sim:malformed]]"), json!({"stream": true}))).await;
    assert!(clean);
    assert_eq!(events, vec!["{not json".to_owned(), "[DONE]".to_owned()]);
}

#[tokio::test]
async fn cut_directive_drops_the_stream() {
    let addr = start(SimConfig::default()).await;
    let request = with(
        chat("Hello there world [[sim:cut=3]]"),
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let (events, clean) = events(addr, &request).await;
    assert!(!clean, "a cut stream must end in a connection error");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let chunks = chunks(&events);
    assert_eq!(chunks.len(), 4, "role + 3 content chunks");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Simulated reply from");
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null() && c["usage"].is_null())
    );
}

#[tokio::test]
async fn reset_directive_is_a_connection_error() {
    let addr = start(SimConfig::default()).await;
    let result = send(
        addr,
        "/v1/chat/completions",
        &[AUTH],
        &chat("hi [[sim:reset]]").to_string(),
    )
    .await;
    assert!(result.is_err(), "expected a connection error");
    // On a raw socket it is an RST, not a clean close.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = chat("hi").to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\nauthorization: Bearer k\r\nx-sim: reset\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let err = stream.read(&mut buf).await.expect_err("no bytes, no clean EOF");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn timeout_directive_never_answers() {
    let addr = start(SimConfig::default()).await;
    let body = chat("hi [[sim:timeout]]").to_string();
    let pending = send(addr, "/v1/chat/completions", &[AUTH], &body);
    assert!(tokio::time::timeout(Duration::from_millis(300), pending).await.is_err());
    // The server is still fine afterwards.
    let (status, _, _) = post(addr, "/v1/chat/completions", &chat("hi")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn latency_from_config_and_directives() {
    let addr = start(SimConfig {
        ttft: Duration::from_millis(60),
        tpot: Duration::from_millis(5),
        ..SimConfig::default()
    })
    .await;
    let started = Instant::now();
    let (_, _, body) = post(addr, "/v1/chat/completions", &chat("hi [[sim:words=4]]")).await;
    assert_eq!(body["usage"]["completion_tokens"], 4);
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let request = with(chat("hi [[sim:ttft_ms=0,tpot_ms=40,words=4]]"), json!({"stream": true}));
    let response = send(addr, "/v1/chat/completions", &[AUTH], &request.to_string())
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        frame.unwrap();
        frames += 1;
    }
    let elapsed = started.elapsed();
    // 3 gaps of 40 ms between the 4 words, each word its own write.
    assert!(elapsed >= Duration::from_millis(120), "{elapsed:?}");
    assert!(frames >= 4, "{frames} frames");
}
