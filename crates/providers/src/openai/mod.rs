//! The OpenAI wire format, spoken by OpenAI and by every OpenAI-compatible vendor (DeepSeek,
//! Mistral, Groq, Together, …), which are presets of this adapter in the operator's config.
//! Bodies pass through: only the model id and stream usage are rewritten.

mod response;
pub mod wire;

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use router_one_core::ApiError;

use crate::provider::{
    ChatApi, ChatRequest, Decoded, OutputLimitField, PreparedRequest, ReadContext, ReadHints, ReadResponse, Refusal,
    StreamDecoder, Target,
};
use crate::refusal;
use crate::request::TopLevel;

pub use response::with_cost;

/// The OpenAI-compatible adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAi {
    /// The field written when admission clamps a request's output.
    pub output_limit_field: OutputLimitField,
}

impl ChatApi for OpenAi {
    fn prepare_chat(&self, request: &ChatRequest<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError> {
        let rename = request.view.model != target.upstream_id;
        // Streams always ask for usage so they can be metered, asked for by the client or not.
        let force_usage = request.view.stream && !request.view.include_usage;
        // A request with no output limit that admission clamped gets the clamp.
        let cap = target.output_cap.filter(|_| request.view.max_output.is_none());
        let body = if rename || force_usage || cap.is_some() {
            let model = serde_json::Value::from(target.upstream_id).to_string();
            let cap = cap.map(|c| c.to_string());
            let mut replace = Vec::with_capacity(3);
            if rename {
                replace.push(("model", model.as_str()));
            }
            if force_usage {
                replace.push(("stream_options", r#"{"include_usage":true}"#));
            }
            if let Some(cap) = &cap {
                replace.push((self.output_limit_field.as_str(), cap.as_str()));
            }
            request.top.write_with(&replace)
        } else {
            request.body.clone()
        };
        Ok(PreparedRequest {
            body,
            path: Cow::Borrowed("/chat/completions"),
            hints: ReadHints::default(),
        })
    }

    fn prepare_embeddings(&self, request: &TopLevel<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError> {
        let model = serde_json::Value::from(target.upstream_id).to_string();
        Ok(PreparedRequest {
            body: request.write_with(&[("model", &model)]),
            path: Cow::Borrowed("/embeddings"),
            hints: ReadHints::default(),
        })
    }

    fn read_chat(&self, body: Bytes, _: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        response::read_response(body)
    }

    fn read_embeddings(&self, body: Bytes, _: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        response::read_response(body)
    }

    fn stream_decoder(&self, _: ReadContext<'_>) -> Box<dyn StreamDecoder> {
        Box::new(response::Decoder::default())
    }

    fn read_error(&self, status: u16, body: &[u8]) -> Refusal {
        #[derive(Deserialize)]
        struct Envelope {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            #[serde(default)]
            message: Option<String>,
        }
        let message = serde_json::from_slice::<Envelope>(body)
            .ok()
            .and_then(|e| e.error.message);
        match status {
            // The client's mistake, already in the client's format.
            400 | 413 | 422 if message.is_some() => Refusal::PassThrough,
            _ => Refusal::Error(refusal::from_status(status, message.as_deref())),
        }
    }

    fn headers(&self, api_key: &str) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let value = HeaderValue::from_str(&format!("Bearer {api_key}")).ok()?;
        Some(vec![(http::header::AUTHORIZATION, value)])
    }
}

impl StreamDecoder for response::Decoder {
    fn decode(&mut self, event: &Bytes, data: Bytes, out: &mut Vec<Bytes>) -> Decoded {
        self.read(event, data, out)
    }

    fn served_model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}
