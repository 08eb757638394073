//! Whether the server is up, and its metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use quorum_core::ChildState;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::suspend::VolumeState;

/// Whether the process is alive: always `ok`. Open without a token.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "status",
    security(()),
    responses((status = 200, description = "The process is alive", content_type = "text/plain", body = String, example = "ok")),
)]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Whether every volume can serve; open without a token.
///
/// Every volume can serve when it is not suspended (a suspended volume
/// holds every request until a resume, whatever its children) and at
/// least `vote_threshold` of its children serve (neither failed nor
/// missing writes). A damaged child
/// serves: its other ranges are good and the vote outvotes its bad ones
/// ([`ChildState::serves`]), so it counts, and the body says how many of
/// the serving children are damaged. 200 when all can, 503 otherwise; the
/// body says which cannot, by volume name and counts only, since it is open
/// to unauthenticated probes as `/healthz`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "status",
    security(()),
    responses(
        (status = 200, description = "Every volume can serve", body = Readiness),
        (status = 503, description = "Some volume cannot serve", body = Readiness),
    ),
)]
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
            VolumeReadiness {
                volume: name.clone(),
                ready: serving >= threshold && state != VolumeState::Suspended,
                state: state.as_str(),
                serving_children: serving,
                healthy_children: count(ChildState::Healthy),
                damaged_children: count(ChildState::Damaged),
                vote_threshold: threshold,
            }
        })
        .collect();
    let ready = volumes.iter().all(|v| v.ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { ready, volumes })).into_response()
}

/// Whether the server can serve, by volume.
#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
    /// Whether every volume can.
    ready: bool,
    /// Each volume.
    volumes: Vec<VolumeReadiness>,
}

/// Whether one volume can serve: counts only, as `/readyz` is open.
#[derive(Serialize, ToSchema)]
pub(super) struct VolumeReadiness {
    /// The volume's name.
    volume: String,
    /// Whether it is not suspended and at least `vote_threshold` children
    /// serve.
    ready: bool,
    /// Whether it serves or holds its requests.
    #[schema(value_type = crate::schema::VolumeState)]
    state: &'static str,
    /// Children that serve (healthy or damaged).
    serving_children: usize,
    /// Healthy children.
    healthy_children: usize,
    /// Damaged children (they serve).
    damaged_children: usize,
    /// The children that must agree.
    vote_threshold: usize,
}

/// The Prometheus text exposition of every metric: the volumes', their
/// controls', and the process's own (build info, `process_*`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "status",
    responses((status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4", body = String)),
)]
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
    crate::process::render(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
