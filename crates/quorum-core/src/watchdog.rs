//! The deadline of requests that nobody waits for on a thread.
//!
//! A request started with a continuation (see `Volume::start_read`) has no
//! caller parked on its answers to give up at `child_timeout`; the
//! volume's watchdog does it instead. It keeps the requests in flight by
//! deadline and sleeps until the earliest one; a request that completes in
//! time takes itself out. Every deadline is its start plus the volume's
//! one `child_timeout`, so a request that comes in while the watchdog
//! sleeps is never due before the watchdog wakes: starting a request
//! wakes nobody.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::gather::Gather;

/// Where a watched request is: its deadline, and a number that tells
/// requests with the same deadline apart.
pub(crate) type Watched = (Instant, u64);

/// The watchdog of one volume.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    next: AtomicU64,
    timeout: Duration,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    pending: BTreeMap<Watched, Arc<Gather>>,
    stopping: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Watchdog {
    /// Starts the thread of the watchdog of volume `name`, which gives up
    /// at `timeout` on the jobs of each request, counting the abandoned
    /// ones in `late` (by child).
    pub(crate) fn spawn(
        name: &str,
        late: Vec<Arc<AtomicUsize>>,
        timeout: Duration,
    ) -> std::io::Result<Watchdog> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let watched = shared.clone();
        thread::Builder::new()
            .name(format!("deadline-{name}"))
            .spawn(move || watch(&watched, &late, timeout))?;
        Ok(Watchdog {
            shared,
            next: AtomicU64::new(0),
            timeout,
        })
    }

    /// A place for a request that starts now: its deadline.
    pub(crate) fn place(&self) -> Watched {
        (
            Instant::now() + self.timeout,
            self.next.fetch_add(1, Ordering::Relaxed),
        )
    }

    /// Watches `gather` until [`Watchdog::unwatch`] of `at`.
    pub(crate) fn watch(&self, at: Watched, gather: Arc<Gather>) {
        self.shared.lock().pending.insert(at, gather);
    }

    /// The request at `at` completed.
    pub(crate) fn unwatch(&self, at: Watched) {
        self.shared.lock().pending.remove(&at);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
    }
}

fn watch(shared: &Shared, late: &[Arc<AtomicUsize>], timeout: Duration) {
    let mut state = shared.lock();
    loop {
        if state.stopping {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(entry) = state.pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        if !due.is_empty() {
            drop(state);
            for gather in due {
                // Expiring may run the request's continuation here.
                let expired = catch_unwind(AssertUnwindSafe(|| {
                    gather.expire(|child| late.get(child).map(|l| &**l), timeout);
                }));
                if expired.is_err() {
                    tracing::error!("a request's completion panicked on the watchdog");
                }
            }
            state = shared.lock();
            continue;
        }
        let next = state
            .pending
            .first_key_value()
            .map_or(now + timeout, |((deadline, _), _)| *deadline);
        state = shared
            .wake
            .wait_timeout(state, next.saturating_duration_since(now))
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}
