//! The HTTP API of SPEC section 4: routes, extractors and handlers.
//!
//! Handlers check what they can (volume, query, range, body size) before
//! they touch the engine, and call the engine only through
//! [`crate::bridge::blocking`]. Every error is an [`ApiError`].
//!
//! The parts:
//!
//! - `mod.rs`: [`AppState`], [`router`] and the fallbacks (404, 405).
//! - `guard.rs`: what runs before every route: auth and the transfer
//!   codings a body may come in.
//! - `extract.rs`: the query and `{vol}` extractors, request bodies read
//!   from the budget, and `timed` (an engine call, counted).
//! - `stream.rs`: answers sent in pieces while they hold the budget: the
//!   streamed read and JSON answers.
//! - `status.rs`: `GET /healthz`, `GET /readyz`, `GET /metrics`.
//! - `volumes.rs`: `GET /v1/volumes`, `GET /v1/volumes/{vol}`,
//!   `GET /v1/child-states`.
//! - `data.rs`: `GET|HEAD|PUT /v1/volumes/{vol}/data`,
//!   `POST .../write-zeroes`, `POST .../discard`, `POST .../flush`.
//! - `block_status.rs`: `GET /v1/volumes/{vol}/block-status`.
//! - `children.rs`: `POST /v1/volumes/{vol}/children`,
//!   `DELETE .../children/{name}`, `GET .../children/{name}/damage`.
//! - `jobs.rs`: `POST /v1/volumes/{vol}/scrub`, `GET .../jobs`,
//!   `GET|DELETE .../jobs/{id}`.
//! - `controls.rs`: `GET|PUT /v1/volumes/{vol}/limits`,
//!   `POST .../resume`, `GET .../stats` (SPEC 11).
//! - `history.rs`: `GET /v1/volumes/{vol}/history`.
//! - `events.rs`: `GET /v1/event-kinds`, `GET /v1/events`,
//!   `GET /v1/events/stream`.

mod block_status;
mod children;
mod controls;
mod data;
mod events;
mod extract;
mod guard;
mod history;
mod jobs;
mod status;
mod stream;
mod volumes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, Uri};
use axum::middleware;
use axum::routing::{delete, get, post};
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::dashboard;
use crate::error::ApiError;
use crate::events::EventLog;
use crate::jobs::Jobs;
use crate::membership::VolumeEntry;
use crate::telemetry::Telemetry;

use self::block_status::block_status;
use self::children::{add_child, child_damage, remove_child};
use self::controls::{get_limits, put_limits, resume, stats};
use self::data::{discard, flush, head_data, read_data, write_data, write_zeroes};
use self::events::{event_kinds, list_events, stream_events};
use self::guard::{auth, transfer_codings};
use self::history::volume_history;
use self::jobs::{cancel_job, get_job, list_jobs, start_scrub};
use self::status::{healthz, metrics, readyz};
pub(crate) use self::stream::READ_CHUNK;
use self::volumes::{child_states, get_volume, list_volumes};

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
        .route("/readyz", get(readyz))
        .route("/v1/volumes", get(list_volumes))
        .route("/v1/volumes/{vol}", get(get_volume))
        .route(
            "/v1/volumes/{vol}/data",
            get(read_data).head(head_data).put(write_data),
        )
        .route("/v1/volumes/{vol}/write-zeroes", post(write_zeroes))
        .route("/v1/volumes/{vol}/discard", post(discard))
        .route("/v1/volumes/{vol}/flush", post(flush))
        .route("/v1/volumes/{vol}/block-status", get(block_status))
        .route("/v1/volumes/{vol}/scrub", post(start_scrub))
        .route("/v1/volumes/{vol}/children", post(add_child))
        .route("/v1/volumes/{vol}/children/{name}", delete(remove_child))
        .route(
            "/v1/volumes/{vol}/children/{name}/damage",
            get(child_damage),
        )
        .route("/v1/volumes/{vol}/jobs", get(list_jobs))
        .route("/v1/volumes/{vol}/limits", get(get_limits).put(put_limits))
        .route("/v1/volumes/{vol}/resume", post(resume))
        .route("/v1/volumes/{vol}/stats", get(stats))
        .route("/v1/volumes/{vol}/history", get(volume_history))
        .route(
            "/v1/volumes/{vol}/jobs/{id}",
            get(get_job).delete(cancel_job),
        )
        .route("/v1/event-kinds", get(event_kinds))
        .route("/v1/child-states", get(child_states))
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

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}
