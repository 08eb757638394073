//! Answers sent in pieces of at most [`READ_CHUNK`] bytes while they hold
//! their part of the budget: the streamed read of the volume's data, and
//! JSON answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::{StreamExt, stream};
use quorum_core::Op;

use super::AppState;
use crate::budget::{Budget, Reservation};
use crate::error::ApiError;
use crate::membership::VolumeEntry;
use crate::telemetry::{Frontend, Telemetry};

/// Reads are served in pieces of this size, so memory stays bounded
/// whatever the length asked for; `max_buffered_bytes` is at least this.
pub(crate) const READ_CHUNK: usize = 1 << 20;

/// What a streamed read has left to send.
struct ReadState {
    entry: Arc<VolumeEntry>,
    telemetry: Arc<Telemetry>,
    budget: Budget,
    body_timeout: Duration,
    volume: String,
    started: Instant,
    start: u64,
    /// The next byte to read.
    at: u64,
    end: u64,
    span: u64,
    /// The span read last, not yet sent, and the budget it holds.
    pending: Option<(Bytes, Reservation)>,
}

impl ReadState {
    /// Reads the next span: budget first, then one atomic engine read
    /// through the volume's data path ([`VolumeEntry::io`]: limits, error
    /// policy, statistics) that holds the membership gate only while it
    /// reads (a span of at most [`READ_CHUNK`] started without a blocking
    /// thread where the engine can).
    ///
    /// A span longer than [`READ_CHUNK`] is read with `read_chunks`: one
    /// range lock from its first piece to its last (so it is as atomic as
    /// one read, SPEC 8.1), in pieces of [`READ_CHUNK`] appended to the one
    /// buffer the budget paid for. Read whole, every child would fill a
    /// buffer of the span's size besides: memory (children + 1) times the
    /// reservation.
    async fn read_span(&mut self) -> Result<(), ApiError> {
        let n = self.span.min(self.end - self.at);
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        let reservation = self.budget.reserve(n, deadline).await?;
        let (entry, at) = (self.entry.clone(), self.at);
        let len = usize::try_from(n).map_err(|e| ApiError::Internal(e.to_string()))?;
        let bytes = if len <= READ_CHUNK {
            entry
                .io_started(
                    Op::Read,
                    n,
                    &move |v, done| v.start_read(at, len, done),
                    move |v| v.read(at, len),
                )
                .await?
        } else {
            entry
                .io(Op::Read, n, move |v| {
                    let mut buf = bytes::BytesMut::with_capacity(len);
                    v.read_chunks(at, n, READ_CHUNK, |piece| {
                        buf.extend_from_slice(&piece);
                        true
                    })?;
                    Ok(buf.freeze())
                })
                .await?
        };
        self.at += n;
        if self.at == self.end {
            // Counted before the client can have the last byte.
            self.telemetry.request(
                &self.volume,
                Frontend::Http,
                Op::Read,
                self.end - self.start,
                self.started.elapsed(),
            );
        }
        self.pending = Some((bytes, reservation));
        Ok(())
    }

    /// The next piece of at most [`READ_CHUNK`] bytes to send, if any.
    async fn next_piece(&mut self) -> Result<Option<Bytes>, ApiError> {
        if self.pending.as_ref().is_none_or(|(b, _)| b.is_empty()) {
            self.pending = None;
            if self.at == self.end {
                return Ok(None);
            }
            self.read_span().await?;
        }
        let Some((bytes, _)) = self.pending.as_mut() else {
            return Ok(None);
        };
        Ok(Some(bytes.split_to(READ_CHUNK.min(bytes.len()))))
    }
}

impl Drop for ReadState {
    /// A read cut short (a failure, a client gone) counts what it read.
    fn drop(&mut self) {
        if self.at < self.end {
            self.telemetry.request(
                &self.volume,
                Frontend::Http,
                Op::Read,
                self.at - self.start,
                self.started.elapsed(),
            );
        }
    }
}

/// Reads `offset..offset+length` as a streamed body, `span` bytes at a
/// time: each span is one atomic read (SPEC 8.1) into a buffer taken from
/// the budget, sent in pieces; nothing (thread, gate, lock) is held while
/// the client takes it, and a client that takes nothing for `body_timeout`
/// is dropped by the connection's write timeout. The first span is read
/// before the answer starts, so that a failure there gets its proper
/// status; a failure later cuts the body short.
pub(super) async fn stream_read(
    state: &AppState,
    entry: Arc<VolumeEntry>,
    volume: &str,
    offset: u64,
    length: u64,
    span: u64,
) -> Result<Body, ApiError> {
    let mut read = ReadState {
        entry,
        telemetry: state.telemetry.clone(),
        budget: state.budget.clone(),
        body_timeout: state.body_timeout,
        volume: volume.to_owned(),
        started: Instant::now(),
        start: offset,
        at: offset,
        end: offset + length,
        span,
        pending: None,
    };
    if length == 0 {
        return Ok(Body::empty());
    }
    let first = read.next_piece().await?;
    if read.at == read.end && read.pending.as_ref().is_none_or(|(b, _)| b.is_empty()) {
        return Ok(first.map_or_else(Body::empty, Body::from));
    }
    let rest = stream::try_unfold(read, |mut read| async move {
        let piece = read.next_piece().await.map_err(|e| {
            tracing::error!(error = %e, "a streamed read failed after the answer started");
            std::io::Error::other(e.to_string())
        })?;
        Ok::<_, std::io::Error>(piece.map(|p| (p, read)))
    });
    Ok(Body::from_stream(stream::iter(first.map(Ok)).chain(rest)))
}

/// A JSON answer that holds `reservation` until the connection has taken
/// its last piece (or is gone).
pub(super) fn json_answer(json: Bytes, reservation: Reservation) -> Response {
    let len = json.len();
    let pieces = stream::unfold(Some((json, reservation)), |state| async move {
        let (mut rest, reservation) = state?;
        if rest.is_empty() {
            drop(reservation);
            return None;
        }
        let piece = rest.split_to(READ_CHUNK.min(rest.len()));
        Some((Ok::<_, Infallible>(piece), Some((rest, reservation))))
    });
    let mut response = Response::new(Body::from_stream(pieces));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}
