//! A volume's children: add one (it syncs before it votes), remove one,
//! list the ranges of one that are damaged.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::extract::{VolumeName, read_control_body};
use crate::bridge::blocking;
use crate::error::ApiError;

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
        axum::Json(json!({
            "name": child.name,
            "uri": shown_uri,
            "backend": child.backend,
            "state": child.state.as_str(),
            "stale_bytes": child.stale_bytes,
            "damaged_bytes": child.damaged_bytes,
        })),
    )
        .into_response())
}

/// Removes a child; 204.
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

/// The damaged ranges of a child (lost votes and failed reads not repaired
/// yet): `{"child", "damaged_bytes", "ranges": [{offset, length}],
/// "truncated"}`, at most [`MAX_DAMAGE_RANGES`] ranges, in order.
pub(super) async fn child_damage(
    State(state): State<Arc<AppState>>,
    Path((vol, name)): Path<(String, String)>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let entry = state.entry(&vol)?;
    let damage = entry
        .volume()
        .damage(&name, MAX_DAMAGE_RANGES)
        .ok_or_else(|| ApiError::NoSuchChild(format!("volume {vol:?} has no child {name:?}")))?;
    let ranges: Vec<_> = damage
        .ranges
        .iter()
        .map(|r| json!({ "offset": r.start, "length": r.end - r.start }))
        .collect();
    Ok(axum::Json(json!({
        "child": name,
        "damaged_bytes": damage.bytes,
        "ranges": ranges,
        "truncated": damage.truncated,
    })))
}
