//! Google OAuth 2.0 access tokens for a service account, minted with the JWT-bearer grant
//! (RFC 7523; developers.google.com/identity/protocols/oauth2/service-account, "Preparing to make
//! an authorized API call" without a client library): an RS256-signed JWT whose `iss` is the
//! account's `client_email`, `scope` cloud-platform, `aud` the token endpoint, `exp` an hour
//! after `iat`, POSTed form-encoded as `assertion` with `grant_type
//! urn:ietf:params:oauth:grant-type:jwt-bearer`; the answer is `{access_token, expires_in,
//! token_type}`.
//!
//! A [`TokenSource`] mints in a background task and refreshes when three quarters of a token's
//! life has passed (15 minutes before an hour-long token expires), retrying a failure with
//! backoff while the current token is still good. The request path only loads the current
//! token (an atomic pointer read, no lock); it waits only for the very first mint after start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::client::UpstreamClient;

/// The scope Vertex AI needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, when the key file names none.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The JWT-bearer grant type (RFC 7523 §2.1).
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long an assertion is valid: Google accepts at most an hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// A token this close to its expiry is no longer sent.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// The longest wait between two failed mints.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one call to the token endpoint may take.
const MINT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request waits for the first token after start.
const FIRST_TOKEN_WAIT: Duration = Duration::from_secs(10);

/// Why a service account's credentials could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The environment variable is unset or empty.
    #[error("environment variable {0} is unset or empty")]
    Unset(String),
    /// The variable names a file that could not be read.
    #[error("reading the key file named by {env}: {cause}")]
    Read {
        /// The variable.
        env: String,
        /// The I/O error.
        cause: String,
    },
    /// The key file is not a service-account key.
    #[error("not a service-account key file: {0}")]
    Invalid(String),
    /// Signing the assertion failed.
    #[error("signing the token request failed")]
    Sign,
}

/// The fields of a service-account key file (`"type": "service_account"`) the grant needs.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

/// A service account that can sign token requests.
pub struct ServiceAccount {
    client_email: String,
    key_id: Option<String>,
    token_uri: String,
    key: RsaKeyPair,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is never printed.
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// The JWT header.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

/// The JWT claims Google's token endpoint requires.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Claims<'a> {
    /// The service account's email.
    iss: &'a str,
    /// Space-separated scopes.
    scope: &'a str,
    /// The token endpoint.
    aud: &'a str,
    /// Issued at, Unix seconds.
    iat: u64,
    /// Expires at, Unix seconds.
    exp: u64,
}

impl ServiceAccount {
    /// Reads the key file from the environment variable `env`: its value is the JSON itself
    /// (starting with `{`) or the path of the file (as `GOOGLE_APPLICATION_CREDENTIALS` is).
    pub fn from_env(env: &str) -> Result<ServiceAccount, CredentialsError> {
        let value = std::env::var(env)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| CredentialsError::Unset(env.to_owned()))?;
        let text = if value.trim_start().starts_with('{') {
            value
        } else {
            std::fs::read_to_string(value.trim()).map_err(|e| CredentialsError::Read {
                env: env.to_owned(),
                cause: e.to_string(),
            })?
        };
        ServiceAccount::from_json(&text)
    }

    /// Parses a service-account key file.
    pub fn from_json(text: &str) -> Result<ServiceAccount, CredentialsError> {
        let file: KeyFile = serde_json::from_str(text)
            // serde's message names the field and position, never the file's values.
            .map_err(|e| CredentialsError::Invalid(e.to_string()))?;
        if file.kind != "service_account" {
            return Err(CredentialsError::Invalid(format!(
                "`type` is {:?}, not \"service_account\"",
                file.kind
            )));
        }
        let der = PrivatePkcs8KeyDer::from_pem_slice(file.private_key.as_bytes())
            .map_err(|_| CredentialsError::Invalid("`private_key` is not a PKCS#8 PEM private key".into()))?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| CredentialsError::Invalid(format!("`private_key` is not a usable RSA key: {e}")))?;
        Ok(ServiceAccount {
            client_email: file.client_email,
            key_id: file.private_key_id.filter(|id| !id.is_empty()),
            token_uri: file.token_uri.unwrap_or_else(|| GOOGLE_TOKEN_URI.to_owned()),
            key,
        })
    }

    /// The token endpoint the key file names.
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The signed JWT asking `audience` (the token endpoint) for a cloud-platform token, issued
    /// at `now` (Unix seconds).
    pub fn assertion(&self, audience: &str, now: u64) -> Result<String, CredentialsError> {
        let header = Header {
            alg: "RS256",
            typ: "JWT",
            kid: self.key_id.as_deref(),
        };
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: audience,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        let mut jwt = base64_json(&header)?;
        jwt.push('.');
        jwt.push_str(&base64_json(&claims)?);
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), jwt.as_bytes(), &mut signature)
            .map_err(|_| CredentialsError::Sign)?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jwt)
    }

    /// The public key (PKCS#1 `RSAPublicKey` DER), to verify assertions in tests.
    pub fn public_key(&self) -> &[u8] {
        use ring::signature::KeyPair as _;
        self.key.public_key().as_ref()
    }
}

/// A JWT part: JSON, base64url without padding.
fn base64_json(value: &impl Serialize) -> Result<String, CredentialsError> {
    serde_json::to_vec(value)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|_| CredentialsError::Sign)
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The token endpoint's error (`{"error", "error_description"}`, RFC 6749 §5.2).
#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// A token and when it stops being sent.
#[derive(Debug)]
struct Token {
    header: HeaderValue,
    usable_until: Instant,
}

/// Access tokens for one service account, kept fresh in the background.
#[derive(Debug)]
pub struct TokenSource {
    inner: Arc<Inner>,
    started: AtomicBool,
}

#[derive(Debug)]
struct Inner {
    account: ServiceAccount,
    token_url: String,
    /// The name in logs (the provider's).
    name: String,
    current: ArcSwapOption<Token>,
    /// `true` once the first mint has been tried (succeeded or not).
    tried: tokio::sync::watch::Sender<bool>,
    /// Why the last mint failed (read only when there is no token to send).
    last_error: Mutex<String>,
}

impl TokenSource {
    /// A source for `account`, minting at `token_url` (the key file's `token_uri` unless the
    /// operator overrides it); `name` is the provider's, for logs. Minting starts at once when
    /// called inside a Tokio runtime, else with the first request.
    pub fn new(name: &str, account: ServiceAccount, token_url: Option<&str>) -> TokenSource {
        let token_url = token_url.map_or_else(|| account.token_uri.clone(), str::to_owned);
        let source = TokenSource {
            inner: Arc::new(Inner {
                account,
                token_url,
                name: name.to_owned(),
                current: ArcSwapOption::empty(),
                tried: tokio::sync::watch::Sender::new(false),
                last_error: Mutex::new(String::new()),
            }),
            started: AtomicBool::new(false),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            source.start();
        }
        source
    }

    /// Spawns the refresh task, once.
    fn start(&self) {
        if !self.started.swap(true, Ordering::Relaxed) {
            tokio::spawn(refresh(Arc::downgrade(&self.inner)));
        }
    }

    /// The `Authorization` value to send: the current token, or why there is none. Waits (at
    /// most `wait`, capped at ten seconds) only while the first mint is under way.
    pub async fn authorization(&self, wait: Duration) -> Result<HeaderValue, String> {
        if let Some(header) = self.current() {
            return Ok(header);
        }
        self.start();
        let mut tried = self.inner.tried.subscribe();
        // Err: the wait ran out; the answer is then whatever is current.
        let _ = tokio::time::timeout(wait.min(FIRST_TOKEN_WAIT), tried.wait_for(|done| *done)).await;
        self.current().ok_or_else(|| {
            let cause = self.inner.last_error.lock().map(|e| e.clone()).unwrap_or_default();
            if cause.is_empty() {
                "no access token yet".to_owned()
            } else {
                format!("no access token: {cause}")
            }
        })
    }

    /// The current token's header, if it is still good.
    fn current(&self) -> Option<HeaderValue> {
        let token = self.inner.current.load();
        token
            .as_ref()
            .filter(|t| t.usable_until > Instant::now())
            .map(|t| t.header.clone())
    }
}

/// The background task: mint, sleep until the token is three quarters through its life (or a
/// backoff after a failure), repeat; ends when the provider is dropped.
async fn refresh(inner: Weak<Inner>) {
    let client = match UpstreamClient::new() {
        Ok(client) => client,
        Err(e) => {
            if let Some(inner) = inner.upgrade() {
                inner.failed(format!("building the HTTP client: {e}"));
                inner.tried.send_replace(true);
            }
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(source) = inner.upgrade() else { return };
        let next = match source.mint(&client).await {
            Ok(lifetime) => {
                backoff = Duration::from_secs(1);
                refresh_after(lifetime)
            }
            Err(cause) => {
                source.failed(cause);
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        source.tried.send_replace(true);
        drop(source);
        tokio::time::sleep(next).await;
    }
}

/// When to mint again after a token of `lifetime`: three quarters through it.
fn refresh_after(lifetime: Duration) -> Duration {
    (lifetime / 4 * 3).max(Duration::from_secs(1))
}

impl Inner {
    /// Mints one token and makes it current; its lifetime, or why it failed (no secrets).
    async fn mint(&self, client: &UpstreamClient) -> Result<Duration, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let assertion = self
            .account
            .assertion(&self.token_url, now)
            .map_err(|e| e.to_string())?;
        let form = format!("grant_type={}&assertion={assertion}", form_encode(GRANT_TYPE));
        let sent = Instant::now();
        let (status, body) = client
            .post_form(&self.token_url, form, MINT_TIMEOUT)
            .await
            .map_err(|e| format!("token endpoint {}: {e}", self.token_url))?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<TokenError>(&body).ok();
            let (error, description) = detail.map_or((None, None), |d| (d.error, d.error_description));
            return Err(format!(
                "token endpoint {} answered {status}: {} {}",
                self.token_url,
                error.unwrap_or_default(),
                description.unwrap_or_default()
            ));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| format!("token endpoint {} answered an unreadable body: {e}", self.token_url))?;
        let mut header = HeaderValue::from_str(&format!("Bearer {}", answer.access_token)).map_err(|_| {
            format!(
                "token endpoint {} answered a token that is not a header value",
                self.token_url
            )
        })?;
        header.set_sensitive(true);
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(ASSERTION_LIFETIME_SECS));
        let usable_until = (sent + lifetime).checked_sub(EXPIRY_MARGIN).unwrap_or(sent);
        self.current.store(Some(Arc::new(Token { header, usable_until })));
        tracing::debug!(provider = %self.name, expires_in = lifetime.as_secs(), "minted a Vertex AI access token");
        Ok(lifetime)
    }

    /// Notes and logs a failed mint (the current token, if still good, stays in use).
    fn failed(&self, cause: String) {
        tracing::error!(provider = %self.name, cause = %cause, "could not mint a Google access token");
        if let Ok(mut last) = self.last_error.lock() {
            *last = cause;
        }
    }
}

/// `application/x-www-form-urlencoded` for the grant type (a JWT needs no escaping: base64url
/// and dots).
fn form_encode(value: &str) -> String {
    value.replace(':', "%3A")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A throwaway 2048-bit RSA key (PKCS#8 PEM), generated for these tests only.
    pub(crate) const TEST_KEY: &str = include_str!("test_key.pem");

    pub(crate) fn key_file(token_uri: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "abc123",
            "private_key": TEST_KEY,
            "client_email": "gateway@test-project.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": token_uri,
        })
        .to_string()
    }

    #[test]
    fn the_assertion_is_an_rs256_jwt_with_the_claims_google_requires_and_a_valid_signature() {
        let account = ServiceAccount::from_json(&key_file(GOOGLE_TOKEN_URI)).unwrap();
        let jwt = account.assertion(GOOGLE_TOKEN_URI, 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "abc123"})
        );
        let claims = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        let claims: Claims<'_> = serde_json::from_slice(&claims).unwrap();
        assert_eq!(
            claims,
            Claims {
                iss: "gateway@test-project.iam.gserviceaccount.com",
                scope: "https://www.googleapis.com/auth/cloud-platform",
                aud: "https://oauth2.googleapis.com/token",
                iat: 1_700_000_000,
                exp: 1_700_003_600,
            }
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 256);
        let public =
            ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, account.public_key());
        let signed = &jwt[..parts[0].len() + 1 + parts[1].len()];
        public.verify(signed.as_bytes(), &signature).unwrap();
        let mut tampered = signed.as_bytes().to_vec();
        tampered[5] ^= 1;
        assert!(public.verify(&tampered, &signature).is_err());
    }

    #[test]
    fn a_key_file_that_is_not_a_service_account_key_is_refused_without_echoing_it() {
        let user = key_file(GOOGLE_TOKEN_URI).replace("service_account", "authorized_user");
        assert!(matches!(
            ServiceAccount::from_json(&user),
            Err(CredentialsError::Invalid(_))
        ));
        let bad_key = key_file(GOOGLE_TOKEN_URI).replace("MII", "XXX");
        let err = ServiceAccount::from_json(&bad_key).unwrap_err().to_string();
        assert!(!err.contains("PRIVATE KEY"), "{err}");
        assert!(ServiceAccount::from_json("{").is_err());
        let no_uri = serde_json::json!({"type": "service_account", "client_email": "a@b", "private_key": TEST_KEY});
        let account = ServiceAccount::from_json(&no_uri.to_string()).unwrap();
        assert_eq!(account.token_uri(), GOOGLE_TOKEN_URI);
        assert!(!format!("{account:?}").contains("PRIVATE"));
    }

    /// A token endpoint that answers every request with `status` and `body`; it sends the
    /// first request it reads to the returned channel.
    async fn token_endpoint(status: &'static str, body: &'static str) -> (String, tokio::sync::mpsc::Receiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let (seen, requests) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buffer = [0; 4096];
                // Until the head and a body of its content-length have arrived.
                let text = loop {
                    let n = stream.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                        let length = head.lines().find_map(|line| {
                            let line = line.to_ascii_lowercase();
                            line.strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        });
                        body.len() >= length.unwrap_or(0)
                    });
                    if n == 0 || complete {
                        break text;
                    }
                };
                let _ = seen.try_send(text);
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (url, requests)
    }

    #[tokio::test]
    async fn a_minted_token_is_sent_and_the_grant_is_the_jwt_bearer_one() {
        let (url, mut requests) = token_endpoint(
            "200 OK",
            r#"{"access_token":"ya29.t-1","expires_in":3599,"token_type":"Bearer"}"#,
        )
        .await;
        let account = ServiceAccount::from_json(&key_file(GOOGLE_TOKEN_URI)).unwrap();
        let source = TokenSource::new("vertex", account, Some(&url));
        let header = source.authorization(Duration::from_secs(5)).await.unwrap();
        assert_eq!(header, "Bearer ya29.t-1");
        assert!(header.is_sensitive());
        let request = requests.recv().await.unwrap();
        assert!(request.starts_with("POST /token HTTP/1.1"), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("content-type: application/x-www-form-urlencoded")
        );
        let form = request.split("\r\n\r\n").nth(1).unwrap();
        let assertion = form
            .strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
            .unwrap();
        let claims = URL_SAFE_NO_PAD.decode(assertion.split('.').nth(1).unwrap()).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
        assert_eq!(
            claims["aud"],
            url.as_str(),
            "aud is the endpoint the assertion is sent to"
        );
        // Later requests read the cached token: no second call to the endpoint.
        assert_eq!(source.authorization(Duration::ZERO).await.unwrap(), "Bearer ya29.t-1");
        assert!(requests.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_refused_grant_leaves_no_token_and_says_why() {
        let (url, _requests) = token_endpoint(
            "400 Bad Request",
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        )
        .await;
        let account = ServiceAccount::from_json(&key_file(GOOGLE_TOKEN_URI)).unwrap();
        let source = TokenSource::new("vertex", account, Some(&url));
        let why = source.authorization(Duration::from_secs(5)).await.unwrap_err();
        assert!(
            why.contains("invalid_grant") && why.contains("Invalid JWT Signature."),
            "{why}"
        );
        assert!(!why.contains("PRIVATE"), "{why}");
    }

    #[test]
    fn a_token_is_refreshed_well_before_it_expires() {
        assert_eq!(refresh_after(Duration::from_secs(3600)), Duration::from_secs(2700));
        assert_eq!(refresh_after(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            form_encode(GRANT_TYPE),
            "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
        );
    }
}
