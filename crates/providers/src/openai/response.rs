//! Reading OpenAI-format responses and stream events: the served model and usage, and adding
//! `usage.cost` without re-serializing the body.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use router_one_core::{ApiError, ErrorKind, TokenUsage};

use crate::provider::{Decoded, HeldUsage, ReadResponse};

/// OpenAI's `usage` object (and DeepSeek's cache fields, which some compatible vendors send).
#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    /// DeepSeek reports cache hits here instead of `prompt_tokens_details`.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    fn tokens(&self) -> TokenUsage {
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .or(self.prompt_cache_hit_tokens)
            .unwrap_or(0);
        TokenUsage {
            prompt_tokens: self.prompt_tokens,
            // As reported: settlement bounds it (cached above prompt is an implausible report).
            cached_tokens: cached,
            cache_write_tokens: 0,
            completion_tokens: self.completion_tokens,
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<&'a RawValue>,
}

/// The head of an OpenAI answer or chunk, which is always a JSON object. An array is refused:
/// serde reads a struct from one by position, so `["m", {"prompt_tokens": 1}]` would name a model
/// and report usage while the client got an array.
fn read_head(data: &[u8]) -> Option<Head<'_>> {
    if !data.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    serde_json::from_slice(data).ok()
}

fn upstream_garbage() -> ApiError {
    ApiError::new(
        ErrorKind::UpstreamError,
        "The upstream provider returned a response that is not valid JSON.",
    )
}

/// Reads served model and usage from a complete response body, which goes to the client as is.
pub(crate) fn read_response(body: Bytes) -> Result<ReadResponse, ApiError> {
    let head = read_head(&body).ok_or_else(upstream_garbage)?;
    let usage = match head.usage {
        Some(raw) if raw.get() != "null" => Some(parse_usage(raw)?),
        _ => None,
    };
    let usage_end = head.usage.and_then(|raw| object_end(&body, raw));
    let served_model = head.model.map(Cow::into_owned);
    let upstream_response_id = head.id.map(Cow::into_owned);
    Ok(ReadResponse {
        body,
        served_model,
        usage,
        usage_end,
        upstream_response_id,
    })
}

fn parse_usage(raw: &RawValue) -> Result<TokenUsage, ApiError> {
    serde_json::from_str::<WireUsage>(raw.get())
        .map(|u| u.tokens())
        .map_err(|_| upstream_garbage())
}

/// Decodes an OpenAI stream: events pass to the client untouched (no copy), except the
/// usage-only chunk, which is held so its cost can be added at the end.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// The model named by the first event.
    pub(crate) model: Option<String>,
    /// The upstream's id for its answer, named by the first event (every chunk repeats it).
    pub(crate) id: Option<String>,
}

impl Decoder {
    pub(crate) fn read(&mut self, event: &Bytes, data: Bytes, out: &mut Vec<Bytes>) -> Decoded {
        if self.model.is_none()
            && let Some(head) = read_head(&data)
        {
            self.model = head.model.map(Cow::into_owned);
            self.id = head.id.map(Cow::into_owned);
        }
        match read_event(&data) {
            StreamEvent::Done => Decoded {
                done: true,
                ..Decoded::default()
            },
            StreamEvent::Usage {
                usage,
                usage_only: true,
                usage_end,
            } => Decoded {
                usage: Some(usage),
                held: Some(HeldUsage { chunk: data, usage_end }),
                ..Decoded::default()
            },
            StreamEvent::Usage { usage, .. } => {
                out.push(event.clone());
                Decoded {
                    usage: Some(usage),
                    ..Decoded::default()
                }
            }
            StreamEvent::Other => {
                out.push(event.clone());
                Decoded::default()
            }
            StreamEvent::Error => {
                out.push(event.clone());
                Decoded {
                    error: true,
                    ..Decoded::default()
                }
            }
            StreamEvent::Malformed => Decoded {
                malformed: true,
                ..Decoded::default()
            },
        }
    }
}

/// What one OpenAI stream event is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StreamEvent {
    /// The terminal `[DONE]` sentinel.
    Done,
    /// An event carrying usage; `usage_only` when it carries nothing else (`"choices": []`).
    Usage {
        usage: TokenUsage,
        usage_only: bool,
        usage_end: Option<usize>,
    },
    /// An ordinary event.
    Other,
    /// An error event.
    Error,
    /// Not a JSON object: the stream is broken.
    Malformed,
}

/// Classifies one stream event's data.
fn read_event(data: &[u8]) -> StreamEvent {
    if data == b"[DONE]" {
        return StreamEvent::Done;
    }
    // Every OpenAI stream event is one JSON object. A cheap shape check catches truncated or
    // garbled events without parsing each one; events with usage are parsed in full below.
    let trimmed = data.trim_ascii();
    if !(trimmed.starts_with(b"{") && trimmed.ends_with(b"}")) {
        return StreamEvent::Malformed;
    }
    if memchr::memmem::find(data, b"\"usage\"").is_none() {
        if data.starts_with(b"{\"error\"") {
            return StreamEvent::Error;
        }
        return StreamEvent::Other;
    }
    let Some(head) = read_head(data) else {
        return StreamEvent::Malformed;
    };
    match head.usage {
        Some(raw) if raw.get() != "null" => match parse_usage(raw) {
            Ok(usage) => {
                let usage_only = head
                    .choices
                    .is_none_or(|c| c.get().trim_start_matches('[').trim_start().starts_with(']'));
                StreamEvent::Usage {
                    usage,
                    usage_only,
                    usage_end: object_end(data, raw),
                }
            }
            Err(_) => StreamEvent::Other,
        },
        _ => StreamEvent::Other,
    }
}

/// `body` with `"cost": <cost>` (a JSON number whose text is the exact decimal, OpenRouter's
/// convention: typed clients expect a number, exact readers keep every digit) added inside its
/// top-level `usage` object, whose closing brace
/// is at `close` (from [`ReadResponse::usage_end`]). Without one, `body` is returned unchanged.
pub fn with_cost(body: Bytes, close: Option<usize>, cost: &str) -> Bytes {
    let Some(close) = close.filter(|c| body.get(*c) == Some(&b'}')) else {
        return body;
    };
    let empty = body[..close].iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let mut out = Vec::with_capacity(body.len() + cost.len() + 12);
    out.extend_from_slice(&body[..close]);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(b"\"cost\":");
    out.extend_from_slice(cost.as_bytes());
    out.extend_from_slice(&body[close..]);
    Bytes::from(out)
}

/// The offset in `body` of the closing `}` of `raw`, an object parsed from `body`.
fn object_end(body: &[u8], raw: &RawValue) -> Option<usize> {
    let raw = raw.get();
    if !raw.starts_with('{') {
        return None;
    }
    // `raw` borrows from `body`: its position is the difference of the two addresses.
    let start = (raw.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start + raw.len() - 1;
    (body.get(end) == Some(&b'}')).then_some(end)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const RESPONSE: &str = r#"{"id":"c1","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"hi \"usage\": {}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#;

    #[test]
    fn reads_model_and_usage() {
        let r = read_response(Bytes::from_static(RESPONSE.as_bytes())).unwrap();
        assert_eq!(r.served_model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(
            r.usage.unwrap(),
            TokenUsage {
                prompt_tokens: 12,
                cached_tokens: 4,
                cache_write_tokens: 0,
                completion_tokens: 7,
                reasoning_tokens: 2
            }
        );
    }

    fn add_cost(body: &'static str, cost: &str) -> Bytes {
        let end = read_response(Bytes::from_static(body.as_bytes())).unwrap().usage_end;
        with_cost(Bytes::from(body), end, cost)
    }

    #[test]
    fn adds_cost_inside_usage_only() {
        let out = add_cost(RESPONSE, "0.0001");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        // A number whose text is the exact decimal.
        assert!(v["usage"]["cost"].is_number());
        assert!(out.windows(13).any(|w| w == br#""cost":0.0001"#));
        assert_eq!(v["choices"][0]["message"]["content"], "hi \"usage\": {}");
        let spaced = add_cost(r#"{"usage": { } }"#, "1");
        assert_eq!(&spaced[..], br#"{"usage": { "cost":1} }"#);
        assert_eq!(&add_cost(r#"{"usage":null}"#, "1")[..], br#"{"usage":null}"#);
    }

    /// Found by fuzzing (`openai_response`): a JSON array was read by position as a completion,
    /// naming a model and usage, and went to the client as a successful answer.
    #[test]
    fn an_array_is_not_an_answer() {
        let array = Bytes::from_static(br#" ["gpt-4o", {"prompt_tokens": 5, "completion_tokens": 1}]"#);
        let error = read_response(array).unwrap_err();
        assert_eq!(error.kind, ErrorKind::UpstreamError);
        assert!(read_head(br#"["gpt-4o"]"#).is_none());
    }

    #[test]
    fn classifies_stream_events() {
        assert_eq!(read_event(b"[DONE]"), StreamEvent::Done);
        assert_eq!(
            read_event(br#"{"choices":[{"delta":{"content":"x"}}],"usage":null}"#),
            StreamEvent::Other
        );
        let usage = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        assert_eq!(
            read_event(usage),
            StreamEvent::Usage {
                usage: TokenUsage {
                    prompt_tokens: 3,
                    completion_tokens: 2,
                    ..Default::default()
                },
                usage_only: true,
                usage_end: Some(usage.len() - 2)
            }
        );
        let with_choice =
            br#"{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        assert!(matches!(
            read_event(with_choice),
            StreamEvent::Usage { usage_only: false, .. }
        ));
        assert_eq!(read_event(br#"{"error":{"message":"x"}}"#), StreamEvent::Error);
        assert_eq!(read_event(b"{not json"), StreamEvent::Malformed);
        assert_eq!(
            read_event(br#"{"choices":[{"delta":{"content":"x"}}],"usage":nu"#),
            StreamEvent::Malformed
        );
    }

    #[test]
    fn deepseek_cache_hits_count_as_cached() {
        let r = read_response(Bytes::from_static(br#"{"model":"deepseek-chat","usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_cache_hit_tokens":6}}"#)).unwrap();
        assert_eq!(r.usage.unwrap().cached_tokens, 6);
    }

    #[test]
    fn garbage_is_an_upstream_error() {
        assert_eq!(
            read_response(Bytes::from_static(b"{\"id\": ")).unwrap_err().kind,
            ErrorKind::UpstreamError
        );
    }
}
