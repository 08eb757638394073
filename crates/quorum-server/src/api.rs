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
use serde::Deserialize;
use serde::de::DeserializeOwned;
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
/// whatever the length asked for; `max_buffered_bytes` is at least this.
pub(crate) const READ_CHUNK: usize = 1 << 20;
/// The most events one `GET /v1/events` returns.
const MAX_EVENTS_PER_PAGE: usize = 10_000;
/// The most bytes of JSON one `GET /v1/events` returns (or
/// `max_buffered_bytes` if that is less), beyond its first event: the
/// client pages on with `since`.
const MAX_EVENT_PAGE_BYTES: usize = 8 << 20;
/// The largest body of a control request (`POST .../children`,
/// `POST .../scrub`): a few hundred bytes of JSON in practice.
const MAX_CONTROL_BODY: u64 = 64 << 10;
/// What one extent of a block status answer may take while it is built:
/// the engine's extent (24 bytes) and its JSON (at most 76 bytes), rounded
/// up. The answer's reservation starts at `limit` times this.
const BLOCK_STATUS_BYTES_PER_EXTENT: u64 = 128;
/// The longest JSON of one extent: `{"offset":N,"length":N,"zero":false},`
/// with 20-digit numbers.
const MAX_EXTENT_JSON: usize = 76;
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

/// Answers 501 to a request body in any transfer coding but exactly one
/// `chunked` over all `Transfer-Encoding` headers (RFC 9112 section 6.1):
/// the HTTP layer removes one `chunked`, so with `gzip, chunked` or
/// `chunked, chunked` the server would store the coded bytes (the inner
/// chunk framing) as if they were the data.
async fn transfer_codings(request: Request, next: Next) -> Response {
    let codings = request
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    let (mut all, mut chunked) = (0, 0);
    for c in codings {
        all += 1;
        chunked += usize::from(c.eq_ignore_ascii_case(b"chunked"));
    }
    if all > 0 && (all, chunked) != (1, 1) {
        return ApiError::NotImplemented(
            "only the chunked transfer coding, once, is supported; send the bytes as they are"
                .into(),
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
    ///
    /// A span longer than [`READ_CHUNK`] is read with `read_chunks`: one
    /// range lock from its first piece to its last (so it is as atomic as
    /// one read, SPEC 8.1), in pieces of [`READ_CHUNK`] appended to the one
    /// buffer the budget paid for. Read whole, every child would fill a
    /// buffer of the span's size besides: memory (children + 1) times the
    /// reservation.
    async fn read_span(&mut self) -> Result<(), ApiError> {
        let n = self.span.min(self.end - self.at);
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        let reservation = self.budget.reserve(n, deadline).await?;
        let (entry, at) = (self.entry.clone(), self.at);
        let len = usize::try_from(n).map_err(|e| ApiError::Internal(e.to_string()))?;
        let bytes = blocking(move || {
            entry.run(|v| {
                if len <= READ_CHUNK {
                    return v.read(at, len);
                }
                let mut buf = bytes::BytesMut::with_capacity(len);
                v.read_chunks(at, n, READ_CHUNK, |piece| {
                    buf.extend_from_slice(&piece);
                    true
                })?;
                Ok(buf.freeze())
            })
        })
        .await??;
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
    let data = read_body(&state, body, content_length(&headers)?, limit).await?;
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

/// Collects a request body of at most `limit` bytes within `body_timeout`
/// into one buffer whose bytes are taken from the budget frame by frame as
/// they arrive, declared length or not: a request that has sent nothing
/// holds nothing (see [`crate::budget`] for why this cannot deadlock). The
/// buffer of a declared `length` is allocated whole when its first bytes
/// arrive, so that it is never copied to grow.
async fn read_body(
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
///
/// The answer is paid for from the budget: `limit` ×
/// [`BLOCK_STATUS_BYTES_PER_EXTENT`] before the engine is asked (a limit
/// whose answer could never fit the budget is lowered to one that can; the
/// answer is then cut short like any other), then only the JSON's size
/// until the client has taken it.
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
    let fits = state.budget.total() / BLOCK_STATUS_BYTES_PER_EXTENT;
    let limit = limit.min(usize::try_from(fits).unwrap_or(usize::MAX).max(1));
    let deadline = tokio::time::Instant::now() + state.body_timeout;
    let mut reservation = state
        .budget
        .reserve(limit as u64 * BLOCK_STATUS_BYTES_PER_EXTENT, deadline)
        .await?;
    let extents = timed(&state, &vol, Op::BlockStatus, 0, move || {
        entry.run(|v| v.block_status(q.offset, q.length, limit))
    })
    .await?;
    // The engine checked the range: the sum does not overflow.
    let end = q.offset.saturating_add(q.length);
    let next = extents.last().map(Extent::end).filter(|&next| next < end);
    let json = extents_json(&extents);
    drop(extents);
    reservation.shrink_to(json.len() as u64);
    let mut response = json_answer(json, reservation);
    if let Some(next) = next {
        response
            .headers_mut()
            .insert(NEXT_OFFSET, HeaderValue::from(next));
    }
    Ok(response)
}

/// The JSON of a block status answer, in a buffer that never grows.
fn extents_json(extents: &[Extent]) -> Bytes {
    use std::io::Write as _;
    let mut json = Vec::with_capacity(2 + extents.len() * MAX_EXTENT_JSON);
    json.push(b'[');
    for (i, e) in extents.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        // Writing to a Vec cannot fail.
        let _ = write!(
            json,
            "{{\"offset\":{},\"length\":{},\"zero\":{}}}",
            e.offset, e.length, e.zero
        );
    }
    json.push(b']');
    Bytes::from(json)
}

/// A JSON answer that holds `reservation` until the connection has taken
/// its last piece (or is gone).
fn json_answer(json: Bytes, reservation: Reservation) -> Response {
    let len = json.len();
    let pieces = stream::unfold(Some((json, reservation)), |state| async move {
        let (mut rest, reservation) = state?;
        if rest.is_empty() {
            drop(reservation);
            return None;
        }
        let piece = rest.split_to(READ_CHUNK.min(rest.len()));
        Some((Ok::<_, Infallible>(piece), Some((rest, reservation))))
    });
    let mut response = Response::new(Body::from_stream(pieces));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddChildBody {
    name: String,
    uri: String,
    #[serde(default)]
    options: BTreeMap<String, serde_json::Value>,
}

/// Reads the body of a control request (at most [`MAX_CONTROL_BODY`]
/// bytes) as any body is read: within `body_timeout`, from the budget.
async fn read_control_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let body = read_body(state, body, content_length(headers)?, MAX_CONTROL_BODY).await?;
    Ok(body.into_parts().0)
}

/// Adds a child: `{"name", "uri", "options"}`; 201 and the child. It syncs
/// before it votes.
async fn add_child(
    State(state): State<Arc<AppState>>,
    VolumeName(vol): VolumeName,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let entry = state.entry(&vol)?;
    let body = read_control_body(&state, &headers, body).await?;
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

/// At most `limit` events (default 1000, at most [`MAX_EVENTS_PER_PAGE`])
/// after `since`, and at most [`MAX_EVENT_PAGE_BYTES`] of JSON (or
/// `max_request_bytes` if less: an answer is no larger than a request may
/// be) beyond the first event; the client pages on with
/// `since` = the last id it got. The answer is paid for from the budget
/// until the client has taken it.
async fn list_events(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(1000).min(MAX_EVENTS_PER_PAGE);
    let events = state
        .events
        .since(q.since.unwrap_or(0), q.volume.as_deref(), limit);
    let most = usize::try_from(state.budget.total().min(state.max_request_bytes))
        .unwrap_or(usize::MAX)
        .min(MAX_EVENT_PAGE_BYTES);
    let mut size = 2;
    let mut count = 0;
    for e in &events {
        let more = e.json.len() + usize::from(count > 0);
        if count > 0 && size + more > most {
            break;
        }
        size += more;
        count += 1;
    }
    let deadline = tokio::time::Instant::now() + state.body_timeout;
    let reservation = state.budget.reserve(size as u64, deadline).await?;
    let mut body = Vec::with_capacity(size);
    body.push(b'[');
    for (i, e) in events[..count].iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e.json.as_bytes());
    }
    body.push(b']');
    drop(events);
    Ok(json_answer(Bytes::from(body), reservation))
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
