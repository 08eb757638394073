//! Issue 12, second review: the API boundary under the attacks of the
//! hostile review (`/work/review12` findings 5, 7, 8, 9, 11, 12 and 13).
//! Each test fails against the server before its fix:
//!
//! - request heads that declare 64 MiB and send nothing held the whole
//!   budget, so every read and write waited `body_timeout`;
//! - `POST .../children` and `POST .../scrub` read their bodies with no
//!   timeout, no budget and a 2 MiB limit, before the volume was checked;
//! - a Range read filled one buffer per child besides its own;
//! - block status answers and event listings were not paid for from the
//!   budget, and an event page had no bound in bytes;
//! - a client reading an answer slowly but steadily was cut off;
//! - a budget below 1 MiB made every whole-volume GET a 503.
//!
//! (`Transfer-Encoding: chunked, chunked`, which stored the inner chunk
//! framing, is one of the codings of `limits::headers::transfer_codings_...`.)
//!
//! The helpers (memory watch, hand-made requests) are those of
//! [`crate::limits`]. Every loop is bounded in count and time, every socket
//! has a timeout, all traffic is on 127.0.0.1.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::limits::{
    Outcome, assert_peak_within, child_roots, exchange, mib, status_of, watch_rss,
};
use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";

/// Opens a connection and sends `request`; the socket is left open, with
/// a read timeout, for the caller to hold or read.
#[track_caller]
fn send_and_hold(server: &Server, request: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server.addr()));
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("set a write timeout");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    s.write_all(request).expect("send a request");
    s
}

/// A request head and its body, at once.
fn with_body(mut head: Vec<u8>, body: &[u8]) -> Vec<u8> {
    head.extend_from_slice(body);
    head
}

/// Waits (bounded by `within`) until `n` of `streams` have an answer head
/// waiting (peeked at, not read).
fn answers_started(streams: &[TcpStream], n: usize, within: Duration) -> usize {
    let until = Instant::now() + within;
    loop {
        let started = streams
            .iter()
            .filter(|s| {
                let mut head = [0u8; 1024];
                s.set_nonblocking(true).expect("make a socket non-blocking");
                let seen = s
                    .peek(&mut head)
                    .is_ok_and(|n| parse_response_head(&head[..n]).is_ok_and(|h| h.is_some()));
                s.set_nonblocking(false).expect("make a socket blocking");
                seen
            })
            .count();
        if started >= n || Instant::now() > until {
            return started;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Finding 5: the budget is taken as bytes arrive
// ---------------------------------------------------------------------------

/// Eight PUT heads that declare 64 MiB and send nothing, and eight that
/// send 1 KiB of it and stall, with the default budget of 512 MiB: they
/// hold (next to) nothing, so 4 KiB reads and writes of another volume and
/// of their own are each served within a second, not after
/// `body_timeout` (10 s). (Before, the first eight took the whole budget
/// before any byte came.) The volume holds the 64 MiB, so that the heads
/// pass every check and wait for their bodies.
#[test]
fn upload_heads_without_their_bodies_hold_no_budget() {
    let config = format!(
        "body_timeout = \"10s\"\n{}{}",
        abc_volume("128MiB", ""),
        volume("other", "1MiB", 1, "", &[child("x")])
    );
    let server = Sandbox::new().serve(&config);
    let declared = (64 * MIB).to_string();
    let head = request_head(
        &server,
        "PUT",
        &format!("{DATA}?offset=0"),
        &[("Content-Length", &declared)],
    );
    let held: Vec<TcpStream> = (0..16)
        .map(|i| {
            let body = if i < 8 { &[][..] } else { &[0x33; 1024][..] };
            send_and_hold(&server, &with_body(head.clone(), body))
        })
        .collect();
    // The server has their heads (and the bytes) by now.
    thread::sleep(Duration::from_millis(500));

    let data = pattern(126, BLOCK as usize);
    let length = BLOCK.to_string();
    let put = |vol: &str, at: u64| {
        let target = format!("/v1/volumes/{vol}/data?offset={at}");
        let head = request_head(&server, "PUT", &target, &[("Content-Length", &length)]);
        with_body(head, &data)
    };
    let read = |vol: &str| {
        let target = format!("/v1/volumes/{vol}/data");
        request_head(&server, "GET", &target, &[("Range", "bytes=0-4095")])
    };
    let mut took = Vec::new();
    for (what, request, status) in [
        ("a 4 KiB read of volume other", read("other"), 206),
        ("a 4 KiB PUT to volume other", put("other", 0), 204),
        ("a 4 KiB read of volume vm", read("vm"), 206),
        ("a 4 KiB PUT to volume vm", put("vm", 64 * KIB), 204),
    ] {
        let o = exchange(&server, &request, Duration::from_secs(15));
        assert_eq!(
            o.status,
            Some(status),
            "{what} beside 16 stalled 64 MiB uploads: {}",
            o.summary()
        );
        assert!(
            o.took < Duration::from_secs(1),
            "{what} beside 16 stalled 64 MiB uploads took {:?}",
            o.took
        );
        took.push((what, o.took));
    }
    eprintln!("beside 16 stalled 64 MiB uploads: {took:?}");
    drop(held);
    assert_bytes_eq(&server.read_volume("other", 0, BLOCK), &data, "the PUT");
    assert_bytes_eq(&server.read_volume("vm", 64 * KIB, BLOCK), &data, "the PUT");
}

// ---------------------------------------------------------------------------
// Finding 7: control bodies
// ---------------------------------------------------------------------------

/// `POST .../children` and `POST .../scrub` read their bodies as a PUT
/// does: a body that stalls gets 408 `timeout` after `body_timeout` (3 s)
/// instead of holding its connection for good; the volume is checked
/// before the body is read (404 at once for another volume, body or not);
/// a body over 64 KiB gets 413, declared or chunked, and nothing is
/// added or started. The ordinary bodies still work.
#[test]
fn control_request_bodies_are_bounded_in_time_and_size() {
    let sandbox = Sandbox::new();
    let config = format!(
        "{}body_timeout = \"3s\"\n{}",
        child_roots(&sandbox),
        abc_volume("1MiB", "")
    );
    let server = sandbox.serve(&config);
    let control = ["/v1/volumes/vm/children", "/v1/volumes/vm/scrub"];

    // Stalled: 10 of 100 declared bytes, then nothing.
    let stalled: Vec<Outcome> = thread::scope(|s| {
        let runs: Vec<_> = control
            .iter()
            .map(|path| {
                let server = &server;
                s.spawn(move || {
                    let head = request_head(server, "POST", path, &[("Content-Length", "100")]);
                    let request = with_body(head, b"{\"name\": \"");
                    exchange(server, &request, Duration::from_secs(10))
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("a stalled POST"))
            .collect()
    });
    for (path, o) in control.iter().zip(&stalled) {
        assert!(
            o.is(408, "timeout")
                && o.took >= Duration::from_millis(2500)
                && o.took < Duration::from_secs(5),
            "POST {path} with a stalled body: expected 408 timeout after about 3 s, got {}",
            o.summary()
        );
    }

    // Another volume: 404 at once, before any of the body.
    for path in ["/v1/volumes/nope/children", "/v1/volumes/nope/scrub"] {
        let request = request_head(&server, "POST", path, &[("Content-Length", "1000")]);
        let o = exchange(&server, &request, Duration::from_secs(10));
        assert!(
            o.is(404, "no_such_volume") && o.took < Duration::from_secs(1),
            "POST {path} with a body to come: expected 404 no_such_volume at once, got {}",
            o.summary()
        );
    }

    // Over 64 KiB of valid JSON: 413, declared or chunked.
    let pad = " ".repeat(100 * 1024);
    let scrub = format!("{{\"repair\": false{pad}}}");
    let child = format!("{{\"name\": \"big\", \"uri\": \"big.img\"{pad}}}");
    for (path, body) in [(control[0], &child), (control[1], &scrub)] {
        let declared = server.raw("POST", path, &[], body.as_bytes());
        declared.expect_error(413, "payload_too_large");
        let pieces: Vec<&[u8]> = body.as_bytes().chunks(16 * 1024).collect();
        let chunked = server.raw_chunked("POST", path, &pieces);
        chunked.expect_error(413, "payload_too_large");
    }
    assert!(
        !server.file("big.img").exists(),
        "the refused child was made"
    );
    let listed = server.get("/v1/volumes/vm/jobs").json();
    let scrubs = listed.as_array().map_or(0, |jobs| {
        jobs.iter().filter(|j| j["kind"] == "scrub").count()
    });
    assert_eq!(scrubs, 0, "a refused scrub started: {listed}");

    // The ordinary bodies.
    let r = server.send(server.request(Method::POST, control[1]).body(""));
    r.expect_status(202);
    wait_until("the scrub to end", || {
        let jobs = server.get("/v1/volumes/vm/jobs").json();
        jobs.as_array()
            .is_some_and(|j| j.iter().all(|j| j["state"] != "running"))
    });
    let r = server.send(
        server
            .request(Method::POST, control[0])
            .json(&json!({"name": "d", "uri": "d.img"})),
    );
    r.expect_status(201);
}

// ---------------------------------------------------------------------------
// Finding 8: a Range read fills one buffer
// ---------------------------------------------------------------------------

/// Four Range reads of 32 MiB on a volume of three children, whose clients
/// never read, with `max_buffered_bytes` 64 MiB: the server's resident
/// memory grows by at most the budget + 32 MiB. Two reads fit the budget;
/// each fills its one buffer piece by piece (1 MiB per child at a time).
/// Before, every child also filled a buffer of 32 MiB: 2 × 4 × 32 MiB.
#[test]
fn range_reads_take_one_buffer_not_one_per_child() {
    const SPAN: u64 = 32 * MIB;
    const BUDGET: u64 = 64 * MIB;
    let config = format!(
        "max_request_bytes = \"32MiB\"\nmax_buffered_bytes = \"64MiB\"\nbody_timeout = \"5s\"\n{}",
        abc_volume("128MiB", "")
    );
    let server = Sandbox::new().serve(&config);
    server.read_volume("vm", 0, BLOCK);
    let before = status_of(&server, "VmRSS");
    let limit = before + BUDGET + 32 * MIB;
    let (started, peak) = watch_rss(&server, limit, || {
        let reads: Vec<TcpStream> = (0..4)
            .map(|i| {
                let range = format!("bytes={}-{}", i * SPAN, (i + 1) * SPAN - 1);
                let head = request_head(&server, "GET", DATA, &[("Range", &range)]);
                send_and_hold(&server, &head)
            })
            .collect();
        let started = answers_started(&reads, 2, Duration::from_secs(20));
        // The buffers are full and wait for their clients.
        thread::sleep(Duration::from_secs(1));
        drop(reads);
        started
    });
    eprintln!(
        "4 stalled Range reads of 32 MiB: {started} answers started, resident memory {} MiB \
         before, peak {} MiB (bound {} MiB)",
        mib(before),
        mib(peak.bytes),
        mib(limit)
    );
    assert_peak_within(&peak, limit, "stalled 32 MiB Range reads");
    assert!(
        started >= 2,
        "only {started} of the Range reads got an answer: the attack is not in place"
    );
}

// ---------------------------------------------------------------------------
// Finding 9: answers built whole are budgeted and bounded
// ---------------------------------------------------------------------------

/// 40 block status requests of 65,536 extents (3 MiB of JSON each) whose
/// clients never read, with `max_buffered_bytes` 16 MiB: resident memory
/// grows by at most the budget + 32 MiB (before: about 95 MiB, every
/// answer built and held); those that find no room get 503 `busy` after
/// `body_timeout`, and a client that reads gets the whole answer.
#[test]
fn block_status_answers_take_from_the_budget() {
    const SIZE: u64 = 256 * MIB;
    const BUDGET: u64 = 16 * MIB;
    let sandbox = Sandbox::new();
    // 4 KiB of data every 8 KiB: 65,536 extents.
    sandbox.striped_file("a.img", SIZE, 8 * KIB, 4 * KIB, 0x5a);
    let config = format!(
        "max_request_bytes = \"1MiB\"\nmax_buffered_bytes = \"16MiB\"\nbody_timeout = \"4s\"\n{}",
        volume("vm", "256MiB", 1, "", &[child("a")])
    );
    let server = sandbox.serve(&config);
    let target = format!("/v1/volumes/vm/block-status?offset=0&length={SIZE}");
    let whole = server.get(&target);
    whole.expect_status(200);
    let extents = whole.json().as_array().map_or(0, Vec::len);
    assert_eq!(extents, 65_536, "the volume's map");
    let before = status_of(&server, "VmRSS");
    let limit = before + BUDGET + 32 * MIB;
    let (outcomes, peak) = watch_rss(&server, limit, || {
        let request = request_head(&server, "GET", &target, &[]);
        let held: Vec<TcpStream> = (0..40).map(|_| send_and_hold(&server, &request)).collect();
        // Past body_timeout: the answers that found room are stuck in
        // their sockets, the others were refused.
        thread::sleep(Duration::from_secs(6));
        held.into_iter()
            .map(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(1)))
                    .expect("set a read timeout");
                let mut head = vec![0u8; 64 * 1024];
                let n = s.read(&mut head).unwrap_or(0);
                parse_answer(&head[..n], false)
                    .ok()
                    .flatten()
                    .map(|a| (a.head.status, error_code(&a.body)))
            })
            .collect::<Vec<_>>()
    });
    let busy = outcomes
        .iter()
        .filter(|o| matches!(o, Some((503, code)) if code == "busy"))
        .count();
    let answered = outcomes
        .iter()
        .filter(|o| matches!(o, Some((200, _))))
        .count();
    eprintln!(
        "40 stalled block status answers of 3 MiB: {answered} answered 200, {busy} 503 busy; \
         resident memory {} MiB before, peak {} MiB (bound {} MiB)",
        mib(before),
        mib(peak.bytes),
        mib(limit)
    );
    assert_peak_within(&peak, limit, "stalled block status answers");
    assert!(answered >= 1, "no block status was answered: {outcomes:?}");
    let again = server.get(&target);
    again.expect_status(200);
    assert_eq!(
        again.body, whole.body,
        "block status after the stalled ones"
    );
}

/// Events that add up to more than 8 MiB of JSON (`CHILD_ADDED` with uris
/// of 60 KB): `GET /v1/events?limit=10000` answers at most 8 MiB (before:
/// all of them in one answer), and paging on with `since` gets every
/// event once, in order.
#[test]
fn an_event_page_stops_at_8_mib() {
    // The page is at most 8 MiB, or `max_request_bytes` when that is less:
    // 64 KiB here, so that uris of 1 KiB at most fill pages in seconds.
    const PAGE_BYTES: usize = 64 << 10;
    let sandbox = Sandbox::new();
    let config = format!(
        "max_request_bytes = \"64KiB\"\n{}{}",
        child_roots(&sandbox),
        volume("vm", "64KiB", 1, "", &[child("a")])
    );
    // A path of about 900 bytes that names ev.img beside the config.
    let long = "x".repeat(220);
    let dirs = format!("{long}/{long}/{long}/{long}");
    std::fs::create_dir_all(sandbox.file(&dirs)).expect("the long directories");
    let uri = format!("{dirs}/ev.img");
    let server = sandbox.serve(&config);
    let started = Instant::now();
    let mut cycles = 0;
    while cycles < 400 && cycles * uri.len() < PAGE_BYTES + (32 << 10) {
        crate::membership::add(&server, "ev", &uri).expect_status(201);
        server
            .send(server.request(Method::DELETE, "/v1/volumes/vm/children/ev"))
            .expect_status(204);
        cycles += 1;
    }
    eprintln!(
        "{cycles} additions with a uri of {} bytes in {:?}",
        uri.len(),
        started.elapsed()
    );

    let mut since = 0;
    let mut pages = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..100 {
        let r = server.get(&format!("/v1/events?since={since}&limit=10000"));
        r.expect_status(200);
        let page: Vec<Value> = r.json().as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            break;
        }
        assert!(
            r.body.len() <= PAGE_BYTES,
            "a page of {} events is {} bytes, above the page size",
            page.len(),
            r.body.len()
        );
        pages.push((page.len(), r.body.len()));
        ids.extend(page.iter().map(event_id));
        since = page.last().map_or(since, event_id);
    }
    eprintln!("pages (events, bytes): {pages:?}");
    assert!(pages.len() >= 2, "all events came in one page: {pages:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order");
    let added = ids.len();
    let all = server.get("/v1/events?since=0&limit=10000").json();
    let first = all.as_array().and_then(|a| a.first()).map_or(0, event_id);
    assert_eq!(
        ids.first(),
        Some(&first),
        "the first page does not start at the first event"
    );
    assert!(
        added >= 2 * cycles,
        "{added} events paged for {cycles} additions and removals"
    );
}

// ---------------------------------------------------------------------------
// Finding 11: a slow reader that reads is not cut off
// ---------------------------------------------------------------------------

/// A client that reads a 64 MiB Range steadily at 64 KiB/s for 10 s
/// (2.5 × `body_timeout` of 4 s) is not cut off: it then reads the rest at
/// full speed and gets all 64 MiB. Before, the server queued 4 MiB in the
/// kernel, heard of no progress until half of it was gone (32 s at this
/// rate) and dropped the connection after 4 s.
///
/// On loopback the receive window opens in steps of one segment (64 KiB),
/// so the server sees the client's progress about every 128 KiB it reads
/// (measured): 2 s at 64 KiB/s, within the 4 s. A client much slower than
/// 128 KiB per `body_timeout` is dropped, as one that reads nothing is.
#[test]
fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
    const LEN: usize = 64 << 20;
    let config = format!("body_timeout = \"4s\"\n{}", abc_volume("64MiB", ""));
    let server = Sandbox::new().serve(&config);
    let range = format!("bytes=0-{}", LEN - 1);
    let mut s = send_and_hold(
        &server,
        &request_head(&server, "GET", DATA, &[("Range", &range)]),
    );
    let mut got = Vec::with_capacity(1 << 20);
    let mut buf = vec![0u8; 1 << 20];
    let started = Instant::now();
    let mut slow_end = None;
    // 16 KiB every 250 ms for 10 s.
    for tick in 1..=40u32 {
        let mut this_tick = 0;
        while this_tick < 16 * 1024 {
            match s.read(&mut buf[..16 * 1024 - this_tick]) {
                Ok(0) => {
                    slow_end = Some(started.elapsed());
                    break;
                }
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    this_tick += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("the slow read failed after {:?}: {e}", started.elapsed()),
            }
        }
        if slow_end.is_some() {
            break;
        }
        let next = started + Duration::from_millis(250) * tick;
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let slow = got.len();
    let head = parse_response_head(&got)
        .ok()
        .flatten()
        .expect("the answer's head within the slow phase");
    let length: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    // The rest, at full speed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while slow_end.is_none() && got.len() < head.len + length && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let answer = parse_answer(&got, false)
        .ok()
        .flatten()
        .expect("an answer head");
    eprintln!(
        "a reader at 64 KiB/s: {slow} bytes in the slow phase, {} body bytes in all after {:?}",
        answer.body.len(),
        started.elapsed()
    );
    assert_eq!(answer.head.status, 206);
    assert!(
        answer.whole && answer.body.len() == LEN,
        "the slow reader got {} of {LEN} bytes: the server cut it off (it ended {:?})",
        answer.body.len(),
        slow_end
    );
}

// ---------------------------------------------------------------------------
// Finding 13: a budget that cannot hold a read piece
// ---------------------------------------------------------------------------

/// `max_buffered_bytes` below 1 MiB (the piece in which reads are served)
/// stops the start with one line naming it; with exactly 1 MiB, a
/// whole-volume GET is served. (Before, 512 KiB was accepted and every
/// whole-volume GET got 503.)
#[test]
fn a_buffer_budget_below_one_read_piece_stops_the_start() {
    let head = "max_request_bytes = \"64KiB\"\n";
    let config = format!(
        "{head}max_buffered_bytes = \"512KiB\"\n{}",
        abc_volume("1MiB", "")
    );
    let failed = Sandbox::new().start_expecting_failure(&config);
    let line = failed.one_line();
    assert!(
        line.contains("max_buffered_bytes") && line.contains("1MiB"),
        "the refusal should name max_buffered_bytes and its least value: {line}"
    );
    let config = format!(
        "{head}max_buffered_bytes = \"1MiB\"\n{}",
        abc_volume("1MiB", "")
    );
    let server = Sandbox::new().serve(&config);
    let r = server.get(DATA);
    r.expect_status(200);
    assert_eq!(r.body.len() as u64, MIB);
}
