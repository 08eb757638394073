//! Whether the server is up, and its metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use quorum_core::ChildState;
use serde_json::json;

use super::AppState;
use crate::suspend::VolumeState;

/// Whether the process is alive: always `ok`.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Whether every volume can serve: it is not suspended (a suspended
/// volume holds every request until a resume, whatever its children) and
/// at least `vote_threshold` of its children serve (neither failed nor
/// missing writes). A damaged child
/// serves: its other ranges are good and the vote outvotes its bad ones
/// ([`ChildState::serves`]), so it counts, and the body says how many of
/// the serving children are damaged. 200 when all can, 503 otherwise; the
/// body says which cannot, by volume name and counts only, since it is open
/// to unauthenticated probes as `/healthz`.
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let volumes: Vec<_> = state
        .volumes
        .iter()
        .map(|(name, entry)| {
            let volume = entry.volume();
            let children = volume.children();
            let count = |state: ChildState| children.iter().filter(|c| c.state == state).count();
            let serving = children.iter().filter(|c| c.state.serves()).count();
            let threshold = volume.options().vote_threshold;
            let state = entry.controls().suspension.state();
            json!({
                "volume": name,
                "ready": serving >= threshold && state != VolumeState::Suspended,
                "state": state.as_str(),
                "serving_children": serving,
                "healthy_children": count(ChildState::Healthy),
                "damaged_children": count(ChildState::Damaged),
                "vote_threshold": threshold,
            })
        })
        .collect();
    let ready = volumes.iter().all(|v| v["ready"] == true);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "volumes": volumes }))).into_response()
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let volumes: Vec<(&str, Arc<quorum_core::Volume>)> = state
        .volumes
        .iter()
        .map(|(name, e)| (name.as_str(), e.volume()))
        .collect();
    let mut text = state
        .telemetry
        .render(volumes.iter().map(|(name, v)| (*name, &**v)));
    text.push_str(&crate::controls::render_metrics(&state.volumes));
    text.push_str(&crate::jobs::metrics::render_metrics(&state.volumes));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
