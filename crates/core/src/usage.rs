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
    /// `POST /v1/responses` (OpenAI Responses API, served as a chat completion).
    Responses,
    /// `POST /v1/messages` (Anthropic Messages API, served as a chat completion).
    Messages,
}

impl Endpoint {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Messages => "messages",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Endpoint> {
        match s {
            "chat_completions" => Some(Endpoint::ChatCompletions),
            "embeddings" => Some(Endpoint::Embeddings),
            "responses" => Some(Endpoint::Responses),
            "messages" => Some(Endpoint::Messages),
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
    /// The node run whose budget leases paid for the request (a cluster node); `None` on a
    /// single node, whose budgets live in its memory. Journaled with the record, so a replay
    /// after a crash settles the leases of the run that admitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<RecordLease>,
    /// Attempts on other routes that failed before this one served or failed for good (empty
    /// when the first attempt was the last: the usual case). They are not billed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_attempts: Vec<FailedAttempt>,
    /// The response's signed receipt, as kept (metadata and the body's SHA-256, never a body;
    /// docs/receipts.md); `None` for a refusal, a dialect endpoint or a response whose client
    /// left before its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<RecordReceipt>,
    /// Why the gateway refused the request, where `error_code` does not say
    /// (`core::error::REFUSED_BY_*`: `rate_limit`, `budget`, `balance`), for the operator's
    /// metrics. Kept in the journal, not in the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// A response's receipt as its record keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordReceipt {
    /// What the receipt's claims cannot be rebuilt from: the rest of them is the record itself
    /// (`receipts::Claims::of`). A receipt is mostly its claims, so this is about half of one
    /// in the journal, and in the database a fifth: its batch's JWS is stored once per batch.
    Parts(ReceiptParts),
    /// A whole receipt (`<JWS>~<claims>~<path>`), as records kept it before they kept parts:
    /// still read from older journals and rows.
    Whole(String),
}

/// The parts of a receipt its record does not hold ([`RecordReceipt::Parts`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptParts {
    /// The batch's compact JWS (the signed root); the same for every receipt of the batch.
    pub batch: String,
    /// The path from the receipt's leaf to that root, base64url (as in the receipt).
    pub path: String,
    /// Lower-case hex SHA-256 of the body the client received (a claim).
    pub response_sha256: String,
    /// The upstream's own id for its answer, where the adapter read one (a claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_response_id: Option<String>,
}

impl ReceiptParts {
    /// The batch's id: its JWS's signature, which no other batch has (an Ed25519 signature is
    /// a function of the key and the signed root).
    pub fn batch_id(&self) -> &str {
        self.batch.rsplit('.').next().unwrap_or_default()
    }
}

/// Most characters kept of a model name in a usage record (and its receipt's claims, which
/// are rebuilt from it). Model ids are far shorter; the bound keeps what a client or an
/// upstream reports from growing the table, and with it every page of `GET /v1/usage`.
pub const MAX_MODEL_CHARS: usize = 256;

/// `name` as a usage record keeps it: at most [`MAX_MODEL_CHARS`] characters.
pub fn kept_model_name(name: &str) -> &str {
    match name.char_indices().nth(MAX_MODEL_CHARS) {
        None => name,
        Some((end, _)) => &name[..end],
    }
}

/// An attempt of a request on one route that failed before the client received a byte, and
/// was tried again on another route of the same model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedAttempt {
    /// The route (provider channel) tried.
    pub route: String,
    /// The error code it ended with (`upstream_error`, `upstream_timeout`, …).
    pub error: String,
    /// The status it would have given the client.
    pub status: u16,
    /// How long it took, µs.
    pub latency_us: u64,
}

/// Which leases a record's cost is drawn from: the account's lease and (if the key has a
/// `max_spend`) the key's lease for one budget period, both held by one node run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLease {
    /// The node that admitted the request.
    pub node_id: String,
    /// Its run (see [`crate::cluster::NodeRun`]).
    pub node_epoch: i64,
    /// The key's budget period at admission, µs (0: lifetime); `None` if the key had no
    /// `max_spend`, so only the account's lease is drawn on.
    pub key_period_start_us: Option<i64>,
}
