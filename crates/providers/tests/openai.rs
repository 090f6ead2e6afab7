//! The OpenAI-compatible adapter's request side: what goes upstream is exactly what the gateway
//! metered (model, stream usage, output limit), and a body that needs no change passes through
//! byte for byte.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use serde_json::{Value, json};

use router_one_core::{ApiError, Model};
use router_one_providers::openai::OpenAi;
use router_one_providers::request::{TopLevel, chat_view};
use router_one_providers::{ChatApi, ChatRequest, OutputLimitField, Target};

fn model() -> Model {
    serde_json::from_value(json!({
        "id": "gpt-x", "family": "gpt", "kind": "chat", "context_window": 128000,
        "max_output": 16000, "input_per_mtok": "2", "cached_input_per_mtok": "1",
        "output_per_mtok": "8", "route": []
    }))
    .unwrap()
}

/// Prepares `body` with `limit` as admission's output limit; returns the upstream body.
fn prepare(field: OutputLimitField, body: &str, upstream_id: &str, limit: Option<u64>) -> Result<Bytes, ApiError> {
    let body = Bytes::copy_from_slice(body.as_bytes());
    let top = TopLevel::parse(&body)?;
    let view = chat_view(&top)?;
    let request = ChatRequest {
        body: &body,
        top: &top,
        view: &view,
    };
    let model = model();
    let target = Target {
        model: &model,
        upstream_id,
        output_limit: limit,
    };
    let adapter = OpenAi {
        output_limit_field: field,
    };
    Ok(adapter.prepare_chat(&request, target)?.body)
}

fn json_of(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn a_body_that_matches_what_was_metered_passes_untouched() {
    let body = r#"{"model":"gpt-x", "messages":[{"role":"user","content":"hi"}], "max_tokens": 7, "x":{"y":1}}"#;
    let out = prepare(OutputLimitField::MaxTokens, body, "gpt-x", Some(7)).unwrap();
    assert_eq!(&out[..], body.as_bytes());
}

#[test]
fn the_upstream_gets_the_metered_limit_in_its_own_field_and_never_the_other() {
    // The client named only the field this provider ignores: the provider's field gets the limit.
    let body = r#"{"model":"gpt-x","messages":[],"max_completion_tokens":5}"#;
    let out = json_of(&prepare(OutputLimitField::MaxTokens, body, "gpt-x", Some(5)).unwrap());
    assert_eq!(out["max_tokens"], 5);
    assert!(out.get("max_completion_tokens").is_none(), "{out}");
    // Both named (the larger was reserved): only the reserved limit goes, once.
    let body = r#"{"model":"gpt-x","messages":[],"max_completion_tokens":1,"max_tokens":900}"#;
    let out = json_of(&prepare(OutputLimitField::MaxCompletionTokens, body, "gpt-x", Some(900)).unwrap());
    assert_eq!(out["max_completion_tokens"], 900);
    assert!(out.get("max_tokens").is_none(), "{out}");
    // None named: admission's default (or clamp) is added.
    let body = r#"{"model":"gpt-x","messages":[]}"#;
    let out = json_of(&prepare(OutputLimitField::MaxTokens, body, "gpt-x", Some(4096)).unwrap());
    assert_eq!(out["max_tokens"], 4096);
    // Above the model's maximum: what was reserved (the maximum) is what is sent.
    let body = r#"{"model":"gpt-x","messages":[],"max_tokens":1000000}"#;
    let out = json_of(&prepare(OutputLimitField::MaxTokens, body, "gpt-x", Some(16000)).unwrap());
    assert_eq!(out["max_tokens"], 16000);
}

#[test]
fn streams_always_ask_for_usage_and_the_model_is_the_upstream_id() {
    let body =
        r#"{"model":"alias","messages":[],"stream":true,"stream_options":{"include_usage":false},"max_tokens":3}"#;
    let out = json_of(&prepare(OutputLimitField::MaxTokens, body, "gpt-x-2026", Some(3)).unwrap());
    assert_eq!(out["model"], "gpt-x-2026");
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
    let body = r#"{"model":"gpt-x","messages":[],"stream":true,"max_tokens":3}"#;
    let out = json_of(&prepare(OutputLimitField::MaxTokens, body, "gpt-x", Some(3)).unwrap());
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
}

#[test]
fn a_repeated_field_never_reaches_the_upstream() {
    for body in [
        r#"{"model":"gpt-x","messages":[],"model":"gpt-dear"}"#,
        r#"{"model":"gpt-x","messages":[],"max_tokens":1,"max_tokens":1000}"#,
        r#"{"model":"gpt-x","messages":[],"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}"#,
    ] {
        let e = prepare(OutputLimitField::MaxTokens, body, "gpt-x", Some(1)).unwrap_err();
        assert_eq!(e.kind.status(), 400, "{body}");
    }
    // Inside stream_options too: the gateway's reader refuses it rather than guess.
    let body = r#"{"model":"gpt-x","messages":[],"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}"#;
    assert_eq!(
        prepare(OutputLimitField::MaxTokens, body, "gpt-x", Some(1))
            .unwrap_err()
            .param
            .as_deref(),
        Some("stream_options")
    );
}
