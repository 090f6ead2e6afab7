//! The top_up section (to be written).

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
