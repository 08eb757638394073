//! Block status of a fragmented volume (issue 12, item 4): exact, paged
//! (`limit` and `Quorum-Next-Offset`), followed by the remote backend, and
//! linear in the number of extents.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use quorum_core::Extent;

use crate::util::*;

/// 1 GiB with 4 KiB of data every 8 KiB: 262,144 extents on each child.
const SIZE: u64 = 1 << 30;
const STRIDE: u64 = 8 * KIB;
const DATA: u64 = 4 * KIB;
const EXTENTS: usize = (2 * SIZE / STRIDE) as usize;
/// The API's default and largest `limit`.
const DEFAULT_LIMIT: usize = 65_536;
const MAX_LIMIT: usize = 1_048_576;
/// The whole walk must take less than this against a release server (the
/// best of three walks, so that a burst of load elsewhere on the machine
/// does not fail it; the client's JSON parsing is not timed). Before issue
/// 12 one call took 36 s.
const RELEASE_BOUND: Duration = Duration::from_millis(500);
/// The same against a debug server, several times slower (0.7 to 1.3 s).
const DEBUG_BOUND: Duration = Duration::from_secs(5);
/// How many times the walk is timed.
const WALKS: usize = 3;

/// `GET block-status` of `offset..SIZE`, with `limit` when given: the
/// answer, checked to be 200 JSON.
fn get_page(server: &Server, offset: u64, limit: Option<usize>) -> Resp {
    let limit = limit.map_or(String::new(), |l| format!("&limit={l}"));
    let r = server.get(&format!(
        "/v1/volumes/vm/block-status?offset={offset}&length={}{limit}",
        SIZE - offset
    ));
    r.expect_status(200);
    r
}

/// The `Quorum-Next-Offset` of a page, if any.
fn next_offset(r: &Resp) -> Option<u64> {
    r.header("quorum-next-offset").map(|v| {
        v.parse()
            .unwrap_or_else(|e| panic!("{}: Quorum-Next-Offset {v:?}: {e}", r.request))
    })
}

/// The extents of one page, checked to be contiguous from `offset`, at
/// most `limit`, and, when the page is cut short, to hold `limit` and to
/// end at its `Quorum-Next-Offset`.
#[track_caller]
fn parse_page(r: &Resp, offset: u64, limit: usize) -> Vec<Extent> {
    let v = r.json();
    let list = v.as_array().expect("block status is a JSON array");
    let mut out = Vec::with_capacity(list.len());
    let mut at = offset;
    for e in list {
        let field = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k} in {e}"));
        let extent = Extent {
            offset: field("offset"),
            length: field("length"),
            zero: e["zero"].as_bool().unwrap_or_else(|| panic!("zero in {e}")),
        };
        assert_eq!(extent.offset, at, "{}: extents are contiguous", r.request);
        assert!(extent.length > 0, "{}: an empty extent", r.request);
        at = extent.end();
        out.push(extent);
    }
    assert!(
        !out.is_empty() && out.len() <= limit,
        "{}: {} extents for a limit of {limit}",
        r.request,
        out.len()
    );
    match next_offset(r) {
        Some(next) => {
            assert_eq!(next, at, "{}: the next page starts at the end", r.request);
            assert_eq!(out.len(), limit, "{}: a page cut short is full", r.request);
        }
        None => assert_eq!(at, SIZE, "{}: a last page reaches the end", r.request),
    }
    out
}

/// Walks the whole volume page by page with `limit`; the pages put end to
/// end, unjoined, and how many there were.
fn walk(server: &Server, limit: usize) -> (Vec<Extent>, usize) {
    let (mut all, mut pages, mut at) = (Vec::new(), 0, 0);
    loop {
        let r = get_page(server, at, Some(limit));
        all.extend(parse_page(&r, at, limit));
        pages += 1;
        match next_offset(&r) {
            Some(next) => at = next,
            None => return (all, pages),
        }
    }
}

#[test]
fn block_status_of_262144_extents_is_exact_paged_and_fast() {
    let sandbox = Sandbox::new();
    for name in ABC {
        sandbox.striped_file(name, SIZE, STRIDE, DATA, 0x5a);
    }
    let server = sandbox.serve(&abc_volume("1GiB", ""));

    // Timed: the whole volume, following the pages at the default limit.
    // Only the HTTP exchanges count; the JSON is parsed afterwards.
    let mut times = Vec::new();
    let mut answers: Vec<(u64, Resp)> = Vec::new();
    for _ in 0..WALKS {
        answers.clear();
        let started = Instant::now();
        let mut at = 0;
        loop {
            let r = get_page(&server, at, None);
            let next = next_offset(&r);
            answers.push((at, r));
            match next {
                Some(next) => at = next,
                None => break,
            }
        }
        times.push(started.elapsed());
    }
    let bytes: usize = answers.iter().map(|(_, r)| r.body.len()).sum();
    println!(
        "block status of {EXTENTS} extents on 3 file children, followed page by page: \
         {times:?} in {} pages of {DEFAULT_LIMIT} ({bytes} bytes of JSON)",
        answers.len()
    );

    // Exact: every extent, in order, one 4 KiB run of data then one hole.
    let whole: Vec<Extent> = answers
        .iter()
        .flat_map(|(offset, r)| parse_page(r, *offset, DEFAULT_LIMIT))
        .collect();
    assert_eq!(whole.len(), EXTENTS);
    for (i, e) in whole.iter().enumerate() {
        let want = Extent {
            offset: i as u64 * DATA,
            length: DATA,
            zero: i % 2 == 1,
        };
        assert_eq!(*e, want, "extent {i}");
    }
    assert_eq!(answers.len(), EXTENTS.div_ceil(DEFAULT_LIMIT));
    // A release build of the tests, or a release server given in
    // QUORUM_E2E_BIN, is held to the release bound.
    let release = !cfg!(debug_assertions) || std::env::var_os("QUORUM_E2E_BIN").is_some();
    let bound = if release { RELEASE_BOUND } else { DEBUG_BOUND };
    let best = times.iter().min().copied().unwrap_or_default();
    assert!(
        best < bound,
        "block status of {EXTENTS} extents took {times:?} (bound {bound:?})"
    );

    // One page of the largest limit is the whole answer, with no header.
    let r = get_page(&server, 0, Some(MAX_LIMIT));
    assert_eq!(next_offset(&r), None);
    assert_eq!(
        parse_page(&r, 0, MAX_LIMIT),
        whole,
        "one page of {MAX_LIMIT}"
    );

    // Pages of 1000, followed from each Quorum-Next-Offset, are the same
    // list.
    let (small, pages) = walk(&server, 1000);
    assert_eq!(pages, EXTENTS.div_ceil(1000));
    assert_eq!(small, whole, "pages of 1000");

    // A page that starts inside an extent starts there.
    let r = get_page(&server, DATA / 2, Some(3));
    assert_eq!(
        parse_page(&r, DATA / 2, 3),
        [
            Extent {
                offset: DATA / 2,
                length: DATA / 2,
                zero: false
            },
            Extent {
                offset: DATA,
                length: DATA,
                zero: true
            },
            Extent {
                offset: 2 * DATA,
                length: DATA,
                zero: false
            },
        ]
    );

    // A limit of 0 or above the largest is refused.
    for limit in ["0", "1048577", "-1", "x"] {
        server
            .get(&format!(
                "/v1/volumes/vm/block-status?offset=0&length=4096&limit={limit}"
            ))
            .expect_error(400, "bad_request");
    }

    // The remote backend follows the pages: asked for everything, it gets
    // the list in pages of 65,536 and joins them.
    let uri = format!("http://127.0.0.1:{}/v1/volumes/vm", server.port());
    let options = BTreeMap::new();
    let remote = quorum_backends::open(quorum_backends::ChildSource {
        uri: &uri,
        options: &options,
        base_dir: Path::new("."),
        size: Some(SIZE),
        faults: &[],
        mark: "test",
        confine: None,
        create: true,
    })
    .expect("open the remote child");
    let started = Instant::now();
    let through = remote
        .block_status(0, SIZE, usize::MAX)
        .expect("remote block status");
    println!("the same through the http backend: {:?}", started.elapsed());
    assert_eq!(through, whole, "through the http backend");
    let cut = remote
        .block_status(0, SIZE, 100_000)
        .expect("remote block status");
    assert_eq!(cut, whole[..100_000], "the first 100,000 through http");
}
