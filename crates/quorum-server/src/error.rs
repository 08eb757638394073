//! `ApiError`: every HTTP error of SPEC section 4, mapped in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quorum_backends::OpenError;
use quorum_core::{QuorumError, VolumeError};

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

/// The `code` of an error answer: one per kind of error, each with its
/// HTTP status ([`ErrorCode::status`]).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    strum::IntoStaticStr,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    /// 400: a malformed offset, length, Range, query or body.
    BadRequest,
    /// 401: the bearer token is missing or wrong.
    Unauthorized,
    /// 403: a run-time child outside what the config allows.
    Forbidden,
    /// 501: a transfer coding other than one `chunked`.
    NotImplemented,
    /// 404: no volume of that name.
    NoSuchVolume,
    /// 404: no child of that name.
    NoSuchChild,
    /// 404: no job of that id.
    NoSuchJob,
    /// 409: the request conflicts with the volume's state.
    Conflict,
    /// 409: removing the child would leave fewer than the threshold.
    BelowThreshold,
    /// 409: removing the child would leave a range with no fresh copy.
    LastCopy,
    /// 404: no route for that path.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 413: the body is larger than `max_request_bytes`.
    PayloadTooLarge,
    /// 416: wholly or partly outside the volume.
    OutOfRange,
    /// 503: the quorum was not reached.
    QuorumFailure,
    /// 500: blkverify found the children different.
    BlkverifyMismatch,
    /// 408: the body did not arrive in time.
    Timeout,
    /// 503: the volume stayed busy too long for a membership change.
    Busy,
    /// 500: something that should not happen.
    Internal,
}

impl ErrorCode {
    /// The code as the error body spells it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The HTTP status of an answer with this code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::NoSuchVolume
            | ErrorCode::NoSuchChild
            | ErrorCode::NoSuchJob
            | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict | ErrorCode::BelowThreshold | ErrorCode::LastCopy => {
                StatusCode::CONFLICT
            }
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::OutOfRange => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::QuorumFailure | ErrorCode::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::BlkverifyMismatch | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// The body of every error answer: `{"error": {...}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorBody,
}

/// What went wrong: a code for programs, a message for people, and for a
/// quorum failure the children's answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The kind of error.
    pub code: ErrorCode,
    /// One line for people.
    pub message: String,
    /// `quorum_failure`: the children that succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<usize>,
    /// `quorum_failure`: the successes (or votes) needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<usize>,
    /// `quorum_failure`: every child that failed, in child order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<Vec<ChildFailureBody>>,
}

/// One child's failure in a `quorum_failure` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = ChildFailure)]
pub struct ChildFailureBody {
    /// The child's name.
    pub child: String,
    /// What went wrong on it.
    pub error: String,
}

impl ApiError {
    /// The `code` of the error body.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotImplemented(_) => ErrorCode::NotImplemented,
            ApiError::NoSuchVolume(_) => ErrorCode::NoSuchVolume,
            ApiError::NoSuchChild(_) => ErrorCode::NoSuchChild,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::BelowThreshold(_) => ErrorCode::BelowThreshold,
            ApiError::LastCopy(_) => ErrorCode::LastCopy,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::OutOfRange { .. } => ErrorCode::OutOfRange,
            ApiError::QuorumFailure(_) | ApiError::Unresumed(_) => ErrorCode::QuorumFailure,
            ApiError::NoSuchJob(_) => ErrorCode::NoSuchJob,
            ApiError::BlkverifyMismatch(_) => ErrorCode::BlkverifyMismatch,
            ApiError::Timeout => ErrorCode::Timeout,
            ApiError::Busy(_) => ErrorCode::Busy,
            ApiError::Internal(_) => ErrorCode::Internal,
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
        let code = self.code();
        let status = code.status();
        let message = self.to_string();
        if status.is_server_error() {
            tracing::error!(%status, code = code.as_str(), %message, "request failed");
        } else {
            tracing::debug!(%status, code = code.as_str(), %message, "request refused");
        }
        let mut body = ErrorBody {
            code,
            message,
            succeeded: None,
            threshold: None,
            failures: None,
        };
        if let ApiError::QuorumFailure(q) = &self {
            body.succeeded = Some(q.succeeded);
            body.threshold = Some(q.threshold);
            body.failures = Some(
                q.failures
                    .iter()
                    .map(|f| ChildFailureBody {
                        child: f.child.clone(),
                        error: f.error.to_string(),
                    })
                    .collect(),
            );
        }
        let mut response = (status, Json(ErrorResponse { error: body })).into_response();
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
