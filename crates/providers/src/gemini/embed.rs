//! OpenAI embeddings ↔ Gemini `batchEmbedContents`.
//!
//! Gemini's embed answers carry no token counts, yet every request must be metered: usage is a
//! conservative estimate of **one token per 3 UTF-8 bytes of each input, rounded up, at least 1
//! per input** (real tokenizers average about 4 bytes per token on English text, so this errs
//! towards counting more). The estimate and `encoding_format` are noted in the request's
//! [`ReadHints`] when it is prepared, and read back with the answer.

use std::borrow::Cow;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use router_one_core::{ApiError, ErrorKind, TokenUsage};

use super::request::FAMILY;
use super::response::garbage;
use super::wire::{BatchEmbedRequest, BatchEmbedResponse, EmbedRequest, Part, SystemInstruction};
use crate::openai::wire::{invalid, unsupported};
use crate::provider::{PreparedRequest, ReadContext, ReadHints, ReadResponse, Target};
use crate::request::TopLevel;

/// `input`: one string or a list of strings (token arrays are refused).
#[derive(Deserialize)]
#[serde(untagged)]
enum Input<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

/// A request's fields, read and checked.
struct Parsed<'a> {
    inputs: Vec<Cow<'a, str>>,
    base64: bool,
    dimensions: Option<u64>,
}

fn parse<'a>(top: &TopLevel<'a>) -> Result<Parsed<'a>, ApiError> {
    let mut parsed = Parsed {
        inputs: Vec::new(),
        base64: false,
        dimensions: None,
    };
    let mut has_input = false;
    for (key, value) in &top.0 {
        let text = value.get();
        match &**key {
            "model" | "user" => {}
            "input" => {
                has_input = true;
                parsed.inputs = match serde_json::from_str::<Input<'a>>(text) {
                    Ok(Input::One(one)) => vec![one],
                    Ok(Input::Many(many)) if !many.is_empty() => many,
                    Ok(Input::Many(_)) => return Err(invalid("input", "'input' must not be empty.")),
                    Err(_) => {
                        return Err(unsupported(
                            "input",
                            FAMILY,
                            "'input' must be a string or an array of strings (token arrays cannot be embedded).",
                        ));
                    }
                };
            }
            "encoding_format" => {
                parsed.base64 = match text {
                    "null" | "\"float\"" => false,
                    "\"base64\"" => true,
                    _ => return Err(invalid("encoding_format", "'encoding_format' must be float or base64.")),
                }
            }
            "dimensions" if text == "null" => {}
            "dimensions" => match serde_json::from_str::<u64>(text) {
                Ok(n) if n > 0 => parsed.dimensions = Some(n),
                _ => return Err(invalid("dimensions", "'dimensions' must be a positive integer.")),
            },
            other => {
                return Err(unsupported(
                    other.to_owned(),
                    FAMILY,
                    "this field is not supported for embeddings.",
                ));
            }
        }
    }
    if !has_input {
        return Err(invalid("input", "Missing required parameter: 'input'."));
    }
    Ok(parsed)
}

/// Translates an embeddings request.
pub(crate) fn prepare(top: &TopLevel<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError> {
    let parsed = parse(top)?;
    let model = format!("models/{}", target.upstream_id);
    let body = BatchEmbedRequest {
        requests: parsed
            .inputs
            .iter()
            .map(|text| EmbedRequest {
                model: &model,
                content: SystemInstruction {
                    parts: vec![Part::Text { text }],
                },
                output_dimensionality: parsed.dimensions,
            })
            .collect(),
    };
    let body = serde_json::to_vec(&body)
        .map_err(|_| ApiError::new(ErrorKind::Internal, "The request could not be written for Gemini."))?;
    Ok(PreparedRequest {
        body: body.into(),
        path: Cow::Owned(format!("/models/{}:batchEmbedContents", target.upstream_id)),
        hints: ReadHints {
            base64: parsed.base64,
            prompt_tokens_estimate: parsed.inputs.iter().map(|i| (i.len() as u64).div_ceil(3).max(1)).sum(),
        },
    })
}

/// Reads a `batchEmbedContents` answer as an OpenAI embeddings list, usage last.
pub(crate) fn read(body: &[u8], context: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
    let answer: BatchEmbedResponse<'_> = serde_json::from_slice(body).map_err(|_| garbage())?;
    let mut out = Vec::with_capacity(body.len() + 64 * answer.embeddings.len() + 128);
    out.extend_from_slice(br#"{"object":"list","data":["#);
    for (i, embedding) in answer.embeddings.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"object":"embedding","index":"#);
        out.extend_from_slice(i.to_string().as_bytes());
        out.extend_from_slice(br#","embedding":"#);
        write_vector(&mut out, embedding.values, context.hints.base64)?;
        out.push(b'}');
    }
    // At least one token per vector, whatever the hint says.
    let tokens = context.hints.prompt_tokens_estimate.max(answer.embeddings.len() as u64);
    out.extend_from_slice(br#"],"model":"#);
    serde_json::to_writer(&mut out, context.upstream_id).map_err(|_| garbage())?;
    out.extend_from_slice(br#","usage":{"prompt_tokens":"#);
    out.extend_from_slice(tokens.to_string().as_bytes());
    out.extend_from_slice(br#","total_tokens":"#);
    out.extend_from_slice(tokens.to_string().as_bytes());
    out.extend_from_slice(b"}}");
    Ok(ReadResponse {
        // The usage object is written last: it closes just before the body's final brace.
        usage_end: Some(out.len() - 2),
        body: Bytes::from(out),
        served_model: Some(context.upstream_id.to_owned()),
        usage: Some(TokenUsage {
            prompt_tokens: tokens,
            ..TokenUsage::default()
        }),
        upstream_response_id: None,
    })
}

/// One vector: the upstream's number text as received, or base64 of its `f32` bytes.
fn write_vector(out: &mut Vec<u8>, values: &RawValue, base64: bool) -> Result<(), ApiError> {
    if !base64 {
        if !values.get().starts_with('[') {
            return Err(garbage());
        }
        out.extend_from_slice(values.get().as_bytes());
        return Ok(());
    }
    let floats: Vec<f32> = serde_json::from_str(values.get()).map_err(|_| garbage())?;
    let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
    out.push(b'"');
    out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(bytes).as_bytes());
    out.push(b'"');
    Ok(())
}
