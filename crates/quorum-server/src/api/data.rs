//! The volume's bytes: read (whole or a `Range`), `HEAD`, write,
//! write-zeroes, discard and flush.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quorum_core::{Op, Volume, VolumeError};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::extract::{ApiQuery, VolumeName, content_length, read_body, timed, timed_admitted};
use super::openapi::{FlushErrors, ReadErrors, VolumeErrors, WriteErrors, ZeroErrors};
use super::stream::{READ_CHUNK, stream_read};
use crate::error::ApiError;
use crate::membership::VolumeEntry;
use crate::range;
use crate::telemetry::Frontend;

/// Where a write starts.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct OffsetQuery {
    /// The first byte, in the volume.
    offset: u64,
}

/// A range of the volume.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RangeQuery {
    /// The first byte.
    offset: u64,
    /// How many bytes.
    length: u64,
}

/// The volume's size in `Content-Length`, and no body.
#[utoipa::path(
    head,
    path = "/v1/volumes/{vol}/data",
    tag = "data",
    params(VolumeName),
    responses(
        (status = 200, description = "The volume's size in Content-Length", headers(("Content-Length" = u64, description = "The volume's size"))),
        VolumeErrors,
    ),
)]
pub(super) async fn head_data(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<Response, ApiError> {
    let size = state.entry(&vol)?.volume().size();
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_LENGTH, HeaderValue::from(size)),
            (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
        ],
    )
        .into_response())
}

/// The volume's bytes: all of them, or the one range of a `Range` header
/// (atomic up to `max_request_bytes`), streamed.
#[utoipa::path(
    get,
    path = "/v1/volumes/{vol}/data",
    tag = "data",
    params(
        VolumeName,
        ("Range" = Option<String>, Header, description = "One range, `bytes=FIRST-LAST` (also `FIRST-` or `-SUFFIX`)"),
    ),
    responses(
        (status = 200, description = "The whole volume", content_type = "application/octet-stream", body = inline(crate::schema::Binary)),
        (status = 206, description = "The range asked for", content_type = "application/octet-stream", body = inline(crate::schema::Binary),
            headers(("Content-Range" = String, description = "`bytes FIRST-LAST/SIZE`"))),
        ReadErrors,
    ),
)]
pub(super) async fn read_data(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = state.entry(&vol)?;
    let size = entry.volume().size();
    let (status, offset, length) = match headers.get(header::RANGE) {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| ApiError::BadRequest("the Range header is not ASCII".into()))?;
            let r = range::parse(value, size).inspect_err(|e| {
                if matches!(e, ApiError::OutOfRange { .. }) {
                    entry.controls().stats.invalid(Op::Read);
                }
            })?;
            (StatusCode::PARTIAL_CONTENT, r.offset, r.length)
        }
        None => (StatusCode::OK, 0, size),
    };
    // A Range read is atomic up to `max_request_bytes` (SPEC 8.1); a whole
    // volume is a live copy, atomic per piece, in small pieces so that a
    // slow reader holds little.
    let span = match status {
        StatusCode::PARTIAL_CONTENT => state.max_request_bytes.max(READ_CHUNK as u64),
        _ => READ_CHUNK as u64,
    };
    let body = stream_read(&state, entry, &vol, offset, length, span).await?;
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {}-{}/{size}", offset, offset + length - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).map_err(|e| ApiError::Internal(e.to_string()))?,
        );
    }
    Ok(response)
}

/// Writes the body at `offset`; 204 once a quorum of children has it.
#[utoipa::path(
    put,
    path = "/v1/volumes/{vol}/data",
    tag = "data",
    params(VolumeName, OffsetQuery),
    request_body(content = inline(crate::schema::Binary), content_type = "application/octet-stream", description = "The bytes, at most `max_request_bytes`"),
    responses((status = 204, description = "Written"), WriteErrors),
)]
pub(super) async fn write_data(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    ApiQuery(q): ApiQuery<OffsetQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let entry = state.entry(&vol)?;
    let limit = state.max_request_bytes;
    let declared = content_length(&headers)?;
    if let Some(len) = declared {
        if len > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        within(&entry, Op::Write, q.offset, len)?;
    }
    // The throttle first: a write waiting for its turn holds no memory.
    // A chunked body goes as one operation, its bytes accounted once read.
    let started = Instant::now();
    let throttle = &entry.controls().throttle;
    throttle.admit(Op::Write, declared.unwrap_or(0)).await;
    let data = read_body(&state, body, declared, limit).await?;
    let bytes = data.len() as u64;
    within(&entry, Op::Write, q.offset, bytes)?;
    if declared.is_none() {
        throttle.account_late(Op::Write, bytes);
    }
    let (data, reservation) = data.into_parts();
    let copy = data.clone();
    timed_admitted(
        &state,
        &entry,
        &vol,
        Op::Write,
        bytes,
        started,
        &move |v, done| v.start_write(q.offset, copy.clone(), done),
        move |v| v.write(q.offset, data.clone()),
    )
    .await?;
    drop(reservation);
    Ok(StatusCode::NO_CONTENT)
}

/// Writes zeroes over a range; 204 once a quorum of children has them.
#[utoipa::path(
    post,
    path = "/v1/volumes/{vol}/write-zeroes",
    tag = "data",
    params(VolumeName, RangeQuery),
    responses((status = 204, description = "The range reads as zeroes"), ZeroErrors),
)]
pub(super) async fn write_zeroes(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<StatusCode, ApiError> {
    zero_range(&state, &vol, Op::WriteZeroes, q, Volume::write_zeroes).await
}

/// `POST .../discard` (SPEC section 10): checked and counted as
/// write-zeroes is, under its own op.
#[utoipa::path(
    post,
    path = "/v1/volumes/{vol}/discard",
    tag = "data",
    params(VolumeName, RangeQuery),
    responses((status = 204, description = "The range is discarded and reads as zeroes"), ZeroErrors),
)]
pub(super) async fn discard(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<StatusCode, ApiError> {
    zero_range(&state, &vol, Op::Discard, q, Volume::discard).await
}

/// Runs `zero` (a write of zeroes of some kind) over the query's range,
/// counted as `op`; `204` when it succeeded.
async fn zero_range(
    state: &AppState,
    vol: &str,
    op: Op,
    q: RangeQuery,
    zero: fn(&Volume, u64, u64) -> Result<(), VolumeError>,
) -> Result<StatusCode, ApiError> {
    let entry = state.entry(vol)?;
    if let Err(e) = within(&entry, op, q.offset, q.length) {
        // Counted as a request that moved nothing (its length may be any
        // number up to 2^64 - 1).
        state
            .telemetry
            .request(vol, Frontend::Http, op, 0, Duration::ZERO);
        return Err(e);
    }
    timed(state, &entry, vol, op, q.length, move |v| {
        zero(v, q.offset, q.length)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses a request of `op` wholly or partly outside the volume before it
/// reaches the volume's path, counted as invalid: as QEMU checks a
/// request's range before its throttle, so that a refused request takes
/// nothing from the I/O limits' buckets (a write-zeroes of 2^64 - 1 bytes
/// would otherwise hold every later write for centuries).
fn within(entry: &VolumeEntry, op: Op, offset: u64, length: u64) -> Result<(), ApiError> {
    let size = entry.volume().size();
    if offset.checked_add(length).is_none_or(|end| end > size) {
        entry.controls().stats.invalid(op);
        return Err(VolumeError::OutOfRange {
            offset,
            length,
            size,
        }
        .into());
    }
    Ok(())
}

/// Flushes every child; 204 once a quorum of them has.
#[utoipa::path(
    post,
    path = "/v1/volumes/{vol}/flush",
    tag = "data",
    params(VolumeName),
    responses((status = 204, description = "Flushed"), FlushErrors),
)]
pub(super) async fn flush(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<StatusCode, ApiError> {
    let entry = state.entry(&vol)?;
    timed(&state, &entry, &vol, Op::Flush, 0, Volume::flush).await?;
    Ok(StatusCode::NO_CONTENT)
}
