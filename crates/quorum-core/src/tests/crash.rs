//! A deterministic crash simulation, in the manner of FoundationDB's
//! simulation and TigerBeetle's VOPR (issue 11, SPEC 8.3).
//!
//! The children and the stale journal sit on simulated storage (`sim.rs`)
//! that keeps what was not flushed or synced in a volatile cache. One
//! client thread drives the real [`Volume`] through a random sequence of
//! writes (each block a unique value), writes of zeroes, discards,
//! flushes, reads, resync steps, scrubs and block-status calls while the
//! seed's faults fail some writes, flushes, reads and journal appends. At
//! a crash point (between operations, or part way through one, each
//! component powered off after a few more calls) the volume is dropped,
//! every disk and the journal lose a random part of what was not durable,
//! and a new volume opens over what survived. The checker (`model.rs`)
//! then reads every block, runs the resync to the end and reads them
//! again:
//!
//! - a write acknowledged before an acknowledged flush began, and not
//!   overwritten by a later write, reads back exactly (SPEC 8.3);
//! - every block reads as zero or as the block a write put there; when the
//!   last acknowledged flush does not pin it, as the write it pinned or any
//!   write after it (acknowledged, failed or in flight), nothing else;
//! - a block reads the same before and after the resync (SPEC 8.2);
//! - between crashes, a read returns the last acknowledged write or a
//!   failed write after it, and block status never calls such a block
//!   zero (SPEC 8.2, 8.5).
//!
//! The two plain runs are strict (a block keeps the value first read after
//! a crash until it is written); short journal appends have a run of their
//! own; children whose flush fails have an `#[ignore]`d run that says what
//! still fails there and with which seed.
//!
//! Several crashes happen per seed. A failing seed is printed with the
//! operations that led to it; `QUORUM_CRASH_SEED=N` replays seed N alone
//! (printing every operation), `QUORUM_CRASH_SEEDS=N` sets how many seeds
//! each test runs.

mod model;
mod sim;

use std::env;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::stale::JournalStore;
use crate::*;
use model::{Model, Value, encode};
use sim::{BLOCK, DiskFaults, JournalFaults, Rng, SimDisk, SimJournal};

/// Blocks in the simulated volume: few, so that writes overlap often.
const BLOCKS: usize = 16;

/// Seeds each test runs by default.
const DEFAULT_SEEDS: u64 = 1000;

/// Seeds a self-test may try before it must have found its defect.
const SELF_TEST_SEEDS: u64 = 300;

#[derive(Debug, Clone, Copy)]
struct Shape {
    children: usize,
    threshold: usize,
}

/// Three children, threshold 2.
const THREE: Shape = Shape {
    children: 3,
    threshold: 2,
};

/// Two children, threshold 1.
const TWO: Shape = Shape {
    children: 2,
    threshold: 1,
};

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} children, threshold {}",
            self.children, self.threshold
        )
    }
}

/// A deliberately broken setup, to show that the simulation finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    Nothing,
    /// The journal's `sync` does nothing.
    JournalSyncLies,
    /// Every disk's `flush` does nothing.
    FlushLies,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    seeds: u64,
    crashes: u64,
    ops: u64,
    acked_writes: u64,
    failed_writes: u64,
    acked_flushes: u64,
    reads_checked: u64,
    read_errors: u64,
    exact_after_crash: u64,
    loose_after_crash: u64,
    unreadable_after_crash: u64,
    cached_writes_lost: u64,
    journal_tails_damaged: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.crashes += o.crashes;
        self.ops += o.ops;
        self.acked_writes += o.acked_writes;
        self.failed_writes += o.failed_writes;
        self.acked_flushes += o.acked_flushes;
        self.reads_checked += o.reads_checked;
        self.read_errors += o.read_errors;
        self.exact_after_crash += o.exact_after_crash;
        self.loose_after_crash += o.loose_after_crash;
        self.unreadable_after_crash += o.unreadable_after_crash;
        self.cached_writes_lost += o.cached_writes_lost;
        self.journal_tails_damaged += o.journal_tails_damaged;
    }
}

/// Why a seed failed, and how it got there.
#[derive(Debug)]
struct Failure {
    message: String,
    log: Vec<String>,
}

/// One seed's run.
struct Run {
    rng: Rng,
    disks: Vec<Arc<SimDisk>>,
    journal: SimJournal,
    options: VolumeOptions,
    model: Model,
    next_id: u64,
    resync_from: u64,
    log: Vec<String>,
    stats: Stats,
    /// Once read after a crash, a block must keep that value until it is
    /// written (see [`crash_simulation_three_children_threshold_two`]).
    strict: bool,
}

/// What a run adds to the plain one: strictness and harder faults.
#[derive(Debug, Clone, Copy, Default)]
struct Extra {
    /// Children whose flush fails (see
    /// [`crash_simulation_with_failing_flushes`]).
    failing_flushes: bool,
    /// A failed journal append leaves part of its line (see
    /// [`crash_simulation_with_short_journal_appends`]).
    short_appends: bool,
    /// See [`crash_simulation_three_children_threshold_two`].
    strict: bool,
}

impl Run {
    fn new(seed: u64, shape: Shape, broken: Broken, extra: Extra) -> Run {
        let salt = (shape.children * 31 + shape.threshold) as u64;
        let mut rng = Rng::new(seed ^ salt.rotate_left(40));
        let names = ["a", "b", "c", "d", "e"];
        let mut log = Vec::new();
        let disks: Vec<Arc<SimDisk>> = (0..shape.children)
            .map(|i| {
                let mut faults = DiskFaults {
                    write: rng.pick(&[0.0, 0.0, 0.05, 0.2]),
                    flush: rng.pick(&[0.0, 0.0, 0.1, 0.3]),
                    read: rng.pick(&[0.0, 0.05, 0.15]),
                };
                if !extra.failing_flushes {
                    faults.flush = 0.0;
                }
                log.push(format!("child {}: faults {faults:?}", names[i]));
                let disk = SimDisk::new(names[i], BLOCKS * BLOCK, faults, rng.fork(i as u64));
                if broken == Broken::FlushLies {
                    disk.lie_about_flushes();
                }
                disk
            })
            .collect();
        let faults = JournalFaults {
            append: rng.pick(&[0.0, 0.0, 0.03]),
            sync: rng.pick(&[0.0, 0.0, 0.1]),
            short_appends: extra.short_appends,
        };
        log.push(format!("journal: faults {faults:?}"));
        let journal = SimJournal::new(faults, rng.fork(99));
        if broken == Broken::JournalSyncLies {
            journal.lie_about_syncs();
        }
        let options = VolumeOptions {
            name: "sim".into(),
            vote_threshold: shape.threshold,
            read_pattern: if rng.chance(0.15) {
                ReadPattern::Fifo
            } else {
                ReadPattern::Quorum
            },
            rewrite_corrupted: rng.chance(0.3),
            blkverify: false,
            child_timeout: Duration::from_secs(3600),
        };
        log.push(format!(
            "{shape}, {:?} reads, rewrite_corrupted {}",
            options.read_pattern, options.rewrite_corrupted
        ));
        Run {
            rng,
            disks,
            journal,
            options,
            model: Model::new(BLOCKS),
            next_id: 1,
            resync_from: 0,
            log,
            stats: Stats {
                seeds: 1,
                ..Stats::default()
            },
            strict: extra.strict,
        }
    }

    fn fail(&self, message: String) -> Failure {
        Failure {
            message,
            log: self.log.clone(),
        }
    }

    fn open(&self) -> Result<Volume, Failure> {
        let children = self
            .disks
            .iter()
            .map(|d| ChildSpec::new(d.name().to_owned(), d.clone()))
            .collect();
        let store: Box<dyn JournalStore> = Box::new(self.journal.clone());
        Volume::open_with_store(
            self.options.clone(),
            children,
            Arc::new(NullSink),
            Some((store, PathBuf::from("sim/stale.jsonl"))),
        )
        .map_err(|e| self.fail(format!("the volume does not open: {e}")))
    }

    fn set_faults(&self, on: bool) {
        for d in &self.disks {
            d.set_faults(on);
        }
        self.journal.set_faults(on);
    }

    /// Runs the seed: its statistics and every operation's outcome.
    fn run(mut self) -> Result<(Stats, Vec<String>), Failure> {
        let cycles = 1 + self.rng.below(3);
        for cycle in 0..cycles {
            let volume = self.open()?;
            self.log
                .push(format!("-- open {cycle}: stale {:?}", volume.stale_bytes()));
            let ops = 5 + self.rng.below(60);
            for _ in 0..ops {
                self.step(&volume, false).map_err(|m| self.fail(m))?;
            }
            if self.rng.chance(0.5) {
                // Power fails part way through one more operation.
                let mut fuses = Vec::new();
                for d in &self.disks {
                    let calls = self.rng.below(4) as u32;
                    d.arm(calls);
                    fuses.push(calls);
                }
                let calls = self.rng.below(4) as u32;
                self.journal.arm(calls);
                self.log.push(format!(
                    "-- power fails after {fuses:?} more disk calls, {calls} journal calls"
                ));
                self.step(&volume, true).map_err(|m| self.fail(m))?;
            }
            let stuck = volume.close(Duration::from_secs(10));
            assert!(stuck.is_empty(), "workers of {stuck:?} did not stop");
            drop(volume);
            self.crash();
            self.check_reopened()?;
        }
        Ok((self.stats, self.log))
    }

    /// The power loss, applied to every disk and the journal.
    fn crash(&mut self) {
        self.stats.crashes += 1;
        let mut lost = Vec::new();
        for d in &self.disks {
            let l = d.crash(&mut self.rng);
            self.stats.cached_writes_lost += l.lost as u64;
            lost.push(format!("{}: {}/{}", d.name(), l.lost, l.pending));
        }
        let l = self.journal.crash(&mut self.rng);
        self.stats.journal_tails_damaged += l.lost as u64;
        self.log.push(format!(
            "-- crash: cached writes lost {}; journal tail of {} bytes {}",
            lost.join(", "),
            l.pending,
            if l.lost > 0 { "damaged" } else { "kept" }
        ));
    }

    /// Reopens over what survived, without faults, and checks every block,
    /// then resyncs and checks again.
    fn check_reopened(&mut self) -> Result<(), Failure> {
        self.set_faults(false);
        self.log
            .push(format!("-- journal: {:?}", self.journal.durable_text()));
        let volume = self.open()?;
        self.log.push(format!(
            "-- reopened: stale {:?}; journal {:?}",
            volume.stale_bytes(),
            self.journal.durable_text()
        ));
        let first = self.verify(&volume, "after the crash", None)?;
        self.log
            .push(format!("-- read after the crash: {}", shown(&first)));
        let mut from = 0;
        for _ in 0..4 * BLOCKS {
            match volume.resync_step(4 * BLOCK as u64, from) {
                ResyncStep::Idle => break,
                ResyncStep::Copied { next, .. } => from = next,
                ResyncStep::Failed { range, error, .. } => {
                    self.log
                        .push(format!("resync of {range:?} failed: {error}"));
                    from = range.end;
                }
            }
        }
        self.log
            .push(format!("-- resynced: stale {:?}", volume.stale_bytes()));
        let second = self.verify(&volume, "after the resync", Some(&first))?;
        self.log
            .push(format!("-- read after the resync: {}", shown(&second)));
        let stuck = volume.close(Duration::from_secs(10));
        assert!(stuck.is_empty(), "workers of {stuck:?} did not stop");
        drop(volume);
        let seen = (0..BLOCKS)
            .map(|b| match (second[b], first[b]) {
                (Some(v), _) | (None, Some(v)) if self.strict => vec![v],
                _ => self.model.block(b).after_crash(),
            })
            .collect();
        self.model.reopened(seen);
        self.set_faults(true);
        Ok(())
    }

    /// Reads every block on its own and checks it against what may survive
    /// the crash (and, given `before`, against what it read then).
    fn verify(
        &mut self,
        volume: &Volume,
        phase: &str,
        before: Option<&[Option<Value>]>,
    ) -> Result<Vec<Option<Value>>, Failure> {
        let mut out = Vec::with_capacity(BLOCKS);
        for b in 0..BLOCKS {
            let allowed = self.model.block(b).after_crash();
            let exact = self.model.block(b).exact_after_crash();
            match volume.read((b * BLOCK) as u64, BLOCK) {
                Ok(bytes) => {
                    let v = self
                        .model
                        .check(phase, b, &bytes, &allowed)
                        .map_err(|m| self.fail(m))?;
                    if let Some(Some(earlier)) = before.map(|s| s[b]) {
                        if earlier != v {
                            return Err(self.fail(format!(
                                "{phase}: block {b} read {earlier}, then {v} with no write between (SPEC 8.2); history: {}",
                                self.model.history(b)
                            )));
                        }
                    }
                    if exact.is_some() {
                        self.stats.exact_after_crash += 1;
                    } else {
                        self.stats.loose_after_crash += 1;
                    }
                    out.push(Some(v));
                }
                Err(e) => {
                    if let Some(exact) = exact {
                        return Err(self.fail(format!(
                            "{phase}: block {b} must read {exact}, acknowledged before an acknowledged flush (SPEC 8.3), but the read failed: {e}; history: {}",
                            self.model.history(b)
                        )));
                    }
                    self.log.push(format!("{phase}: block {b} unreadable: {e}"));
                    self.stats.unreadable_after_crash += 1;
                    out.push(None);
                }
            }
        }
        Ok(out)
    }

    /// Some blocks: `first..first+n` with `n` up to `most`.
    fn blocks(&mut self, most: usize) -> Range<usize> {
        let first = self.rng.below(BLOCKS as u64) as usize;
        let n = 1 + self.rng.below(most.min(BLOCKS - first) as u64) as usize;
        first..first + n
    }

    /// One random operation. `crashing`: power fails during it, so its
    /// answer never reaches the client (a write counts as not
    /// acknowledged, a flush as not done, a read is not checked).
    fn step(&mut self, volume: &Volume, crashing: bool) -> Result<(), String> {
        self.stats.ops += 1;
        let dice = self.rng.below(100);
        let bytes = |r: &Range<usize>| ((r.start * BLOCK) as u64, (r.len() * BLOCK) as u64);
        match dice {
            0..50 => {
                let r = self.blocks(4);
                let id = self.next_id;
                self.next_id += 1;
                let zeroes = dice >= 45;
                let (offset, length) = bytes(&r);
                let (result, values) = if zeroes {
                    let result = if dice >= 48 {
                        volume.discard(offset, length)
                    } else {
                        volume.write_zeroes(offset, length)
                    };
                    (result, vec![Value::Zero; r.len()])
                } else {
                    let mut data = Vec::with_capacity(length as usize);
                    for b in r.clone() {
                        data.extend_from_slice(&encode(id, b));
                    }
                    let values = r.clone().map(|block| Value::Data { id, block }).collect();
                    (volume.write(offset, Bytes::from(data)), values)
                };
                let acked = result.is_ok() && !crashing;
                if acked {
                    self.stats.acked_writes += 1;
                } else {
                    self.stats.failed_writes += 1;
                }
                self.model.write(r.start, &values, acked);
                self.log.push(format!(
                    "w{id}{} blocks {r:?}: {}",
                    match dice {
                        45..48 => " (zeroes)",
                        48..50 => " (discard)",
                        _ => "",
                    },
                    outcome(&result)
                ));
            }
            50..63 => {
                let at = self.model.positions();
                let result = volume.flush();
                if result.is_ok() && !crashing {
                    self.stats.acked_flushes += 1;
                    self.model.flushed(&at);
                }
                self.log.push(format!("flush: {}", outcome(&result)));
            }
            63..85 => {
                let r = self.blocks(BLOCKS);
                let (offset, length) = bytes(&r);
                let result = volume.read(offset, length as usize);
                self.log.push(format!("read {r:?}: {}", outcome(&result)));
                match result {
                    Ok(data) if !crashing => {
                        for (i, b) in r.enumerate() {
                            let allowed = self.model.block(b).now();
                            self.model.check(
                                "a read between crashes",
                                b,
                                &data[i * BLOCK..(i + 1) * BLOCK],
                                &allowed,
                            )?;
                            self.stats.reads_checked += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => self.stats.read_errors += 1,
                }
            }
            85..93 => {
                let max = (1 + self.rng.below(4)) * BLOCK as u64;
                let step = volume.resync_step(max, self.resync_from);
                self.log
                    .push(format!("resync step from {}: {step:?}", self.resync_from));
                self.resync_from = match step {
                    ResyncStep::Idle => 0,
                    ResyncStep::Copied { next, .. } => next,
                    ResyncStep::Failed { range, .. } => range.end,
                };
            }
            93..96 => {
                let r = self.blocks(BLOCKS);
                let (offset, length) = bytes(&r);
                let repair = self.rng.chance(0.5);
                let result = volume.scrub(offset, length, repair);
                self.log
                    .push(format!("scrub {r:?} (repair {repair}): {result:?}"));
            }
            _ => {
                let r = self.blocks(BLOCKS);
                let (offset, length) = bytes(&r);
                let result = volume.block_status(offset, length, usize::MAX);
                self.log
                    .push(format!("block status {r:?}: {}", outcome(&result)));
                if let (Ok(map), false) = (result, crashing) {
                    for e in map.iter().filter(|e| e.zero) {
                        let first = e.offset as usize / BLOCK;
                        let end = (e.offset + e.length).div_ceil(BLOCK as u64) as usize;
                        for b in first..end {
                            if !self.model.block(b).now().contains(&Value::Zero) {
                                return Err(format!(
                                    "block status calls block {b} zero (SPEC 8.5); history: {}",
                                    self.model.history(b)
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn shown(values: &[Option<Value>]) -> String {
    values
        .iter()
        .map(|v| v.map_or("unreadable".to_string(), |v| v.to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn outcome<T>(result: &Result<T, VolumeError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => format!("failed: {e}"),
    }
}

fn run_seed(seed: u64, shape: Shape, broken: Broken) -> Result<(Stats, Vec<String>), Failure> {
    Run::new(seed, shape, broken, Extra::default()).run()
}

/// The seeds to run, and whether one was asked for (then every operation
/// is printed).
fn seeds() -> (Range<u64>, bool) {
    if let Ok(s) = env::var("QUORUM_CRASH_SEED") {
        let seed: u64 = s
            .trim()
            .parse()
            .expect("QUORUM_CRASH_SEED must be a number");
        return (seed..seed + 1, true);
    }
    let count = env::var("QUORUM_CRASH_SEEDS").map_or(DEFAULT_SEEDS, |s| {
        s.trim()
            .parse()
            .expect("QUORUM_CRASH_SEEDS must be a number")
    });
    (0..count, false)
}

/// Runs the seeds on `shapes`; panics with the first failing seed of each
/// shape, its replay command and the operations that led to it.
fn simulate(shapes: &[Shape], extra: Extra) {
    let (seeds, replay) = seeds();
    let test = std::thread::current()
        .name()
        .map_or("crash".to_string(), |n| {
            n.rsplit("::").next().unwrap_or(n).to_string()
        });
    let mut failures = Vec::new();
    for &shape in shapes {
        let started = Instant::now();
        let mut total = Stats::default();
        for seed in seeds.clone() {
            match Run::new(seed, shape, Broken::Nothing, extra).run() {
                Ok((stats, log)) => {
                    if replay {
                        eprintln!("seed {seed} passed: {stats:?}\n  {}", log.join("\n  "));
                    }
                    total.add(&stats);
                }
                Err(f) => {
                    let shown = if replay {
                        0
                    } else {
                        f.log.len().saturating_sub(60)
                    };
                    failures.push(format!(
                        "crash simulation ({shape}), seed {seed}: {}\n\
                         replay: QUORUM_CRASH_SEED={seed} cargo test -p quorum-core --lib {test} -- --include-ignored --nocapture\n\
                         operations{}:\n  {}",
                        f.message,
                        if shown > 0 { " (the last 60)" } else { "" },
                        f.log[shown..].join("\n  ")
                    ));
                    break;
                }
            }
        }
        eprintln!(
            "crash simulation ({shape}): {} seeds in {:.1?}: {total:?}",
            total.seeds,
            started.elapsed()
        );
        assert!(
            replay
                || !failures.is_empty()
                || total.exact_after_crash > 0 && total.loose_after_crash > 0,
            "the simulation checked nothing: {total:?}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Strict: after a crash a block keeps the value first read there until
/// it is written (SPEC 8.2 across a crash). Unflushed writes can leave the
/// children of a block holding different versions with no stale mark; the
/// write-intent log (`intent.rs`) records the regions that may, and the
/// volume reconciles them when it opens after a crash. Before it, this
/// failed at seed 21 (3 children) and 13 (2).
#[test]
fn crash_simulation_three_children_threshold_two() {
    simulate(&[THREE], STRICT);
}

/// See [`crash_simulation_three_children_threshold_two`].
#[test]
fn crash_simulation_two_children_threshold_one() {
    simulate(&[TWO], STRICT);
}

const STRICT: Extra = Extra {
    strict: true,
    failing_flushes: false,
    short_appends: false,
};

/// Runs `broken` until a seed fails, and checks that the same seed passes
/// on the sound setup: the defect, not the engine, is what was found.
fn finds(shape: Shape, broken: Broken) -> (u64, String) {
    let started = Instant::now();
    for seed in 0..SELF_TEST_SEEDS {
        if let Err(f) = run_seed(seed, shape, broken) {
            if let Err(sound) = run_seed(seed, shape, Broken::Nothing) {
                panic!(
                    "seed {seed} fails on the sound setup too: {}",
                    sound.message
                );
            }
            eprintln!(
                "{broken:?} ({shape}) found by seed {seed} in {:.1?}: {}",
                started.elapsed(),
                f.message
            );
            return (seed, f.message);
        }
    }
    panic!("no seed in 0..{SELF_TEST_SEEDS} found {broken:?} ({shape})");
}

#[test]
fn crash_simulation_replays_a_seed_exactly() {
    let shape = Shape {
        children: 3,
        threshold: 2,
    };
    for seed in [3, 17] {
        let (first, log) = run_seed(seed, shape, Broken::Nothing)
            .unwrap_or_else(|f| panic!("seed {seed}: {}", f.message));
        let (again, relog) = run_seed(seed, shape, Broken::Nothing)
            .unwrap_or_else(|f| panic!("seed {seed}: {}", f.message));
        assert_eq!(log, relog, "seed {seed} ran differently twice");
        assert_eq!(format!("{first:?}"), format!("{again:?}"));
        assert!(first.crashes > 0 && first.ops > 0, "seed {seed}: {first:?}");
    }
}

#[test]
fn crash_simulation_finds_a_journal_whose_sync_lies() {
    let (_, message) = finds(
        Shape {
            children: 2,
            threshold: 1,
        },
        Broken::JournalSyncLies,
    );
    assert!(message.contains("SPEC 8.3") || message.contains("allowed"));
}

#[test]
fn crash_simulation_finds_disks_whose_flush_lies() {
    let (_, message) = finds(
        Shape {
            children: 3,
            threshold: 2,
        },
        Broken::FlushLies,
    );
    assert!(message.contains("SPEC 8.3") || message.contains("allowed"));
}

/// SPEC 8.3 with children whose flush fails: a volume flush succeeds when
/// `vote_threshold` children flushed, but a child whose flush failed is not
/// marked stale over what it wrote since its last good flush, and nothing
/// checks that the children that flushed are the ones that hold each
/// write. After a power loss that child returns older data as a fresh copy:
/// at threshold 1 of 2 it wins the tie (seed 31: a's flush fails, b's
/// succeeds, the crash empties a's cache, a reads zero where b holds the
/// acknowledged and flushed w2); at 2 of 3 a write that missed b (stale)
/// and a flush that failed on a leave one durable copy, c's, and the block
/// has no majority (seed 131). Fixed since: a child whose flush fails is
/// marked stale over what it took since its last good flush, and a flush
/// fails while any range is fresh on fewer than `vote_threshold` children;
/// seeds 31 and 131 pass. What still fails: when failed flushes (and a
/// missed write) leave a block stale on every child, it is unreadable
/// until written, though one child holds its last flushed value durably
/// (seeds 76 and 65 today: every child stale over a block whose flushed
/// value one of them still holds); serving the freshest durable copy there needs the stale
/// map to say why a range is stale.
#[test]
#[ignore = "fails today (seed 76 at 3 children, 65 at 2): a block that failed flushes left stale on every child is unreadable, not served from its freshest durable copy"]
fn crash_simulation_with_failing_flushes() {
    simulate(
        &[THREE, TWO],
        Extra {
            failing_flushes: true,
            ..Extra::default()
        },
    );
}

/// SPEC 8.3 with a journal whose failed append leaves part of its line, as
/// a short `write` on ENOSPC or EIO does in a real file: the engine's next
/// line is appended right after the fragment, so the two read as one
/// unreadable line and replay skips a record that was synced. A lost clear
/// leaves a fresh child stale (seed 774 at 1 of 2: both children stale
/// over a block whose acknowledged, flushed zeroes were on one of them;
/// seed 400 at 2 of 3: a block left with one voting copy); a lost mark
/// would let a stale child vote. The fix is in `Journal::append`: after a
/// failed append, start the next line with a newline (done: this run
/// passes).
#[test]
fn crash_simulation_with_short_journal_appends() {
    simulate(
        &[THREE, TWO],
        Extra {
            short_appends: true,
            ..Extra::default()
        },
    );
}
