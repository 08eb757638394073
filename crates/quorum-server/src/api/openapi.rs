//! The OpenAPI 3.1 description of the API, generated from the code: each
//! handler's `#[utoipa::path]` (path, methods, parameters, answers, and the
//! errors it may give by code) and the `ToSchema` types of the bodies.
//! Served at `GET /v1/openapi.json`.
//!
//! The router and the description are one list: a handler joins the
//! router only through `utoipa_axum::routes!` in [`super::api_routes`],
//! which takes its path and methods from its `#[utoipa::path]`. A test
//! walks the router's routes against the description.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response as OpenApiResponse, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};
use utoipa::{Modify, ToSchema};

use crate::error::{ApiError, ErrorCode, ErrorResponse};

/// The name of the bearer token's security scheme (also spelled out in
/// `ApiDoc`'s `security`, which takes a literal).
const BEARER: &str = "bearer_token";

/// What the description holds before the routes add their paths: its
/// info, the token's scheme (required by every operation that does not
/// say `security(())`), and the error body.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "quorum",
        description = "Keeps a virtual disk on several replicas (children) and votes on \
                       every read. Every error answer is `{\"error\": {\"code\", \"message\"}}`; \
                       each operation lists the codes it may give."
    ),
    modifiers(&BearerToken),
    security(("bearer_token" = [])),
    components(schemas(ErrorResponse))
)]
pub(super) struct ApiDoc;

/// Adds the bearer token's security scheme.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut OpenApi) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "`Authorization: Bearer TOKEN`, when the server has a token ([auth] or \
             QUORUM_TOKEN); without one, no operation needs it."
                .to_owned(),
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(http));
    }
}

/// Completes the description the routes built: an operation that needs
/// the token (it keeps the document's security) may answer 401.
pub(super) fn finish(openapi: &mut OpenApi) {
    let unauthorized = error_responses(&[ErrorCode::Unauthorized]);
    for item in openapi.paths.paths.values_mut() {
        for operation in operations(item) {
            if operation.security.is_none() {
                operation.responses.responses.extend(unauthorized.clone());
            }
        }
    }
}

/// The operations of a path, whatever their method.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The error answers of `codes`, by status: each is the error body with
/// its `code` narrowed to the codes of that status, listed in its
/// description too.
fn error_responses(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<OpenApiResponse>> {
    let mut by_status: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
    for code in codes {
        by_status
            .entry(code.status().as_u16())
            .or_default()
            .push(code.as_str());
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let listed: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
            let code = ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes));
            let narrowed =
                ObjectBuilder::new().property("error", ObjectBuilder::new().property("code", code));
            let schema = AllOfBuilder::new()
                .item(Ref::from_schema_name(ErrorResponse::name()))
                .item(narrowed);
            let response = ResponseBuilder::new()
                .description(format!("An error: code {}", listed.join(" or ")))
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// Declares types that list the errors of a kind of request, for the
/// `responses(...)` of `#[utoipa::path]`.
macro_rules! errors {
    ($($(#[$doc:meta])* $name:ident = [$($code:ident),+ $(,)?];)*) => {$(
        $(#[$doc])*
        pub(super) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<OpenApiResponse>> {
                error_responses(&[$(ErrorCode::$code),+])
            }
        }
    )*};
}

errors! {
    /// A request about one volume.
    VolumeErrors = [BadRequest, NoSuchVolume];
    /// A read of the volume's bytes.
    ReadErrors = [BadRequest, NoSuchVolume, OutOfRange, QuorumFailure, Busy, BlkverifyMismatch, Internal];
    /// A write of bytes in the body.
    WriteErrors = [
        BadRequest, NoSuchVolume, OutOfRange, PayloadTooLarge, Timeout, NotImplemented,
        QuorumFailure, Busy, Internal,
    ];
    /// A write of zeroes or a discard.
    ZeroErrors = [BadRequest, NoSuchVolume, OutOfRange, QuorumFailure, Internal];
    /// A flush.
    FlushErrors = [BadRequest, NoSuchVolume, QuorumFailure, Internal];
    /// A block status.
    BlockStatusErrors = [BadRequest, NoSuchVolume, OutOfRange, QuorumFailure, Busy, Internal];
    /// The start of a scrub.
    ScrubErrors = [BadRequest, NoSuchVolume, Conflict, PayloadTooLarge, Timeout, NotImplemented, Busy];
    /// The addition of a child.
    AddChildErrors = [
        BadRequest, Forbidden, NoSuchVolume, Conflict, PayloadTooLarge, Timeout, NotImplemented,
        Busy, Internal,
    ];
    /// The removal of a child.
    RemoveChildErrors = [
        BadRequest, NoSuchVolume, NoSuchChild, Conflict, BelowThreshold, LastCopy, Busy, Internal,
    ];
    /// A request about one child.
    ChildErrors = [BadRequest, NoSuchVolume, NoSuchChild];
    /// A request about one job.
    JobErrors = [BadRequest, NoSuchVolume, NoSuchJob];
    /// The cancel of a job.
    CancelJobErrors = [BadRequest, NoSuchVolume, NoSuchJob, Conflict];
    /// A control request with a JSON body.
    ControlBodyErrors = [BadRequest, NoSuchVolume, PayloadTooLarge, Timeout, NotImplemented, Busy];
    /// A resume.
    ResumeErrors = [BadRequest, NoSuchVolume, Conflict];
    /// A page of events.
    EventsErrors = [BadRequest, Busy];
    /// A volume's I/O history.
    HistoryErrors = [BadRequest, NoSuchVolume];
    /// The event stream.
    StreamErrors = [BadRequest];
}

/// The description as JSON, made once.
static DOCUMENT: LazyLock<Result<String, String>> =
    LazyLock::new(|| super::openapi().to_json().map_err(|e| e.to_string()));

/// This description: OpenAPI 3.1, generated from the code.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "status",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", body = Object)),
)]
pub(super) async fn openapi_json() -> Result<Response, ApiError> {
    let json = DOCUMENT
        .as_ref()
        .map_err(|e| ApiError::Internal(e.clone()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response())
}
