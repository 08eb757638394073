//! A volume's I/O statistics, as QEMU's `query-blockstats` gives them
//! (SPEC 11): `GET /v1/volumes/{vol}/stats`.
//!
//! Per op (read, write, write_zeroes, discard, flush), QEMU's accounting
//! (`block/accounting.c`, with its defaults `account_failed` and
//! `account_invalid` on):
//!
//! - `bytes` and `ops`: requests that succeeded;
//! - `failed_ops`: requests that failed (a quorum failure, a journal that
//!   could not be written, a held request that was never resumed);
//! - `invalid_ops`: requests refused as outside the volume (HTTP 416; NBD
//!   refuses those in its protocol layer, before the volume, and they are
//!   not counted here);
//! - `total_time_ns`: the time of the requests that succeeded or failed,
//!   including any wait in the throttle or while the volume was suspended;
//! - `latency_ns`: the 50th, 90th and 99th percentiles of that time, since
//!   the server started, from a DDSketch (`sketches-ddsketch`, the
//!   DataDog sketch already in the tree through `metrics-util`: 1%
//!   relative error, bounded memory).
//!
//! And `idle_time_ns`: the time since the last request of any op ended
//! (null before the first). An op here is one call to the volume: a
//! whole-volume `GET` is read in pieces of 1 MiB, each counted. Block-status
//! queries are not I/O and are not counted. The Prometheus series
//! (`quorum_requests_total`, ...) are the rates to graph; these are the
//! totals to read once, as `query-blockstats` is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use quorum_core::Op;
use serde::Serialize;
use sketches_ddsketch::{Config, DDSketch};

/// The ops counted, in the order the answer lists them.
pub const COUNTED: [Op; 5] = [Op::Read, Op::Write, Op::WriteZeroes, Op::Discard, Op::Flush];

/// How a request ended, as the statistics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Done,
    /// It failed.
    Failed,
    /// It was refused as outside the volume.
    Invalid,
}

struct OpStats {
    bytes: AtomicU64,
    ops: AtomicU64,
    failed: AtomicU64,
    invalid: AtomicU64,
    total_ns: AtomicU64,
    latency: Mutex<DDSketch>,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            bytes: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            total_ns: AtomicU64::new(0),
            latency: Mutex::new(DDSketch::new(Config::defaults())),
        }
    }
}

/// The statistics of one volume.
pub struct Stats {
    started: SystemTime,
    origin: Instant,
    ops: [OpStats; COUNTED.len()],
    /// When the last request ended, in nanoseconds since `origin` plus one
    /// (0: never).
    last_io: AtomicU64,
}

/// One op's statistics as the API shows them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OpReport {
    /// Bytes of the requests that succeeded.
    pub bytes: u64,
    /// Requests that succeeded.
    pub ops: u64,
    /// Requests that failed.
    pub failed_ops: u64,
    /// Requests refused as outside the volume.
    pub invalid_ops: u64,
    /// Time spent in the requests that succeeded or failed.
    pub total_time_ns: u64,
    /// Percentiles of that time (null before the first request).
    pub latency_ns: Percentiles,
}

/// Latency percentiles, in nanoseconds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    /// The median.
    pub p50: Option<u64>,
    /// The 90th percentile.
    pub p90: Option<u64>,
    /// The 99th percentile.
    pub p99: Option<u64>,
}

/// A volume's statistics as the API shows them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// Since when they count (the server's start, RFC 3339).
    pub since: String,
    /// Nanoseconds since the last request ended; null before the first.
    pub idle_time_ns: Option<u64>,
    /// Per op, in [`COUNTED`] order.
    #[schema(value_type = std::collections::BTreeMap<String, OpReport>)]
    pub ops: serde_json::Map<String, serde_json::Value>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    /// Statistics at zero.
    pub fn new() -> Stats {
        Stats {
            started: SystemTime::now(),
            origin: Instant::now(),
            ops: std::array::from_fn(|_| OpStats::new()),
            last_io: AtomicU64::new(0),
        }
    }

    fn op(&self, op: Op) -> Option<&OpStats> {
        COUNTED.iter().position(|o| *o == op).map(|i| &self.ops[i])
    }

    /// Counts a request of `op` and `bytes` that took `took` and ended as
    /// `outcome`.
    pub fn record(&self, op: Op, bytes: u64, took: Duration, outcome: Outcome) {
        let Some(s) = self.op(op) else {
            return;
        };
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        match outcome {
            Outcome::Done => {
                s.ops.fetch_add(1, Ordering::Relaxed);
                s.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Outcome::Failed => {
                s.failed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Invalid => {
                s.invalid.fetch_add(1, Ordering::Relaxed);
            }
        }
        if outcome != Outcome::Invalid {
            s.total_ns.fetch_add(ns, Ordering::Relaxed);
            s.latency
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(ns as f64);
        }
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_io
            .fetch_max(now.saturating_add(1), Ordering::Relaxed);
    }

    /// Counts a request refused as outside the volume before it reached it.
    pub fn invalid(&self, op: Op) {
        self.record(op, 0, Duration::ZERO, Outcome::Invalid);
    }

    /// The statistics now.
    pub fn report(&self) -> Report {
        let ops = COUNTED
            .iter()
            .zip(&self.ops)
            .map(|(op, s)| {
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let sketch = s.latency.lock().unwrap_or_else(PoisonError::into_inner);
                let q = |q: f64| sketch.quantile(q).ok().flatten().map(|v| v.round() as u64);
                let report = OpReport {
                    bytes: get(&s.bytes),
                    ops: get(&s.ops),
                    failed_ops: get(&s.failed),
                    invalid_ops: get(&s.invalid),
                    total_time_ns: get(&s.total_ns),
                    latency_ns: Percentiles {
                        p50: q(0.5),
                        p90: q(0.9),
                        p99: q(0.99),
                    },
                };
                let value = serde_json::to_value(report).unwrap_or_default();
                (op.as_str().to_owned(), value)
            })
            .collect();
        let last = self.last_io.load(Ordering::Relaxed);
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Report {
            since: humantime::format_rfc3339_millis(self.started).to_string(),
            idle_time_ns: (last > 0).then(|| now.saturating_sub(last - 1)),
            ops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_as_query_blockstats_does() {
        let stats = Stats::new();
        assert_eq!(stats.report().idle_time_ns, None);
        for ms in 1..=100 {
            stats.record(Op::Read, 4096, Duration::from_millis(ms), Outcome::Done);
        }
        stats.record(Op::Write, 100, Duration::from_millis(5), Outcome::Failed);
        stats.invalid(Op::Write);
        stats.record(Op::BlockStatus, 0, Duration::from_millis(1), Outcome::Done);
        let r = stats.report();
        let read = &r.ops["read"];
        assert_eq!(read["ops"], 100);
        assert_eq!(read["bytes"], 409_600);
        assert_eq!(read["total_time_ns"], 5_050_000_000_u64);
        let p = |k: &str| read["latency_ns"][k].as_u64().expect(k) as f64;
        for (k, want) in [("p50", 50e6), ("p90", 90e6), ("p99", 99e6)] {
            assert!((p(k) - want).abs() / want < 0.03, "{k}: {}", p(k));
        }
        let write = &r.ops["write"];
        assert_eq!(
            (
                write["ops"].as_u64(),
                write["failed_ops"].as_u64(),
                write["invalid_ops"].as_u64()
            ),
            (Some(0), Some(1), Some(1))
        );
        assert_eq!(write["bytes"], 0);
        assert_eq!(write["total_time_ns"], 5_000_000);
        assert_eq!(r.ops["flush"]["latency_ns"]["p50"], serde_json::Value::Null);
        let keys: Vec<&str> = r.ops.keys().map(String::as_str).collect();
        assert_eq!(keys, ["read", "write", "write_zeroes", "discard", "flush"]);
        assert!(r.idle_time_ns.is_some());
    }
}
