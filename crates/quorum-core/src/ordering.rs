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

    /// Takes `start..end` (for a write when `exclusive`) if that needs no
    /// wait: no earlier request that conflicts with it is queued or
    /// running. Returns the ticket to give back to [`RangeLock::release`];
    /// `None`, and nothing changed, when it would have to wait.
    pub(crate) fn try_take(&self, start: u64, end: u64, exclusive: bool) -> Option<u64> {
        let mut state = self.state();
        let me = Entry {
            ticket: state.next_ticket,
            start,
            end,
            exclusive,
        };
        if state.entries.iter().any(|e| e.conflicts(&me)) {
            return None;
        }
        state.next_ticket += 1;
        state.entries.push(me);
        Some(me.ticket)
    }

    /// Gives back the range of `ticket` (from [`RangeLock::try_take`]).
    pub(crate) fn release(&self, ticket: u64) {
        let mut state = self.state();
        if let Some(i) = state.entries.iter().position(|e| e.ticket == ticket) {
            state.entries.remove(i);
        }
        if state.waiting > 0 {
            self.released.notify_all();
        }
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
        self.lock.release(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc::{self, RecvTimeoutError};
    use std::thread;
    use std::time::{Duration, Instant};

    /// How long a request that should get its range may take to get it.
    const DEADLINE: Duration = Duration::from_secs(10);

    /// Takes `start..end` on a thread; the receiver gets one message once it
    /// holds the range, and the thread keeps it until `release` is dropped or
    /// sent to.
    fn take_on_thread(
        lock: &Arc<RangeLock>,
        start: u64,
        end: u64,
        exclusive: bool,
    ) -> (mpsc::Receiver<()>, mpsc::Sender<()>, thread::JoinHandle<()>) {
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let lock = lock.clone();
        let handle = thread::spawn(move || {
            let _guard = if exclusive {
                lock.exclusive(start, end)
            } else {
                lock.shared(start, end)
            };
            let _ = held_tx.send(());
            let _ = release_rx.recv();
        });
        (held_rx, release_tx, handle)
    }

    /// Waits (bounded) until `n` requests wait for a range.
    #[track_caller]
    fn wait_for_waiters(lock: &RangeLock, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while lock.waiting() != n {
            assert!(
                Instant::now() < deadline,
                "{} requests wait, expected {n} within {DEADLINE:?}",
                lock.waiting()
            );
            thread::yield_now();
        }
    }

    #[track_caller]
    fn held(rx: &mpsc::Receiver<()>, what: &str) {
        match rx.recv_timeout(DEADLINE) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => panic!("{what}: not granted within {DEADLINE:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("{what}: the thread died"),
        }
    }

    #[track_caller]
    fn not_held(rx: &mpsc::Receiver<()>, what: &str) {
        assert!(
            rx.try_recv().is_err(),
            "{what}: granted while a conflicting request holds its range"
        );
    }

    #[test]
    fn reads_share_and_disjoint_writes_do_not_wait() {
        let lock = Arc::new(RangeLock::default());
        let a = lock.shared(0, 10);
        // Each on its own thread, so that a bug fails the test instead of
        // hanging it.
        let (b, release_b, tb) = take_on_thread(&lock, 5, 15, false);
        held(&b, "a read overlapping a read");
        let (w, release_w, tw) = take_on_thread(&lock, 15, 20, true);
        held(&w, "a write beside two reads");
        let (w2, release_w2, tw2) = take_on_thread(&lock, 20, 30, true);
        held(&w2, "a write beside a write");
        assert_eq!(lock.waiting(), 0);
        drop(a);
        for (release, t) in [(release_b, tb), (release_w, tw), (release_w2, tw2)] {
            drop(release);
            t.join().expect("a holder");
        }
    }

    #[test]
    fn overlapping_writes_exclude_each_other() {
        let lock = Arc::new(RangeLock::default());
        let first = lock.exclusive(0, 10);
        let (second, release, t) = take_on_thread(&lock, 9, 20, true);
        wait_for_waiters(&lock, 1);
        not_held(&second, "a write overlapping a write by one byte");
        drop(first);
        held(&second, "the second write once the first is done");
        // And the other way round: the first waits for the second now.
        let (third, release_third, t3) = take_on_thread(&lock, 0, 10, true);
        wait_for_waiters(&lock, 1);
        not_held(&third, "a write overlapping a held write");
        drop(release);
        t.join().expect("the second write");
        held(&third, "the third write");
        drop(release_third);
        t3.join().expect("the third write");
    }

    #[test]
    fn a_write_waits_for_an_overlapping_read() {
        let lock = Arc::new(RangeLock::default());
        let read = lock.shared(0, 100);
        let (write, release, t) = take_on_thread(&lock, 50, 60, true);
        wait_for_waiters(&lock, 1);
        not_held(&write, "the write during the read");
        drop(read);
        held(&write, "the write after the read");
        drop(release);
        t.join().expect("writer");
    }

    /// Conflicting requests are granted in the order they arrived, not in
    /// the order a wake-up happens to reach them: writes queued behind a
    /// read run one after the other, first come first; a read that arrived
    /// between them waits for the write before it and goes before the write
    /// after it; a request runs as soon as none that came before it
    /// overlaps it.
    #[test]
    fn conflicting_requests_are_granted_in_arrival_order() {
        let lock = Arc::new(RangeLock::default());
        let first = lock.shared(0, 100);
        let requests = [
            ("w1 0..100", 0, 100, true),
            ("w2 50..60", 50, 60, true),
            ("r3 40..70", 40, 70, false),
            ("w4 0..10", 0, 10, true),
            ("w5 55..56", 55, 56, true),
        ];
        // Each arrives once the one before it waits: the arrival order is
        // the order of the list.
        let mut queued = Vec::new();
        for (n, (name, start, end, exclusive)) in requests.into_iter().enumerate() {
            let request = take_on_thread(&lock, start, end, exclusive);
            let deadline = Instant::now() + DEADLINE;
            while lock.waiting() != n + 1 {
                assert!(
                    request.0.try_recv().is_err(),
                    "{name}: granted on arrival, ahead of earlier requests that overlap it"
                );
                assert!(Instant::now() < deadline, "{name} did not queue");
                thread::yield_now();
            }
            queued.push(request);
        }
        let names = requests.map(|r| r.0);
        for (q, name) in queued.iter().zip(names) {
            not_held(&q.0, name);
        }
        drop(first);
        // w1 overlaps every later one: it alone runs.
        held(&queued[0].0, names[0]);
        wait_for_waiters(&lock, 4);
        for (q, name) in queued.iter().zip(names).skip(1) {
            not_held(&q.0, name);
        }
        let [w1, w2, r3, w4, w5] = <[_; 5]>::try_from(queued).expect("five requests");
        drop(w1.1);
        w1.2.join().expect("w1");
        // w2 runs next, and w4 beside it: of the requests that came before
        // w4, only w1 overlapped it.
        held(&w2.0, names[1]);
        held(&w4.0, names[3]);
        wait_for_waiters(&lock, 2);
        not_held(&r3.0, "r3 while w2, which came before it, runs");
        not_held(&w5.0, "w5 while w2 runs");
        drop(w2.1);
        w2.2.join().expect("w2");
        // r3 before w5, which overlaps it and came after it.
        held(&r3.0, names[2]);
        wait_for_waiters(&lock, 1);
        not_held(&w5.0, "w5 while r3, which came before it, runs");
        drop(r3.1);
        r3.2.join().expect("r3");
        held(&w5.0, names[4]);
        assert_eq!(lock.waiting(), 0);
        for (_, release, t) in [w4, w5] {
            drop(release);
            t.join().expect("a holder");
        }
    }

    /// A range taken without waiting is held like any other, and a take
    /// that would have to wait changes nothing: it neither holds nor
    /// queues, so it delays nobody.
    #[test]
    fn a_take_without_waiting_holds_or_changes_nothing() {
        let lock = Arc::new(RangeLock::default());
        let read = lock.try_take(0, 100, false).expect("a free range");
        assert!(lock.try_take(50, 150, false).is_some(), "reads share");
        assert_eq!(lock.try_take(99, 200, true), None, "a write over a read");
        assert_eq!(lock.waiting(), 0);
        let (write, release, t) = take_on_thread(&lock, 0, 10, true);
        wait_for_waiters(&lock, 1);
        not_held(&write, "a write over a taken read");
        // A read that would queue behind the waiting write is refused.
        assert_eq!(lock.try_take(0, 10, false), None, "behind a waiting write");
        assert!(lock.try_take(150, 160, true).is_some(), "beside everything");
        lock.release(read);
        held(&write, "the write once the read is given back");
        drop(release);
        t.join().expect("writer");
    }

    #[test]
    fn a_later_read_queues_behind_a_waiting_write() {
        let lock = Arc::new(RangeLock::default());
        let first = lock.shared(0, 100);
        let (write, release_write, tw) = take_on_thread(&lock, 0, 100, true);
        wait_for_waiters(&lock, 1);
        // The read comes after the write: it overlaps only the first read
        // (which it could share) but queues behind the waiting write.
        let (read, release_read, tr) = take_on_thread(&lock, 0, 100, false);
        wait_for_waiters(&lock, 2);
        not_held(&write, "the write during the first read");
        not_held(&read, "a read that arrived after a waiting write");
        drop(first);
        held(&write, "the write after the first read");
        not_held(&read, "the later read while the write runs");
        drop(release_write);
        tw.join().expect("writer");
        held(&read, "the later read after the write");
        drop(release_read);
        tr.join().expect("reader");
    }
}
