//! Children that missed writes or timed out: stale marks, the resync and
//! its bell, scrub, and the back-off of a child that timed out.

use super::*;

#[test]
fn missed_writes_are_stale_never_read_and_resynced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("vm.stale");
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"]
        .iter()
        .map(|n| Mem::new(n, 16 * B))
        .collect();
    let open = |mems: &[Arc<Mem>]| {
        let children = specs(mems);
        Volume::open_journaled(
            options(2),
            children,
            Arc::new(RecordingSink::default()),
            Some(&journal),
        )
        .expect("open")
    };
    let volume = open(&mems);
    volume
        .write(0, Bytes::from(vec![1; 16 * B]))
        .expect("write");
    mems[0].fail_writes.store(true, Ordering::SeqCst);
    volume
        .write(B as u64, Bytes::from(vec![2; B]))
        .expect("write at threshold");
    volume
        .write(5 * B as u64 + 10, Bytes::from(vec![3; 100]))
        .expect("write at threshold");
    mems[0].fail_writes.store(false, Ordering::SeqCst);
    let missed = B as u64 + 100;
    assert_eq!(volume.stale_bytes(), vec![missed, 0, 0]);
    assert_eq!(volume.children()[0].state, ChildState::Failed);
    volume.read(8 * B as u64, B).expect("a read that a answers");
    assert_eq!(volume.children()[0].state, ChildState::Stale);
    // Make the stale child disagree in a way that would win a fifo read.
    let mut opts = options(2);
    opts.read_pattern = ReadPattern::Fifo;
    drop(volume);

    // The map survives a restart (the journal), and fifo skips child a there.
    let children = specs(&mems);
    let fifo =
        Volume::open_journaled(opts, children, Arc::new(NullSink), Some(&journal)).expect("reopen");
    assert_eq!(fifo.stale_bytes(), vec![missed, 0, 0]);
    assert_eq!(&fifo.read(B as u64, B).expect("fifo read")[..], &[2; B][..]);
    assert_eq!(
        &fifo.read(0, 10).expect("a fresh range from a")[..],
        &[1; 10][..]
    );
    drop(fifo);

    // Quorum reads leave a out of the vote there, and report no loss.
    let volume = open(&mems);
    assert_eq!(&volume.read(0, 8 * B).expect("read")[B..2 * B], &[2; B][..]);
    // Resync refreshes exactly the missed bytes (copying the fresh bytes
    // between them too), then nothing is stale.
    let mut copied = 0;
    let mut from = 0;
    loop {
        match volume.resync_step(1 << 20, from) {
            ResyncStep::Idle => break,
            ResyncStep::Copied {
                child,
                range,
                refreshed,
                next,
            } => {
                assert_eq!(child, "a");
                assert!(refreshed <= range.end - range.start, "{range:?}");
                copied += refreshed;
                from = next;
            }
            ResyncStep::Failed { error, .. } => panic!("resync: {error}"),
        }
    }
    assert_eq!(copied, missed);
    assert_eq!(volume.stale_bytes(), vec![0, 0, 0]);
    assert_eq!(mems[0].snapshot(), mems[1].snapshot());
    assert_eq!(volume.children()[0].state, ChildState::Healthy);
    // A later successful write over a stale range also refreshes it.
    mems[2].fail_writes.store(true, Ordering::SeqCst);
    volume.write(0, Bytes::from(vec![4; 100])).expect("write");
    mems[2].fail_writes.store(false, Ordering::SeqCst);
    assert_eq!(volume.stale_bytes(), vec![0, 0, 100]);
    volume.write(0, Bytes::from(vec![5; 200])).expect("write");
    assert_eq!(volume.stale_bytes(), vec![0, 0, 0]);
}

#[test]
fn scrub_reports_repairs_and_refuses_to_guess() {
    let size = 64 * B;
    let s = setup(options(2), 3, size);
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    s.volume.write(0, Bytes::from(data.clone())).expect("write");
    // b is bad in blocks 1 and 9, c in blocks 4 and 20: never the same block.
    for block in [1usize, 9] {
        s.mems[1].poke(block * B, &[0xee; B]);
    }
    for block in [4usize, 20] {
        s.mems[2].poke(block * B + 100, &[0xdd; 10]);
    }
    let found = s.volume.scrub(0, size as u64, false).expect("scrub");
    let mut lost = found.lost.clone();
    lost.sort();
    assert_eq!(
        lost,
        vec![("b".to_string(), 2 * B as u64), ("c".to_string(), 20)]
    );
    assert_eq!(found.repaired, 0);
    assert!(found.unrecoverable.is_empty());
    assert_ne!(
        s.mems[1].snapshot(),
        data,
        "a scrub without repair writes nothing"
    );
    let fixed = s.volume.scrub(0, size as u64, true).expect("repair");
    assert_eq!(fixed.repaired, 2 * B as u64 + 20);
    for m in &s.mems {
        assert_eq!(m.snapshot(), data);
    }
    // A block bad on two of three has no majority: listed, not "repaired".
    s.mems[0].poke(7 * B, &[1; 8]);
    s.mems[1].poke(7 * B, &[2; 8]);
    s.sink.take();
    let found = s.volume.scrub(0, size as u64, true).expect("scrub");
    assert_eq!(found.unrecoverable, vec![7 * B as u64..8 * B as u64]);
    let failures: Vec<Event> = s
        .sink
        .take()
        .into_iter()
        .filter(|e| matches!(e, Event::Failure { .. }))
        .collect();
    assert_eq!(
        failures,
        vec![Event::Failure {
            op: Op::Read,
            offset: 7 * B as u64,
            bytes: B as u64
        }],
        "the unrecoverable block is announced once"
    );
    assert_eq!(&s.mems[0].snapshot()[7 * B..7 * B + 8], &[1; 8]);
    assert_eq!(&s.mems[1].snapshot()[7 * B..7 * B + 8], &[2; 8]);
    assert_eq!(s.mems[2].snapshot(), data);
}

#[test]
fn a_child_that_timed_out_is_not_tried_again_until_its_backoff_passed() {
    let s = setup(options(2), 3, 4 * B);
    s.mems[2].hang_writes.store(true, Ordering::SeqCst);
    s.volume
        .write(0, Bytes::from(vec![1; 10]))
        .expect("write at threshold");
    assert_eq!(s.mems[2].write_attempts.load(Ordering::SeqCst), 1);
    // Refused at once: no second wait for the hung child.
    s.volume
        .write(100, Bytes::from(vec![2; 10]))
        .expect("write at threshold");
    assert_eq!(s.mems[2].write_attempts.load(Ordering::SeqCst), 1);
    assert_eq!(
        s.volume.stale_bytes(),
        vec![0, 0, 20],
        "both writes are stale on c"
    );
    // After the back-off (its length is `breaker.rs`'s test), the next
    // request tries it again.
    assert!(s.volume.breaker_open(2), "c's breaker opened");
    s.mems[2].hang_writes.store(false, Ordering::SeqCst);
    promises::wait_for("c's back-off to pass", || !s.volume.breaker_open(2));
    s.volume.write(0, Bytes::from(vec![3; 200])).expect("write");
    assert_eq!(s.mems[2].write_attempts.load(Ordering::SeqCst), 2);
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
}

/// The resync bell rings when a missed write marks a range stale (and when
/// a range is marked for a new child), not when a range is cleared, nor
/// once it is unset.
#[test]
fn the_resync_bell_rings_on_every_new_stale_range() {
    let s = setup(options(2), 3, 64 * 1024);
    let rung = Arc::new(AtomicU64::new(0));
    let counter = rung.clone();
    s.volume.set_resync_bell(Some(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })));
    s.volume
        .write(0, Bytes::from(vec![1; B]))
        .expect("a write on every child");
    assert_eq!(rung.load(Ordering::SeqCst), 0);
    s.mems[2].fail_writes.store(true, Ordering::SeqCst);
    s.volume
        .write(0, Bytes::from(vec![2; B]))
        .expect("a write at the threshold");
    assert_eq!(rung.load(Ordering::SeqCst), 1, "a missed write rings");
    s.mems[2].fail_writes.store(false, Ordering::SeqCst);
    s.volume
        .write(0, Bytes::from(vec![3; B]))
        .expect("a write that refreshes c");
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
    assert_eq!(rung.load(Ordering::SeqCst), 1, "a clear does not ring");
    s.volume
        .mark_stale("a", std::slice::from_ref(&(0..B as u64)))
        .expect("mark stale");
    assert_eq!(rung.load(Ordering::SeqCst), 2, "a mark rings");
    s.volume
        .mark_stale("a", std::slice::from_ref(&(0..B as u64)))
        .expect("mark stale again");
    assert_eq!(rung.load(Ordering::SeqCst), 2, "a mark that adds nothing");
    assert!(!s.volume.awaits_reconcile());
    s.volume.set_resync_bell(None);
    s.volume
        .mark_stale("b", std::slice::from_ref(&(0..B as u64)))
        .expect("mark stale");
    assert_eq!(rung.load(Ordering::SeqCst), 2, "an unset bell");
}
