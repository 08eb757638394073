//! `header_timeout` and `max_connections`: half-sent heads are closed
//! after the timeout, a connection beyond the limit at once.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use super::{accept_queue, assert_served, exchange, open_fds};
use crate::util::*;

/// Whether a non-blocking socket is still open: reads what came (an
/// answer the server may send before it closes) and says false on EOF or
/// an error.
fn still_open(mut stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Opens `n` connections that send half a request head and nothing more;
/// each with the moment it was opened. Non-blocking from then on.
///
/// Paced by the server's accept queue: a connect that finds the queue full
/// has its SYN dropped and waits a second for the retry, which would
/// spread the opening over many header timeouts.
#[track_caller]
fn half_heads(server: &Server, n: usize) -> Vec<(TcpStream, Instant)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i % 64 == 63 {
            let until = Instant::now() + Duration::from_secs(1);
            while accept_queue(server.port()).is_some_and(|q| q > 16) && Instant::now() < until {
                thread::sleep(Duration::from_millis(1));
            }
        }
        let mut s = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("idle connection {i}: cannot connect: {e}"));
        s.set_write_timeout(Some(Duration::from_secs(5)))
            .expect("set a write timeout");
        s.write_all(b"GET / HTTP/1.1\r\nHo")
            .unwrap_or_else(|e| panic!("idle connection {i}: cannot send: {e}"));
        s.set_nonblocking(true).expect("make a socket non-blocking");
        out.push((s, Instant::now()));
    }
    out
}

/// Waits (bounded by the last `opened + within`) until every connection
/// is closed; panics naming how many were still open past their own
/// `opened + within`.
#[track_caller]
fn assert_all_closed_within(idle: &[(TcpStream, Instant)], within: Duration, what: &str) {
    let mut open: Vec<usize> = (0..idle.len()).collect();
    let last = idle
        .iter()
        .map(|(_, at)| *at)
        .max()
        .unwrap_or_else(Instant::now)
        + within;
    let first = idle
        .iter()
        .map(|(_, at)| *at)
        .min()
        .unwrap_or_else(Instant::now);
    loop {
        let now = Instant::now();
        open.retain(|&i| still_open(&idle[i].0));
        let late: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| now > idle[i].1 + within)
            .collect();
        assert!(
            late.is_empty(),
            "{what}: {} of {} connections were still open {within:?} after they were \
             opened ({} open in all, {:?} after the first was opened)",
            late.len(),
            idle.len(),
            open.len(),
            now - first
        );
        if open.is_empty() || now > last {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// 5,000 connections that sent half a request head (`header_timeout` 2 s,
/// `max_connections` 6000): a normal client is served within a second
/// while they are open, and each is closed by the server within
/// `header_timeout` + 3 s.
#[test]
fn thousands_of_half_sent_heads_are_closed_after_the_header_timeout() {
    let header_timeout = Duration::from_secs(2);
    let config = format!(
        "header_timeout = \"2s\"\nmax_connections = 6000\n{}",
        abc_volume("1MiB", "")
    );
    let server = Sandbox::new().serve(&config);
    let started = Instant::now();
    let idle = half_heads(&server, 5_000);
    let opened = started.elapsed();
    let open_now = idle.iter().filter(|(s, _)| still_open(s)).count();
    eprintln!("5000 half-sent heads opened in {opened:?}; {open_now} open");
    assert!(
        open_now >= 2_500,
        "only {open_now} of 5000 half-sent heads are open right after opening them: the attack \
         is not in place (opening them took {opened:?}, the header timeout is 2 s)"
    );
    assert_served(&server, "/healthz", "with 5000 half-sent heads open");
    assert_served(&server, "/v1/volumes", "with 5000 half-sent heads open");
    assert_all_closed_within(
        &idle,
        header_timeout + Duration::from_secs(3),
        "half-sent heads",
    );
    eprintln!(
        "5000 half-sent heads: opened in {opened:?}, all closed after {:?}",
        started.elapsed()
    );
    assert_served(&server, "/healthz", "after the half-sent heads");
}

/// With `max_connections = 50` and 50 idle connections held, the 51st is
/// closed at once (not served); after the header timeout has closed the
/// idle ones, a new client is served.
#[test]
fn a_connection_beyond_max_connections_is_closed_at_once() {
    let header_timeout = Duration::from_secs(3);
    let config = format!(
        "header_timeout = \"3s\"\nmax_connections = 50\n{}",
        abc_volume("1MiB", "")
    );
    let server = Sandbox::new().serve(&config);
    let fds_before = open_fds(&server);
    let idle = half_heads(&server, 50);
    // The server has taken them: none waits to be accepted, and it holds
    // their sockets (49 at least: see the harness's connection below).
    wait_until("the server to accept the 50 idle connections", || {
        accept_queue(server.port()) == Some(0) && open_fds(&server) >= fds_before + 49
    });

    let request = request_head(&server, "GET", "/healthz", &[]);
    let extra = exchange(&server, &request, Duration::from_secs(1));
    assert!(
        extra.closed
            && extra.status.is_none_or(|s| s >= 400)
            && extra.took < Duration::from_secs(1),
        "the 51st connection should be closed at once, not served: {}",
        extra.summary()
    );
    // The harness keeps one keep-alive connection of its own (from polling
    // /healthz at start), which may count against the 50.
    let open_now = idle.iter().filter(|(s, _)| still_open(s)).count();
    assert!(
        open_now >= 49,
        "only {open_now} of the 50 idle connections are still open before the header timeout"
    );
    assert_all_closed_within(
        &idle,
        header_timeout + Duration::from_secs(3),
        "the 50 idle connections",
    );
    assert_served(
        &server,
        "/healthz",
        "after the idle connections were closed",
    );
}
