//! SPEC section 10: discard over HTTP (`POST .../discard`) and NBD
//! (`TRIM`), on file children (holes punched: `st_blocks` drops), remote
//! children (the discard forwarded) and S3 children (whole chunks
//! deleted); bad input refused with nothing changed; NBD's `NO_HOLE`
//! zeroes kept allocated.

use std::os::unix::fs::MetadataExt;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use prometheus_parse::{Scrape, Value};

use crate::remote::{block_server, remote_child};
use crate::s3::{Weed, runtime, s3_child};
use crate::util::*;

/// The space a discard of `len` bytes must free at least, in 512-byte
/// units: all of it but a file system block or two at each edge.
fn freed(len: u64) -> u64 {
    (len - 64 * KIB) / 512
}

/// `st_blocks` of a file of the sandbox: the 512-byte units it holds.
fn blocks(sandbox: &Sandbox, name: &str) -> u64 {
    let path = sandbox.file(name);
    std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
        .blocks()
}

/// The sum of `family{volume=VOLUME,op=OP}` over any other labels (a
/// `frontend`, for one), from `/metrics`.
fn op_total_of(server: &Server, volume: &str, family: &str, op: &str) -> f64 {
    let text = server.get("/metrics").expect_status(200).text();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parse /metrics");
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == family
                && s.labels.get("volume") == Some(volume)
                && s.labels.get("op") == Some(op)
        })
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// [`op_total_of`] the volume `vm`.
fn op_total(server: &Server, family: &str, op: &str) -> f64 {
    op_total_of(server, "vm", family, op)
}

/// `GET block-status` of `vm` as `(offset, length, zero)`, checked to
/// cover the range end to end.
#[track_caller]
fn block_status(server: &Server, offset: u64, length: u64) -> Vec<(u64, u64, bool)> {
    let map = server
        .get(&format!(
            "/v1/volumes/vm/block-status?offset={offset}&length={length}"
        ))
        .expect_status(200)
        .json();
    let extents: Vec<(u64, u64, bool)> = map
        .as_array()
        .expect("a list of extents")
        .iter()
        .map(|e| {
            (
                e["offset"].as_u64().expect("offset"),
                e["length"].as_u64().expect("length"),
                e["zero"].as_bool().expect("zero"),
            )
        })
        .collect();
    let mut at = offset;
    for &(o, l, _) in &extents {
        assert_eq!(o, at, "extents end to end: {extents:?}");
        at += l;
    }
    assert_eq!(at, offset + length, "the whole range: {extents:?}");
    extents
}

/// Whether the map says zero over all of `start..end` (and may say
/// anything elsewhere).
fn zero_over(map: &[(u64, u64, bool)], start: u64, end: u64) -> bool {
    map.iter()
        .filter(|(o, l, _)| *o < end && o + l > start)
        .all(|(_, _, zero)| *zero)
}

/// Whether the map says data over all of `start..end`.
fn data_over(map: &[(u64, u64, bool)], start: u64, end: u64) -> bool {
    map.iter()
        .filter(|(o, l, _)| *o < end && o + l > start)
        .all(|(_, _, zero)| !*zero)
}

/// A discard over HTTP zeroes every child file, frees its blocks, keeps
/// the neighbours, shows as zero in block status and counts as `discard`.
#[test]
fn an_http_discard_punches_holes_in_every_child() {
    let server = Sandbox::new().serve(&abc_volume("16MiB", ""));
    let data = pattern(40, 8 * MIB as usize);
    server.write_volume("vm", 0, &data);
    server.post("/v1/volumes/vm/flush").expect_status(204);
    let before: Vec<u64> = ABC.iter().map(|f| blocks(&server, f)).collect();
    for (f, b) in ABC.iter().zip(&before) {
        assert!(*b >= 8 * MIB / 512, "{f} holds the 8 MiB: {b} blocks");
    }

    let (start, len) = (2 * MIB, 4 * MIB);
    server
        .post(&format!(
            "/v1/volumes/vm/discard?offset={start}&length={len}"
        ))
        .expect_status(204);
    server.post("/v1/volumes/vm/flush").expect_status(204);

    let mut expect = data.clone();
    expect[start as usize..(start + len) as usize].fill(0);
    for (f, b) in ABC.iter().zip(&before) {
        assert_bytes_eq(
            &server.read_file_at(f, 0, expect.len()),
            &expect,
            &format!("{f} after the discard"),
        );
        let after = blocks(&server, f);
        assert!(
            after + freed(len) <= *b,
            "{f} freed the 4 MiB: {b} blocks before, {after} after"
        );
    }
    assert_bytes_eq(&server.read_volume("vm", 0, 8 * MIB), &expect, "the volume");
    let map = block_status(&server, 0, 8 * MIB);
    assert!(zero_over(&map, start, start + len), "{map:?}");
    assert!(data_over(&map, 0, start), "{map:?}");
    assert!(data_over(&map, start + len, 8 * MIB), "{map:?}");

    // Unaligned: the partial blocks at the edges are zeroed too.
    server
        .post("/v1/volumes/vm/discard?offset=7000&length=10000")
        .expect_status(204);
    expect[7000..17_000].fill(0);
    assert_children_equal(&server, &expect);

    assert_eq!(op_total(&server, "quorum_requests_total", "discard"), 2.0);
    assert_eq!(
        op_total(&server, "quorum_request_bytes_total", "discard"),
        (len + 10_000) as f64
    );
    assert_eq!(op_total(&server, "quorum_failures_total", "discard"), 0.0);
    assert!(server.all_events().is_empty(), "{:?}", server.all_events());
}

#[track_caller]
fn assert_children_equal(server: &Server, expect: &[u8]) {
    for f in ABC {
        assert_bytes_eq(
            &server.read_file_at(f, 0, expect.len()),
            expect,
            &format!("child file {f}"),
        );
    }
}

/// Missing, malformed, out-of-range and overflowing offsets and lengths
/// get a 4xx that says what is wrong, and discard nothing.
#[test]
fn bad_discards_are_refused_and_change_nothing() {
    let sandbox = Sandbox::new();
    let data = pattern(41, MIB as usize);
    for f in ABC {
        sandbox.write_file_at(f, 0, &data);
    }
    let server = sandbox.serve(&abc_volume("1MiB", ""));
    let snap = server.snapshot(&ABC);
    for (query, status, code, says) in [
        ("", 400, "bad_request", "missing field `offset`"),
        ("offset=0", 400, "bad_request", "missing field `length`"),
        ("length=4096", 400, "bad_request", "missing field `offset`"),
        (
            "offset=abc&length=4096",
            400,
            "bad_request",
            "invalid digit",
        ),
        ("offset=0&length=4k", 400, "bad_request", "invalid digit"),
        ("offset=-1&length=4096", 400, "bad_request", "invalid digit"),
        (
            "offset=0&length=18446744073709551616",
            400,
            "bad_request",
            "too large",
        ),
        (
            "offset=1048576&length=1",
            416,
            "out_of_range",
            "outside the volume's 1048576 bytes",
        ),
        (
            "offset=1048000&length=4096",
            416,
            "out_of_range",
            "bytes 1048000..1052096 lie outside",
        ),
        (
            "offset=18446744073709551615&length=2",
            416,
            "out_of_range",
            "outside the volume's 1048576 bytes",
        ),
        (
            "offset=4096&length=18446744073709551615",
            416,
            "out_of_range",
            "outside the volume's 1048576 bytes",
        ),
    ] {
        let message = server
            .post(&format!("/v1/volumes/vm/discard?{query}"))
            .expect_error(status, code);
        assert!(
            message.contains(says),
            "the message for ?{query} says {says:?}: {message}"
        );
        server.assert_unchanged(&snap, &format!("discard ?{query}"));
    }
    server
        .post("/v1/volumes/nope/discard?offset=0&length=4096")
        .expect_error(404, "no_such_volume");
    server
        .get("/v1/volumes/vm/discard?offset=0&length=4096")
        .expect_status(405);
    server.assert_unchanged(&snap, "the refused discards");
    // As for write-zeroes, the engine counts the four it refused for their
    // range (the malformed ones never reached it); none was a failure.
    assert_eq!(op_total(&server, "quorum_requests_total", "discard"), 4.0);
    assert_eq!(op_total(&server, "quorum_failures_total", "discard"), 0.0);
}

/// qemu-io's `discard` is NBD `TRIM`: a hole in every child file, counted
/// as `discard`. Its `write -z` without `-u` (`NO_HOLE`) reads zero but
/// stays allocated; with `-u` it may punch.
#[test]
fn an_nbd_trim_punches_holes_and_no_hole_zeroes_stay_allocated() {
    let server = Sandbox::new().serve(&with_nbd(&abc_volume("16MiB", "")));
    let vm = nbd_url(&server, "vm");
    qemu_io(&vm, &["write -P 0x5a 0 8M", "flush"]);
    let before: Vec<u64> = ABC.iter().map(|f| blocks(&server, f)).collect();
    qemu_io(&vm, &["discard 0 4M", "flush", "read -P 0 0 4M"]);
    for (f, b) in ABC.iter().zip(&before) {
        assert_all_bytes(
            &server.read_file_at(f, 0, 4 * MIB as usize),
            0,
            &format!("{f} where it was trimmed"),
        );
        assert_all_bytes(
            &server.read_file_at(f, 4 * MIB, 4 * MIB as usize),
            0x5a,
            &format!("{f} after the trimmed range"),
        );
        let after = blocks(&server, f);
        assert!(
            after + freed(4 * MIB) <= *b,
            "{f} freed the 4 MiB: {b} blocks before, {after} after"
        );
    }
    assert!(
        op_total(&server, "quorum_requests_total", "discard") >= 1.0,
        "the trim counts as discard"
    );
    assert_eq!(
        op_total(&server, "quorum_request_bytes_total", "discard"),
        (4 * MIB) as f64
    );

    qemu_io(
        &vm,
        &[
            "write -z 4M 1M",
            "write -z -u 5M 1M",
            "flush",
            "read -P 0 4M 2M",
        ],
    );
    for f in ABC {
        assert_all_bytes(
            &server.read_file_at(f, 4 * MIB, 2 * MIB as usize),
            0,
            &format!("{f} after write -z"),
        );
    }
    let map = block_status(&server, 4 * MIB, 2 * MIB);
    assert!(
        data_over(&map, 4 * MIB, 5 * MIB),
        "NO_HOLE zeroes stay allocated: {map:?}"
    );
    assert!(
        zero_over(&map, 5 * MIB, 6 * MIB),
        "zeroes that may unmap are a hole: {map:?}"
    );
    assert_eq!(
        op_total(&server, "quorum_request_bytes_total", "write_zeroes"),
        (2 * MIB) as f64
    );
    assert!(server.all_events().is_empty(), "{:?}", server.all_events());
}

/// A remote child gets the discard as a discard: the block server punches
/// a hole in its own file child and counts a `discard`.
#[test]
fn a_remote_child_forwards_the_discard() {
    let blk = block_server("8MiB", "");
    let front = Sandbox::new().serve(&volume(
        "vm",
        "8MiB",
        2,
        "",
        &[remote_child("r0", &blk, "blk", ""), child("a"), child("b")],
    ));
    let data = pattern(42, 4 * MIB as usize);
    front.write_volume("vm", 0, &data);
    front.post("/v1/volumes/vm/flush").expect_status(204);
    let before = blocks(&blk, "disk.img");
    assert!(before >= 4 * MIB / 512, "the block server holds the data");

    let (start, len) = (MIB, 2 * MIB);
    front
        .post(&format!(
            "/v1/volumes/vm/discard?offset={start}&length={len}"
        ))
        .expect_status(204);
    front.post("/v1/volumes/vm/flush").expect_status(204);

    let mut expect = data.clone();
    expect[start as usize..(start + len) as usize].fill(0);
    assert_bytes_eq(
        &blk.read_file_at("disk.img", 0, expect.len()),
        &expect,
        "the block server's file",
    );
    let after = blocks(&blk, "disk.img");
    assert!(
        after + freed(len) <= before,
        "the block server freed 2 MiB: {before} blocks before, {after} after"
    );
    let remote = |op| op_total_of(&blk, "blk", "quorum_request_bytes_total", op);
    assert_eq!(remote("discard"), len as f64, "forwarded as a discard");
    assert_eq!(remote("write_zeroes"), 0.0, "not as write-zeroes");
    assert_bytes_eq(
        &front.read_volume("vm", 0, 4 * MIB),
        &expect,
        "the front volume",
    );
    assert!(front.all_events().is_empty(), "{:?}", front.all_events());
}

/// An S3 child deletes the chunks a discard covers whole, and keeps (with
/// zeroes) the ones it covers in part.
#[test]
fn an_s3_child_deletes_whole_chunks() {
    const CHUNK: u64 = 64 * KIB;
    let weed = Weed::start();
    let server = Sandbox::new().serve(&volume(
        "vm",
        "1MiB",
        2,
        "",
        &[s3_child("s0", &weed, "vm"), child("a"), child("b")],
    ));
    let data = pattern(43, 8 * CHUNK as usize);
    server.write_volume("vm", 0, &data);
    let rt = runtime();
    let store = weed.client();
    let chunks = || -> Vec<u64> {
        let listing = rt
            .block_on(store.list_with_delimiter(Some(&ObjectPath::from("vm/chunks"))))
            .expect("list the chunks");
        let mut found: Vec<u64> = listing
            .objects
            .iter()
            .filter_map(|o| u64::from_str_radix(o.location.filename()?, 16).ok())
            .collect();
        found.sort_unstable();
        found
    };
    assert_eq!(chunks(), (0..8).collect::<Vec<_>>(), "every chunk written");

    // Chunks 1 to 4 whole, 5 in part.
    let (start, len) = (CHUNK, 4 * CHUNK + 100);
    server
        .post(&format!(
            "/v1/volumes/vm/discard?offset={start}&length={len}"
        ))
        .expect_status(204);
    assert_eq!(chunks(), vec![0, 5, 6, 7], "the whole chunks are gone");
    let mut expect = data.clone();
    expect[start as usize..(start + len) as usize].fill(0);
    assert_bytes_eq(
        &server.read_volume("vm", 0, 8 * CHUNK),
        &expect,
        "the volume",
    );
    let map = block_status(&server, 0, 8 * CHUNK);
    assert!(zero_over(&map, CHUNK, 5 * CHUNK), "{map:?}");
    assert!(data_over(&map, 5 * CHUNK, 8 * CHUNK), "{map:?}");
    assert!(server.all_events().is_empty(), "{:?}", server.all_events());
}
