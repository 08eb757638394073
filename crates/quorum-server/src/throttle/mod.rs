//! I/O limits per volume (SPEC 11), with QEMU's throttle semantics.
//!
//! [`Throttle::admit`] is where every data request of a volume, HTTP or
//! NBD, waits for its turn before the engine sees it: it checks the leaky
//! buckets ([`bucket`]), sleeps on a tokio timer as long as they say, and
//! accounts the request when it goes. A throttled request waits; it is
//! never refused. As in QEMU's throttle groups, the requests of one
//! direction (reads; writes, write-zeroes and discards) queue in arrival
//! order, each behind the one before it, so a steady stream of small
//! requests cannot starve a large one. Flushes and block-status queries
//! are not throttled.
//!
//! An HTTP write waits here before its body is read, so that a request
//! waiting for its turn holds no memory (the server-wide
//! `max_buffered_bytes` is for requests that run): admitted with its
//! declared length, or, for a chunked body, as one operation whose bytes
//! are accounted once read ([`Throttle::account_late`]). A request's own
//! size never changes its own wait, only the next one's (QEMU's buckets are
//! checked before the request is accounted), so this waits as long.
//!
//! The limits change at run time ([`Throttle::set`]): as QEMU's
//! `throttle_config`, a change starts from empty buckets, and the requests
//! waiting meanwhile wake and wait again by the new limits. Nothing but
//! the buckets bounds a wait, as in QEMU; a request whose future is
//! dropped (its HTTP client gone) leaves the line.
//!
//! - `limits.rs`: the keys and their checks (`throttle_is_valid`).
//! - `bucket.rs`: the arithmetic, pure, over a clock passed in.

pub mod bucket;
pub mod limits;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quorum_core::Op;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use bucket::Direction;
pub use limits::{IoLimits, LimitsError};

use bucket::Buckets;

/// The I/O limits of one volume and the state of their buckets.
pub struct Throttle {
    /// When the clock of the buckets started.
    origin: Instant,
    state: Mutex<State>,
    /// One queue per direction: the request that holds it is the next to
    /// go; the others wait for it in arrival order (tokio's mutex is fair).
    queues: [tokio::sync::Mutex<()>; 2],
    /// Told when the limits change, so that waiting requests wait again.
    changed: Notify,
}

struct State {
    limits: IoLimits,
    buckets: Buckets,
}

impl Throttle {
    /// A throttle with `limits`, which must be valid.
    pub fn new(limits: IoLimits) -> Throttle {
        Throttle {
            origin: Instant::now(),
            state: Mutex::new(State {
                limits,
                buckets: Buckets::new(&limits, Duration::ZERO),
            }),
            queues: Default::default(),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limits in force.
    pub fn limits(&self) -> IoLimits {
        self.lock().limits
    }

    /// Puts `limits` in force, from empty buckets.
    ///
    /// # Errors
    /// The limits break one of QEMU's rules; nothing changes then.
    pub fn set(&self, limits: IoLimits) -> Result<(), LimitsError> {
        limits.validate()?;
        {
            let mut state = self.lock();
            state.limits = limits;
            state.buckets = Buckets::new(&limits, self.origin.elapsed());
        }
        self.changed.notify_waiters();
        Ok(())
    }

    /// Accounts the `bytes` of a request admitted with none (a chunked
    /// body, read once admitted): its bytes, and the operations beyond the
    /// one it was admitted as (with `iops_size`).
    pub fn account_late(&self, op: Op, bytes: u64) {
        let Some(direction) = direction(op) else {
            return;
        };
        let mut state = self.lock();
        if state.limits.enabled() {
            state.buckets.account_rest(direction, bytes);
        }
    }

    /// Waits until a request of `op` and `bytes` may go, and accounts it.
    pub async fn admit(&self, op: Op, bytes: u64) {
        let Some(direction) = direction(op) else {
            return;
        };
        if !self.lock().limits.enabled() {
            return;
        }
        let queue = match direction {
            Direction::Read => &self.queues[0],
            Direction::Write => &self.queues[1],
        };
        let _turn = queue.lock().await;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the buckets are read: a change after this
            // point wakes the wait below.
            changed.as_mut().enable();
            let wait = {
                let mut state = self.lock();
                let wait = state.buckets.wait(direction, self.origin.elapsed());
                if wait.is_zero() {
                    state.buckets.account(direction, bytes);
                    return;
                }
                wait
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut changed => {}
            }
        }
    }
}

/// The buckets a request of `op` fills, if it is throttled at all.
fn direction(op: Op) -> Option<Direction> {
    match op {
        Op::Read => Some(Direction::Read),
        Op::Write | Op::WriteZeroes | Op::Discard => Some(Direction::Write),
        Op::Flush | Op::BlockStatus => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn limits(json: &str) -> IoLimits {
        serde_json::from_str(json).expect("limits")
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_in_turn_and_a_change_wakes_them() {
        let throttle = Arc::new(Throttle::new(limits(r#"{"iops_write": 10}"#)));
        let started = Instant::now();
        // The default burst is one request (a tenth of 10), plus the
        // first: two go at once, then one each 100 ms.
        for _ in 0..4 {
            throttle.admit(Op::Write, 4096).await;
        }
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        // Reads, flushes and block status are not limited by write buckets.
        for op in [Op::Read, Op::Flush, Op::BlockStatus] {
            throttle.admit(op, 1 << 20).await;
        }
        assert_eq!(started.elapsed(), Duration::from_millis(200));

        // One a minute: a request waits; a looser limit lets it go at once.
        throttle
            .set(limits(r#"{"iops_write": 1, "iops_write_max": 1}"#))
            .expect("valid");
        throttle.admit(Op::Discard, 0).await;
        throttle.admit(Op::WriteZeroes, 0).await;
        let waiter = {
            let throttle = throttle.clone();
            tokio::spawn(async move { throttle.admit(Op::Write, 1).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        let before = Instant::now();
        throttle.set(IoLimits::default()).expect("no limits");
        waiter.await.expect("the waiter");
        assert!(before.elapsed() < Duration::from_millis(10));
        assert!(throttle.set(limits(r#"{"iops_total_max": 5}"#)).is_err());
        assert_eq!(
            throttle.limits(),
            IoLimits::default(),
            "a bad set changes nothing"
        );
    }
}
