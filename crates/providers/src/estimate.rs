//! Prompt-token estimates for reservations: the number of input tokens a request is reserved for
//! before it goes upstream. Promise 3 (budgets and balances never overshoot) needs this to be an
//! **upper bound** of what the upstream bills, yet close enough that budgets stay usable.
//!
//! This module owns the count and its bounds; callers pick the [`Tokenizer`] with
//! [`tokenizer_for`] (from the catalog family) and multiply by the rates themselves.
//!
//! # What is counted
//!
//! For a chat request ([`prompt_tokens`]): every message's role, string content and `text` /
//! `refusal` parts, `name`, tool-call ids, names and argument text, and `tool_call_id`; every
//! tool's name, description and `parameters` JSON text (other tool types: their whole JSON text);
//! the legacy `functions` JSON text; a `json_schema` `response_format`'s JSON text; and images.
//! Strings are counted decoded (as the model sees them), never with their JSON escapes. Audio,
//! files and unknown part types are refused with a 400 naming the part: their cost cannot be
//! bounded from the request.
//!
//! # The bounds
//!
//! - **[`Tokenizer::OpenAi`]**: text is counted exactly with `o200k_base` (built once; should it
//!   ever fail to build, the byte count below is used instead, which is still an upper bound).
//!   Framing follows OpenAI's cookbook ("How to count tokens with tiktoken"): 3 tokens per message
//!   (plus the role's own tokens, at least 1), +1 per `name`, +3 priming the reply. On top of the
//!   cookbook (which does not cover them) we allow 1 token per content part (the joint between
//!   parts), 8 per tool call, 8 per tool and 12 for the tools block (the cookbook's function
//!   formula uses 7 per function and 12 at the end, and renders the schema more tersely than its
//!   JSON text, which we count whole).
//! - **[`Tokenizer::Conservative`]** (Claude, Gemini, DeepSeek, Mistral, Llama, …): we cannot run
//!   those tokenizers, but all of them are byte-level BPE or SentencePiece with byte fallback and
//!   no expanding normalisation, so **every token covers at least one byte of the UTF-8 text**: a
//!   text of `n` bytes is at most `n` tokens. We add 1 token per text segment for SentencePiece's
//!   dummy-prefix `▁`, the same framing as above, and 600 tokens for the tools block (Anthropic
//!   documents a hidden tool-use system prompt of up to 530 tokens).
//! - Both then add a **safety margin** for what vendors add that we cannot see (chat-template
//!   tokens, undocumented framing): +2% of the count, rounded up, and +16 tokens.
//! - **Images** cannot be measured without decoding them, so each is reserved at the most any
//!   current model of the kind bills for one image:
//!   - OpenAI, `detail: "low"`: [`OPENAI_IMAGE_LOW`] = 3,779. Tile models bill 85 at low detail,
//!     but gpt-4o-mini bills 2,833, and the patch models (gpt-4.1-mini/nano, o4-mini,
//!     gpt-5-mini/nano) ignore `detail` and bill up to 1,536 patches × their multiplier (at most
//!     2.46): ⌈1,536 × 2.46⌉ = 3,779.
//!   - OpenAI, `high`, `auto`, absent or anything else: [`OPENAI_IMAGE_HIGH`] = 48,169. A high-detail
//!     image is fitted in 2,048², its short side scaled to 768, and covered by at most 8 tiles of
//!     512² (768 × 2,048); gpt-4o bills 85 + 170 per tile (1,445), but gpt-4o-mini bills
//!     2,833 + 5,667 per tile: 2,833 + 8 × 5,667 = 48,169. Its rate being ~17× lower, that is
//!     about $0.007 at gpt-4o-mini's price, but ~33× gpt-4o's own bound at gpt-4o's: the price
//!     of not knowing the model here.
//!   - Others: [`CONSERVATIVE_IMAGE`] = 5,000. Claude bills ≈ width × height / 750 after resizing
//!     to its native maximum: ≈1,600 up to Claude 4.6 (1.15 MP), ≈5,000 for Opus 4.7 (3.75 MP).
//!     Gemini bills 258 per 768² tile (Gemini 2) or by `media_resolution` (Gemini 3: 1,120 at
//!     the default high, 2,240 at ultra-high), all below 5,000.
//!
//! Embeddings ([`embedding_tokens`]) are the input's tokens with no framing and no margin (what
//! OpenAI bills; others: bytes + 1 per string); a token array counts its length.
//!
//! # The byte bound of an OpenAI count
//!
//! `o200k_base` is costly to hold and to run: its tables take about 46 MiB of memory once built
//! (300 ms), and it counts 16 KB of text in about 1.5 ms. [`Tokenizer::bound`] gives a count
//! that needs neither: [`Tokenizer::OpenAiBytes`] keeps OpenAI's framing and image figures and
//! takes each text segment as its UTF-8 bytes. `o200k_base` is byte-level BPE, so every token
//! covers at least one byte: that count is never below the exact one (proptested below), and the
//! margin is monotone. Admission uses it where the exact count changes nothing (`server`'s
//! `admission::prompt_bound` says when); the tables are built the first time an exact count is
//! asked for ([`is_loaded`] tells whether they have been).
//!
//! Cost: one parse of `messages` (and of `tools` / `response_format` when present), strings
//! borrowed unless they hold escapes, image URLs skipped unread.

use std::borrow::Cow;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::value::RawValue;
use tiktoken_rs::CoreBPE;

use router_one_core::{ApiError, ErrorKind};

use crate::openai::wire::{Message, ResponseFormat, Tool};
use crate::request::TopLevel;

/// How text is turned into a token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokenizer {
    /// OpenAI models: exact `o200k_base` counts.
    OpenAi,
    /// OpenAI models without the tables: the same framing and images as [`Tokenizer::OpenAi`],
    /// each text segment counted as its UTF-8 bytes (an upper bound of the exact count).
    OpenAiBytes,
    /// Every other vendor: one token per byte of UTF-8 text, an upper bound for any byte-level
    /// tokenizer.
    Conservative,
}

impl Tokenizer {
    /// An upper bound of this tokenizer's counts that needs no tables (itself, unless it is
    /// [`Tokenizer::OpenAi`]).
    pub fn bound(self) -> Tokenizer {
        match self {
            Tokenizer::OpenAi => Tokenizer::OpenAiBytes,
            other => other,
        }
    }

    /// Whether counting with it builds `o200k_base`'s tables (once per process).
    pub fn needs_tables(self) -> bool {
        self == Tokenizer::OpenAi
    }
}

/// The tokenizer for a catalog family: `gpt` counts with `o200k_base`, everything else
/// conservatively.
pub fn tokenizer_for(family: &str) -> Tokenizer {
    if family.eq_ignore_ascii_case("gpt") {
        Tokenizer::OpenAi
    } else {
        Tokenizer::Conservative
    }
}

/// Framing of each message (OpenAI cookbook: `<|start|>{role}\n{content}<|end|>\n`).
pub const PER_MESSAGE: u64 = 3;
/// Extra token for a message's `name`.
pub const PER_NAME: u64 = 1;
/// Priming the reply (`<|start|>assistant<|message|>`), once per prompt.
pub const PER_PROMPT: u64 = 3;
/// The joint of each content part.
pub const PER_PART: u64 = 1;
/// Framing of each assistant tool call.
pub const PER_TOOL_CALL: u64 = 8;
/// Framing of each tool declaration.
pub const PER_TOOL: u64 = 8;
/// The tools block, once, when there are tools (OpenAI).
pub const OPENAI_TOOLS: u64 = 12;
/// The tools block, once, when there are tools (others: Anthropic's tool-use system prompt).
pub const CONSERVATIVE_TOOLS: u64 = 600;
/// Per text segment, for SentencePiece's dummy-prefix token (others only).
pub const CONSERVATIVE_PER_TEXT: u64 = 1;
/// Safety margin: per mille added to the count (rounded up).
pub const MARGIN_PER_MILLE: u64 = 20;
/// Safety margin: tokens added to the count.
pub const MARGIN_TOKENS: u64 = 16;
/// One OpenAI image at `detail: "low"` (see the module doc).
pub const OPENAI_IMAGE_LOW: u64 = 3_779;
/// One OpenAI image at any other detail (see the module doc).
pub const OPENAI_IMAGE_HIGH: u64 = 48_169;
/// One image for any other vendor (see the module doc).
pub const CONSERVATIVE_IMAGE: u64 = 5_000;

/// `o200k_base`, built on first use (~300 ms, ~46 MiB). `None` if the bundled ranks fail to
/// load, in which case counts fall back to bytes.
static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();

fn o200k() -> Option<&'static CoreBPE> {
    O200K.get_or_init(|| tiktoken_rs::o200k_base().ok()).as_ref()
}

/// Builds `o200k_base` now, if it is not built yet (blocks for ~300 ms the first time: call it
/// where blocking is allowed).
pub fn warm_up() {
    o200k();
}

/// Whether `o200k_base` has been built in this process.
pub fn is_loaded() -> bool {
    O200K.get().is_some()
}

/// Tokens of `text` alone, with no framing: exact for [`Tokenizer::OpenAi`], bytes otherwise.
pub fn text_tokens(text: &str, tokenizer: Tokenizer) -> u64 {
    match tokenizer {
        Tokenizer::OpenAi => match o200k() {
            Some(bpe) => bpe.encode_ordinary(text).len() as u64,
            None => text.len() as u64,
        },
        Tokenizer::OpenAiBytes | Tokenizer::Conservative => text.len() as u64,
    }
}

/// Running total of one estimate.
struct Count {
    tokenizer: Tokenizer,
    total: u64,
}

impl Count {
    fn add(&mut self, n: u64) {
        self.total = self.total.saturating_add(n);
    }

    /// A text segment: its tokens, plus the dummy prefix for non-OpenAI tokenizers.
    fn text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.add(text_tokens(text, self.tokenizer));
        if self.tokenizer == Tokenizer::Conservative {
            self.add(CONSERVATIVE_PER_TEXT);
        }
    }

    fn image(&mut self, detail: Option<&str>) {
        self.add(match (self.tokenizer, detail) {
            (Tokenizer::OpenAi | Tokenizer::OpenAiBytes, Some("low")) => OPENAI_IMAGE_LOW,
            (Tokenizer::OpenAi | Tokenizer::OpenAiBytes, _) => OPENAI_IMAGE_HIGH,
            (Tokenizer::Conservative, _) => CONSERVATIVE_IMAGE,
        });
    }

    /// The total with the safety margin.
    fn with_margin(&self) -> u64 {
        let margin = self.total.saturating_mul(MARGIN_PER_MILLE).div_ceil(1000);
        self.total.saturating_add(margin).saturating_add(MARGIN_TOKENS)
    }
}

/// A content part, as much as the estimate needs (the shared `Part` has no `detail`).
#[derive(Deserialize)]
struct PartView<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    image_url: Option<ImageView<'a>>,
}

/// `image_url`, without its (possibly huge) `url`, which is skipped unread.
#[derive(Deserialize)]
struct ImageView<'a> {
    #[serde(default, borrow)]
    detail: Option<Cow<'a, str>>,
}

fn invalid(param: String, message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message).with_param(param)
}

/// Upper bound of the prompt tokens of a chat completion request (see the module doc for what is
/// counted and why it is an upper bound). A malformed `messages`, content part, `tools` or
/// `response_format`, and any audio, file or unknown part, is a 400 naming the field.
pub fn prompt_tokens(top: &TopLevel<'_>, tokenizer: Tokenizer) -> Result<u64, ApiError> {
    let mut count = Count { tokenizer, total: 0 };
    let raw = top
        .get("messages")
        .ok_or_else(|| invalid("messages".into(), "Missing required parameter: 'messages'.".into()))?;
    let messages: Vec<Message<'_>> = serde_json::from_str(raw.get()).map_err(|e| {
        invalid(
            "messages".into(),
            format!("'messages' must be an array of messages: {e}"),
        )
    })?;
    for (i, message) in messages.iter().enumerate() {
        count_message(&mut count, message, i)?;
    }
    count.add(PER_PROMPT);
    count_tools(&mut count, top)?;
    count_response_format(&mut count, top)?;
    Ok(count.with_margin())
}

fn count_message(count: &mut Count, message: &Message<'_>, index: usize) -> Result<(), ApiError> {
    count.add(PER_MESSAGE);
    // The role is part of the framing: at least one token, whatever it is.
    count.add(text_tokens(&message.role, count.tokenizer).max(1));
    if let Some(name) = &message.name {
        count.text(name);
        count.add(PER_NAME);
    }
    if let Some(id) = &message.tool_call_id {
        count.text(id);
    }
    for call in message.tool_calls.iter().flatten() {
        count.add(PER_TOOL_CALL);
        count.text(&call.id);
        count.text(&call.function.name);
        count.text(&call.function.arguments);
    }
    let Some(raw) = message.content else {
        return Ok(());
    };
    let text = raw.get();
    let bad = || {
        invalid(
            format!("messages[{index}].content"),
            format!("'messages[{index}].content' must be a string or an array of content parts."),
        )
    };
    match text.as_bytes().first() {
        Some(b'"') => {
            let content: Cow<'_, str> = serde_json::from_str(text).map_err(|_| bad())?;
            count.text(&content);
        }
        Some(b'[') => {
            let parts: Vec<PartView<'_>> = serde_json::from_str(text).map_err(|_| bad())?;
            for (j, part) in parts.iter().enumerate() {
                count_part(count, part, index, j)?;
            }
        }
        _ if text == "null" => {}
        _ => return Err(bad()),
    }
    Ok(())
}

fn count_part(count: &mut Count, part: &PartView<'_>, i: usize, j: usize) -> Result<(), ApiError> {
    count.add(PER_PART);
    let param = || format!("messages[{i}].content[{j}]");
    match &*part.kind {
        "text" | "refusal" => match &part.text {
            Some(text) => count.text(text),
            None => {
                return Err(invalid(
                    param(),
                    format!("'messages[{i}].content[{j}]' is a {} part without 'text'.", part.kind),
                ));
            }
        },
        "image_url" => match &part.image_url {
            Some(image) => count.image(image.detail.as_deref()),
            None => {
                return Err(invalid(
                    param(),
                    format!("'messages[{i}].content[{j}]' is an image_url part without 'image_url'."),
                ));
            }
        },
        "input_audio" | "file" => {
            return Err(invalid(
                param(),
                format!(
                    "'messages[{i}].content[{j}]': {} parts are not supported, because their cost cannot be \
                     bounded before the request is sent.",
                    part.kind
                ),
            ));
        }
        other => {
            return Err(invalid(
                param(),
                format!("'messages[{i}].content[{j}]' has an unknown type '{other}'."),
            ));
        }
    }
    Ok(())
}

fn count_tools(count: &mut Count, top: &TopLevel<'_>) -> Result<(), ApiError> {
    let mut any = false;
    if let Some(raw) = top.get("tools").filter(|raw| raw.get() != "null") {
        let tools: Vec<&RawValue> = serde_json::from_str(raw.get())
            .map_err(|_| invalid("tools".into(), "'tools' must be an array of tools.".into()))?;
        for (i, raw_tool) in tools.iter().enumerate() {
            let tool: Tool<'_> = serde_json::from_str(raw_tool.get())
                .map_err(|e| invalid(format!("tools[{i}]"), format!("'tools[{i}]' is not a valid tool: {e}")))?;
            any = true;
            count.add(PER_TOOL);
            match (&*tool.kind, &tool.function) {
                ("function", Some(function)) => {
                    count.text(&function.name);
                    if let Some(description) = &function.description {
                        count.text(description);
                    }
                    if let Some(parameters) = function.parameters {
                        count.text(parameters.get());
                    }
                }
                // Another kind of tool: all of its JSON text.
                _ => count.text(raw_tool.get()),
            }
        }
    }
    if let Some(raw) = top.get("functions").filter(|raw| raw.get() != "null") {
        any = true;
        count.text(raw.get());
    }
    if any {
        count.add(match count.tokenizer {
            Tokenizer::OpenAi | Tokenizer::OpenAiBytes => OPENAI_TOOLS,
            Tokenizer::Conservative => CONSERVATIVE_TOOLS,
        });
    }
    Ok(())
}

fn count_response_format(count: &mut Count, top: &TopLevel<'_>) -> Result<(), ApiError> {
    let Some(raw) = top.get("response_format").filter(|raw| raw.get() != "null") else {
        return Ok(());
    };
    let format: ResponseFormat<'_> = serde_json::from_str(raw.get()).map_err(|_| {
        invalid(
            "response_format".into(),
            "'response_format' must be an object with a 'type'.".into(),
        )
    })?;
    if let Some(schema) = &format.json_schema {
        if let Some(name) = &schema.name {
            count.text(name);
        }
        if let Some(schema) = schema.schema {
            count.text(schema.get());
        }
    }
    Ok(())
}

/// The tokens of an embeddings request's `input`: a string, an array of strings, a token array
/// (its length), or an array of token arrays. No framing and no margin: OpenAI bills the input's
/// tokens exactly; for other vendors each string counts its bytes plus the dummy-prefix token.
pub fn embedding_tokens(top: &TopLevel<'_>, tokenizer: Tokenizer) -> Result<u64, ApiError> {
    let raw = top
        .get("input")
        .ok_or_else(|| invalid("input".into(), "Missing required parameter: 'input'.".into()))?;
    let bad = || {
        invalid(
            "input".into(),
            "'input' must be a string, an array of strings, an array of tokens or an array of token arrays.".into(),
        )
    };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => {
            let s: Cow<'_, str> = serde_json::from_str(text).map_err(|_| bad())?;
            Ok(input_tokens(&s, tokenizer))
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| bad())?;
            let mut total = 0u64;
            for item in items {
                let item = item.get();
                let n = match item.as_bytes().first() {
                    Some(b'"') => {
                        let s: Cow<'_, str> = serde_json::from_str(item).map_err(|_| bad())?;
                        input_tokens(&s, tokenizer)
                    }
                    Some(b'[') => serde_json::from_str::<Vec<u64>>(item).map_err(|_| bad())?.len() as u64,
                    // A bare token id: this is a token array, one token per item.
                    Some(b'0'..=b'9') => {
                        serde_json::from_str::<u64>(item).map_err(|_| bad())?;
                        1
                    }
                    _ => return Err(bad()),
                };
                total = total.saturating_add(n);
            }
            Ok(total)
        }
        _ => Err(bad()),
    }
}

/// One embedding input string: its tokens, plus the dummy prefix for non-OpenAI tokenizers.
fn input_tokens(text: &str, tokenizer: Tokenizer) -> u64 {
    match tokenizer {
        Tokenizer::Conservative if !text.is_empty() => text_tokens(text, tokenizer) + CONSERVATIVE_PER_TEXT,
        _ => text_tokens(text, tokenizer),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chat(body: &str, tokenizer: Tokenizer) -> Result<u64, ApiError> {
        let top = TopLevel::parse(body.as_bytes()).unwrap();
        prompt_tokens(&top, tokenizer)
    }

    fn embed(body: &str, tokenizer: Tokenizer) -> Result<u64, ApiError> {
        let top = TopLevel::parse(body.as_bytes()).unwrap();
        embedding_tokens(&top, tokenizer)
    }

    /// The estimate for a raw count: +2% rounded up, +16.
    fn margin(raw: u64) -> u64 {
        raw + (raw * 20).div_ceil(1000) + 16
    }

    fn o200k(text: &str) -> u64 {
        text_tokens(text, Tokenizer::OpenAi)
    }

    #[test]
    fn families() {
        assert_eq!(tokenizer_for("gpt"), Tokenizer::OpenAi);
        assert_eq!(Tokenizer::OpenAi.bound(), Tokenizer::OpenAiBytes);
        assert_eq!(Tokenizer::Conservative.bound(), Tokenizer::Conservative);
        assert!(Tokenizer::OpenAi.needs_tables());
        assert!(!Tokenizer::OpenAiBytes.needs_tables() && !Tokenizer::Conservative.needs_tables());
        for family in ["claude", "gemini", "deepseek", "mistral", "llama", ""] {
            assert_eq!(tokenizer_for(family), Tokenizer::Conservative);
        }
    }

    // Expected token counts of the texts below were computed independently with the Python
    // `tiktoken` package (0.14, `o200k_base`; its ranks file, which tiktoken checks against its pinned
    // SHA-256, copied from tiktoken-rs because the download is blocked here).
    #[test]
    fn o200k_counts_match_python_tiktoken() {
        assert_eq!(o200k("hello world"), 2);
        assert_eq!(o200k("You are a helpful assistant."), 6);
        assert_eq!(o200k("What is the weather in Paris today?"), 8);
        assert_eq!(o200k("héllo wörld 👋🏽 日本語"), 11);
        assert_eq!(o200k(""), 0);
    }

    #[test]
    fn exact_openai_chat_count() {
        // Cookbook: per message 3 + role + content, +3 priming.
        // system: 3 + 1 ("system") + 6; user: 3 + 1 ("user") + 8; priming 3 → 25.
        let body = r#"{"model":"gpt-4o","messages":[
            {"role":"system","content":"You are a helpful assistant."},
            {"role":"user","content":"What is the weather in Paris today?"}]}"#;
        assert_eq!(chat(body, Tokenizer::OpenAi).unwrap(), margin(25));
        assert_eq!(margin(25), 42);
        // A name: + its tokens ("bob" = 1) + 1.
        let body = r#"{"messages":[{"role":"user","name":"bob","content":"hello world"}]}"#;
        assert_eq!(chat(body, Tokenizer::OpenAi).unwrap(), margin(3 + 1 + 1 + 1 + 2 + 3));
    }

    #[test]
    fn exact_conservative_chat_count() {
        // 3 + "user".len() (4) + "hello world".len() (11) + 1 dummy prefix + 3 priming = 22.
        let body = r#"{"messages":[{"role":"user","content":"hello world"}]}"#;
        assert_eq!(chat(body, Tokenizer::Conservative).unwrap(), margin(22));
        // Decoded, not escaped: "a\"b" is 3 bytes, "\u00e9" is 2.
        let body = r#"{"messages":[{"role":"user","content":"a\"b\u00e9"}]}"#;
        assert_eq!(chat(body, Tokenizer::Conservative).unwrap(), margin(3 + 4 + 5 + 1 + 3));
    }

    #[test]
    fn parts_and_images() {
        let body = r#"{"messages":[{"role":"user","content":[
            {"type":"text","text":"hello world"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}},
            {"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#;
        // 3 + 1 (role) + 3 parts + 2 text + images + 3.
        assert_eq!(
            chat(body, Tokenizer::OpenAi).unwrap(),
            margin(3 + 1 + 3 + 2 + OPENAI_IMAGE_LOW + OPENAI_IMAGE_HIGH + 3)
        );
        assert_eq!(
            chat(body, Tokenizer::Conservative).unwrap(),
            margin(3 + 4 + 3 + 11 + 1 + 2 * CONSERVATIVE_IMAGE + 3)
        );
        // The documented bounds.
        assert_eq!(OPENAI_IMAGE_HIGH, 2_833 + 8 * 5_667);
        const { assert!(OPENAI_IMAGE_HIGH >= 85 + 170 * 8) };
        assert_eq!(OPENAI_IMAGE_LOW, (1_536.0_f64 * 2.46).ceil() as u64);
        const { assert!(OPENAI_IMAGE_LOW >= 2_833) };
        const { assert!(CONSERVATIVE_IMAGE >= 1_600 && CONSERVATIVE_IMAGE >= 2_240 && CONSERVATIVE_IMAGE >= 16 * 258) };
    }

    #[test]
    fn tools_and_tool_calls() {
        let params = r#"{"type":"object","properties":{"city":{"type":"string"}}}"#;
        let body = format!(
            r#"{{"messages":[
                {{"role":"user","content":"hello world"}},
                {{"role":"assistant","content":null,"tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Paris\"}}"}}}}]}},
                {{"role":"tool","tool_call_id":"call_1","content":"sunny"}}],
              "tools":[{{"type":"function","function":{{"name":"get_weather","description":"Get the weather.","parameters":{params}}}}}]}}"#
        );
        let expected = 3
            + o200k("user")
            + o200k("hello world")
            + 3
            + o200k("assistant")
            + PER_TOOL_CALL
            + o200k("call_1")
            + o200k("get_weather")
            + o200k(r#"{"city":"Paris"}"#)
            + 3
            + o200k("tool")
            + o200k("call_1")
            + o200k("sunny")
            + 3
            + PER_TOOL
            + o200k("get_weather")
            + o200k("Get the weather.")
            + o200k(params)
            + OPENAI_TOOLS;
        let got = chat(&body, Tokenizer::OpenAi).unwrap();
        assert_eq!(got, margin(expected));
        // Independently (Python tiktoken): user 1, hello world 2, assistant 1, call_1 3,
        // get_weather 2, {"city":"Paris"} 5, tool 1, sunny 2, Get the weather. 4, params 14.
        assert_eq!(
            expected,
            3 + 1 + 2 + 3 + 1 + 8 + 3 + 2 + 5 + 3 + 1 + 3 + 2 + 3 + 8 + 2 + 4 + 14 + 12
        );
        let conservative = chat(&body, Tokenizer::Conservative).unwrap();
        assert!(conservative > got + CONSERVATIVE_TOOLS - OPENAI_TOOLS);
        // Without the tools, both are smaller by at least the tool block.
        let no_tools = body.replace("\"tools\"", "\"unused\"");
        assert!(chat(&no_tools, Tokenizer::OpenAi).unwrap() + OPENAI_TOOLS + PER_TOOL < got);
    }

    #[test]
    fn response_format_schema_counts() {
        let schema = r#"{"type":"object","properties":{"answer":{"type":"string"}}}"#;
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"hi"}}],"response_format":{{"type":"json_schema","json_schema":{{"name":"a","schema":{schema}}}}}}}"#
        );
        let plain = chat(r#"{"messages":[{"role":"user","content":"hi"}]}"#, Tokenizer::OpenAi).unwrap();
        let with = chat(&body, Tokenizer::OpenAi).unwrap();
        assert!(with >= plain + o200k("a") + o200k(schema));
    }

    #[test]
    fn malformed_requests_name_the_field() {
        let param = |body: &str| chat(body, Tokenizer::OpenAi).unwrap_err().param.unwrap().into_owned();
        assert_eq!(param(r#"{"model":"m"}"#), "messages");
        assert_eq!(param(r#"{"messages":{}}"#), "messages");
        assert_eq!(param(r#"{"messages":[{"content":"no role"}]}"#), "messages");
        assert_eq!(
            param(r#"{"messages":[{"role":"user","content":"a"},{"role":"user","content":5}]}"#),
            "messages[1].content"
        );
        assert_eq!(
            param(r#"{"messages":[{"role":"user","content":[{"text":"x"}]}]}"#),
            "messages[0].content"
        );
        assert_eq!(
            param(r#"{"messages":[{"role":"user","content":[{"type":"text"}]}]}"#),
            "messages[0].content[0]"
        );
        assert_eq!(
            param(
                r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"input_audio","input_audio":{"data":"AA","format":"wav"}}]}]}"#
            ),
            "messages[0].content[1]"
        );
        assert_eq!(
            param(r#"{"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"f"}}]}]}"#),
            "messages[0].content[0]"
        );
        assert_eq!(
            param(r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#),
            "messages[0].content[0]"
        );
        assert_eq!(param(r#"{"messages":[],"tools":{}}"#), "tools");
        assert_eq!(
            param(r#"{"messages":[],"tools":[{"type":"function"},{"x":1}]}"#),
            "tools[1]"
        );
        assert_eq!(param(r#"{"messages":[],"response_format":"json"}"#), "response_format");
        let e = chat(
            r#"{"messages":[{"role":"user","content":true}]}"#,
            Tokenizer::Conservative,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn embeddings() {
        assert_eq!(embed(r#"{"input":"hello world"}"#, Tokenizer::OpenAi).unwrap(), 2);
        assert_eq!(
            embed(r#"{"input":"hello world"}"#, Tokenizer::Conservative).unwrap(),
            12
        );
        assert_eq!(
            embed(
                r#"{"input":["hello world","You are a helpful assistant."]}"#,
                Tokenizer::OpenAi
            )
            .unwrap(),
            8
        );
        assert_eq!(embed(r#"{"input":[1,2,3]}"#, Tokenizer::OpenAi).unwrap(), 3);
        assert_eq!(embed(r#"{"input":[[1,2],[3]]}"#, Tokenizer::Conservative).unwrap(), 3);
        assert_eq!(embed(r#"{"input":[]}"#, Tokenizer::OpenAi).unwrap(), 0);
        for bad in [
            r#"{"x":1}"#,
            r#"{"input":5}"#,
            r#"{"input":[null]}"#,
            r#"{"input":[[-1]]}"#,
            r#"{"input":[{}]}"#,
        ] {
            assert_eq!(
                embed(bad, Tokenizer::OpenAi).unwrap_err().param.as_deref(),
                Some("input"),
                "{bad}"
            );
        }
    }

    /// The simulator's rule (crates/simulator/src/tokens.rs): Σ (4 + words) + 3.
    fn simulator(messages: &[Vec<String>]) -> u64 {
        messages
            .iter()
            .map(|parts| 4 + parts.concat().split_whitespace().count() as u64)
            .sum::<u64>()
            + 3
    }

    fn body_of(messages: &[Vec<String>]) -> String {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .enumerate()
            .map(|(i, parts)| {
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                if parts.len() == 1 {
                    serde_json::json!({"role": role, "content": parts[0]})
                } else {
                    let parts: Vec<_> = parts
                        .iter()
                        .map(|t| serde_json::json!({"type":"text","text":t}))
                        .collect();
                    serde_json::json!({"role": role, "content": parts})
                }
            })
            .collect();
        serde_json::json!({"model": "m", "messages": messages}).to_string()
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,200}",
            "\\PC{0,100}",
            "[\u{1F300}-\u{1FAFF}\u{200D}\u{FE0F} ]{0,60}",
            "[ \t\r\n\u{a0}\u{2003}\u{3000}a-zé日]{0,120}",
            "([a-z]{1,8}[ \t\n]{1,6}){0,30}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn bytes_bound_o200k(t in text()) {
            prop_assert!(text_tokens(&t, Tokenizer::Conservative) >= o200k(&t));
        }

        #[test]
        fn estimates_bound_the_simulator_and_o200k(
            messages in prop::collection::vec(prop::collection::vec(text(), 1..4), 1..6)
        ) {
            let body = body_of(&messages);
            let openai = chat(&body, Tokenizer::OpenAi).unwrap();
            let conservative = chat(&body, Tokenizer::Conservative).unwrap();
            let sim = simulator(&messages);
            prop_assert!(openai >= sim, "openai {openai} < simulator {sim}");
            prop_assert!(conservative >= sim, "conservative {conservative} < simulator {sim}");
            // The cookbook's exact count of the same prompt, with no margin.
            let cookbook: u64 = messages
                .iter()
                .enumerate()
                .map(|(i, parts)| 3 + o200k(if i % 2 == 0 { "user" } else { "assistant" })
                    + parts.iter().map(|p| o200k(p)).sum::<u64>())
                .sum::<u64>() + 3;
            prop_assert!(conservative >= cookbook, "conservative {conservative} < o200k {cookbook}");
            prop_assert!(openai >= cookbook);
        }

        #[test]
        fn embeddings_bound_o200k(items in prop::collection::vec(text(), 1..4)) {
            let body = serde_json::json!({"input": items}).to_string();
            let words: u64 = items.iter().map(|t| t.split_whitespace().count() as u64).sum();
            let exact: u64 = items.iter().map(|t| o200k(t)).sum();
            prop_assert_eq!(embed(&body, Tokenizer::OpenAi).unwrap(), exact);
            prop_assert!(embed(&body, Tokenizer::OpenAiBytes).unwrap() >= exact);
            prop_assert!(embed(&body, Tokenizer::Conservative).unwrap() >= exact);
            prop_assert!(exact >= words);
        }

        /// Admission reserves with the byte bound where the exact count changes nothing: it
        /// must never be below the exact estimate, whatever the request holds.
        #[test]
        fn the_byte_bound_is_never_below_the_exact_estimate(
            texts in prop::collection::vec(text(), 6),
            detail in prop_oneof![Just("low"), Just("high"), Just("auto")],
            images in 0usize..3,
        ) {
            let mut parts = vec![serde_json::json!({"type": "text", "text": texts[0]})];
            for _ in 0..images {
                parts.push(serde_json::json!({"type": "image_url", "image_url": {"url": "data:,", "detail": detail}}));
            }
            let body = serde_json::json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": texts[1]},
                    {"role": "user", "name": texts[2], "content": parts},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": texts[3]}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": texts[4]},
                ],
                "tools": [{"type": "function", "function": {"name": "f", "description": texts[5],
                    "parameters": {"type": "object"}}}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
            }).to_string();
            let exact = chat(&body, Tokenizer::OpenAi).unwrap();
            let bound = chat(&body, Tokenizer::OpenAiBytes).unwrap();
            prop_assert!(bound >= exact, "byte bound {bound} < exact {exact}");
        }
    }

    /// Prints (does not assert) the cost of estimating a 2,000-word prompt.
    /// `cargo test -p router-one-providers --release estimate::tests::timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn timing_2000_words() {
        let words = [
            "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "naïve", "café,", "1234", "🚀",
        ];
        let text: Vec<&str> = (0..2000).map(|i| words[(i * 7 + i / 3) % words.len()]).collect();
        let body = serde_json::json!({"model":"gpt-4o","messages":[
            {"role":"system","content":"You are a helpful assistant."},
            {"role":"user","content": text.join(" ")}]})
        .to_string();
        let top = TopLevel::parse(body.as_bytes()).unwrap();
        let start = std::time::Instant::now();
        let first = prompt_tokens(&top, Tokenizer::OpenAi).unwrap();
        println!("first call (builds o200k_base): {:?}, {first} tokens", start.elapsed());
        for tokenizer in [Tokenizer::OpenAi, Tokenizer::Conservative] {
            let runs = 200;
            let start = std::time::Instant::now();
            let mut n = 0;
            for _ in 0..runs {
                n = prompt_tokens(&top, tokenizer).unwrap();
            }
            println!(
                "{tokenizer:?}: {:?} per 2,000-word prompt ({n} tokens)",
                start.elapsed() / runs
            );
        }
    }
}
