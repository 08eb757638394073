//! What handlers take from a request: the query, the `{vol}` of the path,
//! the body (read within `body_timeout`, from the budget); and `timed`,
//! which runs an engine call and counts it.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use futures_util::StreamExt;
use quorum_core::{Op, Volume, VolumeError};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::bridge::Start;
use crate::budget::Reservation;
use crate::error::ApiError;
use crate::io::IoError;
use crate::membership::VolumeEntry;
use crate::telemetry::Frontend;

/// The largest body of a control request (`POST .../children`,
/// `POST .../scrub`): a few hundred bytes of JSON in practice.
const MAX_CONTROL_BODY: u64 = 64 << 10;

/// A query string, with malformed ones answered 400 in the API's shape.
pub(super) struct ApiQuery<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|e| ApiError::BadRequest(format!("bad query {query:?}: {e}")))
    }
}

/// The `{vol}` of a path: the volume's name.
#[derive(utoipa::IntoParams)]
#[into_params(names("vol"), parameter_in = Path)]
pub(super) struct VolumeName(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for VolumeName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| VolumeName(v))
            .map_err(|e| ApiError::BadRequest(format!("bad volume name in the path: {e}")))
    }
}

/// Runs an engine call on `entry` through its one data path
/// ([`VolumeEntry::io`]: limits, error policy, statistics) and counts it
/// as a request of `op` on `volume`.
pub(super) async fn timed<T, F>(
    state: &AppState,
    entry: &Arc<VolumeEntry>,
    volume: &str,
    op: Op,
    bytes: u64,
    f: F,
) -> Result<T, ApiError>
where
    F: Fn(&Volume) -> Result<T, VolumeError> + Send + Sync + 'static,
    T: Send + 'static,
{
    let started = Instant::now();
    let result = entry.io(op, bytes, f).await;
    counted(state, volume, op, bytes, started, result)
}

/// [`timed`] for a request that arrived at `started` and that the throttle
/// has let through already, started without a blocking thread where the
/// engine can ([`VolumeEntry::io_admitted`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn timed_admitted<T, F>(
    state: &AppState,
    entry: &Arc<VolumeEntry>,
    volume: &str,
    op: Op,
    bytes: u64,
    started: Instant,
    start: Start<'_, T>,
    f: F,
) -> Result<T, ApiError>
where
    F: Fn(&Volume) -> Result<T, VolumeError> + Send + Sync + 'static,
    T: Send + 'static,
{
    let result = entry.io_admitted(op, bytes, started, start, f).await;
    counted(state, volume, op, bytes, started, result)
}

/// Counts a finished HTTP request of `op` on `volume` that began at
/// `started`, with the bytes it moved, and gives its result.
fn counted<T>(
    state: &AppState,
    volume: &str,
    op: Op,
    bytes: u64,
    started: Instant,
    result: Result<T, IoError>,
) -> Result<T, ApiError> {
    let moved = crate::io::moved(&result, bytes);
    state
        .telemetry
        .request(volume, Frontend::Http, op, moved, started.elapsed());
    Ok(result?)
}

pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("malformed Content-Length".into()))
        })
        .transpose()
}

/// A request body and the budget it holds.
pub(super) struct Buffered {
    data: Bytes,
    reservation: Reservation,
}

impl Buffered {
    pub(super) fn len(&self) -> usize {
        self.data.len()
    }

    pub(super) fn into_parts(self) -> (Bytes, Reservation) {
        (self.data, self.reservation)
    }
}

/// Collects a request body of at most `limit` bytes within `body_timeout`
/// into one buffer whose bytes are taken from the budget frame by frame as
/// they arrive, declared length or not: a request that has sent nothing
/// holds nothing (see [`crate::budget`] for why this cannot deadlock). The
/// buffer of a declared `length` is allocated whole when its first bytes
/// arrive, so that it is never copied to grow.
pub(super) async fn read_body(
    state: &AppState,
    body: Body,
    length: Option<u64>,
    limit: u64,
) -> Result<Buffered, ApiError> {
    if length.is_some_and(|declared| declared > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let deadline = tokio::time::Instant::now() + state.body_timeout;
    let mut reservation = state.budget.empty();
    let mut data = bytes::BytesMut::new();
    let mut body = body.into_data_stream();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => return Err(ApiError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::BadRequest(format!(
                    "cannot read the request body: {e}"
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if frame.is_empty() {
            continue;
        }
        let len = (data.len() + frame.len()) as u64;
        if len > limit || length.is_some_and(|declared| len > declared) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let need = length.unwrap_or(limit) - len;
        state
            .budget
            .grow_to(&mut reservation, len, need, deadline)
            .await?;
        if data.capacity() == 0 {
            data.reserve(usize::try_from(length.unwrap_or(0)).unwrap_or(0));
        }
        data.extend_from_slice(&frame);
    }
    Ok(Buffered {
        data: data.freeze(),
        reservation,
    })
}

/// Reads the body of a control request (at most [`MAX_CONTROL_BODY`]
/// bytes) as any body is read: within `body_timeout`, from the budget.
pub(super) async fn read_control_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let body = read_body(state, body, content_length(headers)?, MAX_CONTROL_BODY).await?;
    Ok(body.into_parts().0)
}
