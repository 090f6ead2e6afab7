//! The simulator over real sockets: every endpoint, shape and directive, checked on the wire.
//! Shared helpers live here; each module covers one area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use router_one_simulator::{SimConfig, serve};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod anthropic;
mod chat;
mod choices;
mod duplicates;
mod embeddings;
mod faults;
mod gemini;
mod payments;
mod reports;
mod tools;
mod vertex;

async fn start(config: SimConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, config));
    addr
}

/// Sends one request on a fresh connection; `Err` is a connection-level failure.
async fn send(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response<Incoming>, hyper::Error> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut request = Request::post(path)
        .header("host", "sim")
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender
        .send_request(request.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
}

const AUTH: (&str, &str) = ("authorization", "Bearer sk-test");

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (StatusCode, String, Value) {
    let response = send(addr, path, &[AUTH], &body.to_string()).await.unwrap();
    let status = response.status();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, value)
}

/// A whole response body, and whether it ended cleanly (not cut by a dropped connection).
async fn read_to_end(response: Response<Incoming>) -> (Vec<u8>, bool) {
    let mut body = response.into_body();
    let mut raw = Vec::new();
    let clean = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => raw.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
        }
    };
    (raw, clean)
}

/// The data lines of an SSE body, and whether it ended cleanly.
async fn events(addr: SocketAddr, body: &Value) -> (Vec<String>, bool) {
    let response = send(addr, "/v1/chat/completions", &[AUTH], &body.to_string())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (raw, clean) = read_to_end(response).await;
    let text = String::from_utf8(raw).unwrap();
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "events end with a blank line: {text:?}"
    );
    let events = text
        .split_terminator("\n\n")
        .map(|e| e.strip_prefix("data: ").expect("every event is a data line").to_owned())
        .collect();
    (events, clean)
}

fn chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn chat(user: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": user}
    ]})
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn usage(prompt: u64, completion: u64, cached: u64, reasoning: u64) -> Value {
    json!({
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}
