//! Google Cloud Vertex AI: Claude and Gemini on a project's regional paths, and the OAuth 2.0
//! token endpoint that issues the access tokens they require.
//!
//! - `POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict`
//!   and `:streamRawPredict`: the Messages API with the model from the path and a required
//!   `"anthropic_version": "vertex-2023-10-16"` in the body (400 without it).
//! - `…/publishers/google/models/{model}:generateContent` and `:streamGenerateContent`
//!   (`?alt=sse` for SSE): the Gemini API's handler.
//! - `POST /token`: the JWT-bearer grant (RFC 7523). It checks `grant_type`, that `assertion`
//!   is a three-part JWT with `alg` `RS256`, the claims Google requires (`iss` an email,
//!   `scope` with cloud-platform, `aud` the token endpoint (ending `/token`), `iat`, `exp` at
//!   most an hour later and not past) and a signature of an RSA size; it does not verify the
//!   signature (it knows no public key). Answers `{access_token, expires_in: 3599,
//!   token_type: "Bearer"}`, or 400 `{error: "invalid_grant" | "unsupported_grant_type",
//!   error_description}`.
//!
//! Model paths need `authorization: Bearer <a token this server issued>`, else 401
//! `UNAUTHENTICATED` in Google's error shape. Tokens carry their own proof (a hash keyed by
//! this server's random key), so checking one takes no lock.

use std::hash::{BuildHasher, RandomState};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::SimState;
use crate::body::SimBody;
use crate::conn::ConnControl;
use crate::exchange;

/// The path prefix of every Vertex AI model method.
pub(crate) const PROJECTS: &str = "/v1/projects/";
/// The grant type of a signed-JWT token request.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The lifetime of an issued token, in seconds (Google's: just under an hour).
const TOKEN_LIFETIME: u64 = 3599;

/// The access tokens one server issues: `ya29.sim-{n}-{proof}`, the proof a hash of `n` keyed
/// by this server's random key.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    key: RandomState,
}

impl Tokens {
    fn proof(&self, n: u64) -> u64 {
        self.key.hash_one(n)
    }

    /// A new token.
    fn issue(&self, n: u64) -> String {
        format!("ya29.sim-{n}-{:016x}", self.proof(n))
    }

    /// Whether this server issued `token`.
    fn issued(&self, token: &str) -> bool {
        token
            .strip_prefix("ya29.sim-")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(n, proof)| Some((n.parse::<u64>().ok()?, u64::from_str_radix(proof, 16).ok()?)))
            .is_some_and(|(n, proof)| self.proof(n) == proof)
    }

    /// Whether `headers` carry `authorization: Bearer <a token this server issued>`.
    fn authorised(&self, headers: &HeaderMap) -> bool {
        headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .is_some_and(|token| self.issued(token.trim()))
    }
}

/// Handles one request under [`PROJECTS`].
pub(crate) async fn handle(request: Request<Incoming>, state: &SimState, control: &ConnControl) -> Response<SimBody> {
    let path = request.uri().path().to_owned();
    let Some((publisher, model, method)) = model_method(&path) else {
        return crate::gemini::not_found(request.method(), &path);
    };
    if !state.vertex_tokens.authorised(request.headers()) {
        return crate::gemini::error_response(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login \
             cookie or other valid authentication credential.",
        );
    }
    match (publisher, method) {
        ("anthropic", "rawPredict" | "streamRawPredict") => {
            crate::anthropic::vertex_messages(request, state, control, model).await
        }
        ("google", "generateContent") => crate::gemini::generate(request, state, control, model, None).await,
        ("google", "streamGenerateContent") => {
            let sse = request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
            crate::gemini::generate(request, state, control, model, Some(sse)).await
        }
        _ => crate::gemini::not_found(request.method(), &path),
    }
}

/// `(publisher, model, method)` of `/v1/projects/{p}/locations/{r}/publishers/{pub}/models/{m}:{method}`.
fn model_method(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix(PROJECTS)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [project, "locations", region, "publishers", publisher, "models", target] = parts.as_slice() else {
        return None;
    };
    let (model, method) = target.rsplit_once(':')?;
    [*project, *region, *publisher, model]
        .iter()
        .all(|s| !s.is_empty())
        .then_some((*publisher, model, method))
}

/// The claims a token request's assertion must carry.
#[derive(Deserialize)]
struct Claims {
    iss: String,
    scope: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// `POST /token`: the JWT-bearer grant.
pub(crate) async fn token(request: Request<Incoming>, state: &SimState) -> Response<SimBody> {
    let Some(body) = exchange::read_body(request.into_body()).await else {
        return grant_error("invalid_request", "The request body could not be read.");
    };
    let form = String::from_utf8_lossy(&body);
    let field = |name: &str| {
        form.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
    };
    if field("grant_type").as_deref() != Some(JWT_BEARER) {
        return grant_error("unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = field("assertion") else {
        return grant_error("invalid_request", "Missing required parameter: assertion");
    };
    if let Err(why) = check_assertion(&assertion, exchange::unix_now()) {
        return grant_error("invalid_grant", &why);
    }
    let answer = serde_json::json!({
        "access_token": state.vertex_tokens.issue(state.next_id()),
        "expires_in": TOKEN_LIFETIME,
        "token_type": "Bearer",
    });
    exchange::json(StatusCode::OK, answer.to_string())
}

/// Checks a token request's JWT as far as can be done without the signer's public key.
fn check_assertion(jwt: &str, now: u64) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err("Invalid JWT: not three parts.".into());
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| "Invalid JWT: bad base64url.".to_owned())
    };
    let header: serde_json::Value =
        serde_json::from_slice(&decode(header)?).map_err(|_| "Invalid JWT header.".to_owned())?;
    if header["alg"] != "RS256" {
        return Err("Invalid JWT: alg must be RS256.".into());
    }
    let claims: Claims = serde_json::from_slice(&decode(claims)?).map_err(|e| format!("Invalid JWT claims: {e}"))?;
    if !claims.iss.contains('@') {
        return Err("Invalid JWT: iss must be a service account's email.".into());
    }
    if !claims
        .scope
        .split(' ')
        .any(|s| s == "https://www.googleapis.com/auth/cloud-platform")
    {
        return Err("Invalid JWT: scope must include cloud-platform.".into());
    }
    if !claims.aud.ends_with("/token") {
        return Err("Invalid JWT: aud must be the token endpoint.".into());
    }
    if claims.exp <= claims.iat || claims.exp - claims.iat > 3600 {
        return Err("Invalid JWT: exp must be within an hour of iat.".into());
    }
    if claims.exp <= now || claims.iat > now + 60 {
        return Err(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.".into(),
        );
    }
    if decode(signature)?.len() < 256 {
        return Err("Invalid JWT Signature.".into());
    }
    Ok(())
}

/// An OAuth 2.0 error answer (RFC 6749 §5.2).
fn grant_error(error: &str, description: &str) -> Response<SimBody> {
    let body = serde_json::json!({ "error": error, "error_description": description });
    exchange::json(StatusCode::BAD_REQUEST, body.to_string())
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space, `%XX` a byte).
fn percent_decode(value: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 2;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn jwt(header: &str, claims: &serde_json::Value, signature_len: usize) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(vec![7u8; signature_len])
        )
    }

    fn claims(now: u64) -> serde_json::Value {
        serde_json::json!({
            "iss": "sa@p.iam.gserviceaccount.com",
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "aud": "http://127.0.0.1:9/token",
            "iat": now,
            "exp": now + 3600,
        })
    }

    #[test]
    fn a_well_formed_assertion_passes_and_each_flaw_is_named() {
        let now = 1_700_000_000;
        let rs256 = r#"{"alg":"RS256","typ":"JWT"}"#;
        assert_eq!(check_assertion(&jwt(rs256, &claims(now), 256), now), Ok(()));
        let flawed = [
            (jwt(r#"{"alg":"none"}"#, &claims(now), 256), "alg"),
            (jwt(rs256, &claims(now), 0), "Signature"),
            (jwt(rs256, &claims(now - 4000), 256), "timeframe"),
            (jwt(rs256, &serde_json::json!({"iss": "x"}), 256), "claims"),
            ("a.b".to_owned(), "three parts"),
        ];
        for (assertion, expected) in flawed {
            let why = check_assertion(&assertion, now).unwrap_err();
            assert!(why.contains(expected), "{why} should name {expected}");
        }
        let mut wrong_scope = claims(now);
        wrong_scope["scope"] = "email".into();
        assert!(check_assertion(&jwt(rs256, &wrong_scope, 256), now).is_err());
        let mut long = claims(now);
        long["exp"] = (now + 7200).into();
        assert!(check_assertion(&jwt(rs256, &long, 256), now).is_err());
    }

    #[test]
    fn only_tokens_this_server_issued_are_accepted() {
        let tokens = Tokens::default();
        let token = tokens.issue(42);
        assert!(tokens.issued(&token));
        assert!(!tokens.issued("ya29.sim-42-0000000000000000"));
        assert!(!tokens.issued(&token.replace("-42-", "-43-")));
        assert!(!Tokens::default().issued(&token), "another server's token");
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        assert!(tokens.authorised(&headers));
        headers.insert(AUTHORIZATION, "Bearer router-one-demo".parse().unwrap());
        assert!(!tokens.authorised(&headers));
    }

    #[test]
    fn paths_and_forms_are_read() {
        assert_eq!(
            model_method("/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude@1:rawPredict"),
            Some(("anthropic", "claude@1", "rawPredict"))
        );
        assert_eq!(
            model_method("/v1/projects/p/locations/r/publishers/google/models/:x"),
            None
        );
        assert_eq!(model_method("/v1/projects/p/models/m:generateContent"), None);
        assert_eq!(percent_decode("urn%3Aietf%3Aparams+x%zz%4"), "urn:ietf:params x%zz%4");
    }
}
