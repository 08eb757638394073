//! A volume's recent I/O, second by second: `GET /v1/volumes/{vol}/history`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{ApiQuery, VolumeName};
use super::openapi::HistoryErrors;
use crate::error::ApiError;
use crate::history::{HISTORY_SECONDS, Sample};

/// Which seconds to answer.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryQuery {
    /// Only the seconds after this one (Unix seconds).
    since: Option<u64>,
}

/// The answer: the closed seconds, oldest first.
#[derive(Serialize, ToSchema)]
#[schema(as = History)]
pub(super) struct HistoryAnswer {
    /// The volume.
    volume: String,
    /// Each sample covers this many seconds.
    interval_seconds: u64,
    /// The most samples the server keeps.
    capacity: usize,
    /// The second being counted now (Unix seconds), not in `samples` yet:
    /// the `since` of the next call.
    now: u64,
    /// The seconds, oldest first.
    samples: Vec<Sample>,
}

/// The volume's recent I/O, a sample a second.
///
/// The last [`HISTORY_SECONDS`] seconds of the volume's I/O, or those after
/// `since` (see [`crate::history`]).
#[utoipa::path(
    get,
    path = "/v1/volumes/{vol}/history",
    tag = "volumes",
    params(VolumeName, HistoryQuery),
    responses((status = 200, description = "The closed seconds, oldest first", body = HistoryAnswer), HistoryErrors),
)]
pub(super) async fn volume_history(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryAnswer>, ApiError> {
    state.entry(&vol)?;
    let recent = state
        .telemetry
        .history(&vol, q.since)
        .ok_or_else(|| ApiError::NoSuchVolume(vol.clone()))?;
    Ok(Json(HistoryAnswer {
        volume: vol,
        interval_seconds: 1,
        capacity: HISTORY_SECONDS,
        now: recent.now,
        samples: recent.samples,
    }))
}
