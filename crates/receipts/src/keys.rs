//! Receipt signing keys: one current Ed25519 key that signs, and the public halves of the keys
//! it replaced, kept so receipts they signed still verify. They live in the data directory's
//! [`KEY_FILE`], created at the first start and written only by [`KeyRing::rotate`]
//! (`router-one admin rotate-receipt-key`); a running gateway reads it once, at start.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::jwks::{Jwk, Jwks, kid_of};
use crate::jws;

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "receipt-keys.json";

/// Why the key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a key file.
    #[error("{path}: not a receipt key file: {reason}")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The key that signs receipts now.
#[derive(Clone)]
pub struct ReceiptSigner {
    key: SigningKey,
    kid: String,
    /// The protected header, base64url-encoded once.
    header: String,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ReceiptSigner {
    /// The signer of a 32-byte Ed25519 secret key.
    pub fn from_secret(secret: [u8; 32]) -> ReceiptSigner {
        let key = SigningKey::from_bytes(&secret);
        let kid = kid_of(key.verifying_key().as_bytes());
        let header = jws::header(&kid);
        ReceiptSigner { key, kid, header }
    }

    /// A fresh random key.
    pub fn generate() -> ReceiptSigner {
        let mut secret = [0; 32];
        rand::rng().fill_bytes(&mut secret);
        ReceiptSigner::from_secret(secret)
    }

    /// Its key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Its public key as a JWK.
    pub fn jwk(&self) -> Jwk {
        Jwk::ed25519(&self.kid, self.key.verifying_key().as_bytes())
    }

    /// A key set of this key alone.
    pub fn jwks(&self) -> Jwks {
        Jwks { keys: vec![self.jwk()] }
    }

    /// A compact JWS of any JSON payload under this key.
    pub fn sign_payload(&self, payload: &[u8]) -> String {
        jws::sign(&self.key, &self.header, payload)
    }
}

/// The signing key and the public keys of the keys it replaced.
#[derive(Debug)]
pub struct KeyRing {
    /// The key that signs.
    pub signer: ReceiptSigner,
    /// Keys that signed before a rotation: still valid for verification.
    pub retired: Vec<Jwk>,
}

/// The key file as stored.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    /// The signing key, an RFC 8037 private JWK (`d` is the secret).
    current: PrivateJwk,
    /// Retired public keys, newest first.
    #[serde(default)]
    retired: Vec<Jwk>,
}

#[derive(Serialize, Deserialize)]
struct PrivateJwk {
    #[serde(flatten)]
    public: Jwk,
    d: String,
}

impl KeyRing {
    /// Every public key: the current one first, then the retired ones.
    pub fn jwks(&self) -> Jwks {
        let mut keys = self.signer.jwks();
        keys.merge(self.retired.iter().cloned());
        keys
    }

    /// Reads the data directory's key file, creating it with a fresh key if there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<KeyRing, KeyFileError> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ring = KeyRing {
                    signer: ReceiptSigner::generate(),
                    retired: Vec::new(),
                };
                ring.save(&path)?;
                Ok(ring)
            }
            Err(source) => Err(KeyFileError::Io { path, source }),
        }
    }

    /// Replaces the signing key with a fresh one; the old one's public key is kept. Takes
    /// effect for a gateway at its next start. Returns the new ring.
    pub fn rotate(data_dir: &Path) -> Result<KeyRing, KeyFileError> {
        let old = KeyRing::load_or_create(data_dir)?;
        let mut retired = vec![old.signer.jwk()];
        retired.extend(old.retired);
        let ring = KeyRing {
            signer: ReceiptSigner::generate(),
            retired,
        };
        ring.save(&data_dir.join(KEY_FILE))?;
        Ok(ring)
    }

    /// Writes the file (owner-only on Unix) through a temporary file and a rename, so a crash
    /// never leaves half a key file.
    fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let file = KeyFile {
            current: PrivateJwk {
                public: self.signer.jwk(),
                d: URL_SAFE_NO_PAD.encode(self.signer.key.to_bytes()),
            },
            retired: self.retired.clone(),
        };
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        write_private(&tmp, &json).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<KeyRing, KeyFileError> {
    let invalid = |reason: String| KeyFileError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let secret: [u8; 32] = URL_SAFE_NO_PAD
        .decode(&file.current.d)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| invalid("`d` is not a 32-byte base64url key".into()))?;
    let signer = ReceiptSigner::from_secret(secret);
    if signer.jwk() != file.current.public {
        return Err(invalid(
            "the current key's public half does not match its secret".into(),
        ));
    }
    Ok(KeyRing {
        signer,
        retired: file.retired,
    })
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_read_back_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyRing::load_or_create(dir.path()).unwrap();
        let again = KeyRing::load_or_create(dir.path()).unwrap();
        assert_eq!(first.signer.kid(), again.signer.kid());
        let old_receipt = first.signer.sign_payload(b"{}");
        let rotated = KeyRing::rotate(dir.path()).unwrap();
        assert_ne!(rotated.signer.kid(), first.signer.kid());
        let reread = KeyRing::load_or_create(dir.path()).unwrap();
        assert_eq!(reread.signer.kid(), rotated.signer.kid());
        let jwks = reread.jwks();
        assert_eq!(jwks.keys.len(), 2);
        assert!(jws::verify(&old_receipt, &jwks).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"{\"current\": 1}").unwrap();
        assert!(matches!(
            KeyRing::load_or_create(dir.path()),
            Err(KeyFileError::Invalid { .. })
        ));
    }
}
