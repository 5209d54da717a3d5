//! The REST gateway: the documented `/v1` paths, served by axum on the same engine, in-process.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::engine::Engine;
use crate::error::Error;

/// The REST application.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { Error::NotFound("no such route".into()) })
        .with_state(engine)
}
