//! `GET /v1/volumes/{vol}/block-status`: which extents of a range read as
//! zeroes, in pages.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use quorum_core::{Extent, Op};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{ApiQuery, VolumeName, timed};
use super::openapi::BlockStatusErrors;
use super::stream::json_answer;
use crate::error::ApiError;

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

/// The range to describe, and the most extents to answer.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct BlockStatusQuery {
    /// The first byte.
    offset: u64,
    /// How many bytes.
    length: u64,
    /// The most extents to answer (a default and a maximum apply).
    #[param(minimum = 1)]
    limit: Option<usize>,
}

/// One extent of a block status answer. Its JSON is written by hand
/// ([`extents_json`], in a buffer that never grows): this type only
/// describes it, and a test reads that JSON back through it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Extent)]
#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct ExtentDoc {
    /// Where it starts.
    offset: u64,
    /// How many bytes.
    length: u64,
    /// Whether it reads as zeroes.
    zero: bool,
}

/// Which extents of a range read as zeroes, in pages.
///
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
#[utoipa::path(
    get,
    path = "/v1/volumes/{vol}/block-status",
    tag = "data",
    params(VolumeName, BlockStatusQuery),
    responses(
        (status = 200, description = "The extents, in order", body = Vec<ExtentDoc>,
            headers(("Quorum-Next-Offset" = u64, description = "Where the next page starts, when the answer was cut short"))),
        BlockStatusErrors,
    ),
)]
pub(super) async fn block_status(
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
    let extents = timed(&state, &entry, &vol, Op::BlockStatus, 0, move |v| {
        v.block_status(q.offset, q.length, limit)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written JSON is what the description says an extent is.
    #[test]
    fn extents_json_reads_back_as_the_described_extent() {
        let extents = [
            Extent {
                offset: 0,
                length: 4096,
                zero: false,
            },
            Extent {
                offset: 4096,
                length: u64::MAX - 4096,
                zero: true,
            },
        ];
        let json = extents_json(&extents);
        let read: Vec<ExtentDoc> = serde_json::from_slice(&json).expect("extents as described");
        assert_eq!(read.len(), 2);
        assert_eq!(
            (read[1].offset, read[1].length, read[1].zero),
            (4096, u64::MAX - 4096, true)
        );
        assert!(json.len() <= 2 + extents.len() * MAX_EXTENT_JSON);
    }
}
