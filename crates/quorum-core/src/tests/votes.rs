//! The vote of reads and the threshold of writes, as QEMU's quorum has
//! them: who loses, what is reported, what is repaired, fifo and blkverify.

use super::*;

#[test]
fn write_then_read_round_trips_unaligned() {
    let s = setup(options(2), 3, 64 * 1024);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    s.volume
        .write(1234, Bytes::from(data.clone()))
        .expect("write");
    assert_eq!(
        &s.volume.read(1234, data.len()).expect("read")[..],
        &data[..]
    );
    for m in &s.mems {
        assert_eq!(&m.snapshot()[1234..11234], &data[..]);
    }
    assert!(s.sink.take().is_empty());
}

#[test]
fn one_corrupt_child_loses_and_is_reported_exactly() {
    let s = setup(options(2), 3, 64 * 1024);
    s.volume
        .write(0, Bytes::from(vec![0x32; 64 * 1024]))
        .expect("write");
    s.mems[2].poke(5000, &[0x42; 300]);
    assert_eq!(
        &s.volume.read(0, 64 * 1024).expect("read")[..],
        &[0x32; 64 * 1024][..]
    );
    assert_eq!(
        bad_reads(&s.sink.take()),
        vec![("c".into(), 5000, 300, false)]
    );
    // Not repaired without rewrite_corrupted.
    assert_eq!(s.mems[2].snapshot()[5000], 0x42);
}

#[test]
fn rewrite_corrupted_repairs_losers_and_failed_children() {
    let mut opts = options(2);
    opts.rewrite_corrupted = true;
    let s = setup(opts, 3, 64 * 1024);
    s.volume
        .write(0, Bytes::from(vec![7; 64 * 1024]))
        .expect("write");
    s.mems[1].poke(B * 3, &[1; 10]);
    assert_eq!(&s.volume.read(0, 8 * B).expect("read")[..], &[7; 8 * B][..]);
    assert_eq!(s.mems[1].snapshot(), s.mems[0].snapshot());
    let events = s.sink.take();
    assert!(events.contains(&Event::Rewrite {
        child: "b".into(),
        offset: 3 * B as u64,
        bytes: 10
    }));

    // A child whose read failed with an I/O error is rewritten too.
    s.mems[2].poke(0, &[9; 100]);
    s.mems[2].fail_reads.store(true, Ordering::SeqCst);
    s.volume.read(0, B).expect("read");
    s.mems[2].fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(s.mems[2].snapshot(), s.mems[0].snapshot());
    let events = s.sink.take();
    assert_eq!(bad_reads(&events), vec![("c".into(), 0, B as u64, true)]);
    assert!(events.contains(&Event::Rewrite {
        child: "c".into(),
        offset: 0,
        bytes: B as u64
    }));
}

#[test]
fn children_corrupt_in_different_blocks_still_read() {
    let s = setup(options(2), 3, 64 * 1024);
    s.volume
        .write(0, Bytes::from(vec![0x32; 64 * 1024]))
        .expect("write");
    s.mems[1].poke(10, &[0; 100]);
    s.mems[2].poke(5 * B + 7, &[0; 1]);
    assert_eq!(
        &s.volume.read(0, 64 * 1024).expect("read")[..],
        &[0x32; 64 * 1024][..]
    );
    assert_eq!(
        bad_reads(&s.sink.take()),
        vec![
            ("b".into(), 10, 100, false),
            ("c".into(), 5 * B as u64 + 7, 1, false)
        ]
    );
}

#[test]
fn no_majority_fails_with_an_event() {
    let s = setup(options(2), 3, 16 * B);
    s.mems[0].poke(0, &[0x41; 16 * B]);
    s.mems[1].poke(0, &[0x42; 16 * B]);
    s.mems[2].poke(0, &[0x32; 16 * B]);
    let err = s.volume.read(0, 16 * B).expect_err("no majority");
    assert!(
        matches!(&err, VolumeError::Quorum(q) if q.no_majority.is_some()),
        "{err}"
    );
    let events = s.sink.take();
    assert_eq!(
        events,
        vec![Event::Failure {
            op: Op::Read,
            offset: 0,
            bytes: 16 * B as u64
        }]
    );
}

#[test]
fn writes_failing_on_two_of_three_fail_and_report_each() {
    let s = setup(options(2), 3, 16 * B);
    s.mems[0].fail_writes.store(true, Ordering::SeqCst);
    s.mems[2].fail_writes.store(true, Ordering::SeqCst);
    let err = s
        .volume
        .write(100, Bytes::from(vec![1; 50]))
        .expect_err("quorum");
    let VolumeError::Quorum(q) = &err else {
        panic!("{err}")
    };
    assert_eq!((q.succeeded, q.threshold, q.failures.len()), (1, 2, 2));
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let events = s.sink.take();
    let bad: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::ReportBad {
                op: Op::Write,
                child,
                offset: 100,
                bytes: 50,
                error: Some(_),
            } => Some(child.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(bad, vec!["a", "c"]);
    assert!(events.contains(&Event::Failure {
        op: Op::Write,
        offset: 100,
        bytes: 50
    }));
    // One failure of three is fine at threshold 2, and still reported.
    s.mems[2].fail_writes.store(false, Ordering::SeqCst);
    s.volume
        .write(0, Bytes::from(vec![1; 10]))
        .expect("write at threshold");
    assert_eq!(s.sink.take().len(), 1);
    assert_eq!(s.volume.children()[0].state, ChildState::Failed);
    assert_eq!(s.volume.children()[1].state, ChildState::Healthy);
}

/// A child whose storage could not be opened shows failed before any
/// request, and healthy again once one succeeds on it.
#[test]
fn a_child_marked_failed_shows_failed_until_a_request_succeeds() {
    let s = setup(options(2), 3, 64 * 1024);
    assert!(s.volume.mark_failed("b"));
    assert!(!s.volume.mark_failed("nobody"));
    let states: Vec<ChildState> = s.volume.children().iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        [ChildState::Healthy, ChildState::Failed, ChildState::Healthy]
    );
    s.volume
        .write(0, Bytes::from(vec![1; 10]))
        .expect("a write");
    assert_eq!(s.volume.children()[1].state, ChildState::Healthy);
}

#[test]
fn the_error_vote_names_the_most_common_error() {
    let s = setup(options(3), 3, 4 * B);
    s.mems[0].fail_writes.store(true, Ordering::SeqCst);
    s.mems[1].fail_writes.store(true, Ordering::SeqCst);
    let VolumeError::Quorum(q) = s
        .volume
        .write(0, Bytes::from(vec![1; 10]))
        .expect_err("quorum")
    else {
        panic!("not a quorum error")
    };
    assert!(
        q.prevailing_error()
            .is_some_and(|e| e.contains("No space left"))
    );
}

#[test]
fn errors_mixed_with_corruption_still_vote() {
    let s = setup(options(3), 5, 4 * B);
    s.volume
        .write(0, Bytes::from(vec![5; 4 * B]))
        .expect("write");
    s.mems[0].fail_reads.store(true, Ordering::SeqCst);
    s.mems[1].poke(0, &[6]);
    assert_eq!(&s.volume.read(0, 4 * B).expect("read")[..], &[5; 4 * B][..]);
    assert_eq!(
        bad_reads(&s.sink.take()),
        vec![
            ("a".into(), 0, 4 * B as u64, true),
            ("b".into(), 0, 1, false)
        ]
    );
    // Fewer successes than the threshold fails the read.
    s.mems[2].fail_reads.store(true, Ordering::SeqCst);
    s.mems[3].fail_reads.store(true, Ordering::SeqCst);
    let err = s.volume.read(0, B).expect_err("too few");
    assert!(
        matches!(&err, VolumeError::Quorum(q) if q.succeeded == 2 && q.no_majority.is_none()),
        "{err}"
    );
}

#[test]
fn fifo_skips_a_failing_first_child_and_repairs_it() {
    let mut opts = options(2);
    opts.read_pattern = ReadPattern::Fifo;
    opts.rewrite_corrupted = true;
    let s = setup(opts, 3, 4 * B);
    s.volume
        .write(0, Bytes::from(vec![3; 4 * B]))
        .expect("write");
    s.mems[0].poke(0, &[0; B]);
    s.mems[0].fail_reads.store(true, Ordering::SeqCst);
    assert_eq!(&s.volume.read(0, B).expect("read")[..], &[3; B][..]);
    s.mems[0].fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(s.mems[0].snapshot(), s.mems[1].snapshot());
    let events = s.sink.take();
    assert_eq!(bad_reads(&events), vec![("a".into(), 0, B as u64, true)]);
    assert!(events.contains(&Event::Rewrite {
        child: "a".into(),
        offset: 0,
        bytes: B as u64
    }));
}

#[test]
fn fifo_reads_child_zero_only_when_it_works() {
    let mut opts = options(2);
    opts.read_pattern = ReadPattern::Fifo;
    let s = setup(opts, 3, 4 * B);
    s.mems[1].poke(0, &[1; B]);
    s.mems[2].poke(0, &[2; B]);
    assert_eq!(&s.volume.read(0, B).expect("read")[..], &[0; B][..]);
    assert!(s.sink.take().is_empty());
}

#[test]
fn blkverify_reports_the_first_differing_byte_and_keeps_going() {
    let mut opts = options(2);
    opts.blkverify = true;
    let s = setup(opts, 2, 4 * B);
    s.mems[1].poke(12345 % (4 * B), &[1]);
    let at = (12345 % (4 * B)) as u64;
    let err = s.volume.read(0, 4 * B).expect_err("mismatch");
    assert!(matches!(err, VolumeError::BlkverifyMismatch { offset, .. } if offset == at));
    assert_eq!(
        s.sink.take(),
        vec![Event::BlkverifyMismatch {
            offset: at,
            request_offset: 0,
            request_bytes: 4 * B as u64
        }]
    );
    assert_eq!(
        &s.volume.read(0, 100).expect("equal part")[..],
        &[0; 100][..]
    );
}
