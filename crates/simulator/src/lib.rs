//! `router-one-simulator`: fake upstream LLM providers over real HTTP.
//!
//! It stands in for real providers (the build and test machines have no internet) in the gateway's
//! tests, in `--demo` mode and in benchmarks, where it is the "direct path" baseline. So it speaks
//! each vendor's wire format exactly, answers deterministically, and does as little work per request
//! as it can: requests are parsed into borrowed structs, responses are written straight into one
//! buffer, there is no per-request logging and no lock on the request path.
//!
//! # Endpoints (OpenAI wire format)
//! - `POST /v1/chat/completions`, streaming (SSE) or not, with tools and JSON mode, and `n`
//!   choices (1..=128, absent or null is 1, else OpenAI's 400 `integer_below_min_value` /
//!   `integer_above_max_value` with `param` `n`): every choice is the same answer, capped on its
//!   own; streamed, each choice's chunks come in turn, each with its finish chunk.
//! - `POST /v1/embeddings`, `encoding_format` `float` or `base64`.
//! - anything else: 404 with an OpenAI-style error.
//!
//! Both need `authorization: Bearer <anything non-empty>`, else 401. Served over HTTP/1.1 with
//! keep-alive (`cargo run -p router-one-simulator --example serve -- 127.0.0.1:8089` runs one).
//! A key repeated in a JSON object keeps its last value, at every level, as Python's `json` and
//! JavaScript's `JSON.parse` do (`{"model":"a","model":"b"}` is model `b`); the `lenient` module
//! says how (and the one exception, inside `tool_choice`).
//!
//! # Endpoints (Gemini wire format)
//! `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` (`?alt=sse` for SSE
//! events, else a streamed JSON array), `:embedContent` and `:batchEmbedContents`, with
//! `x-goog-api-key` (else 403 `PERMISSION_DENIED`) and Google's error body. Same reply text and
//! token rule (`systemInstruction` counts as a message); `cached=N` is part of
//! `promptTokenCount`, `reasoning=N` is `thoughtsTokenCount` (not part of
//! `candidatesTokenCount`, part of `totalTokenCount`); a `safety` directive blocks the answer
//! (`finishReason` `SAFETY`). The `gemini` module documents it.
//!
//! # Endpoint (Anthropic wire format)
//! - `POST /v1/messages` (Messages API), streaming (SSE events `message_start` ...
//!   `message_stop`) or not, with tools (`tool_use` / `tool_result` blocks), `stop_sequences`
//!   and structured outputs (`output_config.format` of type `json_schema` → a JSON answer).
//!   It needs `x-api-key: <non-empty>` and an `anthropic-version` header, else 401; errors use
//!   Anthropic's `{"type":"error","error":{"type","message"}}` body. Same reply text, token rule
//!   (`system` counts as one message; `max_tokens` caps → `stop_reason` `"max_tokens"`) and
//!   directives as below, except that `input_tokens` excludes the `cached=N` tokens, which are
//!   reported as `cache_read_input_tokens`, and a user message with a `tool_result` block is the
//!   tool turn.
//!
//! # Endpoints (Google Cloud Vertex AI)
//! `POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict`
//! and `:streamRawPredict` (the Messages API above, the model from the path, and
//! `"anthropic_version": "vertex-2023-10-16"` required in the body, else 400);
//! `…/publishers/google/models/{model}:generateContent` and `:streamGenerateContent` (the Gemini
//! API above). They need `authorization: Bearer <a token this server issued>`, else 401
//! `UNAUTHENTICATED`; `POST /token` issues them for a well-formed RS256 JWT-bearer assertion
//! (the signature is not verified). The `vertex` module documents it.
//!
//! # Deterministic answers
//! The reply text is `Simulated reply from <model>. You said: <first 200 chars of the last user
//! message>`, with runs of whitespace collapsed to one space. With `response_format` `json_object`
//! or `json_schema` the content is `{"reply":"<that text>"}`. With tools (and `tool_choice` not
//! `"none"`, and a user message last) the answer is tool calls whose arguments are
//! `{"echo":"<first 50 chars of the last user message>"}`; after a `tool` message it is
//! `Tool said: <first 200 chars of its content>`.
//!
//! # Token rule
//! The `tokens` module documents it in full; in short:
//! - `prompt_tokens` = Σ over messages of (4 + whitespace-separated words of its text) + 3;
//! - `completion_tokens` = words of the reply (10 per tool call) + reasoning tokens; with `n`
//!   choices, the sum of every choice's words plus the reasoning tokens once;
//! - `max_completion_tokens` (else `max_tokens`) truncates each choice's text to that many words,
//!   and `finish_reason` becomes `"length"` (tool calls and reasoning tokens are not capped).
//!
//! # Directives (fault injection and test control)
//! Read from the request header `x-sim: k=v,k=v` and from `[[sim:k=v,k=v]]` anywhere in the last
//! user message (or in any embeddings input string), because a gateway under test does not forward
//! client headers. Keys: `status=NNN`, `timeout`, `reset`, `malformed`, `cut=N`, `ttft_ms=N`,
//! `tpot_ms=N`, `cached=N`, `reasoning=N`, `words=N`, `keepalive` (open an OpenAI stream with an SSE
//! comment), and `report_prompt=N`, `report_completion=N`, `report_cached=N`, `report_reasoning=N`
//! (a lying upstream: each replaces one field of the usage reported, in every format, up to
//! 18446744073709551615, and changes nothing else), and `endless_event` (an OpenAI stream event
//! that never ends); the `directives` module documents them.
//!
//! # Payment provider
//! The simulator is also the project's simulated payment provider (`kind = "simulated"` in the
//! gateway's `[payments.*]` config; `docs/accounts-and-billing.md` is the spec). Endpoints:
//! - `POST /payments/v1/sessions` (`authorization: Bearer <PaymentSimConfig::api_key>`, else
//!   401): `{session_id, amount, currency, channel, webhook_url}` → `{id: "sps_…", url,
//!   status: "open"}`; `url` is where the payer pays (`GET` shows a small page with a pay button).
//! - `POST /payments/pay/{sps_id}[?deliver=false]`: the payer pays; 404 if unknown, 409 if
//!   already paid. A `payment.succeeded` event is signed and sent to the session's `webhook_url`.
//! - `POST /payments/v1/payments/{pay_id}/refund` and `/chargeback` (`?deliver=false` too;
//!   Bearer API key): `payment.refunded` / `payment.charged_back`. Repeating one re-sends the same
//!   event (same bytes, fresh signature), as a real provider's retry would.
//!
//! Each of the last three answers `{payment_id, event: {body, signature}, delivery}`: `body` is
//! the exact bytes signed, `signature` the `x-router-one-signature` value
//! (`router_one_core::webhook::sign` with [`PaymentSimConfig::webhook_secret`] at the current
//! time), and `delivery` is `null` with `deliver=false`, else `{status, body}`, the receiver's
//! answer (`body` as JSON when it is JSON, else as a string), or `{status: null, body: null,
//! error}` when it could not be delivered. Event body: `{"id": "evt_…", "type", "created",
//! "data": {"payment_id", "session_id", "amount", "currency"}}` (`amount` and `currency` only in
//! `payment.succeeded`). Sessions and payments live in memory, behind one mutex that the LLM
//! endpoints never take.

mod anthropic;
mod body;
mod conn;
mod directives;
mod embedding;
mod exchange;
mod gemini;
mod json;
mod lenient;
mod openai;
mod payments;
mod reply;
mod tokens;
mod vertex;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

/// How the simulated upstream paces its answers (unless a request overrides it with the
/// `ttft_ms` / `tpot_ms` directives), and the simulated payment provider's secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimConfig {
    /// Time to first token: the wait before the first content chunk.
    pub ttft: Duration,
    /// Time per output token: the wait between two words of a streamed reply.
    pub tpot: Duration,
    /// The simulated payment provider.
    pub payments: PaymentSimConfig,
}

/// The simulated payment provider's secrets, shared with the gateway's `simulated` adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentSimConfig {
    /// The Bearer key its merchant API (`/payments/v1/…`) requires.
    pub api_key: String,
    /// The secret its webhooks are signed with.
    pub webhook_secret: String,
}

impl PaymentSimConfig {
    /// The default API key (`--demo` and `router-one simulate` use it unless told otherwise).
    pub const DEFAULT_API_KEY: &'static str = "sim-pay-key";
    /// The default webhook signing secret.
    pub const DEFAULT_WEBHOOK_SECRET: &'static str = "whsec_router_one_simulated";
}

impl Default for PaymentSimConfig {
    fn default() -> Self {
        PaymentSimConfig {
            api_key: Self::DEFAULT_API_KEY.to_owned(),
            webhook_secret: Self::DEFAULT_WEBHOOK_SECRET.to_owned(),
        }
    }
}

/// What all connections of one server share: the pacing defaults, the id counter and the
/// payment provider's state.
#[derive(Debug)]
struct SimState {
    config: SimConfig,
    next_id: AtomicU64,
    payments: payments::PaymentState,
    /// Anthropic's simulated prompt cache.
    prompt_cache: anthropic::PromptCache,
    /// The access tokens its Vertex AI token endpoint issues.
    vertex_tokens: vertex::Tokens,
}

impl SimState {
    /// The next number for a response or tool-call id; unique within this server.
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Serves the simulated providers on `listener` until accepting a connection fails; spawn it.
///
/// Each accepted connection is served on its own task over HTTP/1.1 with keep-alive. Errors that
/// concern only the one connection being accepted (the peer aborted it) do not stop the server.
pub async fn serve(listener: TcpListener, config: SimConfig) -> io::Result<()> {
    let state = Arc::new(SimState {
        config,
        next_id: AtomicU64::new(1),
        payments: payments::PaymentState::new(),
        prompt_cache: anthropic::PromptCache::default(),
        vertex_tokens: vertex::Tokens::default(),
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(err) if is_per_connection(&err) => continue,
            Err(err) => return Err(err),
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move { conn::serve_connection(stream, &state).await });
    }
}

/// Accept errors that say something about one connection, not about the listener.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    )
}
