//! Whether the server is up, and its metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let volumes: Vec<(&str, Arc<quorum_core::Volume>)> = state
        .volumes
        .iter()
        .map(|(name, e)| (name.as_str(), e.volume()))
        .collect();
    let text = state
        .telemetry
        .render(volumes.iter().map(|(name, v)| (*name, &**v)));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
