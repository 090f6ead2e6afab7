//! Embeddings: float and base64 encodings, dimensions, usage and rejected inputs.

use super::*;

async fn embed(addr: SocketAddr, body: Value) -> Value {
    let (status, _, value) = post(addr, "/v1/embeddings", &body).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

#[tokio::test]
async fn embeddings_float() {
    let addr = start(SimConfig::default()).await;
    let body = embed(
        addr,
        json!({"model": "text-embedding-3-small", "input": ["hello world", "bye"]}),
    )
    .await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "text-embedding-3-small");
    assert_eq!(body["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let vectors: Vec<Vec<f32>> = data
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!((&item["object"], &item["index"]), (&json!("embedding"), &json!(i)));
            serde_json::from_value(item["embedding"].clone()).unwrap()
        })
        .collect();
    assert!(vectors.iter().all(|v| v.len() == 1536 && (norm(v) - 1.0).abs() < 1e-4));
    assert_ne!(vectors[0], vectors[1]);
    let again = embed(addr, json!({"model": "text-embedding-3-small", "input": "hello world"})).await;
    let same: Vec<f32> = serde_json::from_value(again["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(same, vectors[0]);

    let large = embed(
        addr,
        json!({"model": "text-embedding-3-large", "input": [[1, 2, 3], [4]]}),
    )
    .await;
    assert_eq!(large["data"][0]["embedding"].as_array().unwrap().len(), 3072);
    assert_eq!(large["usage"]["prompt_tokens"], 4);
    let other = embed(addr, json!({"model": "nomic", "input": [5, 6, 7], "dimensions": 8})).await;
    assert_eq!(other["data"].as_array().unwrap().len(), 1);
    assert_eq!(other["data"][0]["embedding"].as_array().unwrap().len(), 8);
    let default = embed(addr, json!({"model": "nomic", "input": "x"})).await;
    assert_eq!(default["data"][0]["embedding"].as_array().unwrap().len(), 1024);
}

#[tokio::test]
async fn embeddings_base64_decode_to_the_float_vector() {
    let addr = start(SimConfig::default()).await;
    let request = json!({"model": "text-embedding-3-small", "input": "hello", "dimensions": 256});
    let floats = embed(addr, request.clone()).await;
    let b64 = embed(addr, with(request, json!({"encoding_format": "base64"}))).await;
    let encoded = b64["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    assert_eq!(bytes.len(), 256 * 4);
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert!((norm(&decoded) - 1.0).abs() < 1e-4);
    let expected: Vec<f32> = serde_json::from_value(floats["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(decoded, expected);
}

#[tokio::test]
async fn embeddings_reject_bad_input() {
    let addr = start(SimConfig::default()).await;
    for body in [
        json!({"model": "m", "input": ""}),
        json!({"model": "m", "input": []}),
        json!({"model": "m", "input": ["a", 1]}),
        json!({"model": "m", "input": "a", "encoding_format": "hex"}),
        json!({"model": "m", "input": "a", "dimensions": 0}),
        json!({"model": "m"}),
        json!({"input": "a"}),
    ] {
        let (status, _, error) = post(addr, "/v1/embeddings", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    let (status, _, error) = post(
        addr,
        "/v1/embeddings",
        &json!({"model": "m", "input": "x [[sim:status=503]]"}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error["error"]["code"], "server_error");
}
