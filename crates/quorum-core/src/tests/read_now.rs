//! Reads that children answer on the caller's thread
//! ([`crate::Backend::read_now`]): complete before `start_read` returns,
//! voted and repaired as a worker's answer, and the fallback to a worker
//! when a child cannot answer at once. (Their ordering against writes:
//! `started::reads_answered_now_stay_ordered`.)

use std::sync::mpsc;

use super::promises::assert_all;
use super::started::{finish, mems, open, start_read};
use super::*;

/// A started read that every child answers on the caller's thread is
/// complete when `start_read` returns: its callback ran there, no worker
/// took part.
#[test]
fn a_read_every_child_answers_now_completes_before_start_returns() {
    let mems = mems(3, 16 * B);
    let sink = Arc::new(RecordingSink::default());
    let v = open(options(2), &mems, sink.clone());
    let data: Vec<u8> = (0..2 * B).map(|i| (i % 249) as u8).collect();
    v.write(B as u64, Bytes::from(data.clone())).expect("write");
    for m in &mems {
        m.answers_now.store(true, Ordering::SeqCst);
    }
    let caller = thread::current().id();
    let (tx, rx) = mpsc::channel();
    v.start_read(B as u64, 2 * B, move |c| {
        let _ = tx.send((thread::current().id(), c));
    })
    .expect("the read started");
    let (on, completion) = rx.try_recv().expect("complete when start_read returned");
    assert_eq!(on, caller, "completed on the caller's thread");
    let Completion::Done(Ok(read)) = completion else {
        panic!("children that agree complete the read at once");
    };
    assert_eq!(&read[..], &data[..]);
    for m in &mems {
        assert_eq!(m.reads_now.load(Ordering::SeqCst), 1, "child {}", m.name);
    }
    // The blocking call reads them on its thread too.
    assert_eq!(&v.read(B as u64, 2 * B).expect("read")[..], &data[..]);
    assert!(sink.events().is_empty(), "{:?}", sink.events());
}

/// A child answering on the caller's thread with corrupt data loses the
/// vote and is repaired, as one answering from its worker; a child that
/// cannot answer now (failing, or slow) is asked on its worker.
#[test]
fn reads_answered_now_are_voted_and_repaired() {
    let mems = mems(3, 16 * B);
    let sink = Arc::new(RecordingSink::default());
    let opts = VolumeOptions {
        rewrite_corrupted: true,
        ..options(2)
    };
    let v = open(opts, &mems, sink.clone());
    v.write(0, Bytes::from(vec![7u8; 4 * B])).expect("write");
    for m in &mems {
        m.answers_now.store(true, Ordering::SeqCst);
    }
    mems[1].poke(2 * B, &[1u8; 5]);
    mems[2].read_micros.store(200, Ordering::SeqCst);
    let read = finish(start_read(&v, 0, 4 * B)).expect("voted read");
    assert_all(&read, 7);
    assert_eq!(
        bad_reads(&sink.take()),
        vec![("b".into(), 2 * B as u64, 5, false)],
        "b lost the vote on its corrupt bytes"
    );
    assert_all(&mems[1].snapshot()[2 * B..3 * B], 7);
    let now: Vec<u64> = mems
        .iter()
        .map(|m| m.reads_now.load(Ordering::SeqCst))
        .collect();
    assert_eq!(now, vec![1, 1, 0], "c is slow: its worker read it");
}

/// A fifo read is the first child's, answered now when it can be.
#[test]
fn a_fifo_read_answered_now_is_the_first_childs() {
    let mems = mems(3, 16 * B);
    let sink = Arc::new(RecordingSink::default());
    let opts = VolumeOptions {
        read_pattern: ReadPattern::Fifo,
        ..options(2)
    };
    let v = open(opts, &mems, sink.clone());
    v.write(0, Bytes::from(vec![3u8; 2 * B])).expect("write");
    for m in &mems {
        m.answers_now.store(true, Ordering::SeqCst);
    }
    let Completion::Done(Ok(read)) = start_read(&v, 0, 2 * B) else {
        panic!("the first child's answer completes a fifo read");
    };
    assert_all(&read, 3);
    let now: Vec<u64> = mems
        .iter()
        .map(|m| m.reads_now.load(Ordering::SeqCst))
        .collect();
    assert_eq!(now, vec![1, 0, 0]);
    // Failing now, the first child is asked on its worker, fails, and the
    // next child answers.
    mems[0].fail_reads.store(true, Ordering::SeqCst);
    let read = finish(start_read(&v, 0, 2 * B)).expect("fifo read past a failing child");
    assert_all(&read, 3);
}
