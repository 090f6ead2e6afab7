//! The console's static files, embedded in the binary: `cargo build` is the only build.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

/// Name, media type and bytes of every asset.
const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    ("favicon.svg", "image/svg+xml", include_bytes!("assets/favicon.svg")),
];

/// Every asset's content hash (first 12 hex digits): its URL changes when its bytes do, so it
/// can be cached for a year.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|(_, _, bytes)| hex::encode(&Sha256::digest(bytes)[..6]))
        .collect()
});

/// The URL of asset `name`.
pub(crate) fn href(name: &str) -> String {
    let version = ASSETS
        .iter()
        .position(|(n, _, _)| *n == name)
        .and_then(|i| VERSIONS.get(i))
        .map_or("", String::as_str);
    format!("/console/assets/{name}?v={version}")
}

/// `GET /console/assets/{file}`.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    let Some((_, media_type, bytes)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        *bytes,
    )
        .into_response()
}
