//! One module per console section; each page handler asks the API, then renders.

pub(crate) mod auth;
pub(crate) mod docs;
pub(crate) mod keys;
pub(crate) mod models;
pub(crate) mod overview;
pub(crate) mod referrals;
pub(crate) mod top_up;
pub(crate) mod usage;

use axum::response::Response;
use http::StatusCode;

use crate::console::layout;

/// Any console path that is not a page.
pub(crate) async fn not_found() -> Response {
    layout::problem(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}
