//! Issue 8: reliability and hostile input. A server killed under a write
//! load, a torn event log, many clients on overlapping blocks, slow and
//! failing children, hostile HTTP input, and secrets. `RELIABILITY.md` at
//! the repository root maps every fault to its test (here or elsewhere).
//!
//! Every loop is bounded in count and in time; all traffic is on 127.0.0.1.

mod access;
mod children;
mod clients;
mod crash;
mod hostile_http;
mod secrets;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::Value;

use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";
const EIO: &str = "Input/output error";

// ---------------------------------------------------------------------------
// Helpers of this module
// ---------------------------------------------------------------------------

/// An HTTP client of our own, for threads that must survive the server's
/// death (the harness panics on a failed request).
fn client() -> Client {
    http_client(Duration::from_secs(20))
}

/// What came back on a hand-made connection.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    body: String,
    /// From the first byte sent to the whole answer (or the close).
    took: Duration,
}

impl RawAnswer {
    /// The `error.code` of a JSON error body.
    fn code(&self) -> String {
        error_code(self.body.as_bytes())
    }

    #[track_caller]
    fn expect(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {self:?}");
        assert_eq!(self.code(), code, "{what}: {self:?}");
    }
}

/// Sends `first`, then `drip` one byte every `every` (while no answer came),
/// and reads the answer until the server closes or `limit` passes. Failed
/// sends are fine once the server answered (it may close before reading the
/// rest). Panics if no answer arrived within `limit`.
#[track_caller]
fn raw_slow(
    server: &Server,
    first: &[u8],
    drip: &[u8],
    every: Duration,
    limit: Duration,
) -> RawAnswer {
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    let _ = stream.write_all(first);
    let mut got = Vec::new();
    let mut dripped = 0;
    let mut buf = [0u8; 8192];
    stream
        .set_read_timeout(Some(if drip.is_empty() {
            Duration::from_millis(100)
        } else {
            every
        }))
        .expect("read timeout");
    loop {
        if started.elapsed() > limit {
            panic!(
                "no whole answer within {limit:?} (got {:?})",
                String::from_utf8_lossy(&got)
            );
        }
        if got.is_empty() && dripped < drip.len() {
            let _ = stream.write_all(&drip[dripped..=dripped]);
            dripped += 1;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if parse_answer(&got, false).is_ok_and(|a| a.is_some_and(|a| a.whole)) {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let took = started.elapsed();
    let text = || String::from_utf8_lossy(&got).into_owned();
    let answer = parse_answer(&got, false)
        .unwrap_or_else(|e| panic!("not an HTTP answer after {took:?} ({e}): {:?}", text()))
        .unwrap_or_else(|| panic!("an incomplete answer after {took:?}: {:?}", text()));
    RawAnswer {
        status: answer.head.status,
        body: String::from_utf8_lossy(&answer.body).into_owned(),
        took,
    }
}

/// How long "at once" may take on this machine now: the slowest of three
/// small requests answered at once (a 404 of an unknown volume, over a
/// connection of its own), plus 500 ms. Well under a `body_timeout` of 2 s,
/// which is what an answer that waited for the body would take; asserted.
#[track_caller]
fn at_once(server: &Server) -> Duration {
    let request = request_head(server, "GET", "/v1/volumes/nope", &[]);
    let idle = (0..3)
        .map(|_| {
            let a = raw_slow(
                server,
                &request,
                b"",
                Duration::ZERO,
                Duration::from_secs(10),
            );
            assert!(
                a.status == 404 || a.status == 401,
                "the baseline request answered {}",
                a.status
            );
            a.took
        })
        .max()
        .unwrap_or_default();
    let quick = idle + Duration::from_millis(500);
    assert!(
        quick < Duration::from_millis(1500),
        "an idle request took {idle:?}: too slow a machine to tell at once from a timeout"
    );
    quick
}

/// Asserts the server still answers `/healthz` quickly.
#[track_caller]
fn assert_alive(server: &Server, what: &str) {
    let started = Instant::now();
    let r = server.get("/healthz");
    assert_eq!(r.status, 200, "{what}: /healthz answered {r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{what}: /healthz took {:?}",
        started.elapsed()
    );
}

/// 1 MiB volume `vm` on a/b/c that all hold the same pattern (any write
/// shows), with `head` before the volume table.
fn hostile_server(head: &str) -> Server {
    let sandbox = Sandbox::new();
    let data = pattern(80, MIB as usize);
    for f in ABC {
        sandbox.write_file_at(f, 0, &data);
    }
    sandbox.serve(&format!("{head}\n{}", abc_volume("1MiB", "")))
}
