//! The HTTP API of SPEC section 4: routes, extractors and handlers.
//!
//! Handlers check what they can (volume, query, range, body size) before
//! they touch the engine, and call the engine only through
//! [`crate::bridge::blocking`]. Every error is an [`ApiError`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures_util::{Stream, StreamExt, stream};
use quorum_core::{EventKind, Extent, Op, VariantArray, VolumeError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;

use crate::bridge::blocking;
use crate::budget::{Budget, Reservation};
use crate::dashboard;
use crate::error::ApiError;
use crate::events::EventLog;
use crate::jobs::{CancelError, JobStatus, Jobs, ScrubStatus};
use crate::membership::VolumeEntry;
use crate::range;
use crate::telemetry::Telemetry;

/// Reads are served in pieces of this size, so memory stays bounded
/// whatever the length asked for.
const READ_CHUNK: usize = 1 << 20;
/// The most events one `GET /v1/events` returns.
const MAX_EVENTS_PER_PAGE: usize = 10_000;
/// The extents one block status answer holds unless `limit` says otherwise.
const BLOCK_STATUS_LIMIT: usize = 1 << 16;
/// The largest `limit` of block status.
const MAX_BLOCK_STATUS_LIMIT: usize = 1 << 20;
/// The header of a block status answer cut short: where the next page
/// starts (the end of its last extent).
const NEXT_OFFSET: HeaderName = HeaderName::from_static("quorum-next-offset");

/// What every handler shares.
pub struct AppState {
    /// The volumes by name.
    pub volumes: BTreeMap<String, Arc<VolumeEntry>>,
    /// The event log.
    pub events: Arc<EventLog>,
    /// The metrics.
    pub telemetry: Arc<Telemetry>,
    /// The bearer token, if one is required.
    pub token: Option<String>,
    /// Larger request bodies get 413.
    pub max_request_bytes: u64,
    /// A request body that takes longer than this to arrive gets 408.
    pub body_timeout: Duration,
    /// The bytes requests may buffer at once, server-wide.
    pub budget: Budget,
    /// Cancelled when the server shuts down, to end live streams.
    pub shutdown: CancellationToken,
    /// Held by a child's addition, so that two additions never claim the
    /// same storage at once; a second one meanwhile is 503 `busy` at once
    /// (it would otherwise park a blocking thread).
    pub adding: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    fn entry(&self, name: &str) -> Result<Arc<VolumeEntry>, ApiError> {
        self.volumes
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::NoSuchVolume(name.to_owned()))
    }

    fn jobs(&self, name: &str) -> Result<Arc<Jobs>, ApiError> {
        Ok(self.entry(name)?.jobs())
    }
}

/// The whole API, with auth in front of everything but `/healthz`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/volumes", get(list_volumes))
        .route("/v1/volumes/{vol}", get(get_volume))
        .route(
            "/v1/volumes/{vol}/data",
            get(read_data).head(head_data).put(write_data),
        )
        .route("/v1/volumes/{vol}/write-zeroes", post(write_zeroes))
        .route("/v1/volumes/{vol}/flush", post(flush))
        .route("/v1/volumes/{vol}/block-status", get(block_status))
        .route("/v1/volumes/{vol}/scrub", post(start_scrub))
        .route("/v1/volumes/{vol}/children", post(add_child))
        .route("/v1/volumes/{vol}/children/{name}", delete(remove_child))
        .route("/v1/volumes/{vol}/jobs", get(list_jobs))
        .route(
            "/v1/volumes/{vol}/jobs/{id}",
            get(get_job).delete(cancel_job),
        )
        .route("/v1/event-kinds", get(event_kinds))
        .route("/v1/events", get(list_events))
        .route("/v1/events/stream", get(stream_events))
        .route("/metrics", get(metrics))
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(transfer_codings))
        .with_state(state)
}

/// Requires `Authorization: Bearer TOKEN` when a token is configured: the
/// scheme in any case (RFC 9110), the credentials exactly, compared in
/// constant time. `/healthz` and the dashboard's files are open.
async fn auth(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let path = request.uri().path();
        if path != "/healthz" && !dashboard::is_asset(path) {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, credentials)| credentials);
            let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
            if !ok {
                return ApiError::Unauthorized.into_response();
            }
        }
    }
    next.run(request).await
}

/// Answers 501 to a request body in a transfer coding other than plain
/// `chunked` (RFC 9112 section 6.1): the server would otherwise store the
/// coded bytes as if they were the data.
async fn transfer_codings(request: Request, next: Next) -> Response {
    let mut codings = request
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    let plain = codings.all(|c| c.eq_ignore_ascii_case(b"chunked"));
    if !plain {
        return ApiError::NotImplemented(
            "only the chunked transfer coding is supported; send the bytes as they are".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// A query string, with malformed ones answered 400 in the API's shape.
struct ApiQuery<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|e| ApiError::BadRequest(format!("bad query {query:?}: {e}")))
    }
}

/// The `{vol}` of a path.
struct VolumeName(String);

impl<S: Send + Sync> FromRequestParts<S> for VolumeName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| VolumeName(v))
            .map_err(|e| ApiError::BadRequest(format!("bad volume name in the path: {e}")))
    }
}

#[derive(Deserialize)]
struct OffsetQuery {
    offset: u64,
}

#[derive(Deserialize)]
struct RangeQuery {
    offset: u64,
    length: u64,
}

#[derive(Deserialize)]
struct BlockStatusQuery {
    offset: u64,
    length: u64,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<u64>,
    volume: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct StreamQuery {
    since: Option<u64>,
    volume: Option<String>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

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
                "stats": telemetry.child_stats(name, &c.name),
            })
        })
        .collect();
    json!({
        "name": name,
        "size": v.size(),
        "vote_threshold": o.vote_threshold,
        "read_pattern": o.read_pattern.as_str(),
        "rewrite_corrupted": o.rewrite_corrupted,
        "blkverify": o.blkverify,
        "stats": telemetry.volume_stats(name),
        "children": children,
    })
}

async fn list_volumes(State(state): State<Arc<AppState>>) -> axum::Json<serde_json::Value> {
    let list: Vec<_> = state
        .volumes
        .iter()
        .map(|(name, entry)| volume_json(&state.telemetry, name, entry))
        .collect();
    axum::Json(json!(list))
}

async fn get_volume(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let entry = state.entry(&vol)?;
    Ok(axum::Json(volume_json(&state.telemetry, &vol, &entry)))
}

async fn head_data(
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

async fn read_data(
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
            let r = range::parse(value, size)?;
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

/// What a streamed read has left to send.
struct ReadState {
    entry: Arc<VolumeEntry>,
    telemetry: Arc<Telemetry>,
    budget: Budget,
    body_timeout: Duration,
    volume: String,
    started: Instant,
    start: u64,
    /// The next byte to read.
    at: u64,
    end: u64,
    span: u64,
    /// The span read last, not yet sent, and the budget it holds.
    pending: Option<(Bytes, Reservation)>,
}

impl ReadState {
    /// Reads the next span: budget first, then one atomic engine read on a
    /// blocking thread that holds the membership gate only while it reads.
    async fn read_span(&mut self) -> Result<(), ApiError> {
        let n = self.span.min(self.end - self.at);
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        let reservation = self.budget.reserve(n, deadline).await?;
        let (entry, at) = (self.entry.clone(), self.at);
        let len = usize::try_from(n).map_err(|e| ApiError::Internal(e.to_string()))?;
        let bytes = blocking(move || entry.run(|v| v.read(at, len))).await??;
        self.at += n;
        if self.at == self.end {
            // Counted before the client can have the last byte.
            self.telemetry.request(
                &self.volume,
                Op::Read,
                self.end - self.start,
                self.started.elapsed(),
            );
        }
        self.pending = Some((bytes, reservation));
        Ok(())
    }

    /// The next piece of at most [`READ_CHUNK`] bytes to send, if any.
    async fn next_piece(&mut self) -> Result<Option<Bytes>, ApiError> {
        if self.pending.as_ref().is_none_or(|(b, _)| b.is_empty()) {
            self.pending = None;
            if self.at == self.end {
                return Ok(None);
            }
            self.read_span().await?;
        }
        let Some((bytes, _)) = self.pending.as_mut() else {
            return Ok(None);
        };
        Ok(Some(bytes.split_to(READ_CHUNK.min(bytes.len()))))
    }
}

impl Drop for ReadState {
    /// A read cut short (a failure, a client gone) counts what it read.
    fn drop(&mut self) {
        if self.at < self.end {
            self.telemetry.request(
                &self.volume,
                Op::Read,
                self.at - self.start,
                self.started.elapsed(),
            );
        }
    }
}

/// Reads `offset..offset+length` as a streamed body, `span` bytes at a
/// time: each span is one atomic read (SPEC 8.1) into a buffer taken from
/// the budget, sent in pieces; nothing (thread, gate, lock) is held while
/// the client takes it, and a client that takes nothing for `body_timeout`
/// is dropped by the connection's write timeout. The first span is read
/// before the answer starts, so that a failure there gets its proper
/// status; a failure later cuts the body short.
async fn stream_read(
    state: &AppState,
    entry: Arc<VolumeEntry>,
    volume: &str,
    offset: u64,
    length: u64,
    span: u64,
) -> Result<Body, ApiError> {
    let mut read = ReadState {
        entry,
        telemetry: state.telemetry.clone(),
        budget: state.budget.clone(),
        body_timeout: state.body_timeout,
        volume: volume.to_owned(),
        started: Instant::now(),
        start: offset,
        at: offset,
        end: offset + length,
        span,
        pending: None,
    };
    if length == 0 {
        return Ok(Body::empty());
    }
    let first = read.next_piece().await?;
    if read.at == read.end && read.pending.as_ref().is_none_or(|(b, _)| b.is_empty()) {
        return Ok(first.map_or_else(Body::empty, Body::from));
    }
    let rest = stream::try_unfold(read, |mut read| async move {
        let piece = read.next_piece().await.map_err(|e| {
            tracing::error!(error = %e, "a streamed read failed after the answer started");
            std::io::Error::other(e.to_string())
        })?;
        Ok::<_, std::io::Error>(piece.map(|p| (p, read)))
    });
    Ok(Body::from_stream(stream::iter(first.map(Ok)).chain(rest)))
}

async fn write_data(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    ApiQuery(q): ApiQuery<OffsetQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let entry = state.entry(&vol)?;
    let size = entry.volume().size();
    let limit = state.max_request_bytes;
    if let Some(len) = content_length(&headers)? {
        if len > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        if q.offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(VolumeError::OutOfRange {
                offset: q.offset,
                length: len,
                size,
            }
            .into());
        }
    }
    let data = read_body(&state, body, content_length(&headers)?).await?;
    let bytes = data.len() as u64;
    timed(&state, &vol, Op::Write, bytes, move || {
        let (data, _reservation) = data.into_parts();
        entry.run(|v| v.write(q.offset, data))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs an engine call off the async workers and counts it as a request
/// of `op` on `volume`.
async fn timed<T, F>(
    state: &AppState,
    volume: &str,
    op: Op,
    bytes: u64,
    f: F,
) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, VolumeError> + Send + 'static,
    T: Send + 'static,
{
    let started = Instant::now();
    let result = blocking(f).await?;
    state
        .telemetry
        .request(volume, op, bytes, started.elapsed());
    Ok(result?)
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
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
struct Buffered {
    data: Bytes,
    reservation: Reservation,
}

impl Buffered {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn into_parts(self) -> (Bytes, Reservation) {
        (self.data, self.reservation)
    }
}

/// Collects a request body of at most `max_request_bytes` within
/// `body_timeout`, into one buffer taken from the budget before it is
/// filled: all of a declared `length` at once, or frame by frame for a
/// chunked body.
async fn read_body(
    state: &AppState,
    body: Body,
    length: Option<u64>,
) -> Result<Buffered, ApiError> {
    let limit = state.max_request_bytes;
    let deadline = tokio::time::Instant::now() + state.body_timeout;
    let mut reservation = state.budget.reserve(length.unwrap_or(0), deadline).await?;
    let capacity = usize::try_from(length.unwrap_or(0).min(limit)).unwrap_or(0);
    let mut data = bytes::BytesMut::with_capacity(capacity);
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
        let len = (data.len() + frame.len()) as u64;
        if len > limit || length.is_some_and(|declared| len > declared) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        if length.is_none() {
            state
                .budget
                .grow(&mut reservation, frame.len() as u64, deadline)
                .await?;
        }
        data.extend_from_slice(&frame);
    }
    Ok(Buffered {
        data: data.freeze(),
        reservation,
    })
}

async fn write_zeroes(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<StatusCode, ApiError> {
    let entry = state.entry(&vol)?;
    timed(&state, &vol, Op::WriteZeroes, q.length, move || {
        entry.run(|v| v.write_zeroes(q.offset, q.length))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn flush(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<StatusCode, ApiError> {
    let entry = state.entry(&vol)?;
    timed(&state, &vol, Op::Flush, 0, move || entry.run(|v| v.flush())).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `[{offset, length, zero}]` for at most `limit` extents (default
/// [`BLOCK_STATUS_LIMIT`], at most [`MAX_BLOCK_STATUS_LIMIT`]); an answer
/// cut short covers a prefix of the range and says where the next page
/// starts in `Quorum-Next-Offset`.
async fn block_status(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    ApiQuery(q): ApiQuery<BlockStatusQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(BLOCK_STATUS_LIMIT);
    if limit == 0 || limit > MAX_BLOCK_STATUS_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_BLOCK_STATUS_LIMIT} extents, not {limit}"
        )));
    }
    let entry = state.entry(&vol)?;
    let extents = timed(&state, &vol, Op::BlockStatus, 0, move || {
        entry.run(|v| v.block_status(q.offset, q.length, limit))
    })
    .await?;
    // The engine checked the range: the sum does not overflow.
    let end = q.offset.saturating_add(q.length);
    let next = extents.last().map(Extent::end).filter(|&next| next < end);
    let list: Vec<ExtentJson> = extents.iter().map(ExtentJson::from).collect();
    let mut response = axum::Json(list).into_response();
    if let Some(next) = next {
        response
            .headers_mut()
            .insert(NEXT_OFFSET, HeaderValue::from(next));
    }
    Ok(response)
}

/// One extent of a block status answer.
#[derive(Serialize)]
struct ExtentJson {
    offset: u64,
    length: u64,
    zero: bool,
}

impl From<&Extent> for ExtentJson {
    fn from(e: &Extent) -> Self {
        ExtentJson {
            offset: e.offset,
            length: e.length,
            zero: e.zero,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddChildBody {
    name: String,
    uri: String,
    #[serde(default)]
    options: BTreeMap<String, serde_json::Value>,
}

/// Adds a child: `{"name", "uri", "options"}`; 201 and the child. It syncs
/// before it votes.
async fn add_child(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    body: Bytes,
) -> Result<Response, ApiError> {
    let entry = state.entry(&vol)?;
    let request: AddChildBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("bad child: {e}")))?;
    let mut options = BTreeMap::new();
    for (key, value) in request.options {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "option {key:?} must be a string, number or boolean"
                )));
            }
        };
        options.insert(key, text);
    }
    let (name, uri) = (request.name, request.uri);
    let shown_uri = quorum_backends::redact_uri(&uri);
    let one = state.adding.clone().try_lock_owned().map_err(|_| {
        ApiError::Busy("another child is being added to this server; try again".into())
    })?;
    let child = blocking(move || {
        let added = entry.add_child(&name, &uri, options, &state.volumes);
        drop(one);
        added
    })
    .await??;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "name": child.name,
            "uri": shown_uri,
            "backend": child.backend,
            "state": child.state.as_str(),
            "stale_bytes": child.stale_bytes,
        })),
    )
        .into_response())
}

/// Removes a child; 204.
async fn remove_child(
    State(state): State<Arc<AppState>>,
    Path((vol, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let entry = state.entry(&vol)?;
    blocking(move || entry.remove_child(&name)).await??;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScrubBody {
    #[serde(default)]
    repair: bool,
}

/// Starts a scrub: `{"repair": bool}` (an empty body means no repair).
async fn start_scrub(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    body: Bytes,
) -> Result<Response, ApiError> {
    let jobs = state.jobs(&vol)?;
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

async fn list_jobs(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
) -> Result<axum::Json<Vec<JobStatus>>, ApiError> {
    Ok(axum::Json(state.jobs(&vol)?.list()))
}

async fn get_job(
    State(state): State<Arc<AppState>>,
    Path((vol, id)): Path<(String, String)>,
) -> Result<axum::Json<ScrubStatus>, ApiError> {
    let jobs = state.jobs(&vol)?;
    let id = parse_job_id(&id)?;
    jobs.get(id).map(axum::Json).ok_or(ApiError::NoSuchJob(id))
}

async fn cancel_job(
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

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let volumes: Vec<(&str, Arc<quorum_core::Volume>)> = state
        .volumes
        .iter()
        .map(|(name, e)| (name.as_str(), e.volume()))
        .collect();
    let text = state
        .telemetry
        .render(volumes.iter().map(|(name, v)| (*name, &**v)));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The names of the events this server emits, for clients that label them
/// (the dashboard reads its list here rather than keeping a copy).
/// The name of every event the server emits, as events and
/// `quorum_events_total{event}` spell them.
async fn event_kinds() -> axum::Json<&'static [EventKind]> {
    axum::Json(EventKind::VARIANTS)
}

async fn list_events(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(1000).min(MAX_EVENTS_PER_PAGE);
    let events = state
        .events
        .since(q.since.unwrap_or(0), q.volume.as_deref(), limit);
    let mut body =
        String::with_capacity(2 + events.iter().map(|e| e.json.len() + 1).sum::<usize>());
    body.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&e.json);
    }
    body.push(']');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Live events as Server-Sent Events. With `since` (or a `Last-Event-ID`
/// header after a reconnect) the events after that id are sent first.
async fn stream_events(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let since = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("malformed Last-Event-ID".into()))?,
        ),
        None => q.since,
    };
    let live = state.events.subscribe();
    let backlog = since
        .map(|s| {
            state
                .events
                .since(s, q.volume.as_deref(), MAX_EVENTS_PER_PAGE)
        })
        .unwrap_or_default();
    let seen = backlog.last().map(|e| e.id).or(since).unwrap_or(0);
    let volume = q.volume;
    let live = BroadcastStream::new(live).filter_map(move |item| {
        let keep = match item {
            Ok(e) if e.id > seen && volume.as_ref().is_none_or(|v| *v == e.volume) => Some(e),
            Ok(_) => None,
            Err(lagged) => {
                tracing::warn!(%lagged, "an event stream fell behind and skipped events");
                None
            }
        };
        std::future::ready(keep)
    });
    let events = stream::iter(backlog)
        .chain(live)
        .map(|e| Ok(SseEvent::default().id(e.id.to_string()).data(&*e.json)))
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
