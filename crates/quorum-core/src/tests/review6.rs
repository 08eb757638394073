//! Review of the requests every child answers up front (refusals, reads
//! answered on the caller's thread) and of the resync copies kept among
//! their child's unflushed ranges. The first test failed before its fix:
//! a copy that began after a failed flush was counted was marked stale
//! again by the next flush, so one failure re-did every copy since. The
//! others cover the up-front paths of `start_read`: answered on the
//! caller's thread, their range given back.

use std::sync::mpsc;

use super::promises::{assert_all, with_timeout};
use super::started::{finish, mems, open, started};
use super::*;
use crate::ChildState;

/// Starts a read and returns its completion, which must have been given
/// on the caller's thread before `start_read` returned.
fn completed_at_once(v: &Arc<Volume>, offset: u64, length: usize) -> Completion<Bytes> {
    let caller = thread::current().id();
    let (tx, rx) = mpsc::channel();
    v.start_read(offset, length, move |c| {
        let _ = tx.send((thread::current().id(), c));
    })
    .expect("the read started");
    let (on, completion) = rx.try_recv().expect("complete when start_read returned");
    assert_eq!(on, caller, "completed on the caller's thread");
    completion
}

/// A write over `offset..offset + B` starts at once: no request holds the
/// range any more. Its result is returned.
fn write_starts(v: &Arc<Volume>, offset: u64) -> Result<(), VolumeError> {
    let completion = started(|d| v.start_write(offset, Bytes::from(vec![4u8; B]), d))
        .expect("the range was given back: the write starts");
    finish(completion)
}

#[test]
fn a_started_read_every_breaker_refuses_fails_at_once_and_gives_its_range_back() {
    let mems = mems(3, 16 * B);
    let sink = Arc::new(RecordingSink::default());
    let v = open(options(2), &mems, sink.clone());
    for m in &mems {
        m.hang_writes.store(true, Ordering::SeqCst);
    }
    assert!(v.write(0, Bytes::from(vec![1u8; B])).is_err());
    for m in &mems {
        m.hang_writes.store(false, Ordering::SeqCst);
    }
    assert!((0..3).all(|i| v.breaker_open(i)), "every breaker opened");
    let read_before: Vec<u64> = mems
        .iter()
        .map(|m| m.read_bytes.load(Ordering::SeqCst))
        .collect();
    let Completion::Blocking(rest) = completed_at_once(&v, 0, B) else {
        panic!("a read no child answered is not done at once");
    };
    let error = rest.run().expect_err("no child was asked");
    assert!(matches!(error, VolumeError::Quorum(_)), "{error}");
    let read_after: Vec<u64> = mems
        .iter()
        .map(|m| m.read_bytes.load(Ordering::SeqCst))
        .collect();
    assert_eq!(read_after, read_before, "no child was read");
    assert!(
        v.children().iter().all(|c| c.state != ChildState::Healthy),
        "refused children are not healthy"
    );
    assert!(write_starts(&v, 0).is_err(), "every child still refuses");
}

#[test]
fn a_started_fifo_read_whose_first_child_is_refused_goes_on_at_once() {
    let mems = mems(3, 16 * B);
    let sink = Arc::new(RecordingSink::default());
    let opts = VolumeOptions {
        read_pattern: ReadPattern::Fifo,
        ..with_timeout(2, Duration::from_millis(50))
    };
    let v = open(opts, &mems, sink.clone());
    v.write(0, Bytes::from(vec![6u8; 2 * B])).expect("write");
    for m in &mems {
        m.answers_now.store(true, Ordering::SeqCst);
    }
    // a times out a read: its breaker opens, nothing is stale.
    mems[0].read_micros.store(300_000, Ordering::SeqCst);
    assert_all(&v.read(0, B).expect("b answers"), 6);
    mems[0].read_micros.store(0, Ordering::SeqCst);
    assert!(v.breaker_open(0), "a's breaker opened");
    assert_eq!(v.stale_bytes(), vec![0, 0, 0]);
    let a_read = mems[0].read_bytes.load(Ordering::SeqCst);
    let b_now = mems[1].reads_now.load(Ordering::SeqCst);
    let Completion::Blocking(rest) = completed_at_once(&v, 0, 2 * B) else {
        panic!("a refused first child leaves the read to its rest");
    };
    assert_all(&rest.run().expect("b answers"), 6);
    assert_eq!(
        mems[0].read_bytes.load(Ordering::SeqCst),
        a_read,
        "a not read"
    );
    assert_eq!(
        mems[0].reads_now.load(Ordering::SeqCst),
        0,
        "a not read now"
    );
    assert_eq!(
        mems[1].reads_now.load(Ordering::SeqCst),
        b_now + 1,
        "b read now"
    );
    write_starts(&v, 0).expect("b and c take it");
}

#[test]
fn a_started_fifo_read_with_a_stale_child_is_left_to_the_blocking_call() {
    let mems = mems(3, 16 * B);
    let sink = Arc::new(RecordingSink::default());
    let opts = VolumeOptions {
        read_pattern: ReadPattern::Fifo,
        ..options(2)
    };
    let v = open(opts, &mems, sink.clone());
    v.write(0, Bytes::from(vec![8u8; B])).expect("write");
    for m in &mems {
        m.answers_now.store(true, Ordering::SeqCst);
    }
    mems[0].poke(0, &[0u8; B]);
    v.mark_stale("a", std::slice::from_ref(&(0..B as u64)))
        .expect("mark a");
    let (tx, rx) = mpsc::channel();
    assert_eq!(
        v.start_read(0, B, move |c| {
            let _ = tx.send(c);
        }),
        Err(WouldBlock)
    );
    assert!(rx.try_recv().is_err(), "nothing completed");
    let now: Vec<u64> = mems
        .iter()
        .map(|m| m.reads_now.load(Ordering::SeqCst))
        .collect();
    assert_eq!(now, vec![0, 0, 0], "nothing was read");
    assert_all(&v.read(0, B).expect("read"), 8);
    write_starts(&v, 0).expect("the range was given back");
}
