//! The volumes as the API shows them: options, children, statistics, and
//! the states a child can be in.

use std::sync::Arc;

use axum::extract::State;
use quorum_core::{ChildState, VariantArray};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::extract::VolumeName;
use super::openapi::VolumeErrors;
use crate::controls::ControlsView;
use crate::error::ApiError;
use crate::membership::VolumeEntry;
use crate::telemetry::{ChildCounters, Telemetry, VolumeCounters};

fn volume_view(telemetry: &Telemetry, name: &str, entry: &VolumeEntry) -> VolumeView {
    let v = entry.volume();
    let uris = entry.uris();
    let o = v.options();
    let children = v
        .children()
        .into_iter()
        .zip(uris)
        .map(|(c, uri)| ChildView {
            stats: telemetry.child_stats(name, &c.name),
            name: c.name,
            uri,
            backend: c.backend,
            state: c.state,
            stale_bytes: c.stale_bytes,
            damaged_bytes: c.damaged_bytes,
        })
        .collect();
    VolumeView {
        name: name.to_owned(),
        size: v.size(),
        vote_threshold: o.vote_threshold,
        read_pattern: o.read_pattern.as_str(),
        rewrite_corrupted: o.rewrite_corrupted,
        blkverify: o.blkverify,
        stats: telemetry.volume_stats(name),
        children,
        controls: entry.controls().view(),
    }
}

/// A volume as `GET /v1/volumes` shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Volume)]
pub(super) struct VolumeView {
    /// Its name.
    name: String,
    /// Its size in bytes.
    size: u64,
    /// The children that must agree.
    vote_threshold: usize,
    /// How reads pick their answer: `quorum` or `fifo`.
    read_pattern: &'static str,
    /// Whether a read writes the winning data over the losers.
    rewrite_corrupted: bool,
    /// Whether every read compares the two children.
    blkverify: bool,
    /// Its counters.
    stats: VolumeCounters,
    /// Its children, in order.
    children: Vec<ChildView>,
    /// Its controls (SPEC 11).
    #[serde(flatten)]
    controls: ControlsView,
}

/// A child as `GET /v1/volumes` and `POST .../children` show it.
#[derive(Serialize, ToSchema)]
#[schema(as = Child)]
pub(super) struct ChildView {
    /// Its name.
    pub(super) name: String,
    /// Its URI, credentials removed.
    pub(super) uri: String,
    /// Its backend kind (`file`, `s3`, `http`, ...).
    pub(super) backend: &'static str,
    /// Its state.
    #[schema(value_type = crate::schema::ChildState)]
    pub(super) state: ChildState,
    /// Bytes it missed that the resync has not copied yet.
    pub(super) stale_bytes: u64,
    /// Bytes that lost a vote or failed to read, not repaired yet.
    pub(super) damaged_bytes: u64,
    /// Its counters (left out of a child just added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stats: Option<ChildCounters>,
}

/// Every volume, by name.
#[utoipa::path(
    get,
    path = "/v1/volumes",
    tag = "volumes",
    responses((status = 200, description = "Every volume, by name", body = Vec<VolumeView>)),
)]
pub(super) async fn list_volumes(
    State(state): State<Arc<AppState>>,
) -> axum::Json<Vec<VolumeView>> {
    axum::Json(
        state
            .volumes
            .iter()
            .map(|(name, entry)| volume_view(&state.telemetry, name, entry))
            .collect(),
    )
}

/// One volume.
#[utoipa::path(
    get,
    path = "/v1/volumes/{vol}",
    tag = "volumes",
    params(VolumeName),
    responses((status = 200, description = "The volume", body = VolumeView), VolumeErrors),
)]
pub(super) async fn get_volume(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<axum::Json<VolumeView>, ApiError> {
    let entry = state.entry(&vol)?;
    Ok(axum::Json(volume_view(&state.telemetry, &vol, &entry)))
}

/// Every state a child can be in, with what it means for the volume.
///
/// The states as `GET /v1/volumes` and `quorum_child_state{state}` spell
/// them: `[{"state", "serves", "needs_operator"}]` (see
/// [`ChildState::serves`] and [`ChildState::needs_operator`]). The
/// dashboard reads its states here rather than keeping a copy.
#[utoipa::path(
    get,
    path = "/v1/child-states",
    tag = "volumes",
    responses((status = 200, description = "Every state a child can be in", body = Vec<StateInfo>)),
)]
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
#[derive(Serialize, ToSchema)]
pub(super) struct StateInfo {
    /// The state.
    #[schema(value_type = crate::schema::ChildState)]
    state: ChildState,
    /// Whether a child in it serves reads and counts for the threshold.
    serves: bool,
    /// Whether it needs an operator to act.
    needs_operator: bool,
}
