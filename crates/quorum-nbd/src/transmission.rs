//! The transmission phase: requests pipelined, replies out of order.
//!
//! One reader (this connection's task) decodes each request header,
//! checks it ([`proto::check`]), reads a write's payload into memory taken
//! from the server's budget as its bytes arrive (so that headers alone
//! hold nothing), within the payload timeout, and starts the request in a
//! task of its own; at most [`MAX_IN_FLIGHT`] requests of a connection,
//! and [`CONNECTION_SHARE`] bytes of its reads and writes, run or wait to
//! be sent at once, so a connection holds bounded memory and leaves the
//! rest of the budget to the others. One writer task
//! owns the socket's write half and sends each reply as its request
//! completes, in completion order, flushing when it has nothing else
//! queued.
//!
//! A request the server cannot follow (bad magic, a write payload larger
//! than the maximum) ends the connection after the replies in flight; a
//! request it can follow but refuses (out of range, unknown command, bad
//! flags) gets an error reply, its payload is read and dropped, and
//! nothing is written. A payload that does not arrive within the payload
//! timeout ends the connection too. `NBD_CMD_DISC`, end of input and server shutdown
//! all stop the reader; the requests in flight complete and are answered
//! before the connection closes (an engine call cannot be cancelled
//! anyway).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    BufWriter,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::handshake::Negotiated;
use crate::proto::{self, Command, ReplyBody, RequestHeader, Session};
use crate::{Export, ExportError};

/// Requests of one connection running or waiting to be sent at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// The bytes of reads and writes one connection may have in flight at
/// once (two requests of the largest size): its share of the server's
/// budget, so that one client pipelining large requests, or not taking
/// its replies, cannot hold all of it while other connections wait.
pub const CONNECTION_SHARE: u32 = 2 * proto::MAX_PAYLOAD;
/// Descriptors in one block status reply at most.
pub const MAX_DESCRIPTORS: usize = 1 << 16;
/// What one extent of a block status reply may take while it is built and
/// sent: the engine's extent (24 bytes) and its descriptor (8 bytes). The
/// request holds this times its limit from the budget until its reply is
/// sent.
pub const BLOCK_STATUS_BYTES_PER_EXTENT: u64 = 32;

/// A reply ready to send, and what it holds until it is sent.
struct Outgoing<P> {
    cookie: u64,
    body: ReplyBody,
    _permit: Option<P>,
    _slot: Option<Slot>,
}

/// A request's place among its connection's requests in flight: one of
/// [`MAX_IN_FLIGHT`], and its bytes of the [`CONNECTION_SHARE`].
struct Slot {
    _request: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// Serves requests on `stream` until the client disconnects, breaks the
/// protocol, or `shutdown` is cancelled. A reply the client does not take
/// within `write_timeout` ends the connection, and so does a write's
/// payload that does not arrive within `payload_timeout` of its header.
///
/// # Errors
/// The socket's error, or why the client's stream could not be followed.
pub async fn serve<S, E>(
    stream: S,
    negotiated: Negotiated<E>,
    write_timeout: Duration,
    payload_timeout: Duration,
    shutdown: CancellationToken,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    E: Export,
{
    let Negotiated {
        name,
        export,
        structured,
        base_allocation,
    } = negotiated;
    let session = Session {
        size: export.size(),
        structured,
        base_allocation,
    };
    export.connections(1);
    let _gone = Gone(export.clone());
    tracing::debug!(export = %name, structured, base_allocation, "nbd transmission");

    let (rd, wr) = tokio::io::split(stream);
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let (tx, rx) = mpsc::unbounded_channel::<Outgoing<E::Permit>>();
    let broken = CancellationToken::new();
    let writer = tokio::spawn(write_replies(
        wr,
        rx,
        structured,
        write_timeout,
        broken.clone(),
    ));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let share = Arc::new(Semaphore::new(CONNECTION_SHARE as usize));

    let ended = loop {
        let mut head = [0u8; RequestHeader::SIZE];
        let read = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            () = broken.cancelled() => break Ok(()),
            read = rd.read_exact(&mut head) => read,
        };
        match read {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        }
        let header = match RequestHeader::decode(&head) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(export = %name, error = %e, "nbd: closing a connection that broke the protocol");
                break Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        };
        let request = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            slot = slots.clone().acquire_owned() => slot.map_err(io::Error::other)?,
        };
        let mut slot = Slot {
            _request: request,
            _bytes: None,
        };
        let command = match proto::check(&header, &session) {
            Ok(command) => command,
            Err(refusal) => {
                if let Err(e) = skip(&mut rd, refusal.discard, payload_timeout).await {
                    break Err(e);
                }
                tracing::debug!(export = %name, ?header, message = refusal.message, "nbd: request refused");
                let body = ReplyBody::Error {
                    errno: refusal.errno,
                    message: refusal.message.to_owned(),
                };
                let _ = tx.send(Outgoing {
                    cookie: header.cookie,
                    body,
                    _permit: None,
                    _slot: Some(slot),
                });
                if refusal.fatal {
                    break Ok(());
                }
                continue;
            }
        };
        let bytes = match command {
            Command::Read { length, .. } | Command::Write { length, .. } => length,
            _ => 0,
        };
        if bytes > 0 {
            let taken = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                taken = share.clone().acquire_many_owned(bytes.min(CONNECTION_SHARE)) => {
                    taken.map_err(io::Error::other)?
                }
            };
            slot._bytes = Some(taken);
        }
        let (data, permit) = match command {
            Command::Disconnect => break Ok(()),
            Command::Write { length, .. } => {
                match read_payload(&mut rd, &*export, length, payload_timeout).await {
                    Ok(Ok((data, permit))) => (data, Some(permit)),
                    Err(e) => break Err(e),
                    Ok(Err(e)) => {
                        let _ = tx.send(Outgoing {
                            cookie: header.cookie,
                            body: error_body(&e, true),
                            _permit: None,
                            _slot: Some(slot),
                        });
                        continue;
                    }
                }
            }
            _ => (Bytes::new(), None),
        };
        let (export, tx) = (export.clone(), tx.clone());
        tokio::spawn(async move {
            let (body, read_permit) = run(&*export, command, data).await;
            let _ = tx.send(Outgoing {
                cookie: header.cookie,
                body,
                _permit: read_permit.or(permit),
                _slot: Some(slot),
            });
        });
    };
    // The writer ends once every request in flight has sent its reply.
    drop(tx);
    match writer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(export = %name, error = %e, "nbd: replies cut short"),
        Err(e) => tracing::error!(export = %name, error = %e, "nbd: the reply writer failed"),
    }
    ended
}

/// Reads a write's `length` bytes of payload within `timeout`, taking
/// each piece from the budget as it arrives (with what is still to come
/// as its need). When the budget finds no room in time, the rest of the
/// payload is read and dropped (within `timeout` again) and the budget's
/// refusal is the answer.
///
/// # Errors
/// The socket's error; [`io::ErrorKind::TimedOut`] when the payload is
/// not all there in time; [`io::ErrorKind::UnexpectedEof`] when the
/// client closed before.
async fn read_payload<R, E>(
    rd: &mut R,
    export: &E,
    length: u32,
    timeout: Duration,
) -> io::Result<Result<(Bytes, E::Permit), ExportError>>
where
    R: AsyncBufRead + Unpin,
    E: Export,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let length = length as usize;
    let mut permit = match export.reserve(0).await {
        Ok(p) => p,
        Err(e) => {
            skip(rd, length as u32, timeout).await?;
            return Ok(Err(e));
        }
    };
    let mut data = BytesMut::new();
    while data.len() < length {
        let arrived = within(deadline, rd.fill_buf()).await?;
        if arrived.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = arrived.len().min(length - data.len());
        let held = (data.len() + n) as u64;
        let need = length as u64 - held;
        if let Err(e) = export.grow(&mut permit, held, need, deadline).await {
            let rest = length - data.len();
            drop((data, permit));
            skip(rd, rest as u32, timeout).await?;
            return Ok(Err(e));
        }
        if data.capacity() == 0 {
            data.reserve(length);
        }
        // Still buffered: this returns the same bytes at once.
        let arrived = rd.fill_buf().await?;
        data.extend_from_slice(&arrived[..n]);
        rd.consume(n);
    }
    Ok(Ok((data.freeze(), permit)))
}

/// Reads `length` bytes of a refused write's payload within `timeout`
/// and drops them.
async fn skip<R: AsyncRead + Unpin>(rd: &mut R, length: u32, timeout: Duration) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut payload = rd.take(u64::from(length));
    let copied = within(
        deadline,
        tokio::io::copy(&mut payload, &mut tokio::io::sink()),
    )
    .await?;
    if copied < u64::from(length) {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// `io`, or [`io::ErrorKind::TimedOut`] if it is not done by `deadline`.
async fn within<T>(
    deadline: tokio::time::Instant,
    io: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout_at(deadline, io).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not send a write's payload in time",
        )
    })?
}

/// Counts the connection out when it ends, however it ends.
struct Gone<E: Export>(Arc<E>);

impl<E: Export> Drop for Gone<E> {
    fn drop(&mut self) {
        self.0.connections(-1);
    }
}

/// Runs one checked request; returns the reply and the budget its data
/// (a read's bytes, a block status's extents) took, to hold until it is
/// sent.
async fn run<E: Export>(
    export: &E,
    command: Command,
    data: Bytes,
) -> (ReplyBody, Option<E::Permit>) {
    let done = |r: Result<(), ExportError>, write: bool| match r {
        Ok(()) => ReplyBody::Done,
        Err(e) => error_body(&e, write),
    };
    match command {
        Command::Read { offset, length } => {
            let permit = match export.reserve(u64::from(length)).await {
                Ok(p) => p,
                Err(e) => return (error_body(&e, false), None),
            };
            match export.read(offset, length).await {
                Ok(data) => (ReplyBody::Data { offset, data }, Some(permit)),
                Err(e) => (error_body(&e, false), None),
            }
        }
        Command::Write { offset, fua, .. } => {
            (done(export.write(offset, data, fua).await, true), None)
        }
        Command::WriteZeroes {
            offset,
            length,
            no_hole,
            fua,
        } => (
            done(
                export.write_zeroes(offset, length, no_hole, fua).await,
                true,
            ),
            None,
        ),
        Command::Trim {
            offset,
            length,
            fua,
        } => (done(export.discard(offset, length, fua).await, true), None),
        Command::Flush => (done(export.flush().await, false), None),
        Command::BlockStatus {
            offset,
            length,
            req_one,
        } => {
            let limit = if req_one { 1 } else { MAX_DESCRIPTORS };
            let permit = match export
                .reserve(limit as u64 * BLOCK_STATUS_BYTES_PER_EXTENT)
                .await
            {
                Ok(p) => p,
                Err(e) => return (error_body(&e, false), None),
            };
            match export.block_status(offset, length, limit).await {
                Ok(extents) => {
                    let mut list = proto::descriptors(
                        offset,
                        length,
                        extents.iter().map(|e| (e.offset, e.length, e.zero)),
                        limit,
                    );
                    if list.is_empty() {
                        // Status 0 ("data, contents unknown") is always true.
                        list.push(proto::Descriptor { length, flags: 0 });
                    }
                    (ReplyBody::Extents(list), Some(permit))
                }
                Err(e) => (error_body(&e, false), None),
            }
        }
        Command::Cache | Command::Disconnect => (ReplyBody::Done, None),
    }
}

fn error_body(e: &ExportError, write: bool) -> ReplyBody {
    let errno = e.errno(write);
    if errno == proto::errno::EIO {
        tracing::warn!(error = %e, "nbd: a request failed");
    }
    ReplyBody::Error {
        errno,
        message: e.to_string(),
    }
}

/// Sends replies as they come; flushes when none is queued. Cancels
/// `broken` when the socket fails, so that the reader stops too.
async fn write_replies<W, P>(
    wr: W,
    mut rx: mpsc::UnboundedReceiver<Outgoing<P>>,
    structured: bool,
    write_timeout: Duration,
    broken: CancellationToken,
) -> io::Result<()>
where
    W: AsyncWrite + Send + Unpin,
{
    let _broken = broken.drop_guard();
    let mut w = BufWriter::with_capacity(256 << 10, wr);
    let timed_out = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading replies",
        )
    };
    while let Some(out) = rx.recv().await {
        let (head, payload) = proto::encode_reply(out.cookie, &out.body, structured);
        let send = async {
            w.write_all(&head).await?;
            w.write_all(&payload).await?;
            if rx.is_empty() {
                w.flush().await?;
            }
            Ok::<_, io::Error>(())
        };
        tokio::time::timeout(write_timeout, send)
            .await
            .map_err(|_| timed_out())??;
    }
    tokio::time::timeout(write_timeout, async {
        w.flush().await?;
        w.shutdown().await
    })
    .await
    .map_err(|_| timed_out())?
}
