//! SPEC 11, I/O limits: QEMU's throttle semantics per volume, in
//! `[volume.limits]` and at run time (`PUT /v1/volumes/{vol}/limits`),
//! held by HTTP clients and by fio over NBD alike; a burst as QEMU allows
//! it; a bad limit refused with nothing changed.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const LIMITS: &str = "/v1/volumes/vm/limits";

/// Volume vm (three files, 16 MiB) with `limits` as its `[volume.limits]`,
/// served over NBD too.
fn limited(limits: &str) -> String {
    with_nbd(&abc_volume(
        "16MiB",
        &format!("[volume.limits]\n{limits}\n"),
    ))
}

/// `clients` HTTP clients, each sending 4 KiB requests (a write, then a
/// read) one after the other as fast as they are answered, until `window`
/// has passed. Returns when each request was answered, from the start.
fn http_load(server: &Server, clients: usize, window: Duration) -> Vec<Duration> {
    let started = Instant::now();
    let mut done: Vec<Duration> = thread::scope(|s| {
        let workers: Vec<_> = (0..clients as u64)
            .map(|c| {
                s.spawn(move || {
                    let mut done = Vec::new();
                    let data = pattern(c, 4096);
                    let mut i = 0u64;
                    while started.elapsed() < window {
                        let offset = (c * 64 + i % 64) * 4096;
                        if i % 2 == 0 {
                            server
                                .put(
                                    &format!("/v1/volumes/vm/data?offset={offset}"),
                                    data.clone(),
                                )
                                .expect_status(204);
                        } else {
                            let range = format!("bytes={offset}-{}", offset + 4095);
                            server
                                .get_range("/v1/volumes/vm/data", &range)
                                .expect_status(206);
                        }
                        done.push(started.elapsed());
                        i += 1;
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a client thread"))
            .collect()
    });
    done.sort();
    done
}

/// How many of `done` fall in `from..to` seconds.
fn between(done: &[Duration], from: f64, to: f64) -> usize {
    done.iter()
        .filter(|d| (from..to).contains(&d.as_secs_f64()))
        .count()
}

/// Asserts that `rate` is within 10% of `limit`.
#[track_caller]
fn within_ten_percent(rate: f64, limit: f64, what: &str) {
    eprintln!("{what}: {rate:.1} requests a second (limit {limit})");
    assert!(
        (rate - limit).abs() <= limit * 0.1,
        "{what}: {rate:.1} requests a second, more than 10% away from the limit {limit}"
    );
}

/// The server's count of successful reads and writes (GET .../stats).
fn stats_ops(server: &Server) -> u64 {
    let stats = server.get("/v1/volumes/vm/stats").json();
    ["read", "write"]
        .iter()
        .map(|op| {
            stats["ops"][op]["ops"]
                .as_u64()
                .unwrap_or_else(|| panic!("no ops.{op}.ops in {stats}"))
        })
        .sum()
}

#[test]
fn an_iops_limit_holds_over_http_and_changes_at_run_time() {
    let server = Sandbox::new().serve(&limited("iops_total = 100"));
    let limits = server.get(LIMITS).json();
    assert_eq!(limits["iops_total"], 100, "{limits}");
    assert_eq!(limits["iops_total_max"], 0, "{limits}");
    assert_eq!(limits["iops_total_max_length"], 1, "{limits}");

    let window = Duration::from_secs(10);
    let first = http_load(&server, 8, window);
    let in_window = between(&first, 0.0, window.as_secs_f64());
    within_ten_percent(in_window as f64 / 10.0, 100.0, "8 HTTP clients over 10 s");
    // Every second, not only the mean: no second goes much faster.
    for second in 1..10 {
        let n = between(&first, f64::from(second), f64::from(second + 1));
        assert!(n <= 115, "second {second}: {n} requests");
    }

    // A new limit takes effect at once, from empty buckets.
    let put = server.put(LIMITS, br#"{"iops_total": 50}"#.to_vec());
    put.expect_status(200);
    assert_eq!(put.json()["iops_total"], 50);
    assert_eq!(server.get(LIMITS).json()["iops_total"], 50);
    let second = http_load(&server, 8, Duration::from_secs(4));
    within_ten_percent(
        between(&second, 0.0, 4.0) as f64 / 4.0,
        50.0,
        "8 HTTP clients over 4 s after PUT iops_total = 50",
    );
    // The server counted every one of them, and nothing else.
    assert_eq!(stats_ops(&server), (first.len() + second.len()) as u64);
}

#[test]
fn an_iops_limit_holds_over_nbd_for_fio() {
    let server = Sandbox::new().serve(&limited("iops_total = 100"));
    let uri = format!("--uri={}", nbd_url(&server, "vm"));
    // fio's engine says "connected" on stdout: the report goes to a file.
    let report_file = server.file("fio.json");
    let output = format!("--output={}", report_file.display());
    // Four connections of queue depth 4, random reads and writes, as fast
    // as they are answered for 10 s.
    run_client(
        "fio",
        &[
            "--name=limited",
            "--ioengine=nbd",
            &uri,
            "--rw=randrw",
            "--bs=4k",
            "--iodepth=4",
            "--numjobs=4",
            "--group_reporting",
            "--time_based",
            "--runtime=10",
            "--output-format=json",
            &output,
        ],
    );
    let out = std::fs::read_to_string(&report_file).expect("fio's report");
    let report: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("fio's JSON ({e}):\n{out}"));
    let job = &report["jobs"][0];
    let iops = |dir: &str| {
        job[dir]["iops"]
            .as_f64()
            .unwrap_or_else(|| panic!("no {dir}.iops in fio's report:\n{out}"))
    };
    let total = iops("read") + iops("write");
    assert!(iops("read") > 0.0 && iops("write") > 0.0, "{out}");
    within_ten_percent(total, 100.0, "fio over NBD, 4 jobs at depth 4, 10 s");
    assert_eq!(
        server.metric(r#"quorum_nbd_connections{volume="vm"}"#),
        0.0,
        "fio closed its connections"
    );
}

/// QEMU lets a bucket of `iops_total_max × iops_total_max_length` fill at
/// once before the average holds: with 200 for 1 s over an average of 100,
/// the first second does about 200 + 100, the next ones 100.
#[test]
fn a_burst_is_allowed_as_qemu_allows_it() {
    let server = Sandbox::new().serve(&limited(
        "iops_total = 100\niops_total_max = 200\niops_total_max_length = 1",
    ));
    let done = http_load(&server, 8, Duration::from_secs(3));
    let first = between(&done, 0.0, 1.0);
    eprintln!(
        "burst: {first}, then {} and {} requests in the next seconds",
        between(&done, 1.0, 2.0),
        between(&done, 2.0, 3.0)
    );
    assert!(
        (270..=320).contains(&first),
        "the first second: {first} requests, expected about 300"
    );
    for second in 1..3 {
        let n = between(&done, f64::from(second), f64::from(second + 1));
        assert!(
            (85..=115).contains(&n),
            "second {second}: {n} requests, expected about 100"
        );
    }
}

#[test]
fn bad_limits_are_refused_and_change_nothing() {
    let server = Sandbox::new().serve(&limited("bps_read = 1048576"));
    let before = server.get(LIMITS).json();
    assert_eq!(before["bps_read"], 1_048_576);
    for (body, says) in [
        (
            r#"{"iops_total": 10, "iops_read": 5}"#,
            "iops_total cannot be used together with iops_read or iops_write",
        ),
        (
            r#"{"iops_total_max": 5}"#,
            "iops_total_max needs iops_total",
        ),
        (
            r#"{"bps_write": 100, "bps_write_max": 50}"#,
            "bps_write_max (50) cannot be lower than bps_write (100)",
        ),
        (
            r#"{"iops_read": 5, "iops_read_max_length": 0}"#,
            "iops_read_max_length cannot be 0",
        ),
        (
            r#"{"iops_write": 5, "iops_write_max_length": 3}"#,
            "a burst length needs a burst rate",
        ),
        (r#"{"bps_total": 10, "iops_size": 512}"#, "iops_size needs"),
        (r#"{"bps_total": 2000000000000000}"#, "the most is"),
        (r#"{"iops": 5}"#, "unknown field `iops`"),
        (r#"{"iops_total": -5}"#, "bad limits"),
        ("iops_total = 5", "bad limits"),
        ("", "bad limits"),
    ] {
        let message = server
            .put(LIMITS, body.as_bytes().to_vec())
            .expect_error(400, "bad_request");
        assert!(message.contains(says), "PUT {body:?}: {message}");
        assert_eq!(server.get(LIMITS).json(), before, "after PUT {body:?}");
    }
    server
        .put("/v1/volumes/nope/limits", br#"{"iops_total": 5}"#.to_vec())
        .expect_error(404, "no_such_volume");
    server.post(LIMITS).expect_error(405, "method_not_allowed");
    // The volume still serves, as limited as before.
    server.write_volume("vm", 0, &[7; 4096]);
    assert_bytes_eq(&server.read_volume("vm", 0, 4096), &[7; 4096], "read back");
    // `{}` lifts every limit.
    let cleared = server.put(LIMITS, b"{}".to_vec());
    cleared.expect_status(200);
    assert_eq!(cleared.json()["bps_read"], 0);
    assert_eq!(server.get(LIMITS).json()["bps_read"], 0);

    // In the config, the same rules, one line that names the volume.
    for (limits, says) in [
        ("iops_read_max = 5", "iops_read_max needs iops_read"),
        ("iops = 5", "unknown field `iops`"),
        ("iops_total = 10\niops_write = 5", "cannot be used together"),
    ] {
        let refused = Sandbox::new().start_expecting_failure(&limited(limits));
        let line = refused.one_line();
        assert!(
            line.contains("volume \"vm\"") && line.contains(says),
            "{limits:?}: {line}"
        );
    }
}

/// A request refused as outside the volume takes nothing from the buckets
/// (QEMU checks the range before its throttle): a hostile write-zeroes or
/// discard of 2^64 - 1 bytes must not hold every later write of the volume
/// behind a bucket that would take centuries to leak.
#[test]
fn requests_outside_the_volume_take_nothing_from_the_buckets() {
    let server = Sandbox::new().serve(&limited("bps_write = 1048576"));
    let huge = u64::MAX;
    for route in ["write-zeroes", "discard"] {
        server
            .post(&format!("/v1/volumes/vm/{route}?offset=0&length={huge}"))
            .expect_error(416, "out_of_range");
        server
            .post(&format!(
                "/v1/volumes/vm/{route}?offset=4096&length=16777216"
            ))
            .expect_error(416, "out_of_range");
    }
    // A chunked write past the end (no Content-Length to check first).
    let refused = server.raw_chunked(
        "PUT",
        &format!("/v1/volumes/vm/data?offset={}", 16 * MIB - 4096),
        &[&[1u8; 8192]],
    );
    assert_eq!(refused.status, 416, "{refused:?}");

    // The buckets are as empty as before: a small write goes at once.
    let client = http_client(Duration::from_secs(5));
    let started = Instant::now();
    let answer = client
        .put(server.url("/v1/volumes/vm/data?offset=0"))
        .body(vec![9u8; 4096])
        .send()
        .map(|r| r.status().as_u16());
    let took = started.elapsed();
    assert_eq!(
        answer.ok(),
        Some(204),
        "a 4 KiB write after refused requests waited {took:?}"
    );
    assert!(took < Duration::from_secs(2), "it waited {took:?}");
    let stats = server.get("/v1/volumes/vm/stats").json();
    for (op, n) in [("write_zeroes", 2), ("discard", 2), ("write", 1)] {
        assert_eq!(stats["ops"][op]["invalid_ops"], n, "{op}: {stats}");
    }
}

/// Writes waiting in the throttle hold no memory: their bodies are read
/// once the buckets let them go. Before, five 8 MiB writes queued behind a
/// 1 MiB/s limit held 32 MiB of `max_buffered_bytes` while they waited,
/// so a read of another, unlimited volume found no budget and got 503
/// `busy` after `body_timeout`.
#[test]
fn writes_waiting_in_the_throttle_hold_no_budget() {
    let config = format!(
        "max_buffered_bytes = \"32MiB\"\nmax_request_bytes = \"8MiB\"\nbody_timeout = \"3s\"\n{}\n{}",
        abc_volume("64MiB", "[volume.limits]\nbps_write = 1048576\n"),
        volume("other", "4MiB", 1, "", &[child("x")]),
    );
    let server = Sandbox::new().serve(&config);
    let piece = 8 * MIB as usize;
    let writers: Vec<_> = (0..5u64)
        .map(|i| {
            let request = http_client(Duration::from_secs(120))
                .put(server.url(&format!("/v1/volumes/vm/data?offset={}", i * 8 * MIB)))
                .body(pattern(i, piece));
            thread::spawn(move || request.send().map(|r| r.status().as_u16()).ok())
        })
        .collect();
    // One goes at once; the others wait for the bucket (8 s each).
    wait_until("the first write to complete", || {
        server.get("/v1/volumes/vm/stats").json()["ops"]["write"]["ops"] == 1
    });
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let read = server.get_range("/v1/volumes/other/data", "bytes=0-4194303");
    let took = started.elapsed();
    assert_eq!(read.status, 206, "after {took:?}: {}", read.preview());
    assert!(took < Duration::from_secs(2), "the read waited {took:?}");
    // Lift the limit: the waiting writes go, whole.
    server.put(LIMITS, b"{}".to_vec()).expect_status(200);
    for w in writers {
        assert_eq!(w.join().expect("a writer"), Some(204));
    }
    for i in 0..5u64 {
        assert_bytes_eq(
            &server.read_volume("vm", i * 8 * MIB, 4096),
            &pattern(i, piece)[..4096],
            "a throttled write",
        );
    }
}
