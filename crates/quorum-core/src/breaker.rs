//! A circuit breaker per child: fail fast while a child is down.
//!
//! Every request to a hung child waits for the backend's timeout, and a
//! quorum read waits for every child, so one hung replica would slow every
//! request of the volume to its timeout. After a child times out or cannot
//! be reached, its breaker opens: requests to it fail at once (as
//! `Unavailable`, counted and reported like any failure; the writes it
//! misses are recorded as stale and resynced later) until a back-off has
//! passed; then the next request tries it again. The back-off doubles while
//! the child stays down, from [`FIRST`] to [`LONGEST`].

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::backend::BackendError;

/// The first back-off after a child timed out or was unreachable.
const FIRST: Duration = Duration::from_millis(500);
/// The longest back-off.
const LONGEST: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    open_until: Option<Instant>,
    backoff: Option<Duration>,
}

impl Breaker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The error to answer at once while the breaker is open.
    pub(crate) fn refuse(&self) -> Option<BackendError> {
        self.refuse_at(Instant::now)
    }

    /// Learns from a request's result.
    pub(crate) fn record<T>(&self, result: &Result<T, BackendError>) {
        self.record_at(result, Instant::now);
    }

    /// Whether the breaker refuses requests now.
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.refuse().is_some()
    }

    /// [`Breaker::refuse`] on the clock `now`, read only while the breaker
    /// is open (every request asks).
    fn refuse_at(&self, now: impl FnOnce() -> Instant) -> Option<BackendError> {
        let state = self.state();
        let until = state.open_until?;
        let left = until
            .checked_duration_since(now())
            .filter(|d| !d.is_zero())?;
        Some(BackendError::Unavailable(format!(
            "not tried: the child timed out or was unreachable; it is tried again in {} ms",
            left.as_millis()
        )))
    }

    /// [`Breaker::record`] on the clock `now`, read only when the result
    /// opens the breaker.
    fn record_at<T>(&self, result: &Result<T, BackendError>, now: impl FnOnce() -> Instant) {
        let mut state = self.state();
        match result {
            Err(BackendError::Timeout(_) | BackendError::Unavailable(_)) => {
                let backoff = state.backoff.map_or(FIRST, |b| (b * 2).min(LONGEST));
                state.backoff = Some(backoff);
                state.open_until = Some(now() + backoff);
            }
            Ok(_) => *state = State::default(),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_a_timeout_and_closes_after_a_success() {
        let b = Breaker::default();
        assert!(b.refuse().is_none());
        b.record::<()>(&Err(BackendError::Timeout(Duration::from_secs(2))));
        assert!(matches!(b.refuse(), Some(BackendError::Unavailable(_))));
        b.record(&Ok(()));
        assert!(b.refuse().is_none());
        // Media errors are no reason to stop trying.
        b.record::<()>(&Err(BackendError::from_errno(5)));
        assert!(b.refuse().is_none());
    }

    /// The back-off the SPEC's README promises: 0.5 s, doubling while the
    /// child stays down, to 5 s at most; a success starts over. Checked on
    /// a clock the test moves, so no test waits for the back-off to pass.
    #[test]
    fn the_backoff_doubles_from_half_a_second_to_five_seconds_and_a_success_resets_it() {
        let b = Breaker::default();
        let down = || Err::<(), _>(BackendError::Unavailable("down".into()));
        let ms = Duration::from_millis;
        let mut now = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..7 {
            // Each probe fails: the breaker opens for the next back-off.
            b.record_at(&down(), || now);
            let mut backoff = Duration::ZERO;
            for step in [0, 1, 499, 999, 1999, 3999, 4999] {
                if b.refuse_at(|| now + ms(step)).is_some() {
                    backoff = ms(step + 1);
                }
            }
            assert!(
                b.refuse_at(|| now + backoff).is_none(),
                "the probe goes through once {backoff:?} passed"
            );
            seen.push(backoff);
            now += backoff;
        }
        assert_eq!(
            seen,
            [500, 1000, 2000, 4000, 5000, 5000, 5000].map(ms),
            "the back-offs"
        );
        // A success closes it and the next failure starts at 0.5 s again.
        b.record_at(&Ok(()), || now);
        assert!(b.refuse_at(|| now).is_none());
        b.record_at(&Err::<(), _>(BackendError::Timeout(ms(100))), || now);
        assert!(b.refuse_at(|| now + ms(499)).is_some());
        assert!(b.refuse_at(|| now + ms(500)).is_none());
    }

    #[test]
    fn the_refusal_says_when_the_child_is_tried_again() {
        let b = Breaker::default();
        let now = Instant::now();
        b.record_at::<()>(&Err(BackendError::Unavailable("down".into())), || now);
        match b.refuse_at(|| now + Duration::from_millis(200)) {
            Some(BackendError::Unavailable(m)) => {
                assert!(m.contains("tried again in 300 ms"), "{m}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
