//! What an upstream's error status means to the client, for every wire format: the client's own
//! mistakes stay 4xx with the vendor's message; the upstream's troubles become 502/503/504; its
//! rate limits become our 429 with a neutral message, because one-api / new-api relays disable a
//! channel whose error mentions money.

use router_one_core::{ApiError, ErrorKind};

/// Words in an upstream's error that say something about the gateway's own account at the
/// provider (its credit, quota, permissions, keys), lower case. Relays (one-api, new-api) switch
/// a reseller's whole channel off on an error mentioning these (docs/relays.md), but the
/// trouble is ours, not the reseller's key: such a message never reaches the client, and a
/// "client mistake" carrying one is the provider refusing our account, a transient 503.
const ABOUT_OUR_ACCOUNT: [&str; 16] = [
    "credit",
    "balance",
    "quota",
    "billing",
    "payment",
    "permission",
    "forbidden",
    "organization",
    "account",
    "api key",
    "api_key",
    "security token",
    "not authorized",
    "not allowed",
    "terminated",
    "deactivated",
];

/// Whether an upstream's error text speaks of the gateway's account at the provider.
pub fn about_our_account(text: &[u8]) -> bool {
    let lower = text.to_ascii_lowercase();
    ABOUT_OUR_ACCOUNT
        .iter()
        .any(|word| lower.windows(word.len()).any(|w| w == word.as_bytes()))
}

/// The error for an upstream status, keeping the vendor's message where it helps the client
/// and says nothing of the gateway's own account.
pub fn from_status(status: u16, vendor_message: Option<&str>) -> ApiError {
    if vendor_message.is_some_and(|m| about_our_account(m.as_bytes())) {
        return match status {
            429 => from_status(429, None),
            _ => ApiError::new(
                ErrorKind::ProviderUnavailable,
                "The upstream provider cannot serve this model right now; retry shortly.",
            ),
        };
    }
    let with = |prefix: &str| match vendor_message {
        Some(m) => format!("{prefix}: {m}"),
        None => format!("{prefix}."),
    };
    match status {
        400 | 422 => ApiError::new(
            ErrorKind::InvalidRequest,
            with("The upstream provider rejected the request"),
        ),
        413 => ApiError::new(
            ErrorKind::BodyTooLarge,
            with("The upstream provider rejected the request"),
        ),
        429 => ApiError::new(
            ErrorKind::RateLimited,
            "The upstream provider is rate limiting requests; retry shortly.",
        ),
        503 | 529 => ApiError::new(
            ErrorKind::UpstreamOverloaded,
            with("The upstream provider is overloaded; retry shortly"),
        ),
        504 => ApiError::new(ErrorKind::UpstreamTimeout, with("The upstream provider timed out")),
        401 | 403 => ApiError::new(
            ErrorKind::UpstreamError,
            with("The upstream provider refused the gateway's credentials"),
        ),
        code => ApiError::new(
            ErrorKind::UpstreamError,
            with(&format!("The upstream provider failed with status {code}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_statuses() {
        let kind = |s| from_status(s, Some("m")).kind;
        assert_eq!(kind(400), ErrorKind::InvalidRequest);
        assert_eq!(kind(413), ErrorKind::BodyTooLarge);
        assert_eq!(kind(429), ErrorKind::RateLimited);
        assert_eq!(kind(529), ErrorKind::UpstreamOverloaded);
        assert_eq!(kind(503), ErrorKind::UpstreamOverloaded);
        assert_eq!(kind(504), ErrorKind::UpstreamTimeout);
        assert_eq!(kind(500), ErrorKind::UpstreamError);
        assert_eq!(kind(401), ErrorKind::UpstreamError);
        assert!(
            from_status(400, Some("max_tokens: too big"))
                .message
                .ends_with("max_tokens: too big")
        );
    }

    /// Anthropic answers an empty provider account with a 400 `invalid_request_error`, DeepSeek
    /// with a 402 "Insufficient Balance", OpenAI with a 429 `insufficient_quota`: none of them
    /// is the client's mistake, and none may reach a relay in words it disables a channel on.
    #[test]
    fn the_providers_word_on_our_account_never_reaches_the_client() {
        for (status, message) in [
            (400, "Your credit balance is too low to access the Anthropic API."),
            (402, "Insufficient Balance"),
            (403, "Permission denied: this organization has been disabled."),
            (401, "Incorrect API key provided"),
            (
                422,
                "You exceeded your current quota, please check your plan and billing details.",
            ),
            (500, "Your account is not authorized"),
        ] {
            let e = from_status(status, Some(message));
            assert_eq!(e.kind, ErrorKind::ProviderUnavailable, "{status} {message}");
            assert!(!about_our_account(e.message.as_bytes()), "{}", e.message);
        }
        let limited = from_status(429, Some("You exceeded your current quota"));
        assert_eq!(limited.kind, ErrorKind::RateLimited);
        assert!(!about_our_account(limited.message.as_bytes()));
        // A client mistake keeps its message.
        assert_eq!(
            from_status(400, Some("max_tokens is too large")).kind,
            ErrorKind::InvalidRequest
        );
    }

    #[test]
    fn rate_limits_never_repeat_the_vendor_message() {
        let e = from_status(429, Some("Your credit balance is too low"));
        assert!(!e.message.contains("credit") && !e.message.contains("balance"));
    }
}
