//! Signed receipts (docs/receipts.md): for every inference response, a compact JWS (RFC 7515,
//! `alg` `EdDSA`, Ed25519, `kid` in the protected header) whose payload names what was asked
//! for, what served it, what it cost and the SHA-256 of the exact body bytes the client
//! received. Anyone holding the gateway's public keys (its JWKS, RFC 7517 / RFC 8037) can check
//! a receipt offline; no prompt or completion text is ever in one, only the body's hash.
//!
//! This crate owns the receipt's wire form ([`jws`], and [`batch`]: one signature vouches for
//! every receipt of a batch through a Merkle tree), its payload ([`Claims`]), the signing keys
//! kept in the data directory ([`keys`]) and the JWKS ([`jwks`]); the server signs, the CLI
//! verifies.

pub mod batch;
pub mod jwks;
pub mod jws;
pub mod keys;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use router_one_core::usage::{ReceiptParts, RecordReceipt, UsageRecord, kept_model_name};

pub use batch::{BatchSigner, InFlight};
pub use jwks::{Jwk, Jwks};
pub use jws::VerifyError;
pub use keys::{KeyRing, ReceiptSigner};

/// The name of the response header carrying a complete response's receipt.
pub const RECEIPT_HEADER: &str = "x-router-one-receipt";

/// The SSE comment line that ends a stream with its receipt: `: receipt <jws>` and a blank line.
pub const STREAM_PREFIX: &[u8] = b": receipt ";

/// A receipt's payload: what one request was asked for, served and billed, and the hash of the
/// body its client received. Borrowed from the usage record, so signing copies nothing.
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    /// The request id (`x-request-id`, the usage record's id).
    pub request_id: &'a str,
    /// The account billed.
    pub account_id: &'a str,
    /// The inference key that made the request.
    pub key_id: &'a str,
    /// The API called (`chat_completions`, `embeddings`).
    pub endpoint: &'a str,
    /// The model the client asked for.
    pub requested_model: &'a str,
    /// The model as the upstream reported it (`null` if it reported none).
    pub served_model: Option<&'a str>,
    /// The route (provider channel, as configured) that served the request.
    pub provider: &'a str,
    /// The upstream's own id for its answer (an OpenAI-format upstream's `id`); `null` where the
    /// adapter does not read one (translated answers: Anthropic, Gemini).
    pub upstream_response_id: Option<&'a str>,
    /// Token counts as billed.
    pub usage: ClaimedUsage,
    /// The cost billed, USD, as an exact decimal string.
    pub cost: String,
    /// When the request arrived, µs since the Unix epoch.
    pub created_at_us: i64,
    /// The HTTP status of the response.
    pub status: u16,
    /// Why metering is incomplete or the stream ended early (`null` for a clean answer).
    pub error_code: Option<&'a str>,
    /// Whether the response was streamed.
    pub streamed: bool,
    /// Lower-case hex SHA-256 of the exact response body bytes the client received (a stream:
    /// every byte before the receipt's own comment line).
    pub response_sha256: String,
}

/// Token counts in a receipt.
#[derive(Debug, Serialize)]
pub struct ClaimedUsage {
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Prompt tokens read from the upstream's cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the upstream's cache.
    pub cache_write_tokens: u64,
    /// Output tokens, reasoning included.
    pub completion_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
}

impl<'a> Claims<'a> {
    /// The claims of `record`, whose response body hashed to `body_sha256`; `upstream_response_id`
    /// is the upstream's own id for its answer, where the adapter read one.
    pub fn of(record: &'a UsageRecord, upstream_response_id: Option<&'a str>, body_sha256: &[u8; 32]) -> Claims<'a> {
        let u = &record.usage;
        Claims {
            request_id: &record.request_id,
            account_id: &record.account_id,
            key_id: &record.key_id,
            endpoint: record.endpoint.as_str(),
            // As the record keeps them, so that claims rebuilt from a stored record are the same.
            requested_model: kept_model_name(&record.requested_model),
            served_model: record.served_model.as_deref().map(kept_model_name),
            provider: &record.provider,
            upstream_response_id,
            usage: ClaimedUsage {
                prompt_tokens: u.prompt_tokens,
                cached_tokens: u.cached_tokens,
                cache_write_tokens: u.cache_write_tokens,
                completion_tokens: u.completion_tokens,
                reasoning_tokens: u.reasoning_tokens,
            },
            cost: record.cost.to_string(),
            created_at_us: record.created_at_us,
            status: record.status,
            error_code: record.error_code.as_deref(),
            streamed: record.streamed,
            response_sha256: hex::encode(body_sha256),
        }
    }
}

/// What `record` keeps of `receipt` (the whole receipt its response carried, sealed over
/// [`Claims::of`] the record with `upstream_response_id` and `body_sha256`): the parts its claims
/// cannot be rebuilt from ([`rebuilt`]).
pub fn parts_of(receipt: &str, upstream_response_id: Option<&str>, body_sha256: &[u8; 32]) -> ReceiptParts {
    let mut parts = receipt.split(batch::PART_SEPARATOR);
    let batch = parts.next().unwrap_or_default().to_owned();
    let path = parts.nth(1).unwrap_or_default().to_owned();
    ReceiptParts {
        batch,
        path,
        response_sha256: hex::encode(body_sha256),
        upstream_response_id: upstream_response_id.map(str::to_owned),
    }
}

/// The receipt of `record` (`None` if it has none), byte for byte the one its response
/// carried: kept whole, or rebuilt from its parts and the record's own fields. A record that
/// no longer leads to its batch's signed root (altered since) is [`VerifyError::NotInBatch`].
pub fn rebuilt(record: &UsageRecord) -> Result<Option<String>, VerifyError> {
    let parts = match &record.receipt {
        None => return Ok(None),
        Some(RecordReceipt::Whole(whole)) => return Ok(Some(whole.clone())),
        Some(RecordReceipt::Parts(parts)) => parts,
    };
    let mut body_sha256 = [0; 32];
    hex::decode_to_slice(&parts.response_sha256, &mut body_sha256)
        .map_err(|_| VerifyError::Malformed("the kept body hash is not 32 bytes of hex"))?;
    let claims = serde_json::to_vec(&Claims::of(record, parts.upstream_response_id.as_deref(), &body_sha256))
        .map_err(|_| VerifyError::Malformed("claims"))?;
    // Our own batch, already checked when it was signed: its payload is read, not verified.
    let signed: batch::BatchClaims = parts
        .batch
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|payload| serde_json::from_slice(&payload).ok())
        .ok_or(VerifyError::Malformed("the JWS payload is not a batch"))?;
    in_batch(&claims, &parts.path, &signed)?;
    Ok(Some(batch::assemble(&parts.batch, &claims, &parts.path)))
}

/// Whether `claims` and their `path` (base64url) lead to the root `batch` signed.
fn in_batch(claims: &[u8], path: &str, batch: &batch::BatchClaims) -> Result<(), VerifyError> {
    let path = URL_SAFE_NO_PAD
        .decode(path)
        .map_err(|_| VerifyError::Malformed("the path is not base64url"))?;
    let root = batch::root_of(batch::leaf_hash(claims), &path).ok_or(VerifyError::Malformed(
        "the path is not whole 33-byte steps (`L` or `R`, a hash)",
    ))?;
    if hex::encode(root) != batch.root {
        return Err(VerifyError::NotInBatch);
    }
    Ok(())
}

/// SHA-256 of a complete body. Ring's, as every SHA-256 of receipts: its assembly is about
/// twice as fast as a portable one on CPUs without SHA extensions, and a receipt hashes every
/// byte of every answer.
pub fn body_sha256(body: &[u8]) -> [u8; 32] {
    finish(ring::digest::digest(&ring::digest::SHA256, body))
}

/// The 32 bytes of a SHA-256 digest.
fn finish(digest: ring::digest::Digest) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The SHA-256 of a body sent in pieces (a stream), fed as each piece is queued for the client.
#[derive(Clone)]
pub struct BodyHasher(ring::digest::Context);

impl Default for BodyHasher {
    fn default() -> BodyHasher {
        BodyHasher(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl std::fmt::Debug for BodyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyHasher")
    }
}

impl BodyHasher {
    /// Adds the next bytes sent.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything added.
    pub fn finish(self) -> [u8; 32] {
        finish(self.0.finish())
    }

    /// The digest of `parts` in order, prefixed by one domain byte (the Merkle tree's leaves and
    /// nodes).
    pub(crate) fn of(prefix: u8, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = BodyHasher::default();
        h.update(&[prefix]);
        for part in parts {
            h.update(part);
        }
        h.finish()
    }
}

/// A receipt whose signature and path checked out.
#[derive(Debug)]
pub struct Verified {
    /// The key that signed its batch.
    pub kid: String,
    /// Its claims, as signed.
    pub claims: serde_json::Value,
    /// The batch its signature covers.
    pub batch: batch::BatchClaims,
}

/// Checks a receipt (`<JWS>~<claims>~<path>`, [`batch`]) against a key set: the JWS's signature,
/// then that the claims and their path lead to the root it signed.
pub fn verify(receipt: &str, keys: &Jwks) -> Result<Verified, VerifyError> {
    let mut parts = receipt.trim().split(batch::PART_SEPARATOR);
    let (Some(jws), Some(claims_b64), Some(path_b64), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed(
            "expected a JWS, claims and a path separated by `~`",
        ));
    };
    let signed = jws::verify(jws, keys)?;
    let batch: batch::BatchClaims = serde_json::from_slice(&signed.payload)
        .map_err(|_| VerifyError::Malformed("the JWS payload is not a batch"))?;
    let claims_bytes = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| VerifyError::Malformed("claims are not base64url"))?;
    in_batch(&claims_bytes, path_b64, &batch)?;
    let claims = serde_json::from_slice(&claims_bytes).map_err(|_| VerifyError::Malformed("claims are not JSON"))?;
    Ok(Verified {
        kid: signed.kid,
        claims,
        batch,
    })
}
