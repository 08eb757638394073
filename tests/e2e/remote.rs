//! Children on remote quorum-servers (the `http` backend): block servers
//! behind a front server, all real processes on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::s3::{Weed, s3_child};
use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";
/// The per-request timeout the front gives its remote children.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(2);

/// A block server: a quorum-server whose volume `blk` is one file child at
/// threshold 1 (the README's recipe), restarted on its first port so that
/// the front finds it again.
pub fn block_server(size: &str, extra: &str) -> Server {
    let config = format!("{extra}\n{}", volume("blk", size, 1, "", &[child("disk")]));
    Sandbox::new().serve_pinned(&config)
}

/// A child table for a remote volume.
pub fn remote_child(name: &str, server: &Server, volume: &str, options: &str) -> String {
    format!(
        "  [[volume.child]]\n  name = \"{name}\"\n  uri = \"http://127.0.0.1:{}/v1/volumes/{volume}\"\n  options = {{ timeout = \"2s\", connect_timeout = \"500ms\"{options} }}\n",
        server.port()
    )
}

/// `n` block servers and the front's child tables for them, named r0, r1...
pub fn block_servers(n: usize) -> (Vec<Server>, Vec<String>) {
    let blocks: Vec<Server> = (0..n).map(|_| block_server("1MiB", "")).collect();
    let children = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| remote_child(&format!("r{i}"), b, "blk", ""))
        .collect();
    (blocks, children)
}

fn front(children: &[String]) -> Server {
    Sandbox::new().serve(&volume("vm", "1MiB", 2, "", children))
}

#[test]
fn a_corrupt_block_server_is_outvoted_and_named() {
    let (blocks, children) = block_servers(3);
    let front = front(&children);
    let data = pattern(7, 256 * 1024);
    front.write_volume("vm", 0, &data);
    for b in &blocks {
        assert_bytes_eq(
            &b.read_file_at("disk.img", 0, data.len()),
            &data,
            "a block server's file",
        );
    }
    // 081-style: overwrite a whole region of r1's file behind its back.
    blocks[1].write_file_at("disk.img", 0, &vec![0x42; 64 * 1024]);
    assert_bytes_eq(
        &front.read_volume("vm", 0, data.len() as u64),
        &data,
        "the front read",
    );
    let events = front.all_events();
    let bad = reports_for(&events, "r1");
    assert_eq!(bad.len(), 1, "{events:?}");
    check_report(bad[0], "vm", "r1", "read", None);
    check_range_within(bad[0], 0, 64 * 1024, 0, 64 * 1024);
    let listing = front.get("/v1/volumes/vm").json();
    assert_eq!(listing["children"][1]["backend"], "http");
}

/// A front of a local file, an S3 child and a remote volume that is itself
/// a quorum of three files.
#[test]
fn nested_quorums_a_store_and_a_local_file() {
    let inner = Sandbox::new().serve(&abc_volume("1MiB", ""));
    let weed = Weed::start();
    let front = front(&[
        child("local"),
        s3_child("store", &weed, "nested"),
        remote_child("quorum3", &inner, "vm", ""),
    ]);
    let data = pattern(9, 300_000);
    front.write_volume("vm", 12_345, &data);
    assert_bytes_eq(
        &front.read_volume("vm", 12_345, data.len() as u64),
        &data,
        "round trip",
    );
    // A bad file inside the inner quorum is outvoted there, so the front's
    // child "quorum3" never loses a vote.
    inner.corrupt_file("b.img", 20_000, 100);
    assert_bytes_eq(
        &front.read_volume("vm", 12_345, data.len() as u64),
        &data,
        "read",
    );
    assert_eq!(reports_for(&inner.all_events(), "b").len(), 1);
    assert!(front.all_events().is_empty(), "{:?}", front.all_events());
    // A bad local file is outvoted at the front.
    front.corrupt_file("local.img", 50_000, 10);
    assert_bytes_eq(
        &front.read_volume("vm", 12_345, data.len() as u64),
        &data,
        "read",
    );
    let events = front.all_events();
    let bad = reports_for(&events, "local");
    assert_eq!(bad.len(), 1);
    check_range_within(bad[0], 49_152, 53_248, 50_000, 50_010);
}

/// Runs `f` and asserts it took less than `limit`.
#[track_caller]
fn within<T>(limit: Duration, what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    assert!(took < limit, "{what} took {took:?}, more than {limit:?}");
    out
}

#[test]
fn dead_and_hung_block_servers() {
    let (mut blocks, children) = block_servers(3);
    let front = front(&children);
    let base = pattern(1, 64 * 1024);
    front.write_volume("vm", 0, &base);

    // One dead: reads and writes go on, and every failed write is reported.
    blocks[0].kill();
    let limit = REMOTE_TIMEOUT + Duration::from_secs(2);
    for i in 0..5u64 {
        let data = pattern(100 + i, 4096);
        within(limit, "a write with r0 dead", || {
            front
                .put(&format!("{DATA}?offset={}", i * 4096), data.clone())
                .expect_status(204);
        });
        let back = within(limit, "a read with r0 dead", || {
            front.read_volume("vm", i * 4096, 4096)
        });
        assert_bytes_eq(&back, &data, "read with r0 dead");
    }
    let errors: Vec<_> = reports_for(&front.all_events(), "r0")
        .into_iter()
        .filter(|e| e["data"]["type"] == "write")
        .cloned()
        .collect();
    // Failures within a second are folded in the log; the metrics count each.
    assert!(!errors.is_empty());
    for e in &errors {
        assert!(
            e["data"]["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{e}"
        );
    }
    let counted = front.metric(r#"quorum_child_errors_total{volume="vm",child="r0",op="write"}"#);
    // At least one failure per write; the resync's attempts on the dead
    // r0 count too.
    assert!(counted >= 5.0, "one failure per write: {counted}");

    // Two gone (one dead, one hung): 503 within the timeout, no hang.
    blocks[1].signal("STOP");
    let limit = REMOTE_TIMEOUT * 2 + Duration::from_secs(2);
    within(limit, "a write with two children gone", || {
        front
            .put(&format!("{DATA}?offset=0"), vec![1; 4096])
            .expect_error(503, "quorum_failure");
    });
    within(limit, "a read with two children gone", || {
        front
            .get_range(DATA, "bytes=0-4095")
            .expect_error(503, "quorum_failure");
    });
    assert!(!named(&front.all_events(), "QUORUM_FAILURE").is_empty());

    // The hung one wakes up and the dead one restarts on its port: the
    // front serves again without a restart of its own, once each child's
    // breaker lets a request try it again (within seconds).
    blocks[1].signal("CONT");
    blocks[0].restart();
    let data = pattern(200, 8192);
    wait_until("the front to write again", || {
        front
            .put(&format!("{DATA}?offset=8192"), data.clone())
            .status
            == 204
    });
    assert_bytes_eq(
        &front.read_volume("vm", 8192, 8192),
        &data,
        "read after recovery",
    );
    // The write that failed its quorum left offset 0 undefined (r2 took it,
    // r1 may have); its client writes it again, as after any 503.
    front
        .put(&format!("{DATA}?offset=0"), pattern(201, 4096))
        .expect_status(204);
    // What r0 missed while it was down is copied back by the resync.
    let mut listing = serde_json::Value::Null;
    let resynced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("r0 to be resynced", || {
            listing = front.get("/v1/volumes/vm").json();
            listing["children"][0]["state"] == "healthy"
        })
    }));
    assert!(
        resynced.is_ok(),
        "r0 was not resynced: {listing}\n{}",
        front.stderr()
    );
    let disk = |b: &Server| b.read_file("disk.img");
    assert!(
        disk(&blocks[0]) == disk(&blocks[2]),
        "r0 differs after its resync"
    );
    assert_bytes_eq(
        &blocks[0].read_file_at("disk.img", 8192, 8192),
        &data,
        "the restarted server's file",
    );
}

#[test]
fn a_wrong_token_is_a_clear_child_error() {
    let block = block_server("1MiB", "[auth]\ntoken = \"right\"\n");
    let sandbox = Sandbox::new();
    let config = volume(
        "vm",
        "1MiB",
        1,
        "",
        &[
            child("local"),
            remote_child("guarded", &block, "blk", ", token = \"n0t-the-t0ken\""),
        ],
    );
    let refused = sandbox.start_expecting_failure(&config);
    assert!(!refused.status.success());
    let line = refused.stderr.trim();
    assert!(line.contains("401"), "{line}");
    assert!(line.contains("\"guarded\""), "{line}");
    assert!(line.contains("token"), "{line}");
    assert!(!line.contains("n0t-the-t0ken"), "the secret leaked: {line}");
    // With the right token it serves.
    let config = config.replace("\"n0t-the-t0ken\"", "\"right\"");
    let front = Sandbox::new().serve(&config);
    front.write_volume("vm", 0, &[5; 100]);
    assert_bytes_eq(
        &front.read_volume("vm", 0, 100),
        &[5; 100],
        "read through the token",
    );
}

#[test]
fn the_http_backend_conforms() {
    let size = quorum_backends::conformance::SIZE;
    let block = block_server(&size.to_string(), "");
    let uri = format!("http://127.0.0.1:{}/v1/volumes/blk", block.port());
    let options = BTreeMap::new();
    let backend = quorum_backends::open(quorum_backends::ChildSource {
        uri: &uri,
        options: &options,
        base_dir: Path::new("."),
        size: Some(size),
        faults: &[],
        mark: "test",
        confine: None,
        create: true,
    })
    .expect("open the remote child");
    quorum_backends::conformance::run(&*backend);
}
