//! Gemini's JSON as the adapter writes it (`GenerateContentRequest`) and reads it
//! (`GenerateContentResponse`, Google's error object), in the REST API's camelCase spelling.
//!
//! Answers are read into borrowed structs, once per body or stream event; values the client
//! gets verbatim (function call arguments) stay raw text so they pass byte for byte.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

// ------------------------------------------------------------------------------------ request

/// A `GenerateContentRequest`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateRequest<'a> {
    pub(crate) contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) system_instruction: Option<SystemInstruction<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    pub(crate) generation_config: GenerationConfig<'a>,
}

/// One turn: `user` or `model`.
#[derive(Debug, Serialize)]
pub(crate) struct Content<'a> {
    pub(crate) role: &'static str,
    pub(crate) parts: Vec<Part<'a>>,
}

/// `systemInstruction`: a content without a role.
#[derive(Debug, Serialize)]
pub(crate) struct SystemInstruction<'a> {
    pub(crate) parts: Vec<Part<'a>>,
}

/// One part of a content; exactly one field is set, as the API requires.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Part<'a> {
    Text {
        text: &'a str,
    },
    InlineData {
        #[serde(rename = "inlineData")]
        inline_data: Blob<'a>,
    },
    FileData {
        #[serde(rename = "fileData")]
        file_data: FileData<'a>,
    },
    FunctionCall {
        #[serde(rename = "functionCall")]
        function_call: CallOut<'a>,
    },
    FunctionResponse {
        #[serde(rename = "functionResponse")]
        function_response: ResponseOut<'a>,
    },
}

/// `inlineData`: base64 bytes sent inline.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Blob<'a> {
    pub(crate) mime_type: &'a str,
    pub(crate) data: &'a str,
}

/// `fileData`: a URI Gemini fetches.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileData<'a> {
    pub(crate) mime_type: &'static str,
    pub(crate) file_uri: &'a str,
}

/// A function call the model made earlier in the conversation.
#[derive(Debug, Serialize)]
pub(crate) struct CallOut<'a> {
    pub(crate) name: &'a str,
    /// The client's `arguments` text, as sent (only surrounding whitespace, which is no part of
    /// the JSON value, is trimmed by `RawValue`).
    pub(crate) args: Box<RawValue>,
}

/// A tool's result, sent back to the model.
#[derive(Debug, Serialize)]
pub(crate) struct ResponseOut<'a> {
    pub(crate) name: &'a str,
    pub(crate) response: ResponseValue<'a>,
}

/// `functionResponse.response` must be a JSON object (a protobuf `Struct`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum ResponseValue<'a> {
    /// The tool's output was a JSON object: sent as is.
    Object(Box<RawValue>),
    /// Anything else is wrapped.
    Wrapped { content: Cow<'a, str> },
}

/// One tool: function declarations only.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Tool<'a> {
    pub(crate) function_declarations: Vec<Declaration<'a>>,
}

/// A `FunctionDeclaration`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Declaration<'a> {
    pub(crate) name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<&'a str>,
    /// The client's JSON Schema, raw: `parametersJsonSchema` takes full JSON Schema, unlike
    /// `parameters` (an OpenAPI subset that refuses e.g. `additionalProperties`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parameters_json_schema: Option<&'a RawValue>,
}

/// `toolConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolConfig<'a> {
    pub(crate) function_calling_config: CallingConfig<'a>,
}

/// `functionCallingConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CallingConfig<'a> {
    /// `NONE`, `AUTO` or `ANY`.
    pub(crate) mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) allowed_function_names: Option<[&'a str; 1]>,
}

/// `generationConfig`; sampling numbers stay the client's raw text.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) top_p: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) top_k: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seed: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) presence_penalty: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) frequency_penalty: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) stop_sequences: Vec<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_mime_type: Option<&'static str>,
    /// Full JSON Schema, raw (see [`Declaration::parameters_json_schema`] for why not the
    /// OpenAPI-subset `responseSchema`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_json_schema: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_output_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.stop_sequences.is_empty()
            && self.response_mime_type.is_none()
            && self.response_json_schema.is_none()
            && self.thinking_config.is_none()
    }
}

/// `thinkingConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ThinkingConfig {
    /// `minimal`, `low`, `medium` or `high`.
    pub(crate) thinking_level: &'static str,
}

// ------------------------------------------------------------------------------------ answers

/// A `GenerateContentResponse`: a whole answer, or one stream event. A stream event may instead
/// be an error object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateResponse<'a> {
    #[serde(default, borrow)]
    pub(crate) candidates: Option<Vec<Candidate<'a>>>,
    #[serde(default, borrow)]
    pub(crate) prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(default)]
    pub(crate) usage_metadata: Option<UsageMetadata>,
    #[serde(default, borrow)]
    pub(crate) model_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) response_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) error: Option<ErrorDetail<'a>>,
}

/// One candidate (the adapter asks for one).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate<'a> {
    #[serde(default, borrow)]
    pub(crate) content: Option<ContentIn<'a>>,
    #[serde(default, borrow)]
    pub(crate) finish_reason: Option<Cow<'a, str>>,
}

/// A candidate's content.
#[derive(Debug, Deserialize)]
pub(crate) struct ContentIn<'a> {
    #[serde(default, borrow)]
    pub(crate) parts: Vec<PartIn<'a>>,
}

/// A part of an answer: text (a thought summary when `thought`), or a function call.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartIn<'a> {
    #[serde(default, borrow)]
    pub(crate) text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) thought: Option<bool>,
    #[serde(default, borrow)]
    pub(crate) function_call: Option<CallIn<'a>>,
}

/// A `FunctionCall` in an answer.
#[derive(Debug, Deserialize)]
pub(crate) struct CallIn<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) name: Cow<'a, str>,
    /// Raw, so the client's `arguments` are the upstream's text byte for byte.
    #[serde(default, borrow)]
    pub(crate) args: Option<&'a RawValue>,
}

/// `promptFeedback`: set when the prompt itself was blocked.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptFeedback<'a> {
    #[serde(default, borrow)]
    pub(crate) block_reason: Option<Cow<'a, str>>,
}

/// `usageMetadata`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsageMetadata {
    #[serde(default)]
    pub(crate) prompt_token_count: u64,
    #[serde(default)]
    pub(crate) cached_content_token_count: u64,
    #[serde(default)]
    pub(crate) candidates_token_count: u64,
    #[serde(default)]
    pub(crate) tool_use_prompt_token_count: u64,
    #[serde(default)]
    pub(crate) thoughts_token_count: u64,
}

/// Google's error object: `{"error": {"code", "message", "status"}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorEnvelope<'a> {
    #[serde(borrow)]
    pub(crate) error: ErrorDetail<'a>,
}

/// The inside of Google's error object.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorDetail<'a> {
    #[serde(default)]
    pub(crate) code: Option<u16>,
    #[serde(default, borrow)]
    pub(crate) message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) status: Option<Cow<'a, str>>,
}

// ----------------------------------------------------------------------------------- embeddings

/// A `BatchEmbedContentsRequest`.
#[derive(Debug, Serialize)]
pub(crate) struct BatchEmbedRequest<'a> {
    pub(crate) requests: Vec<EmbedRequest<'a>>,
}

/// One `EmbedContentRequest`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EmbedRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) content: SystemInstruction<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) output_dimensionality: Option<u64>,
}

/// A `BatchEmbedContentsResponse`.
#[derive(Debug, Deserialize)]
pub(crate) struct BatchEmbedResponse<'a> {
    #[serde(default, borrow)]
    pub(crate) embeddings: Vec<EmbeddingIn<'a>>,
}

/// One `ContentEmbedding`, its values raw.
#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingIn<'a> {
    #[serde(borrow)]
    pub(crate) values: &'a RawValue,
}
