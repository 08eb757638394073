//! Must show 4: the vote is per 4 KiB block (SPEC section 5), so two
//! children corrupt in different blocks of one request still leave a
//! majority in every block (QEMU fails such a read).

use crate::util::*;

const REGION: u64 = 64 * KIB;
/// Child b is corrupt in block 0, child c in block 5.
const B_AT: u64 = 10;
const B_LEN: usize = 100;
const C_AT: u64 = 5 * BLOCK + 7;
const C_LEN: usize = 50;

/// A volume with 64 KiB of data written, then b and c corrupted on disk.
fn corrupted_server(options: &str) -> (Server, Vec<u8>) {
    let server = Sandbox::new().serve(&abc_volume("1MiB", options));
    let data = pattern(20, REGION as usize);
    server.write_volume("vm", 0, &data);
    server.corrupt_file("b.img", B_AT, B_LEN);
    server.corrupt_file("c.img", C_AT, C_LEN);
    (server, data)
}

/// One 64 KiB read returns the right data and reports b in block 0 and c
/// in block 5, each with a range inside its block covering its damage.
#[test]
fn two_children_corrupt_in_different_blocks() {
    let (server, data) = corrupted_server("");
    let back = server.read_volume("vm", 0, REGION);
    assert_bytes_eq(&back, &data, "the 64 KiB read");

    let events = server.all_events();
    assert_eq!(named(&events, "QUORUM_REPORT_BAD").len(), 2, "{events:?}");
    assert!(named(&events, "QUORUM_FAILURE").is_empty(), "{events:?}");
    let b = reports_for(&events, "b");
    let c = reports_for(&events, "c");
    assert!(
        b.len() == 1 && c.len() == 1,
        "one report per child: {events:?}"
    );
    check_report(b[0], "vm", "b", "read", None);
    check_report(c[0], "vm", "c", "read", None);
    check_range_within(b[0], 0, BLOCK, B_AT, B_AT + B_LEN as u64);
    check_range_within(c[0], 5 * BLOCK, 6 * BLOCK, C_AT, C_AT + C_LEN as u64);
}

/// With rewrite_corrupted, b and c are repaired, each only within the
/// block it lost; a is never written.
#[test]
fn rewrite_repairs_only_the_lost_blocks() {
    let (server, data) = corrupted_server("rewrite_corrupted = true");
    let a_before = server.snapshot(&["a.img"]);
    assert_bytes_eq(
        &server.read_volume("vm", 0, REGION),
        &data,
        "the 64 KiB read",
    );

    wait_until("b.img and c.img to be repaired", || {
        ["b.img", "c.img"]
            .iter()
            .all(|f| server.read_file_at(f, 0, REGION as usize) == data)
    });
    let mut events = Vec::new();
    wait_until("a QUORUM_REWRITE event for b and for c", || {
        events = server.all_events();
        let rewrites = named(&events, "QUORUM_REWRITE");
        ["b", "c"]
            .iter()
            .all(|n| rewrites.iter().any(|e| e["data"]["node-name"] == *n))
    });
    for ev in named(&events, "QUORUM_REWRITE") {
        let (lo, from, to) = match ev["data"]["node-name"].as_str() {
            Some("b") => (0, B_AT, B_AT + B_LEN as u64),
            Some("c") => (5 * BLOCK, C_AT, C_AT + C_LEN as u64),
            _ => panic!("only b and c lost votes: {ev}"),
        };
        let offset = data_u64(ev, "offset");
        let end = offset + data_u64(ev, "bytes");
        assert!(
            lo <= offset && end <= lo + BLOCK,
            "rewrite {offset}..{end} should stay in block {lo}..{}: {ev}",
            lo + BLOCK
        );
        assert!(
            offset < to && from < end,
            "rewrite {offset}..{end} misses the damage: {ev}"
        );
    }
    server.assert_unchanged(&a_before, "the winning child");
}

/// b and c corrupt differently in the same block: that block has no
/// majority, so the whole read fails with 503 even though every other
/// block agrees, and nothing is written (rewrite_corrupted is on).
#[test]
fn a_block_without_majority_fails_the_read() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", "rewrite_corrupted = true"));
    let data = pattern(21, REGION as usize);
    server.write_volume("vm", 0, &data);
    server.write_file_at("b.img", 3 * BLOCK + 100, &[0xB0; 20]);
    server.write_file_at("c.img", 3 * BLOCK + 100, &[0xC0; 20]);
    let snap = server.snapshot(&ABC);

    server
        .get_range("/v1/volumes/vm/data", "bytes=0-65535")
        .expect_error(503, "quorum_failure");
    let events = server.all_events();
    let failures = named(&events, "QUORUM_FAILURE");
    assert_eq!(failures.len(), 1, "{events:?}");
    assert_eq!(failures[0]["data"]["type"], "read", "{}", failures[0]);
    assert!(named(&events, "QUORUM_REWRITE").is_empty(), "{events:?}");
    server.assert_unchanged(&snap, "a failed vote must not write");
    // SPEC 7: the failed read is counted.
    assert_eq!(
        server.metric(r#"quorum_failures_total{volume="vm",op="read"}"#),
        1.0
    );

    // The blocks that agree still read.
    let back = server.read_volume("vm", 0, 3 * BLOCK);
    assert_bytes_eq(&back, &data[..3 * BLOCK as usize], "blocks 0..3");
}

/// Threshold 1 with two children that differ: the tie goes to the
/// lowest-indexed child, and the other one is reported.
#[test]
fn threshold_one_tie_goes_to_child_0() {
    let sandbox = Sandbox::new();
    sandbox.fill_file("a.img", 0xAA, MIB);
    sandbox.fill_file("b.img", 0xBB, MIB);
    let server = sandbox.serve(&volume("vm", "1MiB", 1, "", &[child("a"), child("b")]));
    assert_all_bytes(&server.read_volume("vm", 1000, 10_000), 0xAA, "the tie");
    let events = server.all_events();
    let reports = named(&events, "QUORUM_REPORT_BAD");
    assert_eq!(reports.len(), 1, "{events:?}");
    check_report(reports[0], "vm", "b", "read", None);
    assert_eq!(
        (
            data_u64(reports[0], "offset"),
            data_u64(reports[0], "bytes")
        ),
        (1000, 10_000),
        "b lost every byte of the read: {}",
        reports[0]
    );
}
