//! The volumes as the API shows them: options, children, statistics, and
//! the states a child can be in.

use std::sync::Arc;

use axum::extract::State;
use quorum_core::{ChildState, VariantArray};
use serde_json::json;

use super::AppState;
use super::extract::VolumeName;
use crate::error::ApiError;
use crate::membership::VolumeEntry;
use crate::telemetry::Telemetry;

fn volume_json(telemetry: &Telemetry, name: &str, entry: &VolumeEntry) -> serde_json::Value {
    let v = entry.volume();
    let uris = entry.uris();
    let o = v.options();
    let children: Vec<_> = v
        .children()
        .into_iter()
        .zip(&uris)
        .map(|(c, uri)| {
            json!({
                "name": c.name,
                "uri": uri,
                "backend": c.backend,
                "state": c.state.as_str(),
                "stale_bytes": c.stale_bytes,
                "damaged_bytes": c.damaged_bytes,
                "stats": telemetry.child_stats(name, &c.name),
            })
        })
        .collect();
    let mut volume = json!({
        "name": name,
        "size": v.size(),
        "vote_threshold": o.vote_threshold,
        "read_pattern": o.read_pattern.as_str(),
        "rewrite_corrupted": o.rewrite_corrupted,
        "blkverify": o.blkverify,
        "stats": telemetry.volume_stats(name),
        "children": children,
    });
    if let Some(map) = volume.as_object_mut() {
        map.extend(entry.controls().json());
    }
    volume
}

pub(super) async fn list_volumes(
    State(state): State<Arc<AppState>>,
) -> axum::Json<serde_json::Value> {
    let list: Vec<_> = state
        .volumes
        .iter()
        .map(|(name, entry)| volume_json(&state.telemetry, name, entry))
        .collect();
    axum::Json(json!(list))
}

pub(super) async fn get_volume(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let entry = state.entry(&vol)?;
    Ok(axum::Json(volume_json(&state.telemetry, &vol, &entry)))
}

/// Every state a child can be in, as `GET /v1/volumes` and
/// `quorum_child_state{state}` spell it, with what it means for the
/// volume: `[{"state", "serves", "needs_operator"}]` (see
/// [`ChildState::serves`] and [`ChildState::needs_operator`]). The
/// dashboard reads its states here rather than keeping a copy.
pub(super) async fn child_states() -> axum::Json<Vec<StateInfo>> {
    axum::Json(
        ChildState::VARIANTS
            .iter()
            .map(|&state| StateInfo {
                state,
                serves: state.serves(),
                needs_operator: state.needs_operator(),
            })
            .collect(),
    )
}

/// One state as `GET /v1/child-states` lists it.
#[derive(serde::Serialize)]
pub(super) struct StateInfo {
    state: ChildState,
    serves: bool,
    needs_operator: bool,
}
