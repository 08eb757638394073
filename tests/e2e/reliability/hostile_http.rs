//! Hostile input over HTTP: numbers, ranges and bodies get their SPEC
//! status, write nothing, and leave the server serving; so do requests
//! that are not HTTP at all.

use super::*;

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
