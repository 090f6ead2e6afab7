//! What the fuzz targets share: the catalog models and read contexts they use, the driver that
//! feeds one adapter's four readers, and the invariants every reader's output must keep. A
//! broken invariant panics, which libFuzzer reports as a crash with the input that caused it.

use std::sync::LazyLock;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;

use router_one_core::{Model, TokenUsage};
use router_one_providers::openai::with_cost;
use router_one_providers::sse::{SseSplitter, event_data};
use router_one_providers::{ChatApi, ReadContext, ReadHints, ReadResponse, Refusal};

/// The upstream model id every target sends and reads.
pub const UPSTREAM_ID: &str = "upstream-model-2026";

/// A chat model of `family` with every capability switched on or off by `flags` (bit 0 tools,
/// bit 1 vision, bit 2 reasoning), built once per combination.
pub fn model(family: Family, flags: u8) -> &'static Model {
    static MODELS: LazyLock<Vec<Model>> = LazyLock::new(|| {
        let mut all = Vec::new();
        for family in Family::ALL {
            for flags in 0..8u8 {
                let json = serde_json::json!({
                    "id": format!("{}-fuzz", family.name()), "family": family.name(), "kind": "chat",
                    "context_window": 200_000, "max_output": 64_000, "input_per_mtok": "3",
                    "cached_input_per_mtok": "0.30", "output_per_mtok": "15",
                    "tools": flags & 1 != 0, "vision": flags & 2 != 0, "reasoning": flags & 4 != 0,
                    "route": []
                });
                all.push(serde_json::from_value(json).expect("a valid catalog entry"));
            }
        }
        all
    });
    &MODELS[family as usize * 8 + usize::from(flags & 7)]
}

/// The catalog families the targets try (each picks a tokenizer and a refusal wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// OpenAI models (`o200k_base` counts).
    Gpt,
    /// Anthropic models.
    Claude,
    /// Google models.
    Gemini,
    /// An OpenAI-compatible vendor.
    Deepseek,
}

impl Family {
    /// Every family, in index order.
    pub const ALL: [Family; 4] = [Family::Gpt, Family::Claude, Family::Gemini, Family::Deepseek];

    /// Its catalog name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Gpt => "gpt",
            Family::Claude => "claude",
            Family::Gemini => "gemini",
            Family::Deepseek => "deepseek",
        }
    }
}

/// Panics unless `bytes` is one valid JSON document.
pub fn assert_json(bytes: &[u8], what: &str) {
    if let Err(e) = serde_json::from_slice::<IgnoredAny>(bytes) {
        panic!("{what} is not valid JSON ({e}): {:?}", String::from_utf8_lossy(bytes));
    }
}

/// The cost the targets add, as the gateway does once a request is settled.
const COST: &str = "0.0000123";

/// Panics unless `usage_end` (if any) is the closing `}` of the top-level `usage` object of
/// `json`, so that the cost added there lands in `usage`, and unless that object tells the client
/// the tokens the gateway bills (`usage`).
pub fn assert_usage_end(json: &Bytes, usage_end: Option<usize>, usage: Option<TokenUsage>, what: &str) {
    let Some(end) = usage_end else {
        return;
    };
    assert_eq!(
        json.get(end),
        Some(&b'}'),
        "{what}: usage_end {end} is not on a closing brace"
    );
    let costed = with_cost(json.clone(), Some(end), COST);
    assert_json(&costed, &format!("{what} with its cost"));
    assert!(costed.trim_ascii_start().starts_with(b"{"), "{what}: not a JSON object");
    let reported = serde_json::from_slice::<Reported>(&costed).map(|r| r.usage);
    let Ok(Some(reported)) = reported else {
        panic!("{what}: no top-level usage ({reported:?})");
    };
    // A JSON number whose text is exactly the decimal (never rounded through a float).
    assert_eq!(
        reported.cost.as_deref().map(serde_json::value::RawValue::get),
        Some(COST),
        "{what}: the cost is not in the top-level usage"
    );
    if let Some(usage) = usage {
        assert_eq!(
            (reported.prompt_tokens, reported.completion_tokens),
            (usage.prompt_tokens, usage.completion_tokens),
            "{what}: the client is told other tokens than are billed"
        );
    }
}

/// What a client reads of a body's `usage` (every other field ignored, unvalidated).
#[derive(Debug, Deserialize)]
struct Reported {
    usage: Option<ReportedUsage>,
}

#[derive(Debug, Deserialize)]
struct ReportedUsage {
    cost: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// Panics unless a successful read is valid JSON with a sound `usage_end`.
pub fn assert_read(read: &ReadResponse, what: &str) {
    assert_json(&read.body, what);
    assert_usage_end(&read.body, read.usage_end, read.usage, what);
}

/// Panics unless `event` is one whole SSE event: it ends in a blank line, so whatever the gateway
/// sends after it cannot run into it.
pub fn assert_whole_event(event: &[u8]) {
    assert!(
        event.ends_with(b"\n\n") || event.ends_with(b"\n\r\n"),
        "an event for the client does not end in a blank line: {:?}",
        String::from_utf8_lossy(event)
    );
}

/// How an adapter's stream output relates to its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOutput {
    /// OpenAI format: upstream events pass through untouched.
    PassThrough,
    /// Translated: every event is `data: <JSON>\n\n` (or a `:` comment) the adapter wrote.
    Translated,
}

/// Feeds `input` to one of `api`'s four readers, checking what it returns.
///
/// Layout: byte 0 picks the reader (`% 4`: 0 `read_chat`, 1 `read_embeddings`, 2 the stream
/// decoder, 3 `read_error`) and bit 2 the base64 hint; bytes 1–2 are the error status
/// (big-endian, `% 1000`); the rest is the upstream's body (a stream is split into events as
/// the gateway does, last unterminated event included).
pub fn read_upstream(api: &dyn ChatApi, input: &[u8], output: StreamOutput) {
    let [selector, hi, lo, body @ ..] = input else {
        return;
    };
    let context = ReadContext {
        upstream_id: UPSTREAM_ID,
        created: 1_700_000_000,
        hints: ReadHints {
            base64: selector & 4 != 0,
            prompt_tokens_estimate: u64::from(*hi) * 97,
        },
    };
    let body = Bytes::copy_from_slice(body);
    match selector % 4 {
        0 => {
            if let Ok(read) = api.read_chat(body, context) {
                assert_read(&read, "read_chat body");
            }
        }
        1 => {
            if let Ok(read) = api.read_embeddings(body, context) {
                assert_read(&read, "read_embeddings body");
            }
        }
        2 => decode_stream(api, context, body, output),
        _ => {
            let status = u16::from_be_bytes([*hi, *lo]) % 1000;
            if let Refusal::Error(error) = api.read_error(status, &body) {
                assert!(
                    error.kind.status() >= 400,
                    "an upstream error became {}",
                    error.kind.status()
                );
                assert_json(&error.to_json(), "the client's error body");
            }
        }
    }
}

/// Decodes `body` as a stream, event by event, as the gateway's metered stream does.
fn decode_stream(api: &dyn ChatApi, context: ReadContext<'_>, body: Bytes, output: StreamOutput) {
    let mut splitter = SseSplitter::default();
    let mut events = Vec::new();
    if splitter.push(body, &mut events).is_err() {
        return;
    }
    events.extend(splitter.remainder());
    let mut decoder = api.stream_decoder(context);
    let mut out = Vec::new();
    for event in events {
        let Some(data) = event_data(&event) else {
            continue;
        };
        out.clear();
        let decoded = decoder.decode(&event, data, &mut out);
        if decoded.malformed {
            break;
        }
        for sent in &out {
            assert_whole_event(sent);
            match output {
                StreamOutput::PassThrough => assert_eq!(sent, &event, "a pass-through event was changed"),
                // A comment (Anthropic's pings become `: ping`) keeps the connection alive.
                StreamOutput::Translated if sent.starts_with(b":") => {}
                StreamOutput::Translated => {
                    let json = sent
                        .strip_prefix(b"data: ")
                        .and_then(|rest| rest.strip_suffix(b"\n\n"))
                        .unwrap_or_else(|| panic!("not a `data: …` event: {:?}", String::from_utf8_lossy(sent)));
                    assert_json(json, "a translated stream chunk");
                }
            }
        }
        if let Some(held) = decoded.held {
            assert_json(&held.chunk, "the held usage chunk");
            assert_usage_end(&held.chunk, held.usage_end, decoded.usage, "the held usage chunk");
        }
    }
}
