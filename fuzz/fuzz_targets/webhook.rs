//! Payment webhooks: the signature header parser and verifier (`core::webhook::verify`) and both
//! payment providers' `read_webhook` (signature, then the event body: `simulated.rs` and
//! `stripe.rs` `parse_event`), fed arbitrary headers and bodies. Half the inputs are signed with
//! the right secret so the event parsers behind the signature are reached too.
//!
//! Input layout: byte 0 is flags (bit 0: sign the body; bit 1: Stripe, else simulated; bit 2:
//! also send the other provider's header); the header value runs to the first `\n`, the body
//! is the rest.

#![no_main]

use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use router_one_core::webhook::{self, DEFAULT_TOLERANCE_SECS, SIGNATURE_HEADER, SignatureError};
use router_one_payments::{PaymentProvider, STRIPE_SIGNATURE_HEADER, SimulatedProvider, StripeProvider, WebhookError};

const SECRET: &str = "whsec_fuzz";
const NOW: i64 = 1_700_000_000;

static SIMULATED: LazyLock<SimulatedProvider> =
    LazyLock::new(|| SimulatedProvider::new("simulated", "http://127.0.0.1:9", "key", SECRET));
static STRIPE: LazyLock<StripeProvider> =
    LazyLock::new(|| StripeProvider::new("stripe", "http://127.0.0.1:9", "sk_test", SECRET));

fuzz_target!(|input: &[u8]| {
    let [flags, rest @ ..] = input else {
        return;
    };
    let (header, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };

    // The verifier alone, on any header text: a forged header is never accepted.
    if let Ok(text) = std::str::from_utf8(header) {
        let verified = webhook::verify(&[SECRET.as_bytes()], text, body, NOW, DEFAULT_TOLERANCE_SECS);
        if let Ok(t) = verified {
            let genuine = webhook::sign(SECRET.as_bytes(), t, body);
            let mac = genuine.rsplit('=').next().unwrap_or_default();
            assert!(
                text.to_ascii_lowercase().contains(mac),
                "accepted a header without the right MAC"
            );
        }
        if let Err(SignatureError::TimestampTooOld {
            age_secs,
            tolerance_secs,
        })
        | Err(SignatureError::TimestampInFuture {
            ahead_secs: age_secs,
            tolerance_secs,
        }) = verified
        {
            assert!(age_secs > i128::from(tolerance_secs));
        }
    }

    let signed;
    let value = if flags & 1 != 0 {
        signed = webhook::sign(SECRET.as_bytes(), NOW, body);
        HeaderValue::from_str(&signed).ok()
    } else {
        HeaderValue::from_bytes(header).ok()
    };
    let stripe = flags & 2 != 0;
    let mut headers = HeaderMap::new();
    if let Some(value) = value {
        let (ours, other) = if stripe {
            (STRIPE_SIGNATURE_HEADER, SIGNATURE_HEADER)
        } else {
            (SIGNATURE_HEADER, STRIPE_SIGNATURE_HEADER)
        };
        headers.insert(ours, value.clone());
        if flags & 4 != 0 {
            headers.insert(other, value);
        }
    }
    let provider: &dyn PaymentProvider = if stripe { &*STRIPE } else { &*SIMULATED };
    let read = provider.read_webhook(&headers, body, NOW);
    if flags & 1 != 0 {
        // Authentic: whatever the body, the signature is never the reason for a refusal.
        assert!(
            !matches!(read, Err(WebhookError::Signature(_))),
            "a correctly signed delivery was refused: {read:?}"
        );
    }
});
