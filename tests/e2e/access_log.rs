//! The access log (issue 17): one `info` line per HTTP request, target
//! `quorum::access`, with the method, the path, the status, the bytes of
//! the answer and its duration, as structured fields under `--log-format
//! json`; never a token, never the query.

use serde_json::Value;

use crate::util::*;

const TOKEN: &str = "access-log-token-9d2e";
const WRONG_TOKEN: &str = "access-log-wrong-token-41aa";

/// The access lines the server wrote so far, as JSON objects.
fn access_lines(server: &Server) -> Vec<Value> {
    server
        .stderr()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .filter(|v: &Value| v["target"] == "quorum::access")
        .collect()
}

/// The access lines of `method path` answered `status`.
fn lines_of(lines: &[Value], method: &str, path: &str, status: u16) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| {
            let f = &v["fields"];
            f["method"] == method && f["path"] == path && f["status"] == status
        })
        .cloned()
        .collect()
}

/// A read, a write, a refused request and an unauthorized one are one
/// line each with their fields; the bytes are the answer's body; neither
/// token nor query reaches the log. A read the client gives up on is
/// logged when the server notices, with what it sent and `complete`
/// false.
#[test]
fn each_request_is_one_structured_access_line_without_token_or_query() {
    let config = format!("[auth]\ntoken = \"{TOKEN}\"\n{}", abc_volume("64MiB", ""));
    let mut server = Sandbox::new().serve_with_args(&config, &["--log-format", "json"]);
    server.set_token(Some(TOKEN));
    server.write_volume("vm", 4096, &pattern(3, 8192));
    let read = server.get_range("/v1/volumes/vm/data", "bytes=4096-12287");
    read.expect_status(206);
    assert_eq!(read.body.len(), 8192);
    let volumes = server.get("/v1/volumes");
    volumes.expect_status(200);
    server
        .get("/v1/volumes/nope")
        .expect_error(404, "no_such_volume");
    server.set_token(Some(WRONG_TOKEN));
    server.get("/v1/volumes").expect_error(401, "unauthorized");

    let data = "/v1/volumes/vm/data";
    wait_until("the access line of the 401", || {
        !lines_of(&access_lines(&server), "GET", "/v1/volumes", 401).is_empty()
    });
    let lines = access_lines(&server);
    let one = |method: &str, path: &str, status: u16| -> Value {
        let found = lines_of(&lines, method, path, status);
        assert_eq!(
            found.len(),
            1,
            "access lines of {method} {path} {status}: {found:?}\nall: {lines:#?}"
        );
        found[0].clone()
    };

    let read_line = one("GET", data, 206);
    assert_eq!(read_line["level"], "INFO", "{read_line}");
    assert_eq!(read_line["fields"]["message"], "request", "{read_line}");
    assert_eq!(read_line["fields"]["bytes"], 8192, "{read_line}");
    assert_eq!(read_line["fields"]["complete"], true, "{read_line}");
    let took = read_line["fields"]["duration_ms"]
        .as_f64()
        .expect("duration_ms");
    assert!((0.0..60_000.0).contains(&took), "{read_line}");

    let write_line = one("PUT", data, 204);
    assert_eq!(write_line["fields"]["bytes"], 0, "{write_line}");
    let list_line = one("GET", "/v1/volumes", 200);
    assert_eq!(
        list_line["fields"]["bytes"],
        volumes.body.len(),
        "{list_line}"
    );
    one("GET", "/v1/volumes/nope", 404);
    let refused = one("GET", "/v1/volumes", 401);
    assert!(
        refused["fields"]["bytes"].as_u64().is_some_and(|b| b > 0),
        "{refused}"
    );

    let stderr = server.stderr();
    for secret in [TOKEN, WRONG_TOKEN, "offset=", "Bearer"] {
        assert!(
            !stderr.contains(secret),
            "{secret:?} is in the log:\n{stderr}"
        );
    }
}

#[test]
fn a_read_cut_short_by_the_client_is_logged_incomplete() {
    use std::io::Read as _;

    let server =
        Sandbox::new().serve_with_args(&abc_volume("64MiB", ""), &["--log-format", "json"]);
    let mut answer = server
        .request(reqwest::Method::GET, "/v1/volumes/vm/data")
        .send()
        .expect("start reading the whole volume");
    assert_eq!(answer.status(), 200);
    let mut first = vec![0u8; 64 * 1024];
    answer.read_exact(&mut first).expect("read the first bytes");
    drop(answer);

    let data = "/v1/volumes/vm/data";
    wait_until("the access line of the cut read", || {
        !lines_of(&access_lines(&server), "GET", data, 200).is_empty()
    });
    let line = lines_of(&access_lines(&server), "GET", data, 200).remove(0);
    assert_eq!(line["fields"]["complete"], false, "{line}");
    let bytes = line["fields"]["bytes"].as_u64().expect("bytes");
    assert!(bytes < 64 * MIB, "{line}");
}
