//! The one thing a worker waits on: a condition variable over its
//! commands, its work bell and its stop signal.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

/// What ended an [`Inbox::wait`]. When several are true at once, the first
/// in this order is said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The runner is stopping.
    Stop,
    /// A command waits to be handed over.
    Command,
    /// The bell rang: there may be new work.
    Rung,
    /// The time given passed.
    TimedOut,
}

#[derive(Debug)]
struct Letters<C> {
    commands: VecDeque<C>,
    rung: bool,
    stop: bool,
}

/// A worker's commands, work bell and stop signal, under one lock, with one
/// condition variable that every one of them notifies.
#[derive(Debug)]
pub struct Inbox<C> {
    letters: Mutex<Letters<C>>,
    changed: Condvar,
}

impl<C> Inbox<C> {
    pub(super) fn new() -> Inbox<C> {
        Inbox {
            letters: Mutex::new(Letters {
                commands: VecDeque::new(),
                rung: false,
                stop: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Letters<C>> {
        self.letters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a command for the worker and wakes it.
    pub(super) fn send(&self, command: C) {
        self.lock().commands.push_back(command);
        self.changed.notify_all();
    }

    /// Says there may be new work, and wakes the worker.
    pub fn ring(&self) {
        self.lock().rung = true;
        self.changed.notify_all();
    }

    /// Tells the worker to stop after its step, and wakes it.
    pub(super) fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// Whether the runner is stopping.
    pub fn stopping(&self) -> bool {
        self.lock().stop
    }

    /// The oldest command not handed over yet.
    pub(super) fn take(&self) -> Option<C> {
        self.lock().commands.pop_front()
    }

    /// Blocks until the runner stops, a command waits, the bell has rung
    /// (the ring is taken: one ring wakes one wait), or `until` passes
    /// (never, with `None`). Returns at once when one of them is already so.
    pub fn wait(&self, until: Option<Instant>) -> Wake {
        let mut letters = self.lock();
        loop {
            if letters.stop {
                return Wake::Stop;
            }
            if !letters.commands.is_empty() {
                return Wake::Command;
            }
            if letters.rung {
                letters.rung = false;
                return Wake::Rung;
            }
            letters = match until {
                None => self
                    .changed
                    .wait(letters)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Wake::TimedOut;
                    }
                    self.changed
                        .wait_timeout(letters, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

trait Ring: Send + Sync {
    fn ring(&self);
}

impl<C: Send> Ring for Inbox<C> {
    fn ring(&self) {
        Inbox::ring(self);
    }
}

/// Rings a worker's inbox from anywhere (the engine, another thread): "there
/// may be new work". It holds the inbox weakly, so a bell outliving its
/// worker rings nothing.
#[derive(Clone)]
pub struct Bell(Weak<dyn Ring>);

impl Bell {
    pub(super) fn new<C: Send + 'static>(inbox: &Arc<Inbox<C>>) -> Bell {
        let inbox: Arc<dyn Ring> = inbox.clone();
        Bell(Arc::downgrade(&inbox))
    }

    /// Wakes the worker if it waits for work.
    pub fn ring(&self) {
        if let Some(inbox) = self.0.upgrade() {
            inbox.ring();
        }
    }
}

impl std::fmt::Debug for Bell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bell").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_wait_ends_for_each_reason_in_order() {
        let inbox = Arc::new(Inbox::<u8>::new());
        let soon = || Some(Instant::now() + Duration::from_millis(10));
        assert_eq!(inbox.wait(soon()), Wake::TimedOut);
        Bell::new(&inbox).ring();
        assert_eq!(inbox.wait(soon()), Wake::Rung);
        assert_eq!(inbox.wait(soon()), Wake::TimedOut, "a ring is taken");
        inbox.ring();
        inbox.send(7);
        assert_eq!(inbox.wait(None), Wake::Command);
        assert_eq!(inbox.take(), Some(7));
        assert_eq!(inbox.wait(None), Wake::Rung);
        inbox.send(8);
        inbox.stop();
        assert_eq!(inbox.wait(None), Wake::Stop);
        assert!(inbox.stopping());
    }

    #[test]
    fn a_ring_from_another_thread_ends_an_endless_wait() {
        let inbox = Arc::new(Inbox::<()>::new());
        let bell = Bell::new(&inbox);
        // Whether the ring comes before the wait or during it, the wait
        // ends: a ring is kept until a wait takes it.
        let ringer = thread::spawn(move || bell.ring());
        assert_eq!(inbox.wait(None), Wake::Rung);
        ringer.join().expect("the ringer");
    }

    #[test]
    fn a_bell_outliving_its_inbox_rings_nothing() {
        let inbox = Arc::new(Inbox::<()>::new());
        let bell = Bell::new(&inbox);
        drop(inbox);
        bell.ring();
    }
}
