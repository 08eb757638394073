//! A volume's children: add one (it syncs before it votes), remove one,
//! list the ranges of one that are damaged.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{VolumeName, read_control_body};
use super::openapi::{AddChildErrors, ChildErrors, RemoveChildErrors};
use super::volumes::ChildView;
use crate::bridge::blocking;
use crate::error::ApiError;

/// A child to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AddChild)]
pub(super) struct AddChildBody {
    /// Its name, unique in the volume.
    name: String,
    /// Where it is (`file://`, `s3://`, `http(s)://`, ...).
    uri: String,
    /// The backend's options: strings, numbers or booleans.
    #[serde(default)]
    options: BTreeMap<String, serde_json::Value>,
}

/// Adds a child: `{"name", "uri", "options"}`; 201 and the child. It syncs
/// before it votes.
#[utoipa::path(
    post,
    path = "/v1/volumes/{vol}/children",
    tag = "children",
    params(VolumeName),
    request_body = AddChildBody,
    responses(
        (status = 201, description = "The child, added; it syncs before it votes", body = ChildView),
        AddChildErrors,
    ),
)]
pub(super) async fn add_child(
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
        axum::Json(ChildView {
            name: child.name,
            uri: shown_uri,
            backend: child.backend,
            state: child.state,
            stale_bytes: child.stale_bytes,
            damaged_bytes: child.damaged_bytes,
            stats: None,
        }),
    )
        .into_response())
}

/// Removes a child; 204.
#[utoipa::path(
    delete,
    path = "/v1/volumes/{vol}/children/{name}",
    tag = "children",
    params(VolumeName, ("name" = String, Path, description = "The child's name")),
    responses((status = 204, description = "The child is removed"), RemoveChildErrors),
)]
pub(super) async fn remove_child(
    State(state): State<Arc<AppState>>,
    Path((vol, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let entry = state.entry(&vol)?;
    blocking(move || entry.remove_child(&name)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// The most ranges one `GET .../damage` lists; past it the answer says
/// `truncated` (the bytes are counted in full).
pub(crate) const MAX_DAMAGE_RANGES: usize = 10_000;

/// The damaged ranges of a child.
///
/// The ranges of lost votes and failed reads not repaired yet: `{"child", "damaged_bytes", "ranges": [{offset, length}],
/// "truncated"}`, at most [`MAX_DAMAGE_RANGES`] ranges, in order.
#[utoipa::path(
    get,
    path = "/v1/volumes/{vol}/children/{name}/damage",
    tag = "children",
    params(VolumeName, ("name" = String, Path, description = "The child's name")),
    responses((status = 200, description = "The child's damaged ranges", body = Damage), ChildErrors),
)]
pub(super) async fn child_damage(
    State(state): State<Arc<AppState>>,
    Path((vol, name)): Path<(String, String)>,
) -> Result<axum::Json<Damage>, ApiError> {
    let entry = state.entry(&vol)?;
    let damage = entry
        .volume()
        .damage(&name, MAX_DAMAGE_RANGES)
        .ok_or_else(|| ApiError::NoSuchChild(format!("volume {vol:?} has no child {name:?}")))?;
    let ranges = damage
        .ranges
        .iter()
        .map(|r| ByteRange {
            offset: r.start,
            length: r.end - r.start,
        })
        .collect();
    Ok(axum::Json(Damage {
        child: name,
        damaged_bytes: damage.bytes,
        ranges,
        truncated: damage.truncated,
    }))
}

/// A child's damaged ranges.
#[derive(Serialize, ToSchema)]
pub(super) struct Damage {
    /// The child's name.
    child: String,
    /// Its damaged bytes, all counted.
    damaged_bytes: u64,
    /// The ranges, in order (a bounded number of them).
    ranges: Vec<ByteRange>,
    /// Whether more ranges were left out.
    truncated: bool,
}

/// A range of bytes of the volume.
#[derive(Serialize, ToSchema)]
pub(super) struct ByteRange {
    /// Where it starts.
    offset: u64,
    /// How many bytes.
    length: u64,
}
