//! `instructions` and `input` → chat `messages`. Input is a string (one user message) or a list
//! of items: messages (`user`, `system`, `developer`, `assistant`), `function_call` items (they
//! join the assistant message before them, so parallel calls stay one turn) and
//! `function_call_output` items (`tool` messages). `reasoning` items — earlier output passed back
//! — are skipped: chat has no way to send reasoning back to a model. Items that name stored
//! objects, and the items of tools Router One does not serve, are refused by type.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use router_one_core::ApiError;

use super::request::{bad, field};

/// One chat message.
#[derive(Debug, Serialize)]
pub(super) struct ChatMessage<'a> {
    role: Cow<'a, str>,
    /// `null` for an assistant message of tool calls only.
    content: Option<Content<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<Cow<'a, str>>,
}

/// A chat message's content.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

/// A chat content part.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part<'a> {
    Text { text: Cow<'a, str> },
    ImageUrl { image_url: ImageUrl<'a> },
    File { file: File<'a> },
}

#[derive(Debug, Serialize)]
struct ImageUrl<'a> {
    url: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<Cow<'a, str>>,
}

#[derive(Debug, Serialize)]
struct File<'a> {
    file_data: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<Cow<'a, str>>,
}

/// An assistant's tool call.
#[derive(Debug, Serialize)]
struct ToolCall<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Debug, Serialize)]
struct FunctionCall<'a> {
    name: Cow<'a, str>,
    arguments: Cow<'a, str>,
}

/// One input item, every kind's fields together (each kind reads its own).
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    output: Option<&'a RawValue>,
}

/// One content part of an input message.
#[derive(Deserialize)]
struct InPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    image_url: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    detail: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    file_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    file_data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    file_url: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    filename: Option<Cow<'a, str>>,
}

/// The chat messages for `instructions` (a system message first) and `input`.
pub(super) fn messages<'a>(
    instructions: Option<Cow<'a, str>>,
    input: &'a RawValue,
) -> Result<Vec<ChatMessage<'a>>, ApiError> {
    let mut out = Vec::new();
    if let Some(text) = instructions {
        out.push(message("system", Content::Text(text)));
    }
    if input.get().trim_start().starts_with('"') {
        let text = field::<Cow<'_, str>>(input, "input", "a string or an array of input items")?;
        out.push(message("user", Content::Text(text)));
        return Ok(out);
    }
    let items = field::<Vec<&RawValue>>(input, "input", "a string or an array of input items")?;
    // Whether the last message is an assistant turn that a function call may join.
    let mut open_turn = false;
    for (i, raw) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let item = field::<Item<'_>>(raw, &at, "an input item object")?;
        let kind = match (&item.kind, &item.role) {
            (Some(kind), _) => &**kind,
            (None, Some(_)) => "message",
            (None, None) => {
                return Err(bad(
                    format!("{at}.type"),
                    format!("Missing required parameter: '{at}.type'."),
                ));
            }
        };
        match kind {
            "message" => {
                let role = required(item.role, &at, "role")?;
                let content = item.content.ok_or_else(|| {
                    bad(
                        format!("{at}.content"),
                        format!("Missing required parameter: '{at}.content'."),
                    )
                })?;
                let content = message_content(&role, content, &format!("{at}.content"))?;
                open_turn = role == "assistant";
                let role = match &*role {
                    "user" | "system" | "developer" | "assistant" => role,
                    other => {
                        return Err(bad(
                            format!("{at}.role"),
                            format!("'{at}.role' must be user, system, developer or assistant, not '{other}'."),
                        ));
                    }
                };
                out.push(ChatMessage {
                    role,
                    content: Some(content),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                });
            }
            "function_call" => {
                let call = ToolCall {
                    id: required(item.call_id, &at, "call_id")?,
                    kind: "function",
                    function: FunctionCall {
                        name: required(item.name, &at, "name")?,
                        arguments: required(item.arguments, &at, "arguments")?,
                    },
                };
                match out.last_mut() {
                    Some(last) if open_turn => last.tool_calls.push(call),
                    _ => {
                        let mut turn = message("assistant", Content::Text(Cow::Borrowed("")));
                        turn.content = None;
                        turn.tool_calls.push(call);
                        out.push(turn);
                        open_turn = true;
                    }
                }
            }
            "function_call_output" => {
                let call_id = required(item.call_id, &at, "call_id")?;
                let output = item.output.ok_or_else(|| {
                    bad(
                        format!("{at}.output"),
                        format!("Missing required parameter: '{at}.output'."),
                    )
                })?;
                let mut turn = message("tool", tool_output(output, &format!("{at}.output"))?);
                turn.tool_call_id = Some(call_id);
                out.push(turn);
                open_turn = false;
            }
            // Earlier output passed back: chat cannot carry reasoning to a model.
            "reasoning" => {}
            "item_reference" => {
                return Err(bad(
                    format!("{at}.type"),
                    format!(
                        "'{at}' is an item_reference, which is not supported: Router One stores no request or \
                         response bodies, so it has no items to refer to. Send the item itself."
                    ),
                ));
            }
            other => {
                return Err(bad(
                    format!("{at}.type"),
                    format!(
                        "Input items of type '{other}' are not supported: only messages, function_call and \
                         function_call_output items (and reasoning items, which are skipped) are."
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn message<'a>(role: &'static str, content: Content<'a>) -> ChatMessage<'a> {
    ChatMessage {
        role: Cow::Borrowed(role),
        content: Some(content),
        tool_calls: Vec::new(),
        tool_call_id: None,
    }
}

fn required<'a>(value: Option<Cow<'a, str>>, at: &str, name: &str) -> Result<Cow<'a, str>, ApiError> {
    value.ok_or_else(|| {
        bad(
            format!("{at}.{name}"),
            format!("Missing required parameter: '{at}.{name}'."),
        )
    })
}

/// A message's content: a string, or parts (`input_text`, `input_image`, `input_file`, and in
/// assistant messages `output_text` and `refusal`).
fn message_content<'a>(role: &str, raw: &'a RawValue, at: &str) -> Result<Content<'a>, ApiError> {
    if raw.get().trim_start().starts_with('"') {
        return field::<Cow<'_, str>>(raw, at, "a string or an array of content parts").map(Content::Text);
    }
    let parts = field::<Vec<InPart<'_>>>(raw, at, "a string or an array of content parts with a 'type'")?;
    parts
        .into_iter()
        .enumerate()
        .map(|(j, part)| content_part(role, part, &format!("{at}[{j}]")))
        .collect::<Result<Vec<_>, _>>()
        .map(Content::Parts)
}

fn content_part<'a>(role: &str, part: InPart<'a>, at: &str) -> Result<Part<'a>, ApiError> {
    let assistant = role == "assistant";
    let stored = |what: &str| {
        bad(
            at.to_owned(),
            format!(
                "'{at}' names a {what}, which is not supported: Router One has no file storage. Send the content \
                 inline (a URL or a data URL for images, file_data for files)."
            ),
        )
    };
    match &*part.kind {
        "input_text" | "output_text" | "text" => {
            let text = part.text.ok_or_else(|| {
                bad(
                    format!("{at}.text"),
                    format!("Missing required parameter: '{at}.text'."),
                )
            })?;
            Ok(Part::Text { text })
        }
        // A refusal the assistant gave earlier is what it said.
        "refusal" if assistant => Ok(Part::Text {
            text: part.refusal.or(part.text).unwrap_or_default(),
        }),
        "input_image" => match (part.image_url, part.file_id) {
            (Some(url), _) => Ok(Part::ImageUrl {
                image_url: ImageUrl {
                    url,
                    // `auto` is chat's default too.
                    detail: part.detail.filter(|d| d != "auto"),
                },
            }),
            (None, Some(_)) => Err(stored("file id")),
            (None, None) => Err(bad(
                format!("{at}.image_url"),
                format!("Missing required parameter: '{at}.image_url'."),
            )),
        },
        "input_file" => match (part.file_data, part.file_id, part.file_url) {
            (Some(file_data), _, _) => Ok(Part::File {
                file: File {
                    file_data,
                    filename: part.filename,
                },
            }),
            (None, Some(_), _) => Err(stored("file id")),
            (None, None, Some(_)) => Err(bad(
                at.to_owned(),
                format!("'{at}' names a file_url, which is not supported: send the file inline as file_data."),
            )),
            (None, None, None) => Err(bad(
                format!("{at}.file_data"),
                format!("Missing required parameter: '{at}.file_data'."),
            )),
        },
        other => Err(bad(
            format!("{at}.type"),
            format!("Content parts of type '{other}' are not supported in a {role} message."),
        )),
    }
}

/// A `function_call_output`'s output: a string, or content parts.
fn tool_output<'a>(raw: &'a RawValue, at: &str) -> Result<Content<'a>, ApiError> {
    message_content("tool", raw, at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn convert(instructions: Option<&str>, input: &str) -> serde_json::Value {
        let raw: &RawValue = serde_json::from_str(input).unwrap();
        let out = messages(instructions.map(Cow::Borrowed), raw).unwrap();
        serde_json::to_value(&out).unwrap()
    }

    fn refused(input: &str) -> ApiError {
        let raw: &RawValue = serde_json::from_str(input).unwrap();
        messages(None, raw).unwrap_err()
    }

    #[test]
    fn a_conversation_with_calls_and_their_outputs() {
        let got = convert(
            Some("be brief"),
            r#"[{"role":"user","content":[{"type":"input_text","text":"weather?"},
                 {"type":"input_image","image_url":"data:image/png;base64,AAAA","detail":"low"}]},
                {"type":"message","role":"assistant","id":"msg_1","status":"completed",
                 "content":[{"type":"output_text","text":"checking","annotations":[]}]},
                {"type":"function_call","id":"fc_1","call_id":"c1","name":"get","arguments":"{\"city\":\"Paris\"}"},
                {"type":"function_call","call_id":"c2","name":"time","arguments":"{}"},
                {"type":"reasoning","id":"rs_1","summary":[]},
                {"type":"function_call_output","call_id":"c1","output":"sunny"},
                {"type":"function_call_output","call_id":"c2","output":[{"type":"input_text","text":"noon"}]},
                {"type":"function_call","call_id":"c3","name":"get","arguments":"{}"},
                {"role":"developer","content":"again"}]"#,
        );
        let want = serde_json::json!([
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"weather?"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]},
            {"role":"assistant","content":[{"type":"text","text":"checking"}],"tool_calls":[
                {"id":"c1","type":"function","function":{"name":"get","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"c2","type":"function","function":{"name":"time","arguments":"{}"}}]},
            {"role":"tool","content":"sunny","tool_call_id":"c1"},
            {"role":"tool","content":[{"type":"text","text":"noon"}],"tool_call_id":"c2"},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"c3","type":"function","function":{"name":"get","arguments":"{}"}}]},
            {"role":"developer","content":"again"}
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn a_string_is_one_user_message() {
        assert_eq!(
            convert(None, r#""hello""#),
            serde_json::json!([{"role":"user","content":"hello"}])
        );
    }

    #[test]
    fn what_cannot_be_sent_is_named() {
        for (input, param) in [
            (r#"[{"type":"item_reference","id":"msg_1"}]"#, "input[0].type"),
            (r#"[{"type":"web_search_call","id":"ws_1"}]"#, "input[0].type"),
            (
                r#"[{"role":"user","content":[{"type":"input_image","file_id":"file_1"}]}]"#,
                "input[0].content[0]",
            ),
            (
                r#"[{"role":"user","content":[{"type":"input_file","file_url":"https://x"}]}]"#,
                "input[0].content[0]",
            ),
            (
                r#"[{"role":"user","content":[{"type":"input_audio"}]}]"#,
                "input[0].content[0].type",
            ),
            (r#"[{"role":"tool","content":"x"}]"#, "input[0].role"),
            (r#"[{"role":"user"}]"#, "input[0].content"),
            (
                r#"[{"type":"function_call","name":"f","arguments":"{}"}]"#,
                "input[0].call_id",
            ),
            (r#"[{"type":"function_call_output","call_id":"c"}]"#, "input[0].output"),
            (r#"[{"content":"x"}]"#, "input[0].type"),
            (r#"[3]"#, "input[0]"),
            (r#"7"#, "input"),
        ] {
            assert_eq!(refused(input).param.as_deref(), Some(param), "{input}");
        }
    }
}
