//! The promises of SPEC section 8 through the real server, each in the
//! sequence that broke it: a hung child, a child missing from block status
//! while another joins, a membership change under steady load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::membership::{add, children, remove};
use crate::remote::block_servers;
use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";
const MIB: u64 = 1 << 20;

/// Whether block status calls any byte of `offset..offset+length` zero.
fn any_zero(server: &Server, offset: u64, length: u64) -> bool {
    let map = server
        .get(&format!(
            "/v1/volumes/vm/block-status?offset={offset}&length={length}"
        ))
        .expect_status(200)
        .json();
    let extents = map.as_array().expect("a list of extents");
    assert!(!extents.is_empty(), "an empty map: {map}");
    extents.iter().any(|e| e["zero"] == true)
}

#[test]
fn a_hung_child_costs_each_request_child_timeout_at_most() {
    // Child c takes 120 s per write (an NFS server gone away); the volume's
    // child_timeout is 1 s.
    let config = volume(
        "vm",
        "1MiB",
        2,
        "child_timeout = \"1s\"",
        &[
            child("a"),
            child("b"),
            child_with("c", &fault("write", &["latency = \"120s\""])),
        ],
    );
    let server = Sandbox::new().serve(&config);
    let started = Instant::now();
    for i in 0..5u64 {
        server
            .put(&format!("{DATA}?offset={}", i * 4096), pattern(i, 4096))
            .expect_status(204);
    }
    let took = started.elapsed();
    // The first write waits 1 s for c; the others find c fenced off (its
    // call has not returned) and do not wait at all.
    assert!(
        took < Duration::from_secs(8),
        "5 writes took {took:?} with a hung child"
    );
    let c = children(&server)
        .into_iter()
        .find(|c| c["name"] == "c")
        .expect("child c");
    assert_eq!(c["stale_bytes"], 5 * 4096, "c missed the writes: {c}");
    for i in 0..5u64 {
        assert_bytes_eq(
            &server.read_volume("vm", i * 4096, 4096),
            &pattern(i, 4096),
            "a read with c hung",
        );
    }
    // A flush is bounded too.
    let started = Instant::now();
    server.post("/v1/volumes/vm/flush").expect_status(204);
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn block_status_never_calls_an_acknowledged_write_zero_and_a_new_child_gets_it() {
    // Threshold 1 of 2: a = a remote block server, b = a file whose writes
    // at 256 KiB fail. A write there lands on a only; then a goes away.
    let (mut blocks, remote) = block_servers(1);
    let b = child_with(
        "b",
        &fault(
            "write",
            &[
                "offset = \"256KiB\"",
                "length = \"4KiB\"",
                "error = \"EIO\"",
            ],
        ),
    );
    let sandbox = Sandbox::new();
    let config = format!(
        "child_roots = [\".\"]\n{}",
        volume("vm", "1MiB", 1, "", &[remote[0].clone(), b])
    );
    let server = sandbox.serve(&config);
    let data = pattern(42, 4096);
    server
        .put(&format!("{DATA}?offset={}", 256 * 1024), data.clone())
        .expect_status(204);
    blocks[0].kill();
    assert!(
        !any_zero(&server, 256 * 1024, 4096),
        "block status called the acknowledged write zero while the only child holding it was down"
    );
    // A child added now must not be zeroed from that picture: it is stale
    // everywhere until the resync has made its copy.
    add(&server, "d", "d.img").expect_status(201);
    blocks[0].restart();
    // (b stays stale at 256 KiB: its fault rule fails every write there.)
    wait_until("d to sync", || {
        children(&server)
            .iter()
            .any(|c| c["name"] == "d" && c["stale_bytes"] == 0 && c["state"] != "syncing")
    });
    assert_bytes_eq(
        &server.read_volume("vm", 256 * 1024, 4096),
        &data,
        "the acknowledged write after a came back",
    );
    let server_dir_d = server.read_file_at("d.img", 256 * 1024, 4096);
    assert_bytes_eq(&server_dir_d, &data, "the new child's copy");
}

#[test]
fn membership_changes_do_not_starve_under_steady_load() {
    let config = format!("child_roots = [\".\"]\n{}", abc_volume("4MiB", ""));
    let server = Arc::new(Sandbox::new().serve(&config));
    server.write_volume("vm", 0, &pattern(1, 4 * MIB as usize));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..3)
        .map(|t| {
            let (server, stop, done) = (server.clone(), stop.clone(), done.clone());
            thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 20_000 {
                    let offset = ((i * 3 + t) % 1000) * 4096;
                    server
                        .put(
                            &format!("{DATA}?offset={offset}"),
                            pattern(t * 100_000 + i, 4096),
                        )
                        .expect_status(204);
                    let _ = server.read_volume("vm", offset, 4096);
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    wait_until("the load to start", || done.load(Ordering::Relaxed) > 50);
    for round in 0..3 {
        let name = format!("n{round}");
        let started = Instant::now();
        let added = add(&server, &name, &format!("{name}.img"));
        assert_eq!(added.status, 201, "add under load: {}", added.preview());
        let removed = remove(&server, &name);
        assert_eq!(
            removed.status,
            204,
            "remove under load: {}",
            removed.preview()
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a membership change took {:?} under load",
            started.elapsed()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
}

#[test]
fn the_stale_journal_stays_bounded_while_the_server_runs() {
    // c fails every write that touches its first 4 KiB. An 8 KiB write at
    // 0 marks 0..8K stale on c; a 4 KiB write at 4K then lands on c and
    // clears 4K..8K: two journal lines per pair of writes, for ever.
    let config = volume(
        "vm",
        "1MiB",
        2,
        "",
        &[
            child("a"),
            child("b"),
            child_with(
                "c",
                &fault("write", &["length = \"4KiB\"", "error = \"EIO\""]),
            ),
        ],
    );
    let server = Sandbox::new().serve(&config);
    let journal = server.file("quorum-data/stale/vm.jsonl");
    let lines = || {
        std::fs::read_to_string(&journal)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let mut most = 0;
    for i in 0..1600u64 {
        let (offset, len) = if i % 2 == 0 { (0, 8192) } else { (4096, 4096) };
        server
            .put(&format!("{DATA}?offset={offset}"), pattern(i, len))
            .expect_status(204);
        if i % 50 == 0 {
            most = most.max(lines());
        }
    }
    most = most.max(lines());
    // 1,600 lines were appended; the live state is one range.
    assert!(
        most <= 1024 + 2 + 2,
        "the journal grew to {most} lines for one live range"
    );
    let c = children(&server)
        .into_iter()
        .find(|c| c["name"] == "c")
        .expect("child c");
    assert_eq!(c["stale_bytes"], 4096, "{c}");
}

/// SPEC 8.1 for a GET without Range: a live copy of the whole volume, read
/// in pieces of 1 MiB, each atomic. Two writers keep replacing whole 1 MiB
/// pieces, each write with its own id in every 8-byte word; every piece of
/// every whole-volume GET taken meanwhile holds one id throughout (one
/// write, whole), and never an id that was not written there.
#[test]
fn a_whole_volume_get_during_writes_is_consistent_per_piece() {
    const PIECES: u64 = 8;
    let server = Arc::new(Sandbox::new().serve(&abc_volume("8MiB", "")));
    let fill = |id: u64| -> Vec<u8> {
        std::iter::repeat_n(id.to_le_bytes(), (MIB / 8) as usize)
            .flatten()
            .collect()
    };
    // Write id = piece * 1_000_000 + n, so an id names its piece too.
    for p in 0..PIECES {
        server.write_volume("vm", p * MIB, &fill(p * 1_000_000));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (server, stop, writes) = (server.clone(), stop.clone(), writes.clone());
            thread::spawn(move || {
                let mut rng = Rng(40 + w);
                let mut n = 1 + w;
                while !stop.load(Ordering::Relaxed) && n < 20_000 {
                    let p = rng.below(PIECES);
                    server.write_volume("vm", p * MIB, &fill(p * 1_000_000 + n));
                    writes.fetch_add(1, Ordering::Relaxed);
                    n += 2;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut gets = 0;
    let mut problems = Vec::new();
    while Instant::now() < deadline || gets < 3 {
        let r = server.get(DATA);
        r.expect_status(200);
        assert_eq!(r.body.len() as u64, PIECES * MIB, "the whole volume");
        for (p, piece) in r.body.chunks(MIB as usize).enumerate() {
            let first = u64::from_le_bytes(piece[..8].try_into().expect("a word"));
            let torn = piece.chunks(8).position(|w| w != first.to_le_bytes());
            if first / 1_000_000 != p as u64 {
                problems.push(format!(
                    "GET {gets}: piece {p} holds id {first}, written elsewhere"
                ));
            }
            if let Some(at) = torn {
                let other =
                    u64::from_le_bytes(piece[at * 8..at * 8 + 8].try_into().expect("a word"));
                problems.push(format!(
                    "GET {gets}: piece {p} is torn: id {first} up to byte {}, then id {other}",
                    at * 8
                ));
            }
        }
        gets += 1;
        if gets >= 200 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("a writer");
    }
    let writes = writes.load(Ordering::Relaxed);
    eprintln!("{gets} whole-volume GETs during {writes} writes of 1 MiB");
    assert!(writes >= 10, "only {writes} writes ran during the GETs");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
