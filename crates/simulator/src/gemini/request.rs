//! The parts of a `GenerateContentRequest` the simulator reads, in camelCase or snake_case as
//! the API accepts them, and their fold into what the reply and the token rule need.
//!
//! Token rule for Gemini: each content (and `systemInstruction`, which counts as a message)
//! costs 4 + the words of its `text` parts concatenated as they are, plus the words of its
//! `functionResponse` responses written as compact JSON; `functionCall` and `inlineData` parts
//! add nothing.

use serde::Deserialize;
use serde_json::Value;

use crate::reply::{ToolChoice, Turn};
use crate::tokens::{PER_MESSAGE, count_words};

/// A `generateContent` request, as far as the simulator cares.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateRequest {
    pub(super) contents: Option<Vec<Content>>,
    #[serde(alias = "system_instruction")]
    pub(super) system_instruction: Option<Content>,
    #[serde(alias = "generation_config")]
    pub(super) generation_config: Option<GenerationConfig>,
    pub(super) tools: Option<Vec<Tool>>,
    #[serde(alias = "tool_config")]
    pub(super) tool_config: Option<ToolConfig>,
}

/// One `Content`: a role and its parts.
#[derive(Debug, Deserialize)]
pub(super) struct Content {
    pub(super) role: Option<String>,
    #[serde(default)]
    pub(super) parts: Vec<Part>,
}

/// One `Part`; only text and function responses matter.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Part {
    pub(super) text: Option<String>,
    #[serde(alias = "function_response")]
    pub(super) function_response: Option<FunctionResponse>,
}

/// A `functionResponse` part.
#[derive(Debug, Deserialize)]
pub(super) struct FunctionResponse {
    #[serde(default)]
    pub(super) response: Value,
}

/// `generationConfig`, the fields that change the answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerationConfig {
    #[serde(alias = "max_output_tokens")]
    pub(super) max_output_tokens: Option<u64>,
    #[serde(alias = "response_mime_type")]
    pub(super) response_mime_type: Option<String>,
}

/// One `Tool`; only function declarations are offered to the simulated model.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Tool {
    #[serde(alias = "function_declarations")]
    pub(super) function_declarations: Option<Vec<Declaration>>,
}

/// A `FunctionDeclaration`, by name.
#[derive(Debug, Deserialize)]
pub(super) struct Declaration {
    pub(super) name: String,
}

/// `toolConfig`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolConfig {
    #[serde(alias = "function_calling_config")]
    pub(super) function_calling_config: Option<CallingConfig>,
}

/// `functionCallingConfig`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CallingConfig {
    pub(super) mode: Option<String>,
    #[serde(alias = "allowed_function_names")]
    pub(super) allowed_function_names: Option<Vec<String>>,
}

/// The contents folded into what the reply and the token rule need.
#[derive(Debug, Default)]
pub(super) struct Summary {
    /// Σ over contents (and the system instruction) of (4 + words).
    pub(super) tokens: u64,
    /// Who spoke last.
    pub(super) last_turn: Option<Turn>,
    /// Text of the last user content that is not a function response.
    pub(super) last_user_text: String,
    /// The first function response of the last content, as compact JSON, if it is one.
    pub(super) tool_result: String,
}

impl GenerateRequest {
    /// `maxOutputTokens`.
    pub(super) fn cap(&self) -> Option<u64> {
        self.generation_config.as_ref().and_then(|c| c.max_output_tokens)
    }

    /// `responseMimeType: application/json`.
    pub(super) fn wants_json(&self) -> bool {
        self.generation_config
            .as_ref()
            .and_then(|c| c.response_mime_type.as_deref())
            .is_some_and(|m| m.eq_ignore_ascii_case("application/json"))
    }

    /// The first two declared functions, by name.
    pub(super) fn tool_names(&self) -> [Option<&str>; 2] {
        let mut names = self
            .tools
            .iter()
            .flatten()
            .filter_map(|t| t.function_declarations.as_ref())
            .flatten()
            .map(|d| d.name.as_str());
        [names.next(), names.next()]
    }

    /// `functionCallingConfig.mode`: `NONE` never calls, `ANY` must call (the only allowed name
    /// if exactly one is given), anything else is `AUTO`.
    pub(super) fn tool_choice(&self) -> ToolChoice<'_> {
        let Some(config) = self
            .tool_config
            .as_ref()
            .and_then(|c| c.function_calling_config.as_ref())
        else {
            return ToolChoice::Auto;
        };
        match config.mode.as_deref().map(str::to_ascii_uppercase).as_deref() {
            Some("NONE") => ToolChoice::None,
            Some("ANY") => match config.allowed_function_names.as_deref() {
                Some([only]) => ToolChoice::Named(only),
                _ => ToolChoice::Required,
            },
            _ => ToolChoice::Auto,
        }
    }

    /// Folds the system instruction and the contents.
    pub(super) fn summary(&self) -> Summary {
        let mut out = Summary::default();
        if let Some(system) = &self.system_instruction {
            let (text, _) = fold(system);
            out.tokens = PER_MESSAGE + count_words(&text);
        }
        for content in self.contents.iter().flatten() {
            let (text, response) = fold(content);
            let response_words = response.as_deref().map_or(0, count_words);
            out.tokens = out
                .tokens
                .saturating_add(PER_MESSAGE + count_words(&text) + response_words);
            let turn = match (content.role.as_deref(), response) {
                (_, Some(response)) => {
                    out.tool_result = response;
                    Turn::Tool
                }
                (None | Some("user"), None) => {
                    out.last_user_text = text;
                    Turn::User
                }
                _ => Turn::Other,
            };
            out.last_turn = Some(turn);
        }
        out
    }
}

/// A content's text parts concatenated, and its first function response as compact JSON.
fn fold(content: &Content) -> (String, Option<String>) {
    let mut text = String::new();
    let mut response = None;
    for part in &content.parts {
        if let Some(t) = &part.text {
            text.push_str(t);
        }
        if response.is_none()
            && let Some(r) = &part.function_response
        {
            response = Some(serde_json::to_string(&r.response).unwrap_or_default());
        }
    }
    (text, response)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn folds_contents_in_both_spellings() {
        let body = br#"{"system_instruction":{"parts":[{"text":"be brief"}]},
            "contents":[
              {"role":"user","parts":[{"text":"one two"},{"inline_data":{"mime_type":"image/png","data":"AA=="}},{"text":" three"}]},
              {"role":"model","parts":[{"functionCall":{"name":"a","args":{}}}]},
              {"role":"user","parts":[{"function_response":{"name":"a","response":{"t":"sunny day"}}}]}],
            "generationConfig":{"maxOutputTokens":5,"response_mime_type":"application/json","temperature":0.2},
            "tools":[{"functionDeclarations":[{"name":"a"}]},{"function_declarations":[{"name":"b"},{"name":"c"}]}],
            "toolConfig":{"function_calling_config":{"mode":"ANY","allowedFunctionNames":["b"]}}}"#;
        let r: GenerateRequest = serde_json::from_slice(body).unwrap();
        let s = r.summary();
        assert_eq!(s.tokens, (4 + 2) + (4 + 3) + 4 + (4 + 2));
        assert_eq!(s.last_turn, Some(Turn::Tool));
        assert_eq!(s.last_user_text, "one two three");
        assert_eq!(s.tool_result, r#"{"t":"sunny day"}"#);
        assert_eq!(r.tool_names(), [Some("a"), Some("b")]);
        assert_eq!(r.tool_choice(), ToolChoice::Named("b"));
        assert_eq!(r.cap(), Some(5));
        assert!(r.wants_json());
    }

    #[test]
    fn modes() {
        for (mode, want) in [
            ("NONE", ToolChoice::None),
            ("ANY", ToolChoice::Required),
            ("AUTO", ToolChoice::Auto),
        ] {
            let body = format!(r#"{{"toolConfig":{{"functionCallingConfig":{{"mode":"{mode}"}}}}}}"#);
            let r: GenerateRequest = serde_json::from_str(&body).unwrap();
            assert_eq!(r.tool_choice(), want, "{mode}");
        }
    }
}
