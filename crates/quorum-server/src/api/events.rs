//! Events: the kinds the server emits, a page of the log, and the live
//! stream (Server-Sent Events).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt, stream};
use quorum_core::{EventKind, VariantArray};
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::ApiQuery;
use super::openapi::{EventsErrors, StreamErrors};
use super::stream::json_answer;
use crate::error::ApiError;

/// The most events one `GET /v1/events` returns.
const MAX_EVENTS_PER_PAGE: usize = 10_000;
/// The most bytes of JSON one `GET /v1/events` returns (or
/// `max_buffered_bytes` if that is less), beyond its first event: the
/// client pages on with `since`.
const MAX_EVENT_PAGE_BYTES: usize = 8 << 20;

/// Which events a page holds.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Only events after this id.
    since: Option<u64>,
    /// Only this volume's events.
    volume: Option<String>,
    /// The most events (a default and a maximum apply).
    limit: Option<usize>,
}

/// Which events a stream sends.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamQuery {
    /// Send the events after this id first (`Last-Event-ID` wins).
    since: Option<u64>,
    /// Only this volume's events.
    volume: Option<String>,
}

/// One event as the log and the stream carry it (written by
/// `crate::events`; this type only describes it).
#[derive(ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)]
pub(super) struct EventDoc {
    /// Its number, from 1, in order.
    id: u64,
    /// When it happened (RFC 3339, milliseconds).
    timestamp: String,
    /// Its name.
    #[schema(value_type = crate::schema::EventKind)]
    event: String,
    /// The volume it is about.
    volume: String,
    /// Its fields, by event (QEMU's names where QEMU has the event).
    data: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The name of every event the server emits.
///
/// The names as events and
/// `quorum_events_total{event}` spell them, for clients that label them
/// (the dashboard reads its list here rather than keeping a copy).
#[utoipa::path(
    get,
    path = "/v1/event-kinds",
    tag = "events",
    responses((status = 200, description = "Every event name", body = Vec<crate::schema::EventKind>)),
)]
pub(super) async fn event_kinds() -> axum::Json<&'static [EventKind]> {
    axum::Json(EventKind::VARIANTS)
}

/// A page of the event log, oldest first.
///
/// At most `limit` events (default 1000, at most [`MAX_EVENTS_PER_PAGE`])
/// after `since`, and at most [`MAX_EVENT_PAGE_BYTES`] of JSON (or
/// `max_request_bytes` if less: an answer is no larger than a request may
/// be) beyond the first event; the client pages on with
/// `since` = the last id it got. The answer is paid for from the budget
/// until the client has taken it.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(EventsQuery),
    responses((status = 200, description = "A page of events, in order", body = Vec<EventDoc>), EventsErrors),
)]
pub(super) async fn list_events(
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
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "The last event id seen, on a reconnect"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: each `data:` is one Event, its `id:` the event's id",
            content_type = "text/event-stream", body = String),
        StreamErrors,
    ),
)]
pub(super) async fn stream_events(
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
