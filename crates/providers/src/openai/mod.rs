//! The OpenAI wire format, spoken by OpenAI and by every OpenAI-compatible vendor (DeepSeek,
//! Mistral, Groq, Together, …), which are presets of this adapter in the operator's config.

mod response;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use router_one_core::ApiError;

use crate::provider::{ChatApi, ChatRequest, PreparedRequest, ReadResponse};
use crate::request::TopLevel;
use crate::sse::StreamEvent;

/// The OpenAI-compatible adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAi;

impl ChatApi for OpenAi {
    fn prepare_chat(&self, request: &ChatRequest<'_>, upstream_model: &str) -> Result<PreparedRequest, ApiError> {
        let rename = request.view.model != upstream_model;
        // Streams always ask for usage so they can be metered, asked for by the client or not.
        let force_usage = request.view.stream && !request.view.include_usage;
        let body = if rename || force_usage {
            let model = serde_json::Value::from(upstream_model).to_string();
            let mut replace = Vec::with_capacity(2);
            if rename {
                replace.push(("model", model.as_str()));
            }
            if force_usage {
                replace.push(("stream_options", r#"{"include_usage":true}"#));
            }
            request.top.write_with(&replace)
        } else {
            request.body.clone()
        };
        Ok(PreparedRequest {
            body,
            path: "/chat/completions",
        })
    }

    fn prepare_embeddings(&self, request: &TopLevel<'_>, upstream_model: &str) -> Result<PreparedRequest, ApiError> {
        let model = serde_json::Value::from(upstream_model).to_string();
        Ok(PreparedRequest {
            body: request.write_with(&[("model", &model)]),
            path: "/embeddings",
        })
    }

    fn read_response(&self, body: &[u8]) -> Result<ReadResponse, ApiError> {
        response::read_response(body)
    }

    fn with_cost(&self, body: Bytes, usage_end: Option<usize>, cost: &str) -> Bytes {
        response::with_cost(body, usage_end, cost)
    }

    fn read_event(&self, data: &[u8]) -> StreamEvent {
        response::read_event(data)
    }

    fn served_model(&self, data: &[u8]) -> Option<String> {
        response::served_model(data)
    }

    fn auth_header(&self, api_key: &str) -> Option<(HeaderName, HeaderValue)> {
        let value = HeaderValue::from_str(&format!("Bearer {api_key}")).ok()?;
        Some((http::header::AUTHORIZATION, value))
    }
}
