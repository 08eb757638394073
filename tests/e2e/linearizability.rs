//! Linearizability under faults (issue 11, "tests that find the next
//! defect", item 1): SPEC 8.1 (atomic reads) and 8.2 (linearizable blocks)
//! checked over real histories, not quiet interleavings.
//!
//! Two tests against the real server:
//!
//! - [`large_reads_never_see_a_large_write_in_part`], the focused one:
//!   reads of 4 MiB (served by the server in 1 MiB pieces) race writes of
//!   4 MiB of one byte value over the same range; every read must hold one
//!   value only.
//! - [`blocks_are_linearizable_and_reads_atomic_under_faults`], the full
//!   one: several clients issue random reads and writes of whole 4 KiB
//!   blocks (small ones on a hot window, large ones of up to 4 MiB over the
//!   whole volume), each write a unique value ([`checker::encode`]), while a
//!   child fails writes on and off, another is slow, a third returns
//!   corrupt reads once in a while (repaired by `rewrite_corrupted`), the
//!   resync copies back what the failures left stale, a child is added and
//!   removed, and scrubs repair. Every operation is recorded with its
//!   invocation and completion on one monotonic clock and its result, and
//!   the history goes through [`checker::check`], whose module docs state
//!   the exact rules.
//!
//! On failure both print the offending operations (the history excerpt)
//! and the counts of each broken rule. The workload's random choices come
//! from a seed that is printed and can be set with `QUORUM_LIN_SEED` (the
//! interleaving, being real, does not replay).

mod checker;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::util::*;
use checker::{History, Outcome, Read, Seen, Time};

const DATA: &str = "/v1/volumes/vm/data";
const BLOCK_BYTES: u64 = checker::BLOCK as u64;

/// Nanoseconds since `start`.
fn now(start: Instant) -> Time {
    start.elapsed().as_nanos() as Time
}

fn seed() -> u64 {
    std::env::var("QUORUM_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

// ---------------------------------------------------------------------------
// The focused test: torn large reads
// ---------------------------------------------------------------------------

/// One large read of the focused test: when, and the runs of byte values
/// it returned.
struct UniformRead {
    client: usize,
    inv: Time,
    resp: Time,
    /// `(start, end, value)` runs of equal bytes.
    runs: Vec<(usize, usize, u8)>,
}

/// Runs of equal bytes in `bytes`.
fn byte_runs(bytes: &[u8]) -> Vec<(usize, usize, u8)> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let value = bytes[start];
        let len = bytes[start..]
            .iter()
            .position(|&b| b != value)
            .unwrap_or(bytes.len() - start);
        runs.push((start, start + len, value));
        start += len;
    }
    runs
}

/// SPEC 8.1 where it is hardest for a server that serves long reads in
/// pieces: 4 MiB reads while another client overwrites the same 4 MiB
/// with one byte value per write. A read that holds two values saw a write
/// land between two of its pieces.
#[test]
fn large_reads_never_see_a_large_write_in_part() {
    const SIZE: u64 = 4 * MIB;
    const WRITES: u8 = 64;
    const READERS: usize = 2;
    let server = Arc::new(Sandbox::new().serve(&abc_volume("4MiB", "")));
    let start = Instant::now();
    let writing = Arc::new(AtomicBool::new(true));

    let writer = {
        let (server, writing) = (server.clone(), writing.clone());
        thread::spawn(move || {
            let mut log = Vec::new();
            for value in 1..=WRITES {
                let inv = now(start);
                server
                    .put(&format!("{DATA}?offset=0"), vec![value; SIZE as usize])
                    .expect_status(204);
                log.push((value, inv, now(start)));
            }
            writing.store(false, Ordering::Relaxed);
            log
        })
    };
    let readers: Vec<_> = (0..READERS)
        .map(|client| {
            let (server, writing) = (server.clone(), writing.clone());
            thread::spawn(move || {
                let mut reads = Vec::new();
                // Bounded: the writer's end stops the readers, and so does
                // a count in case the writer is much slower.
                while writing.load(Ordering::Relaxed) && reads.len() < 200 {
                    let inv = now(start);
                    let body = server.read_volume("vm", 0, SIZE);
                    reads.push(UniformRead {
                        client,
                        inv,
                        resp: now(start),
                        runs: byte_runs(&body),
                    });
                }
                reads
            })
        })
        .collect();
    let writes = writer.join().expect("the writer");
    let reads: Vec<UniformRead> = readers
        .into_iter()
        .flat_map(|r| r.join().expect("a reader"))
        .collect();

    let torn: Vec<&UniformRead> = reads.iter().filter(|r| r.runs.len() > 1).collect();
    println!(
        "torn-read test: {} reads of 4 MiB against {} writes of 4 MiB in {:.1}s; {} torn",
        reads.len(),
        writes.len(),
        start.elapsed().as_secs_f64(),
        torn.len()
    );
    if !torn.is_empty() {
        let mut msg = format!(
            "SPEC 8.1: {} of {} reads of 4 MiB saw a 4 MiB write in part \
             (each write puts one byte value on the whole range, so a read \
             must hold one value)\n",
            torn.len(),
            reads.len()
        );
        for r in torn.iter().take(5) {
            let _ = writeln!(
                msg,
                "  read client {} [{:.3}ms .. {:.3}ms] returned:",
                r.client,
                r.inv as f64 / 1e6,
                r.resp as f64 / 1e6
            );
            for (a, b, v) in r.runs.iter().take(8) {
                let _ = writeln!(msg, "      bytes {a}..{b}: 0x{v:02x}");
            }
            for (v, inv, resp) in writes.iter().filter(|(_, i, e)| *i < r.resp && *e > r.inv) {
                let _ = writeln!(
                    msg,
                    "    concurrent write of 0x{v:02x} [{:.3}ms .. {:.3}ms]",
                    *inv as f64 / 1e6,
                    *resp as f64 / 1e6
                );
            }
        }
        panic!("{msg}");
    }
    assert!(
        reads.len() >= 10,
        "only {} reads raced the writes: the test proved nothing",
        reads.len()
    );
}

// ---------------------------------------------------------------------------
// The full test
// ---------------------------------------------------------------------------

/// The volume: 4 MiB, so that a read can span several 1 MiB pieces.
const VOLUME_BLOCKS: u64 = 1024;
/// Small operations fall on this window, so that blocks see contention.
const HOT: std::ops::Range<u64> = 448..512;
/// Child a fails every write here: a range it never holds fresh.
const A_BROKEN: std::ops::Range<u64> = 456..458;
/// Client threads.
const CLIENTS: usize = 6;
/// Operations the clients aim for, and the least the test accepts.
const TARGET_OPS: usize = 11_000;
const MIN_OPS: usize = 10_000;
/// The clients stop by this time even short of the target.
const BUDGET: Duration = Duration::from_secs(75);

fn fault_lines(op: &str, first_block: u64, blocks: u64, what: &[&str]) -> String {
    let offset = format!("offset = {}", first_block * BLOCK_BYTES);
    let length = format!("length = {}", blocks * BLOCK_BYTES);
    let mut lines = vec![offset.as_str(), length.as_str()];
    lines.extend_from_slice(what);
    fault(op, &lines)
}

/// The config of the full test: `a` fails writes (always on [`A_BROKEN`],
/// once each on scattered blocks, some twice), `b` is slow (1 ms on every
/// call, 8 ms on reads of part of the hot window) and fails a few writes
/// where `a` fails too, `c` returns corrupt reads once on a few hot blocks;
/// `rewrite_corrupted` repairs those. The faulty rules cannot be changed
/// while the server runs, so "on and off" is the rules that fire once
/// (each the first time a write or a resync reaches its block) beside one
/// range that always fails.
fn full_config() -> String {
    let mut a = fault_lines(
        "write",
        A_BROKEN.start,
        A_BROKEN.end - A_BROKEN.start,
        &["error = \"EIO\""],
    );
    for k in 0..48u64 {
        let block = (k * 97 + 13) % VOLUME_BLOCKS;
        let copies = if k % 3 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            a.push_str(&fault_lines(
                "write",
                block,
                1,
                &["error = \"EIO\"", "once = true"],
            ));
        }
    }
    for k in 0..12u64 {
        let block = HOT.start + 16 + (k * 5) % 48;
        a.push_str(&fault_lines(
            "write",
            block,
            1,
            &["error = \"EIO\"", "once = true"],
        ));
    }
    // b fails writes once where a fails too: those writes fail (503) with
    // only c holding them, "may or may not have happened".
    let mut b = fault("any", &["latency = \"1ms\""]);
    for _ in 0..3 {
        b.push_str(&fault_lines(
            "write",
            A_BROKEN.start,
            1,
            &["error = \"EIO\"", "once = true"],
        ));
    }
    for k in 0..4u64 {
        b.push_str(&fault_lines(
            "write",
            HOT.start + 16 + (k * 5) % 48,
            1,
            &["error = \"EIO\"", "once = true"],
        ));
    }
    b.push_str(&fault_lines(
        "read",
        HOT.start + 32,
        16,
        &["latency = \"8ms\""],
    ));
    let mut c = String::new();
    for k in 0..8u64 {
        c.push_str(&fault_lines(
            "read",
            HOT.start + 20 + 4 * k,
            1,
            &["corrupt = true", "once = true"],
        ));
    }
    format!(
        "max_request_bytes = \"4MiB\"\nchild_roots = [\".\"]\n{}",
        volume(
            "vm",
            "4MiB",
            2,
            "rewrite_corrupted = true",
            &[
                child_with("a", &a),
                child_with("b", &b),
                child_with("c", &c)
            ],
        )
    )
}

/// What the clients and the fault loops share.
struct Shared {
    server: Arc<Server>,
    start: Instant,
    next_id: AtomicU64,
    ops: AtomicUsize,
    stop: AtomicBool,
    /// What the fault loops did, with times, for the report.
    log: Mutex<Vec<String>>,
}

impl Shared {
    fn note(&self, what: String) {
        let line = format!("{:9.3}ms {what}", now(self.start) as f64 / 1e6);
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self.ops.load(Ordering::Relaxed) >= TARGET_OPS
            || self.start.elapsed() > BUDGET
    }
}

/// What one client did.
#[derive(Default)]
struct ClientLog {
    writes: Vec<checker::Write>,
    reads: Vec<Read>,
    /// Failed reads by cause.
    failed_reads: BTreeMap<String, usize>,
    large_reads: usize,
}

/// A 5xx answer's status and error code, for the record.
fn failure(status: u16, body: &[u8]) -> String {
    let code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    format!("{status} {code}")
}

fn client(shared: &Shared, client: usize, seed: u64) -> ClientLog {
    let mut rng = Rng(seed);
    let mut log = ClientLog::default();
    let server = &shared.server;
    while !shared.done() {
        let dice = rng.range(0, 99);
        let (first, blocks, write) = match dice {
            // Small writes and reads on (and around) the hot window.
            0..=83 => {
                let first = rng.range(HOT.start - 4, HOT.end - 1);
                let most = if dice < 42 { 8 } else { 16 };
                let blocks = rng.range(1, most).min(VOLUME_BLOCKS - first);
                (first, blocks, dice < 42)
            }
            // Large reads: more than one 1 MiB piece, up to the whole volume.
            84..=93 => {
                let blocks = rng.range(257, VOLUME_BLOCKS);
                (rng.range(0, VOLUME_BLOCKS - blocks), blocks, false)
            }
            // Large writes, from 256 KiB to 2 MiB.
            _ => {
                let blocks = rng.range(64, 512);
                (rng.range(0, VOLUME_BLOCKS - blocks), blocks, true)
            }
        };
        let offset = first * BLOCK_BYTES;
        let len = blocks * BLOCK_BYTES;
        if write {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let body = checker::encode(id, first, blocks);
            let rb = server
                .request(Method::PUT, &format!("{DATA}?offset={offset}"))
                .body(body);
            let inv = now(shared.start);
            let answer = rb.send().map(|r| {
                let status = r.status().as_u16();
                (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
            });
            let resp = now(shared.start);
            let outcome = match answer {
                Ok((204, _)) => Outcome::Ok,
                Ok((status, body)) if status >= 500 => Outcome::Failed(failure(status, &body)),
                Ok((status, body)) => panic!(
                    "PUT {offset}+{len}: unexpected status {status}: {}",
                    String::from_utf8_lossy(&body)
                ),
                Err(e) => Outcome::Failed(format!("no answer: {e}")),
            };
            log.writes.push(checker::Write {
                id,
                client,
                first,
                blocks,
                inv,
                resp,
                outcome,
            });
        } else {
            if blocks > 256 {
                log.large_reads += 1;
            }
            let rb = server
                .request(Method::GET, DATA)
                .header("range", format!("bytes={offset}-{}", offset + len - 1));
            let inv = now(shared.start);
            let answer = rb.send().map(|r| {
                let status = r.status().as_u16();
                (status, r.bytes().map(|b| b.to_vec()))
            });
            let resp = now(shared.start);
            let why = match answer {
                Ok((206, Ok(body))) if body.len() as u64 == len => {
                    let seen: Vec<Seen> =
                        body.chunks(checker::BLOCK).map(checker::decode).collect();
                    log.reads.push(Read {
                        client,
                        first,
                        inv,
                        resp,
                        seen,
                    });
                    None
                }
                Ok((206, Ok(_))) => Some("206 cut short".to_string()),
                Ok((206, Err(e))) => Some(format!("206, body failed: {e}")),
                Ok((status, body)) if status >= 500 => {
                    Some(failure(status, body.as_deref().unwrap_or_default()))
                }
                Ok((status, body)) => panic!(
                    "GET {offset}+{len}: unexpected status {status}: {}",
                    String::from_utf8_lossy(body.as_deref().unwrap_or_default())
                ),
                Err(e) => Some(format!("no answer: {e}")),
            };
            if let Some(why) = why {
                *log.failed_reads.entry(why).or_default() += 1;
            }
        }
        shared.ops.fetch_add(1, Ordering::Relaxed);
    }
    log
}

fn children(server: &Server) -> Vec<Value> {
    server.get("/v1/volumes/vm").json()["children"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits (pacing, not synchronizing) until the clients have done `ops`
/// operations or stopped; false when they stopped first.
fn wait_for_ops(shared: &Shared, ops: usize) -> bool {
    while shared.ops.load(Ordering::Relaxed) < ops {
        if shared.done() {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Retries a membership change while the server answers 503 `busy`
/// (bounded); returns the last answer's status and body.
fn membership(shared: &Shared, what: &str, send: impl Fn() -> Resp) -> u16 {
    for attempt in 1..=40 {
        let r = send();
        if r.status == 503 && attempt < 40 && !shared.done() {
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        shared.note(format!(
            "{what}: {} {} (attempt {attempt})",
            r.status,
            r.preview()
        ));
        return r.status;
    }
    0
}

/// Adds child d under load, waits for it to sync, removes it; twice.
fn membership_loop(shared: &Shared) -> usize {
    let server = &shared.server;
    let mut changes = 0;
    for (round, at) in [TARGET_OPS / 5, TARGET_OPS / 2].into_iter().enumerate() {
        if !wait_for_ops(shared, at) {
            break;
        }
        let name = format!("d{round}");
        let body = json!({ "name": name, "uri": format!("{name}.img"), "options": {} }).to_string();
        let added = membership(shared, &format!("add {name}"), || {
            server.send(
                server
                    .request(Method::POST, "/v1/volumes/vm/children")
                    .body(body.clone()),
            )
        });
        assert_eq!(added, 201, "adding {name} under load failed");
        changes += 1;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let state = children(server)
                .iter()
                .find(|c| c["name"] == name.as_str())
                .map(|c| c["state"].clone());
            if state.as_ref().is_some_and(|s| s == "healthy") {
                shared.note(format!("{name} is healthy"));
                break;
            }
            if Instant::now() > deadline || shared.done() {
                shared.note(format!("{name} not healthy in time: {state:?}"));
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let removed = membership(shared, &format!("remove {name}"), || {
            server.send(server.request(Method::DELETE, &format!("/v1/volumes/vm/children/{name}")))
        });
        if removed == 204 {
            changes += 1;
        }
    }
    changes
}

/// Scrubs with repair, one after the other, a pause between them.
fn scrub_loop(shared: &Shared) -> usize {
    let server = &shared.server;
    let mut done = 0;
    while !shared.done() {
        thread::sleep(Duration::from_millis(1500));
        if shared.done() {
            break;
        }
        let r = server.send(
            server
                .request(Method::POST, "/v1/volumes/vm/scrub")
                .body(r#"{"repair": true}"#),
        );
        if r.status != 202 {
            shared.note(format!("scrub refused: {} {}", r.status, r.preview()));
            continue;
        }
        let id = r.json()["id"].as_u64().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let end = loop {
            let jobs = server.get("/v1/volumes/vm/jobs").json();
            let job = jobs
                .as_array()
                .and_then(|js| js.iter().find(|j| j["id"] == id && j["kind"] == "scrub"))
                .cloned()
                .unwrap_or(Value::Null);
            if job["state"] != "running" || Instant::now() > deadline {
                break job;
            }
            thread::sleep(Duration::from_millis(50));
        };
        shared.note(format!("scrub {id} (repair): {end}"));
        done += 1;
    }
    done
}

#[test]
fn blocks_are_linearizable_and_reads_atomic_under_faults() {
    let seed = seed();
    println!("linearizability: seed {seed} (QUORUM_LIN_SEED={seed} repeats the choices)");
    let server = Arc::new(Sandbox::new().serve(&full_config()));
    let shared = Arc::new(Shared {
        server: server.clone(),
        start: Instant::now(),
        next_id: AtomicU64::new(1),
        ops: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        log: Mutex::new(Vec::new()),
    });

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let shared = shared.clone();
            let seed = seed.wrapping_add(c as u64 * 0x1000_0001);
            thread::spawn(move || client(&shared, c, seed))
        })
        .collect();
    let members = {
        let shared = shared.clone();
        thread::spawn(move || membership_loop(&shared))
    };
    let scrubs = {
        let shared = shared.clone();
        thread::spawn(move || scrub_loop(&shared))
    };

    let mut history = History::default();
    let mut failed_reads: BTreeMap<String, usize> = BTreeMap::new();
    let mut large_reads = 0;
    for c in clients {
        let log = c.join().expect("a client thread");
        history.writes.extend(log.writes);
        history.reads.extend(log.reads);
        large_reads += log.large_reads;
        for (why, n) in log.failed_reads {
            *failed_reads.entry(why).or_default() += n;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let elapsed = shared.start.elapsed();
    let changes = members.join().expect("the membership loop");
    let scrubbed = scrubs.join().expect("the scrub loop");

    let ops = shared.ops.load(Ordering::Relaxed);
    let acked = history
        .writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok)
        .count();
    let failed_writes: BTreeMap<String, usize> =
        history.writes.iter().fold(BTreeMap::new(), |mut m, w| {
            if let Outcome::Failed(why) = &w.outcome {
                *m.entry(why.clone()).or_default() += 1;
            }
            m
        });
    let a_write_errors = server
        .metric_if_any(r#"quorum_child_errors_total{volume="vm",child="a",op="write"}"#)
        .unwrap_or(0.0);
    let a_repaired = server
        .metric_if_any(r#"quorum_repaired_bytes_total{volume="vm",child="a"}"#)
        .unwrap_or(0.0);
    let c_repaired = server
        .metric_if_any(r#"quorum_repaired_bytes_total{volume="vm",child="c"}"#)
        .unwrap_or(0.0);
    let checked_at = Instant::now();
    let report = checker::check(&history);
    println!(
        "linearizability: {ops} operations by {CLIENTS} clients in {:.1}s: {} writes \
         ({acked} acknowledged, failed: {failed_writes:?}), {} reads checked \
         ({large_reads} of more than 1 MiB attempted; failed: {failed_reads:?}); \
         {} block observations, {} multi-block reads; checked in {:.1}s",
        elapsed.as_secs_f64(),
        history.writes.len(),
        history.reads.len(),
        report.block_reads,
        report.multi_block_reads,
        checked_at.elapsed().as_secs_f64()
    );
    println!(
        "faults: child a write errors {a_write_errors}, repaired onto a {a_repaired} bytes, \
         onto c {c_repaired} bytes; {changes} membership changes; {scrubbed} scrubs"
    );
    for line in shared
        .log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        println!("  {line}");
    }

    assert!(
        report.ok(),
        "the history of {ops} operations breaks SPEC 8 ({} violations): {}",
        report.counts.values().sum::<usize>(),
        report.explain(&history)
    );
    assert!(
        ops >= MIN_OPS,
        "only {ops} operations in {:.1}s, fewer than {MIN_OPS}: too slow to prove much",
        elapsed.as_secs_f64()
    );
    assert!(
        a_write_errors > 0.0 && a_repaired > 0.0,
        "the faults did not bite: child a failed {a_write_errors} writes, {a_repaired} bytes \
         were resynced onto it"
    );
    assert!(
        report.multi_block_reads > 1000,
        "only {} multi-block reads were checked",
        report.multi_block_reads
    );
}
