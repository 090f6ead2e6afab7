//! The public keys receipts are checked against, as a JSON Web Key Set (RFC 7517) of Ed25519
//! keys (RFC 8037: `kty` `OKP`, `crv` `Ed25519`, `x` the base64url public key).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

/// A JSON Web Key Set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys, current and retired.
    pub keys: Vec<Jwk>,
}

/// One Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `OKP`.
    pub kty: String,
    /// Curve: `Ed25519`.
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// The key id receipts name in their header.
    pub kid: String,
    /// `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

impl Jwk {
    /// The JWK of an Ed25519 public key.
    pub fn ed25519(kid: &str, public: &[u8; 32]) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(public),
            kid: kid.to_owned(),
            use_: Some("sig".into()),
            alg: Some("EdDSA".into()),
        }
    }

    /// The key, if this is a well-formed Ed25519 JWK.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        if self.kty != "OKP" || self.crv != "Ed25519" || self.alg.as_deref().is_some_and(|a| a != "EdDSA") {
            return None;
        }
        let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(&self.x).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok()
    }
}

impl Jwks {
    /// The key with id `kid`.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Adds the keys of `other` not in this set yet.
    pub fn merge(&mut self, other: impl IntoIterator<Item = Jwk>) {
        for key in other {
            if self.find(&key.kid).is_none() {
                self.keys.push(key);
            }
        }
    }
}

/// A key id: base64url of the first 12 bytes of the SHA-256 of the public key (16 characters).
pub fn kid_of(public: &[u8; 32]) -> String {
    let digest = crate::body_sha256(public);
    URL_SAFE_NO_PAD.encode(&digest[..12])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_rfc_8037() {
        let signer = crate::ReceiptSigner::from_secret([1; 32]);
        let json = serde_json::to_value(signer.jwks()).unwrap();
        let key = &json["keys"][0];
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["kid"], signer.kid());
        assert_eq!(key["kid"].as_str().unwrap().len(), 16);
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
        assert_eq!(x.len(), 32);
        assert_eq!(key.as_object().unwrap().len(), 6, "no private member: {key}");
        let back: Jwks = serde_json::from_value(json).unwrap();
        assert!(back.keys[0].verifying_key().is_some());
    }
}
