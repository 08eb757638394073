//! Issue 12, item 1: a caller of the API reaches only what the config
//! allows. A child added at run time cannot create, open or overwrite a
//! file outside `child_roots`, cannot claim another child's storage (of this
//! volume, another volume or another server), cannot make the server
//! contact an endpoint outside `allowed_endpoints`, and learns nothing from
//! the errors (no file size, no remote body).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::util::*;

/// Adds child `name` at `uri` with `options` to volume `vol`.
fn add_to(server: &Server, vol: &str, name: &str, uri: &str, options: Value) -> Resp {
    let body = json!({ "name": name, "uri": uri, "options": options }).to_string();
    server.send(
        server
            .request(Method::POST, &format!("/v1/volumes/{vol}/children"))
            .body(body),
    )
}

fn child_names(server: &Server, vol: &str) -> Vec<String> {
    server.get(&format!("/v1/volumes/{vol}")).json()["children"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A loopback listener that counts the connections it gets and answers
/// each request with `answer` (a whole HTTP response), remembering the
/// request heads. Stops by itself after `lifetime`.
struct Spy {
    port: u16,
    connections: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Spy {
    fn start(answer: &'static str, lifetime: Duration) -> Spy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the spy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), heads.clone());
        thread::spawn(move || {
            let end = Instant::now() + lifetime;
            while Instant::now() < end {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        let seen = seen.clone();
                        thread::spawn(move || answer_all(stream, answer, &seen));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Spy {
            port,
            connections,
            heads,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Answers up to 10 requests on one connection, each with `answer`.
fn answer_all(mut stream: TcpStream, answer: &str, seen: &std::sync::Mutex<Vec<String>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..10 {
        let mut head = Vec::new();
        while matches!(parse_request_head(&head), Ok(None)) {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        seen.lock()
            .expect("heads")
            .push(String::from_utf8_lossy(&head).into_owned());
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

const SECRET_BODY: &str = "SECRET-REMOTE-BODY-7f3a";
const LEAKY_500: &str = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{\"error\":{\"code\":\"x\",\"message\":\"SECRET-REMOTE-BODY-7f3a.....\"}}";

#[test]
fn without_child_roots_no_file_child_is_added_and_nothing_is_created() {
    let sandbox = Sandbox::new();
    let target = sandbox.file("new.img");
    let server = sandbox.serve(&abc_volume("1MiB", ""));
    for uri in [
        format!("file://{}", target.display()),
        "new.img".to_string(),
        "../../new.img".to_string(),
    ] {
        let message = add_to(&server, "vm", "x", &uri, json!({})).expect_error(403, "forbidden");
        assert!(message.contains("child_roots"), "{uri}: {message}");
    }
    assert!(!target.exists(), "a refused child created {target:?}");
    assert_eq!(child_names(&server, "vm"), ["a", "b", "c"]);
}

#[test]
fn file_children_stay_under_child_roots_whatever_the_path_says() {
    let sandbox = Sandbox::new();
    let roots = sandbox.file("roots");
    let outside = sandbox.file("outside");
    std::fs::create_dir_all(&roots).expect("roots");
    std::fs::create_dir_all(&outside).expect("outside");
    std::os::unix::fs::symlink(&outside, roots.join("escape")).expect("dir symlink");
    std::os::unix::fs::symlink(outside.join("f.img"), roots.join("f.img")).expect("file symlink");
    let config = format!("child_roots = [\"roots\"]\n{}", abc_volume("1MiB", ""));
    let server = sandbox.serve(&config);
    let attempts = [
        format!("file://{}", outside.join("a.img").display()),
        format!("file://{}/../outside/b.img", roots.display()),
        "roots/../outside/c.img".to_string(),
        "roots/escape/d.img".to_string(),
        "roots/f.img".to_string(),
        format!("file://{}", roots.display()),
        "roots/missing-dir/e.img".to_string(),
    ];
    for uri in &attempts {
        add_to(&server, "vm", "x", uri, json!({})).expect_error(403, "forbidden");
    }
    let created: Vec<_> = std::fs::read_dir(&outside)
        .expect("list outside")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(
        created.is_empty(),
        "files created outside the roots: {created:?}"
    );
    assert!(!roots.join("missing-dir").exists());
    // Under the root it works, through the path or a file:// uri.
    add_to(&server, "vm", "d", "roots/d.img", json!({})).expect_status(201);
    let e = format!("file://{}", roots.join("e.img").display());
    add_to(&server, "vm", "e", &e, json!({})).expect_status(201);
    assert_eq!(child_names(&server, "vm"), ["a", "b", "c", "d", "e"]);
}

#[test]
fn an_existing_file_is_used_only_if_empty_or_this_volumes_own_and_errors_tell_no_size() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.file("roots")).expect("roots");
    // A stranger's file of the volume's size, and one of another size.
    sandbox.fill_file("roots/foreign.img", 0x5a, MIB);
    sandbox.fill_file("roots/odd.img", 0x5b, 1301);
    sandbox.create_file("roots/empty.img", 0);
    let config = format!("child_roots = [\"roots\"]\n{}", abc_volume("1MiB", ""));
    let server = sandbox.serve(&config);
    let before = server.snapshot(&["roots/foreign.img", "roots/odd.img"]);
    for (name, file) in [("f", "roots/foreign.img"), ("o", "roots/odd.img")] {
        let message = add_to(&server, "vm", name, file, json!({})).expect_error(409, "conflict");
        for size in ["1301", "1048576"] {
            assert!(
                !message.contains(size),
                "the error tells a file's size: {message}"
            );
        }
    }
    // /etc/passwd: forbidden, and nothing about its size.
    let passwd_size = std::fs::metadata("/etc/passwd")
        .map(|m| m.len())
        .unwrap_or(0);
    let message =
        add_to(&server, "vm", "p", "file:///etc/passwd", json!({})).expect_error(403, "forbidden");
    assert!(
        !message.contains(&passwd_size.to_string()),
        "the error tells /etc/passwd's size: {message}"
    );
    server.assert_unchanged(&before, "a refused child's file");
    // An empty file is adopted: sized and synced.
    add_to(&server, "vm", "e", "roots/empty.img", json!({})).expect_status(201);
    assert_eq!(
        std::fs::metadata(server.file("roots/empty.img"))
            .expect("stat")
            .len(),
        MIB
    );
    // Removed, it can come back: it is this volume's own now.
    wait_until("e to sync", || {
        server.get("/v1/volumes/vm").json()["children"][3]["state"] == "healthy"
    });
    server
        .send(server.request(Method::DELETE, "/v1/volumes/vm/children/e"))
        .expect_status(204);
    add_to(&server, "vm", "e", "roots/empty.img", json!({})).expect_status(201);
}

#[test]
fn storage_of_another_volume_or_another_server_is_refused() {
    let shared = Sandbox::new();
    let roots = shared.file("roots");
    std::fs::create_dir_all(&roots).expect("roots");
    // Server 1: volumes v1 and v2, their children in the shared root.
    let s1 = Sandbox::new();
    let child_at = |name: &str| {
        format!(
            "  [[volume.child]]\n  name = \"{name}\"\n  uri = \"{}\"\n",
            roots.join(format!("{name}.img")).display()
        )
    };
    let config = format!(
        "child_roots = [\"{}\"]\n{}{}",
        roots.display(),
        volume("v1", "1MiB", 1, "", &[child_at("p"), child_at("q")]),
        volume("v2", "1MiB", 1, "", &[child_at("r")]),
    );
    let server = s1.serve(&config);
    server.write_volume("v1", 0, &pattern(3, 4096));
    let p = roots.join("p.img");
    let before = std::fs::read(&p).expect("read p");
    // v2 may not take v1's file, by any spelling.
    let link = roots.join("link-to-p.img");
    std::fs::hard_link(&p, &link).expect("hard link");
    for uri in [p.display().to_string(), link.display().to_string()] {
        let message = add_to(&server, "v2", "x", &uri, json!({})).expect_error(409, "conflict");
        assert!(message.contains("\"v1\""), "{uri}: {message}");
    }
    // Another server with the same root cannot take it either.
    let s2 = Sandbox::new();
    let other = s2.serve(&format!(
        "child_roots = [\"{}\"]\n{}",
        roots.display(),
        volume("v1", "1MiB", 1, "", &[child("mine")])
    ));
    add_to(&other, "v1", "x", &p.display().to_string(), json!({})).expect_error(409, "conflict");
    assert_eq!(std::fs::read(&p).expect("read p"), before, "p was changed");
    assert_eq!(child_names(&server, "v2"), ["r"]);
    assert_eq!(child_names(&other, "v1"), ["mine"]);
    drop(other);
    drop(server);
    // In the config file, two volumes on one file refuse to start, before
    // anything is made: neither the file nor the data_dir.
    let twice = Sandbox::new();
    let child_one = "  [[volume.child]]\n  name = \"one\"\n  uri = \"one.img\"\n".to_string();
    let failed = twice.start_expecting_failure(&format!(
        "{}{}",
        volume("v1", "1MiB", 1, "", std::slice::from_ref(&child_one)),
        volume("v2", "1MiB", 1, "", &[child_one])
    ));
    let line = failed.one_line();
    assert!(
        line.contains("same storage") && line.contains("\"v1\"") && line.contains("\"v2\""),
        "{line}"
    );
    for made in ["one.img", "quorum-data"] {
        assert!(!twice.file(made).exists(), "the refused start made {made}");
    }
}

#[test]
fn remote_children_reach_only_allowed_endpoints_and_never_echo_them() {
    let spy = Spy::start(LEAKY_500, Duration::from_secs(60));
    let sandbox = Sandbox::new();
    let mut server = sandbox.serve_with_env(
        &abc_volume("1MiB", ""),
        &[("QUORUM_TOKEN", "callers-token")],
    );
    server.set_token(Some("callers-token"));
    let http = spy.url("/v1/volumes/x");
    add_to(&server, "vm", "h", &http, json!({})).expect_error(403, "forbidden");
    let s3_options = json!({
        "aws_endpoint": spy.url(""),
        "aws_allow_http": "true",
        "aws_region": "us-east-1",
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
    });
    add_to(&server, "vm", "s", "s3://bucket/vm", s3_options.clone()).expect_error(403, "forbidden");
    assert_eq!(spy.connections(), 0, "a refused child was contacted");
    drop(server);

    // Allowed: contacted, but its answer is not echoed, and the caller's
    // token is not sent.
    let sandbox = Sandbox::new();
    let config = format!(
        "allowed_endpoints = [\"{}\"]\n{}",
        spy.url(""),
        abc_volume("1MiB", "")
    );
    let mut server = sandbox.serve_with_env(&config, &[("QUORUM_TOKEN", "callers-token")]);
    server.set_token(Some("callers-token"));
    let message = add_to(&server, "vm", "h", &http, json!({})).expect_error(400, "bad_request");
    assert!(
        !message.contains(SECRET_BODY),
        "the remote's body is echoed: {message}"
    );
    let message = add_to(&server, "vm", "s", "s3://bucket/vm", s3_options.clone())
        .expect_error(400, "bad_request");
    assert!(
        !message.contains(SECRET_BODY),
        "the remote's body is echoed: {message}"
    );
    assert!(
        spy.connections() > 0,
        "the allowed endpoint was never contacted"
    );
    let heads = spy.heads.lock().expect("heads").clone();
    assert!(!heads.is_empty());
    for head in &heads {
        assert!(
            !head.contains("callers-token"),
            "the caller's token was forwarded: {head}"
        );
    }
    // Options that could send the server elsewhere are refused at run time.
    for (key, value) in [
        ("proxy_url", "http://127.0.0.1:1"),
        ("aws_metadata_endpoint", "http://127.0.0.1:1"),
        ("aws_virtual_hosted_style_request", "true"),
    ] {
        let mut options = s3_options.clone();
        options[key] = json!(value);
        add_to(&server, "vm", "s", "s3://bucket/vm", options).expect_error(403, "forbidden");
    }
    assert_eq!(child_names(&server, "vm"), ["a", "b", "c"]);
}

#[test]
fn child_names_follow_the_volume_name_rule() {
    let sandbox = Sandbox::new();
    let config = format!("child_roots = [\".\"]\n{}", abc_volume("1MiB", ""));
    let server = sandbox.serve(&config);
    for name in [
        "x".repeat(65),
        "a b".into(),
        "../x".into(),
        "é".into(),
        String::new(),
    ] {
        add_to(&server, "vm", &name, "n.img", json!({})).expect_error(400, "bad_request");
    }
    assert!(!server.file("n.img").exists());
    let metrics = server.get("/metrics").text();
    assert!(
        metrics.len() < 64 * 1024,
        "metrics grew: {} bytes",
        metrics.len()
    );
}

/// Options of a run-time S3 child on `weed`, with its own keys.
fn s3_options(endpoint: &str) -> Value {
    json!({
        "aws_endpoint": endpoint,
        "aws_allow_http": "true",
        "aws_region": "us-east-1",
        "aws_access_key_id": crate::s3::ACCESS_KEY,
        "aws_secret_access_key": crate::s3::SECRET_KEY,
    })
}

#[test]
fn another_volumes_s3_prefix_under_another_spelling_is_refused() {
    let weed = crate::s3::Weed::start();
    let endpoint = weed.endpoint();
    let port = endpoint.rsplit(':').next().expect("a port").to_string();
    let sandbox = Sandbox::new();
    let config = format!(
        "{}{}",
        volume(
            "va",
            "1MiB",
            1,
            "",
            &[crate::s3::s3_child("s1", &weed, "va")]
        ),
        volume("vb", "1MiB", 1, "", &[child("b")]),
    );
    let server = sandbox.serve(&config);
    server.write_volume("va", 0, &pattern(5, 4096));
    let bucket = crate::s3::BUCKET;
    // Spellings that reach the same prefix: refused as another child's
    // storage (409) or as no plain endpoint or prefix (403).
    for (uri, endpoint) in [
        (format!("s3://{bucket}/va"), endpoint.clone()),
        (format!("s3://{bucket}/va/"), endpoint.clone()),
        (
            format!("s3://{bucket}/va"),
            format!("HTTP://127.0.0.1:0{port}"),
        ),
        (format!("s3://{bucket}//va"), endpoint.clone()),
        (format!("s3://{bucket}/./va"), endpoint.clone()),
        (format!("s3://{bucket}/va"), format!("{endpoint}/.")),
        (format!("s3://{bucket}/va"), format!("{endpoint}/?x=1")),
        (format!("s3://{bucket}/va"), endpoint.replace("//", "//x@")),
    ] {
        let r = add_to(&server, "vb", "st", &uri, s3_options(&endpoint));
        assert!(
            r.status == 403 || r.status == 409,
            "{uri} at {endpoint}: {} {}",
            r.status,
            r.preview()
        );
    }
    // Without its own keys, or with a region that is a host, it is refused
    // before anything is contacted.
    let mut keyless = s3_options(&endpoint);
    keyless
        .as_object_mut()
        .expect("options")
        .remove("aws_secret_access_key");
    add_to(&server, "vb", "st", &format!("s3://{bucket}/new"), keyless)
        .expect_error(403, "forbidden");
    // One setting given twice, under two spellings, is refused.
    let mut twice = s3_options(&endpoint);
    twice["endpoint"] = json!(format!("{endpoint}/{bucket}/va"));
    add_to(&server, "vb", "st", &format!("s3://{bucket}/new"), twice)
        .expect_error(403, "forbidden");
    let mut hostile = s3_options(&endpoint);
    hostile["aws_region"] = json!("x@127.0.0.1:1/");
    add_to(&server, "vb", "st", &format!("s3://{bucket}/new"), hostile)
        .expect_error(403, "forbidden");
    assert_eq!(child_names(&server, "vb"), ["b"]);
    assert_eq!(
        server.read_volume("va", 0, 4096),
        pattern(5, 4096),
        "va's data"
    );
    // A prefix of its own is fine, and once removed it can come back.
    add_to(
        &server,
        "vb",
        "st",
        &format!("s3://{bucket}/vb"),
        s3_options(&endpoint),
    )
    .expect_status(201);
}

#[test]
fn a_run_time_child_is_reopened_confined_at_start_and_never_created_again() {
    let sandbox = Sandbox::new();
    let roots = sandbox.file("roots");
    let outside = sandbox.file("outside");
    std::fs::create_dir_all(roots.join("sub")).expect("roots");
    std::fs::create_dir_all(&outside).expect("outside");
    let config = format!("child_roots = [\"roots\"]\n{}", abc_volume("1MiB", ""));
    let mut server = sandbox.serve(&config);
    add_to(&server, "vm", "r", "roots/sub/r.img", json!({})).expect_status(201);
    wait_until("r to sync", || {
        server.get("/v1/volumes/vm").json()["children"][3]["state"] == "healthy"
    });
    server.stop();
    std::fs::rename(roots.join("sub"), server.file("sub-moved")).expect("move sub");
    std::os::unix::fs::symlink(&outside, roots.join("sub")).expect("symlink");
    // The server starts without r: a child a caller controls cannot keep
    // it down, nor make it follow the link.
    server.restart();
    assert!(
        !outside.join("r.img").exists(),
        "a run-time child was created outside the root at start"
    );
    let r = server.get("/v1/volumes/vm").json()["children"][3].clone();
    assert_eq!(r["name"], "r", "{r}");
    assert_eq!(r["state"], "failed", "{r}");
    assert_eq!(r["backend"], "unopened", "{r}");
    server.write_volume("vm", 0, &pattern(7, 4096));
    assert_eq!(server.read_volume("vm", 0, 4096), pattern(7, 4096));
    let r = server.get("/v1/volumes/vm").json()["children"][3].clone();
    assert_eq!(r["stale_bytes"], 4096, "r missed the write: {r}");
    server
        .send(server.request(Method::DELETE, "/v1/volumes/vm/children/r"))
        .expect_status(204);
    // An empty file with another name elsewhere (a hard link) is not
    // adopted: marking and sizing it would change the other name too.
    std::fs::write(outside.join("empty"), b"").expect("an empty file");
    std::fs::hard_link(outside.join("empty"), roots.join("linked.img")).expect("hard link");
    add_to(&server, "vm", "l", "roots/linked.img", json!({})).expect_error(403, "forbidden");
    assert_eq!(
        std::fs::metadata(outside.join("empty"))
            .expect("stat")
            .len(),
        0
    );
}

#[test]
fn adds_are_bounded_in_size_count_and_time() {
    let sandbox = Sandbox::new();
    // A server that accepts and never answers.
    let tarpit = TcpListener::bind("127.0.0.1:0").expect("tarpit");
    let tarpit_url = format!(
        "http://127.0.0.1:{}",
        tarpit.local_addr().expect("addr").port()
    );
    let config = format!(
        "child_roots = [\".\"]\nallowed_endpoints = [\"{tarpit_url}\"]\n{}",
        volume("vm", "1MiB", 1, "", &[child("a")])
    );
    let server = Arc::new(sandbox.serve(&config));
    // Too long a uri or option, a host in a file uri, too long a timeout.
    let huge = format!("{}long.img", "/".repeat(1_500_000));
    let body = json!({ "name": "x", "uri": huge, "options": {} }).to_string();
    let status = server.send_oversized(
        server
            .request(Method::POST, "/v1/volumes/vm/children")
            .body(body),
    );
    assert!(
        matches!(status, Some(413) | None),
        "a 1.5 MB uri: {status:?}"
    );
    let long = format!("{}long.img", "/".repeat(2_000));
    add_to(&server, "vm", "x", &long, json!({})).expect_error(400, "bad_request");
    add_to(
        &server,
        "vm",
        "x",
        "x.img",
        json!({ "k": "v".repeat(2000) }),
    )
    .expect_error(400, "bad_request");
    add_to(&server, "vm", "x", "file://elsewhere/x.img", json!({}))
        .expect_error(400, "bad_request");
    let remote = format!("{tarpit_url}/v1/volumes/vm");
    add_to(&server, "vm", "x", &remote, json!({ "timeout": "1h" })).expect_error(403, "forbidden");
    add_to(
        &server,
        "vm",
        "x",
        &format!("{tarpit_url}/v1/volumes/vm?x=1"),
        json!({}),
    )
    .expect_error(403, "forbidden");
    // While one add waits on a hung host, another is refused at once.
    let slow = {
        let (server, remote) = (server.clone(), remote.clone());
        thread::spawn(move || {
            add_to(
                &server,
                "vm",
                "h",
                &remote,
                json!({ "timeout": "3s", "connect_timeout": "1s" }),
            )
        })
    };
    let accepted = tarpit.accept();
    assert!(accepted.is_ok(), "the allowed host was not contacted");
    let started = Instant::now();
    add_to(&server, "vm", "y", "y.img", json!({})).expect_error(503, "busy");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    slow.join()
        .expect("the slow add")
        .expect_error(400, "bad_request");
    // No more than 32 children.
    for i in 1..32 {
        add_to(
            &server,
            "vm",
            &format!("c{i}"),
            &format!("c{i}.img"),
            json!({}),
        )
        .expect_status(201);
    }
    add_to(&server, "vm", "c32", "c32.img", json!({})).expect_error(409, "conflict");
    assert!(!server.file("c32.img").exists());
    let saved = std::fs::read_to_string(server.file("quorum-data/membership/vm.json"))
        .expect("the saved membership");
    assert!(
        saved.len() < 64 * 1024,
        "the saved membership is {} bytes",
        saved.len()
    );
}
