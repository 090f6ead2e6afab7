//! A Responses request → an OpenAI chat completions body. Every top-level field is translated,
//! echoed only (`metadata`), accepted because it changes nothing here (see [`IGNORED`]), or
//! refused with a 400 naming it — never dropped silently. Values passed on (the model, schemas,
//! sampling numbers) stay raw text, so they arrive byte for byte.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use router_one_core::{ApiError, ErrorKind};
use router_one_providers::request::TopLevel;

use super::input::{ChatMessage, messages};

/// Fields accepted and not sent on: `metadata` is only echoed in the response object;
/// `store`, `background` and `truncation` are checked in [`refuse_stateful`] (what is left asks
/// for what Router One does anyway); `include` is checked in [`check_include`];
/// `stream_options` holds only `include_obfuscation`, and events are never padded.
const IGNORED: &[&str] = &[
    "metadata",
    "store",
    "background",
    "truncation",
    "include",
    "stream_options",
];

/// Fields sent on as the chat field of the same name (the chat pipeline, or the upstream,
/// checks them; a translating adapter refuses what its family cannot honour).
const SAME_NAME: &[&str] = &[
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
];

/// Fields translated below.
const TRANSLATED: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "text",
    "reasoning",
    "max_output_tokens",
    "stream",
];

/// `include` values accepted: none of them asks for something a chat answer could carry, so
/// they change nothing (`reasoning.encrypted_content`: there is no encrypted reasoning to
/// return; the others concern tools and stored items Router One does not serve).
const INCLUDE_IGNORED: &[&str] = &[
    "reasoning.encrypted_content",
    "message.input_image.image_url",
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "code_interpreter_call.outputs",
    "computer_call_output.output.image_url",
];

/// A 400 naming `param`.
pub(super) fn bad(param: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message).with_param(param)
}

/// Reads one field, or says which one has the wrong type.
pub(super) fn field<'a, T: Deserialize<'a>>(raw: &'a RawValue, name: &str, what: &str) -> Result<T, ApiError> {
    serde_json::from_str(raw.get())
        .map_err(|_| bad(name.to_owned(), format!("Invalid type for '{name}': expected {what}.")))
}

/// A value that is present and not `null`.
fn set(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get().trim() != "null")
}

/// The chat body written for a Responses request.
#[derive(Serialize)]
struct ChatOut<'a> {
    model: &'a RawValue,
    messages: Vec<ChatMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ChatTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ChatToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verbosity: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    /// `SAME_NAME` fields, in the client's order.
    #[serde(flatten)]
    same: SameName<'a>,
}

/// `{"include_usage": true}`.
#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The fields passed on under their own name.
struct SameName<'a>(Vec<(&'a str, &'a RawValue)>);

impl Serialize for SameName<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `{"type":"function","function":{…}}`.
#[derive(Serialize)]
struct ChatTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionDef<'a>,
}

/// A Responses function tool; the same fields make a chat `function`.
#[derive(Deserialize, Serialize)]
struct FunctionDef<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    description: Option<&'a RawValue>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a RawValue>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    strict: Option<&'a RawValue>,
}

/// A chat `tool_choice`.
#[derive(Serialize)]
#[serde(untagged)]
enum ChatToolChoice<'a> {
    Mode(Cow<'a, str>),
    Function {
        #[serde(rename = "type")]
        kind: &'static str,
        function: NameOnly<'a>,
    },
}

#[derive(Deserialize, Serialize)]
struct NameOnly<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// A chat `response_format`.
#[derive(Serialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<JsonSchema<'a>>,
}

/// `text.format` of type `json_schema`; the same fields make chat's `json_schema`.
#[derive(Deserialize, Serialize)]
struct JsonSchema<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    schema: &'a RawValue,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    description: Option<&'a RawValue>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    strict: Option<&'a RawValue>,
}

/// Rewrites a Responses request body into a chat completions body.
pub(super) fn to_chat(body: &[u8]) -> Result<Bytes, ApiError> {
    let top = TopLevel::parse(body)?;
    for (key, value) in &top.0 {
        let key: &str = key;
        if !(TRANSLATED.contains(&key) || SAME_NAME.contains(&key) || IGNORED.contains(&key)) {
            refuse(key, value)?;
        }
    }
    refuse_stateful(&top)?;
    let model = top
        .get("model")
        .ok_or_else(|| bad("model", "Missing required parameter: 'model'."))?;
    let input = top
        .get("input")
        .ok_or_else(|| bad("input", "Missing required parameter: 'input'."))?;
    let instructions = match set(top.get("instructions")) {
        Some(raw) => Some(field::<Cow<'_, str>>(raw, "instructions", "a string")?),
        None => None,
    };
    let stream = match set(top.get("stream")) {
        Some(raw) => field::<bool>(raw, "stream", "a boolean")?,
        None => false,
    };
    let (response_format, verbosity) = text(set(top.get("text")))?;
    let out = ChatOut {
        model,
        messages: messages(instructions, input)?,
        tools: tools(set(top.get("tools")))?,
        tool_choice: tool_choice(set(top.get("tool_choice")))?,
        response_format,
        reasoning_effort: reasoning_effort(set(top.get("reasoning")))?,
        verbosity,
        max_completion_tokens: match set(top.get("max_output_tokens")) {
            Some(raw) => Some(field::<u64>(raw, "max_output_tokens", "a non-negative integer")?),
            None => None,
        },
        // The stream's end must carry the usage (and its cost) for `response.completed`.
        stream: stream.then_some(true),
        stream_options: stream.then_some(StreamOptions { include_usage: true }),
        same: SameName(
            top.0
                .iter()
                .filter(|(k, v)| SAME_NAME.contains(&&**k) && set(Some(v)).is_some())
                .map(|(k, v)| (&**k, *v))
                .collect(),
        ),
    };
    check_include(set(top.get("include")))?;
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|_| ApiError::new(ErrorKind::Internal, "The request could not be rewritten."))
}

/// A top-level field outside the three lists: a 400 saying why, unless it is `null`.
fn refuse(key: &str, value: &RawValue) -> Result<(), ApiError> {
    let text = value.get().trim();
    let why = match key {
        _ if text == "null" => return Ok(()),
        "previous_response_id" | "conversation" | "store" | "background" | "truncation" => return Ok(()),
        "prompt" => "prompt templates are stored on OpenAI; send the prompt as 'instructions' and 'input'.",
        "top_logprobs" if text == "0" => return Ok(()),
        "top_logprobs" => "log probabilities are not returned.",
        "max_tool_calls" => "only function tools are served, and the model's calls are returned to you to run.",
        _ => return Err(bad(key.to_owned(), format!("Unknown parameter: '{key}'."))),
    };
    Err(bad(key.to_owned(), format!("'{key}' is not supported: {why}")))
}

/// Router One stores no request or response bodies (promise 2), so nothing can refer to an
/// earlier response, and nothing can run in the background to be fetched later.
fn refuse_stateful(top: &TopLevel<'_>) -> Result<(), ApiError> {
    const NO_STORAGE: &str = "Router One stores no request or response bodies";
    if let Some(raw) = set(top.get("store"))
        && field::<bool>(raw, "store", "a boolean")?
    {
        return Err(bad(
            "store",
            format!("'store': true is not supported: {NO_STORAGE}. Send \"store\": false (or leave it out)."),
        ));
    }
    for key in ["previous_response_id", "conversation"] {
        if set(top.get(key)).is_some() {
            return Err(bad(
                key,
                format!(
                    "'{key}' is not supported: {NO_STORAGE}, so there is no earlier response to continue. Send the \
                     whole conversation in 'input' (earlier output items can be passed back as input items)."
                ),
            ));
        }
    }
    if let Some(raw) = set(top.get("background"))
        && field::<bool>(raw, "background", "a boolean")?
    {
        return Err(bad(
            "background",
            format!("'background': true is not supported: {NO_STORAGE}, so a response cannot be fetched later."),
        ));
    }
    if let Some(raw) = set(top.get("truncation"))
        && field::<Cow<'_, str>>(raw, "truncation", "a string")? != "disabled"
    {
        return Err(bad(
            "truncation",
            "'truncation' must be \"disabled\": the input is sent whole, never cut to fit.",
        ));
    }
    Ok(())
}

fn check_include(raw: Option<&RawValue>) -> Result<(), ApiError> {
    let Some(raw) = raw else { return Ok(()) };
    let values = field::<Vec<Cow<'_, str>>>(raw, "include", "an array of strings")?;
    for value in &values {
        match &**value {
            v if INCLUDE_IGNORED.contains(&v) => {}
            "message.output_text.logprobs" => {
                return Err(bad(
                    "include",
                    "'include' value 'message.output_text.logprobs' is not supported: log probabilities are not \
                     returned.",
                ));
            }
            other => {
                return Err(bad(
                    "include",
                    format!("'include' value '{other}' is not a known value."),
                ));
            }
        }
    }
    Ok(())
}

/// Function tools become chat tools; any other tool type is refused by name.
fn tools(raw: Option<&RawValue>) -> Result<Vec<ChatTool<'_>>, ApiError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let list = field::<Vec<&RawValue>>(raw, "tools", "an array of tools")?;
    list.iter()
        .enumerate()
        .map(|(i, tool)| {
            #[derive(Deserialize)]
            struct Kind<'a> {
                #[serde(rename = "type", borrow)]
                kind: Cow<'a, str>,
            }
            let param = format!("tools[{i}]");
            let kind = field::<Kind<'_>>(tool, &param, "a tool object with a 'type'")?.kind;
            if kind != "function" {
                return Err(bad(
                    format!("{param}.type"),
                    format!(
                        "Tool type '{kind}' is not supported: Router One serves function tools only (the model's \
                         calls are returned to you to run)."
                    ),
                ));
            }
            let function = field::<FunctionDef<'_>>(tool, &param, "a function tool with a 'name'")?;
            Ok(ChatTool {
                kind: "function",
                function,
            })
        })
        .collect()
}

/// `"none" | "auto" | "required" | {"type":"function","name"}`.
fn tool_choice(raw: Option<&RawValue>) -> Result<Option<ChatToolChoice<'_>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.get().trim_start().starts_with('"') {
        let mode = field::<Cow<'_, str>>(raw, "tool_choice", "a string")?;
        return match &*mode {
            "none" | "auto" | "required" => Ok(Some(ChatToolChoice::Mode(mode))),
            other => Err(bad(
                "tool_choice",
                format!("'tool_choice' must be \"none\", \"auto\", \"required\" or a function, not '{other}'."),
            )),
        };
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(default, borrow)]
        name: Option<Cow<'a, str>>,
    }
    let choice = field::<Choice<'_>>(raw, "tool_choice", "a string or an object with a 'type'")?;
    match (&*choice.kind, choice.name) {
        ("function", Some(name)) => Ok(Some(ChatToolChoice::Function {
            kind: "function",
            function: NameOnly { name },
        })),
        ("function", None) => Err(bad(
            "tool_choice.name",
            "Missing required parameter: 'tool_choice.name'.",
        )),
        (other, _) => Err(bad(
            "tool_choice.type",
            format!(
                "'tool_choice' of type '{other}' is not supported: only \"none\", \"auto\", \"required\" and a \
                 named function are."
            ),
        )),
    }
}

/// `text.format` → `response_format`; `text.verbosity` → `verbosity`.
fn text(raw: Option<&RawValue>) -> Result<(Option<ResponseFormat<'_>>, Option<&RawValue>), ApiError> {
    let Some(raw) = raw else { return Ok((None, None)) };
    #[derive(Deserialize)]
    struct Text<'a> {
        #[serde(default, borrow)]
        format: Option<&'a RawValue>,
        #[serde(default, borrow)]
        verbosity: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    let text = field::<Text<'_>>(raw, "text", "an object")?;
    let verbosity = set(text.verbosity);
    let Some(format) = set(text.format) else {
        return Ok((None, verbosity));
    };
    let kind = field::<Kind<'_>>(format, "text.format", "an object with a 'type'")?.kind;
    let out = match &*kind {
        "text" => None,
        "json_object" => Some(ResponseFormat {
            kind: "json_object",
            json_schema: None,
        }),
        "json_schema" => Some(ResponseFormat {
            kind: "json_schema",
            json_schema: Some(field::<JsonSchema<'_>>(
                format,
                "text.format",
                "a json_schema format with a 'name' and a 'schema'",
            )?),
        }),
        other => {
            return Err(bad(
                "text.format.type",
                format!("'text.format.type' must be \"text\", \"json_object\" or \"json_schema\", not '{other}'."),
            ));
        }
    };
    Ok((out, verbosity))
}

/// `reasoning.effort` → `reasoning_effort`. `reasoning.summary` is accepted: a chat answer has
/// no summary to return, and asking for one changes nothing the model does.
fn reasoning_effort(raw: Option<&RawValue>) -> Result<Option<&RawValue>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    #[derive(Deserialize)]
    struct Reasoning<'a> {
        #[serde(default, borrow)]
        effort: Option<&'a RawValue>,
    }
    let reasoning = field::<Reasoning<'_>>(raw, "reasoning", "an object")?;
    if let Some(effort) = set(reasoning.effort) {
        field::<Cow<'_, str>>(effort, "reasoning.effort", "a string")?;
        return Ok(Some(effort));
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chat(body: &str) -> serde_json::Value {
        serde_json::from_slice(&to_chat(body.as_bytes()).unwrap()).unwrap()
    }

    fn refused(body: &str) -> ApiError {
        to_chat(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_string_input_with_instructions() {
        let out = chat(
            r#"{"model":"m","input":"hi","instructions":"be brief","max_output_tokens":50,"temperature":0.70,
                "metadata":{"a":"b"},"store":false,"user":"u1"}"#,
        );
        assert_eq!(
            out,
            serde_json::json!({"model":"m","messages":[{"role":"system","content":"be brief"},
                {"role":"user","content":"hi"}],"max_completion_tokens":50,"temperature":0.70,"user":"u1"})
        );
    }

    #[test]
    fn numbers_and_schemas_stay_raw_text() {
        let body = r#"{"model":"m","input":"x","temperature":0.70,"text":{"format":{"type":"json_schema","name":"r",
            "schema":{"type":"object","maximum":1.000},"strict":true},"verbosity":"low"}}"#;
        let out = String::from_utf8(to_chat(body.as_bytes()).unwrap().to_vec()).unwrap();
        assert!(out.contains(r#""temperature":0.70"#), "{out}");
        assert!(
            out.contains(r#""response_format":{"type":"json_schema","json_schema":{"name":"r","schema":{"type":"object","maximum":1.000},"strict":true}}"#),
            "{out}"
        );
        assert!(out.contains(r#""verbosity":"low""#), "{out}");
    }

    #[test]
    fn a_stream_asks_for_usage() {
        let out = chat(r#"{"model":"m","input":"x","stream":true}"#);
        assert_eq!(out["stream"], true);
        assert_eq!(out["stream_options"], serde_json::json!({"include_usage":true}));
        let out = chat(r#"{"model":"m","input":"x","stream":false}"#);
        assert!(out.get("stream").is_none() && out.get("stream_options").is_none());
    }

    #[test]
    fn tools_choice_and_reasoning() {
        let out = chat(
            r#"{"model":"m","input":"x","tools":[{"type":"function","name":"f","description":"d",
                "parameters":{"type":"object"},"strict":false}],"tool_choice":{"type":"function","name":"f"},
                "parallel_tool_calls":false,"reasoning":{"effort":"high","summary":"auto"},
                "include":["reasoning.encrypted_content"]}"#,
        );
        assert_eq!(
            out["tools"],
            serde_json::json!([{"type":"function","function":{"name":"f","description":"d",
                "parameters":{"type":"object"},"strict":false}}])
        );
        assert_eq!(
            out["tool_choice"],
            serde_json::json!({"type":"function","function":{"name":"f"}})
        );
        assert_eq!(out["parallel_tool_calls"], false);
        assert_eq!(out["reasoning_effort"], "high");
        assert_eq!(
            chat(r#"{"model":"m","input":"x","tool_choice":"required"}"#)["tool_choice"],
            "required"
        );
        assert_eq!(
            chat(r#"{"model":"m","input":"x","text":{"format":{"type":"json_object"}}}"#)["response_format"],
            serde_json::json!({"type":"json_object"})
        );
        assert!(
            chat(r#"{"model":"m","input":"x","text":{"format":{"type":"text"}}}"#)
                .get("response_format")
                .is_none()
        );
    }

    #[test]
    fn stateful_requests_are_refused_by_name() {
        for (body, param, words) in [
            (r#""store":true"#, "store", "stores no request or response bodies"),
            (
                r#""previous_response_id":"resp_1""#,
                "previous_response_id",
                "no earlier response",
            ),
            (r#""conversation":"conv_1""#, "conversation", "no earlier response"),
            (r#""background":true"#, "background", "fetched later"),
            (r#""truncation":"auto""#, "truncation", "never cut"),
            (r#""tools":[{"type":"web_search"}]"#, "tools[0].type", "'web_search'"),
            (
                r#""tools":[{"type":"function","name":"f"},{"type":"file_search"}]"#,
                "tools[1].type",
                "'file_search'",
            ),
            (
                r#""tool_choice":{"type":"web_search_preview"}"#,
                "tool_choice.type",
                "web_search_preview",
            ),
            (
                r#""include":["message.output_text.logprobs"]"#,
                "include",
                "log probabilities",
            ),
            (r#""include":["nope"]"#, "include", "'nope'"),
            (r#""prompt":{"id":"pmpt_1"}"#, "prompt", "stored on OpenAI"),
            (r#""frobnicate":1"#, "frobnicate", "Unknown parameter"),
            (r#""max_output_tokens":-1"#, "max_output_tokens", "non-negative"),
            (
                r#""text":{"format":{"type":"json_schema","schema":{}}}"#,
                "text.format",
                "'name'",
            ),
        ] {
            let e = refused(&format!(r#"{{"model":"m","input":"x",{body}}}"#));
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
            assert!(e.message.contains(words), "{body}: {e:?}");
            assert_eq!(e.kind, ErrorKind::InvalidRequest);
        }
    }

    #[test]
    fn what_asks_for_the_defaults_is_served() {
        let out = chat(
            r#"{"model":"m","input":"x","store":false,"background":false,"truncation":"disabled",
                "previous_response_id":null,"top_logprobs":0,"stream_options":{"include_obfuscation":false}}"#,
        );
        assert_eq!(
            out,
            serde_json::json!({"model":"m","messages":[{"role":"user","content":"x"}]})
        );
    }

    #[test]
    fn missing_fields_are_named() {
        assert_eq!(refused(r#"{"input":"x"}"#).param.as_deref(), Some("model"));
        assert_eq!(refused(r#"{"model":"m"}"#).param.as_deref(), Some("input"));
        assert_eq!(refused(r#"[1]"#).kind, ErrorKind::InvalidJson);
    }
}
