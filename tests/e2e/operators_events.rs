//! What operators see when things go wrong for long (issue 16, items 2 and
//! 3): a bad block read again and again does not flood the event log (the
//! reports of a child are folded, one event a second, and the fold says
//! what it stands for), scrub progress is live only, and a volume whose
//! remote child is down starts without it and takes it back when it
//! returns.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lifecycle::collect_sse_until;
use crate::remote::{block_server, remote_child};
use crate::s3::{Weed, s3_child};
use crate::scrub::{scrub, wait_done};
use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";
/// How long a child that comes back may take to be opened again: the
/// reopening backs off up to 30 s between attempts, then the resync copies.
const REOPEN_DEADLINE: Duration = Duration::from_secs(60);

/// 500 reads of one corrupted block: a handful of `QUORUM_REPORT_BAD`
/// events, not 500; the folded ones say how many reports they stand for
/// (500 in all) and the exact range; the last one comes when its second
/// ends, with no further I/O; the metrics count every report.
#[test]
fn reads_of_one_bad_block_fold_into_a_few_events_that_count_them_all() {
    const READS: u64 = 500;
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    let data = pattern(3, 64 * KIB as usize);
    server.write_volume("vm", 0, &data);
    // 100 bytes of c inside block 2.
    let (bad_at, bad_len) = (2 * BLOCK + 100, 100);
    server.corrupt_file("c.img", bad_at, bad_len as usize);
    let before = server.last_event_id();

    let started = Instant::now();
    let range = format!("bytes={}-{}", 2 * BLOCK, 3 * BLOCK - 1);
    for _ in 0..READS {
        let r = server.get_range(DATA, &range);
        r.expect_status(206);
        assert!(
            r.body[..] == data[2 * BLOCK as usize..3 * BLOCK as usize],
            "a read returned c's bytes"
        );
    }
    let last_read = Instant::now();
    let took = last_read - started;

    // With no I/O after the last read, the last fold comes when its
    // window ends: within a second of it, give or take the machine.
    let mut reports: Vec<Value> = Vec::new();
    wait_until_within(
        "folded reports that stand for all 500 reads",
        Duration::from_secs(5),
        || {
            reports = reports_for(&server.events(&format!("since={before}")), "c")
                .into_iter()
                .cloned()
                .collect();
            reports.iter().map(reports_in).sum::<u64>() >= READS
        },
    );
    let waited = last_read.elapsed();
    assert!(
        waited < Duration::from_millis(1500),
        "the last fold came {waited:?} after the last read"
    );
    assert_eq!(
        reports.iter().map(reports_in).sum::<u64>(),
        READS,
        "{reports:?}"
    );
    // One at once, then at most one a second.
    let most = 2 + took.as_secs();
    assert!(
        reports.len() as u64 <= most && reports.len() <= 8,
        "{} events for {READS} reads in {took:?}: {reports:?}",
        reports.len()
    );
    assert!(reports.len() >= 2, "nothing was folded: {reports:?}");

    // The first is an ordinary report of the lost range; each fold says
    // exactly that range, as its union and as its span.
    let first = &reports[0];
    check_report(first, "vm", "c", "read", None);
    check_range_within(first, 2 * BLOCK, 3 * BLOCK, bad_at, bad_at + bad_len);
    assert!(first["data"].get("suppressed").is_none(), "{first}");
    let (offset, bytes) = (data_u64(first, "offset"), data_u64(first, "bytes"));
    for fold in &reports[1..] {
        check_report(fold, "vm", "c", "read", None);
        assert!(reports_in(fold) >= 1, "{fold}");
        assert_eq!(data_u64(fold, "first-offset"), offset, "{fold}");
        assert_eq!(
            fold["data"]["ranges"],
            serde_json::json!([{ "offset": offset, "bytes": bytes }]),
            "{fold}"
        );
        assert_eq!(fold["data"]["ranges-truncated"], false, "{fold}");
        assert_eq!(
            (data_u64(fold, "offset"), data_u64(fold, "bytes")),
            (offset, bytes),
            "{fold}"
        );
    }
    // Nothing more comes: the window after the last fold closes empty.
    std::thread::sleep(Duration::from_millis(1200));
    let after = reports_for(&server.events(&format!("since={before}")), "c").len();
    assert_eq!(after, reports.len(), "an event came after the last fold");

    eprintln!(
        "{READS} reads of one bad block in {took:?}: {} QUORUM_REPORT_BAD events, the last {waited:?} after the last read",
        reports.len()
    );
    // The metrics count every report.
    let counted = server.metric(r#"quorum_bad_reports_total{volume="vm",child="c",type="read"}"#);
    assert_eq!(counted, READS as f64);
    let lost = server.metric(r#"quorum_corrupted_bytes_total{volume="vm",child="c"}"#);
    assert_eq!(lost, (READS * bytes) as f64);
}

/// `JOB_PROGRESS` is on the live stream while a scrub runs, and not in the
/// log afterwards; the scrub's start and end are in both.
#[test]
fn job_progress_is_streamed_live_and_not_logged() {
    let config = format!("scrub_rate = \"1MiB\"\n{}", abc_volume("5MiB", ""));
    let server = Sandbox::new().serve(&config);
    server.write_volume("vm", 0, &pattern(9, 256 * KIB as usize));
    let live = collect_sse_until(server.url("/v1/events/stream"), vec![], |got| {
        got.iter().any(|e| e["event"] == "JOB_COMPLETED")
    });
    live.wait_connected();
    let id = scrub(&server, false);
    let done = wait_done(&server, id);
    assert_eq!(done["state"], "completed", "{done}");
    let streamed = live
        .events
        .recv_timeout(Duration::from_secs(30))
        .expect("the stream gave the scrub's events");
    let names: Vec<&str> = streamed
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    let progress: Vec<u64> = named(&streamed, "JOB_PROGRESS")
        .iter()
        .map(|e| event_id(e))
        .collect();
    assert!(
        !progress.is_empty(),
        "no JOB_PROGRESS on the stream: {names:?}"
    );
    assert_eq!(names.first(), Some(&"JOB_STARTED"), "{names:?}");
    assert_eq!(names.last(), Some(&"JOB_COMPLETED"), "{names:?}");
    let ids: Vec<u64> = streamed.iter().map(event_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let logged = server.all_events();
    assert!(named(&logged, "JOB_PROGRESS").is_empty(), "{logged:?}");
    assert_eq!(named(&logged, "JOB_STARTED").len(), 1, "{logged:?}");
    assert_eq!(named(&logged, "JOB_COMPLETED").len(), 1, "{logged:?}");
    let logged_ids: Vec<u64> = logged.iter().map(event_id).collect();
    assert!(
        progress.iter().all(|id| !logged_ids.contains(id)),
        "{progress:?} in {logged_ids:?}"
    );
}

/// The listing of child `name` of volume `vm`.
fn child_of(server: &Server, name: &str) -> Value {
    let v = server.get("/v1/volumes/vm").json();
    v["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no child {name} in {v}"))
}

/// The `CHILD_STATE_CHANGE` events of `child`, as (from, to).
fn state_changes(server: &Server, child: &str) -> Vec<(String, String)> {
    named(&server.all_events(), "CHILD_STATE_CHANGE")
        .into_iter()
        .filter(|e| e["data"]["node-name"] == child)
        .map(|e| {
            let s = |k: &str| e["data"][k].as_str().unwrap_or("").to_owned();
            (s("from"), s("to"))
        })
        .collect()
}

/// Writes and reads a volume while `child` is failed: everything works.
fn serve_while_failed(front: &Server, child: &str) -> Vec<u8> {
    let listed = child_of(front, child);
    assert_eq!(listed["state"], "failed", "{listed}");
    assert_eq!(listed["backend"], "unopened", "{listed}");
    assert_eq!(
        state_changes(front, child),
        [("healthy".to_owned(), "failed".to_owned())]
    );
    let mut expected = vec![0u8; MIB as usize];
    for (i, at) in [0u64, 100_000, 300_000, 1_000_000].into_iter().enumerate() {
        let piece = pattern(40 + i as u64, 20_000);
        front.write_volume("vm", at, &piece);
        expected[at as usize..at as usize + piece.len()].copy_from_slice(&piece);
    }
    assert_bytes_eq(
        &front.read_volume("vm", 0, MIB),
        &expected,
        "the volume with a child down",
    );
    expected
}

/// Waits until `child` is open and resynced, and checks what was said.
fn wait_resynced(front: &Server, child: &str) {
    let mut listed = Value::Null;
    wait_until_within(
        &format!("{child} to be opened and resynced"),
        REOPEN_DEADLINE,
        || {
            listed = child_of(front, child);
            listed["state"] == "healthy" && listed["stale_bytes"] == 0
        },
    );
    assert_ne!(listed["backend"], "unopened", "{listed}");
    let changes = state_changes(front, child);
    let said: Vec<(&str, &str)> = changes
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        said,
        [
            ("healthy", "failed"),
            ("failed", "stale"),
            ("stale", "healthy")
        ],
        "{said:?}"
    );
}

/// A 2-of-3 volume on three block servers. With two down, the start is
/// refused in one line naming both; with one down, the volume starts
/// without it (failed), serves reads and writes, and when it comes back it
/// is opened, resynced (the whole volume: nothing was known of it), and
/// the three copies end identical.
#[test]
fn a_volume_starts_without_a_block_server_that_is_down_and_resyncs_it() {
    let mut blocks: Vec<Server> = (0..3).map(|_| block_server("1MiB", "")).collect();
    let children: Vec<String> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| remote_child(&format!("r{i}"), b, "blk", ""))
        .collect();
    let config = volume("vm", "1MiB", 2, "", &children);
    blocks[1].kill();
    blocks[2].kill();
    let refused = Sandbox::new().start_expecting_failure(&config);
    let line = refused.one_line();
    for word in ["\"vm\"", "\"r1\"", "\"r2\"", "vote_threshold 2"] {
        assert!(line.contains(word), "{word} is not in: {line}");
    }
    assert!(!line.contains("\"r0\""), "r0 was reachable: {line}");

    blocks[1].restart();
    let front = Sandbox::new().serve(&config);
    let expected = serve_while_failed(&front, "r2");
    // Nothing is known of r2 (the volume never ran with it): it is stale
    // over the whole volume.
    assert_eq!(child_of(&front, "r2")["stale_bytes"], MIB);
    blocks[2].restart();
    wait_resynced(&front, "r2");
    let disks: Vec<Vec<u8>> = blocks.iter().map(|b| b.read_file("disk.img")).collect();
    for (i, disk) in disks.iter().enumerate() {
        assert_bytes_eq(disk, &expected, &format!("r{i}'s disk.img"));
    }
    assert_bytes_eq(
        &front.read_volume("vm", 0, MIB),
        &expected,
        "the volume after the resync",
    );
}

/// A volume of two files and an S3 store that is down at start: it starts
/// without the store (failed), and when the store comes back the child is
/// opened, created there and resynced; the store's copy, read by a server
/// of its own, equals the files.
#[test]
fn a_volume_starts_without_its_s3_store_that_is_down_and_resyncs_it() {
    let mut weed = Weed::start();
    let store = s3_child("s", &weed, "vm");
    weed.kill();
    let front = Sandbox::new().serve(&volume(
        "vm",
        "1MiB",
        2,
        "",
        &[child("a"), child("b"), store.clone()],
    ));
    let expected = serve_while_failed(&front, "s");
    weed.spawn();
    wait_resynced(&front, "s");
    for f in ["a.img", "b.img"] {
        assert_bytes_eq(&front.read_file(f), &expected, f);
    }
    drop(front);
    let reader = Sandbox::new().serve(&volume("vm", "1MiB", 1, "", &[store]));
    assert_bytes_eq(
        &reader.read_volume("vm", 0, MIB),
        &expected,
        "the store's copy",
    );
}

/// A volume that ran with all its children restarts while one is down: it
/// starts without it, and the child gets back exactly what it missed (its
/// stale map from the journal, and the writes made without it), not the
/// whole volume.
#[test]
fn a_child_down_at_a_restart_gets_back_only_what_it_missed() {
    let mut blocks: Vec<Server> = (0..3).map(|_| block_server("1MiB", "")).collect();
    let children: Vec<String> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| remote_child(&format!("r{i}"), b, "blk", ""))
        .collect();
    let mut front = Sandbox::new().serve(&volume("vm", "1MiB", 2, "", &children));
    let mut expected = pattern(50, MIB as usize);
    front.write_volume("vm", 0, &expected);
    assert!(front.stop().success());
    blocks[0].kill();
    front.restart();
    let listed = child_of(&front, "r0");
    assert_eq!(listed["state"], "failed", "{listed}");
    assert_eq!(listed["stale_bytes"], 0, "the journal knew r0: {listed}");
    let missed = pattern(51, 10_000);
    front.write_volume("vm", 200_000, &missed);
    expected[200_000..210_000].copy_from_slice(&missed);
    let stale = child_of(&front, "r0")["stale_bytes"]
        .as_u64()
        .expect("stale_bytes");
    assert!(
        (10_000..MIB / 2).contains(&stale),
        "r0 is stale over {stale} bytes after missing one write of 10000"
    );
    assert_bytes_eq(
        &front.read_volume("vm", 0, MIB),
        &expected,
        "the volume with r0 down",
    );
    blocks[0].restart();
    wait_resynced(&front, "r0");
    for (i, b) in blocks.iter().enumerate() {
        assert_bytes_eq(
            &b.read_file("disk.img"),
            &expected,
            &format!("r{i}'s disk.img"),
        );
    }
}
