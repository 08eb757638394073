//! The operator's controls of a volume (SPEC 11): its I/O limits, the
//! resume of a suspended volume, its statistics.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{VolumeName, read_control_body};
use crate::error::ApiError;
use crate::throttle::IoLimits;

/// `GET .../limits`: the limits in force, every burst length written out.
pub(super) async fn get_limits(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<Json<IoLimits>, ApiError> {
    let entry = state.entry(&vol)?;
    Ok(Json(entry.controls().throttle.limits().explicit()))
}

/// `PUT .../limits`: replaces every limit with the body's (a key left out
/// is no limit, as in QEMU's `block_set_io_throttle`), from empty buckets.
/// Lasts until the server restarts, which reads `[volume.limits]` again.
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
pub(super) async fn resume(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<Json<Value>, ApiError> {
    let entry = state.entry(&vol)?;
    let suspension = &entry.controls().suspension;
    let held = suspension
        .resume()
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    Ok(Json(
        json!({ "held": held, "state": suspension.state().as_str() }),
    ))
}

/// `GET .../stats`: as QEMU's `query-blockstats` (see [`crate::stats`]).
pub(super) async fn stats(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<Json<Value>, ApiError> {
    let entry = state.entry(&vol)?;
    let report = entry.controls().stats.report();
    Ok(Json(json!({
        "volume": vol,
        "since": report.since,
        "idle_time_ns": report.idle_time_ns,
        "ops": report.ops,
    })))
}
