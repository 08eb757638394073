//! HTTP PUTs through the engine's started write path (review of 9f797be):
//! the answers, the counts and the ordering must be those of the blocking
//! write they replace, whatever the race, the client or the shutdown.

use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";
const SPAN: usize = 256 * 1024;
const WRITES: &str = r#"quorum_requests_total{volume="vm",op="write"}"#;
const WRITE_BYTES: &str = r#"quorum_request_bytes_total{volume="vm",op="write"}"#;
const WRITE_FAILURES: &str = r#"quorum_failures_total{volume="vm",op="write"}"#;
const WRITE_SECONDS: &str = r#"quorum_request_duration_seconds_count{volume="vm",op="write"}"#;

fn count(server: &Server, series: &str) -> f64 {
    server.metric_if_any(series).unwrap_or(0.0)
}

/// The first byte of `bytes` when every byte is the same; panics with
/// where it changes otherwise.
#[track_caller]
fn uniform(bytes: &[u8], what: &str) -> u8 {
    let first = bytes[0];
    if let Some(at) = bytes.iter().position(|&b| b != first) {
        panic!(
            "{what}: half a write: byte 0 is {first:#x}, byte {at} is {:#x}",
            bytes[at]
        );
    }
    first
}

/// Three writers PUT a whole 256 KiB range over and over, each PUT one
/// byte value, while two readers read it with Range requests: every read
/// sees one PUT whole, the range ends as one of them, and each PUT is
/// counted once with its bytes.
#[test]
fn overlapping_puts_and_reads_never_see_half_a_write() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    server.write_volume("vm", 0, &vec![0xee; SPAN]);
    let (writes, bytes) = (count(&server, WRITES), count(&server, WRITE_BYTES));
    const ROUNDS: u8 = 15;
    let last = thread::scope(|s| {
        let writers: Vec<_> = (1..=3u8)
            .map(|w| {
                let server = &server;
                s.spawn(move || {
                    for r in 0..ROUNDS {
                        let value = w * 0x10 + r;
                        server.write_volume("vm", 0, &vec![value; SPAN]);
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let server = &server;
                s.spawn(move || {
                    let mut seen = 0;
                    for _ in 0..40 {
                        let got = server.read_volume("vm", 0, SPAN as u64);
                        uniform(&got, "a Range read racing PUTs");
                        seen += 1;
                    }
                    seen
                })
            })
            .collect();
        for w in writers {
            w.join().expect("a writer");
        }
        for r in readers {
            assert_eq!(r.join().expect("a reader"), 40);
        }
        uniform(&server.read_volume("vm", 0, SPAN as u64), "the range after")
    });
    assert!(
        (1..=3u8).any(|w| last == w * 0x10 + ROUNDS - 1),
        "the range ends as {last:#x}, no writer's last PUT"
    );
    for f in ["a.img", "b.img", "c.img"] {
        assert_all_bytes(&server.read_file_at(f, 0, SPAN), last, f);
    }
    assert_eq!(count(&server, WRITES) - writes, 45.0, "PUTs counted");
    assert_eq!(
        count(&server, WRITE_BYTES) - bytes,
        45.0 * SPAN as f64,
        "PUT bytes counted"
    );
    assert_eq!(count(&server, WRITE_FAILURES), 0.0);
    assert!(server.all_events().is_empty(), "{:?}", server.all_events());
}

/// The PUTs the started path refuses (empty) or never sees (out of range,
/// overflowing, bad offset) answer as before and write nothing; a chunked
/// PUT is written and counted once with its bytes.
#[test]
fn edge_puts_answer_as_before_and_write_nothing() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    let size = 1024 * 1024u64;
    let before = server.read_volume("vm", 0, size);
    let (writes, bytes) = (count(&server, WRITES), count(&server, WRITE_BYTES));
    let seconds = count(&server, WRITE_SECONDS);

    server
        .put(&format!("{DATA}?offset=0"), Vec::new())
        .expect_status(204);
    server
        .put(&format!("{DATA}?offset={size}"), Vec::new())
        .expect_status(204);
    assert_eq!(count(&server, WRITES) - writes, 2.0, "empty PUTs counted");
    assert_eq!(count(&server, WRITE_BYTES) - bytes, 0.0);
    assert_eq!(count(&server, WRITE_SECONDS) - seconds, 2.0);

    server
        .put(&format!("{DATA}?offset={}", size + 1), Vec::new())
        .expect_error(416, "out_of_range");
    server
        .put(&format!("{DATA}?offset={}", size - 10), vec![7; 11])
        .expect_error(416, "out_of_range");
    server
        .put(&format!("{DATA}?offset={}", u64::MAX), vec![7; 1])
        .expect_error(416, "out_of_range");
    server
        .put(&format!("{DATA}?offset=-1"), vec![7; 1])
        .expect_status(400);
    let over = std::iter::once(Ok::<_, std::io::Error>(vec![7u8; 11]));
    let r = server.send(
        server
            .request(
                reqwest::Method::PUT,
                &format!("{DATA}?offset={}", size - 10),
            )
            .body(reqwest::blocking::Body::new(ChunkedReader::new(over))),
    );
    r.expect_error(416, "out_of_range");
    assert_eq!(
        count(&server, WRITE_BYTES) - bytes,
        0.0,
        "refused PUTs move no byte"
    );
    assert_bytes_eq(
        &server.read_volume("vm", 0, size),
        &before,
        "the volume after refused PUTs",
    );

    let data = pattern(5, 3 * 4096 + 17);
    let pieces = data
        .chunks(5000)
        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
        .collect::<Vec<_>>();
    let writes = count(&server, WRITES);
    let bytes = count(&server, WRITE_BYTES);
    server
        .send(
            server
                .request(reqwest::Method::PUT, &format!("{DATA}?offset=1000"))
                .body(reqwest::blocking::Body::new(ChunkedReader::new(
                    pieces.into_iter(),
                ))),
        )
        .expect_status(204);
    assert_eq!(
        count(&server, WRITES) - writes,
        1.0,
        "a chunked PUT counted"
    );
    assert_eq!(count(&server, WRITE_BYTES) - bytes, data.len() as f64);
    assert_bytes_eq(
        &server.read_volume("vm", 1000, data.len() as u64),
        &data,
        "a chunked PUT",
    );
    assert_eq!(count(&server, WRITE_FAILURES), 0.0);
}

/// A body with no length (sent chunked), from pieces.
struct ChunkedReader<I> {
    pieces: I,
    current: std::io::Cursor<Vec<u8>>,
}

impl<I> ChunkedReader<I> {
    fn new(pieces: I) -> ChunkedReader<I> {
        ChunkedReader {
            pieces,
            current: std::io::Cursor::new(Vec::new()),
        }
    }
}

impl<I: Iterator<Item = std::io::Result<Vec<u8>>>> std::io::Read for ChunkedReader<I> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = std::io::Read::read(&mut self.current, buf)?;
            if n > 0 {
                return Ok(n);
            }
            match self.pieces.next() {
                Some(piece) => self.current = std::io::Cursor::new(piece?),
                None => return Ok(0),
            }
        }
    }
}

/// A slow child (every write takes 1.5 s) and a 1 MiB budget: a client
/// that gives up on its 1 MiB PUT after 300 ms leaves the write to
/// finish, whole, and the budget it reserved is free again once it has
/// (the next 1 MiB PUT is taken, not refused as over the budget).
#[test]
fn a_put_whose_client_goes_away_is_done_whole_and_frees_its_budget() {
    let config = format!(
        "max_buffered_bytes = \"1MiB\"\nmax_request_bytes = \"1MiB\"\n{}",
        volume(
            "vm",
            "4MiB",
            2,
            "",
            &[
                child("a"),
                child("b"),
                child_with("c", &fault("write", &["latency = \"1500ms\""])),
            ],
        )
    );
    let server = Sandbox::new().serve(&config);
    let mib = 1024 * 1024;
    let data = pattern(9, mib);
    let impatient = http_client(Duration::from_millis(300));
    let gone = impatient
        .put(server.url(&format!("{DATA}?offset=0")))
        .body(data.clone())
        .send();
    assert!(gone.is_err(), "the PUT answered within 300 ms: {gone:?}");
    let started = Instant::now();
    wait_until("the abandoned PUT lands on every child", || {
        ["a.img", "b.img", "c.img"]
            .iter()
            .all(|f| server.read_file_at(f, 0, mib) == data)
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_bytes_eq(
        &server.read_volume("vm", 0, mib as u64),
        &data,
        "the abandoned PUT",
    );
    let next = pattern(10, mib);
    server.write_volume("vm", mib as u64, &next);
    assert_bytes_eq(
        &server.read_volume("vm", mib as u64, mib as u64),
        &next,
        "the PUT after",
    );
    assert_eq!(count(&server, WRITE_FAILURES), 0.0);
}

/// SIGTERM while PUTs wait on a slow child: the server drains them; every
/// PUT answered 204 is there after a restart, and every other one is
/// there whole or not at all.
#[test]
fn sigterm_with_puts_in_flight_keeps_every_acknowledged_one_whole() {
    let config = volume(
        "vm",
        "4MiB",
        2,
        "",
        &[
            child("a"),
            child("b"),
            child_with("c", &fault("write", &["latency = \"400ms\""])),
        ],
    );
    let mut server = Sandbox::new().serve(&config);
    let len = 64 * 1024;
    let client = http_client(Duration::from_secs(20));
    let answers: Vec<Option<u16>> = thread::scope(|s| {
        let puts: Vec<_> = (0..8u64)
            .map(|i| {
                let (server, client) = (&server, &client);
                s.spawn(move || {
                    client
                        .put(server.url(&format!("{DATA}?offset={}", i * len as u64)))
                        .body(pattern(100 + i, len))
                        .send()
                        .ok()
                        .map(|r| r.status().as_u16())
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(150));
        server.signal("TERM");
        puts.into_iter()
            .map(|p| p.join().expect("a PUT thread"))
            .collect()
    });
    let status = server.stop();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    server.restart();
    let mut acknowledged = 0;
    for (i, answer) in answers.iter().enumerate() {
        let want = pattern(100 + i as u64, len);
        let got = server.read_volume("vm", (i * len) as u64, len as u64);
        if *answer == Some(204) {
            acknowledged += 1;
            assert_bytes_eq(&got, &want, &format!("acknowledged PUT {i}"));
        } else {
            assert!(
                got == want || got.iter().all(|&b| b == 0),
                "PUT {i} ({answer:?}) is there in part"
            );
        }
    }
    assert!(acknowledged > 0, "no PUT was drained: {answers:?}");
}

/// The last write-intent record (`d` dirty, `c` clean) of the journal of
/// vm that covers `at`, if any.
fn last_intent_at(server: &Server, at: u64) -> Option<char> {
    let text = String::from_utf8(server.read_file("quorum-data/stale/vm.jsonl"))
        .expect("the journal is text");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["child"] == "")
        .filter(|e| {
            e["start"].as_u64().is_some_and(|s| s <= at)
                && e["end"].as_u64().is_some_and(|e| at < e)
        })
        .filter_map(|e| e["op"].as_str().and_then(|o| o.chars().next()))
        .next_back()
}

/// A PUT to a write-intent region that two flushes in a row found idle and recorded
/// clean is journaled dirty again before it goes out (the started path
/// must not take a clean region): after a crash right after it, the
/// journal says the region may differ between children.
#[test]
fn a_put_after_a_flush_journals_its_region_dirty_again() {
    let mut server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    server.write_volume("vm", 0, &pattern(1, 4096));
    assert_eq!(last_intent_at(&server, 0), Some('d'), "the first PUT");
    server.write_volume("vm", 0, &pattern(2, 4096));
    // The first flush covers the PUTs; the next two find the region idle.
    for _ in 0..3 {
        server.post("/v1/volumes/vm/flush").expect_status(204);
    }
    assert_eq!(
        last_intent_at(&server, 0),
        Some('c'),
        "after three flushes: {}",
        String::from_utf8_lossy(&server.read_file("quorum-data/stale/vm.jsonl"))
    );
    server.write_volume("vm", 0, &pattern(3, 4096));
    assert_eq!(last_intent_at(&server, 0), Some('d'), "the PUT after it");
    server.kill();
    server.restart();
    assert_bytes_eq(
        &server.read_volume("vm", 0, 4096),
        &pattern(3, 4096),
        "the PUT after a crash",
    );
}

/// A PUT held by a suspension (its first, started, attempt failed for lack
/// of quorum) completes after the resume and is counted once: one
/// request with its bytes and duration, one access log line.
#[test]
fn a_held_put_is_answered_and_counted_once() {
    let mut blocks: Vec<Server> = (0..2)
        .map(|_| crate::remote::block_server("1MiB", ""))
        .collect();
    let children = [
        child("a"),
        crate::remote::remote_child("r1", &blocks[0], "blk", ""),
        crate::remote::remote_child("r2", &blocks[1], "blk", ""),
    ];
    let options = "on_quorum_failure = \"suspend\"\nsuspend_timeout = \"60s\"";
    let front = Sandbox::new().serve(&volume("vm", "1MiB", 2, options, &children));
    // Dirties the write-intent region, so that the held PUT is started.
    front.write_volume("vm", 0, &pattern(1, 64 * 1024));
    let (writes, bytes) = (count(&front, WRITES), count(&front, WRITE_BYTES));
    let seconds = count(&front, WRITE_SECONDS);
    for b in &mut blocks {
        b.stop();
    }
    let data = pattern(2, 4096);
    let answer = thread::scope(|s| {
        let writer = s.spawn(|| front.put(&format!("{DATA}?offset=8192"), data.clone()));
        wait_until("vm suspended with the PUT held", || {
            let v = front.get("/v1/volumes/vm").json();
            v["state"] == "suspended" && v["suspension"]["held"] == 1
        });
        for b in &mut blocks {
            b.restart();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !writer.is_finished() {
            assert!(Instant::now() < deadline, "the held PUT never completed");
            if front.get("/v1/volumes/vm").json()["state"] == "suspended" {
                let _ = front.post("/v1/volumes/vm/resume");
            }
            thread::sleep(Duration::from_millis(300));
        }
        writer.join().expect("the writer")
    });
    answer.expect_status(204);
    assert_bytes_eq(&front.read_volume("vm", 8192, 4096), &data, "the held PUT");
    assert_eq!(count(&front, WRITES) - writes, 1.0, "the held PUT counted");
    assert_eq!(count(&front, WRITE_BYTES) - bytes, 4096.0);
    assert_eq!(count(&front, WRITE_SECONDS) - seconds, 1.0);
    // A failure is counted per attempt that failed its quorum (the first,
    // and each retry after a resume that a breaker still refused).
    assert!(count(&front, WRITE_FAILURES) >= 1.0);
    let logged = front
        .stderr()
        .lines()
        .filter(|l| l.contains("quorum::access") && l.contains("method=\"PUT\""))
        .count();
    assert_eq!(logged, 2, "one access line per PUT:\n{}", front.stderr());
}

/// A child that hangs on writes (3 s, child_timeout 500 ms): each PUT,
/// started or not, is answered once the other two took it, within about
/// child_timeout, and the hung child is stale over exactly what it missed.
#[test]
fn puts_with_a_hung_child_end_at_child_timeout_and_mark_it_stale() {
    let config = volume(
        "vm",
        "1MiB",
        2,
        "child_timeout = \"500ms\"",
        &[
            child("a"),
            child("b"),
            child_with("c", &fault("write", &["latency = \"3s\""])),
        ],
    );
    let server = Sandbox::new().serve(&config);
    let (writes, bytes) = (count(&server, WRITES), count(&server, WRITE_BYTES));
    for i in 0..4u64 {
        let started = Instant::now();
        server.write_volume("vm", i * 8192, &pattern(20 + i, 4096));
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(2500),
            "PUT {i} took {took:?} with child_timeout 500 ms"
        );
    }
    assert_eq!(count(&server, WRITES) - writes, 4.0);
    assert_eq!(count(&server, WRITE_BYTES) - bytes, 4.0 * 4096.0);
    assert_eq!(count(&server, WRITE_FAILURES), 0.0);
    let c = server.get("/v1/volumes/vm").json()["children"][2].clone();
    assert_eq!(c["name"], "c", "{c}");
    assert_eq!(c["stale_bytes"], 4 * 4096, "c missed the PUTs: {c}");
    for i in 0..4u64 {
        assert_bytes_eq(
            &server.read_volume("vm", i * 8192, 4096),
            &pattern(20 + i, 4096),
            "a PUT with c hung",
        );
    }
}
