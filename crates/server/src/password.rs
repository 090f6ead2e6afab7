//! Passwords: argon2id with the crate's default parameters (19 MiB, 2 passes), a random salt per
//! password, stored as the PHC string. Hashing is slow on purpose, so it runs on the blocking pool
//! behind a two-permit semaphore: a flood of sign-ups or logins waits its turn instead of taking
//! the cores inference needs. How many logins may reach [`verify`] is `login_limit.rs`'s business.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use router_one_core::{ApiError, ErrorKind};

use crate::error::{ErrorResponse, internal};
use crate::state::AppState;

/// Shortest and longest password accepted, in characters.
const MIN_CHARS: usize = 8;
const MAX_CHARS: usize = 256;

/// A PHC string of a password nobody knows, verified against when the email is unknown so that
/// a login takes as long for an unknown email as for a wrong password.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$cm91dGVyLW9uZS1kZWNveQ$Jb6kWb1N+3FMJzE6rkIz7wF3+Ut4ZH3b0y2t3KZcS8s";

/// Refuses a password outside the length rule.
pub(crate) fn check_rule(password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if !(MIN_CHARS..=MAX_CHARS).contains(&chars) {
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("The password must be {MIN_CHARS} to {MAX_CHARS} characters long."),
        )
        .with_param("password"));
    }
    Ok(())
}

/// The PHC string to store for `password`.
pub(crate) async fn hash(app: &AppState, password: String) -> Result<String, ErrorResponse> {
    let _permit = app.password_hashing.acquire().await.map_err(internal)?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .map_err(internal)?
    .map_err(internal)
}

/// Whether `password` matches the stored PHC string (`None`: no such account, or one without a
/// password; the decoy is verified instead, and the answer is no).
pub(crate) async fn verify(app: &AppState, password: String, stored: Option<String>) -> Result<bool, ErrorResponse> {
    let _permit = app.password_hashing.acquire().await.map_err(internal)?;
    let known = stored.is_some();
    let phc = stored.unwrap_or_else(|| DECOY.to_owned());
    let matches = tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), phc.as_str())
            .is_ok()
    })
    .await
    .map_err(internal)?;
    Ok(known && matches)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_decoy_is_a_valid_phc_string_of_the_default_parameters() {
        // If it did not parse, unknown emails would answer faster than wrong passwords.
        assert!(argon2::PasswordHash::new(DECOY).is_ok());
        assert!(Argon2::default().verify_password(b"anything", DECOY).is_err());
    }

    #[test]
    fn the_length_rule() {
        assert!(check_rule("1234567").is_err());
        assert!(check_rule("12345678").is_ok());
        assert!(check_rule(&"é".repeat(256)).is_ok());
        assert_eq!(
            check_rule(&"x".repeat(257)).unwrap_err().param.as_deref(),
            Some("password")
        );
    }
}
