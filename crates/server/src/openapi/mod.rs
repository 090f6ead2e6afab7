//! The management API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the body schemas in [`schemas`], served at `GET /openapi.json`. The inference
//! API (`/v1/chat/completions`, `/v1/responses`, `/v1/embeddings`, `/v1/models`) is OpenAI's and
//! is not described.

pub(crate) mod schemas;

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::routes;

/// The name of the bearer security scheme every keyed management route uses.
pub(crate) const MANAGEMENT_KEY: &str = "management_key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Router One management API",
        description = "Accounts, keys, usage, checkout and referrals of a Router One gateway. \
            Authenticate with a management key (`Authorization: Bearer sk-rm-…`) from \
            `POST /v1/auth/signup` or `/v1/auth/login`. Money is a decimal string (USD unless \
            said otherwise), times are RFC 3339, and every error is \
            `{\"error\": {message, type, param, code}}`."
    ),
    paths(
        routes::keys::create,
        routes::keys::list,
        routes::keys::get,
        routes::keys::update,
        routes::keys::revoke,
        routes::usage::list,
        routes::usage::summary,
        routes::usage::trace,
        routes::receipts::receipt,
        routes::account::get,
        routes::account::ledger,
        routes::checkout::quote,
        routes::checkout::create_session,
        routes::checkout::get_session,
        routes::referrals::get,
        routes::referrals::claim,
        routes::management_keys::create,
        routes::management_keys::list,
        routes::management_keys::revoke,
        routes::signup::signup,
        routes::signup::login,
        routes::payments::webhook,
    ),
    components(
        schemas(schemas::Decimal, schemas::Timestamp, schemas::AmountUsd, schemas::ErrorBody),
        responses(schemas::Error),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Sign up and log in: the only keyless calls."),
        (name = "keys", description = "Inference keys (`sk-…`)."),
        (name = "usage", description = "Usage records, summaries and request traces."),
        (name = "account", description = "Balance, spend and the ledger."),
        (name = "checkout", description = "Top-up quotes and payment sessions."),
        (name = "referrals", description = "Invite codes and commissions."),
        (name = "management-keys", description = "Management keys (`sk-rm-…`)."),
        (name = "payments", description = "Payment provider webhooks (signed, no key)."),
    )
)]
struct ApiDoc;

/// Adds the bearer scheme the paths' `security` names.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            MANAGEMENT_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("sk-rm-…")
                    .description(Some("A management key, `Authorization: Bearer sk-rm-…`."))
                    .build(),
            ),
        );
    }
}

/// The document.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as JSON, built once.
static JSON: LazyLock<Result<String, String>> = LazyLock::new(|| document().to_json().map_err(|e| e.to_string()));

/// `GET /openapi.json` (no key).
pub(crate) async fn serve() -> Response {
    match &*JSON {
        Ok(json) => {
            let mut response = json.clone().into_response();
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "the OpenAPI document does not serialize");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the OpenAPI document does not serialize",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every operation the document must describe: the management routes of `lib.rs`.
    const OPERATIONS: &[(&str, &str)] = &[
        ("post", "/v1/keys"),
        ("get", "/v1/keys"),
        ("get", "/v1/keys/{id}"),
        ("patch", "/v1/keys/{id}"),
        ("delete", "/v1/keys/{id}"),
        ("get", "/v1/usage"),
        ("get", "/v1/usage/summary"),
        ("get", "/v1/requests/{id}"),
        ("get", "/v1/requests/{id}/receipt"),
        ("get", "/v1/account"),
        ("get", "/v1/account/ledger"),
        ("post", "/v1/checkout/quote"),
        ("post", "/v1/checkout/sessions"),
        ("get", "/v1/checkout/sessions/{id}"),
        ("get", "/v1/referrals"),
        ("post", "/v1/referrals/claim"),
        ("post", "/v1/management-keys"),
        ("get", "/v1/management-keys"),
        ("delete", "/v1/management-keys/{id}"),
        ("post", "/v1/auth/signup"),
        ("post", "/v1/auth/login"),
        ("post", "/v1/payments/webhooks/{provider}"),
    ];

    /// `/v1/` routes of `lib.rs` that are OpenAI's inference API (or its relay probes), not
    /// management.
    const NOT_MANAGEMENT: &[&str] = &[
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/embeddings",
        "/v1/models",
        "/v1/dashboard/billing/subscription",
        "/v1/dashboard/billing/usage",
    ];

    /// The paths `lib.rs` routes: the string literal after each `.route(`.
    fn router_paths() -> BTreeSet<String> {
        let source = include_str!("../lib.rs");
        source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| {
                let rest = rest.trim_start().strip_prefix('"')?;
                Some(rest[..rest.find('"')?].to_owned())
            })
            .collect()
    }

    fn doc() -> serde_json::Value {
        serde_json::from_str(JSON.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn the_document_serializes_as_openapi_3_1() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["components"]["securitySchemes"][MANAGEMENT_KEY].is_object());
        assert!(doc["components"]["responses"]["Error"].is_object());
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    }

    #[test]
    fn the_document_has_exactly_the_management_operations() {
        let doc = doc();
        let mut found = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "put", "post", "delete", "options", "head", "patch", "trace"] {
                if item.get(method).is_some() {
                    found.insert((method.to_owned(), path.clone()));
                }
            }
        }
        let wanted: BTreeSet<_> = OPERATIONS
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(found, wanted);
    }

    #[test]
    fn every_management_route_of_the_router_is_described() {
        let routed = router_paths();
        assert!(
            routed.contains("/v1/keys/{id}"),
            "the lib.rs parser is broken: {routed:?}"
        );
        let described: BTreeSet<&str> = OPERATIONS.iter().map(|(_, p)| *p).collect();
        for path in routed.iter().filter(|p| p.starts_with("/v1/")) {
            if !NOT_MANAGEMENT.contains(&path.as_str()) {
                assert!(
                    described.contains(path.as_str()),
                    "`{path}` is routed but not in the OpenAPI document"
                );
            }
        }
        for path in &described {
            assert!(routed.contains(*path), "`{path}` is described but not routed");
        }
    }

    #[test]
    fn keyed_operations_require_the_management_key_and_the_others_do_not() {
        let doc = doc();
        let mut ids = BTreeSet::new();
        for (method, path) in OPERATIONS {
            let id = doc["paths"][path][method]["operationId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                !id.is_empty() && ids.insert(id),
                "{method} {path}: operationId missing or not unique"
            );
            let op = &doc["paths"][path][method];
            let keyless = path.starts_with("/v1/auth/") || path.starts_with("/v1/payments/");
            let security = op.get("security");
            if keyless {
                assert!(security.is_none(), "{method} {path} must not ask for a key");
            } else {
                assert_eq!(
                    security,
                    Some(&serde_json::json!([{ MANAGEMENT_KEY: [] }])),
                    "{method} {path} must ask for the management key"
                );
            }
            assert!(
                op["responses"].get("400").is_some() || op["responses"].get("401").is_some(),
                "{method} {path}: no 4xx"
            );
        }
    }
}
