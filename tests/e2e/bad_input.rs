//! Must show 5: the rows of SPEC section 4's error table, each request
//! refused with its status and code, and every refused write-type request
//! leaving the child files byte-identical.
//!
//! Rows tested elsewhere: 503 `quorum_failure` in `qemu081` (three
//! different children), `per_block` (a block without majority) and
//! `faults` (writes, write-zeroes and flushes failing on two children);
//! 500 `blkverify_mismatch` in `qemu081`; the 404 `no_such_child` and 409
//! rows in `membership` and `confinement`. Malformed JSON bodies (the two
//! endpoints that take JSON: adding a child, starting a scrub) are here.

use crate::util::*;

const SIZE: u64 = MIB;
const DATA: &str = "/v1/volumes/vm/data";

/// Method, target, headers, body.
type RawRequest<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a [u8]);

/// A server on volume `vm` (1 MiB, a/b/c all holding the same pattern, so
/// any write would show) with `head` before the volume table.
fn server_with(head: &str) -> Server {
    let sandbox = Sandbox::new();
    let data = pattern(30, SIZE as usize);
    for f in ABC {
        sandbox.write_file_at(f, 0, &data);
    }
    sandbox.serve(&format!("{head}\n{}", abc_volume("1MiB", "")))
}

/// 400 bad_request: malformed offsets, lengths, ranges and query values.
#[test]
fn malformed_requests_get_400() {
    let server = server_with("");
    let snap = server.snapshot(&ABC);

    for q in [
        "offset=abc",
        "offset=-1",
        "offset=1.5",
        "offset=",
        "offset=0x10",
        "offset=18446744073709551616",
    ] {
        server
            .put(&format!("{DATA}?{q}"), pattern(31, 16))
            .expect_error(400, "bad_request");
        server.assert_unchanged(&snap, &format!("PUT ?{q}"));
    }
    for q in [
        "offset=abc&length=10",
        "offset=0&length=xyz",
        "offset=0&length=-5",
        "offset=-1&length=10",
    ] {
        server
            .post(&format!("/v1/volumes/vm/write-zeroes?{q}"))
            .expect_error(400, "bad_request");
        server.assert_unchanged(&snap, &format!("write-zeroes ?{q}"));
    }
    for q in ["offset=abc&length=10", "offset=0&length=ten"] {
        server
            .get(&format!("/v1/volumes/vm/block-status?{q}"))
            .expect_error(400, "bad_request");
    }
    for range in ["bytes=abc", "bytes=1-x", "bytes=", "bytes=-", "bytes=--5"] {
        server
            .get_range(DATA, range)
            .expect_error(400, "bad_request");
    }
    for q in ["since=abc", "since=-1", "limit=many"] {
        server
            .get(&format!("/v1/events?{q}"))
            .expect_error(400, "bad_request");
    }
    server.assert_unchanged(&snap, "after the malformed requests");
}

/// 401 unauthorized: with a token configured, every path but /healthz
/// needs `Authorization: Bearer TOKEN`; the token never shows in answers
/// or logs.
#[test]
fn a_missing_or_wrong_token_gets_401() {
    let mut server = server_with("[auth]\ntoken = \"s3cret\"\n");
    let snap = server.snapshot(&ABC);

    server.get("/healthz").expect_status(200);
    let wrong = [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("Basic s3cret"),
        Some("s3cret"),
    ];
    for auth in wrong {
        let with = |rb: reqwest::blocking::RequestBuilder| match auth {
            Some(v) => rb.header("authorization", v),
            None => rb,
        };
        let requests = [
            with(server.request(reqwest::Method::GET, "/v1/volumes")),
            with(server.request(reqwest::Method::GET, "/v1/volumes/vm")),
            with(server.request(reqwest::Method::GET, "/v1/volumes/nope/data")),
            with(
                server
                    .request(reqwest::Method::GET, DATA)
                    .header("range", "bytes=0-9"),
            ),
            with(
                server
                    .request(reqwest::Method::PUT, &format!("{DATA}?offset=0"))
                    .body(vec![1u8; 512]),
            ),
            with(server.request(
                reqwest::Method::POST,
                "/v1/volumes/vm/write-zeroes?offset=0&length=4096",
            )),
            with(server.request(reqwest::Method::POST, "/v1/volumes/vm/flush")),
            with(server.request(
                reqwest::Method::GET,
                "/v1/volumes/vm/block-status?offset=0&length=4096",
            )),
            with(server.request(reqwest::Method::GET, "/v1/events?since=0")),
            with(server.request(reqwest::Method::GET, "/v1/event-kinds")),
        ];
        for rb in requests {
            let r = server.send(rb);
            let message = r.expect_error(401, "unauthorized");
            assert!(
                !r.text().contains("s3cret"),
                "{}: the answer shows the token",
                r.request
            );
            assert!(!message.contains("s3cret"));
        }
        let r = server.send(with(server.request(reqwest::Method::HEAD, DATA)));
        r.expect_status(401);
        server.assert_unchanged(&snap, &format!("requests with authorization {auth:?}"));
    }

    // The dashboard's files hold no data: each is open, with its type.
    for &(path, content_type, body) in quorum_server::dashboard::FILES {
        let r = server.get(path);
        r.expect_status(200);
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert_eq!(r.text(), body, "{path}");
    }

    server.set_token(Some("s3cret"));
    let kinds = server.get("/v1/event-kinds");
    kinds.expect_status(200);
    let kinds: Vec<String> = serde_json::from_slice(&kinds.body).expect("a JSON array of names");
    for name in [
        "QUORUM_REPORT_BAD",
        "CHILD_ADDED",
        "CHILD_REMOVED",
        "CHILD_STATE_CHANGE",
    ] {
        assert!(kinds.iter().any(|k| k == name), "{name} in {kinds:?}");
    }
    let list = server.get("/v1/volumes");
    list.expect_status(200);
    assert!(
        !list.text().contains("s3cret"),
        "the listing shows the token"
    );
    server.write_volume("vm", 0, b"authorized");
    assert_bytes_eq(
        &server.read_volume("vm", 0, 10),
        b"authorized",
        "read with the token",
    );
    assert!(
        !server.stderr().contains("s3cret"),
        "the server logged the token:\n{}",
        server.stderr()
    );
}

/// The token may come from the environment (QUORUM_TOKEN).
#[test]
fn the_token_may_come_from_the_environment() {
    let mut server =
        Sandbox::new().serve_with_env(&abc_volume("1MiB", ""), &[("QUORUM_TOKEN", "from-env")]);
    server.get("/healthz").expect_status(200);
    server.get("/v1/volumes").expect_error(401, "unauthorized");
    server.set_token(Some("from-env"));
    server.get("/v1/volumes").expect_status(200);
}

/// 404 no_such_volume for unknown names, including names that try to
/// climb out of a directory; nothing is written.
#[test]
fn unknown_volumes_get_404() {
    let server = server_with("");
    let snap = server.snapshot(&ABC);

    for name in [
        "nope",
        "a.img",
        "vm2",
        "VM",
        "..%2F..",
        "%2e%2e",
        "..",
        "%2e%2e%2fa.img",
        "vm%2F",
    ] {
        let base = format!("/v1/volumes/{name}");
        let requests: [RawRequest<'_>; 7] = [
            ("GET", base.clone(), &[], b""),
            (
                "GET",
                format!("{base}/data"),
                &[("Range", "bytes=0-9")],
                b"",
            ),
            ("PUT", format!("{base}/data?offset=0"), &[], &[9u8; 512]),
            (
                "POST",
                format!("{base}/write-zeroes?offset=0&length=4096"),
                &[],
                b"",
            ),
            ("POST", format!("{base}/flush"), &[], b""),
            (
                "GET",
                format!("{base}/block-status?offset=0&length=4096"),
                &[],
                b"",
            ),
            ("GET", format!("{base}/data"), &[], b""),
        ];
        for (method, target, headers, body) in requests {
            // By hand: an HTTP library would resolve `..` and `%2e%2e`.
            server
                .raw(method, &target, headers, body)
                .expect_error(404, "no_such_volume");
            server.assert_unchanged(&snap, &format!("{method} {target}"));
        }
        let r = server.raw("HEAD", &format!("{base}/data"), &[], b"");
        r.expect_status(404);
    }
}

/// 413 payload_too_large above max_request_bytes, with or without a
/// Content-Length; exactly the limit is accepted.
#[test]
fn bodies_above_the_limit_get_413() {
    let server = server_with("max_request_bytes = \"64KiB\"\n");
    let snap = server.snapshot(&ABC);
    let limit = 64 * KIB as usize;

    // By hand (here and below): a server may answer before it reads the
    // body and close, which an HTTP library may report as a send error.
    server
        .raw(
            "PUT",
            &format!("{DATA}?offset=0"),
            &[],
            &pattern(32, limit + 1),
        )
        .expect_error(413, "payload_too_large");
    server.assert_unchanged(&snap, "a body of the limit + 1");

    // Chunked, so the server learns the size only while reading.
    let body = pattern(33, limit + 1);
    let (first, second) = body.split_at(limit / 2);
    server
        .raw_chunked("PUT", &format!("{DATA}?offset=4096"), &[first, second])
        .expect_error(413, "payload_too_large");
    server.assert_unchanged(&snap, "a chunked body of the limit + 1");

    let data = pattern(34, limit);
    server.write_volume("vm", 1000, &data);
    assert_bytes_eq(
        &server.read_volume("vm", 1000, limit as u64),
        &data,
        "a body of the limit",
    );
}

/// 416 out_of_range for requests wholly or partly past the end, including
/// offsets that would overflow; nothing written; reads carry
/// `Content-Range: bytes */SIZE`.
#[test]
fn requests_outside_the_volume_get_416() {
    let server = server_with("");
    let snap = server.snapshot(&ABC);
    let max = u64::MAX;

    for (offset, len) in [
        (SIZE - 10, 20),
        (SIZE, 1),
        (SIZE + 4096, 4096),
        (max, 1),
        (max - 10, 4096),
        (max - 4095, 4096),
    ] {
        server
            .put(&format!("{DATA}?offset={offset}"), pattern(35, len))
            .expect_error(416, "out_of_range");
        server.assert_unchanged(&snap, &format!("PUT {len} bytes at {offset}"));
    }
    for (offset, len) in [
        (SIZE - 10, 20),
        (0, SIZE + 1),
        (SIZE, 1),
        (max - 10, 4096),
        (10, max),
        (max, max),
    ] {
        server
            .post(&format!(
                "/v1/volumes/vm/write-zeroes?offset={offset}&length={len}"
            ))
            .expect_error(416, "out_of_range");
        server.assert_unchanged(&snap, &format!("write-zeroes {len} bytes at {offset}"));
    }
    for range in [
        format!("bytes={SIZE}-{}", SIZE + 9),
        "bytes=2000000-".to_string(),
        format!("bytes={}-{}", max - 1, max),
    ] {
        let r = server.get_range(DATA, &range);
        r.expect_error(416, "out_of_range");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{SIZE}").as_str()),
            "Content-Range of a refused {range}"
        );
    }
    server
        .get(&format!(
            "/v1/volumes/vm/block-status?offset={SIZE}&length=1"
        ))
        .expect_error(416, "out_of_range");
    server
        .get(&format!(
            "/v1/volumes/vm/block-status?offset={}&length=4096",
            max - 10
        ))
        .expect_error(416, "out_of_range");

    // The last bytes themselves are writable.
    server.write_volume("vm", SIZE - 10, b"0123456789");
    let r = server.get_range(DATA, "bytes=-10");
    r.expect_status(206);
    assert_bytes_eq(&r.body, b"0123456789", "the last 10 bytes");
}

/// Unknown paths get 404 with an error body; unknown methods get 405; and
/// neither writes.
#[test]
fn unknown_paths_and_methods() {
    let server = server_with("");
    let snap = server.snapshot(&ABC);

    for path in [
        "/v1/nope",
        "/v1/volumes/vm/nope",
        "/v2/volumes/vm/data",
        "/healthz/x",
    ] {
        server.get(path).expect_error(404, "not_found");
    }
    for (method, path) in [
        ("DELETE", "/v1/volumes/vm/data"),
        ("PATCH", "/v1/volumes/vm/data?offset=0"),
        ("POST", "/v1/volumes/vm/data?offset=0"),
        ("PUT", "/v1/volumes/vm/flush"),
        ("GET", "/v1/volumes/vm/write-zeroes?offset=0&length=4096"),
    ] {
        server
            .raw(method, path, &[], &[7u8; 512])
            .expect_error(405, "method_not_allowed");
        server.assert_unchanged(&snap, &format!("{method} {path}"));
    }
}

/// 400 `bad_request` for JSON bodies that do not parse, on the two
/// endpoints that take JSON: adding a child and starting a scrub. Nothing
/// is added, no file created, no job started, no event; the same requests
/// well-formed then succeed, so the refusals were for the syntax.
#[test]
fn syntactically_broken_json_bodies_get_400() {
    let server = server_with("child_roots = [\".\"]\nscrub_rate = \"64MiB\"\n");
    let broken: [&[u8]; 9] = [
        b"{\"name\": \"d\", \"uri\": \"d.img\"",
        b"{\"name\": \"d\", \"uri\": \"d.img\",}",
        b"{name: \"d\", uri: \"d.img\"}",
        b"{'name': 'd', 'uri': 'd.img'}",
        b"{\"name\": \"d\", \"uri\": \"d.img\"}}",
        b"{\"name\": \"d\" \"uri\": \"d.img\"}",
        b"{\"name\": \"\xff\", \"uri\": \"d.img\"}",
        b"{\"name\": \"d\x00\", \"uri\": \"d.img\"}",
        b"[",
    ];
    let post = |path: &str, body: &[u8]| {
        server.send(
            server
                .request(reqwest::Method::POST, path)
                .header("content-type", "application/json")
                .body(body.to_vec()),
        )
    };
    let children = || {
        server.get("/v1/volumes/vm").json()["children"]
            .as_array()
            .map(|cs| cs.len())
            .unwrap_or(0)
    };
    for body in broken {
        let what = String::from_utf8_lossy(body).into_owned();
        let r = post("/v1/volumes/vm/children", body);
        assert_eq!(r.status, 400, "add child {what:?}: {}", r.preview());
        r.expect_error(400, "bad_request");
        assert_eq!(children(), 3, "add child {what:?} added something");
        assert!(
            !server.file("d.img").exists(),
            "add child {what:?} created d.img"
        );
    }
    for body in [
        &b"{\"repair\": tru"[..],
        b"{\"repair\": true",
        b"{repair: true}",
        b"{\"repair\": true}}",
        b"{\"repair\": \xff}",
        b"repair=true",
    ] {
        let what = String::from_utf8_lossy(body).into_owned();
        post("/v1/volumes/vm/scrub", body).expect_error(400, "bad_request");
        let jobs = server.get("/v1/volumes/vm/jobs").json();
        let scrubs = jobs
            .as_array()
            .map(|js| js.iter().filter(|j| j["kind"] == "scrub").count())
            .unwrap_or(0);
        assert_eq!(scrubs, 0, "scrub {what:?} started a job: {jobs}");
    }
    assert!(server.all_events().is_empty(), "{:?}", server.all_events());

    // Well-formed, the same requests go through.
    post(
        "/v1/volumes/vm/children",
        b"{\"name\": \"d\", \"uri\": \"d.img\"}",
    )
    .expect_status(201);
    assert_eq!(children(), 4);
    post("/v1/volumes/vm/scrub", b"{\"repair\": true}").expect_status(202);
}
