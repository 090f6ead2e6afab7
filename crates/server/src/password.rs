//! Passwords: argon2id with the crate's default parameters (19 MiB, 2 passes), a random salt per
//! password, stored as the PHC string. Hashing is slow on purpose, so it runs on the blocking pool
//! behind a two-permit semaphore: a flood of sign-ups or logins waits its turn instead of taking
//! the cores inference needs. Failed logins are counted per email: after
//! [`MAX_FAILED_LOGINS`] in a window, that email's logins are refused with 429 (and no hashing)
//! until the window ends.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use dashmap::DashMap;

use router_one_core::{ApiError, ErrorKind};

use crate::error::{ErrorResponse, internal};
use crate::state::AppState;

/// Shortest and longest password accepted, in characters.
const MIN_CHARS: usize = 8;
const MAX_CHARS: usize = 256;

/// A PHC string of a password nobody knows, verified against when the email is unknown so that
/// a login takes as long for an unknown email as for a wrong password.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$cm91dGVyLW9uZS1kZWNveQ$Jb6kWb1N+3FMJzE6rkIz7wF3+Ut4ZH3b0y2t3KZcS8s";

/// Failed logins an email may have in one window.
const MAX_FAILED_LOGINS: u32 = 10;
/// The window, seconds.
const FAILED_LOGIN_WINDOW_S: i64 = 900;
/// Emails tracked at most; past this, windows that have ended are dropped first.
const MAX_TRACKED_EMAILS: usize = 100_000;

/// Failed logins per email: (window start, Unix seconds; failures in it).
#[derive(Debug, Default)]
pub(crate) struct FailedLogins {
    by_email: DashMap<String, (i64, u32)>,
}

impl FailedLogins {
    /// Refuses a login for `email` that has used up its failures in the current window.
    pub(crate) fn check(&self, email: &str, now_s: i64) -> Result<(), ApiError> {
        match self.by_email.get(email).map(|e| *e.value()) {
            Some((start, failures)) if failures >= MAX_FAILED_LOGINS && now_s < start + FAILED_LOGIN_WINDOW_S => {
                let wait = u64::try_from(start + FAILED_LOGIN_WINDOW_S - now_s).unwrap_or(1);
                Err(ApiError::new(
                    ErrorKind::RateLimited,
                    format!("Too many failed logins for this email; retry in {wait} s."),
                )
                .with_retry_after(wait))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login.
    pub(crate) fn failed(&self, email: &str, now_s: i64) {
        if self.by_email.len() >= MAX_TRACKED_EMAILS {
            self.by_email
                .retain(|_, (start, _)| now_s < *start + FAILED_LOGIN_WINDOW_S);
        }
        let mut entry = self.by_email.entry(email.to_owned()).or_insert((now_s, 0));
        let (start, failures) = entry.value_mut();
        if now_s >= *start + FAILED_LOGIN_WINDOW_S {
            (*start, *failures) = (now_s, 0);
        }
        *failures += 1;
    }

    /// Forgets an email's failures (it logged in).
    pub(crate) fn succeeded(&self, email: &str) {
        self.by_email.remove(email);
    }
}

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
    fn failed_logins_lock_an_email_for_the_rest_of_its_window() {
        let logins = FailedLogins::default();
        for _ in 0..MAX_FAILED_LOGINS {
            assert!(logins.check("a@x.io", 1_000).is_ok());
            logins.failed("a@x.io", 1_000);
        }
        let refused = logins.check("a@x.io", 1_100).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::RateLimited);
        assert_eq!(refused.retry_after_s, Some(800));
        assert!(logins.check("b@x.io", 1_100).is_ok(), "other emails are not affected");
        assert!(logins.check("a@x.io", 1_900).is_ok(), "the window ended");
        logins.failed("a@x.io", 1_900);
        assert!(logins.check("a@x.io", 1_901).is_ok(), "a new window starts from zero");
        logins.succeeded("a@x.io");
        assert!(logins.by_email.is_empty());
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
