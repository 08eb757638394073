//! Requests written by hand on a socket, body piece by piece while the
//! answer is read, and how each ended ([`Outcome`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

/// How a hand-made request ended.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The status, when an answer's head arrived.
    pub(crate) status: Option<u16>,
    /// The answer's body, as far as it came.
    pub(crate) body: Vec<u8>,
    /// The server closed (EOF or reset) before a whole answer, or the
    /// connection could not be made.
    pub(crate) closed: bool,
    /// Body bytes the server took.
    pub(crate) sent: u64,
    /// From the connect to the whole answer, the close or the limit.
    pub(crate) took: Duration,
}

impl Outcome {
    /// The `error.code` of a JSON error body, or "".
    pub(crate) fn code(&self) -> String {
        error_code(&self.body)
    }

    pub(crate) fn is(&self, status: u16, code: &str) -> bool {
        self.status == Some(status) && self.code() == code
    }

    /// For messages: status, code, or how it ended.
    pub(crate) fn summary(&self) -> String {
        match self.status {
            Some(s) => format!("{s} {} after {:?}", self.code(), self.took),
            None if self.closed => format!("closed without an answer after {:?}", self.took),
            None => format!("no answer within {:?}", self.took),
        }
    }
}

/// Sends `head`, then `body_len` body bytes made by `fill(offset, buf)`,
/// while reading the answer: a server may answer (and close) before it has
/// read the body. The body is made piece by piece, so that 64 uploads of
/// 64 MiB cost the test little memory. Gives up after `limit`. Adds every
/// body byte the server took to `progress`.
pub(crate) fn send_request(
    addr: SocketAddr,
    head: &[u8],
    body_len: u64,
    fill: &(dyn Fn(u64, &mut [u8]) + Sync),
    progress: &AtomicU64,
    limit: Duration,
) -> Outcome {
    let started = Instant::now();
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return Outcome {
            closed: true,
            took: started.elapsed(),
            ..Outcome::default()
        };
    };
    let timeouts = stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_millis(200))));
    timeouts.expect("set socket timeouts");
    let writer = stream.try_clone().expect("clone a socket");
    let done = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let mut outcome = thread::scope(|s| {
        s.spawn(|| {
            write_body(
                writer,
                head,
                body_len,
                fill,
                &done,
                &sent,
                progress,
                started + limit,
            )
        });
        let mut reader = &stream;
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let mut outcome = Outcome::default();
        while started.elapsed() < limit {
            match reader.read(&mut buf) {
                Ok(0) => {
                    outcome.closed = true;
                    break;
                }
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    let whole = parse_answer(&got, false).ok().flatten().filter(|a| a.whole);
                    if let Some(answer) = whole {
                        outcome.status = Some(answer.head.status);
                        outcome.body = answer.body;
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    outcome.closed = true;
                    break;
                }
            }
        }
        if outcome.status.is_none() {
            // A head without its whole body still tells the status.
            outcome.status = parse_response_head(&got).ok().flatten().map(|h| h.status);
        }
        outcome.took = started.elapsed();
        done.store(true, Ordering::Relaxed);
        let _ = stream.shutdown(Shutdown::Both);
        outcome
    });
    outcome.sent = sent.load(Ordering::Relaxed);
    outcome
}

/// The writing half of [`send_request`]: writes until everything is sent,
/// `done` is set, the socket fails or `until` passes.
#[allow(clippy::too_many_arguments)]
fn write_body(
    mut stream: TcpStream,
    head: &[u8],
    body_len: u64,
    fill: &(dyn Fn(u64, &mut [u8]) + Sync),
    done: &AtomicBool,
    sent: &AtomicU64,
    progress: &AtomicU64,
    until: Instant,
) {
    const PIECE: u64 = 256 * KIB;
    let mut piece = vec![0u8; PIECE as usize];
    let mut head_at = 0;
    let mut body_at = 0u64; // body bytes written
    let mut piece_at = 0usize; // of the current piece
    let mut piece_len = 0usize;
    while !done.load(Ordering::Relaxed) && Instant::now() < until {
        let chunk: &[u8] = if head_at < head.len() {
            &head[head_at..]
        } else {
            if piece_at == piece_len {
                if body_at == body_len {
                    return;
                }
                piece_len = PIECE.min(body_len - body_at) as usize;
                fill(body_at, &mut piece[..piece_len]);
                piece_at = 0;
            }
            &piece[piece_at..piece_len]
        };
        match stream.write(chunk) {
            Ok(0) => return,
            Ok(n) if head_at < head.len() => head_at += n,
            Ok(n) => {
                piece_at += n;
                body_at += n as u64;
                sent.fetch_add(n as u64, Ordering::Relaxed);
                progress.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// A whole small request (head and body at once) on a fresh connection.
pub(crate) fn exchange(server: &Server, request: &[u8], limit: Duration) -> Outcome {
    send_request(
        server.addr(),
        request,
        0,
        &|_, _| {},
        &AtomicU64::new(0),
        limit,
    )
}

/// `GET /healthz` on a fresh connection: 200 within a second.
#[track_caller]
pub(crate) fn assert_served(server: &Server, target: &str, what: &str) {
    let o = exchange(
        server,
        &request_head(server, "GET", target, &[]),
        Duration::from_secs(5),
    );
    assert_eq!(o.status, Some(200), "{what}: GET {target}: {}", o.summary());
    assert!(
        o.took < Duration::from_secs(1),
        "{what}: GET {target} took {:?}",
        o.took
    );
}
