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
    /// Splits `body`, or says precisely why it is not a JSON object. A field that appears twice
    /// is refused: the gateway and the upstream must read the same value (parsers disagree on
    /// which duplicate wins, and an upstream keeping the last one would be served something
    /// other than what was metered).
    pub fn parse(body: &'a [u8]) -> Result<TopLevel<'a>, ApiError> {
        let top: TopLevel<'a> = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidJson,
                format!("The request body is not a valid JSON object: {e}"),
            )
        })?;
        if let Some(key) = top.first_duplicate() {
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                format!("The field '{key}' appears more than once in the request body; send each field once."),
            )
            .with_param(key.to_owned()));
        }
        Ok(top)
    }

    /// The first key that appears twice. Real requests have a dozen fields: compared pairwise;
    /// a body with thousands of keys goes through a set, so it cannot cost quadratic time.
    fn first_duplicate(&self) -> Option<&str> {
        const PAIRWISE: usize = 32;
        let keys = || self.0.iter().map(|(k, _)| k.as_ref());
        if self.0.len() <= PAIRWISE {
            return keys()
                .enumerate()
                .find(|&(i, key)| keys().take(i).any(|earlier| earlier == key))
                .map(|(_, key)| key);
        }
        let mut seen = std::collections::HashSet::with_capacity(self.0.len());
        keys().find(|key| !seen.insert(*key))
    }

    /// The raw value of a top-level field.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Writes the object back with the given edits: `(key, Some(json))` replaces the field's value
    /// or adds the field at the end, `(key, None)` removes it. Every other field keeps its bytes.
    pub fn write_with(&self, edits: &[(&str, Option<&str>)]) -> Bytes {
        let extra: usize = edits.iter().map(|(k, v)| k.len() + v.map_or(0, str::len) + 4).sum();
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
            match edits.iter().find(|(ek, _)| ek == k) {
                Some((_, Some(ev))) => push(&mut out, k, ev),
                Some((_, None)) => {}
                None => push(&mut out, k, v.get()),
            }
        }
        for (ek, ev) in edits {
            if let Some(ev) = ev
                && !self.0.iter().any(|(k, _)| k == ek)
            {
                push(&mut out, ek, ev);
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
    /// `max_tokens`.
    pub max_tokens: Option<u64>,
    /// `max_completion_tokens`.
    pub max_completion_tokens: Option<u64>,
    /// `n`: how many choices the upstream generates, each up to the output limit (1 when absent).
    pub choices: u64,
}

impl ChatView<'_> {
    /// The output limit the client named: the larger of `max_tokens` and `max_completion_tokens`
    /// when it names both, since an upstream may honour either one.
    pub fn max_output(&self) -> Option<u64> {
        match (self.max_tokens, self.max_completion_tokens) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The most choices one request may ask for (OpenAI's own limit).
pub const MAX_CHOICES: u64 = 128;

/// The longest model id accepted, in bytes; a longer one is refused before anything is recorded.
pub const MAX_MODEL_ID_BYTES: usize = 256;

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
    let count = |name: &'static str| match top.get(name) {
        None => Ok(None),
        Some(v) => field::<Option<u64>>(v, name, "a non-negative integer"),
    };
    let max_tokens = count("max_tokens")?;
    let max_completion_tokens = count("max_completion_tokens")?;
    let choices = count("n")?.unwrap_or(1);
    if !(1..=MAX_CHOICES).contains(&choices) {
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("'n' must be between 1 and {MAX_CHOICES}."),
        )
        .with_param("n"));
    }
    if top.get("messages").is_none() {
        return Err(
            ApiError::new(ErrorKind::InvalidRequest, "Missing required parameter: 'messages'.").with_param("messages"),
        );
    }
    refuse_off_rate(top)?;
    Ok(ChatView {
        model,
        stream,
        include_usage,
        max_tokens,
        max_completion_tokens,
        choices,
    })
}

/// Refuses the fields that make an upstream bill beyond the model's posted token rates by an
/// amount the request does not bound (promise 3: the worst case must be known before the request
/// is sent, and it is priced at the posted rates): a 400 naming the field.
fn refuse_off_rate(top: &TopLevel<'_>) -> Result<(), ApiError> {
    let refuse = |name: &'static str, why: &str| {
        Err(ApiError::new(ErrorKind::InvalidRequest, format!("'{name}' is not supported: {why}")).with_param(name))
    };
    let is_set = |name: &str| top.get(name).is_some_and(|v| v.get().trim() != "null");
    if let Some(v) = top.get("service_tier") {
        match field::<Option<Cow<'_, str>>>(v, "service_tier", "a string")?.as_deref() {
            None | Some("auto" | "default" | "flex") => {}
            Some(_) => {
                return refuse(
                    "service_tier",
                    "that tier is billed above the posted rates; use \"auto\", \"default\" or \"flex\".",
                );
            }
        }
    }
    if let Some(v) = top.get("modalities") {
        let modalities = field::<Option<Vec<Cow<'_, str>>>>(v, "modalities", "an array of strings")?;
        if modalities.iter().flatten().any(|m| m != "text") {
            return refuse(
                "modalities",
                "only text output is priced; audio is billed at rates not posted here.",
            );
        }
    }
    if is_set("audio") {
        return refuse("audio", "audio output is billed at rates not posted here.");
    }
    if is_set("web_search_options") {
        return refuse(
            "web_search_options",
            "web search is billed per call, outside the posted token rates.",
        );
    }
    if is_set("prediction") {
        return refuse(
            "prediction",
            "rejected prediction tokens are billed beyond max_tokens, so the cost cannot be bounded before \
             the request is sent.",
        );
    }
    Ok(())
}

/// The `model` field, required, a string, and at most [`MAX_MODEL_ID_BYTES`] long.
pub fn model_field<'a>(top: &TopLevel<'a>) -> Result<Cow<'a, str>, ApiError> {
    let raw = top.get("model").ok_or_else(|| {
        ApiError::new(ErrorKind::InvalidRequest, "Missing required parameter: 'model'.").with_param("model")
    })?;
    let model = field::<Cow<'a, str>>(raw, "model", "a string")?;
    if model.len() > MAX_MODEL_ID_BYTES {
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("The model id is longer than {MAX_MODEL_ID_BYTES} bytes; GET /v1/models lists the models."),
        )
        .with_param("model"));
    }
    Ok(model)
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
                max_tokens: Some(5),
                max_completion_tokens: None,
                choices: 1,
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
        let out = top.write_with(&[
            ("model", Some("\"b\"")),
            ("stream_options", Some(r#"{"include_usage":true}"#)),
        ]);
        assert_eq!(
            &out[..],
            br#"{"model":"b","x":{"deep":[1, 2]},"m\"k":"v","stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn a_duplicate_field_is_refused_naming_it() {
        for (body, field) in [
            (r#"{"model":"cheap","messages":[],"model":"dear"}"#, "model"),
            (
                r#"{"model":"m","messages":[],"max_tokens":1,"max_tokens":1000}"#,
                "max_tokens",
            ),
            (
                r#"{"stream":true,"stream_options":{"include_usage":true},"model":"m","stream_options":{}}"#,
                "stream_options",
            ),
        ] {
            let e = TopLevel::parse(body.as_bytes()).unwrap_err();
            assert_eq!(
                (e.kind, e.param.as_deref()),
                (ErrorKind::InvalidRequest, Some(field)),
                "{body}"
            );
        }
        // Many keys go through the set, and still find the repeat.
        let mut many: String = (0..5_000).map(|i| format!("\"k{i}\":{i},")).collect();
        many.insert(0, '{');
        many.push_str("\"k4999\":0}");
        let e = TopLevel::parse(many.as_bytes()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("k4999"));
        // A repeated key inside a nested object is the nested reader's business, not the split's.
        assert!(TopLevel::parse(br#"{"a":{"b":1,"b":2}}"#).is_ok());
    }

    #[test]
    fn reads_choices_and_both_output_limits() {
        let top =
            TopLevel::parse(br#"{"model":"m","messages":[],"n":8,"max_tokens":5,"max_completion_tokens":50}"#).unwrap();
        let v = chat_view(&top).unwrap();
        assert_eq!((v.choices, v.max_output()), (8, Some(50)));
        for bad in [r#""n":0"#, r#""n":129"#, r#""n":-1"#, r#""n":"2""#, r#""n":1.5"#] {
            let body = format!(r#"{{"model":"m","messages":[],{bad}}}"#);
            let e = chat_view(&TopLevel::parse(body.as_bytes()).unwrap()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("n"), "{bad}");
        }
        let top = TopLevel::parse(br#"{"model":"m","messages":[],"n":null}"#).unwrap();
        assert_eq!(chat_view(&top).unwrap().choices, 1);
    }

    #[test]
    fn fields_billed_off_the_posted_rates_are_refused() {
        for (extra, field) in [
            (r#""service_tier":"priority""#, "service_tier"),
            (r#""service_tier":"scale""#, "service_tier"),
            (r#""modalities":["text","audio"]"#, "modalities"),
            (r#""audio":{"voice":"alloy","format":"mp3"}"#, "audio"),
            (r#""web_search_options":{}"#, "web_search_options"),
            (r#""prediction":{"type":"content","content":"x"}"#, "prediction"),
        ] {
            let body = format!(r#"{{"model":"m","messages":[],{extra}}}"#);
            let e = chat_view(&TopLevel::parse(body.as_bytes()).unwrap()).unwrap_err();
            assert_eq!(
                (e.kind, e.param.as_deref()),
                (ErrorKind::InvalidRequest, Some(field)),
                "{extra}"
            );
        }
        for fine in [
            r#""service_tier":"auto""#,
            r#""service_tier":"flex""#,
            r#""service_tier":null"#,
            r#""modalities":["text"]"#,
            r#""audio":null"#,
        ] {
            let body = format!(r#"{{"model":"m","messages":[],{fine}}}"#);
            assert!(chat_view(&TopLevel::parse(body.as_bytes()).unwrap()).is_ok(), "{fine}");
        }
    }

    #[test]
    fn an_overlong_model_id_is_refused() {
        let long = "m".repeat(MAX_MODEL_ID_BYTES + 1);
        let body = format!(r#"{{"model":"{long}","messages":[]}}"#);
        let e = chat_view(&TopLevel::parse(body.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        let body = format!(r#"{{"model":"{}","messages":[]}}"#, &long[1..]);
        assert!(chat_view(&TopLevel::parse(body.as_bytes()).unwrap()).is_ok());
    }

    #[test]
    fn removes_fields_on_request() {
        let top = TopLevel::parse(br#"{"model":"a","max_tokens":5,"x":1}"#).unwrap();
        let out = top.write_with(&[
            ("max_tokens", None),
            ("max_completion_tokens", Some("5")),
            ("gone", None),
        ]);
        assert_eq!(&out[..], br#"{"model":"a","x":1,"max_completion_tokens":5}"#);
    }
}
