//! The HTTP API of SPEC section 4: routes, extractors and handlers.
//!
//! Handlers check what they can (volume, query, range, body size) before
//! they touch the engine, and call the engine only through
//! [`crate::bridge::blocking`]. Every error is an [`ApiError`].
//!
//! The parts:
//!
//! - `mod.rs`: [`AppState`], [`router`] (every route in one list, with
//!   its description) and the fallbacks (404, 405).
//! - `openapi.rs`: the OpenAPI description ([`openapi`]), the error
//!   answers of each kind of request, `GET /v1/openapi.json`.
//! - `guard.rs`: what runs before every route: auth and the transfer
//!   codings a body may come in.
//! - `access.rs`: the access log, one line per request.
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

mod access;
mod block_status;
mod children;
mod controls;
mod data;
mod events;
mod extract;
mod guard;
mod history;
mod jobs;
mod openapi;
mod status;
mod stream;
mod volumes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, Uri};
use axum::middleware;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::budget::Budget;
use crate::dashboard;
use crate::error::ApiError;
use crate::events::EventLog;
use crate::jobs::Jobs;
use crate::membership::VolumeEntry;
use crate::telemetry::Telemetry;

use self::guard::{auth, transfer_codings};
pub(crate) use self::stream::READ_CHUNK;

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

/// Every route of the API with its description: the one list. A handler
/// joins it through `routes!`, which reads its path and methods from its
/// `#[utoipa::path]`, so no route is served undescribed; the handlers of
/// one path go in one `routes!`.
fn api_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(status::healthz))
        .routes(routes!(status::readyz))
        .routes(routes!(status::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(volumes::list_volumes))
        .routes(routes!(volumes::get_volume))
        .routes(routes!(data::read_data, data::head_data, data::write_data))
        .routes(routes!(data::write_zeroes))
        .routes(routes!(data::discard))
        .routes(routes!(data::flush))
        .routes(routes!(block_status::block_status))
        .routes(routes!(jobs::start_scrub))
        .routes(routes!(children::add_child))
        .routes(routes!(children::remove_child))
        .routes(routes!(children::child_damage))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(controls::get_limits, controls::put_limits))
        .routes(routes!(controls::resume))
        .routes(routes!(controls::stats))
        .routes(routes!(history::volume_history))
        .routes(routes!(jobs::get_job, jobs::cancel_job))
        .routes(routes!(events::event_kinds))
        .routes(routes!(volumes::child_states))
        .routes(routes!(events::list_events))
        .routes(routes!(events::stream_events))
}

/// Every route the server has: the API's and the dashboard's files (which
/// are no API, and not described).
fn routes() -> Router<Arc<AppState>> {
    let (api, _) = api_routes().split_for_parts();
    api.merge(dashboard::routes())
}

/// The OpenAPI 3.1 description of every route of [`api_routes`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_routes().into_openapi();
    openapi::finish(&mut doc);
    doc
}

/// The whole API, with auth in front of everything but the probes and the
/// dashboard's files, and the access log around it all.
pub fn router(state: Arc<AppState>) -> Router {
    routes()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(transfer_codings))
        .layer(middleware::from_fn(access::access_log))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;

    /// The methods a probe tries on every path.
    const METHODS: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ];

    /// The paths the router has, read from its `Debug` (axum lists its
    /// routes as `RouteId(N): "PATH"`; it has no other way to list them),
    /// but for axum's own catch-all of the fallback.
    fn router_paths() -> BTreeSet<String> {
        let debug = format!("{:?}", routes());
        let paths: BTreeSet<String> = debug
            .split("RouteId(")
            .skip(1)
            .filter_map(|rest| {
                let quoted = rest.split_once("): \"")?.1;
                Some(quoted.split_once('"')?.0.to_owned())
            })
            .filter(|path| !path.contains("__private__axum"))
            .collect();
        assert!(
            paths.contains("/healthz") && paths.contains("/v1/volumes/{vol}"),
            "cannot read the routes out of the router's Debug (did axum change it?): {paths:?}"
        );
        paths
    }

    /// The described methods of each described path, in upper case.
    fn described() -> BTreeMap<String, BTreeSet<String>> {
        let doc = serde_json::to_value(openapi()).expect("serialize the description");
        let paths = doc["paths"].as_object().expect("paths");
        paths
            .iter()
            .map(|(path, item)| {
                let methods = item
                    .as_object()
                    .expect("a path item")
                    .keys()
                    .filter(|k| METHODS.iter().any(|m| m.as_str().eq_ignore_ascii_case(k)))
                    .map(|k| k.to_ascii_uppercase())
                    .collect();
                (path.clone(), methods)
            })
            .collect()
    }

    /// A server with no volume: every request about one is refused
    /// before it could touch anything.
    fn state(dir: &std::path::Path) -> Arc<AppState> {
        Arc::new(AppState {
            volumes: BTreeMap::new(),
            events: EventLog::open(dir, 16).expect("open an event log"),
            telemetry: Arc::new(Telemetry::new([])),
            token: None,
            max_request_bytes: 1 << 20,
            body_timeout: Duration::from_secs(5),
            budget: Budget::new(8 << 20),
            shutdown: CancellationToken::new(),
            adding: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Every path the router serves is described, and every described
    /// path is served, but for the dashboard's files (no API).
    #[test]
    fn every_route_is_described_and_every_description_routed() {
        let served = router_paths();
        let dashboard: BTreeSet<String> = dashboard::FILES
            .iter()
            .map(|&(path, _, _)| path.to_owned())
            .collect();
        let described: BTreeSet<String> = described().into_keys().collect();
        let undescribed: Vec<_> = served
            .difference(&described)
            .filter(|p| !dashboard.contains(*p))
            .collect();
        assert!(
            undescribed.is_empty(),
            "routes missing from the OpenAPI description (add them with routes!): {undescribed:?}"
        );
        let unserved: Vec<_> = described.difference(&served).collect();
        assert!(
            unserved.is_empty(),
            "described paths the router does not serve: {unserved:?}"
        );
        assert!(
            described.is_disjoint(&dashboard),
            "a dashboard file is described"
        );
    }

    /// On every described path, the router answers exactly the described
    /// methods (and HEAD where GET is, as HTTP has it); any other gets 405.
    #[tokio::test]
    async fn every_path_answers_exactly_its_described_methods() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let app = router(state(dir.path()));
        for (path, methods) in described() {
            let uri = path
                .replace("{vol}", "no-such-volume")
                .replace(['{', '}'], "");
            for method in METHODS {
                let expected = methods.contains(method.as_str())
                    || (method == Method::HEAD && methods.contains("GET"));
                let request = Request::builder()
                    .method(method.clone())
                    .uri(&uri)
                    .body(Body::empty())
                    .expect("a request");
                let response = app.clone().oneshot(request).await.expect("an answer");
                let routed = response.status() != StatusCode::METHOD_NOT_ALLOWED;
                assert_eq!(
                    routed,
                    expected,
                    "{method} {uri}: {} (described methods: {methods:?})",
                    response.status()
                );
            }
        }
    }
}
