//! `ApiError`: every HTTP error of SPEC section 4, mapped in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quorum_backends::OpenError;
use quorum_core::{QuorumError, VolumeError};
use serde_json::json;

/// An error answer of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A malformed offset, length, Range, query or body.
    #[error("{0}")]
    BadRequest(String),
    /// A token is configured and the request does not carry it.
    #[error("a valid bearer token is required (Authorization: Bearer TOKEN)")]
    Unauthorized,
    /// A run-time child outside what the server's config allows.
    #[error("{0}")]
    Forbidden(String),
    /// A request the server does not implement (a transfer coding other
    /// than chunked).
    #[error("{0}")]
    NotImplemented(String),
    /// No volume of that name.
    #[error("no volume named {0:?}")]
    NoSuchVolume(String),
    /// No such child or job.
    #[error("{0}")]
    NoSuchChild(String),
    /// The request conflicts with the volume's state.
    #[error("{0}")]
    Conflict(String),
    /// Removing the child would leave fewer children than the threshold.
    #[error("{0}")]
    BelowThreshold(String),
    /// Removing the child would leave a range with no fresh copy.
    #[error("{0}")]
    LastCopy(String),
    /// No route for that path.
    #[error("no such path: {0}")]
    NotFound(String),
    /// The path exists, the method does not.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The body is larger than `max_request_bytes`.
    #[error("the request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: u64,
    },
    /// Wholly or partly outside the volume.
    #[error("{message}")]
    OutOfRange {
        /// What was asked.
        message: String,
        /// The volume's size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// The quorum was not reached; the answer lists every failed child.
    #[error(transparent)]
    QuorumFailure(QuorumError),
    /// A request held while its volume was suspended, and failed when it
    /// was not resumed in time: still a quorum failure, by its cause.
    #[error(transparent)]
    Unresumed(crate::suspend::Unresumed),
    /// No job of that id.
    #[error("no job {0}")]
    NoSuchJob(u64),
    /// blkverify found the children different.
    #[error("{0}")]
    BlkverifyMismatch(String),
    /// The volume stayed busy too long for a membership change.
    #[error("{0}")]
    Busy(String),
    /// The body did not arrive in time.
    #[error("the request body did not arrive in time")]
    Timeout,
    /// Something that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The status and the `code` of the error body.
    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            ApiError::NoSuchVolume(_) => (StatusCode::NOT_FOUND, "no_such_volume"),
            ApiError::NoSuchChild(_) => (StatusCode::NOT_FOUND, "no_such_child"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::BelowThreshold(_) => (StatusCode::CONFLICT, "below_threshold"),
            ApiError::LastCopy(_) => (StatusCode::CONFLICT, "last_copy"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::OutOfRange { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "out_of_range"),
            ApiError::QuorumFailure(_) | ApiError::Unresumed(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "quorum_failure")
            }
            ApiError::NoSuchJob(_) => (StatusCode::NOT_FOUND, "no_such_job"),
            ApiError::BlkverifyMismatch(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "blkverify_mismatch")
            }
            ApiError::Timeout => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::OutOfRange { size, .. } => ApiError::OutOfRange {
                message: e.to_string(),
                size,
            },
            VolumeError::Quorum(q) => ApiError::QuorumFailure(q),
            VolumeError::BlkverifyMismatch { .. } => ApiError::BlkverifyMismatch(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::io::IoError> for ApiError {
    fn from(e: crate::io::IoError) -> Self {
        use crate::io::IoError;
        match e {
            IoError::Volume(e) => e.into(),
            IoError::Unresumed(e) => ApiError::Unresumed(e),
            IoError::Bridge(e) => e,
        }
    }
}

impl From<crate::membership::MembershipError> for ApiError {
    fn from(e: crate::membership::MembershipError) -> Self {
        use crate::membership::MembershipError as M;
        match e {
            M::Blkverify | M::NameTaken(_) | M::StorageTaken { .. } | M::TooManyChildren => {
                ApiError::Conflict(e.to_string())
            }
            M::Open {
                source:
                    OpenError::NotOurs { .. } | OpenError::WrongSize { .. } | OpenError::Locked { .. },
                ..
            } => ApiError::Conflict(e.to_string()),
            M::Open {
                source: OpenError::Forbidden(_),
                ..
            } => ApiError::Forbidden(e.to_string()),
            M::BadName | M::TooLong | M::Open { .. } | M::Volume(_) | M::Rebuild(_) => {
                ApiError::BadRequest(e.to_string())
            }
            M::BelowThreshold { .. } => ApiError::BelowThreshold(e.to_string()),
            M::LastCopy { .. } => ApiError::LastCopy(e.to_string()),
            M::NoSuchChild(_) => ApiError::NoSuchChild(e.to_string()),
            M::Busy(_) | M::Closing => ApiError::Busy(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let message = self.to_string();
        if status.is_server_error() {
            tracing::error!(%status, code, %message, "request failed");
        } else {
            tracing::debug!(%status, code, %message, "request refused");
        }
        let mut body = json!({ "code": code, "message": message });
        if let ApiError::QuorumFailure(q) = &self {
            body["succeeded"] = json!(q.succeeded);
            body["threshold"] = json!(q.threshold);
            body["failures"] = q
                .failures
                .iter()
                .map(|f| json!({ "child": f.child, "error": f.error.to_string() }))
                .collect();
        }
        let mut response = (status, Json(json!({ "error": body }))).into_response();
        match &self {
            ApiError::OutOfRange { size, .. } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            // The rest of the body is not read: the connection cannot
            // carry another request, and the client must not reuse it.
            ApiError::PayloadTooLarge { .. } => {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
