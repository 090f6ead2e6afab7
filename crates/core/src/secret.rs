//! Secrets: API keys are generated with 256 bits of entropy, shown once, and stored only as a
//! SHA-256 hash. A hash of a high-entropy secret needs no salt or slow KDF: it cannot be guessed.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// Prefix of inference keys.
pub const INFERENCE_PREFIX: &str = "sk-rk-";
/// Prefix of management keys.
pub const MANAGEMENT_PREFIX: &str = "sk-rm-";

/// Characters of randomness after the prefix (alphanumeric, ≈ 5.95 bits each: > 256 bits).
const SECRET_CHARS: usize = 44;

/// A newly generated secret: the plaintext (shown once) and what is stored.
#[derive(Debug, Clone)]
pub struct NewSecret {
    /// The full key as the user will send it. Never stored, never logged.
    pub plaintext: String,
    /// SHA-256 of the plaintext, lowercase hex: the only form that is stored.
    pub hash: String,
    /// A short, non-secret prefix shown in listings (`sk-rk-AbCd…`).
    pub hint: String,
}

/// Generates a new secret with the given prefix.
pub fn generate(prefix: &str) -> NewSecret {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(SECRET_CHARS)
        .map(char::from)
        .collect();
    let plaintext = format!("{prefix}{random}");
    let hint = format!("{}…", &plaintext[..prefix.len() + 4]);
    NewSecret {
        hash: hash(&plaintext),
        plaintext,
        hint,
    }
}

/// The stored form of a presented secret.
pub fn hash(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_distinct_and_hash_to_the_stored_form() {
        let a = generate(INFERENCE_PREFIX);
        let b = generate(INFERENCE_PREFIX);
        assert_ne!(a.plaintext, b.plaintext);
        assert!(a.plaintext.starts_with("sk-rk-"));
        assert_eq!(a.plaintext.len(), 6 + SECRET_CHARS);
        assert_eq!(hash(&a.plaintext), a.hash);
        assert!(!a.hint.contains(&a.plaintext[12..]));
    }
}
