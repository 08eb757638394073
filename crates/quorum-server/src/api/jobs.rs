//! A volume's jobs: start a scrub, list them, get one, cancel one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::extract::{VolumeName, read_control_body};
use super::openapi::{CancelJobErrors, JobErrors, ScrubErrors, VolumeErrors};
use crate::error::ApiError;
use crate::jobs::{CancelError, JobStatus, ScrubStatus};

/// A scrub to start.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StartScrub)]
pub(super) struct ScrubBody {
    /// Whether it writes the winning data over the losers.
    #[serde(default)]
    repair: bool,
}

/// Starts a scrub: `{"repair": bool}` (an empty body means no repair).
#[utoipa::path(
    post,
    path = "/v1/volumes/{vol}/scrub",
    tag = "jobs",
    params(VolumeName),
    request_body(content = Option<ScrubBody>, description = "Empty for no repair"),
    responses((status = 202, description = "The scrub, started", body = ScrubStatus), ScrubErrors),
)]
pub(super) async fn start_scrub(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let jobs = state.jobs(&vol)?;
    let body = read_control_body(&state, &headers, body).await?;
    let request: ScrubBody = if body.iter().all(u8::is_ascii_whitespace) {
        ScrubBody { repair: false }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("bad scrub request: {e}")))?
    };
    let job = jobs
        .start_scrub(request.repair)
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    Ok((StatusCode::ACCEPTED, axum::Json(job)).into_response())
}

/// The volume's jobs: the resync (job 0) and its scrubs.
#[utoipa::path(
    get,
    path = "/v1/volumes/{vol}/jobs",
    tag = "jobs",
    params(VolumeName),
    responses((status = 200, description = "The volume's jobs", body = Vec<JobStatus>), VolumeErrors),
)]
pub(super) async fn list_jobs(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<axum::Json<Vec<JobStatus>>, ApiError> {
    Ok(axum::Json(state.jobs(&vol)?.list()))
}

/// One scrub.
#[utoipa::path(
    get,
    path = "/v1/volumes/{vol}/jobs/{id}",
    tag = "jobs",
    params(VolumeName, ("id" = u64, Path, description = "The job's id")),
    responses((status = 200, description = "The scrub", body = ScrubStatus), JobErrors),
)]
pub(super) async fn get_job(
    State(state): State<Arc<AppState>>,
    Path((vol, id)): Path<(String, String)>,
) -> Result<axum::Json<ScrubStatus>, ApiError> {
    let jobs = state.jobs(&vol)?;
    let id = parse_job_id(&id)?;
    jobs.get(id).map(axum::Json).ok_or(ApiError::NoSuchJob(id))
}

/// Cancels a running scrub; 204.
#[utoipa::path(
    delete,
    path = "/v1/volumes/{vol}/jobs/{id}",
    tag = "jobs",
    params(VolumeName, ("id" = u64, Path, description = "The job's id")),
    responses((status = 204, description = "The scrub is cancelled"), CancelJobErrors),
)]
pub(super) async fn cancel_job(
    State(state): State<Arc<AppState>>,
    Path((vol, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let jobs = state.jobs(&vol)?;
    let id = parse_job_id(&id)?;
    match jobs.cancel(id) {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(CancelError::NoSuchJob(id)) => Err(ApiError::NoSuchJob(id)),
        Err(e @ CancelError::NotCancellable(..)) => Err(ApiError::Conflict(e.to_string())),
    }
}

fn parse_job_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("bad job id {id:?}")))
}
