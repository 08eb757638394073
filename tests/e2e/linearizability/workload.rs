//! The workload of the full linearizability test, whatever the clients
//! speak: [`run`] starts the clients (each a [`BlockClient`]: HTTP here,
//! NBD in `nbd::linearizability`), a membership loop and a scrub loop on
//! a server of [`super::faults::full_config`], collects the history and checks it;
//! [`Run::assert_sound`] prints what happened and asserts SPEC 8.1 and
//! 8.2 and that the faults bit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Method;

use super::checker::{self, History, Outcome, Read, Report, Seen, Time};
use super::faults::{HOT, VOLUME_BLOCKS, membership_loop, scrub_loop};
use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";
pub const BLOCK_BYTES: u64 = checker::BLOCK as u64;

/// Nanoseconds since `start`.
pub fn now(start: Instant) -> Time {
    start.elapsed().as_nanos() as Time
}

/// The seed of the workload's choices: `QUORUM_LIN_SEED`, or the clock.
pub fn seed() -> u64 {
    std::env::var("QUORUM_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// How much to do.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Client threads.
    pub clients: usize,
    /// Operations the clients aim for.
    pub target_ops: usize,
    /// The least the test accepts.
    pub min_ops: usize,
    /// The clients stop by this time even short of the target.
    pub budget: Duration,
    /// Multi-block reads the check must have seen at least.
    pub min_multi_block_reads: usize,
}

/// One client's way to the volume. Each call is one request; its
/// interval, measured around the call, must hold the server's handling.
pub trait BlockClient: Send {
    /// Writes `data` at `offset`: `Err(why)` when it failed or got no
    /// answer (it may or may not have taken effect).
    fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<(), String>;
    /// Reads `len` bytes at `offset`: `Err(why)` when it failed.
    fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, String>;
}

/// A client over HTTP: `PUT` and `GET` with `Range`. An answer other than
/// success or 5xx is a defect of the test and panics.
pub struct Http(pub Arc<Server>);

/// A 5xx answer's status and error code, for the record.
fn failure(status: u16, body: &[u8]) -> String {
    format!("{status} {}", error_code(body))
}

impl BlockClient for Http {
    fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<(), String> {
        let len = data.len();
        let rb = self
            .0
            .request(Method::PUT, &format!("{DATA}?offset={offset}"))
            .body(data);
        let answer = rb.send().map(|r| {
            let status = r.status().as_u16();
            (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
        });
        match answer {
            Ok((204, _)) => Ok(()),
            Ok((status, body)) if status >= 500 => Err(failure(status, &body)),
            Ok((status, body)) => panic!(
                "PUT {offset}+{len}: unexpected status {status}: {}",
                String::from_utf8_lossy(&body)
            ),
            Err(e) => Err(format!("no answer: {e}")),
        }
    }

    fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let rb = self
            .0
            .request(Method::GET, DATA)
            .header("range", format!("bytes={offset}-{}", offset + len - 1));
        let answer = rb.send().map(|r| {
            let status = r.status().as_u16();
            (status, r.bytes().map(|b| b.to_vec()))
        });
        match answer {
            Ok((206, Ok(body))) if body.len() as u64 == len => Ok(body),
            Ok((206, Ok(_))) => Err("206 cut short".to_string()),
            Ok((206, Err(e))) => Err(format!("206, body failed: {e}")),
            Ok((status, body)) if status >= 500 => {
                Err(failure(status, body.as_deref().unwrap_or_default()))
            }
            Ok((status, body)) => panic!(
                "GET {offset}+{len}: unexpected status {status}: {}",
                String::from_utf8_lossy(body.as_deref().unwrap_or_default())
            ),
            Err(e) => Err(format!("no answer: {e}")),
        }
    }
}

/// What the clients and the fault loops share.
pub struct Shared {
    pub(super) server: Arc<Server>,
    pub(super) plan: Plan,
    pub(super) start: Instant,
    next_id: AtomicU64,
    pub(super) ops: AtomicUsize,
    stop: AtomicBool,
    /// What the fault loops did, with times, for the report.
    log: Mutex<Vec<String>>,
}

impl Shared {
    pub(super) fn note(&self, what: String) {
        let line = format!("{:9.3}ms {what}", now(self.start) as f64 / 1e6);
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    pub(super) fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self.ops.load(Ordering::Relaxed) >= self.plan.target_ops
            || self.start.elapsed() > self.plan.budget
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

fn client(shared: &Shared, mut io: Box<dyn BlockClient>, client: usize, seed: u64) -> ClientLog {
    let mut rng = Rng(seed);
    let mut log = ClientLog::default();
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
            let inv = now(shared.start);
            let answer = io.write(offset, body);
            let resp = now(shared.start);
            log.writes.push(checker::Write {
                id,
                client,
                first,
                blocks,
                inv,
                resp,
                outcome: match answer {
                    Ok(()) => Outcome::Ok,
                    Err(why) => Outcome::Failed(why),
                },
            });
        } else {
            if blocks > 256 {
                log.large_reads += 1;
            }
            let inv = now(shared.start);
            let answer = io.read(offset, len);
            let resp = now(shared.start);
            match answer {
                Ok(body) => {
                    let seen: Vec<Seen> =
                        body.chunks(checker::BLOCK).map(checker::decode).collect();
                    log.reads.push(Read {
                        client,
                        first,
                        inv,
                        resp,
                        seen,
                    });
                }
                Err(why) => *log.failed_reads.entry(why).or_default() += 1,
            }
        }
        shared.ops.fetch_add(1, Ordering::Relaxed);
    }
    log
}

/// What a run did.
pub struct Run {
    pub plan: Plan,
    pub history: History,
    pub report: Report,
    pub ops: usize,
    pub elapsed: Duration,
    pub checked_in: Duration,
    pub failed_reads: BTreeMap<String, usize>,
    pub large_reads: usize,
    pub membership_changes: usize,
    pub scrubs: usize,
    /// What the fault loops did, with times.
    pub log: Vec<String>,
}

/// Runs the workload on `server` (started on [`super::faults::full_config`]): `plan`'s
/// clients, client `c` reaching the volume through `connect(c)`, beside a
/// membership loop and a scrub loop; then checks the history.
pub fn run(
    server: Arc<Server>,
    plan: Plan,
    seed: u64,
    connect: impl Fn(usize) -> Box<dyn BlockClient>,
) -> Run {
    let shared = Arc::new(Shared {
        server,
        plan,
        start: Instant::now(),
        next_id: AtomicU64::new(1),
        ops: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        log: Mutex::new(Vec::new()),
    });

    let clients: Vec<_> = (0..plan.clients)
        .map(|c| {
            let shared = shared.clone();
            let io = connect(c);
            let seed = seed.wrapping_add(c as u64 * 0x1000_0001);
            thread::spawn(move || client(&shared, io, c, seed))
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
    let membership_changes = members.join().expect("the membership loop");
    let scrubs = scrubs.join().expect("the scrub loop");

    let checked_at = Instant::now();
    let report = checker::check(&history);
    let log = std::mem::take(&mut *shared.log.lock().unwrap_or_else(PoisonError::into_inner));
    Run {
        plan,
        history,
        report,
        ops: shared.ops.load(Ordering::Relaxed),
        elapsed,
        checked_in: checked_at.elapsed(),
        failed_reads,
        large_reads,
        membership_changes,
        scrubs,
        log,
    }
}

impl Run {
    /// Prints what happened, then asserts that the history keeps SPEC 8.1
    /// and 8.2, that enough was done to prove it, and that the faults bit.
    #[track_caller]
    pub fn assert_sound(&self, server: &Server, clients: &str) {
        let history = &self.history;
        let report = &self.report;
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
        println!(
            "linearizability: {} operations by {clients} in {:.1}s: {} writes \
             ({acked} acknowledged, failed: {failed_writes:?}), {} reads checked \
             ({} of more than 1 MiB attempted; failed: {:?}); \
             {} block observations, {} multi-block reads; checked in {:.1}s",
            self.ops,
            self.elapsed.as_secs_f64(),
            history.writes.len(),
            history.reads.len(),
            self.large_reads,
            self.failed_reads,
            report.block_reads,
            report.multi_block_reads,
            self.checked_in.as_secs_f64()
        );
        println!(
            "faults: child a write errors {a_write_errors}, repaired onto a {a_repaired} bytes, \
             onto c {c_repaired} bytes; {} membership changes; {} scrubs",
            self.membership_changes, self.scrubs
        );
        for line in &self.log {
            println!("  {line}");
        }

        assert!(
            report.ok(),
            "the history of {} operations breaks SPEC 8 ({} violations): {}",
            self.ops,
            report.counts.values().sum::<usize>(),
            report.explain(history)
        );
        assert!(
            self.ops >= self.plan.min_ops,
            "only {} operations in {:.1}s, fewer than {}: too slow to prove much",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.plan.min_ops
        );
        assert!(
            a_write_errors > 0.0 && a_repaired > 0.0,
            "the faults did not bite: child a failed {a_write_errors} writes, {a_repaired} bytes \
             were resynced onto it"
        );
        assert!(
            report.multi_block_reads >= self.plan.min_multi_block_reads,
            "only {} multi-block reads were checked",
            report.multi_block_reads
        );
    }
}
