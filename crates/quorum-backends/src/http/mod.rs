//! `http`: a child that is a volume on another quorum-server, reached
//! through its HTTP API (SPEC section 4): reads with `Range`, writes with
//! `PUT`, and write-zeroes, discard, flush and block status through their
//! endpoints (block status page by page, following `Quorum-Next-Offset`).
//!
//! The client keeps connections alive and allows several requests in
//! flight; connect and request timeouts are bounded, so a dead or hung
//! remote becomes a child error within seconds. Remote errors map to child
//! errors: a `503 quorum_failure` is an I/O error of this child (the remote
//! quorum could not serve it), a `401` says the token is wrong, a `416` is
//! a bug on our side and says so. A remote without the discard route (a
//! quorum-server from before it) gets write-zeroes instead, which read the
//! same.
//!
//! Options: `token` (the remote's bearer token), `timeout` (per request,
//! default 5s) and `connect_timeout` (default 2s), as durations like "500ms".

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quorum_core::{Backend, BackendError, Extent};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{CONTENT_LENGTH, RANGE};
use serde::Deserialize;

use crate::{Confinement, OpenError};

/// Per-request timeout unless the `timeout` option says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect timeout unless the `connect_timeout` option says otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests in flight per remote child.
const IN_FLIGHT: usize = 16;
/// The most extents asked of the remote in one page of block status (the
/// server's default page): each answer stays a few MiB of JSON, and a
/// longer list is followed page by page.
const REMOTE_PAGE_MAX: usize = 1 << 16;
/// The header of a block status page cut short: where the next one starts.
const NEXT_OFFSET: &str = "quorum-next-offset";
/// The error code of a quorum-server's `404` for a route it does not have
/// (SPEC section 4), as opposed to `no_such_volume`.
const ROUTE_NOT_FOUND: &str = "not_found";

/// A child on a remote quorum-server volume.
pub struct HttpBackend {
    /// `http://host:port/v1/volumes/NAME`, without credentials.
    base: String,
    client: Client,
    token: Option<String>,
    timeout: Duration,
    size: u64,
    /// The remote has no discard route: discards go as write-zeroes.
    no_discard: AtomicBool,
}

#[derive(Deserialize)]
struct RemoteExtent {
    offset: u64,
    length: u64,
    zero: bool,
}

impl HttpBackend {
    /// Connects to the remote volume at `uri`, learns its size with `HEAD`,
    /// and checks it against `size` when one is given.
    ///
    /// A child added at run time (`confine`) must name an allowed server,
    /// with a uri that is exactly `http[s]://host[:port]/v1/volumes/NAME`,
    /// and timeouts of at most [`crate::confine::MAX_TIMEOUT`].
    pub fn open(
        uri: &str,
        options: &BTreeMap<String, String>,
        size: Option<u64>,
        confine: Option<&Confinement>,
    ) -> Result<HttpBackend, OpenError> {
        let mut token = None;
        let mut timeout = DEFAULT_TIMEOUT;
        let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
        for (key, value) in options {
            match key.as_str() {
                "token" => token = Some(value.clone()),
                "timeout" => timeout = duration(key, value)?,
                "connect_timeout" => connect_timeout = duration(key, value)?,
                _ => {
                    return Err(OpenError::UnknownOption {
                        option: key.clone(),
                        backend: "http",
                    });
                }
            }
        }
        let url = reqwest::Url::parse(uri).map_err(|e| OpenError::BadUri {
            uri: crate::redact_uri(uri),
            problem: e.to_string(),
        })?;
        if let Some(confine) = confine {
            confine.endpoint(uri)?;
            confine.timeout("timeout", timeout)?;
            confine.timeout("connect_timeout", connect_timeout)?;
            let segments: Vec<&str> = url
                .path_segments()
                .map(Iterator::collect)
                .unwrap_or_default();
            let plain = url.query().is_none()
                && url.fragment().is_none()
                && matches!(segments.as_slice(), ["v1", "volumes", name] if name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) && !name.is_empty() && *name != "." && *name != "..");
            if !plain {
                return Err(OpenError::Forbidden(format!(
                    "{:?} must be exactly http[s]://host[:port]/v1/volumes/NAME for a child added at run time",
                    crate::redact_uri(uri)
                )));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(OpenError::BadUri {
                uri: crate::redact_uri(uri),
                problem: "put the token in the child's options, not in the uri".into(),
            });
        }
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            .pool_max_idle_per_host(IN_FLIGHT)
            .tcp_nodelay(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OpenError::Remote {
                uri: uri.to_owned(),
                problem: format!("cannot build an HTTP client: {e}"),
            })?;
        let mut backend = HttpBackend {
            base: uri.trim_end_matches('/').to_owned(),
            client,
            token,
            timeout,
            size: 0,
            no_discard: AtomicBool::new(false),
        };
        let remote = backend
            .remote_size()
            .map_err(|e| OpenError::remote(&backend.base, e, ""))?;
        if let Some(expected) = size {
            if remote != expected {
                return Err(OpenError::Remote {
                    uri: backend.base.clone(),
                    problem: format!(
                        "the remote volume has {remote} bytes but this volume has {expected}"
                    ),
                });
            }
        }
        backend.size = remote;
        Ok(backend)
    }

    fn request(&self, builder: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        }
    }

    /// Sends a request and turns any failure into this child's error.
    fn send(&self, builder: RequestBuilder, expect: StatusCode) -> Result<Response, BackendError> {
        let response = self
            .request(builder)
            .send()
            .map_err(|e| self.transport_error(&e))?;
        if response.status() == expect {
            return Ok(response);
        }
        Err(self.status_error(response))
    }

    fn transport_error(&self, e: &reqwest::Error) -> BackendError {
        if e.is_timeout() {
            BackendError::Timeout(self.timeout)
        } else if e.is_connect() {
            BackendError::Unavailable(format!(
                "cannot connect to {}: {}",
                self.base,
                source_chain(e)
            ))
        } else {
            BackendError::Unavailable(format!("{}: {}", self.base, source_chain(e)))
        }
    }

    fn status_error(&self, response: Response) -> BackendError {
        let status = response.status();
        let body = response.json::<serde_json::Value>().unwrap_or_default();
        self.error_of(status, &body)
    }

    /// The child error of a remote's answer `status` with JSON `body`.
    fn error_of(&self, status: StatusCode, body: &serde_json::Value) -> BackendError {
        let message = body["error"]["message"].as_str().unwrap_or_default();
        match status {
            StatusCode::UNAUTHORIZED => BackendError::Refused(format!(
                "401 unauthorized from {}: the child's token option is wrong or missing",
                self.base
            )),
            StatusCode::RANGE_NOT_SATISFIABLE => BackendError::Refused(format!(
                "416 from {}: a request outside the remote volume, a bug in quorum: {message}",
                self.base
            )),
            StatusCode::NOT_FOUND => {
                BackendError::Refused(format!("404 from {}: {message}", self.base))
            }
            s if s.is_server_error() => BackendError::Io(io::Error::other(format!(
                "{} from {}: {message}",
                s.as_u16(),
                self.base
            ))),
            s => BackendError::Refused(format!("{} from {}: {message}", s.as_u16(), self.base)),
        }
    }

    fn remote_size(&self) -> Result<u64, BackendError> {
        let response = self.send(self.client.head(self.data_url()), StatusCode::OK)?;
        response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                BackendError::Refused(format!(
                    "{} answered HEAD without a Content-Length",
                    self.base
                ))
            })
    }

    fn check(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        BackendError::check_range(offset, length, self.size)
    }

    /// `POST {base}/{route}?offset=&length=`, answered `204`.
    fn post_range(&self, route: &str, offset: u64, length: u64) -> Result<(), BackendError> {
        self.check(offset, length)?;
        let url = format!("{}/{route}?offset={offset}&length={length}", self.base);
        self.send(self.client.post(url), StatusCode::NO_CONTENT)
            .map(drop)
    }

    fn data_url(&self) -> String {
        format!("{}/data", self.base)
    }
}

fn duration(key: &str, value: &str) -> Result<Duration, OpenError> {
    humantime::parse_duration(value).map_err(|e| OpenError::BadOption {
        option: key.to_owned(),
        problem: format!("{value:?} is not a duration: {e}"),
    })
}

/// An error with its sources, for messages that say what really failed.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl fmt::Display for HttpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http({})", self.base)
    }
}

impl Backend for HttpBackend {
    /// The remote server's origin and the volume's path, normalized (dot
    /// segments resolved, escapes decoded): one remote volume reached under
    /// two spellings is one copy.
    fn identity(&self) -> String {
        match reqwest::Url::parse(&self.base) {
            Ok(url) => {
                let path = percent_encoding::percent_decode_str(url.path()).decode_utf8_lossy();
                format!(
                    "http:{}{}",
                    url.origin().ascii_serialization(),
                    path.trim_end_matches('/')
                )
            }
            Err(_) => self.to_string(),
        }
    }

    fn kind(&self) -> &'static str {
        "http"
    }

    fn size(&self) -> Result<u64, BackendError> {
        Ok(self.size)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.check(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let last = offset + buf.len() as u64 - 1;
        let range = format!("bytes={offset}-{last}");
        let response = self.send(
            self.client.get(self.data_url()).header(RANGE, range),
            StatusCode::PARTIAL_CONTENT,
        )?;
        let body = response.bytes().map_err(|e| self.transport_error(&e))?;
        if body.len() != buf.len() {
            return Err(BackendError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} sent {} bytes for a read of {}",
                    self.base,
                    body.len(),
                    buf.len()
                ),
            )));
        }
        buf.copy_from_slice(&body);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.check(offset, buf.len() as u64)?;
        let url = format!("{}?offset={offset}", self.data_url());
        self.send(
            self.client.put(url).body(buf.to_vec()),
            StatusCode::NO_CONTENT,
        )
        .map(drop)
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.post_range("write-zeroes", offset, length)
    }

    /// Forwarded: the remote volume's children free the space. A remote
    /// that has no discard route (`405`, or `404 not_found` rather than
    /// `no_such_volume`) gets write-zeroes, now and from then on, so that
    /// a child on an older server is not failed by every discard.
    fn discard(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        if !self.no_discard.load(Ordering::Relaxed) {
            self.check(offset, length)?;
            let url = format!("{}/discard?offset={offset}&length={length}", self.base);
            let response = self
                .request(self.client.post(url))
                .send()
                .map_err(|e| self.transport_error(&e))?;
            let status = response.status();
            if status == StatusCode::NO_CONTENT {
                return Ok(());
            }
            let body = response.json::<serde_json::Value>().unwrap_or_default();
            let no_route = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND
                    && body["error"]["code"].as_str() == Some(ROUTE_NOT_FOUND));
            if !no_route {
                return Err(self.error_of(status, &body));
            }
            tracing::warn!(remote = %self.base, "the remote server has no discard route (an older quorum-server): discards are sent as write-zeroes");
            self.no_discard.store(true, Ordering::Relaxed);
        }
        self.write_zeroes(offset, length)
    }

    fn flush(&self) -> Result<(), BackendError> {
        let url = format!("{}/flush", self.base);
        self.send(self.client.post(url), StatusCode::NO_CONTENT)
            .map(drop)
    }

    /// Follows the remote's pages (`Quorum-Next-Offset`) until `limit`
    /// extents are finished or the range is covered. A server that does
    /// not page answers the whole range at once, without the header.
    fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        self.check(offset, length)?;
        let end = offset + length;
        let mut extents: Vec<Extent> = Vec::new();
        let mut at = offset;
        while at < end && extents.len() <= limit {
            // One more than needed, to see that the last one is finished.
            let want = (limit - extents.len())
                .saturating_add(1)
                .min(REMOTE_PAGE_MAX);
            let url = format!(
                "{}/block-status?offset={at}&length={}&limit={want}",
                self.base,
                end - at
            );
            let response = self.send(self.client.get(url), StatusCode::OK)?;
            let next = match response.headers().get(NEXT_OFFSET) {
                None => None,
                Some(value) => Some(
                    value
                        .to_str()
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| {
                            BackendError::Refused(format!(
                                "{} sent a malformed {NEXT_OFFSET} header: {value:?}",
                                self.base
                            ))
                        })?,
                ),
            };
            let page: Vec<RemoteExtent> = response.json().map_err(|e| {
                BackendError::Refused(format!("{} sent a bad block status: {e}", self.base))
            })?;
            for e in page {
                Extent::append(
                    &mut extents,
                    Extent {
                        offset: e.offset,
                        length: e.length,
                        zero: e.zero,
                    },
                );
            }
            let Some(next) = next else { break };
            // The next page starts where this one ends, further on: else
            // following it could go round forever.
            if next <= at || next > end || extents.last().map(Extent::end) != Some(next) {
                return Err(BackendError::Refused(format!(
                    "{} sent a block status page of {at}..{end} that does not end at its {NEXT_OFFSET} {next}",
                    self.base
                )));
            }
            at = next;
        }
        extents.truncate(limit);
        Ok(extents)
    }

    fn max_in_flight(&self) -> usize {
        IN_FLIGHT
    }
}

#[cfg(test)]
mod tests;
