//! The compact JWS serialization (RFC 7515 §7.1) of a receipt:
//! `base64url(header) . base64url(payload) . base64url(signature)`, unpadded, the signature an
//! Ed25519 one (RFC 8037, `alg` `EdDSA`) over the first two parts and their dot.
//!
//! Written by hand rather than with a JOSE crate: the one algorithm and the one serialization
//! needed are these few lines over `ed25519-dalek`, while the JOSE crates that do EdDSA
//! (`jsonwebtoken`, `josekit`) bring in `ring`, `aws-lc` or OpenSSL and a key model (PKCS#8
//! DER) that buys nothing here. Verification is exact and strict: only `EdDSA`, only a `kid`
//! found in the given key set, `verify_strict` (no malleable signatures), canonical base64.
//! The end-to-end test checks our receipts with an independent implementation (PyJWT).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Deserialize;

use crate::jwks::Jwks;

/// Why a receipt did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Not three base64url parts, or a part is not what it must be.
    #[error("not a compact JWS: {0}")]
    Malformed(&'static str),
    /// The header names another algorithm than EdDSA.
    #[error("unsupported algorithm `{0}` (receipts are EdDSA)")]
    Algorithm(String),
    /// No key of the key set has the header's `kid`.
    #[error("no key `{0}` in the key set")]
    UnknownKey(String),
    /// The signature does not match the header and payload under that key.
    #[error("bad signature: the receipt was altered or not signed by key `{0}`")]
    BadSignature(String),
    /// The signature is good, but the claims and their path do not lead to the root it signed.
    #[error("the claims were altered: they and their path do not lead to the signed root")]
    NotInBatch,
}

/// A compact JWS whose signature checked out.
#[derive(Debug)]
pub struct VerifiedJws {
    /// The key that signed it.
    pub kid: String,
    /// The payload, as signed.
    pub payload: Vec<u8>,
}

/// The protected header: the signing key's id and the algorithm, in this fixed order.
pub(crate) fn header(kid: &str) -> String {
    let json = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid });
    URL_SAFE_NO_PAD.encode(json.to_string())
}

/// Signs `payload` (JSON) as a compact JWS whose encoded header is `encoded_header`.
pub(crate) fn sign(key: &SigningKey, encoded_header: &str, payload: &[u8]) -> String {
    let payload_len = payload.len().div_ceil(3) * 4;
    let mut out = String::with_capacity(encoded_header.len() + payload_len + 90);
    out.push_str(encoded_header);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut out);
    let signature = key.sign(out.as_bytes());
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut out);
    out
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// Checks a compact JWS against a key set; the payload if the signature is good.
pub fn verify(compact: &str, keys: &Jwks) -> Result<VerifiedJws, VerifyError> {
    let mut parts = compact.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("expected three dot-separated parts"));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| VerifyError::Malformed("header is not base64url"))?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|_| VerifyError::Malformed("header is not a JWS header"))?;
    if header.alg != "EdDSA" {
        return Err(VerifyError::Algorithm(header.alg));
    }
    let kid = header.kid.ok_or(VerifyError::Malformed("header has no kid"))?;
    let key = keys
        .find(&kid)
        .and_then(|jwk| jwk.verifying_key())
        .ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| VerifyError::Malformed("signature is not base64url"))?;
    let signature =
        Signature::from_slice(&signature).map_err(|_| VerifyError::Malformed("signature is not 64 bytes"))?;
    let signed = &compact[..header_b64.len() + 1 + payload_b64.len()];
    verify_with(&key, signed.as_bytes(), &signature).map_err(|()| VerifyError::BadSignature(kid.clone()))?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| VerifyError::Malformed("payload is not base64url"))?;
    Ok(VerifiedJws { kid, payload })
}

fn verify_with(key: &VerifyingKey, message: &[u8], signature: &Signature) -> Result<(), ()> {
    key.verify_strict(message, signature).map_err(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keys::ReceiptSigner;

    fn signer() -> ReceiptSigner {
        ReceiptSigner::from_secret([7; 32])
    }

    #[test]
    fn round_trip() {
        let s = signer();
        let jws = s.sign_payload(br#"{"request_id":"req_1","cost":"0.000123"}"#);
        let verified = verify(&jws, &s.jwks()).unwrap();
        assert_eq!(verified.kid, s.kid());
        assert_eq!(verified.payload, br#"{"request_id":"req_1","cost":"0.000123"}"#);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jws.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], s.kid());
    }

    #[test]
    fn any_changed_byte_fails() {
        let s = signer();
        let jws = s.sign_payload(br#"{"request_id":"req_1","response_sha256":"00ff"}"#);
        let keys = s.jwks();
        for i in 0..jws.len() {
            let mut bytes = jws.clone().into_bytes();
            // Swap the character for another base64url one (or a dot for a letter).
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(verify(&tampered, &keys).is_err(), "byte {i} changed, still valid");
        }
    }

    #[test]
    fn changed_payload_fails() {
        let s = signer();
        let jws = s.sign_payload(br#"{"cost":"1.00"}"#);
        let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"cost":"0.01"}"#);
        let err = verify(&parts.join("."), &s.jwks()).unwrap_err();
        assert_eq!(err, VerifyError::BadSignature(s.kid().to_owned()));
    }

    #[test]
    fn another_key_or_algorithm_fails() {
        let s = signer();
        let other = ReceiptSigner::from_secret([8; 32]);
        let jws = s.sign_payload(b"{}");
        assert!(matches!(verify(&jws, &other.jwks()), Err(VerifyError::UnknownKey(_))));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"x"}"#),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert!(matches!(verify(&none, &s.jwks()), Err(VerifyError::Algorithm(_))));
        assert!(matches!(verify("a.b", &s.jwks()), Err(VerifyError::Malformed(_))));
    }
}
