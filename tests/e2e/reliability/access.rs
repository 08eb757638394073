//! Requests that try to reach what they may not: paths that climb out of
//! the data directory, wrong tokens, unexpected methods. Each gets its
//! SPEC status and writes nothing.

use super::*;

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
