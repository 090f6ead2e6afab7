//! Every error a client can see, and the one table that maps each to its HTTP status, OpenAI error
//! `type` and `code` (promise 6: precise 4xx for client mistakes, never a 5xx).

use std::borrow::Cow;

/// What went wrong, from the client's point of view. The message is safe to show: it never
/// contains a body, a secret or an internal detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// A human-readable explanation.
    pub message: Cow<'static, str>,
    /// The request field at fault, if any.
    pub param: Option<Cow<'static, str>>,
    /// Seconds after which a retry can succeed (sent as `Retry-After`), for transient refusals.
    pub retry_after_s: Option<u64>,
    /// Why the gateway refused, where the code alone does not say (`insufficient_quota` is a
    /// key's budget or the account's balance): [`REFUSED_BY_RATE_LIMIT`], [`REFUSED_BY_BUDGET`],
    /// [`REFUSED_BY_BALANCE`]. Kept with the request's record for the operator's metrics;
    /// never sent.
    pub refusal: Option<&'static str>,
}

/// [`ApiError::refusal`]: a key's RPM, TPM or concurrency limit.
pub const REFUSED_BY_RATE_LIMIT: &str = "rate_limit";
/// [`ApiError::refusal`]: a key's spending limit or periodic budget.
pub const REFUSED_BY_BUDGET: &str = "budget";
/// [`ApiError::refusal`]: the account's prepaid balance.
pub const REFUSED_BY_BALANCE: &str = "balance";

/// The kinds of failure, each with one fixed status, type and code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not valid JSON or not the expected shape.
    InvalidJson,
    /// A required field is missing or has the wrong type or value.
    InvalidRequest,
    /// No such model in the catalog.
    ModelNotFound,
    /// No `Authorization` header.
    MissingApiKey,
    /// The key is unknown or revoked.
    InvalidApiKey,
    /// The key has expired.
    ExpiredApiKey,
    /// The key may not use this model: answered as an unknown model (404 `model_not_found`).
    ModelNotAllowed,
    /// The account's balance (or the key's lifetime budget) cannot pay for the request.
    InsufficientQuota,
    /// A per-key rate, token or concurrency limit was hit; retry later.
    RateLimited,
    /// The body is larger than allowed.
    BodyTooLarge,
    /// No such route or resource.
    NotFound,
    /// Wrong HTTP method.
    MethodNotAllowed,
    /// The upstream failed or sent something unusable.
    UpstreamError,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream is overloaded (Anthropic 529, Gemini `UNAVAILABLE`); retry later.
    UpstreamOverloaded,
    /// No provider is configured for the model.
    ProviderUnavailable,
    /// Sign-up with an email that already has an account.
    EmailTaken,
    /// Login with a wrong email or password (the same answer for both).
    InvalidCredentials,
    /// A referral the rules refuse (self-referral, a loop, a second inviter, too late).
    ReferralRefused,
    /// A webhook whose signature is missing, forged or stale.
    InvalidSignature,
    /// A payment that does not match its checkout session's quote: nothing was credited.
    PaymentMismatch,
    /// A webhook about a payment not confirmed yet (the provider retries).
    PaymentNotConfirmed,
    /// No payment provider is configured.
    PaymentsUnavailable,
    /// The payment provider could not open a payment.
    PaymentProviderError,
    /// The gateway is at its connection cap with every connection busy; retry shortly.
    ServerBusy,
    /// A bug on our side.
    Internal,
    /// The database did not answer (or failed) a call this request needed: transient, retry.
    DatabaseUnavailable,
    /// A usage record cannot be made durable right now (the usage journal cannot be written,
    /// e.g. a full disk): the request was not sent upstream, or its answer was withheld.
    /// Transient: service resumes by itself when the journal can be written; retry later.
    UsageUnavailable,
    /// The account already holds as many live inference keys as it may (revoke one first).
    KeyLimitReached,
    /// A cluster node could not get the money a request needs because the database is
    /// unreachable (nothing is used up: retry later, on any node).
    BillingUnavailable,
    /// A cluster node has heard from neither the database nor Redis for over a second, so it
    /// cannot know of keys revoked meanwhile: it refuses until it hears again (retry, or
    /// another node).
    NodeIsolated,
    /// The gateway's shutdown deadline ended the request.
    ShuttingDown,
}

impl ErrorKind {
    /// `(HTTP status, OpenAI error type, code)` — the one table.
    pub const fn parts(self) -> (u16, &'static str, &'static str) {
        use ErrorKind::*;
        match self {
            InvalidJson => (400, "invalid_request_error", "invalid_json"),
            InvalidRequest => (400, "invalid_request_error", "invalid_request"),
            ModelNotFound => (404, "invalid_request_error", "model_not_found"),
            MissingApiKey => (401, "invalid_request_error", "missing_api_key"),
            InvalidApiKey => (401, "invalid_request_error", "invalid_api_key"),
            ExpiredApiKey => (401, "invalid_request_error", "expired_api_key"),
            // Like an unknown model: relays disable a channel on `permission_error`.
            ModelNotAllowed => (404, "invalid_request_error", "model_not_found"),
            InsufficientQuota => (402, "insufficient_quota", "insufficient_quota"),
            RateLimited => (429, "rate_limit_error", "rate_limit_exceeded"),
            BodyTooLarge => (413, "invalid_request_error", "request_too_large"),
            NotFound => (404, "invalid_request_error", "not_found"),
            MethodNotAllowed => (405, "invalid_request_error", "method_not_allowed"),
            UpstreamError => (502, "upstream_error", "upstream_error"),
            UpstreamTimeout => (504, "upstream_error", "upstream_timeout"),
            UpstreamOverloaded => (503, "upstream_error", "upstream_overloaded"),
            ProviderUnavailable => (503, "server_error", "provider_unavailable"),
            EmailTaken => (409, "invalid_request_error", "email_taken"),
            InvalidCredentials => (401, "invalid_request_error", "invalid_credentials"),
            ReferralRefused => (400, "invalid_request_error", "referral_refused"),
            InvalidSignature => (400, "invalid_request_error", "invalid_signature"),
            PaymentMismatch => (422, "invalid_request_error", "payment_mismatch"),
            PaymentNotConfirmed => (409, "invalid_request_error", "payment_not_confirmed"),
            PaymentsUnavailable => (503, "server_error", "payments_unavailable"),
            PaymentProviderError => (502, "upstream_error", "payment_provider_error"),
            ServerBusy => (503, "server_error", "server_busy"),
            Internal => (500, "server_error", "internal_error"),
            DatabaseUnavailable => (503, "server_error", "database_unavailable"),
            UsageUnavailable => (503, "server_error", "usage_unavailable"),
            KeyLimitReached => (400, "invalid_request_error", "key_limit_reached"),
            BillingUnavailable => (503, "server_error", "billing_unavailable"),
            NodeIsolated => (503, "server_error", "node_isolated"),
            ShuttingDown => (503, "server_error", "gateway_shutdown"),
        }
    }

    /// The HTTP status.
    pub const fn status(self) -> u16 {
        self.parts().0
    }

    /// The OpenAI `code`.
    pub const fn code(self) -> &'static str {
        self.parts().2
    }
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            param: None,
            retry_after_s: None,
            refusal: None,
        }
    }

    /// Says why the gateway refused ([`ApiError::refusal`]).
    pub fn refused_by(mut self, reason: &'static str) -> ApiError {
        self.refusal = Some(reason);
        self
    }

    /// Says when a retry can succeed (`Retry-After`, whole seconds, at least 1).
    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, param: impl Into<Cow<'static, str>>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// The OpenAI-style body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn to_json(&self) -> Vec<u8> {
        let (_, kind, code) = self.kind.parts();
        let body = serde_json::json!({
            "error": { "message": self.message, "type": kind, "param": self.param, "code": code }
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_openai_shape() {
        let e = ApiError::new(ErrorKind::ModelNotFound, "The model `x` does not exist").with_param("model");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "The model `x` does not exist",
                "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
        );
    }

    #[test]
    fn an_unwritable_usage_journal_is_a_transient_503_relays_keep_the_channel_for() {
        let (status, kind, code) = ErrorKind::UsageUnavailable.parts();
        assert_eq!((status, kind, code), (503, "server_error", "usage_unavailable"));
    }

    #[test]
    fn rate_limits_are_429_rate_limit_exceeded() {
        // one-api/new-api disable a channel whose error mentions these words.
        let (status, _, code) = ErrorKind::RateLimited.parts();
        assert_eq!((status, code), (429, "rate_limit_exceeded"));
    }
}
