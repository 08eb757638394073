//! The block API on healthy children: reads, writes, ranges, write-zeroes,
//! block status, flush, the volume listing and the event filters.

use std::os::unix::fs::MetadataExt;

use crate::util::*;

const SIZE: u64 = MIB;
const DATA: &str = "/v1/volumes/vm/data";

/// Checks that each child file holds `expected` at `offset`.
#[track_caller]
fn assert_children_hold(server: &Server, offset: u64, expected: &[u8]) {
    for f in ABC {
        let on_disk = server.read_file_at(f, offset, expected.len());
        assert_bytes_eq(&on_disk, expected, &format!("{f} on disk at {offset}"));
    }
}

/// Must show 1: `quorum-server` with no arguments serves its embedded
/// default on 127.0.0.1:8700 (and NBD on 127.0.0.1:10809, SPEC 9), and a
/// write then a read round-trip. It listens there and nowhere else: the
/// kernel's table of the process's
/// listening sockets (`/proc/PID/net/tcp{,6}`) holds exactly that address,
/// not the wildcard nor any other interface.
#[test]
fn embedded_default_round_trips() {
    let port = DefaultPortLock::take();
    let server = Sandbox::new().serve_default(&port);
    assert!(
        server.url_line.contains("http://127.0.0.1:8700"),
        "the server should print its URL, printed {:?}",
        server.url_line
    );
    let mut expected: Vec<std::net::SocketAddr> = [DEFAULT_ADDR, "127.0.0.1:10809"]
        .iter()
        .map(|a| a.parse().expect("a default address"))
        .collect();
    expected.sort();
    let mut listening = server.listening_addrs();
    listening.sort();
    assert_eq!(
        listening, expected,
        "the sockets the embedded default listens on"
    );

    let vol = server.get("/v1/volumes/default");
    vol.expect_status(200);
    let v = vol.json();
    assert_eq!(v["name"], "default", "{v}");
    assert_eq!(v["size"], 1u64 << 30, "{v}");
    assert_eq!(v["vote_threshold"], 2, "{v}");
    assert_eq!(v["children"].as_array().map(Vec::len), Some(3), "{v}");

    let text = b"hello from the end-to-end tests";
    let offset = 123_456_789;
    server
        .put(
            &format!("/v1/volumes/default/data?offset={offset}"),
            text.to_vec(),
        )
        .expect_status(204);
    let back = server.read_volume("default", offset, text.len() as u64);
    assert_bytes_eq(&back, text, "read back from the default volume");

    // Three sparse 1 GiB files under ./quorum-data of the current directory.
    let dir = server.file("quorum-data");
    let mut replicas = 0;
    for entry in std::fs::read_dir(&dir).expect("./quorum-data exists") {
        let meta = entry.expect("list ./quorum-data").metadata().expect("stat");
        if meta.is_file() && meta.len() == 1 << 30 {
            replicas += 1;
            assert!(
                meta.blocks() * 512 < 64 * MIB,
                "a replica file should be sparse, it has {} bytes allocated",
                meta.blocks() * 512
            );
        }
    }
    assert_eq!(
        replicas,
        3,
        "three 1 GiB replica files in {}",
        dir.display()
    );
}

/// `GET /healthz` is `200 ok` (SPEC 4), as text, and needs no token even
/// when one is configured.
#[test]
fn healthz_answers_ok_without_a_token() {
    let config = format!("[auth]\ntoken = \"t0ken\"\n{}", abc_volume("1MiB", ""));
    let server = Sandbox::new().serve(&config);
    let r = server.get("/healthz");
    r.expect_status(200);
    assert_eq!(r.text(), "ok", "the body of /healthz");
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/plain"), "content-type {ct:?}");
    // The token is real: the API needs it.
    server.get("/v1/volumes").expect_error(401, "unauthorized");
}

/// HEAD gives the size and says ranges are accepted.
#[test]
fn head_gives_length_and_accept_ranges() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    let r = server.head(DATA);
    r.expect_status(200);
    assert_eq!(r.header("content-length"), Some("1048576"), "{r:?}");
    assert_eq!(r.header("accept-ranges"), Some("bytes"), "{r:?}");
    assert!(r.body.is_empty(), "HEAD answered a body");
}

/// `A-B`, `A-` and `-N` ranges give 206 with the right Content-Range; no
/// Range gives 200 and the whole volume.
#[test]
fn range_forms() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    let data = pattern(1, SIZE as usize);
    server.write_volume("vm", 0, &data);

    let cases: [(&str, u64, u64); 5] = [
        ("bytes=100-199", 100, 199),
        ("bytes=0-0", 0, 0),
        ("bytes=4095-4096", 4095, 4096),
        ("bytes=1048000-", 1_048_000, SIZE - 1),
        ("bytes=-100", SIZE - 100, SIZE - 1),
    ];
    // Not asserted: `bytes=1000-2000000` (last byte beyond the end), which
    // RFC 9110 clamps and SPEC section 4 ("partly outside reads nothing")
    // may refuse.
    for (range, first, last) in cases {
        let r = server.get_range(DATA, range);
        r.expect_status(206);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {first}-{last}/{SIZE}").as_str()),
            "Content-Range for {range}"
        );
        let len = last - first + 1;
        assert_eq!(
            r.header("content-length"),
            Some(len.to_string().as_str()),
            "Content-Length for {range}"
        );
        assert_bytes_eq(
            &r.body,
            &data[first as usize..=last as usize],
            &format!("body for {range}"),
        );
    }

    let whole = server.get(DATA);
    whole.expect_status(200);
    assert_eq!(whole.header("content-length"), Some("1048576"));
    assert_bytes_eq(&whole.body, &data, "the whole volume");
}

/// Writes that start and end anywhere, across 4 KiB block boundaries, read
/// back exactly, and every child file holds them.
#[test]
fn unaligned_writes_round_trip() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    let mut model = vec![0u8; 64 * KIB as usize];
    let writes: [(u64, usize); 7] = [
        (4000, 10_000),
        (4095, 2),
        (8191, 1),
        (1, 4095),
        (12_000, 9000),
        (65_536 - 100, 100),
        (20_000, 30_001),
    ];
    for (i, (offset, len)) in writes.into_iter().enumerate() {
        let data = pattern(100 + i as u64, len);
        server.write_volume("vm", offset, &data);
        model[offset as usize..offset as usize + len].copy_from_slice(&data);
        // Read back a window a little wider than the write.
        let lo = offset.saturating_sub(7);
        let hi = (offset + len as u64 + 7).min(model.len() as u64);
        let back = server.read_volume("vm", lo, hi - lo);
        assert_bytes_eq(
            &back,
            &model[lo as usize..hi as usize],
            &format!("after writing {len} bytes at {offset}"),
        );
    }
    let back = server.read_volume("vm", 0, model.len() as u64);
    assert_bytes_eq(&back, &model, "the first 64 KiB");
    assert_children_hold(&server, 0, &model);
}

/// Write-zeroes zeroes exactly its range (aligned or not), on every child,
/// and block status then reports the aligned range as zero.
#[test]
fn write_zeroes_then_block_status() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));

    // A fresh volume of sparse files is zero everywhere.
    let fresh = block_status(&server, 512 * KIB, 512 * KIB);
    assert!(
        fresh.iter().all(|(_, _, zero)| *zero),
        "a never written range should be zero: {fresh:?}"
    );

    let region = 256 * KIB;
    let mut model = pattern(2, region as usize);
    server.write_volume("vm", 0, &model);
    let written = block_status(&server, 0, region);
    assert!(
        written.iter().all(|(_, _, zero)| !*zero),
        "a written range should not be zero: {written:?}"
    );

    // Aligned: 64 KiB at 64 KiB.
    server
        .post("/v1/volumes/vm/write-zeroes?offset=65536&length=65536")
        .expect_status(204);
    model[64 * KIB as usize..128 * KIB as usize].fill(0);
    let back = server.read_volume("vm", 0, region);
    assert_bytes_eq(&back, &model, "after write-zeroes 64KiB@64KiB");
    assert_children_hold(&server, 0, &model);

    let extents = block_status(&server, 0, region);
    for (offset, len, zero) in &extents {
        let (lo, hi) = (*offset, offset + len);
        let inside = lo >= 64 * KIB && hi <= 128 * KIB;
        let outside = hi <= 64 * KIB || lo >= 128 * KIB;
        assert!(
            inside || outside,
            "extent {lo}..{hi} straddles the zeroed range: {extents:?}"
        );
        assert_eq!(*zero, inside, "extent {lo}..{hi} zero={zero}: {extents:?}");
    }

    // Unaligned: 5000 bytes at 130000 (inside blocks 31..=32).
    server
        .post("/v1/volumes/vm/write-zeroes?offset=130000&length=5000")
        .expect_status(204);
    model[130_000..135_000].fill(0);
    let back = server.read_volume("vm", 0, region);
    assert_bytes_eq(&back, &model, "after write-zeroes 5000@130000");
    assert_children_hold(&server, 0, &model);
}

/// `GET block-status` as `(offset, length, zero)`, checked to be sorted,
/// contiguous and to cover exactly `[offset, offset + length)`.
#[track_caller]
fn block_status(server: &Server, offset: u64, length: u64) -> Vec<(u64, u64, bool)> {
    let r = server.get(&format!(
        "/v1/volumes/vm/block-status?offset={offset}&length={length}"
    ));
    r.expect_status(200);
    let v = r.json();
    let list = v
        .as_array()
        .unwrap_or_else(|| panic!("block-status is not an array: {v}"));
    let mut out = Vec::new();
    let mut at = offset;
    for e in list {
        let o = e["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("offset in {e}"));
        let l = e["length"]
            .as_u64()
            .unwrap_or_else(|| panic!("length in {e}"));
        let z = e["zero"].as_bool().unwrap_or_else(|| panic!("zero in {e}"));
        assert_eq!(o, at, "block-status extents should be contiguous: {v}");
        assert!(l > 0, "empty extent in {v}");
        at = o + l;
        out.push((o, l, z));
    }
    assert_eq!(
        at,
        offset + length,
        "block-status should cover the range: {v}"
    );
    out
}

/// Flush answers 204 with no body.
#[test]
fn flush_returns_204() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    server.write_volume("vm", 4096, &pattern(3, 8192));
    let r = server.post("/v1/volumes/vm/flush");
    r.expect_status(204);
    assert!(
        r.body.is_empty(),
        "flush answered a body: {:?}",
        r.preview()
    );
}

/// The listing has the fields of SPEC section 4; child names default to
/// `children.N`; `file://` URIs work; `GET /v1/volumes/vm` is the same
/// object as its entry in the list.
#[test]
fn volume_listing_has_the_spec_fields() {
    let sandbox = Sandbox::new();
    let b_uri = format!("file://{}", sandbox.file("b.img").display());
    let config = volume(
        "vm",
        "1MiB",
        2,
        "read_pattern = \"fifo\"\nrewrite_corrupted = true",
        &[
            child("a"),
            format!("  [[volume.child]]\n  name = \"b\"\n  uri = \"{b_uri}\"\n"),
            "  [[volume.child]]\n  uri = \"third.img\"\n".to_string(),
        ],
    );
    let server = sandbox.serve(&config);

    let list = server.get("/v1/volumes");
    list.expect_status(200);
    let list = list.json();
    let vols = list
        .as_array()
        .unwrap_or_else(|| panic!("/v1/volumes is not an array: {list}"));
    assert_eq!(vols.len(), 1, "{list}");
    let v = &vols[0];
    assert_eq!(v["name"], "vm", "{v}");
    assert_eq!(v["size"], SIZE, "{v}");
    assert_eq!(v["vote_threshold"], 2, "{v}");
    assert_eq!(v["read_pattern"], "fifo", "{v}");
    assert_eq!(v["rewrite_corrupted"], true, "{v}");
    assert_eq!(v["blkverify"], false, "{v}");
    let children = v["children"]
        .as_array()
        .unwrap_or_else(|| panic!("children is not an array: {v}"));
    let names: Vec<&str> = children.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["a", "b", "children.2"], "{v}");
    for c in children {
        for key in ["uri", "backend", "state"] {
            assert!(
                c[key].as_str().is_some_and(|s| !s.is_empty()),
                "child field {key} should be a non-empty string: {c}"
            );
        }
    }

    let one = server.get("/v1/volumes/vm");
    one.expect_status(200);
    assert_eq!(
        &one.json(),
        v,
        "GET /v1/volumes/vm differs from the list entry"
    );

    // Relative paths and the default data_dir follow the config file, not
    // the current directory.
    for f in ["a.img", "third.img", "b.img"] {
        assert_eq!(
            std::fs::metadata(server.file(f)).map(|m| m.len()).ok(),
            Some(SIZE),
            "{f} should be created beside the config file with the volume size"
        );
    }
    assert!(
        server.file("quorum-data").is_dir(),
        "data_dir should default to quorum-data beside the config file"
    );
    let cwd: Vec<_> = std::fs::read_dir(server.file("cwd"))
        .expect("list the server's current directory")
        .collect();
    assert!(
        cwd.is_empty(),
        "the server wrote into its current directory instead of beside the config"
    );
}

/// `since`, `limit` and `volume` filter the event list; ids start at 1.
#[test]
fn event_filters() {
    let config = format!(
        "{}\n{}",
        abc_volume("1MiB", ""),
        volume(
            "other",
            "1MiB",
            2,
            "",
            &[child("oa"), child("ob"), child("oc")]
        )
    );
    let server = Sandbox::new().serve(&config);
    assert!(server.all_events().is_empty(), "a fresh server has events");

    for (vol, corrupt) in [("vm", "c.img"), ("other", "oc.img"), ("vm", "b.img")] {
        server.write_volume(vol, 0, &pattern(4, 4096));
        server.corrupt_file(corrupt, 0, 10);
        server.read_volume(vol, 0, 4096);
        server.write_volume(vol, 0, &pattern(4, 4096)); // heal it
    }

    // Per corrupted read: the report, and the child damaged then healed.
    let all = server.all_events();
    let names: Vec<&str> = all.iter().filter_map(|e| e["event"].as_str()).collect();
    let one = [
        "QUORUM_REPORT_BAD",
        "CHILD_STATE_CHANGE",
        "CHILD_STATE_CHANGE",
    ];
    assert_eq!(names, one.repeat(3), "{all:?}");
    assert_eq!(all[0]["id"], 1, "ids start at 1: {all:?}");
    let ids: Vec<u64> = all.iter().map(event_id).collect();

    let vm = server.events("since=0&volume=vm");
    assert!(
        vm.len() == 6 && vm.iter().all(|e| e["volume"] == "vm"),
        "volume=vm: {vm:?}"
    );
    let other = server.events("since=0&volume=other");
    assert!(
        other.len() == 3 && other.iter().all(|e| e["volume"] == "other"),
        "volume=other: {other:?}"
    );

    let after_first = server.events(&format!("since={}", ids[0]));
    assert_eq!(
        after_first.iter().map(event_id).collect::<Vec<_>>(),
        ids[1..],
        "since=first id"
    );
    let limited = server.events("since=0&limit=1");
    assert_eq!(
        limited.iter().map(event_id).collect::<Vec<_>>(),
        ids[..1],
        "limit=1 gives the oldest"
    );
    let none = server.events(&format!("since={}", ids[8]));
    assert!(none.is_empty(), "since=last id: {none:?}");
}

/// SPEC section 5: overlapping requests are ordered. Writers fill whole
/// 4 KiB blocks with a pattern unique to each write while a reader reads;
/// every block a reader sees holds one write's pattern, and afterwards the
/// three children are byte-identical.
#[test]
fn concurrent_overlapping_writes_keep_children_identical() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    let region = 64 * KIB;
    let writers = 3u64;
    let writes_each = 40u64;

    // Block content of write `id`: the 8-byte id repeated.
    let block_of = |id: u64| -> Vec<u8> {
        std::iter::repeat_n(id.to_le_bytes(), (BLOCK / 8) as usize)
            .flatten()
            .collect()
    };

    std::thread::scope(|s| {
        for w in 0..writers {
            let server = &server;
            s.spawn(move || {
                for i in 0..writes_each {
                    let id = 1 + w * 1000 + i;
                    let r = pattern(id, 16);
                    let first = u64::from(r[0]) % (region / BLOCK);
                    let blocks = 1 + u64::from(r[1]) % 4;
                    let blocks = blocks.min(region / BLOCK - first);
                    let data: Vec<u8> = (0..blocks).flat_map(|_| block_of(id)).collect();
                    server.write_volume("vm", first * BLOCK, &data);
                }
            });
        }
        let server = &server;
        s.spawn(move || {
            for _ in 0..40 {
                let data = server.read_volume("vm", 0, region);
                for (b, block) in data.chunks(BLOCK as usize).enumerate() {
                    let word = &block[..8];
                    assert!(
                        block.chunks(8).all(|w| w == word),
                        "block {b} of a read mixes two writes"
                    );
                }
            }
        });
    });

    let a = server.read_file_at("a.img", 0, region as usize);
    for f in ["b.img", "c.img"] {
        let other = server.read_file_at(f, 0, region as usize);
        assert_bytes_eq(
            &other,
            &a,
            &format!("{f} against a.img after concurrent writes"),
        );
    }
    let events = server.all_events();
    assert!(
        events.is_empty(),
        "healthy children were reported: {events:?}"
    );
}
