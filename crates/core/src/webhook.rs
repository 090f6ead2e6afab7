//! Payment-webhook signatures: the pure signing and verification both the gateway (which
//! receives `POST /v1/payments/webhooks/{provider}`) and the simulator's payment provider (which
//! sends it) use. No I/O, no logging: neither the body nor a secret is ever written anywhere.
//!
//! # Scheme
//!
//! The sender puts one header on the request:
//!
//! ```text
//! x-router-one-signature: t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=<hex>…]
//! ```
//!
//! * `t` is the time of signing, in whole seconds since the Unix epoch, in decimal.
//! * Each `v1` is the lowercase (upper case is accepted) hex HMAC-SHA256, keyed with a shared
//!   webhook secret, of the bytes `<t>.<raw body>`: the `t` value exactly as it appears in the
//!   header, one `.` (0x2E), then the request body **exactly as received** — it is never parsed
//!   and re-serialized before verification.
//! * Several `v1` entries may be present so a secret can be rotated: the sender signs with the
//!   old and the new secret, the receiver accepts if any of its secrets matches any `v1`.
//! * Entries are separated by `,`; whitespace around an entry is ignored. Unknown `key=value`
//!   entries (a future `v2`, say) are ignored. An entry without `=`, a repeated `t`, a missing or
//!   non-numeric `t`, no `v1` at all, or a `v1` that is not an even-length hex string is rejected.
//!
//! A signature is valid when some secret's MAC equals some `v1` (compared in constant time by
//! [`hmac::Mac::verify_slice`]) **and** `t` is within `tolerance_secs` of the receiver's clock in
//! either direction (inclusive). The signature is checked before the timestamp, so the timestamp
//! errors are only reported for authentic messages. The timestamp bounds replays; exactly-once
//! crediting per payment id is the ledger's job, not this module's.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Name of the HTTP header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-router-one-signature";

/// Default accepted clock difference between sender and receiver, in seconds (5 minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// Why a webhook signature was rejected. No variant carries the body or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature header is absent or empty.
    #[error("missing webhook signature header")]
    MissingHeader,
    /// The header has an entry that is not `key=value`, or a repeated `t`.
    #[error("malformed webhook signature header")]
    MalformedHeader,
    /// The header has no `t=` entry.
    #[error("webhook signature header has no timestamp")]
    MissingTimestamp,
    /// The `t=` value is not a whole number of seconds.
    #[error("webhook signature timestamp is not an integer")]
    MalformedTimestamp,
    /// The header has no `v1=` entry.
    #[error("webhook signature header has no v1 signature")]
    NoV1Signature,
    /// A `v1=` value is not an even-length hex string.
    #[error("webhook v1 signature is not valid hex")]
    MalformedSignature,
    /// No secret produces any of the `v1` signatures (or no secret was configured).
    #[error("webhook signature does not match")]
    BadSignature,
    /// The signed timestamp is more than the tolerance before now.
    #[error("webhook timestamp is too old ({age_secs} s > {tolerance_secs} s)")]
    TimestampTooOld {
        /// How many seconds before now the message was signed.
        age_secs: i128,
        /// The accepted tolerance.
        tolerance_secs: i64,
    },
    /// The signed timestamp is more than the tolerance after now.
    #[error("webhook timestamp is in the future ({ahead_secs} s > {tolerance_secs} s)")]
    TimestampInFuture {
        /// How many seconds after now the message was signed.
        ahead_secs: i128,
        /// The accepted tolerance.
        tolerance_secs: i64,
    },
}

/// A MAC keyed with `secret`, with `<t>.` already fed in.
fn keyed(secret: &[u8], timestamp: &str) -> HmacSha256 {
    // HMAC takes a key of any length (RFC 2104: longer keys are hashed, shorter ones padded);
    // `new_from_slice` can only fail for fixed-key-length MACs, never for `Hmac`.
    #[allow(clippy::expect_used)]
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac
}

/// Signs `body` at `timestamp` (Unix seconds) with `secret` and returns the value of the
/// [`SIGNATURE_HEADER`] header: `t=<timestamp>,v1=<hex>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let mut mac = keyed(secret, &t);
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The parsed header: the raw `t` text, its value and the decoded `v1` signatures.
struct Parsed<'a> {
    raw_t: &'a str,
    t: i64,
    v1: Vec<Vec<u8>>,
}

fn parse(header: &str) -> Result<Parsed<'_>, SignatureError> {
    if header.trim().is_empty() {
        return Err(SignatureError::MissingHeader);
    }
    let mut raw_t = None;
    let mut v1 = Vec::new();
    for entry in header.split(',') {
        let (key, value) = entry.trim().split_once('=').ok_or(SignatureError::MalformedHeader)?;
        match key.trim() {
            "t" if raw_t.is_some() => return Err(SignatureError::MalformedHeader),
            "t" => raw_t = Some(value.trim()),
            "v1" => v1.push(hex::decode(value.trim()).map_err(|_| SignatureError::MalformedSignature)?),
            _ => {}
        }
    }
    let raw_t = raw_t.ok_or(SignatureError::MissingTimestamp)?;
    let t = raw_t.parse::<i64>().map_err(|_| SignatureError::MalformedTimestamp)?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(Parsed { raw_t, t, v1 })
}

/// Verifies a [`SIGNATURE_HEADER`] value against the raw `body` as received.
///
/// Accepts when any of `secrets` (old and new during a rotation) matches any `v1` signature, and
/// the signed timestamp is within `tolerance_secs` (inclusive; usually
/// [`DEFAULT_TOLERANCE_SECS`]) of `now` (Unix seconds). Returns the signed timestamp.
///
/// # Errors
///
/// A [`SignatureError`] naming the first problem found: header syntax, then signature, then
/// timestamp.
pub fn verify(
    secrets: &[&[u8]],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<i64, SignatureError> {
    let parsed = parse(header)?;
    let authentic = secrets.iter().any(|secret| {
        let mut mac = keyed(secret, parsed.raw_t);
        mac.update(body);
        // One MAC over the body per secret; each candidate is compared in constant time.
        parsed
            .v1
            .iter()
            .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
    });
    if !authentic {
        return Err(SignatureError::BadSignature);
    }
    let delta = i128::from(now) - i128::from(parsed.t);
    if delta > i128::from(tolerance_secs) {
        return Err(SignatureError::TimestampTooOld {
            age_secs: delta,
            tolerance_secs,
        });
    }
    if -delta > i128::from(tolerance_secs) {
        return Err(SignatureError::TimestampInFuture {
            ahead_secs: -delta,
            tolerance_secs,
        });
    }
    Ok(parsed.t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"whsec_test";
    const BODY: &[u8] = br#"{"id":"pay_1"}"#;
    const T: i64 = 1_700_000_000;

    fn check(secrets: &[&[u8]], header: &str, body: &[u8], now: i64) -> Result<i64, SignatureError> {
        verify(secrets, header, body, now, DEFAULT_TOLERANCE_SECS)
    }

    #[test]
    fn round_trip() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(check(&[SECRET], &header, BODY, T), Ok(T));
    }

    #[test]
    fn known_answer_vector() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test",
        //   b"1700000000.{\"id\":\"pay_1\"}", hashlib.sha256).hexdigest())'
        let expected = "t=1700000000,v1=72a410ea2042d800ac22d2c7907141085ac3ee5da6315c83a8d1a43b670d5450";
        assert_eq!(sign(SECRET, T, BODY), expected);
        assert_eq!(check(&[SECRET], expected, BODY, T), Ok(T));
    }

    #[test]
    fn known_answer_key_lengths() {
        // Keys at, just above and well above the 64-byte block, and the empty key (Python hmac).
        let cases: [(&[u8], i64, &[u8], &str); 4] = [
            (
                &[b'a'; 64],
                T,
                BODY,
                "d1aba6e5f5eb0dcae752ce5af28dd40f86a6316b692533f9f7d9d54197d20385",
            ),
            (
                &[b'a'; 65],
                T,
                BODY,
                "f9a0052b36b59cc713f7e54f646419d81918a6b64c8c6d0b0b7ce39cebc7eeae",
            ),
            (
                &[b'k'; 100],
                T,
                BODY,
                "84496d7dac5ed7a1521a4f5cbd1077e5cc03d7920ed3174f08368c0ff73014dc",
            ),
            (
                b"",
                0,
                b"",
                "b849d5a581847b281957065739df36df2463d1977ea8d6e1e4e6cf33fadc68c3",
            ),
        ];
        for (secret, t, body, mac) in cases {
            assert_eq!(sign(secret, t, body), format!("t={t},v1={mac}"));
        }
    }

    #[test]
    fn body_changed_by_one_byte_fails() {
        let header = sign(SECRET, T, BODY);
        let mut body = BODY.to_vec();
        body[7] ^= 0x01;
        assert_eq!(check(&[SECRET], &header, &body, T), Err(SignatureError::BadSignature));
        // Re-serialized JSON (same meaning, different bytes) is not accepted either.
        assert_eq!(
            check(&[SECRET], &header, br#"{ "id": "pay_1" }"#, T),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn different_secret_fails() {
        let header = sign(b"whsec_other", T, BODY);
        assert_eq!(check(&[SECRET], &header, BODY, T), Err(SignatureError::BadSignature));
        assert_eq!(check(&[], &header, BODY, T), Err(SignatureError::BadSignature));
    }

    #[test]
    fn signed_timestamp_cannot_be_swapped() {
        let header = sign(SECRET, T, BODY).replacen("t=1700000000", "t=1700000001", 1);
        assert_eq!(check(&[SECRET], &header, BODY, T), Err(SignatureError::BadSignature));
    }

    #[test]
    fn rotated_secrets_accept_either() {
        let (old, new): (&[u8], &[u8]) = (b"whsec_old", b"whsec_new");
        let rotating: [&[u8]; 2] = [old, new];
        for secret in [old, new] {
            assert_eq!(check(&rotating, &sign(secret, T, BODY), BODY, T), Ok(T));
        }
        // A sender signing with both secrets is accepted by a receiver that knows only one.
        let v1_new = sign(new, T, BODY)
            .split_once(",v1=")
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        let both = format!("{},v1={v1_new}", sign(old, T, BODY));
        assert_eq!(check(&[old], &both, BODY, T), Ok(T));
        assert_eq!(check(&[new], &both, BODY, T), Ok(T));
        assert_eq!(check(&[b"whsec_x"], &both, BODY, T), Err(SignatureError::BadSignature));
    }

    #[test]
    fn unknown_entries_and_whitespace_are_ignored() {
        let header = sign(SECRET, T, BODY).replace(',', " , v0=zz, k=v ,");
        assert_eq!(check(&[SECRET], &header, BODY, T), Ok(T));
    }

    #[test]
    fn timestamp_tolerance_is_inclusive() {
        let header = sign(SECRET, T, BODY);
        let tol = DEFAULT_TOLERANCE_SECS;
        assert_eq!(check(&[SECRET], &header, BODY, T + tol), Ok(T));
        assert_eq!(check(&[SECRET], &header, BODY, T - tol), Ok(T));
        assert_eq!(
            check(&[SECRET], &header, BODY, T + tol + 1),
            Err(SignatureError::TimestampTooOld {
                age_secs: 301,
                tolerance_secs: tol
            })
        );
        assert_eq!(
            check(&[SECRET], &header, BODY, T - tol - 1),
            Err(SignatureError::TimestampInFuture {
                ahead_secs: 301,
                tolerance_secs: tol
            })
        );
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let header = sign(SECRET, i64::MIN, BODY);
        assert!(matches!(
            check(&[SECRET], &header, BODY, i64::MAX),
            Err(SignatureError::TimestampTooOld { .. })
        ));
        let header = sign(SECRET, i64::MAX, BODY);
        assert!(matches!(
            check(&[SECRET], &header, BODY, i64::MIN),
            Err(SignatureError::TimestampInFuture { .. })
        ));
    }

    #[test]
    fn malformed_headers_give_their_variant() {
        let good = "72a410ea2042d800ac22d2c7907141085ac3ee5da6315c83a8d1a43b670d5450";
        let cases = [
            (String::new(), SignatureError::MissingHeader),
            ("   ".to_owned(), SignatureError::MissingHeader),
            (format!("v1={good}"), SignatureError::MissingTimestamp),
            (format!("t=abc,v1={good}"), SignatureError::MalformedTimestamp),
            (format!("t=,v1={good}"), SignatureError::MalformedTimestamp),
            (format!("t=1.5,v1={good}"), SignatureError::MalformedTimestamp),
            ("t=1700000000".to_owned(), SignatureError::NoV1Signature),
            ("t=1700000000,v2=abcd".to_owned(), SignatureError::NoV1Signature),
            ("t=1700000000,v1=abc".to_owned(), SignatureError::MalformedSignature),
            ("t=1700000000,v1=zz".to_owned(), SignatureError::MalformedSignature),
            (
                format!("t=1700000000,v1={good},v1=xyz1"),
                SignatureError::MalformedSignature,
            ),
            (
                format!("t=1700000000,v1={good},garbage"),
                SignatureError::MalformedHeader,
            ),
            (
                format!("t=1700000000,t=1700000000,v1={good}"),
                SignatureError::MalformedHeader,
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(check(&[SECRET], &header, BODY, T), Err(expected), "header {header:?}");
        }
    }

    #[test]
    fn wrong_length_signature_is_bad_not_malformed() {
        let header = "t=1700000000,v1=72a410ea";
        assert_eq!(check(&[SECRET], header, BODY, T), Err(SignatureError::BadSignature));
    }

    proptest! {
        #[test]
        fn prop_sign_verify_and_bit_flip(
            secret in proptest::collection::vec(any::<u8>(), 0..100),
            body in proptest::collection::vec(any::<u8>(), 1..512),
            t in any::<i64>(),
            bit in any::<proptest::sample::Index>(),
        ) {
            let header = sign(&secret, t, &body);
            prop_assert_eq!(verify(&[&secret], &header, &body, t, DEFAULT_TOLERANCE_SECS), Ok(t));
            let bit = bit.index(body.len() * 8);
            let mut flipped = body.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(
                verify(&[&secret], &header, &flipped, t, DEFAULT_TOLERANCE_SECS),
                Err(SignatureError::BadSignature)
            );
        }
    }
}
