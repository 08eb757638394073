//! Ordering of overlapping requests.
//!
//! A write never runs concurrently with an overlapping read or write, so
//! every child applies overlapping writes in the same order and no read sees
//! a half-applied write. Reads share. Conflicting requests are admitted in
//! arrival order (a ticket queue), so a stream of reads cannot starve a
//! write and two overlapping writes reach every child in the same order.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// A lock over byte ranges of one volume.
#[derive(Debug, Default)]
pub(crate) struct RangeLock {
    state: Mutex<State>,
    released: Condvar,
}

#[derive(Debug, Default)]
struct State {
    next_ticket: u64,
    /// Requests holding or waiting for a range, in arrival order.
    entries: Vec<Entry>,
    waiting: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ticket: u64,
    start: u64,
    end: u64,
    exclusive: bool,
}

impl Entry {
    fn conflicts(&self, other: &Entry) -> bool {
        (self.exclusive || other.exclusive) && self.start < other.end && other.start < self.end
    }
}

/// Holds a range until dropped.
#[derive(Debug)]
pub(crate) struct RangeGuard<'a> {
    lock: &'a RangeLock,
    ticket: u64,
}

impl RangeLock {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `start..end` can be read: no earlier overlapping write is
    /// queued or running.
    pub(crate) fn shared(&self, start: u64, end: u64) -> RangeGuard<'_> {
        self.acquire(start, end, false)
    }

    /// Waits until `start..end` can be written: no earlier overlapping
    /// request is queued or running.
    pub(crate) fn exclusive(&self, start: u64, end: u64) -> RangeGuard<'_> {
        self.acquire(start, end, true)
    }

    /// How many requests wait for a range.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.state().waiting
    }

    fn acquire(&self, start: u64, end: u64, exclusive: bool) -> RangeGuard<'_> {
        let mut state = self.state();
        let me = Entry {
            ticket: state.next_ticket,
            start,
            end,
            exclusive,
        };
        state.next_ticket += 1;
        let blocked = |s: &State| s.entries.iter().any(|e| e.conflicts(&me));
        if blocked(&state) {
            state.entries.push(me);
            state.waiting += 1;
            while state
                .entries
                .iter()
                .take_while(|e| e.ticket != me.ticket)
                .any(|e| e.conflicts(&me))
            {
                state = self
                    .released
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.waiting -= 1;
        } else {
            state.entries.push(me);
        }
        RangeGuard {
            lock: self,
            ticket: me.ticket,
        }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.lock.state();
        if let Some(i) = state.entries.iter().position(|e| e.ticket == self.ticket) {
            state.entries.remove(i);
        }
        if state.waiting > 0 {
            self.lock.released.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;
    use std::time::Duration;

    #[test]
    fn reads_share_writes_exclude() {
        let lock = RangeLock::default();
        let a = lock.shared(0, 10);
        let _b = lock.shared(5, 15);
        let _disjoint = lock.exclusive(15, 20);
        drop(a);
    }

    #[test]
    fn a_write_waits_for_an_overlapping_read() {
        let lock = Arc::new(RangeLock::default());
        let read = lock.shared(0, 100);
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (lock, done) = (lock.clone(), done.clone());
            thread::spawn(move || {
                let _w = lock.exclusive(50, 60);
                done.store(true, Ordering::SeqCst);
            })
        };
        thread::sleep(Duration::from_millis(50));
        assert!(
            !done.load(Ordering::SeqCst),
            "the write ran during the read"
        );
        drop(read);
        writer.join().expect("writer");
        assert!(done.load(Ordering::SeqCst));
    }

    #[test]
    fn a_later_read_queues_behind_a_waiting_write() {
        let lock = Arc::new(RangeLock::default());
        let first = lock.shared(0, 100);
        let order = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (lock, order) = (lock.clone(), order.clone());
            thread::spawn(move || {
                let _w = lock.exclusive(0, 100);
                order.lock().expect("order").push("write");
            })
        };
        thread::sleep(Duration::from_millis(30));
        let reader = {
            let (lock, order) = (lock.clone(), order.clone());
            thread::spawn(move || {
                let _r = lock.shared(0, 100);
                order.lock().expect("order").push("read");
            })
        };
        thread::sleep(Duration::from_millis(30));
        assert!(order.lock().expect("order").is_empty());
        drop(first);
        writer.join().expect("writer");
        reader.join().expect("reader");
        assert_eq!(*order.lock().expect("order"), vec!["write", "read"]);
    }
}
