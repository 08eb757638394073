//! The rate limit of a worker, and the rate it measures.

use std::time::{Duration, Instant};

/// The lowest rate limit (bytes a second): below it a step of a MiB would
/// pause for minutes.
const MIN_RATE: u64 = 4096;

/// A rate limit: how long to pause after each step so that the steps go at
/// `rate` bytes a second at most.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    rate: u64,
}

impl Pace {
    /// At most `rate` bytes a second (4 KiB/s at least).
    pub fn new(rate: u64) -> Pace {
        Pace {
            rate: rate.max(MIN_RATE),
        }
    }

    /// The pause after a step of `bytes` begun at `started`.
    pub fn pause(&self, bytes: u64, started: Instant) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.rate as f64).saturating_sub(started.elapsed())
    }
}

/// The rate of a spell of work: bytes done since it began.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    since: Instant,
    from: u64,
}

impl Throughput {
    /// A spell that began at `since`, with `from` bytes done then.
    pub fn since(since: Instant, from: u64) -> Throughput {
        Throughput { since, from }
    }

    /// Bytes a second with `done` bytes done at `at` (0 at the start). A
    /// worker that pauses after its step passes the end of the pause, so
    /// that the rate shown during it is the paced one.
    pub fn rate(&self, done: u64, at: Instant) -> f64 {
        let secs = at.saturating_duration_since(self.since).as_secs_f64();
        if secs > 0.0 {
            done.saturating_sub(self.from) as f64 / secs
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_makes_up_the_rest_of_the_time_a_step_may_take() {
        let pace = Pace::new(1 << 20);
        let now = Instant::now();
        let pause = pace.pause(1 << 20, now);
        assert!(pause <= Duration::from_secs(1) && pause > Duration::from_millis(500));
        let long_ago = now.checked_sub(Duration::from_secs(2)).unwrap_or(now);
        if long_ago < now {
            assert_eq!(pace.pause(1 << 20, long_ago), Duration::ZERO);
        }
        assert!(Pace::new(0).pause(4096, now) > Duration::from_millis(500));
    }

    #[test]
    fn the_rate_counts_from_the_start_of_the_spell() {
        let start = Instant::now();
        let spell = Throughput::since(start, 1000);
        assert_eq!(spell.rate(5000, start), 0.0);
        let rate = spell.rate(1000 + (1 << 20), start + Duration::from_secs(2));
        assert!((rate - 524_288.0).abs() < 1.0, "{rate}");
    }
}
