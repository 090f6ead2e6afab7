//! Google Cloud Vertex AI: Anthropic's Claude and Google's Gemini models behind one project's
//! regional endpoint. Only the URL, Claude's body envelope and the authentication differ from
//! the first-party APIs, so bodies, answers, streams and errors are the [`Anthropic`] and
//! [`Gemini`] adapters'.
//!
//! - Claude (`api = "vertex-anthropic"`): `POST {base}/v1/projects/{project}/locations/{region}/
//!   publishers/anthropic/models/{model}:rawPredict`, or `:streamRawPredict` for Anthropic's SSE
//!   events unchanged; the Messages body without `model` and with `"anthropic_version":
//!   "vertex-2023-10-16"` (no `anthropic-version` header). (docs.claude.com "Claude on Vertex
//!   AI"; cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude.)
//! - Gemini (`api = "vertex-gemini"`): `…/publishers/google/models/{model}:generateContent`, or
//!   `:streamGenerateContent?alt=sse`; the Gemini API's bodies. (cloud.google.com/vertex-ai/
//!   generative-ai/docs/reference/rest/v1/projects.locations.publishers.models/generateContent.)
//!   Embeddings are not offered: Vertex's `:predict` body differs from the Gemini API's.
//!
//! Both authenticate with `Authorization: Bearer <OAuth 2.0 access token>`: minted from a
//! service account by [`TokenSource`] (`token`), or a static token from `api_key_env`.
//! The base URL is `https://{region}-aiplatform.googleapis.com` (`global`: without the prefix).

mod token;

pub use token::{CredentialsError, GOOGLE_TOKEN_URI, SCOPE, ServiceAccount, TokenSource};

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use router_one_core::{ApiError, ErrorKind};

use crate::anthropic::Anthropic;
use crate::gemini::Gemini;
use crate::provider::{
    ChatApi, ChatRequest, PreparedRequest, ReadContext, ReadHints, ReadResponse, Refusal, StreamDecoder, Target,
};
use crate::request::TopLevel;

/// The `anthropic_version` Vertex AI's Claude endpoints require in the body.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The base URL of `region`'s Vertex AI endpoint.
pub fn default_base_url(region: &str) -> String {
    if region == "global" {
        "https://aiplatform.googleapis.com".to_owned()
    } else {
        format!("https://{region}-aiplatform.googleapis.com")
    }
}

/// Whether `value` can stand in a Vertex AI path segment as it is: letters, digits, `-`, `_`,
/// `.` and `@` (model versions: `claude-sonnet-4-5@20250929`).
pub fn is_path_safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Where a project's models live.
#[derive(Debug, Clone)]
pub struct Location {
    /// The Google Cloud project id.
    pub project: String,
    /// The region (`us-east5`, `europe-west1`, `global`).
    pub region: String,
}

impl Location {
    /// The path of `method` on `publisher`'s `model`.
    fn path(&self, publisher: &str, model: &str, method: &str) -> Result<Cow<'static, str>, ApiError> {
        if ![&self.project, &self.region, model].iter().all(|s| is_path_safe(s)) {
            return Err(ApiError::new(
                ErrorKind::ProviderUnavailable,
                "The provider for this model is misconfigured.",
            ));
        }
        Ok(Cow::Owned(format!(
            "/v1/projects/{}/locations/{}/publishers/{publisher}/models/{model}:{method}",
            self.project, self.region
        )))
    }
}

/// The `Authorization` header for a static access token.
fn bearer(token: &str) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(vec![(http::header::AUTHORIZATION, value)])
}

fn no_embeddings() -> ApiError {
    ApiError::new(
        ErrorKind::InvalidRequest,
        "This provider serves no embeddings; use an embedding model served by another provider.",
    )
    .with_param("model")
}

/// Claude on Vertex AI.
#[derive(Debug, Clone)]
pub struct VertexAnthropic {
    /// The project and region.
    pub location: Location,
}

impl ChatApi for VertexAnthropic {
    fn prepare_chat(&self, request: &ChatRequest<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError> {
        let method = if request.view.stream {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        let path = self.location.path("anthropic", target.upstream_id, method)?;
        Ok(PreparedRequest {
            body: Anthropic::vertex_body(request, target, ANTHROPIC_VERSION)?,
            path,
            hints: ReadHints::default(),
        })
    }

    fn prepare_embeddings(&self, _: &TopLevel<'_>, _: Target<'_>) -> Result<PreparedRequest, ApiError> {
        Err(no_embeddings())
    }

    fn read_chat(&self, body: Bytes, context: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        Anthropic.read_chat(body, context)
    }

    fn read_embeddings(&self, _: Bytes, _: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        Err(no_embeddings())
    }

    fn stream_decoder(&self, context: ReadContext<'_>) -> Box<dyn StreamDecoder> {
        Anthropic.stream_decoder(context)
    }

    fn read_error(&self, status: u16, body: &[u8]) -> Refusal {
        // Vertex's own refusals (auth, quota, a model not enabled) come in Google's error
        // shape, Claude's in Anthropic's.
        if serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
            v.get("error")
                .is_some_and(|e| e.get("status").is_some() || e.get("code").is_some())
        }) {
            return Gemini.read_error(status, body);
        }
        Anthropic.read_error(status, body)
    }

    fn headers(&self, access_token: &str) -> Option<Vec<(HeaderName, HeaderValue)>> {
        bearer(access_token)
    }
}

/// Gemini on Vertex AI.
#[derive(Debug, Clone)]
pub struct VertexGemini {
    /// The project and region.
    pub location: Location,
}

impl ChatApi for VertexGemini {
    fn prepare_chat(&self, request: &ChatRequest<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError> {
        let mut prepared = Gemini.prepare_chat(request, target)?;
        let method = if request.view.stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        prepared.path = self.location.path("google", target.upstream_id, method)?;
        Ok(prepared)
    }

    fn prepare_embeddings(&self, _: &TopLevel<'_>, _: Target<'_>) -> Result<PreparedRequest, ApiError> {
        Err(no_embeddings())
    }

    fn read_chat(&self, body: Bytes, context: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        Gemini.read_chat(body, context)
    }

    fn read_embeddings(&self, _: Bytes, _: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        Err(no_embeddings())
    }

    fn stream_decoder(&self, context: ReadContext<'_>) -> Box<dyn StreamDecoder> {
        Gemini.stream_decoder(context)
    }

    fn read_error(&self, status: u16, body: &[u8]) -> Refusal {
        Gemini.read_error(status, body)
    }

    fn headers(&self, access_token: &str) -> Option<Vec<(HeaderName, HeaderValue)>> {
        bearer(access_token)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::request::chat_view;
    use router_one_core::Catalog;

    const CATALOG: &str = r#"
        [[model]]
        id = "claude-x"
        family = "claude"
        kind = "chat"
        context_window = 1000
        max_output = 100
        input_per_mtok = "1"
        cached_input_per_mtok = "0.5"
        output_per_mtok = "2"
        [[model.route]]
        provider = "vertex"
        upstream_id = "claude-sonnet-4-5@20250929"
    "#;

    fn location() -> Location {
        Location {
            project: "my-project".into(),
            region: "us-east5".into(),
        }
    }

    /// Prepares `body` for `api`; returns the path and the JSON sent.
    fn prepare(
        api: &dyn ChatApi,
        body: &'static [u8],
        upstream_id: &str,
    ) -> Result<(String, serde_json::Value), ApiError> {
        let catalog = Catalog::from_toml(CATALOG).unwrap();
        let model = catalog.get("claude-x").unwrap();
        let body = Bytes::from_static(body);
        let top = TopLevel::parse(&body).unwrap();
        let view = chat_view(&top).unwrap();
        let request = ChatRequest {
            body: &body,
            top: &top,
            view: &view,
        };
        let target = Target {
            model,
            upstream_id,
            output_limit: Some(50),
        };
        let prepared = api.prepare_chat(&request, target)?;
        Ok((
            prepared.path.into_owned(),
            serde_json::from_slice(&prepared.body).unwrap(),
        ))
    }

    const PLAIN: &[u8] = br#"{"model":"claude-x","messages":[{"role":"user","content":"hi"}]}"#;
    const STREAMED: &[u8] = br#"{"model":"claude-x","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

    #[test]
    fn claude_goes_to_raw_predict_without_model_and_with_the_vertex_anthropic_version() {
        let api = VertexAnthropic { location: location() };
        let (path, sent) = prepare(&api, PLAIN, "claude-sonnet-4-5@20250929").unwrap();
        assert_eq!(
            path,
            "/v1/projects/my-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
        );
        assert!(sent.get("model").is_none(), "{sent}");
        assert_eq!(sent["anthropic_version"], "vertex-2023-10-16");
        assert_eq!(sent["max_tokens"], 50);
        assert_eq!(sent["messages"][0]["role"], "user");
        assert!(sent.get("stream").is_none());

        let (path, sent) = prepare(&api, STREAMED, "claude-sonnet-4-5@20250929").unwrap();
        assert!(
            path.ends_with("/models/claude-sonnet-4-5@20250929:streamRawPredict"),
            "{path}"
        );
        assert_eq!(sent["stream"], true);

        // Anthropic's own API still gets `model` and no `anthropic_version`.
        let (path, sent) = prepare(&Anthropic, PLAIN, "claude-sonnet-4-5").unwrap();
        assert_eq!(
            (path.as_str(), &sent["model"]),
            ("/messages", &serde_json::json!("claude-sonnet-4-5"))
        );
        assert!(sent.get("anthropic_version").is_none());
    }

    #[test]
    fn gemini_goes_to_generate_content_with_the_gemini_body() {
        let api = VertexGemini {
            location: Location {
                project: "p-1".into(),
                region: "global".into(),
            },
        };
        let (path, sent) = prepare(&api, PLAIN, "gemini-2.5-flash").unwrap();
        assert_eq!(
            path,
            "/v1/projects/p-1/locations/global/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(sent["contents"][0]["parts"][0]["text"], "hi");
        assert_eq!(sent["generationConfig"]["maxOutputTokens"], 50);
        let (path, _) = prepare(&api, STREAMED, "gemini-2.5-flash").unwrap();
        assert!(
            path.ends_with("/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
            "{path}"
        );
    }

    #[test]
    fn an_unsafe_path_segment_is_a_misconfigured_provider_not_a_request_elsewhere() {
        let api = VertexGemini { location: location() };
        let err = prepare(&api, PLAIN, "../x?y").unwrap_err();
        assert_eq!(err.kind, ErrorKind::ProviderUnavailable);
        let api = VertexAnthropic {
            location: Location {
                project: "a/b".into(),
                region: "us-east5".into(),
            },
        };
        assert_eq!(
            prepare(&api, PLAIN, "m").unwrap_err().kind,
            ErrorKind::ProviderUnavailable
        );
    }

    #[test]
    fn base_urls_and_bearer_headers() {
        assert_eq!(
            default_base_url("us-east5"),
            "https://us-east5-aiplatform.googleapis.com"
        );
        assert_eq!(default_base_url("global"), "https://aiplatform.googleapis.com");
        let headers = VertexGemini { location: location() }.headers("ya29.x").unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0, http::header::AUTHORIZATION);
        assert_eq!(headers[0].1, "Bearer ya29.x");
    }

    #[test]
    fn errors_in_google_shape_and_in_anthropic_shape_are_both_read() {
        let api = VertexAnthropic { location: location() };
        let google = br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#;
        let kind = |refusal: Refusal| match refusal {
            Refusal::Error(e) => Some(e.kind),
            Refusal::PassThrough => None,
        };
        assert_eq!(kind(api.read_error(429, google)), Some(ErrorKind::RateLimited));
        let anthropic = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            kind(api.read_error(529, anthropic)),
            Some(ErrorKind::UpstreamOverloaded)
        );
    }
}
