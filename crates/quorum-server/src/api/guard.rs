//! What runs before every route: auth, and the transfer codings a request
//! body may come in.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::dashboard;
use crate::error::ApiError;

/// The paths a liveness or readiness probe calls without a token.
const OPEN_PROBES: [&str; 2] = ["/healthz", "/readyz"];

/// Requires `Authorization: Bearer TOKEN` when a token is configured: the
/// scheme in any case (RFC 9110), the credentials exactly, compared in
/// constant time. The probes ([`OPEN_PROBES`]) and the dashboard's files
/// are open.
pub(super) async fn auth(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let path = request.uri().path();
        if !OPEN_PROBES.contains(&path) && !dashboard::is_asset(path) {
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
pub(super) async fn transfer_codings(request: Request, next: Next) -> Response {
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
