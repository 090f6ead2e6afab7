//! Google Cloud Vertex AI: the token endpoint, Claude's `rawPredict` / `streamRawPredict` and
//! Gemini's `generateContent` on a project's paths, and their auth.

use super::*;

const CLAUDE: &str = "/v1/projects/p-1/locations/us-east5/publishers/anthropic/models/claude-x@1";
const GEMINI: &str = "/v1/projects/p-1/locations/us-east5/publishers/google/models/gemini-y";

fn assertion(iat: u64) -> String {
    let part = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = json!({"iss": "sa@p-1.iam.gserviceaccount.com", "aud": "http://sim/token",
        "scope": "https://www.googleapis.com/auth/cloud-platform", "iat": iat, "exp": iat + 3600});
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 256]);
    format!(
        "{}.{}.{signature}",
        part(json!({"alg": "RS256", "typ": "JWT"})),
        part(claims)
    )
}

async fn form(addr: SocketAddr, body: &str) -> (StatusCode, Value) {
    let response = send(addr, "/token", &[], body).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn token(addr: SocketAddr) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
        assertion(now)
    );
    let (status, answer) = form(addr, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (answer["token_type"].as_str(), answer["expires_in"].as_u64()),
        (Some("Bearer"), Some(3599))
    );
    answer["access_token"].as_str().unwrap().to_owned()
}

async fn call(addr: SocketAddr, path: &str, bearer: &str, body: &Value) -> (StatusCode, Bytes) {
    let auth = format!("Bearer {bearer}");
    let response = send(addr, path, &[("authorization", &auth)], &body.to_string())
        .await
        .unwrap();
    let status = response.status();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

fn claude_body() -> Value {
    json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hello there world"}]})
}

#[tokio::test]
async fn the_token_endpoint_checks_the_grant_and_the_assertion() {
    let addr = start(SimConfig::default()).await;
    assert!(token(addr).await.starts_with("ya29."));
    let (status, answer) = form(
        addr,
        &format!("grant_type=client_credentials&assertion={}", assertion(1)),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    let stale = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
        assertion(1)
    );
    let (status, answer) = form(addr, &stale).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn claude_on_vertex_takes_the_model_from_the_path_and_requires_anthropic_version() {
    let addr = start(SimConfig::default()).await;
    let token = token(addr).await;
    let (status, body) = call(addr, &format!("{CLAUDE}:rawPredict"), &token, &claude_body()).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["model"], "claude-x@1");
    assert_eq!(
        answer["content"][0]["text"],
        "Simulated reply from claude-x@1. You said: Hello there world"
    );

    let mut missing = claude_body();
    missing.as_object_mut().unwrap().remove("anthropic_version");
    let (status, body) = call(addr, &format!("{CLAUDE}:rawPredict"), &token, &missing).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("anthropic_version"));

    let streamed = with(claude_body(), json!({"stream": true}));
    let (status, body) = call(addr, &format!("/sim-a{CLAUDE}:streamRawPredict"), &token, &streamed).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.starts_with("event: message_start") && text.contains("event: message_stop"),
        "{text}"
    );
}

#[tokio::test]
async fn gemini_on_vertex_is_the_gemini_api_and_every_model_path_needs_an_issued_token() {
    let addr = start(SimConfig::default()).await;
    let token = token(addr).await;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let (status, answer) = call(addr, &format!("{GEMINI}:generateContent"), &token, &body).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert!(
        answer["usageMetadata"]["promptTokenCount"].as_u64().unwrap() > 0,
        "{answer}"
    );
    let (status, events) = call(addr, &format!("{GEMINI}:streamGenerateContent?alt=sse"), &token, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&events).starts_with("data: {"));

    for bearer in ["sk-test", "ya29.sim-1-0000000000000000", ""] {
        let (status, answer) = call(addr, &format!("{GEMINI}:generateContent"), bearer, &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bearer}");
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["error"]["status"], "UNAUTHENTICATED");
        let (status, _) = call(addr, &format!("{CLAUDE}:rawPredict"), bearer, &claude_body()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bearer}");
    }
}
