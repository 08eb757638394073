//! The recent I/O of a volume, second by second, kept by the server so that
//! the dashboard's charts survive a reload: `GET /v1/volumes/{vol}/history`.
//!
//! Each volume keeps a ring of [`HISTORY_SECONDS`] samples, one per second
//! of wall-clock time (Unix seconds, so that they line up with any other
//! clock): the reads and writes that ended in that second (ops and bytes,
//! as `quorum_requests_total` and `quorum_request_bytes_total` count them:
//! write-zeroes and discards are writes, flushes and block-status queries
//! are neither), the median and 99th percentile of their latency, and the
//! bytes the scrubs scanned and the resync copied in it
//! (`quorum_job_bytes_total`). [`crate::telemetry::Telemetry`] feeds it
//! from the same calls that count those series.
//!
//! There is no ticking thread: the open second is closed by the first
//! record or read that comes in a later second, and the seconds in between
//! are written as idle. So the ring is exact (a request is counted in the
//! second it ended, under the lock that closes seconds) and bounded (at
//! most [`HISTORY_SECONDS`] samples and one open second, whose latency
//! sketches hold at most a few hundred bins). The seconds are read from a
//! monotonic clock anchored to the wall clock when the server started, so
//! that a clock step does not reorder them.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use quorum_core::{JobKind, Op};
use serde::Serialize;
use sketches_ddsketch::{Config, DDSketch};

/// How many seconds of samples a volume keeps: 15 minutes.
pub const HISTORY_SECONDS: usize = 15 * 60;

/// Which way a request moves data, as the history and the volume's
/// counters count it; `None` for requests that are neither (flushes,
/// block-status queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A read.
    Read,
    /// A write, write-zeroes or discard.
    Write,
}

impl Direction {
    /// The direction of `op`, if it moves data.
    pub fn of(op: Op) -> Option<Direction> {
        match op {
            Op::Read => Some(Direction::Read),
            Op::Write | Op::WriteZeroes | Op::Discard => Some(Direction::Write),
            Op::Flush | Op::BlockStatus => None,
        }
    }
}

/// One second of a volume's I/O.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// The second it covers, `[t, t + 1)`, in Unix seconds.
    pub t: u64,
    /// Reads that ended in it.
    pub reads: u64,
    /// Writes (write-zeroes and discards included) that ended in it.
    pub writes: u64,
    /// Bytes of those reads.
    pub read_bytes: u64,
    /// Bytes of those writes.
    pub write_bytes: u64,
    /// The median latency of those reads, in nanoseconds (null without any).
    pub read_p50_ns: Option<u64>,
    /// Their 99th percentile.
    pub read_p99_ns: Option<u64>,
    /// The median latency of those writes.
    pub write_p50_ns: Option<u64>,
    /// Their 99th percentile.
    pub write_p99_ns: Option<u64>,
    /// Bytes the volume's scrubs scanned in it.
    pub scrub_bytes: u64,
    /// Bytes its resync copied in it.
    pub resync_bytes: u64,
}

impl Sample {
    fn idle(t: u64) -> Sample {
        Sample {
            t,
            reads: 0,
            writes: 0,
            read_bytes: 0,
            write_bytes: 0,
            read_p50_ns: None,
            read_p99_ns: None,
            write_p50_ns: None,
            write_p99_ns: None,
            scrub_bytes: 0,
            resync_bytes: 0,
        }
    }
}

/// The second being counted: its sample so far and its latencies.
struct Open {
    sample: Sample,
    read_latency: DDSketch,
    write_latency: DDSketch,
}

impl Open {
    fn new(t: u64) -> Open {
        Open {
            sample: Sample::idle(t),
            read_latency: DDSketch::new(Config::defaults()),
            write_latency: DDSketch::new(Config::defaults()),
        }
    }

    fn close(self) -> Sample {
        let q =
            |sketch: &DDSketch, q: f64| sketch.quantile(q).ok().flatten().map(|v| v.round() as u64);
        Sample {
            read_p50_ns: q(&self.read_latency, 0.5),
            read_p99_ns: q(&self.read_latency, 0.99),
            write_p50_ns: q(&self.write_latency, 0.5),
            write_p99_ns: q(&self.write_latency, 0.99),
            ..self.sample
        }
    }
}

struct Ring {
    closed: VecDeque<Sample>,
    open: Open,
}

impl Ring {
    /// Closes the open second if `now` is later, writing the seconds in
    /// between as idle (at most a ring's worth).
    fn roll(&mut self, now: u64) {
        let open_t = self.open.sample.t;
        if now <= open_t {
            return;
        }
        let open = std::mem::replace(&mut self.open, Open::new(now));
        self.push(open.close());
        let cap = HISTORY_SECONDS as u64;
        for t in (open_t + 1).max(now.saturating_sub(cap))..now {
            self.push(Sample::idle(t));
        }
    }

    fn push(&mut self, sample: Sample) {
        if self.closed.len() == HISTORY_SECONDS {
            self.closed.pop_front();
        }
        self.closed.push_back(sample);
    }
}

/// The recent I/O of one volume (see the module docs).
pub struct History {
    /// The wall clock when `origin` was taken, since the Unix epoch.
    epoch: Duration,
    origin: Instant,
    ring: Mutex<Ring>,
}

/// What [`History::since`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recent {
    /// The second being counted now (not in `samples`).
    pub now: u64,
    /// The closed seconds after the one asked for, oldest first.
    pub samples: Vec<Sample>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// An empty history, from now.
    pub fn new() -> History {
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        History {
            epoch,
            origin: Instant::now(),
            ring: Mutex::new(Ring {
                closed: VecDeque::with_capacity(HISTORY_SECONDS),
                open: Open::new(epoch.as_secs()),
            }),
        }
    }

    fn second(&self) -> u64 {
        (self.epoch + self.origin.elapsed()).as_secs()
    }

    /// Runs `f` on the ring rolled to the current second. The second is
    /// read under the lock, so that the seconds of what is counted never
    /// go backwards.
    fn at_now<T>(&self, f: impl FnOnce(&mut Ring, u64) -> T) -> T {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.second();
        ring.roll(now);
        f(&mut ring, now)
    }

    /// Counts a request of `op` and `bytes` that took `took`, ending now.
    pub fn request(&self, op: Op, bytes: u64, took: Duration) {
        let Some(direction) = Direction::of(op) else {
            return;
        };
        let ns = took.as_nanos() as f64;
        self.at_now(|ring, _| {
            let open = &mut ring.open;
            match direction {
                Direction::Read => {
                    open.sample.reads += 1;
                    open.sample.read_bytes = open.sample.read_bytes.saturating_add(bytes);
                    open.read_latency.add(ns);
                }
                Direction::Write => {
                    open.sample.writes += 1;
                    open.sample.write_bytes = open.sample.write_bytes.saturating_add(bytes);
                    open.write_latency.add(ns);
                }
            }
        });
    }

    /// Counts `bytes` a job of `kind` went through now.
    pub fn job_bytes(&self, kind: JobKind, bytes: u64) {
        self.at_now(|ring, _| {
            let sample = &mut ring.open.sample;
            match kind {
                JobKind::Scrub => sample.scrub_bytes += bytes,
                JobKind::Resync => sample.resync_bytes += bytes,
            }
        });
    }

    /// The closed seconds after `after` (all of them without it), oldest
    /// first: at most [`HISTORY_SECONDS`].
    pub fn since(&self, after: Option<u64>) -> Recent {
        self.at_now(|ring, now| {
            let from = after.map_or(0, |a| ring.closed.partition_point(|s| s.t <= a));
            Recent {
                now,
                samples: ring.closed.range(from..).cloned().collect(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(t: u64) -> Ring {
        Ring {
            closed: VecDeque::new(),
            open: Open::new(t),
        }
    }

    fn read(ring: &mut Ring, now: u64, bytes: u64, ms: u64) {
        ring.roll(now);
        ring.open.sample.reads += 1;
        ring.open.sample.read_bytes += bytes;
        ring.open.read_latency.add(ms as f64 * 1e6);
    }

    #[test]
    fn each_second_holds_what_ended_in_it_and_idle_seconds_are_written() {
        let mut r = ring(100);
        for ms in 1..=100 {
            read(&mut r, 100, 4096, ms);
        }
        read(&mut r, 103, 512, 7);
        r.open.sample.resync_bytes += 1 << 20;
        r.roll(104);
        let ts: Vec<u64> = r.closed.iter().map(|s| s.t).collect();
        assert_eq!(ts, [100, 101, 102, 103]);
        let first = &r.closed[0];
        assert_eq!((first.reads, first.read_bytes), (100, 409_600));
        let p = |v: Option<u64>| v.expect("a percentile") as f64;
        assert!((p(first.read_p50_ns) - 50e6).abs() / 50e6 < 0.03);
        assert!((p(first.read_p99_ns) - 99e6).abs() / 99e6 < 0.03);
        assert_eq!(first.write_p50_ns, None);
        assert_eq!(r.closed[1], Sample::idle(101));
        assert_eq!(r.closed[2], Sample::idle(102));
        let last = &r.closed[3];
        assert_eq!(
            (last.reads, last.read_bytes, last.resync_bytes),
            (1, 512, 1 << 20)
        );
        // A time that is not later changes nothing.
        r.roll(104);
        r.roll(90);
        assert_eq!(r.closed.len(), 4);
        assert_eq!(r.open.sample.t, 104);
    }

    #[test]
    fn the_ring_keeps_the_last_seconds_only() {
        let mut r = ring(0);
        read(&mut r, 0, 1, 1);
        r.roll(10_000);
        assert_eq!(r.closed.len(), HISTORY_SECONDS);
        assert_eq!(r.closed[0].t, 10_000 - HISTORY_SECONDS as u64);
        assert_eq!(r.closed[HISTORY_SECONDS - 1].t, 9_999);
        assert!(r.closed.iter().all(|s| s.reads == 0));
        for now in 10_001..10_100 {
            r.roll(now);
            assert_eq!(r.closed.len(), HISTORY_SECONDS);
            assert_eq!(r.closed.back().map(|s| s.t), Some(now - 1));
        }
    }

    #[test]
    fn a_history_counts_requests_and_jobs_and_answers_since() {
        let h = History::new();
        h.request(Op::Write, 4096, Duration::from_micros(250));
        h.request(Op::WriteZeroes, 8192, Duration::from_micros(250));
        h.request(Op::Flush, 0, Duration::from_micros(250));
        h.request(Op::BlockStatus, 0, Duration::from_micros(250));
        h.job_bytes(JobKind::Scrub, 1 << 20);
        {
            // What was counted, in the closed seconds and the open one.
            let ring = h.ring.lock().expect("the lock");
            let all: Vec<&Sample> = ring.closed.iter().chain([&ring.open.sample]).collect();
            let sum = |f: fn(&Sample) -> u64| all.iter().map(|s| f(s)).sum::<u64>();
            assert_eq!((sum(|s| s.writes), sum(|s| s.write_bytes)), (2, 12_288));
            assert_eq!((sum(|s| s.reads), sum(|s| s.scrub_bytes)), (0, 1 << 20));
        }
        let recent = h.since(None);
        assert!(recent.samples.iter().all(|s| s.t < recent.now));
        assert!(h.since(Some(recent.now)).samples.is_empty());
    }
}
