//! The client's request, always in OpenAI format whatever the upstream: split at the top level
//! only (values stay raw bytes), read once, and rewritten without re-parsing, so unknown fields pass
//! through byte for byte.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use router_one_core::{ApiError, ErrorKind};

/// A JSON object's top level: keys with their raw, unparsed values, in order.
#[derive(Debug)]
pub struct TopLevel<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    fields.push((k, v));
                }
                Ok(TopLevel(fields))
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl<'a> TopLevel<'a> {
    /// Splits `body`, or says precisely why it is not a JSON object.
    pub fn parse(body: &'a [u8]) -> Result<TopLevel<'a>, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidJson,
                format!("The request body is not a valid JSON object: {e}"),
            )
        })
    }

    /// The raw value of a top-level field.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Writes the object back, replacing or adding the given fields.
    pub fn write_with(&self, replace: &[(&str, &str)]) -> Bytes {
        let extra: usize = replace.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out =
            Vec::with_capacity(self.0.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>() + extra + 2);
        out.push(b'{');
        let mut first = true;
        let mut push = |out: &mut Vec<u8>, k: &str, v: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            write_json_string(out, k);
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        };
        for (k, v) in &self.0 {
            match replace.iter().find(|(rk, _)| rk == k) {
                Some((_, rv)) => push(&mut out, k, rv),
                None => push(&mut out, k, v.get()),
            }
        }
        for (rk, rv) in replace {
            if !self.0.iter().any(|(k, _)| k == rk) {
                push(&mut out, rk, rv);
            }
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The fields the gateway reads from a chat request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChatView<'a> {
    /// The requested model.
    pub model: Cow<'a, str>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_output: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Reads the fields the gateway needs from a split chat body, with a precise error for each.
pub fn chat_view<'a>(top: &TopLevel<'a>) -> Result<ChatView<'a>, ApiError> {
    let model = model_field(top)?;
    let stream = match top.get("stream") {
        None => false,
        Some(v) => field::<Option<bool>>(v, "stream", "a boolean")?.unwrap_or(false),
    };
    let include_usage = match top.get("stream_options") {
        None => false,
        Some(v) => field::<Option<StreamOptions>>(v, "stream_options", "an object")?
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    };
    let max_output = match (top.get("max_completion_tokens"), top.get("max_tokens")) {
        (Some(v), _) => field::<Option<u64>>(v, "max_completion_tokens", "a non-negative integer")?,
        (None, Some(v)) => field::<Option<u64>>(v, "max_tokens", "a non-negative integer")?,
        (None, None) => None,
    };
    if top.get("messages").is_none() {
        return Err(
            ApiError::new(ErrorKind::InvalidRequest, "Missing required parameter: 'messages'.").with_param("messages"),
        );
    }
    Ok(ChatView {
        model,
        stream,
        include_usage,
        max_output,
    })
}

/// The `model` field, required and a string.
pub fn model_field<'a>(top: &TopLevel<'a>) -> Result<Cow<'a, str>, ApiError> {
    let raw = top.get("model").ok_or_else(|| {
        ApiError::new(ErrorKind::InvalidRequest, "Missing required parameter: 'model'.").with_param("model")
    })?;
    field::<Cow<'a, str>>(raw, "model", "a string")
}

fn field<'a, T: Deserialize<'a>>(raw: &'a RawValue, name: &'static str, what: &str) -> Result<T, ApiError> {
    serde_json::from_str(raw.get()).map_err(|_| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("Invalid type for '{name}': expected {what}."),
        )
        .with_param(name)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_view() {
        let body =
            br#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":{"include_usage":true},"max_tokens":5}"#;
        let top = TopLevel::parse(body).unwrap();
        let v = chat_view(&top).unwrap();
        assert_eq!(
            v,
            ChatView {
                model: "gpt-4o".into(),
                stream: true,
                include_usage: true,
                max_output: Some(5)
            }
        );
    }

    #[test]
    fn precise_errors() {
        let e = chat_view(&TopLevel::parse(br#"{"messages":[]}"#).unwrap()).unwrap_err();
        assert_eq!((e.kind, e.param.as_deref()), (ErrorKind::InvalidRequest, Some("model")));
        let e = chat_view(&TopLevel::parse(br#"{"model":1,"messages":[]}"#).unwrap()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = chat_view(&TopLevel::parse(br#"{"model":"m","messages":[],"max_tokens":-1}"#).unwrap()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert_eq!(TopLevel::parse(b"[1]").err().unwrap().kind, ErrorKind::InvalidJson);
        assert_eq!(TopLevel::parse(b"{\"a\":").err().unwrap().kind, ErrorKind::InvalidJson);
    }

    #[test]
    fn rewrites_only_named_fields() {
        let body = br#"{"model":"a","x":{"deep":[1, 2]},"m\"k":"v"}"#;
        let top = TopLevel::parse(body).unwrap();
        let out = top.write_with(&[("model", "\"b\""), ("stream_options", r#"{"include_usage":true}"#)]);
        assert_eq!(
            &out[..],
            br#"{"model":"b","x":{"deep":[1, 2]},"m\"k":"v","stream_options":{"include_usage":true}}"#
        );
    }
}
