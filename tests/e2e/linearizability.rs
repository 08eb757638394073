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
//!   the exact rules. Its workload is [`workload`], which takes any
//!   [`workload::BlockClient`] (`nbd::linearizability` runs it with NBD
//!   and HTTP clients at once), and [`faults`] what it does to the volume.
//!
//! On failure both print the offending operations (the history excerpt)
//! and the counts of each broken rule. The workload's random choices come
//! from a seed that is printed and can be set with `QUORUM_LIN_SEED` (the
//! interleaving, being real, does not replay).

pub mod checker;
pub mod faults;
pub mod workload;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;
use checker::Time;
use workload::{Http, Plan, now};

const DATA: &str = "/v1/volumes/vm/data";

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

/// The full test's size: six HTTP clients, 11,000 operations.
const HTTP_PLAN: Plan = Plan {
    clients: 6,
    target_ops: 11_000,
    min_ops: 10_000,
    budget: Duration::from_secs(75),
    min_multi_block_reads: 1000,
};

#[test]
fn blocks_are_linearizable_and_reads_atomic_under_faults() {
    let seed = workload::seed();
    println!("linearizability: seed {seed} (QUORUM_LIN_SEED={seed} repeats the choices)");
    let server = Arc::new(Sandbox::new().serve(&faults::full_config()));
    let run = workload::run(server.clone(), HTTP_PLAN, seed, |_| {
        Box::new(Http(server.clone()))
    });
    run.assert_sound(&server, "6 HTTP clients");
}
