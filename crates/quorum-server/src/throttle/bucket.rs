//! The leaky buckets of QEMU's `util/throttle.c`, as pure arithmetic over
//! a clock the caller passes in.
//!
//! Each bucket fills with what the requests account (bytes or operations)
//! and leaks `avg` units a second. A request may go when every bucket of
//! its direction is at most `max × max_length` full; otherwise it waits as
//! long as the fullest bucket needs to leak below that. A burst longer
//! than a second (`max_length > 1`) also keeps a `burst_level` that leaks
//! `max` units a second, so that the burst itself goes no faster than
//! `max`. A bucket given no burst rate gets a tenth of a second's worth of
//! its average (QEMU's `throttle_fix_bucket`, which smooths the pattern of
//! an elevator that groups reads and writes).

use std::time::Duration;

use super::limits::{BucketKind, IoLimits};

/// Which buckets a request fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A read.
    Read,
    /// A write (also write-zeroes and discard, as QEMU counts them).
    Write,
}

impl Direction {
    /// The buckets a request of this direction is checked against and
    /// fills (QEMU's `to_check`).
    fn buckets(self) -> [BucketKind; 4] {
        use BucketKind as K;
        match self {
            Direction::Read => [K::BpsTotal, K::IopsTotal, K::BpsRead, K::IopsRead],
            Direction::Write => [K::BpsTotal, K::IopsTotal, K::BpsWrite, K::IopsWrite],
        }
    }
}

const NS_PER_SEC: f64 = 1e9;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    avg: u64,
    max: u64,
    burst_length: u64,
    level: f64,
    burst_level: f64,
}

impl Bucket {
    fn leak(&mut self, delta_ns: f64) {
        let leak = self.avg as f64 * delta_ns / NS_PER_SEC;
        self.level = (self.level - leak).max(0.0);
        if self.burst_length > 1 {
            let leak = self.max as f64 * delta_ns / NS_PER_SEC;
            self.burst_level = (self.burst_level - leak).max(0.0);
        }
    }

    /// Nanoseconds to wait before a request may go (QEMU's
    /// `throttle_compute_wait`).
    fn wait_ns(&self) -> u64 {
        if self.avg == 0 {
            return 0;
        }
        let extra = self.level - (self.max * self.burst_length) as f64;
        if extra > 0.0 {
            return ns(extra, self.avg);
        }
        if self.burst_length > 1 {
            let extra = self.burst_level - (self.max / 10) as f64;
            if extra > 0.0 {
                return ns(extra, self.max);
            }
        }
        0
    }

    fn fill(&mut self, units: f64) {
        self.level += units;
        if self.burst_length > 1 {
            self.burst_level += units;
        }
    }
}

/// How long `extra` units take to leak at `rate` a second, in whole
/// nanoseconds (truncated, as QEMU's `int64_t` is).
fn ns(extra: f64, rate: u64) -> u64 {
    (extra * NS_PER_SEC / rate as f64) as u64
}

/// The six buckets of one volume and when they last leaked.
#[derive(Debug, Clone)]
pub struct Buckets {
    buckets: [Bucket; 6],
    op_size: u64,
    previous_leak: Duration,
}

impl Buckets {
    /// Empty buckets for `limits` at the moment `now` (QEMU's
    /// `throttle_config`: a change of limits starts from empty buckets).
    pub fn new(limits: &IoLimits, now: Duration) -> Buckets {
        let buckets = BucketKind::ALL.map(|kind| {
            let limit = limits.bucket(kind);
            Bucket {
                avg: limit.avg,
                max: if limit.avg > 0 && limit.max == 0 {
                    limit.avg / 10
                } else {
                    limit.max
                },
                burst_length: limit.max_length,
                level: 0.0,
                burst_level: 0.0,
            }
        });
        Buckets {
            buckets,
            op_size: limits.iops_size,
            previous_leak: now,
        }
    }

    fn bucket(&mut self, kind: BucketKind) -> &mut Bucket {
        let i = BucketKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &mut self.buckets[i]
    }

    /// Leaks every bucket for the time since the last leak, then says how
    /// long a request of `direction` must wait at `now` before it may go
    /// (zero: at once).
    pub fn wait(&mut self, direction: Direction, now: Duration) -> Duration {
        let delta = now.saturating_sub(self.previous_leak);
        self.previous_leak = self.previous_leak.max(now);
        if !delta.is_zero() {
            let delta_ns = delta.as_nanos() as f64;
            for b in &mut self.buckets {
                b.leak(delta_ns);
            }
        }
        let wait = direction
            .buckets()
            .into_iter()
            .map(|k| self.bucket(k).wait_ns())
            .max()
            .unwrap_or(0);
        Duration::from_nanos(wait)
    }

    /// Fills the buckets of `direction` with a request of `bytes` (QEMU's
    /// `throttle_account`): its bytes, and one operation, or `bytes /
    /// iops_size` of them when it is larger than `iops_size`.
    pub fn account(&mut self, direction: Direction, bytes: u64) {
        let units = self.units(bytes);
        self.fill(direction, bytes, units);
    }

    /// Fills the buckets of `direction` with what a request of `bytes`
    /// accounts beyond what [`Buckets::account`] of no bytes did (one
    /// operation): a request whose size was known only after it went.
    pub fn account_rest(&mut self, direction: Direction, bytes: u64) {
        let units = self.units(bytes) - 1.0;
        self.fill(direction, bytes, units);
    }

    /// The operations a request of `bytes` counts as.
    fn units(&self, bytes: u64) -> f64 {
        if self.op_size > 0 && bytes > self.op_size {
            bytes as f64 / self.op_size as f64
        } else {
            1.0
        }
    }

    fn fill(&mut self, direction: Direction, bytes: u64, units: f64) {
        for kind in direction.buckets() {
            let amount = if kind.counts_bytes() {
                bytes as f64
            } else {
                units
            };
            self.bucket(kind).fill(amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(json: &str) -> IoLimits {
        let l: IoLimits = serde_json::from_str(json).expect("limits");
        l.validate().expect("valid");
        l
    }

    /// How many requests of `bytes` a client that sends the next one as
    /// soon as it may gets through from 0 to `until`, and when each went.
    fn greedy(b: &mut Buckets, dir: Direction, bytes: u64, until: Duration) -> Vec<Duration> {
        let mut now = Duration::ZERO;
        let mut went = Vec::new();
        while now < until {
            let wait = b.wait(dir, now);
            if wait.is_zero() {
                b.account(dir, bytes);
                went.push(now);
            } else {
                now += wait;
            }
        }
        went
    }

    fn within(went: &[Duration], from: f64, to: f64) -> usize {
        went.iter()
            .filter(|t| t.as_secs_f64() >= from && t.as_secs_f64() < to)
            .count()
    }

    #[test]
    fn an_average_holds_after_a_tenth_of_a_second_of_burst() {
        let mut b = Buckets::new(&limits(r#"{"iops_total": 100}"#), Duration::ZERO);
        let went = greedy(&mut b, Direction::Read, 4096, Duration::from_secs(10));
        // The default burst: a tenth of a second's worth (10), plus the
        // one that finds the bucket at exactly its brim.
        assert_eq!(within(&went, 0.0, 0.001), 11);
        assert!((1005..=1012).contains(&went.len()), "{}", went.len());
        for second in 1..10 {
            let n = within(&went, f64::from(second), f64::from(second + 1));
            assert!((99..=101).contains(&n), "second {second}: {n}");
        }
    }

    #[test]
    fn a_one_second_burst_adds_max_to_the_first_second() {
        let l = limits(r#"{"iops_total": 100, "iops_total_max": 200, "iops_total_max_length": 1}"#);
        let mut b = Buckets::new(&l, Duration::ZERO);
        let went = greedy(&mut b, Direction::Write, 4096, Duration::from_secs(3));
        assert_eq!(within(&went, 0.0, 0.001), 201);
        let first = within(&went, 0.0, 1.0);
        assert!((299..=302).contains(&first), "{first}");
        let second = within(&went, 1.0, 2.0);
        assert!((99..=101).contains(&second), "{second}");
    }

    /// QEMU's docs/throttle.txt: with a burst of `max` for `length`
    /// seconds, the bucket of `max × length` fills at `max - avg` a second,
    /// so the burst runs at `max` for `max × length / (max - avg)` seconds.
    #[test]
    fn a_long_burst_runs_at_max_until_the_bucket_is_full() {
        let l = limits(r#"{"iops_read": 100, "iops_read_max": 1000, "iops_read_max_length": 9}"#);
        let mut b = Buckets::new(&l, Duration::ZERO);
        let went = greedy(&mut b, Direction::Read, 512, Duration::from_secs(14));
        // 9000 / 900 = 10 s at 1000 a second (never faster), then 100.
        for second in 0..9 {
            let n = within(&went, f64::from(second), f64::from(second + 1));
            assert!((990..=1105).contains(&n), "second {second}: {n}");
        }
        for second in 11..14 {
            let n = within(&went, f64::from(second), f64::from(second + 1));
            assert!((99..=101).contains(&n), "second {second}: {n}");
        }
        // Writes are not limited by read buckets.
        assert!(b.wait(Direction::Write, Duration::from_secs(14)).is_zero());
    }

    #[test]
    fn bytes_and_iops_size() {
        // 1 MiB a second: 256 requests of 4 KiB in a second, after a
        // tenth of a second's worth at once.
        let l = limits(r#"{"bps_write": 1048576}"#);
        let mut b = Buckets::new(&l, Duration::ZERO);
        let went = greedy(&mut b, Direction::Write, 4096, Duration::from_secs(5));
        let n = within(&went, 1.0, 5.0);
        assert!((1022..=1026).contains(&n), "{n}");
        assert!(b.wait(Direction::Read, Duration::from_secs(5)).is_zero());

        // 10 ops a second, each 64 KiB request counting as 16 of 4 KiB.
        let l = limits(r#"{"iops_total": 160, "iops_size": 4096}"#);
        let mut b = Buckets::new(&l, Duration::ZERO);
        let went = greedy(&mut b, Direction::Read, 65536, Duration::from_secs(5));
        let n = within(&went, 1.0, 5.0);
        assert!((39..=41).contains(&n), "{n}");
    }

    #[test]
    fn accounting_late_adds_up_to_accounting_at_once() {
        let l = limits(r#"{"iops_write": 100, "iops_size": 4096, "bps_write": 1048576}"#);
        for bytes in [0, 100, 4096, 65_536, 1 << 20] {
            let (mut at_once, mut late) = (
                Buckets::new(&l, Duration::ZERO),
                Buckets::new(&l, Duration::ZERO),
            );
            at_once.account(Direction::Write, bytes);
            late.account(Direction::Write, 0);
            late.account_rest(Direction::Write, bytes);
            assert_eq!(format!("{at_once:?}"), format!("{late:?}"), "{bytes} bytes");
        }
    }

    #[test]
    fn no_limit_never_waits() {
        let mut b = Buckets::new(&IoLimits::default(), Duration::ZERO);
        for i in 0..10_000 {
            assert!(b.wait(Direction::Write, Duration::from_nanos(i)).is_zero());
            b.account(Direction::Write, 1 << 20);
        }
    }
}
