//! Hostile input over HTTP: numbers, ranges, bodies, paths, tokens,
//! methods and malformed requests get their SPEC status, write nothing,
//! and leave the server serving.

use super::*;

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

// ---------------------------------------------------------------------------
// 5. Hostile input over HTTP
// ---------------------------------------------------------------------------

/// Offsets near u64::MAX, sums that overflow, negative and oversized
/// numbers, duplicate parameters, and Range headers that are malformed or
/// hold many ranges: each gets its SPEC status; nothing is written; the
/// server stays up. (bad_input.rs covers the simpler rows: see
/// RELIABILITY.md.)
#[test]
fn hostile_numbers_and_ranges() {
    let server = hostile_server("");
    let snap = server.snapshot(&ABC);
    let max = u64::MAX;

    // A chunked body: no Content-Length to check up front, so the engine
    // sees offset + length overflow.
    for offset in [max, max - 10, max - 4095, MIB - 100] {
        let body = pattern(87, 4096);
        server
            .raw_chunked("PUT", &format!("{DATA}?offset={offset}"), &[&body])
            .expect_error(416, "out_of_range");
    }
    server.assert_unchanged(&snap, "chunked PUTs past the end");

    for (offset, length) in [
        (max.to_string(), "1".to_string()),
        (max.to_string(), max.to_string()),
        ("1".to_string(), max.to_string()),
        ((max - 4095).to_string(), "8192".to_string()),
    ] {
        server
            .post(&format!(
                "/v1/volumes/vm/write-zeroes?offset={offset}&length={length}"
            ))
            .expect_error(416, "out_of_range");
        server
            .get(&format!(
                "/v1/volumes/vm/block-status?offset={offset}&length={length}"
            ))
            .expect_error(416, "out_of_range");
    }
    server.assert_unchanged(&snap, "write-zeroes past the end");

    let too_big = "18446744073709551616"; // 2^64
    for q in [
        format!("offset=0&length={too_big}"),
        format!("offset={too_big}&length=1"),
        "offset=-1&length=4096".to_string(),
        "offset=0&length=-1".to_string(),
        "offset=-0&length=-0".to_string(),
        "offset=1e3&length=4096".to_string(),
        "offset=%2D1&length=4096".to_string(),
        "offset=0&offset=8192&length=4096".to_string(),
        "offset=0".to_string(),
        "length=4096".to_string(),
    ] {
        server
            .post(&format!("/v1/volumes/vm/write-zeroes?{q}"))
            .expect_error(400, "bad_request");
        server
            .get(&format!("/v1/volumes/vm/block-status?{q}"))
            .expect_error(400, "bad_request");
    }
    for q in [
        "offset=0&offset=4096".to_string(),
        "offset=-9223372036854775808".to_string(),
        format!("offset={too_big}0"),
        "offset=%00".to_string(),
        String::new(),
    ] {
        server
            .put(&format!("{DATA}?{q}"), pattern(88, 64))
            .expect_error(400, "bad_request");
    }
    server.assert_unchanged(&snap, "malformed numbers");

    let many: Vec<String> = (0..1000)
        .map(|i| format!("{}-{}", i * 10, i * 10 + 5))
        .collect();
    let many = format!("bytes={}", many.join(","));
    let same: Vec<&str> = std::iter::repeat_n("0-0", 1000).collect();
    let same = format!("bytes={}", same.join(","));
    for range in [
        many.as_str(),
        same.as_str(),
        "bytes=0-1,2-3",
        "bytes=-1,0-0",
        "bytes=0-1-2",
        "bytes=10-5",
        "bytes 0-1",
        "=0-1",
        "bytes=0x10-0x20",
        "bytes=18446744073709551616-",
        "bytes=0-18446744073709551616",
        "bytes=-18446744073709551616",
        "bytes=1.5-2",
        "pages=0-1",
    ] {
        let r = server.get_range(DATA, range);
        r.expect_error(400, "bad_request");
    }
    // A Range header that is not ASCII, by hand.
    let mut request = request_head(&server, "GET", DATA, &[]);
    request.truncate(request.len() - 2);
    request.extend_from_slice(b"Range: bytes=\xff0-1\r\n\r\n");
    raw_slow(
        &server,
        &request,
        b"",
        Duration::ZERO,
        Duration::from_secs(5),
    )
    .expect(400, "bad_request", "a non-ASCII Range");
    server.assert_unchanged(&snap, "hostile ranges");
    assert_alive(&server, "after hostile numbers and ranges");
}

/// Bodies that lie, stall or drip: a huge Content-Length gets 413 at once
/// (also before the offset is checked); a stalled or dripping body below
/// the limit gets 408 after body_timeout (the timeout bounds the whole
/// body, not the gap between bytes); a chunked body of many small chunks
/// over the limit gets 413; malformed framing gets 400. Nothing is written.
#[test]
fn slow_huge_and_stalled_bodies() {
    let server = hostile_server("max_request_bytes = \"64KiB\"\nbody_timeout = \"2s\"\n");
    let snap = server.snapshot(&ABC);
    let timeout = Duration::from_secs(2);
    let quick = at_once(&server);

    // 10^15 bytes announced, 1 KiB sent, then silence: 413 at once, also
    // at an offset past the end (the size is refused first).
    for offset in [0, u64::MAX - 10] {
        let mut req = request_head(
            &server,
            "PUT",
            &format!("{DATA}?offset={offset}"),
            &[("Content-Length", "1000000000000000")],
        );
        req.extend_from_slice(&pattern(89, 1024));
        let a = raw_slow(&server, &req, b"", Duration::ZERO, Duration::from_secs(10));
        a.expect(413, "payload_too_large", "a Content-Length of 10^15");
        assert!(a.took < quick, "413 took {:?}, more than {quick:?}", a.took);
    }

    // Below the limit, 10 of 8192 bytes, then silence: 408 after 2 s.
    let mut req = request_head(
        &server,
        "PUT",
        &format!("{DATA}?offset=0"),
        &[("Content-Length", "8192")],
    );
    req.extend_from_slice(&[1u8; 10]);
    let a = raw_slow(&server, &req, b"", Duration::ZERO, Duration::from_secs(10));
    a.expect(408, "timeout", "a stalled body");
    assert!(
        a.took >= timeout - Duration::from_millis(100) && a.took < timeout + Duration::from_secs(2),
        "408 after {:?}, body_timeout is {timeout:?}",
        a.took
    );

    // A drip of one byte every 100 ms never stalls for long, but the
    // whole body is slower than body_timeout: 408 as well.
    let req = request_head(
        &server,
        "PUT",
        &format!("{DATA}?offset=0"),
        &[("Content-Length", "100")],
    );
    let a = raw_slow(
        &server,
        &req,
        &[2u8; 100],
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    a.expect(408, "timeout", "a dripping body");
    assert!(
        a.took < timeout + Duration::from_secs(2),
        "408 after {:?}",
        a.took
    );

    // A chunked body that stalls after its first chunk: 408.
    let mut req = request_head(
        &server,
        "PUT",
        &format!("{DATA}?offset=0"),
        &[("Transfer-Encoding", "chunked")],
    );
    req.extend_from_slice(b"100\r\n");
    req.extend_from_slice(&[3u8; 256]);
    req.extend_from_slice(b"\r\n");
    let a = raw_slow(&server, &req, b"", Duration::ZERO, Duration::from_secs(10));
    a.expect(408, "timeout", "a stalled chunked body");

    // 1000 chunks of 100 bytes (100 000 > 64 KiB): 413.
    let chunk = [4u8; 100];
    let chunks: Vec<&[u8]> = std::iter::repeat_n(&chunk[..], 1000).collect();
    server
        .raw_chunked("PUT", &format!("{DATA}?offset=0"), &chunks)
        .expect_error(413, "payload_too_large");

    // Framing the HTTP layer refuses: a Content-Length beyond u64, two
    // different Content-Lengths.
    for headers in [
        vec![("Content-Length", "99999999999999999999999")],
        vec![("Content-Length", "10"), ("Content-Length", "20")],
    ] {
        let mut req = request_head(&server, "PUT", &format!("{DATA}?offset=0"), &headers);
        req.extend_from_slice(&[5u8; 20]);
        let a = raw_slow(&server, &req, b"", Duration::ZERO, Duration::from_secs(5));
        assert_eq!(a.status, 400, "{headers:?}: {a:?}");
    }
    server.assert_unchanged(&snap, "slow, huge and stalled bodies");
    assert_alive(&server, "after slow bodies");
}

/// Volume names that try to climb out of the data directory or name a
/// file: 404 (or 400 for a path the HTTP layer refuses), nothing written,
/// no file created anywhere in the sandbox. (bad_input.rs covers `..`,
/// `%2e%2e`, `..%2F..` and `vm%2F`.)
#[test]
fn path_tricks_reach_no_file() {
    let server = hostile_server("");
    let snap = server.snapshot(&ABC);
    let listing = || {
        let mut names: Vec<String> = walk(&server.file(""));
        names.sort();
        names
    };
    let files_before = listing();
    for name in [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "vm%00",
        "vm%2F..%2F..%2Fc.img",
        ".%2e",
        "%2e.",
        "%252e%252e",
        "..%5Ca.img",
        "c.img",
        "quorum-data",
        "vm%20",
        "%76%6d%2F",
    ] {
        for (method, target) in [
            ("PUT", format!("/v1/volumes/{name}/data?offset=0")),
            (
                "POST",
                format!("/v1/volumes/{name}/write-zeroes?offset=0&length=4096"),
            ),
            ("GET", format!("/v1/volumes/{name}/data")),
        ] {
            let r = server.raw(method, &target, &[], &[9u8; 512]);
            r.expect_error(404, "no_such_volume");
        }
    }
    // `..` segments in the path itself are not resolved by the server.
    for target in [
        "/v1/volumes/../volumes/vm/data?offset=0",
        "/v1/volumes/vm/../vm/data?offset=0",
        "/v1/volumes/vm/data/..?offset=0",
        "/v1/volumes/vm/./data?offset=0",
    ] {
        let r = server.raw("PUT", target, &[], &[9u8; 512]);
        assert!(
            r.status == 404 || r.status == 405,
            "PUT {target}: expected 404 or 405, got {} {:?}",
            r.status,
            r.text()
        );
    }
    server.assert_unchanged(&snap, "path tricks");
    assert_eq!(listing(), files_before, "a file appeared or vanished");
    assert_alive(&server, "after path tricks");
}

/// Every file under `dir`, relative, except the server's logs.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
                if !rel.starts_with("logs") {
                    out.push(rel);
                }
            }
        }
    }
    out
}

/// Wrong tokens of the right length (first or last byte changed), of other
/// lengths (a prefix, an extension, empty, 10 KiB), in the wrong header or
/// the query: 401, nothing written; an unauthenticated huge body gets 401
/// at once, without being read. (bad_input.rs covers a missing token, a
/// shorter one, the wrong scheme; the comparison is constant-time by
/// construction, `subtle::ConstantTimeEq` in api.rs.)
#[test]
fn wrong_tokens_of_any_length_get_401() {
    let token = "t0ken-0f-17-bytes";
    assert_eq!(token.len(), 17);
    let server = hostile_server(&format!("[auth]\ntoken = \"{token}\"\n"));
    let snap = server.snapshot(&ABC);
    let long = "x".repeat(10 * 1024);
    let mut wrong: Vec<String> = vec![
        format!("Bearer X{}", &token[1..]),
        format!("Bearer {}X", &token[..16]),
        format!("Bearer {}", &token[..16]),
        format!("Bearer {token}0"),
        format!("Bearer {token}{token}"),
        "Bearer ".to_string(),
        format!("Bearer {long}"),
    ];
    wrong.push(format!("Bearer {}", token.to_uppercase()));
    for auth in &wrong {
        for (method, target) in [
            ("GET", "/v1/volumes".to_string()),
            ("PUT", format!("{DATA}?offset=0")),
            ("POST", "/v1/volumes/vm/flush".to_string()),
        ] {
            let r = server.raw(method, &target, &[("Authorization", auth)], &[1u8; 64]);
            r.expect_error(401, "unauthorized");
            assert!(!r.text().contains(token), "the answer shows the token");
        }
    }
    for (headers, target) in [
        (vec![("X-Token", token)], "/v1/volumes".to_string()),
        (vec![], format!("/v1/volumes?token={token}")),
        (vec![], format!("/v1/volumes?access_token={token}")),
    ] {
        server
            .raw("GET", &target, &headers, b"")
            .expect_error(401, "unauthorized");
    }

    // No token, 10^15 bytes announced: 401 at once.
    let mut req = request_head(
        &server,
        "PUT",
        &format!("{DATA}?offset=0"),
        &[("Content-Length", "1000000000000000")],
    );
    req.extend_from_slice(&[6u8; 1024]);
    let a = raw_slow(&server, &req, b"", Duration::ZERO, Duration::from_secs(10));
    a.expect(401, "unauthorized", "an unauthenticated huge body");
    let quick = at_once(&server);
    assert!(a.took < quick, "401 took {:?}, more than {quick:?}", a.took);

    server.assert_unchanged(&snap, "requests with wrong tokens");
    assert!(!server.stderr().contains(token), "the token is in the log");
    assert_alive(&server, "after wrong tokens");
}

/// Methods no route has: 405 with the error body, nothing written. (bad_input.rs
/// covers DELETE and PATCH on data, POST on data, PUT on flush, GET on
/// write-zeroes.)
#[test]
fn unexpected_methods_get_405() {
    let server = hostile_server("");
    let snap = server.snapshot(&ABC);
    for (method, target) in [
        ("FOO", "/v1/volumes/vm/data?offset=0"),
        ("TRACE", "/v1/volumes/vm/data"),
        ("OPTIONS", "/v1/volumes/vm/data"),
        ("PROPFIND", "/v1/volumes/vm/data"),
        ("DELETE", "/v1/volumes/vm"),
        ("PUT", "/v1/volumes/vm"),
        ("PUT", "/v1/volumes"),
        ("POST", "/healthz"),
        ("DELETE", "/v1/events"),
        ("POST", "/v1/volumes/vm/block-status?offset=0&length=4096"),
        ("PUT", "/metrics"),
    ] {
        server
            .raw(method, target, &[], &[7u8; 512])
            .expect_error(405, "method_not_allowed");
    }
    server.assert_unchanged(&snap, "unexpected methods");
    assert_alive(&server, "after unexpected methods");
}

/// Garbage that is not HTTP, an oversized header block, and 100 idle
/// connections that never finish their request: the server refuses the
/// first with 400 and the second with 431 and keeps answering others at once.
#[test]
fn malformed_http_and_idle_connections_do_not_stop_the_server() {
    let server = hostile_server("");

    let a = raw_slow(
        &server,
        b"GARBAGE\r\n\r\n",
        b"",
        Duration::ZERO,
        Duration::from_secs(5),
    );
    assert_eq!(a.status, 400, "{a:?}");
    let big = "y".repeat(1024 * 1024);
    let req = request_head(&server, "GET", "/v1/volumes", &[("X-Big", &big)]);
    let a = raw_slow(&server, &req, b"", Duration::ZERO, Duration::from_secs(5));
    assert_eq!(a.status, 431, "a 1 MiB header: {a:?}");
    assert_alive(&server, "after garbage");

    let mut idle = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(server.addr()).expect("connect");
        let partial = if i % 2 == 0 {
            "GET /heal".to_string()
        } else {
            format!("PUT {DATA}?offset=0 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        };
        s.write_all(partial.as_bytes())
            .expect("send a partial request");
        idle.push(s);
    }
    assert_alive(&server, "with 100 idle connections");
    server.write_volume("vm", 0, &pattern(90, 4096));
    drop(idle);
    assert_alive(&server, "after the idle connections");
    let mut expected = pattern(80, MIB as usize);
    expected[..4096].copy_from_slice(&pattern(90, 4096));
    for f in ABC {
        assert_bytes_eq(&server.read_file(f), &expected, f);
    }
}
