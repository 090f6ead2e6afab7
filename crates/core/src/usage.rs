//! The usage record: one per request that got a response (promise 5), metadata only — there is
//! deliberately no field that could hold a prompt or a completion (promise 2).

use serde::{Deserialize, Serialize};

use crate::money::Usd;
use crate::pricing::TokenUsage;

/// Which API a request called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/embeddings`.
    Embeddings,
}

impl Endpoint {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Embeddings => "embeddings",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Endpoint> {
        match s {
            "chat_completions" => Some(Endpoint::ChatCompletions),
            "embeddings" => Some(Endpoint::Embeddings),
            _ => None,
        }
    }
}

/// One request's metering record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The request id (also the `x-request-id` header).
    pub request_id: String,
    /// The account billed.
    pub account_id: String,
    /// The inference key used.
    pub key_id: String,
    /// When the request arrived, µs since the Unix epoch.
    pub created_at_us: i64,
    /// Which API was called.
    pub endpoint: Endpoint,
    /// The model id the client asked for.
    pub requested_model: String,
    /// The model id as the upstream reported it, when it reported one.
    pub served_model: Option<String>,
    /// The provider channel that served it.
    pub provider: String,
    /// Token counts as the upstream reported them.
    pub usage: TokenUsage,
    /// What the request cost at posted rates.
    pub cost: Usd,
    /// Total time from arrival to the last byte, µs.
    pub latency_us: u64,
    /// Time from arrival to the request leaving for the upstream, µs (gateway overhead before).
    pub upstream_sent_us: Option<u64>,
    /// Time from arrival to the first byte (streams: first event) from the upstream, µs.
    pub ttft_us: Option<u64>,
    /// HTTP status returned to the client.
    pub status: u16,
    /// The error code returned, if the request failed.
    pub error_code: Option<String>,
    /// Whether the response was streamed.
    pub streamed: bool,
}
