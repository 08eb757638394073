//! The operator's controls of a volume (SPEC 11): its I/O limits, the
//! resume of a suspended volume, its statistics.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::extract::{VolumeName, read_control_body};
use super::openapi::{ControlBodyErrors, ResumeErrors, VolumeErrors};
use crate::error::ApiError;
use crate::stats::Report;
use crate::throttle::IoLimits;

/// `GET .../limits`: the limits in force, every burst length written out.
#[utoipa::path(
    get,
    path = "/v1/volumes/{vol}/limits",
    tag = "controls",
    params(VolumeName),
    responses((status = 200, description = "The limits in force", body = IoLimits), VolumeErrors),
)]
pub(super) async fn get_limits(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<Json<IoLimits>, ApiError> {
    let entry = state.entry(&vol)?;
    Ok(Json(entry.controls().throttle.limits().explicit()))
}

/// `PUT .../limits`: replaces the I/O limits.
///
/// Replaces every limit with the body's (a key left out
/// is no limit, as in QEMU's `block_set_io_throttle`), from empty buckets.
/// Lasts until the server restarts, which reads `[volume.limits]` again.
#[utoipa::path(
    put,
    path = "/v1/volumes/{vol}/limits",
    tag = "controls",
    params(VolumeName),
    request_body = IoLimits,
    responses((status = 200, description = "The limits now in force", body = IoLimits), ControlBodyErrors),
)]
pub(super) async fn put_limits(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IoLimits>, ApiError> {
    let entry = state.entry(&vol)?;
    let body = read_control_body(&state, &headers, body).await?;
    let limits: IoLimits = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("bad limits: {e}")))?;
    let throttle = &entry.controls().throttle;
    throttle
        .set(limits)
        .map_err(|e| ApiError::BadRequest(format!("bad limits: {e}")))?;
    tracing::info!(volume = vol, ?limits, "I/O limits changed");
    Ok(Json(throttle.limits().explicit()))
}

/// `POST .../resume`: retries the held requests of a suspended volume in
/// order; 409 when it is not suspended.
#[utoipa::path(
    post,
    path = "/v1/volumes/{vol}/resume",
    tag = "controls",
    params(VolumeName),
    responses((status = 200, description = "The volume resumes", body = Resumed), ResumeErrors),
)]
pub(super) async fn resume(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<Json<Resumed>, ApiError> {
    let entry = state.entry(&vol)?;
    let suspension = &entry.controls().suspension;
    let held = suspension
        .resume()
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    Ok(Json(Resumed {
        held,
        state: suspension.state().as_str(),
    }))
}

/// What a resume did.
#[derive(Serialize, ToSchema)]
pub(super) struct Resumed {
    /// The held requests it retries, in order.
    held: usize,
    /// The volume's state now.
    #[schema(value_type = crate::schema::VolumeState)]
    state: &'static str,
}

/// `GET .../stats`: as QEMU's `query-blockstats` (see [`crate::stats`]).
#[utoipa::path(
    get,
    path = "/v1/volumes/{vol}/stats",
    tag = "controls",
    params(VolumeName),
    responses((status = 200, description = "The volume's statistics", body = VolumeStats), VolumeErrors),
)]
pub(super) async fn stats(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<Json<VolumeStats>, ApiError> {
    let entry = state.entry(&vol)?;
    let report = entry.controls().stats.report();
    Ok(Json(VolumeStats {
        volume: vol,
        report,
    }))
}

/// A volume's statistics.
#[derive(Serialize, ToSchema)]
pub(super) struct VolumeStats {
    /// The volume.
    volume: String,
    /// Its statistics.
    #[serde(flatten)]
    report: Report,
}
