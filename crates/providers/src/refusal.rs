//! What an upstream's error status means to the client, for every wire format: the client's own
//! mistakes stay 4xx with the vendor's message; the upstream's troubles become 502/503/504; its
//! rate limits become our 429 with a neutral message, because one-api / new-api relays disable a
//! channel whose error mentions money.

use router_one_core::{ApiError, ErrorKind};

/// The error for an upstream status, keeping the vendor's message where it helps the client.
pub fn from_status(status: u16, vendor_message: Option<&str>) -> ApiError {
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

    #[test]
    fn rate_limits_never_repeat_the_vendor_message() {
        let e = from_status(429, Some("Your credit balance is too low"));
        assert!(!e.message.contains("credit") && !e.message.contains("balance"));
    }
}
