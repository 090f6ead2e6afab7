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
        let view = request.view;
        // What goes upstream is exactly what was metered: the model the key was checked and
        // priced for, a stream that reports usage whatever the client asked, and the output
        // limit admission reserved for, in the one field this provider reads.
        let model = (view.model != target.upstream_id).then(|| serde_json::Value::from(target.upstream_id).to_string());
        let force_usage = view.stream && !view.include_usage;
        let field = self.output_limit_field;
        let sent = match field {
            OutputLimitField::MaxTokens => view.max_tokens,
            OutputLimitField::MaxCompletionTokens => view.max_completion_tokens,
        };
        let limit = request
            .output_limit(target)
            .filter(|limit| sent != Some(*limit))
            .map(|limit| limit.to_string());
        let other = field.other().as_str();
        let drop_other = request.top.get(other).is_some();
        let body = if model.is_some() || force_usage || limit.is_some() || drop_other {
            let mut edits = Vec::with_capacity(4);
            if let Some(model) = &model {
                edits.push(("model", Some(model.as_str())));
            }
            if force_usage {
                edits.push(("stream_options", Some(r#"{"include_usage":true}"#)));
            }
            if let Some(limit) = &limit {
                edits.push((field.as_str(), Some(limit.as_str())));
            }
            if drop_other {
                edits.push((other, None));
            }
            request.top.write_with(&edits)
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
            body: request.write_with(&[("model", Some(&model))]),
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
            // The client's mistake, already in the client's format (unless it speaks of our
            // account at the provider, which a relay would take for the reseller's).
            400 | 413 | 422 if message.is_some() && !refusal::about_our_account(body) => Refusal::PassThrough,
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

    fn upstream_response_id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}
