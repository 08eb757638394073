//! The access log: one line per HTTP request at `info`, target
//! [`TARGET`], with the method, the path (never the query, nor a header:
//! no token can reach the log), the status, the bytes of the answer's body
//! and the time from the request to the answer's last byte. It is written
//! when the answer has been sent, or dropped (`complete` says which: a
//! client that went away, a stream cut by shutdown), so a long read or an
//! event stream is logged when it ends.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// The target of access log lines (`RUST_LOG=info,quorum::access=off`
/// silences them).
pub const TARGET: &str = "quorum::access";

/// Logs each request once its answer's body is done (see the module docs).
pub(super) async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let (parts, body) = response.into_parts();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = Body::new(Logged {
        inner: body,
        bytes: 0,
        length,
        ended: false,
        line: Some(Line {
            method,
            path,
            status,
            started,
        }),
    });
    Response::from_parts(parts, body)
}

/// What one access line says besides the bytes.
struct Line {
    method: Method,
    path: String,
    status: StatusCode,
    started: Instant,
}

/// An answer's body that counts its bytes and writes the access line when
/// it is done or dropped.
struct Logged {
    inner: Body,
    bytes: u64,
    /// The answer's `Content-Length`: a body that has sent that many bytes
    /// is complete, though it may not say so before hyper drops it.
    length: Option<u64>,
    /// Whether the body said it had no more.
    ended: bool,
    /// Taken when the line is written.
    line: Option<Line>,
}

impl Logged {
    fn write_line(&mut self) {
        let Some(line) = self.line.take() else {
            return;
        };
        let complete = self.ended || self.inner.is_end_stream() || self.length == Some(self.bytes);
        // Microseconds are enough, and print short.
        let duration_ms = line.started.elapsed().as_micros() as f64 / 1e3;
        tracing::info!(
            target: TARGET,
            method = line.method.as_str(),
            path = line.path.as_str(),
            status = line.status.as_u16(),
            bytes = self.bytes,
            duration_ms,
            complete,
            "request"
        );
    }
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.write_line();
            }
            Poll::Ready(Some(Err(_))) => this.write_line(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.write_line();
    }
}
