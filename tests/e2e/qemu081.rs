//! Must show 2: the scenarios of QEMU's iotest 081 (quorum), over HTTP with
//! three file children of 10 MiB and threshold 2, plus blkverify.

use crate::util::*;

const SIZE: u64 = 10 * MIB;
const SIZE_STR: &str = "10MiB";
const DATA: &str = "/v1/volumes/vm/data";

/// `write -P 0x32 0 $size`, in four PUTs of 2.5 MiB.
fn write_everything(server: &Server, byte: u8) {
    let chunk = SIZE / 4;
    let data = vec![byte; chunk as usize];
    for i in 0..4 {
        server.write_volume("vm", i * chunk, &data);
    }
}

/// `read -P 0x32 0 $size` as one request: a Range of the whole volume (a
/// GET without Range is a live copy in pieces of 1 MiB, each one read of
/// its own).
#[track_caller]
fn read_everything(server: &Server, byte: u8) {
    let r = server.get_range(DATA, "bytes=0-");
    r.expect_status(206);
    assert_eq!(
        r.header("content-length"),
        Some(SIZE.to_string().as_str()),
        "Content-Length of the whole volume"
    );
    assert_all_bytes(&r.body, byte, "the whole volume");
}

/// One child overwritten with 0x42 on disk is outvoted: the read returns
/// 0x32 and one QUORUM_REPORT_BAD names the child with the whole range.
#[test]
fn corrupt_child_is_outvoted_and_reported() {
    let server = Sandbox::new().serve(&abc_volume(SIZE_STR, ""));
    write_everything(&server, 0x32);
    for f in ABC {
        assert_all_bytes(&server.read_file(f), 0x32, &format!("{f} after the writes"));
    }
    let events = server.all_events();
    assert!(
        events.is_empty(),
        "writes to healthy children gave events: {events:?}"
    );

    server.fill_file("c.img", 0x42, SIZE);
    read_everything(&server, 0x32);

    let events = server.all_events();
    let reports = named(&events, "QUORUM_REPORT_BAD");
    assert_eq!(reports.len(), 1, "one report for child c: {events:?}");
    let ev = reports[0];
    check_report(ev, "vm", "c", "read", None);
    assert_eq!(data_u64(ev, "offset"), 0, "{ev}");
    assert_eq!(data_u64(ev, "bytes"), SIZE, "{ev}");
    assert_eq!(data_u64(ev, "sector-num"), 0, "{ev}");
    assert_eq!(data_u64(ev, "sectors-count"), 20480, "{ev}");
    assert!(
        named(&events, "QUORUM_FAILURE").is_empty() && named(&events, "QUORUM_REWRITE").is_empty(),
        "{events:?}"
    );
    // Without rewrite_corrupted, nothing repairs c.
    assert_all_bytes(
        &server.read_file("c.img"),
        0x42,
        "c.img without rewrite_corrupted",
    );
}

/// With `rewrite_corrupted`, the outvoted child is repaired on disk, a
/// QUORUM_REWRITE says so, and the next read reports nothing.
#[test]
fn rewrite_corrupted_repairs_the_child_file() {
    let server = Sandbox::new().serve(&abc_volume(SIZE_STR, "rewrite_corrupted = true"));
    write_everything(&server, 0x32);
    server.fill_file("c.img", 0x42, SIZE);
    read_everything(&server, 0x32);

    let mut events = Vec::new();
    wait_until(
        "c.img to be repaired and QUORUM_REWRITE events to cover it",
        || {
            events = server.all_events();
            let rewritten: u64 = named(&events, "QUORUM_REWRITE")
                .iter()
                .filter(|e| e["data"]["node-name"] == "c")
                .map(|e| data_u64(e, "bytes"))
                .sum();
            rewritten >= SIZE && server.read_file("c.img").iter().all(|b| *b == 0x32)
        },
    );
    for ev in named(&events, "QUORUM_REWRITE") {
        assert_eq!(ev["volume"], "vm", "{ev}");
        assert_eq!(ev["data"]["node-name"], "c", "only c was repaired: {ev}");
        assert!(
            data_u64(ev, "offset") + data_u64(ev, "bytes") <= SIZE,
            "{ev}"
        );
    }
    let reports = named(&events, "QUORUM_REPORT_BAD");
    assert!(
        !reports.is_empty() && reports.iter().all(|e| e["data"]["node-name"] == "c"),
        "c and only c was reported: {events:?}"
    );
    for f in ["a.img", "b.img"] {
        assert_all_bytes(&server.read_file(f), 0x32, f);
    }

    let last = server.last_event_id();
    read_everything(&server, 0x32);
    let after = server.events(&format!("since={last}"));
    assert!(
        after.is_empty(),
        "a read after the repair gave events: {after:?}"
    );
}

/// Three children that all differ: no version reaches the threshold, the
/// read fails with 503 quorum_failure and a QUORUM_FAILURE event, and
/// (even with rewrite_corrupted on) no child is written.
#[test]
fn three_different_children_fail_the_read() {
    let sandbox = Sandbox::new();
    sandbox.fill_file("a.img", 0x41, SIZE);
    sandbox.fill_file("b.img", 0x42, SIZE);
    sandbox.fill_file("c.img", 0x32, SIZE);
    let snap = sandbox.snapshot(&ABC);
    let server = sandbox.serve(&abc_volume(SIZE_STR, "rewrite_corrupted = true"));

    server.get(DATA).expect_error(503, "quorum_failure");
    server
        .get_range(DATA, "bytes=4096-8191")
        .expect_error(503, "quorum_failure");

    let events = server.all_events();
    let failures = named(&events, "QUORUM_FAILURE");
    assert!(!failures.is_empty(), "no QUORUM_FAILURE in {events:?}");
    for ev in &failures {
        assert_eq!(ev["volume"], "vm", "{ev}");
        assert_eq!(ev["data"]["reference"], "vm", "{ev}");
        assert_eq!(ev["data"]["type"], "read", "{ev}");
        check_sectors(ev);
        assert!(
            data_u64(ev, "offset") + data_u64(ev, "bytes") <= SIZE,
            "{ev}"
        );
    }
    let last = failures[failures.len() - 1];
    assert_eq!(
        (data_u64(last, "offset"), data_u64(last, "bytes")),
        (4096, 4096),
        "the failure of the range read names its range: {last}"
    );
    assert!(named(&events, "QUORUM_REWRITE").is_empty(), "{events:?}");
    server.assert_unchanged(&snap, "a failed vote must not write");
}

fn blkverify_config() -> String {
    volume(
        "vm",
        SIZE_STR,
        2,
        "blkverify = true",
        &[child("a"), child("b")],
    )
}

/// blkverify with two children that differ first at byte 12345: 500
/// blkverify_mismatch naming 12345, a BLKVERIFY_MISMATCH event, nothing
/// written, and the server goes on serving.
#[test]
fn blkverify_mismatch_names_the_first_differing_byte() {
    let sandbox = Sandbox::new();
    sandbox.create_file("a.img", SIZE);
    sandbox.create_file("b.img", SIZE);
    sandbox.write_file_at("b.img", 12_345, &[0xAB; 10]);
    sandbox.write_file_at("b.img", 40_000, &[0xCD; 10]);
    let snap = sandbox.snapshot(&["a.img", "b.img"]);
    let server = sandbox.serve(&blkverify_config());

    // The request starts at 4096, so the relative offset (8249) differs from
    // the volume offset (12345).
    let message = server
        .get_range(DATA, "bytes=4096-65535")
        .expect_error(500, "blkverify_mismatch");
    assert!(
        message.contains("12345"),
        "the message should name byte 12345: {message:?}"
    );

    let events = server.all_events();
    let mismatches = named(&events, "BLKVERIFY_MISMATCH");
    assert_eq!(mismatches.len(), 1, "{events:?}");
    let ev = mismatches[0];
    assert_eq!(ev["volume"], "vm", "{ev}");
    assert_eq!(data_u64(ev, "offset"), 12_345, "{ev}");
    assert_eq!(data_u64(ev, "request-offset"), 4096, "{ev}");
    assert_eq!(data_u64(ev, "request-bytes"), 61_440, "{ev}");
    server.assert_unchanged(&snap, "a blkverify mismatch must not write");

    // Still serving.
    server.get("/healthz").expect_status(200);
    let same = server.read_volume("vm", 0, 12_345);
    assert_all_bytes(&same, 0, "the identical head of the volume");
    let same = server.read_volume("vm", 16_384, 16_384);
    assert_all_bytes(&same, 0, "an identical middle range");
    let data = pattern(5, 8192);
    server.write_volume("vm", 12_288, &data);
    assert_bytes_eq(
        &server.read_volume("vm", 12_288, 8192),
        &data,
        "after a repairing write",
    );
    server
        .get_range(DATA, "bytes=39000-40999")
        .expect_error(500, "blkverify_mismatch");
}

/// blkverify needs exactly two children: with three, the server refuses to
/// start with a one-line error.
#[test]
fn blkverify_with_three_children_is_a_start_up_error() {
    let config = volume(
        "vm",
        SIZE_STR,
        2,
        "blkverify = true",
        &[child("a"), child("b"), child("c")],
    );
    let failure = Sandbox::new().start_expecting_failure(&config);
    assert!(
        !failure.status.success(),
        "`{}` exited with {}",
        failure.command_line,
        failure.status
    );
    let stderr = failure.stderr.trim();
    assert_eq!(
        stderr.lines().count(),
        1,
        "the error should be one line of stderr: {stderr:?}"
    );
    assert!(
        stderr.contains("vm") && stderr.to_lowercase().contains("blkverify"),
        "the error should name the volume and blkverify: {stderr:?}"
    );
}
