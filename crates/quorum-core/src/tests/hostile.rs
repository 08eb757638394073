//! A hostile review of the started requests, `read_now` and the zeroing
//! in jobs: races and partial failures that the other tests do not reach.

use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;

use super::promises::{assert_all, with_timeout};
use super::started::{finish, mems, open};
use super::*;
use crate::volume::ZERO_JOB;

/// A [`Mem`] whose zeroing fails from `fail_from` on (an object store
/// that refuses part of a long delete).
struct Picky {
    mem: Arc<Mem>,
    fail_from: AtomicU64,
}

impl std::fmt::Display for Picky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "picky({})", self.mem.name)
    }
}

impl Backend for Picky {
    fn kind(&self) -> &'static str {
        "mem"
    }
    fn size(&self) -> Result<u64, BackendError> {
        self.mem.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.mem.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.mem.write_at(buf, offset)
    }
    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        if offset >= self.fail_from.load(Ordering::SeqCst) {
            return Err(BackendError::from_errno(5));
        }
        self.mem.write_zeroes(offset, length)
    }
    fn flush(&self) -> Result<(), BackendError> {
        self.mem.flush()
    }
    fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        self.mem.block_status(offset, length, limit)
    }
}

/// A zeroing of four jobs whose third fails its quorum: the client is
/// told, the first two jobs are zero (each block read whole: zero or the
/// old data, never a mix within a job), the child that failed the second
/// job is stale exactly there, and what the failed job left behind is
/// voted back to one value on every read.
#[test]
fn a_zeroing_whose_middle_job_fails_quorum_leaves_a_consistent_volume() {
    let size = 4 * ZERO_JOB as usize;
    let names = ["a", "b", "c"];
    let picky: Vec<Arc<Picky>> = names
        .iter()
        .map(|n| {
            Arc::new(Picky {
                mem: Mem::new(n, size),
                fail_from: AtomicU64::new(u64::MAX),
            })
        })
        .collect();
    let specs: Vec<ChildSpec> = picky
        .iter()
        .map(|p| ChildSpec::new(p.mem.name.clone(), p.clone() as Arc<dyn Backend>))
        .collect();
    let sink = Arc::new(RecordingSink::default());
    let v = Volume::open(options(2), specs, sink.clone()).expect("open");
    v.write(0, Bytes::from(vec![0xab; size])).expect("write");
    // a fails from job 1 on, b from job 2 on: job 2 has one child only.
    picky[0].fail_from.store(ZERO_JOB, Ordering::SeqCst);
    picky[1].fail_from.store(2 * ZERO_JOB, Ordering::SeqCst);
    let zeroed = v.write_zeroes(0, size as u64);
    assert!(
        matches!(zeroed, Err(VolumeError::Quorum(_))),
        "the client is told: {zeroed:?}"
    );
    let job = ZERO_JOB as usize;
    let read = v.read(0, size).expect("read");
    assert_all(&read[..2 * job], 0);
    // Job 2 reached c alone: the old data wins its vote; job 3 never ran.
    assert_all(&read[2 * job..], 0xab);
    assert_eq!(
        v.stale_bytes(),
        vec![ZERO_JOB, 0, 0],
        "a missed job 1 (job 2 failed as a whole: no stale mark)"
    );
    // Twice the same answer: the vote is stable, and a flush is good.
    assert_eq!(v.read(0, size).expect("read again"), read);
    v.flush().expect("flush");
}

/// The watchdog giving up on a slow child while its answer arrives: every
/// started read and write completes once, in time, with the right data,
/// over many rounds where the answer and the deadline race.
#[test]
fn the_watchdog_racing_the_last_answer_loses_nothing() {
    let mems = mems(3, 64 * B);
    let sink = Arc::new(RecordingSink::default());
    // A deadline the healthy children meet on a loaded machine too.
    let v = open(with_timeout(2, Duration::from_millis(100)), &mems, sink);
    for m in &mems[..2] {
        m.answers_now.store(true, Ordering::SeqCst);
    }
    let (tx, rx) = mpsc::channel();
    let rounds = 60;
    let completed = Arc::new(AtomicUsize::new(0));
    for round in 0..rounds {
        // c's answer comes just before, at or just after the deadline,
        // and its late call of the round before has returned.
        thread::sleep(Duration::from_millis(110));
        mems[2]
            .read_micros
            .store(94_000 + (round as u64 % 7) * 2000, Ordering::SeqCst);
        let block = (round % 64) as u64 * B as u64;
        let value = (round % 250) as u8 + 1;
        let done = completed.clone();
        let tx2 = tx.clone();
        let written = v.start_write(block, Bytes::from(vec![value; B]), move |c| {
            done.fetch_add(1, Ordering::SeqCst);
            let _ = tx2.send(("write", round, finish(c).map(|()| Bytes::new())));
        });
        if written.is_err() {
            v.write(block, Bytes::from(vec![value; B])).expect("write");
            completed.fetch_add(1, Ordering::SeqCst);
            tx.send(("write", round, Ok(Bytes::new()))).expect("send");
        }
        let (_, r, result) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the write completed");
        assert_eq!(r, round);
        result.expect("the write met its threshold");
        let done = completed.clone();
        let tx2 = tx.clone();
        let read = v.start_read(block, B, move |c| {
            done.fetch_add(1, Ordering::SeqCst);
            let _ = tx2.send(("read", round, finish(c)));
        });
        let data = match read {
            Ok(()) => {
                let (_, r, result) = rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the read completed");
                assert_eq!(r, round);
                result.expect("read")
            }
            Err(WouldBlock) => v.read(block, B).expect("read"),
        };
        assert_all(&data, value);
    }
    thread::sleep(Duration::from_millis(50));
    assert!(rx.try_recv().is_err(), "no completion came twice");
}

/// A child whose write was abandoned at `child_timeout` and is still
/// running answers reads on the caller's thread: it must not be read
/// (its late write may land at any time), and a newer write must win.
#[test]
fn a_child_with_an_abandoned_write_is_not_read_now() {
    let mems = mems(3, 16 * B);
    let sink = Arc::new(RecordingSink::default());
    let v = open(with_timeout(2, Duration::from_millis(50)), &mems, sink);
    for m in &mems {
        m.answers_now.store(true, Ordering::SeqCst);
    }
    v.write(0, Bytes::from(vec![1u8; B])).expect("first write");
    mems[2].stall(true);
    v.write(0, Bytes::from(vec![2u8; B]))
        .expect("second write, c times out");
    let before = mems[2].reads_now.load(Ordering::SeqCst);
    let (tx, rx) = mpsc::channel();
    v.start_read(0, B, move |c| {
        let _ = tx.send(finish(c));
    })
    .expect("started");
    let read = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("completed")
        .expect("read");
    assert_all(&read, 2);
    assert_eq!(
        mems[2].reads_now.load(Ordering::SeqCst),
        before,
        "the late child was asked"
    );
    // The late write lands; a third write and the reads stay right.
    mems[2].stall(false);
    v.write(0, Bytes::from(vec![3u8; B])).expect("third write");
    for _ in 0..20 {
        assert_all(&v.read(0, B).expect("read"), 3);
    }
}

/// The rest of a started write that the caller drops without running it
/// still records who missed the write: the failed child is stale there,
/// and the range is given back (a write after it is not held off).
#[test]
fn a_dropped_rest_still_marks_the_child_that_missed_the_write() {
    let mems = mems(3, 16 * B);
    let sink = Arc::new(RecordingSink::default());
    let v = open(options(2), &mems, sink);
    mems[1].fail_writes.store(true, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel();
    v.start_write(0, Bytes::from(vec![9u8; 2 * B]), move |c| {
        let blocking = matches!(c, Completion::Blocking(_));
        // Dropped unrun: the rest runs on the drop, before the answer.
        drop(c);
        let _ = tx.send(blocking);
    })
    .expect("started");
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).expect("completed"),
        "a failed child makes the rest blocking"
    );
    assert_eq!(v.stale_bytes()[1], 2 * B as u64, "b missed the write");
    mems[1].fail_writes.store(false, Ordering::SeqCst);
    v.write(0, Bytes::from(vec![4u8; B]))
        .expect("a later write gets the range");
    assert_all(&v.read(0, B).expect("read"), 4);
    assert_all(&v.read(B as u64, B).expect("read"), 9);
}
