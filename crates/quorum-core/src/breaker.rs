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
        let state = self.state();
        let until = state.open_until?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(BackendError::Unavailable(format!(
            "not tried: the child timed out or was unreachable; it is tried again in {} ms",
            left.as_millis()
        )))
    }

    /// Learns from a request's result.
    pub(crate) fn record<T>(&self, result: &Result<T, BackendError>) {
        let mut state = self.state();
        match result {
            Err(BackendError::Timeout(_) | BackendError::Unavailable(_)) => {
                let backoff = state.backoff.map_or(FIRST, |b| (b * 2).min(LONGEST));
                state.backoff = Some(backoff);
                state.open_until = Some(Instant::now() + backoff);
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

    #[test]
    fn it_lets_a_probe_through_after_the_backoff() {
        let b = Breaker::default();
        b.record::<()>(&Err(BackendError::Unavailable("down".into())));
        std::thread::sleep(FIRST + Duration::from_millis(20));
        assert!(b.refuse().is_none(), "the probe goes through");
    }
}
