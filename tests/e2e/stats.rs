//! SPEC 11, statistics as QEMU's `query-blockstats`:
//! `GET /v1/volumes/{vol}/stats` counts, per op, exactly the requests a
//! client made, over HTTP and NBD: bytes and ops of those that succeeded,
//! failed and invalid (refused) ones, their time and latency percentiles,
//! and the idle time since the last one.

use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const STATS: &str = "/v1/volumes/vm/stats";

fn stats(server: &Server) -> Value {
    server.get(STATS).json()
}

/// `ops.OP.KEY` of a stats answer.
#[track_caller]
fn get(stats: &Value, op: &str, key: &str) -> u64 {
    stats["ops"][op][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no ops.{op}.{key} in {stats}"))
}

#[test]
fn stats_count_exactly_the_requests_made() {
    // b and c fail writes at 512 KiB: a write there fails its quorum.
    let failing = fault(
        "write",
        &[
            "offset = \"512KiB\"",
            "length = \"4KiB\"",
            "error = \"EIO\"",
        ],
    );
    let config = with_nbd(&volume(
        "vm",
        "1MiB",
        2,
        "",
        &[
            child("a"),
            child_with("b", &failing),
            child_with("c", &failing),
        ],
    ));
    let server = Sandbox::new().serve(&config);
    let before = stats(&server);
    assert_eq!(before["volume"], "vm");
    assert_eq!(before["idle_time_ns"], Value::Null, "no request yet");
    for op in ["read", "write", "write_zeroes", "discard", "flush"] {
        for key in ["bytes", "ops", "failed_ops", "invalid_ops", "total_time_ns"] {
            assert_eq!(get(&before, op, key), 0, "{op}.{key}");
        }
        assert_eq!(before["ops"][op]["latency_ns"]["p50"], Value::Null);
    }

    server.write_volume("vm", 0, &pattern(1, 4096));
    server.write_volume("vm", 10_000, &pattern(2, 1000));
    server
        .put("/v1/volumes/vm/data?offset=524288", vec![3; 4096])
        .expect_error(503, "quorum_failure");
    server
        .put(
            &format!("/v1/volumes/vm/data?offset={}", MIB - 10),
            vec![4; 100],
        )
        .expect_error(416, "out_of_range");
    server
        .post("/v1/volumes/vm/write-zeroes?offset=65536&length=65536")
        .expect_status(204);
    server
        .post(&format!(
            "/v1/volumes/vm/write-zeroes?offset={MIB}&length=10"
        ))
        .expect_error(416, "out_of_range");
    server
        .post("/v1/volumes/vm/discard?offset=131072&length=8192")
        .expect_status(204);
    for _ in 0..3 {
        server.post("/v1/volumes/vm/flush").expect_status(204);
    }
    server.read_volume("vm", 0, 8192);
    server.read_volume("vm", 10_000, 100);
    server
        .get_range("/v1/volumes/vm/data", "bytes=2000000-2000010")
        .expect_error(416, "out_of_range");
    // Block status is not I/O: not counted.
    server
        .get("/v1/volumes/vm/block-status?offset=0&length=65536")
        .expect_status(200);

    let after = stats(&server);
    for (op, bytes, ops, failed, invalid) in [
        ("read", 8292, 2, 0, 1),
        ("write", 5096, 2, 1, 1),
        ("write_zeroes", 65_536, 1, 0, 1),
        ("discard", 8192, 1, 0, 0),
        ("flush", 0, 3, 0, 0),
    ] {
        let counted = [
            get(&after, op, "bytes"),
            get(&after, op, "ops"),
            get(&after, op, "failed_ops"),
            get(&after, op, "invalid_ops"),
        ];
        assert_eq!(counted, [bytes, ops, failed, invalid], "{op}: {after}");
        assert!(get(&after, op, "total_time_ns") > 0, "{op}: {after}");
        let latency = &after["ops"][op]["latency_ns"];
        let (p50, p90, p99) = (
            latency["p50"]
                .as_u64()
                .unwrap_or_else(|| panic!("{op}: {after}")),
            latency["p90"]
                .as_u64()
                .unwrap_or_else(|| panic!("{op}: {after}")),
            latency["p99"]
                .as_u64()
                .unwrap_or_else(|| panic!("{op}: {after}")),
        );
        assert!(0 < p50 && p50 <= p90 && p90 <= p99, "{op}: {latency}");
        // Percentiles of a sketch with 1% error, within what was spent.
        assert!(
            p99 as f64 <= get(&after, op, "total_time_ns") as f64 * 1.02,
            "{op}: {after}"
        );
    }

    // The idle time grows while nothing happens.
    let idle = |s: &Value| {
        s["idle_time_ns"]
            .as_u64()
            .unwrap_or_else(|| panic!("no idle_time_ns in {s}"))
    };
    let first = idle(&after);
    thread::sleep(Duration::from_millis(300));
    let later = idle(&stats(&server));
    assert!(later >= first + 300_000_000, "idle {first} then {later}");

    // NBD requests are counted on the same path: one read, one write.
    let url = nbd_url(&server, "vm");
    qemu_io(&url, &["read 0 4k"]);
    let nbd = stats(&server);
    assert_eq!(get(&nbd, "read", "ops"), 3, "{nbd}");
    assert_eq!(get(&nbd, "read", "bytes"), 8292 + 4096, "{nbd}");
    qemu_io(&url, &["write -P 9 0 4k"]);
    let nbd = stats(&server);
    assert_eq!(get(&nbd, "write", "ops"), 3, "{nbd}");
    assert_eq!(get(&nbd, "write", "bytes"), 5096 + 4096, "{nbd}");
    assert!(idle(&nbd) < later, "an NBD request ends the idle time");
}
