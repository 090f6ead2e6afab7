//! A client's request body and everything that reads it before it goes upstream: the top-level
//! splitter (`TopLevel::parse`), `chat_view` / `model_field`, the token estimates
//! (`prompt_tokens`, `embedding_tokens`, both tokenizers) and each adapter's `prepare_chat` and
//! `prepare_embeddings`. Whatever an adapter accepts must be a valid JSON body for the upstream.
//!
//! Input layout: byte 0 is flags (bits 0–1 the model family, bits 2–4 tools / vision /
//! reasoning, bit 5 an output cap from admission, bit 6 the upstream id equals the model's);
//! the rest is the request body.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use router_one_fuzz::{Family, UPSTREAM_ID, assert_json, model};
use router_one_providers::anthropic::Anthropic;
use router_one_providers::estimate::{self, Tokenizer};
use router_one_providers::gemini::Gemini;
use router_one_providers::openai::OpenAi;
use router_one_providers::request::{TopLevel, chat_view, model_field};
use router_one_providers::{ChatApi, ChatRequest, ChatView, OutputLimitField, Target};

fuzz_target!(|input: &[u8]| {
    let [flags, body @ ..] = input else {
        return;
    };
    let body = Bytes::copy_from_slice(body);
    let Ok(top) = TopLevel::parse(&body) else {
        return;
    };
    assert_json(&top.write_with(&[]), "the body written back");
    assert_json(
        &top.write_with(&[("model", Some("\"m\"")), ("extra", Some("[1]")), ("n", None)]),
        "the body rewritten",
    );
    let _ = model_field(&top);
    for tokenizer in [Tokenizer::OpenAi, Tokenizer::Conservative] {
        let _ = estimate::embedding_tokens(&top, tokenizer);
        if let Ok(tokens) = estimate::prompt_tokens(&top, tokenizer) {
            assert!(
                tokens >= estimate::MARGIN_TOKENS,
                "{tokens} tokens: below the margin alone"
            );
        }
    }

    let family = Family::ALL[usize::from(flags & 3)];
    let model = model(family, flags >> 2);
    let target = Target {
        model,
        upstream_id: if flags & 64 != 0 {
            model.id.as_str()
        } else {
            UPSTREAM_ID
        },
        output_limit: (flags & 32 != 0).then_some(1024),
    };
    let openai = [
        OpenAi::default(),
        OpenAi {
            output_limit_field: OutputLimitField::MaxCompletionTokens,
        },
    ];
    let adapters: [&dyn ChatApi; 4] = [&openai[0], &openai[1], &Anthropic, &Gemini];
    for api in adapters {
        if let Ok(prepared) = api.prepare_embeddings(&top, target) {
            assert_json(&prepared.body, "a prepared embeddings body");
        }
    }
    let Ok(view) = chat_view(&top) else {
        return;
    };
    let request = ChatRequest {
        body: &body,
        top: &top,
        view: &view,
    };
    for api in adapters {
        if let Ok(prepared) = api.prepare_chat(&request, target) {
            assert_json(&prepared.body, "a prepared chat body");
        }
    }
    for api in openai {
        if let Ok(prepared) = api.prepare_chat(&request, target) {
            assert_sent_as_metered(&prepared.body, &view, target, api.output_limit_field);
        }
    }
});

/// The fields the gateway meters by, in an OpenAI body (others are written from scratch).
const METERED: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
];

/// Issue 10, item 1: the OpenAI body sent upstream says what was metered, whichever duplicate an
/// upstream's parser keeps: each metered field appears once, the model is the route's, a stream
/// asks for usage, and the output limit admission reserved for is the one the provider reads
/// (the other field is gone).
fn assert_sent_as_metered(body: &[u8], view: &ChatView<'_>, target: Target<'_>, field: OutputLimitField) {
    let sent = TopLevel::parse(body).expect("a prepared body is a JSON object");
    for name in METERED {
        let count = sent.0.iter().filter(|(k, _)| k == name).count();
        assert!(
            count <= 1,
            "`{name}` is sent {count} times: {:?}",
            String::from_utf8_lossy(body)
        );
    }
    let model = sent
        .get("model")
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    assert_eq!(
        model.as_deref(),
        Some(target.upstream_id),
        "the model sent is not the route's"
    );
    if view.stream {
        let options = sent
            .get("stream_options")
            .map(|raw| raw.get().to_owned())
            .unwrap_or_default();
        let usage = serde_json::from_str::<serde_json::Value>(&options)
            .ok()
            .and_then(|o| o["include_usage"].as_bool());
        assert_eq!(
            usage,
            Some(true),
            "a stream is sent without asking for usage: {options}"
        );
    }
    if let Some(limit) = target.output_limit {
        let sent_limit = sent
            .get(field.as_str())
            .and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok());
        assert_eq!(sent_limit, Some(limit), "the output limit sent is not the one reserved");
        assert!(
            sent.get(field.other().as_str()).is_none(),
            "the output limit is also sent in `{}`",
            field.other().as_str()
        );
    }
}
