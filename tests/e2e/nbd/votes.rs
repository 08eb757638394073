//! QEMU's iotest 081 (quorum) over NBD, as `qemu081.rs` does over HTTP:
//! a corrupted child is outvoted and reported with the exact range, and
//! three children that all differ fail the read with an I/O error and a
//! QUORUM_FAILURE of that range.

use super::{SIZE, nbd_config, output, qemu_io, qemu_io_args, url, with_nbd};
use crate::util::*;

/// A corrupted child is outvoted on a qemu-io read and reported with the
/// exact range it lost (not the whole request, as QEMU does): first 1 MiB
/// corrupted in the middle of a 4 MiB read, then the whole child (081's
/// scenario) under a read of the whole volume.
#[test]
fn corrupt_child_is_outvoted_and_reported_over_nbd() {
    let server = Sandbox::new().serve(&nbd_config());
    let vm = url(&server, "vm");
    qemu_io(&vm, &["write -P 0x32 0 4M"]);
    assert!(server.all_events().is_empty(), "healthy writes, no events");

    server.write_file_at("c.img", MIB, &vec![0x42; MIB as usize]);
    qemu_io(&vm, &["read -P 0x32 0 4M"]);
    let events = server.all_events();
    let reports = named(&events, "QUORUM_REPORT_BAD");
    assert_eq!(reports.len(), 1, "one report for child c: {events:?}");
    let ev = reports[0];
    check_report(ev, "vm", "c", "read", None);
    assert_eq!(data_u64(ev, "offset"), MIB, "{ev}");
    assert_eq!(data_u64(ev, "bytes"), MIB, "{ev}");
    assert_eq!(data_u64(ev, "sector-num"), 2048, "{ev}");
    assert_eq!(data_u64(ev, "sectors-count"), 2048, "{ev}");
    assert!(named(&events, "QUORUM_FAILURE").is_empty(), "{events:?}");
    assert_all_bytes(
        &server.read_file_at("c.img", MIB, MIB as usize),
        0x42,
        "c.img without rewrite_corrupted",
    );

    // iotest 081: the whole child overwritten, the whole volume read.
    let last = server.last_event_id();
    server.fill_file("c.img", 0x42, SIZE);
    qemu_io(&vm, &["read -P 0x32 0 4M", "read -P 0 4M 12M"]);
    qemu_io(&vm, &["read 0 16M"]);
    // Reports of one child come folded, one event a second (the first at
    // once, the rest when that second ends): their count and the union of
    // their ranges are what the reads must have caused.
    let mut events = Vec::new();
    wait_until("the three reads' reports", || {
        events = server.events(&format!("since={last}"));
        let reports = named(&events, "QUORUM_REPORT_BAD");
        reports.iter().map(|ev| reports_in(ev)).sum::<u64>() >= 3
    });
    let reports = named(&events, "QUORUM_REPORT_BAD");
    let count: u64 = reports.iter().map(|ev| reports_in(ev)).sum();
    assert_eq!(count, 3, "one report of c per read: {events:?}");
    let mut ranges: Vec<(u64, u64)> = reports
        .iter()
        .flat_map(|ev| {
            check_report(ev, "vm", "c", "read", None);
            report_ranges(ev)
        })
        .collect();
    ranges.sort_unstable();
    let mut covered = 0;
    for (offset, bytes) in ranges {
        assert!(
            offset <= covered,
            "a gap before {offset} in the reports: {events:?}"
        );
        covered = covered.max(offset + bytes);
    }
    assert_eq!(
        covered, SIZE,
        "the reports cover the whole child: {events:?}"
    );
    assert!(named(&events, "QUORUM_FAILURE").is_empty(), "{events:?}");
}

/// iotest 081's last scenario: the three children hold three different
/// patterns (0x41, 0x42, 0x32) in 2M..3M. A qemu-io read there fails
/// with an I/O error (exit status 1), a QUORUM_FAILURE names the read's
/// exact range, reads elsewhere still work, and nothing is written even
/// with `rewrite_corrupted`.
#[test]
fn three_versions_fail_the_read_over_nbd() {
    let sandbox = Sandbox::new();
    for (f, byte) in ABC.into_iter().zip([0x41, 0x42, 0x32]) {
        sandbox.create_file(f, SIZE);
        sandbox.write_file_at(f, 2 * MIB, &vec![byte; MIB as usize]);
    }
    let snap = sandbox.snapshot(&ABC);
    let server = sandbox.serve(&with_nbd(&abc_volume("16MiB", "rewrite_corrupted = true")));
    let vm = url(&server, "vm");

    for (range, command) in [
        ((2 * MIB, MIB), "read -P 0x32 2M 1M"),
        ((MIB, 3 * MIB), "read 1M 3M"),
        ((2 * MIB + 4096, 4096), "read -P 0x41 2101248 4096"),
    ] {
        let last = server.last_event_id();
        let out = output("qemu-io", &qemu_io_args(&vm, &[command]));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            (out.status.code(), text.trim()),
            (Some(1), "read failed: Input/output error"),
            "qemu-io -c '{command}' without a quorum"
        );
        let events = server.events(&format!("since={last}"));
        let failures = named(&events, "QUORUM_FAILURE");
        assert_eq!(failures.len(), 1, "{command}: {events:?}");
        let ev = failures[0];
        assert_eq!(ev["volume"], "vm", "{ev}");
        assert_eq!(ev["data"]["reference"], "vm", "{ev}");
        assert_eq!(ev["data"]["type"], "read", "{ev}");
        assert_eq!(
            (data_u64(ev, "offset"), data_u64(ev, "bytes")),
            range,
            "{command}: {ev}"
        );
        check_sectors(ev);
        assert!(named(&events, "QUORUM_REWRITE").is_empty(), "{events:?}");
    }

    // Where the children agree, the volume reads.
    qemu_io(&vm, &["read -P 0 0 2M", "read -P 0 3M 13M"]);
    server.assert_unchanged(&snap, "a failed vote must not write");
}
