//! Azure OpenAI: OpenAI's wire format behind Azure's deployment URLs. A request goes to
//! `{base_url}/openai/deployments/{deployment}/chat/completions?api-version={version}` (or
//! `/embeddings`), authenticated with an `api-key` header; the deployment is the route's
//! upstream id. Bodies, answers, streams and errors are OpenAI's, so everything but the URL
//! and the header is the [`OpenAi`] adapter's.
//! (learn.microsoft.com/azure/ai-services/openai/reference, "Chat completions" and
//! "Embeddings", GA api-version 2024-10-21.)

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use router_one_core::{ApiError, ErrorKind};

use crate::openai::OpenAi;
use crate::provider::{
    ChatApi, ChatRequest, PreparedRequest, ReadContext, ReadResponse, Refusal, StreamDecoder, Target,
};
use crate::request::TopLevel;

/// The GA `api-version` sent when the operator sets none.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// The Azure OpenAI adapter.
#[derive(Debug, Clone)]
pub struct AzureOpenAi {
    /// The OpenAI adapter that writes and reads the bodies.
    pub openai: OpenAi,
    /// The `api-version` query parameter.
    pub api_version: String,
}

impl AzureOpenAi {
    /// The path of `operation` (`chat/completions`, `embeddings`) on the route's deployment.
    fn path(&self, deployment: &str, operation: &str) -> Result<Cow<'static, str>, ApiError> {
        // A deployment name is letters, digits, `-`, `_` and `.`: nothing that needs escaping.
        let valid = !deployment.is_empty()
            && deployment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(ApiError::new(
                ErrorKind::ProviderUnavailable,
                "The provider for this model is misconfigured.",
            ));
        }
        Ok(Cow::Owned(format!(
            "/openai/deployments/{deployment}/{operation}?api-version={}",
            self.api_version
        )))
    }
}

impl ChatApi for AzureOpenAi {
    fn prepare_chat(&self, request: &ChatRequest<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError> {
        let mut prepared = self.openai.prepare_chat(request, target)?;
        prepared.path = self.path(target.upstream_id, "chat/completions")?;
        Ok(prepared)
    }

    fn prepare_embeddings(&self, request: &TopLevel<'_>, target: Target<'_>) -> Result<PreparedRequest, ApiError> {
        let mut prepared = self.openai.prepare_embeddings(request, target)?;
        prepared.path = self.path(target.upstream_id, "embeddings")?;
        Ok(prepared)
    }

    fn read_chat(&self, body: Bytes, context: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        self.openai.read_chat(body, context)
    }

    fn read_embeddings(&self, body: Bytes, context: ReadContext<'_>) -> Result<ReadResponse, ApiError> {
        self.openai.read_embeddings(body, context)
    }

    fn stream_decoder(&self, context: ReadContext<'_>) -> Box<dyn StreamDecoder> {
        self.openai.stream_decoder(context)
    }

    fn read_error(&self, status: u16, body: &[u8]) -> Refusal {
        self.openai.read_error(status, body)
    }

    fn headers(&self, api_key: &str) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let key = HeaderValue::from_str(api_key).ok()?;
        Some(vec![(HeaderName::from_static("api-key"), key)])
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
        id = "gpt-x"
        family = "gpt"
        kind = "chat"
        context_window = 1000
        max_output = 100
        input_per_mtok = "1"
        cached_input_per_mtok = "0.5"
        output_per_mtok = "2"
        [[model.route]]
        provider = "azure"
        upstream_id = "my-gpt-deployment"
    "#;

    #[test]
    fn requests_go_to_the_deployment_with_the_api_version_and_an_api_key_header() {
        let catalog = Catalog::from_toml(CATALOG).unwrap();
        let model = catalog.get("gpt-x").unwrap();
        let azure = AzureOpenAi {
            openai: OpenAi::default(),
            api_version: DEFAULT_API_VERSION.into(),
        };
        let body =
            Bytes::from_static(br#"{"model":"gpt-x","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
        let top = TopLevel::parse(&body).unwrap();
        let view = chat_view(&top).unwrap();
        let request = ChatRequest {
            body: &body,
            top: &top,
            view: &view,
        };
        let target = Target {
            model,
            upstream_id: "my-gpt-deployment",
            output_limit: Some(50),
        };
        let prepared = azure.prepare_chat(&request, target).unwrap();
        assert_eq!(
            prepared.path,
            "/openai/deployments/my-gpt-deployment/chat/completions?api-version=2024-10-21"
        );
        let sent: serde_json::Value = serde_json::from_slice(&prepared.body).unwrap();
        assert_eq!(sent["stream_options"]["include_usage"], true);
        assert_eq!(sent["max_tokens"], 50);
        let headers = azure.headers("secret").unwrap();
        assert_eq!(headers[0].0.as_str(), "api-key");
        assert_eq!(headers[0].1, "secret");
        let bad = Target {
            upstream_id: "../x?y",
            ..target
        };
        assert_eq!(
            azure.prepare_chat(&request, bad).unwrap_err().kind,
            ErrorKind::ProviderUnavailable
        );
    }
}
